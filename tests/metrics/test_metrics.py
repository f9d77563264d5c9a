"""Metrics and health: real scrapes over loopback with httpx, read back with prometheus_client.

Each test starts its own `MetricsServer` on a free loopback port. The exposition is checked by
parsing it back (`text_string_to_metric_families`), and once by `promtool check metrics`
(installed from Debian's `prometheus` package when missing, see `promtool.py`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from promtool import check_metrics

from costwatch.budgets import FINDING_SCHEMA
from costwatch.errors import EXPORT_FAILURE_REASONS
from costwatch.metrics import (
    CYCLE_OUTCOMES,
    OTHER_KEY,
    OTHER_MODEL,
    OTHER_NAME,
    SHARED_SUBJECT,
    Metrics,
    MetricsServer,
    Snapshot,
    render_snapshot,
)
from costwatch.metrics.http import WORKERS, Limits
from costwatch.slack.answers import PERMANENT_ERRORS, TRANSIENT_ERRORS
from costwatch.usage import SCHEMA, TOKEN_COLUMNS

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
HOSTILE = (
    'a"b\nc{x="y"}',
    "back\\slash\\",
    'quote" } evil_metric{x="1"} 1\n# TYPE evil gauge',
    "\\n literal, not a newline",
    "ünïcødé ✓ 🚀",
    "",
    "tab\tcr\rend",
)
DESIGN_FAMILIES = {
    "costwatch_key_spend_usd": "gauge",
    "costwatch_key_requests": "gauge",
    "costwatch_key_tokens": "gauge",
    "costwatch_key_model_spend_usd": "gauge",
    "costwatch_key_model_requests": "gauge",
    "costwatch_key_model_tokens": "gauge",
    "costwatch_budget_limit": "gauge",
    "costwatch_budget_used_ratio": "gauge",
    "costwatch_budget_forecast_ratio": "gauge",
    "costwatch_export_last_success_timestamp_seconds": "gauge",
    "costwatch_export_duration_seconds": "histogram",
    "costwatch_export_failures_total": "counter",
    "costwatch_alerts_sent_total": "counter",
    "costwatch_alerts_pending": "gauge",
    "costwatch_cycle_duration_seconds": "histogram",
    "costwatch_cycles_total": "counter",
    "costwatch_slack_errors_total": "counter",
    "costwatch_build_info": "gauge",
    "costwatch_snapshot_timestamp_seconds": "gauge",
    "costwatch_series_truncated": "gauge",
    "process_cpu_seconds_total": "counter",
    "python_info": "gauge",
}

# --- building snapshots ---------------------------------------------------------------------


def usage_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A Usage.frame from partial rows: token columns null unless given."""
    full = [{column: None for column in TOKEN_COLUMNS} | row for row in rows]
    return pl.DataFrame(full, schema=SCHEMA)


def row(key: str, model: str, cost: float, requests: int = 1, **tokens: int) -> dict[str, Any]:
    return {
        "api_key_id": key,
        "api_key_name": f"name-{key}",
        "model": model,
        "requests": requests,
        "total_cost_usd": cost,
        **tokens,
    }


def finding(budget: str, key: str | None, name: str | None, **values: Any) -> dict[str, Any]:
    base = {
        "budget": budget,
        "scope": "key" if key is not None else "shared",
        "api_key_id": key,
        "api_key_name": name,
        "model": None,
        "metric": "cost_usd",
        "used": 50.0,
        "limit": 100.0,
        "ratio": 0.5,
        "level": 50.0,
        "projected": 120.0,
        "forecast_ratio": 1.2,
        "forecast_due": True,
        "overrun_at": None,
        "period": "month:2026-11",
    }
    return base | values


def findings_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=FINDING_SCHEMA)


def snapshot(
    usage: pl.DataFrame, findings: pl.DataFrame | None = None, at: datetime = NOW
) -> Snapshot:
    return Snapshot(at, usage, findings if findings is not None else findings_frame([]))


def populated() -> Snapshot:
    usage = usage_frame(
        [
            row("k1", "gpt-4o", 12.5, 100, sum_prompt_tokens=1000, sum_completion_tokens=200),
            row("k1", "claude-3", 2.25, 20, cached_prompt_tokens=30, no_cache_tokens=5),
            row("k2", "gpt-4o", 0.75, 7),
        ]
    )
    findings = findings_frame(
        [
            finding("every-key", "k1", "name-k1", ratio=1.475, used=14.75, limit=10.0),
            finding("every-key", "k2", "name-k2", ratio=0.075, used=0.75, limit=10.0),
            finding("workspace", None, None, metric="requests", model="gpt-4*", limit=1e5),
            finding("new", "k2", "name-k2", forecast_ratio=None, projected=None),
        ]
    )
    return snapshot(usage, findings)


# --- serving and scraping -------------------------------------------------------------------


def ok_probe() -> tuple[bool, str]:
    return True, "ok"


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(version="1.2.3")


