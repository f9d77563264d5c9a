"""Prometheus metrics: the live daemon metrics, the last good cycle's snapshot, the endpoint.

    registry.py    `Metrics`: the live registry (counters, histograms, gauges) and the snapshot
                   bytes it publishes; `exposition_parts()` is what `/metrics` serves
    exposition.py  the snapshot part, rendered once per cycle with polars (pure)
    cap.py         one `max_series` over every family of that part: the rest folded (pure)
    history.py     `HistoryMetrics`: the usage history's keeper, on the live registry
    server.py      `MetricsServer`: bounded threads and deadlines; it serves a callable
    http.py        one request: basic auth, `/metrics`, `/healthz`, `/readyz`

Metric names are an interface (docs/architecture.md lists them).
"""

from costwatch.metrics.exposition import (
    ALL_MODELS,
    OTHER_KEY,
    OTHER_MODEL,
    OTHER_NAME,
    SHARED_SUBJECT,
    Snapshot,
    render_snapshot,
)
from costwatch.metrics.http import Limits
from costwatch.metrics.registry import CYCLE_OUTCOMES, Metrics
from costwatch.metrics.server import MetricsServer

__all__ = [
    "ALL_MODELS",
    "CYCLE_OUTCOMES",
    "OTHER_KEY",
    "OTHER_MODEL",
    "OTHER_NAME",
    "SHARED_SUBJECT",
    "Limits",
    "Metrics",
    "MetricsServer",
    "Snapshot",
    "render_snapshot",
]
