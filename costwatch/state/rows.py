"""Reading the state file's rows defensively: one damaged row (JSON that does not parse, a time
that is not one, a value of the wrong type: a disk fault, a hand edit, a bug) never stops
delivery or planning, and never sends an alert twice.

- **Outbox**: a damaged row is set aside: `State.pending` skips it, so every other row is still
  delivered; it is never sent and never deleted (it still counts in `pending_count`, since its
  alert was not delivered), so an operator can repair or delete it.
- **Ledger**: a damaged row is read the safe way, never dropped (a missing entry would re-send
  its alert). A level that cannot be read counts as every level up to the subject's current
  one having fired, by reading its limit as unknown: planning then re-arms the entry under the
  current limit, silently, as after a limit change (`alerts.py`), and writes it back sound; a
  later, higher level still fires. A limit that cannot be read is unknown the same way. A use
  or time that cannot be read makes the entry "never sent": no repeat and no "since the last
  alert" from it. A kind other than actual or forecast is read as both, at an unknown level.
  Key text stored as a BLOB is read as that text. Only a key that is no text at all (a BLOB
  that is not UTF-8) identifies no alert: that row is skipped, and its alert may be sent again.
  A row with no budget is no budget's alert but a notice sent once (a finding, a report:
  `notices.py`, which reads them, of any kind): the budgets' ledger leaves it out.
- Each damaged row is logged once per process, without its content, and counted through
  `Damage.on_damaged(table)` (the daemon's `costwatch_state_damaged_rows_total{table}`).
  Reading never writes, so `check --dry-run` stays read-only.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from costwatch.alerts import FORECAST_LEVEL, Kind, LedgerEntry, LedgerKey
from costwatch.state.base import OutboxItem

__all__ = [
    "Damage",
    "Damaged",
    "Query",
    "aware_time",
    "integer",
    "json_object",
    "ledger_entries",
    "outbox_item",
    "read_ledger",
    "text",
]

log = logging.getLogger("costwatch.state")

# A query on the state: SQL and parameters in, rows out.
Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]

TABLES = ("outbox", "ledger")
_OUTCOME = {
    "outbox": "it is set aside, never sent and kept in the file: repair or delete the row",
    "ledger": "it is read the safe way, so that nothing is sent twice",
}


class Damaged(ValueError):
    """A column of a state row does not hold what it must; the message names the column."""


class Damage:
    """Logs each damaged row once per process and counts it through `on_damaged(table)`."""

    def __init__(self, path: Path | str) -> None:
        self._path = path
        self._seen: set[tuple[str, Hashable]] = set()
        self.on_damaged: Callable[[str], None] | None = None

    def report(self, table: str, row: Hashable, what: str, reason: str) -> None:
        """Row `row` (an identity) of `table`, described as `what`, is damaged: `reason`."""
        if (table, row) in self._seen:
            return
        self._seen.add((table, row))
        log.error("%s: %s %s is damaged (%s); %s", self._path, table, what, reason, _OUTCOME[table])
        if self.on_damaged is not None:
            self.on_damaged(table)


# -- columns ----------------------------------------------------------------------------------


def text(value: Any, column: str) -> str:
    if isinstance(value, str):
        return value
    raise Damaged(f"{column} is not text")


def optional_text(value: Any, column: str) -> str | None:
    return None if value is None else text(value, column)


def integer(value: Any, column: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise Damaged(f"{column} is not a whole number")


def number(value: Any, column: str) -> float:
    """A REAL column: SQLite keeps text or a BLOB given to it as such (and NaN as NULL)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise Damaged(f"{column} is not a number")