@pytest.fixture
def served(metrics: Metrics) -> Iterator[MetricsServer]:
    with MetricsServer(
        metrics.exposition_parts,
        host="127.0.0.1",
        port=0,
        healthz=ok_probe,
        readyz=ok_probe,
        gzipped=metrics.exposition_gzip,
    ) as server:
        yield server


def url(server: MetricsServer, path: str = "/metrics", host: str = "127.0.0.1") -> str:
    return f"{server.scheme}://{host}:{server.port}{path}"


def scrape(server: MetricsServer, **client: Any) -> str:
    with httpx.Client(**client) as http:
        response = http.get(url(server), timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample named `name`, as (labels, value)."""
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def by_labels(text: str, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    found = samples(text, name)
    table = {tuple(found_labels[label] for label in labels): value for found_labels, value in found}
    assert len(table) == len(found), f"{name}: two samples with the same {labels}"
    return table


def declared(text: str) -> dict[str, tuple[str, str]]:
    """Metric family -> (TYPE, HELP), from the exposition's comment lines."""
    helps, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in helps, f"{name} is declared twice"
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            types[name] = kind
    assert helps.keys() == types.keys()
    return {name: (types[name], helps[name]) for name in types}


# --- names, types, help ---------------------------------------------------------------------


def test_scrape_declares_every_design_metric_with_its_type_and_help(
    metrics: Metrics, served: MetricsServer
) -> None:
    metrics.publish(populated())
    families = declared(scrape(served))
    for name, kind in DESIGN_FAMILIES.items():
        assert name in families, name
        assert families[name][0] == kind, name
        assert families[name][1].strip(), f"{name} has no HELP text"
    assert by_labels(scrape(served), "costwatch_build_info", "version") == {("1.2.3",): 1.0}


def test_no_family_is_both_prerendered_and_live(metrics: Metrics) -> None:
    metrics.publish(populated())
    stored, live = metrics.exposition_parts()
    assert declared(stored.decode()).keys().isdisjoint(declared(live.decode()).keys())
    declared(metrics.exposition().decode())  # raises on a family declared twice


def test_per_key_and_per_model_values_sum_the_export(
    metrics: Metrics, served: MetricsServer
) -> None:
    metrics.publish(populated())
    text = scrape(served)
    assert by_labels(text, "costwatch_key_spend_usd", "api_key_id", "api_key_name") == {
        ("k1", "name-k1"): 14.75,
        ("k2", "name-k2"): 0.75,
    }
    assert by_labels(text, "costwatch_key_requests", "api_key_id") == {("k1",): 120, ("k2",): 7}
    assert by_labels(text, "costwatch_key_model_spend_usd", "api_key_id", "model") == {
        ("k1", "gpt-4o"): 12.5,
        ("k1", "claude-3"): 2.25,
        ("k2", "gpt-4o"): 0.75,
    }


def test_tokens_are_exported_only_where_the_export_reports_them(
    metrics: Metrics, served: MetricsServer
) -> None:
    metrics.publish(populated())
    text = scrape(served)
    assert by_labels(text, "costwatch_key_tokens", "api_key_id", "kind") == {
        ("k1", "prompt"): 1000,
        ("k1", "completion"): 200,
        ("k1", "cached_prompt"): 30,
        ("k1", "no_cache"): 5,
    }
    model_tokens = by_labels(text, "costwatch_key_model_tokens", "api_key_id", "model", "kind")
    assert model_tokens == {
        ("k1", "gpt-4o", "prompt"): 1000,
        ("k1", "gpt-4o", "completion"): 200,
        ("k1", "claude-3", "cached_prompt"): 30,
        ("k1", "claude-3", "no_cache"): 5,
    }


def test_budget_series_name_key_and_shared_subjects_apart(
    metrics: Metrics, served: MetricsServer
) -> None:
    usage = usage_frame([row("k1", "m", 1.0), row("k2", "m", 1.0)])
    findings = findings_frame(
        [
            finding("every-key", "k1", "twin", ratio=0.25),
            finding("every-key", "k2", "twin", ratio=0.5),
            finding("pool", None, None, model="gpt-4*", metric="tokens", ratio=0.75),
        ]
    )
    metrics.publish(snapshot(usage, findings))
    text = scrape(served)
    labels = ("budget", "subject", "api_key_id", "metric", "model")
    assert by_labels(text, "costwatch_budget_used_ratio", *labels) == {
        ("every-key", "twin", "k1", "cost_usd", "all"): 0.25,
        ("every-key", "twin", "k2", "cost_usd", "all"): 0.5,
        ("pool", SHARED_SUBJECT, "", "tokens", "gpt-4*"): 0.75,
    }
    assert len(samples(text, "costwatch_budget_limit")) == 3


def test_forecast_ratio_is_absent_while_there_is_no_forecast(
    metrics: Metrics, served: MetricsServer
) -> None:
    metrics.publish(populated())
    text = scrape(served)
    forecast = by_labels(text, "costwatch_budget_forecast_ratio", "budget", "api_key_id")
    assert ("new", "k2") not in forecast
    assert ("every-key", "k2") in forecast
    assert len(samples(text, "costwatch_budget_limit")) == 4


# --- escaping -------------------------------------------------------------------------------


def test_hostile_key_and_model_names_round_trip_without_adding_labels_or_series(
    metrics: Metrics, served: MetricsServer
) -> None:
    rows = [
        {**row(f"id-{i}", model, float(i + 1)), "api_key_name": name}
        for i, (name, model) in enumerate(zip(HOSTILE, reversed(HOSTILE), strict=True))
    ]
    findings = findings_frame(
        [finding("b", f"id-{i}", name, model=name) for i, name in enumerate(HOSTILE)]
    )
    metrics.publish(snapshot(usage_frame(rows), findings))
    text = scrape(served)
    found = samples(text, "costwatch_key_model_spend_usd")
    assert len(found) == len(HOSTILE)
    for labels, value in found:
        assert set(labels) == {"api_key_id", "api_key_name", "model", "workspace"}
        i = int(labels["api_key_id"].removeprefix("id-"))
        assert (labels["api_key_name"], labels["model"], value) == (
            HOSTILE[i],
            HOSTILE[-1 - i],
            i + 1.0,
        )
    ratios = samples(text, "costwatch_budget_used_ratio")
    assert sorted(labels["subject"] for labels, _ in ratios) == sorted(HOSTILE)
    assert all(labels["model"] == labels["subject"] for labels, _ in ratios)
    assert not [f for f in text_string_to_metric_families(text) if "evil" in f.name]


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.text(max_size=12), min_size=1, max_size=6, unique=True))
def test_any_key_name_round_trips_through_the_exposition(names: list[str]) -> None:
    rows = [{**row(f"k{i}", name, 1.0 + i), "api_key_name": name} for i, name in enumerate(names)]
    text = render_snapshot(snapshot(usage_frame(rows)), 50_000).text.decode()
    found = by_labels(text, "costwatch_key_model_spend_usd", "api_key_id", "api_key_name", "model")
    assert found == {(f"k{i}", name, name): 1.0 + i for i, name in enumerate(names)}


