"""Metrics scrape time: costwatch's pre-rendered exposition beside a plain prometheus_client one.

    python bench/bench_scrape.py [--keys 20000] [--models 50] [--scrapes 200]
                                 [--baseline-scrapes 20]

In one run, over real HTTP on loopback, with httpx:

  (a) costwatch     `Metrics.publish` of a keys x models snapshot (built in memory with polars,
                    BYOK tokens on every row) and real findings of a few budgets, with the
                    default cap (50,000 key x model series), served by `MetricsServer`
  (b) baseline      a plain `CollectorRegistry` holding the same series (the snapshot part
                    parsed back, one labelled `Gauge` per family, `.labels(...).set()` per
                    series), served by `prometheus_client.start_http_server`

Scrapes alternate between the two so both see the same machine load; both are read as a
stream, uncompressed (`Accept-Encoding: identity`), and costwatch's also as Prometheus asks
for it (`Accept-Encoding: gzip`: the snapshot gzipped once per publish). Prints median and p99
scrape time per row (the baseline renders every series per scrape, so it gets fewer scrapes
by default), the body size and the one-off costs: `publish()` and filling the baseline.
Numbers only: no assertions (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import polars as pl
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from costwatch import budgets
from costwatch.config import parse_config
from costwatch.metrics import Metrics, MetricsServer, Snapshot
from costwatch.usage import SCHEMA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_export import _key_table, _model_table, _rows  # a sibling script, found by the path above

NOW = datetime(2026, 9, 20, 12, 0, tzinfo=UTC)
IDENTITY = {"Accept-Encoding": "identity"}  # prometheus_client would gzip 100 MB per scrape
GZIP = {"Accept-Encoding": "gzip"}  # what Prometheus sends
CONFIG = """\
langdock:
  api_key: not-used
schedule:
  timezone: UTC
budgets:
  - name: every-key
    keys: "*"
    limits: {cost_usd: 200, requests: 100000}
    models: {"gpt-4o*": {cost_usd: 50}}
  - name: workspace
    scope: shared
    keys: "*"
    limits: {cost_usd: 2000000}
"""


def usage_frame(keys: int, models: int) -> pl.DataFrame:
    rng = random.Random(1)
    rows = _rows(_key_table(keys, rng), _model_table(models, rng), byok=True, seed=1)
    return rows.select(pl.col(column).cast(dtype) for column, dtype in SCHEMA.items())


def snapshot(keys: int, models: int) -> Snapshot:
    usage = usage_frame(keys, models)
    rules = budgets.rules(parse_config(CONFIG), NOW)
    ranges = {key: usage for key in budgets.export_ranges(rules)}
    return Snapshot(NOW, usage, budgets.evaluate(rules, ranges, NOW).findings)


def baseline_registry(exposition: bytes) -> tuple[CollectorRegistry, int]:
    """A plain registry with one labelled Gauge per family of `exposition`, set per series."""
    registry = CollectorRegistry()
    series = 0
    for family in text_string_to_metric_families(exposition.decode()):
        if not family.samples:
            continue
        labels = sorted(family.samples[0].labels)
        gauge = Gauge(family.name, family.documentation, labels, registry=registry)
        for sample in family.samples:
            gauge.labels(**sample.labels).set(sample.value)
            series += 1
    return registry, series


def timed_scrape(
    http: httpx.Client, url: str, headers: dict[str, str] | None = None
) -> tuple[float, int]:
    """Seconds and bytes (as sent) of one scrape, read as a stream (joining ~100 MB into one
    `bytes` would cost the client more than the server's whole answer)."""
    started = time.perf_counter()
    size = 0
    with http.stream("GET", url, headers=headers) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            size += len(chunk)
    return time.perf_counter() - started, size


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Scrapes:
    ours: list[float]  # seconds per scrape of costwatch's /metrics
    gzipped: list[float]  # the same, asked for with Accept-Encoding: gzip
    theirs: list[float]  # seconds per scrape of the plain registry
    sizes: dict[str, int]  # body bytes: "costwatch", "gzip", "baseline"
    rows: int
    findings: int
    series: int
    publish_seconds: float
    fill_seconds: float


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--baseline-scrapes", type=int, default=20)
    args = parser.parse_args(argv)
    r = measure(args.keys, args.models, args.scrapes, args.baseline_scrapes)
    print()
    print(f"{r.rows:,} usage rows, {r.findings:,} findings -> {r.series:,} snapshot series")
    print(f"publish() once: {r.publish_seconds * 1000:,.0f} ms (render + swap)")
    print(f"baseline fill once: {r.fill_seconds:,.1f} s (parse + Gauge.labels().set() per series)")
    print()
    print(f"{'/metrics':<28}{'scrapes':>8}{'median ms':>11}{'p99 ms':>10}{'body MB':>9}")
    for name, key, times in (
        ("costwatch (pre-rendered)", "costwatch", r.ours),
        ("costwatch, gzip", "gzip", r.gzipped),
        ("prometheus_client registry", "baseline", r.theirs),
    ):
        print(
            f"{name:<28}{len(times):>8}{statistics.median(times) * 1000:>11,.1f}"
            f"{p99(times) * 1000:>10,.1f}{r.sizes[key] / 1e6:>9.1f}"
        )
    print(f"ratio of medians: {statistics.median(r.theirs) / statistics.median(r.ours):,.1f}x")
    return 0


def measure(keys: int, models: int, scrapes: int = 200, baseline_scrapes: int = 20) -> Scrapes:
    """Scrape both servers, alternating; see the module docstring."""
    print(f"building {keys:,} keys x {models} models in memory ...", flush=True)
    snap = snapshot(keys, models)
    metrics = Metrics()
    started = time.perf_counter()
    metrics.publish(snap)
    publish_seconds = time.perf_counter() - started
    stored, _live = metrics.exposition_parts()

    print("filling the baseline registry ...", flush=True)
    started = time.perf_counter()
    registry, series = baseline_registry(stored)
    fill_seconds = time.perf_counter() - started

    ours: list[float] = []
    gzipped: list[float] = []
    theirs: list[float] = []
    sizes: dict[str, int] = {}
    every = max(1, scrapes // max(1, baseline_scrapes))
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        with (
            MetricsServer(
                metrics.exposition_parts,
                host="127.0.0.1",
                port=0,
                healthz=_ok,
                readyz=_ok,
                gzipped=metrics.exposition_gzip,
            ) as server,
            httpx.Client(timeout=300, headers=IDENTITY) as http,
        ):
            ours_url = f"http://127.0.0.1:{server.port}/metrics"
            theirs_url = f"http://127.0.0.1:{httpd.server_address[1]}/metrics"
            for n in range(scrapes):
                seconds, sizes["costwatch"] = timed_scrape(http, ours_url)
                ours.append(seconds)
                seconds, sizes["gzip"] = timed_scrape(http, ours_url, GZIP)
                gzipped.append(seconds)
                if n % every == 0 and len(theirs) < baseline_scrapes:
                    seconds, sizes["baseline"] = timed_scrape(http, theirs_url)
                    theirs.append(seconds)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()

    return Scrapes(
        ours=ours,
        gzipped=gzipped,
        theirs=theirs,
        sizes=sizes,
        rows=snap.usage.height,
        findings=snap.findings.height,
        series=series,
        publish_seconds=publish_seconds,
        fill_seconds=fill_seconds,
    )


def _ok() -> tuple[bool, str]:
    return True, "ok"


if __name__ == "__main__":
    sys.exit(main())
