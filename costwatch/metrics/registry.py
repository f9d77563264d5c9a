"""The live daemon metrics, and the last good cycle's snapshot beside them: `Metrics`.

`/metrics` serves two parts, concatenated (no family is in both): the **snapshot part**,
rendered to bytes once per successful cycle by `Metrics.publish` (`exposition.py`), and the
**live part**: a small `CollectorRegistry` rendered per scrape with `generate_latest`: export
and cycle counters and histograms, alerts, Slack errors, `costwatch_build_info`,
`costwatch_snapshot_timestamp_seconds` (when the served snapshot was computed: a failed cycle
leaves the last good one in place, and this says how old it is), `costwatch_series_truncated`,
and the default process, platform and GC collectors. Label children that must exist at zero
(every export failure reason, cycle outcome, Slack error, damaged-row table) are created up
front; free-form label values are bounded (`_BoundedLabels`).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from costwatch import __version__
from costwatch.errors import EXPORT_FAILURE_REASONS
from costwatch.metrics.exposition import Snapshot, render_snapshot
from costwatch.metrics.history import HistoryMetrics
from costwatch.notices import FINDING_KINDS
from costwatch.slack.answers import PERMANENT_ERRORS, TRANSIENT_ERRORS
from costwatch.slack.deliver import DeliveryReport
from costwatch.state.rows import TABLES

__all__ = ["CYCLE_OUTCOMES", "DURATION_BUCKETS", "Metrics"]

CYCLE_OUTCOMES: tuple[str, ...] = ("ok", "export_failed", "error")
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_GZIP_LEVEL = 5  # once per cycle: 7 MB in about a tenth of a second, to about a tenth
_MAX_LABEL_VALUES = 32  # distinct free-form reasons / Slack errors before "other"
_MAX_LABEL_LENGTH = 64


class Metrics:
    """Every costwatch metric; the daemon updates the live ones and publishes each snapshot.

    `registry` receives the live metrics; without one, a fresh registry with the process,
    platform and GC collectors is made (never the global default registry).
    """

    def __init__(
        self,
        *,
        max_series: int = 50_000,
        version: str = __version__,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.max_series = max_series
        self.registry = registry if registry is not None else _default_registry()
        self._lock = threading.Lock()  # the snapshot bytes and their two gauges change together
        self._publishing = threading.Lock()  # one render at a time
        self._snapshot = render_snapshot(None, max_series).text
        self._gzip_head, self._gzip_state = _gzip_start(self._snapshot)
        self._snapshot_time: datetime | None = None  # when the served snapshot was computed
        self._snapshot_truncated = 0
        self._define(self.registry)
        self.history = HistoryMetrics(self.registry)  # set by the history's keeper
        self._build_info.labels(version=version).set(1)
        self._reasons = _BoundedLabels(EXPORT_FAILURE_REASONS)
        self._slack_errors = _BoundedLabels((*PERMANENT_ERRORS, *TRANSIENT_ERRORS))
        for reason in EXPORT_FAILURE_REASONS:
            self._export_failures.labels(reason=reason)
        for outcome in CYCLE_OUTCOMES:
            self._cycles.labels(outcome=outcome)
        for code in (*PERMANENT_ERRORS, *TRANSIENT_ERRORS):  # increase() sees the first error
            self._slack_errors_total.labels(error=code)
        for table in TABLES:
            self._damaged_rows.labels(table=table)

    def _define(self, registry: CollectorRegistry) -> None:
        self._last_success = Gauge(
            "costwatch_export_last_success_timestamp_seconds",
            "When the last Langdock export succeeded (Unix time; 0 before the first).",
            registry=registry,
        )
        self._export_duration = Histogram(
            "costwatch_export_duration_seconds",
            "How long a Langdock export took, successful or not.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._export_failures = Counter(
            "costwatch_export_failures_total",
            "Langdock exports that failed, by reason.",
            ["reason"],
            registry=registry,
        )
        self._alerts_sent = Counter(
            "costwatch_alerts_sent_total", "Alerts Slack accepted.", registry=registry
        )
        self._alerts_pending = Gauge(
            "costwatch_alerts_pending",
            "Alerts in the outbox waiting for Slack to accept them.",
            registry=registry,
        )
        self._cycle_duration = Histogram(
            "costwatch_cycle_duration_seconds",
            "How long a whole cycle took (export, budgets, alerts, state).",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._findings = Counter(
            "costwatch_findings_total",
            "Detector findings queued for Slack (anomalies, spend rates, unit costs, keys"
            " nobody answers for), by kind: each once per subject and day.",
            ["kind"],
            registry=registry,
        )
        for kind in FINDING_KINDS:  # every kind's series from the start, at 0
            self._findings.labels(kind=kind)
        self._reports = Counter(
            "costwatch_reports_total",
            "Scheduled reports queued for Slack, by report (`reports:`): each once per period,"
            " none for a period without use.",
            ["report"],
            registry=registry,
        )
        self._cycles = Counter(
            "costwatch_cycles_total", "Cycles run, by outcome.", ["outcome"], registry=registry
        )
        self._slack_errors_total = Counter(
            "costwatch_slack_errors_total",
            "Slack posts that failed, by error: Slack's code, or ratelimited, timeout, "
            "connection, http_<status> for failures retried later.",
            ["error"],
            registry=registry,
        )
        self._damaged_rows = Counter(
            "costwatch_state_damaged_rows_total",
            "Damaged rows found in the state file (each once per process), by table; outbox"
            " rows are set aside, ledger rows read so that nothing is sent twice.",
            ["table"],
            registry=registry,
        )
        self._build_info = Gauge(
            "costwatch_build_info",
            "The running costwatch version (always 1).",
            ["version"],
            registry=registry,
        )
        self._snapshot_at = Gauge(
            "costwatch_snapshot_timestamp_seconds",
            "When the served per-key and per-budget values were computed (Unix time; 0: never).",
            registry=registry,
        )
        self._leader = Gauge(
            "costwatch_leader",
            "1 on the replica that runs the cycles and delivers, 0 on a standby (PostgreSQL"
            " state); always 1 on a SQLite state.",
            registry=registry,
        )
        self._truncated = Gauge(
            "costwatch_series_truncated",
            "Series of the served snapshot (per key, per key and model, per budget) folded "
            'into an "other" series or dropped by metrics.max_series.',
            registry=registry,
        )

    def cycle_succeeded(
        self,
        snapshot: Snapshot,
        duration_seconds: float,
        findings: Iterable[str] = (),
        failed: Iterable[str] = (),
    ) -> None:
        """A cycle whose export succeeded: its snapshot published, its export, the cycle and
        the kinds of the detectors' `findings` it queued counted; the reasons of the exports
        that `failed` in some workspaces while others succeeded, counted as failures."""
        self.findings_queued(findings)
        for reason in failed:
            self._export_failures.labels(reason=self._reasons.value(reason)).inc()
        self.export_succeeded(snapshot.at, duration_seconds)
        self.publish(snapshot)
        self.cycle_finished("ok", duration_seconds)

    def cycle_failed_export(self, reason: str, duration_seconds: float) -> None:
        """A cycle whose export (or its data) failed, under `reason`: the served snapshot stays."""
        self.export_failed(reason, duration_seconds)
        self.cycle_finished("export_failed", duration_seconds)

    def delivered(self, report: DeliveryReport) -> None:
        """A delivery round: the rows Slack accepted, the posts it refused by error, what waits."""
        self.alerts_sent(report.sent)
        for code, count in {**report.permanent_errors, **report.transient_errors}.items():
            self.slack_error(code, count)
        self.alerts_pending(report.pending)

    def export_succeeded(self, at: datetime, duration_seconds: float) -> None:
        self._last_success.set(at.timestamp())
        self._export_duration.observe(duration_seconds)

    def export_failed(self, reason: str, duration_seconds: float) -> None:
        self._export_failures.labels(reason=self._reasons.value(reason)).inc()
        self._export_duration.observe(duration_seconds)

    def cycle_finished(self, outcome: str, duration_seconds: float) -> None:
        if outcome not in CYCLE_OUTCOMES:
            raise ValueError(f"unknown cycle outcome {outcome!r}: one of {CYCLE_OUTCOMES}")
        self._cycles.labels(outcome=outcome).inc()
        self._cycle_duration.observe(duration_seconds)

    def findings_queued(self, kinds: Iterable[str]) -> None:
        """The detectors' findings one cycle queued, by kind."""
        for kind in kinds:
            self._findings.labels(kind=kind).inc()

    def reports_queued(self, names: Iterable[str]) -> None:
        """The scheduled reports one cycle queued, by their configured name."""
        for name in names:
            self._reports.labels(report=name).inc()

    def alerts_sent(self, count: int) -> None:
        self._alerts_sent.inc(count)

    def alerts_pending(self, count: int) -> None:
        self._alerts_pending.set(count)

    def slack_error(self, error: str, count: int = 1) -> None:
        """`count` posts Slack did not take with `error`, permanent or transient (5xx,
        timeouts, connection errors, rate limits slack_sdk's retries did not outlast)."""
        self._slack_errors_total.labels(error=self._slack_errors.value(error)).inc(count)

    def state_damaged(self, table: str) -> None:
        if table not in TABLES:
            raise ValueError(f"unknown state table {table!r}: one of {TABLES}")
        self._damaged_rows.labels(table=table).inc()

    def publish(self, snapshot: Snapshot) -> None:
        """Render the snapshot's families once; scrapes serve these bytes until the next one."""
        with self._publishing:
            rendered = render_snapshot(snapshot, self.max_series)
            gzip_head, gzip_state = _gzip_start(rendered.text)
            with self._lock:
                self._snapshot = rendered.text
                self._gzip_head, self._gzip_state = gzip_head, gzip_state
                self._snapshot_time, self._snapshot_truncated = snapshot.at, rendered.truncated
                self._snapshot_at.set(snapshot.at.timestamp())
                self._truncated.set(rendered.truncated)

    def leader(self, leading: bool) -> None:
        self._leader.set(1 if leading else 0)

    def snapshot_state(self) -> tuple[bytes, datetime | None, int]:
        """The served snapshot's bytes, when it was computed (None: never) and its truncation,
        for a leader to share with the standbys."""
        with self._lock:
            return self._snapshot, self._snapshot_time, self._snapshot_truncated

    def adopt(self, text: bytes, at: datetime, truncated: int) -> None:
        """Serve a snapshot another replica rendered (a standby serves the leader's)."""
        gzip_head, gzip_state = _gzip_start(text)
        with self._lock:
            self._snapshot, self._snapshot_time, self._snapshot_truncated = text, at, truncated
            self._gzip_head, self._gzip_state = gzip_head, gzip_state
            self._snapshot_at.set(at.timestamp())
            self._truncated.set(truncated)

    def exposition_parts(self) -> tuple[bytes, bytes]:
        """The snapshot bytes and the live registry's, consistent with each other."""
        with self._lock:
            return self._snapshot, generate_latest(self.registry)

    def exposition_gzip(self) -> tuple[bytes, bytes]:
        """`exposition_parts` as one gzip stream, in two pieces: the snapshot, compressed once
        when it was published, and the live registry compressed onto it now."""
        with self._lock:
            head, state = self._gzip_head, self._gzip_state.copy()
            live = generate_latest(self.registry)
        return head, state.compress(live) + state.flush()

    def exposition(self) -> bytes:
        """What `/metrics` serves."""
        return b"".join(self.exposition_parts())


class _BoundedLabels:
    """Free-form label values (error codes) with a bound: known ones, then up to
    `_MAX_LABEL_VALUES` others, then "other"."""

    def __init__(self, known: Sequence[str]) -> None:
        self._known = set(known)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def value(self, text: str) -> str:
        text = text[:_MAX_LABEL_LENGTH] or "unknown"
        if text in self._known:
            return text
        with self._lock:
            if text in self._seen or len(self._seen) < _MAX_LABEL_VALUES:
                self._seen.add(text)
                return text
        return "other"


def _gzip_start(snapshot: bytes) -> tuple[bytes, zlib._Compress]:
    """The gzip stream's first bytes (`snapshot`, flushed to a byte boundary) and the
    compressor that continues it: each scrape copies it and adds the live part."""
    state = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return state.compress(snapshot) + state.flush(zlib.Z_SYNC_FLUSH), state


def _default_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)  # registers itself only where gc statistics exist
    return registry