# --- the cap --------------------------------------------------------------------------------


SNAPSHOT_FAMILIES = (
    "costwatch_key_spend_usd",
    "costwatch_key_requests",
    "costwatch_key_tokens",
    "costwatch_key_model_spend_usd",
    "costwatch_key_model_requests",
    "costwatch_key_model_tokens",
    "costwatch_budget_limit",
    "costwatch_budget_used_ratio",
    "costwatch_budget_forecast_ratio",
)


def snapshot_series(text: str) -> int:
    return sum(len(samples(text, name)) for name in SNAPSHOT_FAMILIES)


def test_cap_keeps_the_top_spenders_and_folds_the_rest_into_other_per_key() -> None:
    # 3 keys x 4 models, no tokens: 3 x 2 per-key series and 12 x 2 key x model series (30).
    # Under 22 (4 held back for the keys a fold might need) the three keys and the 3 dearest
    # rows fit, with one "other" row per key.
    costs = {"a": (100.0, 90.0, 1.0, 0.5), "b": (80.0, 2.0, 1.5, 0.25), "c": (3.0, 0.1, 0.2, 0.3)}
    rows = [
        row(key, f"m{i}", cost, 1) for key, spend in costs.items() for i, cost in enumerate(spend)
    ]
    metrics = Metrics(max_series=22, registry=CollectorRegistry())
    metrics.publish(snapshot(usage_frame(rows)))
    text = metrics.exposition().decode()
    series = by_labels(text, "costwatch_key_model_spend_usd", "api_key_id", "model")
    assert series == {
        ("a", "m0"): 100.0,
        ("a", "m1"): 90.0,
        ("b", "m0"): 80.0,
        ("a", OTHER_MODEL): 1.5,
        ("b", OTHER_MODEL): 3.75,
        ("c", OTHER_MODEL): pytest.approx(3.6),
    }
    assert (
        by_labels(text, "costwatch_key_model_requests", "api_key_id", "model")[("c", "other")] == 4
    )
    assert by_labels(text, "costwatch_key_spend_usd", "api_key_id") == {
        ("a",): 191.5,
        ("b",): 83.75,
        ("c",): pytest.approx(3.6),
    }
    assert snapshot_series(text) == 18
    assert samples(text, "costwatch_series_truncated") == [({}, 18.0)]  # 30 - 6 - 3 x 2


