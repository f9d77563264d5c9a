"""The detectors in a cycle: the stored days and today's export in, the findings due out.

    due(history, config, today_frames, now) -> tuple[Finding, ...]   what to queue now
    record(history, found, now)                                      never again today

The schedule's zone is the detectors' day: its stored closed days of the longest window any
detector reads (`anomalies`, `unit_cost`, `unowned.dormant_days`) and the open day's export
that the cycle made for it (`gather.Gathered.today`) make the daily usage, the stored days
are the covered ones (a day the store lacks is unknown, never $0), and `detect.detect` judges
today so far. Each finding is sent once per subject and day: a mark per finding identity
(`finding:<identity>`), set in the transaction that queues it. Without an open-day export for
the zone (no state, no history, a saved file, the period exported whole) nothing is judged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import polars as pl

from costwatch import detect
from costwatch.config import Config
from costwatch.detect import Finding
from costwatch.state.base import History

__all__ = ["due", "record", "window_days"]


def window_days(config: Config) -> int:
    """How many closed days before today the detectors read."""
    return max(
        config.anomalies.window_days, config.unit_cost.window_days, config.unowned.dormant_days
    )


def due(
    history: History, config: Config, today_frames: Mapping[str, pl.DataFrame], now: datetime
) -> tuple[Finding, ...]:
    """The findings of today not sent yet, in the detectors' order."""
    zone = config.schedule.timezone
    frame = today_frames.get(zone)
    if frame is None:
        return ()
    today = now.astimezone(config.schedule.zone).date()
    first, yesterday = today - timedelta(days=window_days(config)), today - timedelta(days=1)
    stored = history.stored_days(zone, first, yesterday)
    usage = pl.concat(
        [
            history.usage_by_day(zone, first, yesterday),
            frame.with_columns(pl.lit(today).alias("day")),
        ],
        how="diagonal_relaxed",
    )
    found = detect.detect(config, usage, today, stored)
    sent = [f.identity for f in found if history.mark(_mark(f)) is not None]
    return detect.due(found, sent)


def record(history: History, found: Iterable[Finding], now: datetime) -> None:
    """Remember each finding as sent today (in the caller's transaction)."""
    for finding in found:
        history.set_mark(_mark(finding), now)


def _mark(finding: Finding) -> str:
    return "finding:" + json.dumps(list(finding.identity), separators=(",", ":"))
