"""The usage history of several workspaces in one store: a partition per workspace and zone.

The store keys its days, snapshots and marks by a zone name (`state/base.py`). A workspace's
days are kept under its partition key (`key`): the implicit workspace "default" of a file with
`langdock:` keeps the bare zone name ("Europe/Berlin"), so every day stored before workspaces
existed is its own and nothing is migrated; any other workspace prefixes it with its name and
":" ("research:Europe/Berlin"). A workspace name is `[a-z0-9][a-z0-9_-]{0,62}`
(`config/types.py`) and an IANA zone name never holds ":", so no two keys are alike. (A file
with `workspaces:` whose workspace is named "default" reads the days a `langdock:` file stored.)

- `Partition(history, workspace)`: one workspace's view, as a `History` (and `Hourly`): the
  zone names it is given are mapped to its key, and so are the marks' names; its rows keep
  the ids as Langdock gives them. The cycle (`gather.py`) and the keeper go through it.
- `Joined(history, workspaces)`: every workspace's days at once, as `workspaces.combine`
  joins their exports: ids read back as "workspace/id" with a `workspace` column, a day
  stored only when every workspace has it (another is unknown, never $0). The forecasts
  (`recent.py`), the reports and, over a cycle's transaction (`JoinedDays`, which splits a
  snapshot by workspace to store it), the detectors (`detecting.py`) read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime

import polars as pl

from costwatch.config import Config
from costwatch.config.models import DEFAULT_WORKSPACE
from costwatch.state.base import History, NoticeKey, Snapshots, StoredDay, Transaction
from costwatch.workspaces import SEPARATOR, qualify

__all__ = ["Joined", "JoinedDays", "Partition", "joined", "joined_day", "key"]

_PREFIX = ":"  # between the workspace and the zone; never in a zone's name nor a workspace's


def key(workspace: str, zone: str) -> str:
    """The partition of `workspace`'s days of `zone`: the bare zone name for "default"."""
    return zone if workspace == DEFAULT_WORKSPACE else f"{workspace}{_PREFIX}{zone}"


class Partition:
    """One workspace's days of `history` (a store or a transaction), keyed by `key`."""

    def __init__(self, history: History, workspace: str) -> None:
        self._history = history
        self.workspace = workspace

    def _key(self, zone: str) -> str:
        return key(self.workspace, zone)

    def stored_days(self, zone: str, first: date, last: date) -> dict[date, StoredDay]:
        return self._history.stored_days(self._key(zone), first, last)

    def usage_between(self, zone: str, first: date, last: date) -> pl.DataFrame:
        return self._history.usage_between(self._key(zone), first, last)

    def usage_by_day(self, zone: str, first: date, last: date) -> pl.DataFrame:
        return self._history.usage_by_day(self._key(zone), first, last)

    def put_day(
        self,
        zone: str,
        day: date,
        frame: pl.DataFrame,
        *,
        exported_at: datetime,
        settled: bool,
        has_tokens: bool | None = None,
    ) -> None:
        self._history.put_day(
            self._key(zone),
            day,
            frame,
            exported_at=exported_at,
            settled=settled,
            has_tokens=has_tokens,
        )

    def mark(self, name: str) -> datetime | None:
        """A mark of this workspace ("reconciled:Europe/Berlin" is the workspace's own)."""
        return self._history.mark(self._key(name))

    def set_mark(self, name: str, at: datetime) -> None:
        self._history.set_mark(self._key(name), at)