def test_cap_folds_the_keys_spending_least_into_one_other_key() -> None:
    rows = [row(f"k{i}", model, float(i)) for i in range(1, 6) for model in ("x", "y")]
    metrics = Metrics(max_series=16, registry=CollectorRegistry())
    metrics.publish(snapshot(usage_frame(rows)))
    text = metrics.exposition().decode()
    assert by_labels(text, "costwatch_key_model_spend_usd", "api_key_id", "model") == {
        ("k5", OTHER_MODEL): 10.0,
        ("k4", OTHER_MODEL): 8.0,
        ("k3", OTHER_MODEL): 6.0,
        (OTHER_KEY, OTHER_MODEL): 6.0,  # k1 and k2
    }
    assert by_labels(text, "costwatch_key_spend_usd", "api_key_id", "api_key_name") == {
        ("k3", "name-k3"): 6.0,
        ("k4", "name-k4"): 8.0,
        ("k5", "name-k5"): 10.0,
        (OTHER_KEY, OTHER_NAME): 6.0,
    }
    assert by_labels(text, "costwatch_key_requests", "api_key_id")[(OTHER_KEY,)] == 4
    assert snapshot_series(text) == 16
    assert samples(text, "costwatch_series_truncated") == [({}, 24.0)]  # 30 - 3 keys x 2


def test_cap_merges_a_real_model_named_other_into_the_fold() -> None:
    rows = [row("a", "big", 10.0), row("a", OTHER_MODEL, 5.0), row("a", "small", 1.0)]
    rows += [row("a", "tiny", 0.75), row("b", "tiny", 0.5)]
    text = render_snapshot(snapshot(usage_frame(rows)), 13).text.decode()
    assert by_labels(text, "costwatch_key_model_spend_usd", "api_key_id", "model") == {
        ("a", "big"): 10.0,
        ("a", OTHER_MODEL): 6.75,
        (OTHER_KEY, OTHER_MODEL): 0.5,
    }


def test_cap_folds_budget_series_of_folded_keys_keeping_the_worst_ratio() -> None:
    rows = [row(f"k{i}", "m", float(i)) for i in range(1, 11)]
    findings = [
        finding("each", f"k{i}", f"name-k{i}", used=float(i), limit=5.0, ratio=i / 5.0)
        for i in range(1, 11)
    ]
    findings.append(finding("each", "k1", "name-k1", metric="requests", ratio=3.0, limit=1.0))
    findings.append(finding("pool", None, None, ratio=0.1))
    frame = findings_frame(findings)
    # Per key: 2 series and 3 per finding; the pool's 3 are always served; 10 are held back
    # for the folds (a key and its row, and two budget subjects): 27 left, 7 per key.
    text = render_snapshot(snapshot(usage_frame(rows), frame), 40).text.decode()
    ratios = by_labels(text, "costwatch_budget_used_ratio", "budget", "api_key_id", "metric")
    kept = {key for _, key, _ in ratios if key not in ("", OTHER_KEY)}
    assert kept == {"k10", "k9", "k8"}  # the dearest keys, whole
    assert ratios[("each", OTHER_KEY, "cost_usd")] == 7 / 5  # the worst folded, k7
    assert ratios[("each", OTHER_KEY, "requests")] == 3.0  # k1's only finding of its metric
    assert ratios[("pool", "", "cost_usd")] == 0.1
    subjects = by_labels(text, "costwatch_budget_limit", "budget", "subject", "metric")
    assert subjects[("each", OTHER_NAME, "cost_usd")] == 5.0
    assert snapshot_series(text) == 3 + 3 * 7 + 2 + 2 + 6
    assert sum(v for _, v in samples(text, "costwatch_key_spend_usd")) == 55.0


@settings(max_examples=60, deadline=None)
@given(
    spend=st.lists(
        st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=5),
        min_size=1,
        max_size=12,
    ),
    tokens=st.booleans(),
    budget=st.booleans(),
    max_series=st.integers(min_value=24, max_value=160),
)
def test_cap_bounds_every_family_together_and_keeps_their_sums(
    spend: list[list[int]], tokens: bool, budget: bool, max_series: int
) -> None:
    extra = {"sum_prompt_tokens": 3, "sum_completion_tokens": 1} if tokens else {}
    rows = [
        row(f"k{k}", f"m{m}", cost / 4, cost + 1, **extra)
        for k, costs in enumerate(spend)
        for m, cost in enumerate(costs)
    ]
    totals = [sum(costs) / 4 for costs in spend]
    found = [
        finding("each", f"k{k}", f"name-k{k}", used=total, limit=10.0, ratio=total / 10)
        for k, total in enumerate(totals)
        if budget
    ]
    uncapped = render_snapshot(snapshot(usage_frame(rows), findings_frame(found)), 10**6)
    rendered = render_snapshot(snapshot(usage_frame(rows), findings_frame(found)), max_series)
    text, full = rendered.text.decode(), snapshot_series(uncapped.text.decode())
    assert snapshot_series(text) <= max_series
    assert (rendered.truncated == 0) == (full <= max_series)
    assert rendered.truncated <= full
    for name in ("costwatch_key_spend_usd", "costwatch_key_model_spend_usd"):
        assert sum(v for _, v in samples(text, name)) == pytest.approx(sum(totals))
    for name in ("costwatch_key_requests", "costwatch_key_model_requests"):
        assert sum(v for _, v in samples(text, name)) == sum(c + 1 for cs in spend for c in cs)
    if found:
        worst = max(v for _, v in samples(text, "costwatch_budget_used_ratio"))
        assert worst == pytest.approx(max(totals) / 10)


