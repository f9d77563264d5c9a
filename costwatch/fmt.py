"""Numbers and dates formatted for people: one place, so the terminal and Slack agree."""

from __future__ import annotations

from datetime import datetime, timedelta


def money(usd: float) -> str:
    """$1,234.56; cents are dropped from $10,000 up, where they are noise."""
    sign = "-" if usd < 0 else ""
    usd = abs(usd)
    if usd >= 10_000:
        return f"{sign}${usd:,.0f}"
    return f"{sign}${usd:,.2f}"


def money_brief(usd: float) -> str:
    """$1,960 for headlines: whole dollars from $100 up or when there are no cents; $12.50 below."""
    sign = "-" if usd < 0 else ""
    usd = abs(usd)
    if usd >= 100 or round(usd, 2) == round(usd):
        return f"{sign}${usd:,.0f}"
    return f"{sign}${usd:,.2f}"


def count(n: float) -> str:
    """12,345 requests."""
    return f"{n:,.0f}"


def amount(metric: str, value: float, *, brief: bool = False) -> str:
    """A budget metric's value: money for cost_usd, a count otherwise; `brief` for sentences
    ($1,960; "12,345 requests") where the unit is not said around it."""
    if metric == "cost_usd":
        return money_brief(value) if brief else money(value)
    unit = {"requests": " requests", "tokens": " tokens"}.get(metric, "")
    return f"{count(value)}{unit}" if brief else count(value)


def percent(ratio: float) -> str:
    """0.823 -> 82%; below 10% one decimal (3.5%) so small numbers are not all 0%."""
    value = ratio * 100
    if 0 < abs(value) < 10:
        return f"{value:.1f}%"
    return f"{value:.0f}%"


def day(moment: datetime) -> str:
    """Nov 30."""
    return f"{moment:%b} {moment.day}"


def stamp(moment: datetime) -> str:
    """2026-11-25 10:30 (local wall clock of the datetime's own zone)."""
    return f"{moment:%Y-%m-%d %H:%M}"


def span(delta: timedelta) -> str:
    """5.3 days, 7 h, 12 min: the largest unit that reads naturally."""
    seconds = delta.total_seconds()
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 2 * 3_600:
        return f"{seconds / 3_600:.0f} h"
    return f"{seconds / 60:.0f} min"


def cut(text: str, width: int) -> str:
    """Shorten to at most `width` characters, ending in an ellipsis when cut."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…"
