"""Block Kit building blocks that keep data inert and messages inside Slack's limits. Pure.

Text from the export (key, model and budget names) is data. Two rules keep it so:

- **In blocks, data only ever goes into `plain_text` objects** (`plain`, `plain_text`), which
  Slack does not parse for mrkdwn, links or mentions. `mrkdwn` objects carry only costwatch's
  own words, numbers and the configured mentions, and are sent with `verbatim: true` so Slack
  does not turn anything in them into links either.
- **Every piece of data is made inert character by character** before it is placed: control
  and format characters (newlines, bidi overrides, zero-width characters) become spaces, so a
  name is one line; Slack's three control characters become `&amp;` `&lt;` `&gt;`; a colon
  that would start an emoji code (`:fire:`) gets a zero-width space after it. For mrkdwn (the
  notification `text`), `*` `_` `~` and the backtick are also wrapped in zero-width spaces on
  both sides (so they can neither open nor close a span, whether Slack counts the space as a
  word boundary or not) and `@here`, `@channel`, `@everyone` get one after the `@`.

Lengths are measured the way Slack's JavaScript does, in UTF-16 code units, and a cut never
splits one of those replacements (no half `&amp;`): it ends in "…" at a character boundary.
`problems(blocks, text)` checks a whole message against the limits below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_CONTEXT_TEXT = 2000
MAX_TEXT = 40_000  # chat.postMessage `text`; costwatch keeps its fallback far shorter

ZWSP = "\u200b"
ELLIPSIS = "…"

# Configured mentions, as config load validates them; anything else in `mention` is escaped.
MENTION = re.compile(r"<(?:@[A-Z0-9]+|!subteam\^[A-Z0-9]+(?:\|[^<>]*)?|!here|!channel|!everyone)>")

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_EMOJI_COLON = re.compile(r":(?=[A-Za-z0-9_+'-]+:)")
_BROADCAST_AT = re.compile(r"@(?=(?:here|channel|everyone)\b)", re.IGNORECASE)
_MRKDWN_MARKS = frozenset("*_~`")

Block = dict[str, Any]


def width(text: str) -> int:
    """Length as Slack counts it: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    """Slack's three control characters, escaped as Slack documents."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _pieces(text: str, *, mrkdwn: bool) -> list[str]:
    """`text` as inert pieces, one per character, so a cut can fall between any two."""
    colons = {m.start() for m in _EMOJI_COLON.finditer(text)}
    ats = {m.start() for m in _BROADCAST_AT.finditer(text)} if mrkdwn else set()
    pieces = []
    for i, ch in enumerate(text):
        if not ch.isprintable():
            piece = " "
        elif ch in _ENTITIES:
            piece = _ENTITIES[ch]
        elif mrkdwn and ch in _MRKDWN_MARKS:
            piece = ZWSP + ch + ZWSP
        elif i in colons or i in ats:
            piece = ch + ZWSP
        else:
            piece = ch
        pieces.append(piece)
    return pieces


def _fit(pieces: Sequence[str], limit: int) -> str:
    """The pieces joined, or as many as fit before "…" within `limit` UTF-16 units."""
    total = sum(width(p) for p in pieces)
    if total <= limit:
        return "".join(pieces)
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + width(piece) > limit - 1:
            break
        kept.append(piece)
        used += width(piece)
    return "".join(kept).rstrip() + ELLIPSIS if limit > 0 else ""


def plain(data: str, limit: int = MAX_SECTION_TEXT) -> str:
    """Data made inert for a `plain_text` object, cut to `limit`."""
    return _fit(_pieces(data, mrkdwn=False), limit)


def mrkdwn(data: str, limit: int = MAX_SECTION_TEXT) -> str:
    """Data made inert for mrkdwn (formatting characters defused too), cut to `limit`."""
    return _fit(_pieces(data, mrkdwn=True), limit)


@dataclass(frozen=True)
class Rendered:
    """One Slack message: `blocks` for chat.postMessage / webhooks, `text` for notifications."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Data:
    """A piece of data inside a sentence: made inert, and the first thing to be shortened."""

    text: str
    cap: int = MAX_SECTION_TEXT  # never longer than this, even when there is room