def test_no_truncation_below_the_cap(metrics: Metrics) -> None:
    metrics.publish(populated())
    text = metrics.exposition().decode()
    assert samples(text, "costwatch_series_truncated") == [({}, 0.0)]
    assert len(samples(text, "costwatch_key_model_spend_usd")) == 3


# --- gzip -----------------------------------------------------------------------------------


def one_gzip_stream(raw: bytes) -> bytes:
    """`raw` decoded as a single gzip member (as httpx and Go's reader both read it)."""
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
    text = stream.decompress(raw)
    assert stream.eof
    assert stream.unused_data == b""
    return text


def test_a_scraper_that_accepts_gzip_gets_the_exposition_as_one_gzip_stream(
    metrics: Metrics, served: MetricsServer
) -> None:
    metrics.publish(populated())
    with httpx.Client() as http:
        for accept in ("gzip", "deflate, gzip;q=0.5", "GZIP"):
            with http.stream(
                "GET", url(served), headers={"Accept-Encoding": accept}, timeout=30
            ) as response:
                raw = b"".join(response.iter_raw())
            assert response.headers["content-encoding"] == "gzip"
            assert response.headers["vary"] == "Accept-Encoding"
            assert int(response.headers["content-length"]) == len(raw)
            text = one_gzip_stream(raw).decode()
            snapshot_part, _ = metrics.exposition_parts()
            assert text.startswith(snapshot_part.decode())
            assert declared(text) == declared(metrics.exposition().decode())
            assert by_labels(text, "costwatch_key_spend_usd", "api_key_id") == {
                ("k1",): 14.75,
                ("k2",): 0.75,
            }


def test_identity_and_gzip_refused_with_q_0_get_plain_text(
    metrics: Metrics, served: MetricsServer
) -> None:
    metrics.publish(populated())
    with httpx.Client() as http:
        for accept in ("identity", "gzip;q=0", "br", "gzip;q=x"):
            with http.stream(
                "GET", url(served), headers={"Accept-Encoding": accept}, timeout=30
            ) as response:
                raw = b"".join(response.iter_raw())
            assert "content-encoding" not in response.headers
            assert raw.startswith(b"# HELP costwatch_key_spend_usd")


def test_the_gzip_stream_follows_each_published_snapshot(metrics: Metrics) -> None:
    metrics.publish(populated())
    first = one_gzip_stream(b"".join(metrics.exposition_gzip())).decode()
    metrics.publish(snapshot(usage_frame([row("k9", "m", 3.0)])))
    second = one_gzip_stream(b"".join(metrics.exposition_gzip())).decode()
    assert set(by_labels(first, "costwatch_key_spend_usd", "api_key_id")) == {("k1",), ("k2",)}
    assert by_labels(second, "costwatch_key_spend_usd", "api_key_id") == {("k9",): 3.0}
    for _ in range(3):  # each scrape continues a copy: the stored stream is never used up
        again = one_gzip_stream(b"".join(metrics.exposition_gzip()))
        assert again.startswith(metrics.exposition_parts()[0])


# --- the live metrics -----------------------------------------------------------------------


def test_failure_and_cycle_children_exist_at_zero_before_anything_happens(
    served: MetricsServer,
) -> None:
    text = scrape(served)
    failures = by_labels(text, "costwatch_export_failures_total", "reason")
    assert failures == {(reason,): 0.0 for reason in EXPORT_FAILURE_REASONS}
    cycles = by_labels(text, "costwatch_cycles_total", "outcome")
    assert cycles == {(outcome,): 0.0 for outcome in CYCLE_OUTCOMES}
    assert samples(text, "costwatch_snapshot_timestamp_seconds") == [({}, 0.0)]
    assert samples(text, "costwatch_export_last_success_timestamp_seconds") == [({}, 0.0)]