class Joined:
    """Every workspace's days of `history` (by name, in order), keys as "workspace/id".
    Read only: days are stored through a `Partition`; marks are the store's own."""

    def __init__(self, history: History, workspaces: Sequence[str]) -> None:
        self._history = history
        self._parts = [Partition(history, name) for name in workspaces]

    def stored_days(self, zone: str, first: date, last: date) -> dict[date, StoredDay]:
        """The days every workspace has stored, each as one: its rows summed, settled and
        tokens when all are, exported when the last was (so a day stored anew in one
        workspace reads as changed, as `recent.Cache` needs)."""
        each = [part.stored_days(zone, first, last) for part in self._parts]
        days = set.intersection(*(set(known) for known in each)) if each else set()
        joined = "+".join(key(part.workspace, zone) for part in self._parts)
        return {day: joined_day([known[day] for known in each], joined) for day in sorted(days)}

    def usage_between(self, zone: str, first: date, last: date) -> pl.DataFrame:
        return self._concat(part.usage_between(zone, first, last) for part in self._parts)

    def usage_by_day(self, zone: str, first: date, last: date) -> pl.DataFrame:
        """Each workspace's rows of the days all of them have stored, keys qualified."""
        days = list(self.stored_days(zone, first, last))
        frame = self._concat(part.usage_by_day(zone, first, last) for part in self._parts)
        return frame.filter(pl.col("day").is_in(days))

    def put_day(
        self,
        zone: str,
        day: date,
        frame: pl.DataFrame,
        *,
        exported_at: datetime,
        settled: bool,
        has_tokens: bool | None = None,
    ) -> None:
        raise TypeError("the joined history is read only: store a day through its Partition")

    def mark(self, name: str) -> datetime | None:
        return self._history.mark(name)

    def set_mark(self, name: str, at: datetime) -> None:
        self._history.set_mark(name, at)

    def _concat(self, frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
        parts = [
            qualify(frame, part.workspace) for part, frame in zip(self._parts, frames, strict=True)
        ]
        return pl.concat(parts, how="vertical")


class JoinedDays(Joined):
    """`Joined` over a cycle's transaction: the snapshots and notices the detectors use too."""

    def __init__(self, transaction: Transaction, workspaces: Sequence[str]) -> None:
        super().__init__(transaction, workspaces)
        self._transaction = transaction

    def put_snapshot(
        self,
        zone: str,
        day: date,
        hour: int,
        frame: pl.DataFrame,
        *,
        taken_at: datetime,
        keep_from: date,
    ) -> None:
        """Each workspace's keys of `frame` (ids "workspace/id") as its own snapshot."""
        for part in self._parts:
            prefix = part.workspace + SEPARATOR
            own = frame.filter(pl.col("api_key_id").str.starts_with(prefix)).with_columns(
                pl.col("api_key_id").str.strip_prefix(prefix)
            )
            self._transaction.put_snapshot(
                key(part.workspace, zone), day, hour, own, taken_at=taken_at, keep_from=keep_from
            )

    def snapshots(
        self, zone: str, first: date, last: date, *, hour: int | None = None
    ) -> Snapshots:
        """Every workspace's snapshots, keys qualified; an hour taken when it was in all."""
        each = [
            (
                part.workspace,
                self._transaction.snapshots(key(part.workspace, zone), first, last, hour=hour),
            )
            for part in self._parts
        ]
        frames = [
            taken.frame.with_columns(pl.lit(name + SEPARATOR) + pl.col("api_key_id"))
            for name, taken in each
        ]
        hours = frozenset.intersection(*(taken.taken for _, taken in each))
        return Snapshots(pl.concat(frames, how="vertical"), hours)

    def notices_sent(self, keys: Iterable[NoticeKey]) -> set[NoticeKey]:
        return self._transaction.notices_sent(keys)

    def record_notices(self, keys: Iterable[NoticeKey], at: datetime) -> None:
        self._transaction.record_notices(keys, at)


def joined_day(days: Sequence[StoredDay], zone: str) -> StoredDay:
    """One day stored in every workspace (`days`) as one, named `zone`."""
    return replace(
        days[0],
        zone=zone,
        exported_at=max(day.exported_at for day in days),
        settled=all(day.settled for day in days),
        rows=sum(day.rows for day in days),
        has_tokens=any(day.has_tokens for day in days),
    )


def joined(history: History, config: Config) -> History:
    """The days a cycle of `config` reads: `history` itself for a file with `langdock:`, else
    every workspace's (`Joined`)."""
    return (
        Joined(history, [c.name for c in config.connections])
        if config.keyed_by_workspace
        else history
    )