def compose(parts: Sequence[str | Data], limit: int, *, markup: bool = False) -> str:
    """Literal parts (costwatch's own, already safe) and data parts, within `limit`.

    The room left by the literal parts is shared fairly among the data parts: short names are
    kept whole and the longest ones are cut first. `markup` selects mrkdwn escaping for data.
    """
    fixed = sum(width(p) for p in parts if isinstance(p, str))
    data = [(i, p) for i, p in enumerate(parts) if isinstance(p, Data)]
    inert: Callable[[str, int], str] = mrkdwn if markup else plain
    full = {i: inert(p.text, p.cap) for i, p in data}
    room = max(limit - fixed, 0)
    shares: dict[int, int] = {}
    for n, (i, _) in enumerate(sorted(data, key=lambda d: width(full[d[0]]))):
        share = min(width(full[i]), room // (len(data) - n))
        shares[i] = share
        room -= share
    out = []
    for i, part in enumerate(parts):
        if isinstance(part, Data):
            out.append(full[i] if shares[i] >= width(full[i]) else inert(part.text, shares[i]))
        else:
            out.append(part)
    return "".join(out)


def mentions(candidates: Sequence[str], limit: int = MAX_SECTION_TEXT) -> list[str]:
    """The configured mentions that are real mention syntax, once each, in order.

    As many whole mentions as fit in `limit` when joined by spaces; the rest are left out.
    """
    kept: list[str] = []
    used = -1
    for mention in dict.fromkeys(candidates):
        if MENTION.fullmatch(mention) and used + 1 + width(mention) <= limit:
            kept.append(mention)
            used += 1 + width(mention)
    return kept


# --- blocks ----------------------------------------------------------------------------------


def plain_text(text: str, *, emoji: bool = False) -> dict[str, Any]:
    """A plain_text object. `text` must already be inert (`plain`, `compose`)."""
    return {"type": "plain_text", "text": text or " ", "emoji": emoji}


def mrkdwn_text(text: str) -> dict[str, Any]:
    """A mrkdwn object for costwatch's own words; verbatim, so nothing is auto-linked."""
    return {"type": "mrkdwn", "text": text or " ", "verbatim": True}


def header(text: str) -> Block:
    return {"type": "header", "text": plain_text(text, emoji=True)}


def section(text: dict[str, Any]) -> Block:
    return {"type": "section", "text": text}


def fields(items: Sequence[dict[str, Any]]) -> Block:
    return {"type": "section", "fields": list(items[:MAX_FIELDS])}


def context(elements: Sequence[dict[str, Any]]) -> Block:
    return {"type": "context", "elements": list(elements[:MAX_CONTEXT_ELEMENTS])}


def divider() -> Block:
    return {"type": "divider"}


def pack(lines: Sequence[str], limit: int = MAX_SECTION_TEXT) -> list[str]:
    """Lines joined into as few texts as possible, each within `limit` (a line never split)."""
    texts: list[str] = []
    current: list[str] = []
    used = 0
    for line in lines:
        cost = width(line) + (1 if current else 0)
        if current and used + cost > limit:
            texts.append("\n".join(current))
            current, used = [], 0
            cost = width(line)
        current.append(line)
        used += cost
    if current:
        texts.append("\n".join(current))
    return texts


# --- limits ----------------------------------------------------------------------------------


def problems(blocks: Sequence[Block], text: str) -> list[str]:
    """Every way the message breaks Slack's limits; empty when it is fine to post."""
    found = []
    if not 0 < width(text) <= MAX_TEXT:
        found.append(f"text has {width(text)} characters (1 to {MAX_TEXT})")
    if len(blocks) > MAX_BLOCKS:
        found.append(f"{len(blocks)} blocks (at most {MAX_BLOCKS})")
    for n, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "header":
            found += _text_problems(f"block {n} header", block["text"], MAX_HEADER, "plain_text")
        elif kind == "section":
            if "text" in block:
                found += _text_problems(f"block {n} section", block["text"], MAX_SECTION_TEXT)
            items = block.get("fields", [])
            if len(items) > MAX_FIELDS:
                found.append(f"block {n}: {len(items)} fields (at most {MAX_FIELDS})")
            for i, item in enumerate(items):
                found += _text_problems(f"block {n} field {i}", item, MAX_FIELD_TEXT)
            if "text" not in block and not items:
                found.append(f"block {n}: a section needs text or fields")
        elif kind == "context":
            elements = block.get("elements", [])
            if not 0 < len(elements) <= MAX_CONTEXT_ELEMENTS:
                found.append(f"block {n}: {len(elements)} context elements (1 to 10)")
            for i, item in enumerate(elements):
                found += _text_problems(f"block {n} context {i}", item, MAX_CONTEXT_TEXT)
        elif kind != "divider":
            found.append(f"block {n}: unexpected type {kind!r}")
    return found


def _text_problems(
    where: str, obj: dict[str, Any], limit: int, only: str | None = None
) -> list[str]:
    found = []
    if obj.get("type") not in ("plain_text", "mrkdwn") or (only and obj["type"] != only):
        found.append(f"{where}: text type {obj.get('type')!r}")
    size = width(obj.get("text", ""))
    if not 0 < size <= limit or not obj.get("text", "").strip():
        found.append(f"{where}: {size} characters (1 to {limit}, not blank)")
    return found


# --- reading back ----------------------------------------------------------------------------

_EMOJI = {
    ":rotating_light:": "\N{POLICE CARS REVOLVING LIGHT}",
    ":warning:": "\N{WARNING SIGN}\ufe0f",
    ":information_source:": "\N{INFORMATION SOURCE}\ufe0f",
    ":chart_with_upwards_trend:": "\N{CHART WITH UPWARDS TREND}",
    ":white_check_mark:": "\N{WHITE HEAVY CHECK MARK}",
    ":bell:": "\N{BELL}",
    ":bar_chart:": "\N{BAR CHART}",
}
_MENTION_PARTS = re.compile(r"<(?:@([A-Z0-9]+)|!subteam\^([A-Z0-9]+)(?:\|([^<>]*))?|!(\w+))>")


def readable(blocks: Sequence[Block]) -> str:
    """Blocks as the lines a reader sees in Slack: markers as emoji, mentions as @names."""
    lines: list[str] = []
    for block in blocks:
        kind = block["type"]
        if kind == "header":
            lines.append(_readable(block["text"]))
        elif kind == "section" and "text" in block:
            lines += [f"  {line}" for line in _readable(block["text"]).splitlines()]
        elif kind == "section":
            for item in block["fields"]:
                label, _, value = _readable(item).partition("\n")
                lines.append(f"  {label}: {'; '.join(value.splitlines())}")
        elif kind == "context":
            lines.append("  " + " ".join(_readable(e) for e in block["elements"]))
        elif kind == "divider":
            lines.append("  " + "-" * 40)
    return "\n".join(lines) + "\n"


def _readable(obj: dict[str, Any]) -> str:
    text = str(obj["text"])
    for code, emoji in _EMOJI.items():
        text = text.replace(code, emoji)
    if obj["type"] == "mrkdwn":
        text = _MENTION_PARTS.sub(_mention_name, text)
        text = re.sub(r"\*([^*\n]+)\*", r"\1", text)  # costwatch's own bold labels
    text = text.replace(ZWSP, "").replace("&lt;", "<").replace("&gt;", ">")
    return text.replace("&amp;", "&")


def _mention_name(match: re.Match[str]) -> str:
    user, team, label, special = match.groups()
    return "@" + (user or label or team or special).lstrip("@")
