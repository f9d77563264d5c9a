"""The usage history's metrics: how whole it is and what keeping it costs (`HistoryMetrics`).

Live metrics on the daemon's registry, set by the keeper (`costwatch/keeper.py`): days stored
and days still to export per zone, exports by kind (current, settle, repair, reconcile,
backfill), failed exports by kind, and what the daily reconcile found (its last difference in
dollars, and how many reconciles found one). Zones are the budgets' (a few) and workspaces the
file's, so their labels are bounded by the configuration; `workspace` is "default" for a file
with `langdock:`, as on the other families (`exposition.py`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from costwatch.keeping import KINDS, Difference

__all__ = ["HistoryMetrics"]


class HistoryMetrics:
    """The `costwatch_history_*` families on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._days = Gauge(
            "costwatch_history_days_stored",
            "Closed days of the usage history stored for the keeper's window, by workspace and"
            " zone.",
            ["workspace", "zone"],
            registry=registry,
        )
        self._remaining = Gauge(
            "costwatch_history_backfill_remaining_days",
            "Closed days the keeper has still to export (current periods and backfill), by"
            " workspace and zone; 0 once the history is whole.",
            ["workspace", "zone"],
            registry=registry,
        )
        self._exports = Counter(
            "costwatch_history_exports_total",
            "Exports the history's keeper made and stored, by kind.",
            ["kind"],
            registry=registry,
        )
        self._failures = Counter(
            "costwatch_history_export_failures_total",
            "Exports of the history's keeper that failed (after the client's retries), by kind.",
            ["kind"],
            registry=registry,
        )
        self._difference = Gauge(
            "costwatch_history_reconcile_difference_usd",
            "What the last daily reconcile found between the stored days and one export of"
            " them: the sum of |stored - exported| cost over keys and models, by workspace and"
            " zone.",
            ["workspace", "zone"],
            registry=registry,
        )
        self._differences = Counter(
            "costwatch_history_reconcile_differences_total",
            "Daily reconciles that found the stored days different from one export of them"
            " (the days are exported again), by workspace and zone.",
            ["workspace", "zone"],
            registry=registry,
        )
        for kind in KINDS:
            self._exports.labels(kind=kind)
            self._failures.labels(kind=kind)

    def progress(self, workspace: str, zone: str, *, stored: int, remaining: int) -> None:
        self._days.labels(workspace=workspace, zone=zone).set(stored)
        self._remaining.labels(workspace=workspace, zone=zone).set(remaining)
        self._differences.labels(
            workspace=workspace, zone=zone
        )  # at 0 from the first plan: increase() sees a first

    def exported(self, kind: str) -> None:
        self._exports.labels(kind=kind).inc()

    def failed(self, kind: str) -> None:
        self._failures.labels(kind=kind).inc()

    def reconciled(self, workspace: str, zone: str, difference: Difference) -> None:
        self._difference.labels(workspace=workspace, zone=zone).set(difference.usd)
        found = self._differences.labels(
            workspace=workspace, zone=zone
        )  # at 0 from the first reconcile on
        if not difference.none:
            found.inc()
