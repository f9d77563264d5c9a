"""The commands' argument types: each turns one command-line value into its value or an
`argparse.ArgumentTypeError` whose message argparse prints beside the option's name.

    whole(text, unit=, low=, high=, why=)   a whole number in [low, high]
    duration(text)                          "90s", "15m", "1h30m" (greater than 0)
    pace(text)                              a duration, or "0s" for none
    iso_date(text)                          YYYY-MM-DD

One rule per kind of value, so `backfill --pace 0s` and `backtest --pace 0s` mean the same.
"""

from __future__ import annotations

import argparse
from datetime import date, timedelta

from costwatch.config.durations import parse_duration
from costwatch.quote import quote

__all__ = ["duration", "iso_date", "pace", "whole"]


def whole(text: str, *, unit: str, low: int, high: int, why: str = "") -> int:
    """A whole number of `unit` (plural, e.g. "days") from `low` to `high`; `why` says where
    the upper bound comes from."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of {unit}: {quote(text)}") from None
    if number < low:
        raise argparse.ArgumentTypeError(f"{number}: at least {low} {_unit(unit, low)}")
    if number > high:
        because = f": {why}" if why else ""
        raise argparse.ArgumentTypeError(f"{number}: at most {high} {_unit(unit, high)}{because}")
    return number


def duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def pace(text: str) -> timedelta:
    """The pause between two exports: a duration, or "0"/"0s" for none."""
    if text.strip() in ("0", "0s"):
        return timedelta(0)
    return duration(text)


def iso_date(text: str) -> date:
    """A local day given as YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date: {quote(text)} (give YYYY-MM-DD, e.g. 2026-10-01)"
        ) from None


def _unit(plural: str, count: int) -> str:
    return plural[:-1] if count == 1 and plural.endswith("s") else plural
