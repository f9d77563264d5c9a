r"""Quoting outside text (CSV headers and cells, a server's error body, a value from the
configuration) for a log line, `/readyz`, a Slack message or an error. Pure.

    quote("gpt-4.1\n\x1b[31mERROR forged")  ->  'gpt-4.1\n\x1b[31mERROR forged'
    quote("x" * 300, limit=10)              ->  'xxxxxxxxxx'... (290 more characters)

`quote(text, limit)` is a Python string literal of `text`: single quotes, and every character
that could end a line, move the cursor, recolour a terminal or reorder what a reader sees is
escaped (controls, ANSI ESC, CR, LF, NEL, U+2028/U+2029, bidi overrides and isolates,
zero-width and other format characters, surrogates, private and unassigned code points), as
`\n`, `\x1b`, `\u2028`; a quote or backslash in the text is escaped too. So a quoted value is
always one line, `ast.literal_eval` gives the text back, and text that looks like a log line
stays inside its quotes. At most `limit` characters of the literal are kept; past that the rest
is cut, and the marker after the closing quote says how many characters were cut. Only the
first `limit` characters are ever looked at: a 200 MB line costs what 200 characters cost.

`quote_items(items, limit)` quotes a list (a CSV header) the same way, within one budget for
the whole list, and says how many items were left out.

`Refusal(template, *values)` is a ValueError that names the values it refuses without ever
formatting them itself: `str()` shows each as `<value>`, and only `render(show)` puts them in,
through `show` (default `quote`). The configuration's error translation renders a value that
came from the environment as the text written in the file (`'${NAME}'`) and never renders a
value of a secret field, so no validator can echo a secret, however it transforms it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence

__all__ = ["LIMIT", "Refusal", "quote", "quote_items"]

LIMIT = 200  # characters of a literal kept in a message
_ESCAPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", "'": "\\'"}


def quote(text: str, limit: int = LIMIT) -> str:
    """`text` as a one-line, escaped literal of at most about `limit` characters."""
    literal, shown = _escaped(text, max(limit, 1))
    cut = len(text) - shown
    return f"'{literal}'" + (f"... ({cut} more character{'s' if cut != 1 else ''})" if cut else "")


def quote_items(items: Sequence[str], limit: int = LIMIT) -> str:
    """`'a', 'b', 'c'` within about `limit` characters in all; the rest counted, not shown.

    Whole items only, but the first is always shown (cut itself when it alone is too long).
    """
    parts: list[str] = []
    budget = max(limit, 1)
    for item in items:
        part = quote(item, budget)
        if parts and (len(part) > budget or not part.endswith("'")):  # whole items after the first
            break
        parts.append(part)
        budget -= len(part) + 2
        if budget <= 0:
            break
    left = len(items) - len(parts)
    more = f"... ({left} more item{'s' if left != 1 else ''})" if left else ""
    return ", ".join([*parts, more] if more else parts)


def _escaped(text: str, limit: int) -> tuple[str, int]:
    """The escaped form of the longest prefix that fits in `limit`, and its length in `text`."""
    pieces: list[str] = []
    size = 0
    for count, char in enumerate(text[:limit]):
        piece = _escape(char)
        if size + len(piece) > limit:
            return "".join(pieces), count
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces), min(len(text), limit)


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class Refusal(ValueError):
    """A refused value, named in a message that its reader formats (see the module docstring).

    `template` has one `{}` per value; the constant text in it is costwatch's own.
    """

    def __init__(self, template: str, *values: str) -> None:
        super().__init__(template)  # args hold the template only, never a value
        self.template = template
        self.values = values

    def render(self, show: Callable[[str], str] = quote) -> str:
        return self.template.format(*(show(value) for value in self.values))

    def __str__(self) -> str:
        return self.render(lambda _value: "<value>")