def aware_time(value: Any, column: str) -> datetime:
    """A time as the state stores it: ISO 8601 with its UTC offset (SQLite), or an aware
    datetime (PostgreSQL's timestamptz)."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(text(value, column))
        except ValueError:
            raise Damaged(f"{column} is not a time") from None
    if moment.utcoffset() is None:
        raise Damaged(f"{column} is a time without its UTC offset")
    return moment


def optional_time(value: Any, column: str) -> datetime | None:
    return None if value is None or value == "" else aware_time(value, column)


def json_object(value: Any, column: str) -> dict[str, Any]:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise Damaged(f"{column} is not JSON") from None
    try:
        parsed = json.loads(text(value, column))
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        raise Damaged(f"{column} is not JSON") from None
    if not isinstance(parsed, dict):
        raise Damaged(f"{column} is not a JSON object")
    return parsed


# -- ledger rows ------------------------------------------------------------------------------

_KEY_COLUMNS = ("budget", "subject", "model", "metric", "kind", "period")


def ledger_entries(row: Sequence[Any]) -> tuple[list[LedgerEntry], list[str]]:
    """A ledger row (key columns, level, limit_value, used, sent_at) read the safe way (see the
    module docstring), and what was damaged in it. A row of an unknown kind is read as both
    kinds at an unknown level; one whose key cannot be read, as nothing."""
    problems: list[str] = []
    try:
        key = [_key_text(row[i], column, problems) for i, column in enumerate(_KEY_COLUMNS)]
    except Damaged as error:
        return [], [str(error)]
    budget, subject, model, metric, kind, period = key
    kinds: tuple[Kind, ...] = ("actual",) if kind == "actual" else ("forecast",)
    level = _column(number, row[6], "level", problems)
    if kind not in ("actual", "forecast"):
        problems.append("kind is neither actual nor forecast")
        kinds, level = ("actual", "forecast"), None
    limit = _column(number, row[7], "limit_value", problems)
    used = _column(number, row[8], "used", problems)
    sent_at = _column(optional_time, row[9], "sent_at", problems)
    if used is None:
        sent_at = None
    entries = [
        LedgerEntry(
            budget=budget,
            subject=subject,
            model=model,
            metric=metric,
            kind=each,
            period=period,
            level=_unknown_level(each) if level is None else level,
            # an unknown limit equals no limit, so planning re-arms the entry under the current one
            limit=math.nan if level is None or limit is None else limit,
            used=0.0 if used is None else used,
            sent_at=sent_at,
        )
        for each in kinds
    ]
    return entries, problems


def _unknown_level(kind: Kind) -> float:
    """Every level fired: re-armed under the current limit, "up to the current level"."""
    return math.inf if kind == "actual" else FORECAST_LEVEL


def _key_text(value: Any, column: str, problems: list[str]) -> str:
    """A key column; a BLOB of UTF-8 text (SQLite keeps what it was given) is that text."""
    if isinstance(value, bytes):
        try:
            decoded = value.decode("utf-8")
        except UnicodeDecodeError:
            raise Damaged(f"{column} is not text") from None
        problems.append(f"{column} is a BLOB, not text")
        return decoded
    return text(value, column)


def _column(read: Callable[[Any, str], Any], value: Any, column: str, problems: list[str]) -> Any:
    try:
        return read(value, column)
    except Damaged as error:
        problems.append(str(error))
        return None


def read_ledger(
    query: Query, periods: Iterable[str], damage: Damage
) -> dict[LedgerKey, LedgerEntry]:
    """The ledger of `periods`; damaged rows read the safe way (`ledger_entries`)."""
    rows: list[tuple[Any, ...]] = []
    for period in sorted(set(periods)):  # a cycle has one to three periods
        rows += query(
            "SELECT budget, subject, model, metric, kind, period, level, limit_value, used,"
            " sent_at FROM ledger WHERE period = ? AND budget != ''",
            (period,),
        )
    entries: dict[LedgerKey, LedgerEntry] = {}
    damaged: set[LedgerKey] = set()
    for row in rows:
        read, problems = ledger_entries(row)
        if problems:
            damage.report("ledger", _ledger_id(row), _ledger_what(row), "; ".join(problems))
        for entry in read:
            if entry.key in entries and (problems or entry.key not in damaged):
                continue  # of two rows for one key (a damaged one, its rewrite), the sound one
            entries[entry.key] = entry
            if problems:
                damaged.add(entry.key)
            else:
                damaged.discard(entry.key)
    return entries


def outbox_item(r: Sequence[Any]) -> OutboxItem:
    """An outbox row (id, created_at, channel, kind, payload, attempts, last_error); raises
    `Damaged` for a row that does not hold one."""
    return OutboxItem(
        id=r[0],
        created_at=aware_time(r[1], "created_at"),
        channel=optional_text(r[2], "channel"),
        kind=text(r[3], "kind"),
        payload=json_object(r[4], "payload"),
        attempts=integer(r[5], "attempts"),
        last_error=optional_text(r[6], "last_error"),
    )


def _ledger_id(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(row[:6])


def _ledger_what(row: Sequence[Any]) -> str:
    """Which row, without its content beyond the budget and the kind (repr: escaped)."""
    budget, kind = row[0], row[4]
    if isinstance(budget, str) and isinstance(kind, str):
        return f"row of budget {budget[:80]!r} ({kind[:20]!r})"
    return "row"
