"""Shell-style globs over key and model names, for Python and for polars in one meaning.

`*` matches any run of characters (newlines too), `?` one character, `[abc]`, `[a-z]` and
`[!abc]` a character class; everything else is literal and case-sensitive, as in
`fnmatch.fnmatchcase`. A pattern also matches a name exactly equal to it, so a key really
called `team[a]` is selected by writing its name. `to_regex` turns a glob into an anchored
pattern for polars' Rust regex engine, escaping every other character as `\\x{..}` so that
no name can be read as syntax (Rust's `\\<` is a word boundary, not a literal `<`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import polars as pl


def matches(pattern: str, text: str) -> bool:
    return text == pattern or fnmatch.fnmatchcase(text, pattern)


def key_matches(patterns: Iterable[str], key_id: str, key_name: str) -> bool:
    """Whether an API key is selected by `patterns`: a glob matches its name (case-sensitive),
    or a pattern equals its id. `any_matches` is the same rule over a frame."""
    return any(matches(pattern, key_name) or pattern == key_id for pattern in patterns)


def problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable glob, or None when it is (never quoting the pattern)."""
    if not pattern:
        return "an empty pattern matches nothing"
    depth = _unclosed_class(pattern)
    if depth is not None:
        return f"'[' at position {depth + 1} is never closed"
    return None


def to_regex(pattern: str) -> str:
    """An anchored Rust-regex equivalent of the glob (dot matches newline)."""
    out = ["(?s)^"]
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and (end := _class_end(pattern, i)) is not None:
            out.append(_class_regex(pattern[i + 1 : end]))
            i = end
        else:
            out.append(_literal(ch))
        i += 1
    out.append("$")
    return "".join(out)


def any_matches(patterns: Iterable[str], *, names: pl.Expr, ids: pl.Expr) -> pl.Expr:
    """True where a name matches one of the globs or an id equals one of the patterns."""
    patterns = list(patterns)
    if not patterns:
        return pl.lit(value=False)
    name_regex = "|".join(f"(?:{to_regex(p)})" for p in patterns)
    by_name = names.fill_null("").str.contains(name_regex) | names.is_in(patterns)
    return by_name | ids.is_in(patterns)


def _literal(ch: str) -> str:
    return ch if ch.isalnum() else f"\\x{{{ord(ch):X}}}"


def _class_end(pattern: str, start: int) -> int | None:
    """Index of the `]` closing the class opened at `start`, as fnmatch reads it."""
    j = start + 1
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1  # a leading ] is a literal member
    end = pattern.find("]", j)
    return end if end != -1 else None


def _unclosed_class(pattern: str) -> int | None:
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            end = _class_end(pattern, i)
            if end is None:
                return i
            i = end
        i += 1
    return None


def _class_regex(body: str) -> str:
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    items: list[str] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low <= high:
                items.append(f"\\x{{{ord(low):X}}}-\\x{{{ord(high):X}}}")
            i += 3
        else:
            items.append(f"\\x{{{ord(body[i]):X}}}")
            i += 1
    if not items:
        return "[^\\s\\S]" if not negate else "(?s:.)"
    return f"[{'^' if negate else ''}{''.join(items)}]"