def test_daemon_calls_move_their_metrics(metrics: Metrics, served: MetricsServer) -> None:
    metrics.export_succeeded(NOW, 2.0)
    metrics.export_failed("timeout", 700.0)
    metrics.cycle_finished("ok", 3.0)
    metrics.alerts_sent(4)
    metrics.alerts_sent(1)
    metrics.alerts_pending(2)
    metrics.slack_error("ratelimited")
    text = scrape(served)
    assert samples(text, "costwatch_export_last_success_timestamp_seconds") == [
        ({}, NOW.timestamp())
    ]
    assert by_labels(text, "costwatch_export_failures_total", "reason")[("timeout",)] == 1.0
    assert samples(text, "costwatch_export_duration_seconds_count") == [({}, 2.0)]
    buckets = by_labels(text, "costwatch_export_duration_seconds_bucket", "le")
    assert buckets[("600.0",)] == 1.0  # the 700 s export is above the last bucket
    assert buckets[("+Inf",)] == 2.0
    assert by_labels(text, "costwatch_cycles_total", "outcome")[("ok",)] == 1.0
    assert samples(text, "costwatch_alerts_sent_total") == [({}, 5.0)]
    assert samples(text, "costwatch_alerts_pending") == [({}, 2.0)]
    slack_errors = by_labels(text, "costwatch_slack_errors_total", "error")
    assert {k: v for k, v in slack_errors.items() if v} == {("ratelimited",): 1.0}
    assert slack_errors[("invalid_auth",)] == 0.0  # known errors exist at zero up front


def test_unknown_cycle_outcome_is_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="outcome"):
        metrics.cycle_finished("fine", 1.0)


def test_free_form_error_labels_are_bounded(metrics: Metrics) -> None:
    for i in range(100):
        metrics.slack_error(f"error_{i}")
        metrics.export_failed(f"odd_{i}", 1.0)
    text = metrics.exposition().decode()
    slack_errors = by_labels(text, "costwatch_slack_errors_total", "error")
    assert len(slack_errors) == len(PERMANENT_ERRORS) + len(TRANSIENT_ERRORS) + 33
    assert slack_errors[("other",)] == 68.0
    reasons = by_labels(text, "costwatch_export_failures_total", "reason")
    assert len(reasons) == len(EXPORT_FAILURE_REASONS) + 33


def test_failed_cycle_leaves_the_last_good_snapshot_served(
    metrics: Metrics, served: MetricsServer
) -> None:
    metrics.publish(populated())
    before = scrape(served)
    metrics.export_failed("server_error", 5.0)
    metrics.cycle_finished("export_failed", 5.5)
    after = scrape(served)
    for name in ("costwatch_key_spend_usd", "costwatch_budget_used_ratio"):
        assert samples(after, name) == samples(before, name)
    assert samples(after, "costwatch_snapshot_timestamp_seconds") == [({}, NOW.timestamp())]
    assert by_labels(after, "costwatch_cycles_total", "outcome")[("export_failed",)] == 1.0


def test_a_new_snapshot_replaces_every_series_of_the_old(metrics: Metrics) -> None:
    metrics.publish(populated())
    later = NOW + timedelta(minutes=15)
    metrics.publish(snapshot(usage_frame([row("k9", "m", 1.0)]), at=later))
    text = metrics.exposition().decode()
    assert by_labels(text, "costwatch_key_spend_usd", "api_key_id") == {("k9",): 1.0}
    assert samples(text, "costwatch_budget_limit") == []
    assert samples(text, "costwatch_snapshot_timestamp_seconds") == [({}, later.timestamp())]


def test_scrapes_during_publish_always_see_one_whole_snapshot(
    metrics: Metrics, served: MetricsServer
) -> None:
    keys = 400
    versions = {
        float(n): snapshot(
            usage_frame([row(f"k{i}", "m", float(n)) for i in range(keys)]),
            at=NOW + timedelta(seconds=n),
        )
        for n in (1, 2)
    }
    metrics.publish(versions[1.0])
    stop = threading.Event()
    problems: list[str] = []

    def publisher() -> None:
        while not stop.is_set():
            for version in versions.values():
                metrics.publish(version)

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        with httpx.Client() as http:
            for _ in range(40):
                text = http.get(url(served), timeout=30).text
                values = {value for _, value in samples(text, "costwatch_key_spend_usd")}
                count = len(samples(text, "costwatch_key_model_spend_usd"))
                [(_, at)] = samples(text, "costwatch_snapshot_timestamp_seconds")
                if len(values) != 1 or count != keys:
                    problems.append(f"mixed or partial: values {values}, {count} series")
                elif at != versions[values.pop()].at.timestamp():
                    problems.append("the snapshot timestamp belongs to another snapshot")
    finally:
        stop.set()
        thread.join()
    assert problems == []


# --- probes, auth, TLS, addresses -----------------------------------------------------------


class Probe:
    """A probe whose answer the test sets."""

    def __init__(self) -> None:
        self.answer: tuple[bool, str] = (True, "ok")

    def __call__(self) -> tuple[bool, str]:
        return self.answer


