"""The detectors in a cycle: the stored days and today's export in, the findings due out.

    due(state, config, today_frames, now) -> tuple[Finding, ...]   what to queue now
    record(state, found, now)                                      never again today

The schedule's zone is the detectors' day: its stored closed days of the longest window any
detector reads (`anomalies`, `unit_cost`, `unowned.dormant_days`) and the open day's export
that the cycle made for it (`gather.Gathered.today`) make the daily usage, the stored days
are the covered ones (a day the store lacks is unknown, never $0), and `detect.detect` judges
today so far. Each finding is sent once per subject and day: a notice in the ledger per
finding identity (`notice`: its kind, subject, model, metric and local day; `Notices` in
`state/base.py`), recorded in the transaction that queues it. Without an open-day export for
the zone (no state, no history, a saved file, the period exported whole) nothing is judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import polars as pl

from costwatch import detect
from costwatch.config import Config
from costwatch.detect import Finding
from costwatch.state.base import NoticeKey, Transaction

__all__ = ["due", "notice", "record", "window_days"]


def window_days(config: Config) -> int:
    """How many closed days before today the detectors read."""
    return max(
        config.anomalies.window_days, config.unit_cost.window_days, config.unowned.dormant_days
    )


def due(
    history: Transaction, config: Config, today_frames: Mapping[str, pl.DataFrame], now: datetime
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
    sent = history.notices_sent(notice(f) for f in found)
    return detect.due(found, [f.identity for f in found if notice(f) in sent])


def record(history: Transaction, found: Iterable[Finding], now: datetime) -> None:
    """Record each finding as sent today (in the caller's transaction)."""
    history.record_notices((notice(f) for f in found), now)


def notice(finding: Finding) -> NoticeKey:
    """The notice a finding is sent once as: its identity's kind, subject, model, metric and
    day (the ledger key `detect.findings` gives it, with no budget)."""
    _, subject, model, metric, kind, day = finding.identity
    return NoticeKey(kind=kind, subject=subject, period=day, model=model, metric=metric)
