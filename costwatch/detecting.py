"""The detectors in a cycle: the stored days and today's export in, the findings due out.

    due(state, config, today_frames, now) -> tuple[Finding, ...]   what to queue now
    snapshot(state, config, today, now) -> Snapshots               (`due` does it first)
    record(state, found, now)                                      never again today

The schedule's zone is the detectors' day: its stored closed days of the longest window any
detector reads (`anomalies`, `unit_cost`, `unowned.dormant_days`) and the open day's export
that the cycle made for it (`gather.Gathered.today`) make the daily usage, the stored days
are the covered ones (a day the store lacks is unknown, never $0), and `detect.detect` judges
today so far. With the spend rate on (`anomalies.rate`), each such cycle first records
today's per-key use so far as the snapshot of the current local hour (`snapshot`; a later
cycle of the same hour replaces it; the store keeps `anomalies.window_days` of them), and the
spend rate reads that hour of the window's days. Each finding is sent once per subject and
day: a notice in the ledger per finding identity (`notice`: its kind, subject, model, metric
and local day; `Notices` in `state/base.py`), recorded in the transaction that queues it; a
key's anomaly and its spend rate are one alert per key, metric and day (`detect.identities`).
Without an open-day export for the zone (no state, no history, a saved file, the period
exported whole) nothing is judged, and no snapshot is taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from costwatch import detect
from costwatch.alerts import LedgerKey
from costwatch.config import Config
from costwatch.detect import Finding
from costwatch.recent import Frames
from costwatch.state.base import Days, NoticeKey, Snapshots

__all__ = ["due", "notice", "record", "snapshot", "window_days"]


def window_days(config: Config) -> int:
    """How many closed days before today the detectors read."""
    return max(
        config.anomalies.window_days, config.unit_cost.window_days, config.unowned.dormant_days
    )


def due(
    history: Days,
    config: Config,
    today_frames: Mapping[str, pl.DataFrame],
    now: datetime,
    frames: Frames | None = None,
) -> tuple[Finding, ...]:
    """The findings of today not sent yet, in the detectors' order; with the spend rate on,
    today's snapshot of the current hour recorded first (in the caller's transaction). With
    `frames` (the daemon keeps them), the closed days read in earlier cycles are not read again."""
    zone = config.schedule.timezone
    frame = today_frames.get(zone)
    if frame is None:
        return ()
    local = now.astimezone(config.schedule.zone)
    today = local.date()
    first, yesterday = today - timedelta(days=window_days(config)), today - timedelta(days=1)
    stored = history.stored_days(zone, first, yesterday)
    usage = pl.concat(
        [
            (frames if frames is not None else Frames()).read(
                history, zone, (first, yesterday), stored
            ),
            frame.with_columns(pl.lit(today).alias("day")),
        ],
        how="diagonal_relaxed",
    )
    rate: dict[str, Any] = {}
    if config.anomalies.enabled and config.anomalies.rate:
        taken = snapshot(history, config, frame, now)
        rate = {
            "snapshots": taken.frame,
            "hour": local.hour,
            "recorded": taken.recorded(local.hour),
        }
    found = detect.detect(config, usage, today, stored, **rate)
    asked = {identity: _notice(identity) for f in found for identity in detect.identities(f)}
    sent = history.notices_sent(asked.values())
    return detect.due(found, [identity for identity, key in asked.items() if key in sent])


def snapshot(history: Days, config: Config, today: pl.DataFrame, now: datetime) -> Snapshots:
    """Record today's per-key use so far (`today`: the open day's export, per key and model) as
    the snapshot of the current local hour of the schedule's zone, replacing an earlier one of
    that hour; the snapshots of that hour of the anomalies' window read back (today's
    included), with each key's earliest one (`Hourly.snapshots`)."""
    zone = config.schedule.timezone
    local = now.astimezone(config.schedule.zone)
    first = local.date() - timedelta(days=config.anomalies.window_days)
    per_key = (
        today.filter(pl.col("api_key_id").is_not_null())
        .group_by("api_key_id")
        .agg(
            pl.col("api_key_name").drop_nulls().last(),
            pl.col("requests").sum(),
            pl.col("total_cost_usd").sum(),
        )
    )
    history.put_snapshot(zone, local.date(), local.hour, per_key, taken_at=now, keep_from=first)
    return history.snapshots(zone, first, local.date(), hour=local.hour)


def record(history: Days, found: Iterable[Finding], now: datetime) -> None:
    """Record each finding as sent today (in the caller's transaction)."""
    history.record_notices((notice(f) for f in found), now)


def notice(finding: Finding) -> NoticeKey:
    """The notice a finding is sent once as: its identity's kind, subject, model, metric and
    day (the ledger key `detect.findings` gives it, with no budget)."""
    return _notice(finding.identity)


def _notice(identity: LedgerKey) -> NoticeKey:
    _, subject, model, metric, kind, day = identity
    return NoticeKey(kind=kind, subject=subject, period=day, model=model, metric=metric)