def test_healthz_and_readyz_answer_200_when_ok_and_503_with_the_reason(metrics: Metrics) -> None:
    health, ready = Probe(), Probe()
    with (
        MetricsServer(
            metrics.exposition_parts, host="127.0.0.1", port=0, healthz=health, readyz=ready
        ) as server,
        httpx.Client() as http,
    ):
        assert http.get(url(server, "/healthz")).status_code == 200
        ready.answer = (True, "last export 2 minutes ago")
        response = http.get(url(server, "/readyz"))
        assert (response.status_code, response.text) == (200, "last export 2 minutes ago\n")
        ready.answer = (False, "no successful export for 47 minutes (limit 45)")
        response = http.get(url(server, "/readyz"))
        assert response.status_code == 503
        assert "47 minutes" in response.text
        health.answer = (False, "scheduler stopped")
        response = http.get(url(server, "/healthz"))
        assert (response.status_code, response.text) == (503, "scheduler stopped\n")


def test_a_probe_that_raises_answers_503(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    with (
        MetricsServer(
            metrics.exposition_parts, host="127.0.0.1", port=0, healthz=ok_probe, readyz=broken
        ) as server,
        httpx.Client() as http,
    ):
        assert http.get(url(server, "/readyz")).status_code == 503
    assert "the /readyz probe failed" in caplog.text


def test_other_paths_are_404_and_queries_are_ignored(served: MetricsServer) -> None:
    with httpx.Client() as http:
        assert http.get(url(served, "/")).status_code == 404
        assert http.get(url(served, "/metrics/extra")).status_code == 404
        assert http.get(url(served, "/metrics?name[]=x")).status_code == 200


def test_basic_auth_answers_401_without_the_right_credentials_and_200_with_them(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    password = "s3cret-Pässword"
    caplog.set_level(logging.DEBUG)
    with (
        MetricsServer(
            metrics.exposition_parts,
            host="127.0.0.1",
            port=0,
            healthz=ok_probe,
            readyz=ok_probe,
            basic_auth=("prometheus", password),
        ) as server,
        httpx.Client() as http,
    ):
        for path in ("/metrics", "/healthz", "/readyz"):
            response = http.get(url(server, path))
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Basic ")
        wrong = http.get(url(server), auth=("prometheus", "guess"))
        assert wrong.status_code == 401
        assert http.get(url(server), headers={"Authorization": "Basic !!"}).status_code == 401
        assert http.get(url(server), headers={"Authorization": "Bearer x"}).status_code == 401
        right = http.get(url(server), auth=("prometheus", password))
        assert right.status_code == 200
        assert password not in right.text
    assert password not in caplog.text


def openssl_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command is needed to make a test certificate"
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_serves_metrics_over_https_with_the_configured_certificate(
    metrics: Metrics, tmp_path: Path
) -> None:
    cert, key = openssl_certificate(tmp_path)
    metrics.publish(populated())
    with MetricsServer(
        metrics.exposition_parts,
        host="127.0.0.1",
        port=0,
        healthz=ok_probe,
        readyz=ok_probe,
        tls=(cert, key),
    ) as server:
        assert server.scheme == "https"
        text = scrape(server, verify=ssl.create_default_context(cafile=cert))
        assert by_labels(text, "costwatch_key_requests", "api_key_id")[("k2",)] == 7
        with httpx.Client() as plain, pytest.raises(httpx.HTTPError):
            plain.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert scrape(
            server, verify=ssl.create_default_context(cafile=cert)
        )  # a bad client does not break the server


def test_ipv6_listen_address_serves_metrics_or_fails_loudly(metrics: Metrics) -> None:
    if not ipv6_loopback():  # a host without IPv6: an error at start-up, never a silent server
        server = MetricsServer(
            metrics.exposition_parts, host="::", port=0, healthz=ok_probe, readyz=ok_probe
        )
        with pytest.raises(OSError, match=r"[Aa]ddress"):
            server.start()
        return
    with (
        MetricsServer(
            metrics.exposition_parts, host="::", port=0, healthz=ok_probe, readyz=ok_probe
        ) as server,
        httpx.Client() as http,
    ):
        assert http.get(url(server, host="[::1]")).status_code == 200


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_stop_releases_the_port_and_a_second_start_is_refused(metrics: Metrics) -> None:
    server = MetricsServer(
        metrics.exposition_parts, host="127.0.0.1", port=0, healthz=ok_probe, readyz=ok_probe
    )
    server.start()
    port = server.port
    assert port != 0
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    server.stop()
    server.stop()  # idempotent
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
    with pytest.raises(httpx.ConnectError), httpx.Client() as http:
        http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)


# --- promtool -------------------------------------------------------------------------------


def test_promtool_check_metrics_passes_on_a_populated_scrape(
    metrics: Metrics, served: MetricsServer
) -> None:
    rows = [
        {**row(f"id-{i}", name, 1.0 + i), "api_key_name": name} for i, name in enumerate(HOSTILE)
    ]
    usage = pl.concat([populated().usage, usage_frame(rows)])
    metrics.publish(snapshot(usage, populated().findings))
    exercise_live_metrics(metrics)
    text = scrape(served)
    done = check_metrics(text.encode())
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def exercise_live_metrics(metrics: Metrics) -> None:
    calls: list[Callable[[], None]] = [
        lambda: metrics.export_succeeded(NOW, 1.5),
        lambda: metrics.export_failed("rate_limited", 30.0),
        lambda: metrics.cycle_finished("ok", 2.0),
        lambda: metrics.alerts_sent(3),
        lambda: metrics.alerts_pending(1),
        lambda: metrics.slack_error('channel_not_found"\n'),
    ]
    for call in calls:
        call()


# --- bounds: idle, slow and half-open connections cost no thread and time out ----------------

QUICK = Limits(timeout=1.0, workers=2, max_pending=64)


def _connect(server: MetricsServer, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` within `seconds` (EOF or reset), sending nothing else."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_300_idle_connections_hold_no_thread_and_a_scrape_still_succeeds(
    metrics: Metrics,
) -> None:
    metrics.publish(populated())
    before = threading.active_count()
    with MetricsServer(
        metrics.exposition_parts, host="127.0.0.1", port=0, healthz=ok_probe, readyz=ok_probe
    ) as server:
        started = threading.active_count()
        idle = _connect(server, 300)
        try:
            text = scrape(server)
            assert by_labels(text, "costwatch_key_requests", "api_key_id")[("k2",)] == 7
            assert threading.active_count() == started  # the loop and the workers, no more
            assert started - before == 1 + WORKERS
        finally:
            for sock in idle:
                sock.close()


def test_an_idle_a_slow_and_a_half_open_tls_connection_are_closed_at_the_deadline(
    metrics: Metrics, tmp_path: Path
) -> None:
    cert, key = openssl_certificate(tmp_path)
    verify = ssl.create_default_context(cafile=cert)
    with MetricsServer(
        metrics.exposition_parts,
        host="127.0.0.1",
        port=0,
        healthz=ok_probe,
        readyz=ok_probe,
        tls=(cert, key),
        limits=QUICK,
    ) as server:
        idle, slow, half_open = _connect(server, 3)
        half_open.sendall(b"\x16\x03\x01\x00\xc8\x01")  # the start of a ClientHello, no more
        deadline = threading.Event()

        def send_slowly() -> None:  # a byte every 0.1 s: never a whole handshake, always "active"
            with contextlib.suppress(OSError):  # until the server closes the connection
                while not deadline.wait(0.1):
                    slow.send(b"\x16")

        trickle = threading.Thread(target=send_slowly)
        trickle.start()
        try:
            assert scrape(server, verify=verify)  # served while the three hang on
            for sock in (idle, half_open, slow):
                assert _closed_by_server(sock, QUICK.timeout + 5)
        finally:
            deadline.set()
            trickle.join(timeout=10)
            for sock in (idle, slow, half_open):
                sock.close()


def test_a_request_that_trickles_in_byte_by_byte_is_closed_at_the_deadline(
    metrics: Metrics,
) -> None:
    with MetricsServer(
        metrics.exposition_parts,
        host="127.0.0.1",
        port=0,
        healthz=ok_probe,
        readyz=ok_probe,
        limits=QUICK,
    ) as server:
        [sock] = _connect(server, 1)
        with sock:
            try:
                for char in b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"x" * 40:
                    sock.send(bytes([char]))
                    time.sleep(0.05)  # 3 s in all: well past the 1 s deadline for the head
            except OSError:  # the server closed it while it was still sending
                return
            assert _closed_by_server(sock, QUICK.timeout + 5)


def test_more_pending_connections_than_the_bound_close_the_oldest(metrics: Metrics) -> None:
    with MetricsServer(
        metrics.exposition_parts,
        host="127.0.0.1",
        port=0,
        healthz=ok_probe,
        readyz=ok_probe,
        limits=QUICK,
    ) as server:
        sockets = _connect(server, QUICK.max_pending + 10)
        try:
            assert _closed_by_server(sockets[0], 5)
            assert not _closed_by_server(sockets[-1], 0.2)
            with httpx.Client() as http:
                assert http.get(url(server, "/healthz"), timeout=10).status_code == 200
        finally:
            for sock in sockets:
                sock.close()


def test_a_request_head_over_16_kib_is_refused_with_431(served: MetricsServer) -> None:
    with httpx.Client() as http:
        response = http.get(url(served), headers={"X-Padding": "x" * 20_000}, timeout=10)
    assert response.status_code == 431


def test_a_hostile_request_line_is_logged_quoted_on_one_line(
    served: MetricsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="costwatch.httpserver")
    [sock] = _connect(served, 1)
    with sock:
        sock.sendall(b"GET /x\x1b[31m\rERROR forged HTTP/1.0\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.0 ")
    logged = [r.getMessage() for r in caplog.records if r.name == "costwatch.httpserver"]
    assert logged, "the request was logged"
    for message in logged:
        assert "\x1b" not in message
        assert "\r" not in message
        assert "\n" not in message
