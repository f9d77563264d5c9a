"""Counts that cannot be added up exactly are refused; all others add up exactly, everywhere.

requests and token columns are 64-bit integers, and a 64-bit sum wraps: two rows of 2**62
requests once summed to a negative count and read as "within budget". The loader refuses an
export whose counts add up past `usage.MAX_COUNT` (2**53, where a float stops being exact), so
every sum of its counts (per key and model across parts, per key, per pool, prompt +
completion) is exact in an integer and in a float; budgets and the alert context sum in floats,
which cannot wrap even for a frame that did not come from the loader.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costwatch import budgets, cycle, usage
from costwatch.config import parse_config
from costwatch.errors import UsageError
from costwatch.usage import MAX_COUNT, SCHEMA, TOKEN_COLUMNS, ExportFile

HEADER = (
    "period_start,period_end,org_id,api_key_id,api_key_name,model,requests,total_cost_usd,"
    + ",".join(TOKEN_COLUMNS)
)
COUNTS = ("requests", *TOKEN_COLUMNS)
NOW = datetime(2026, 9, 20, tzinfo=UTC)
HUGE = st.one_of(
    st.integers(0, 2**63 - 1),
    st.sampled_from([2**62, 2**63 - 1, MAX_COUNT, MAX_COUNT // 2, MAX_COUNT // 2 + 1]),
    st.integers(0, 1000),
)
# (key, model, requests, prompt, completion, cached, creation, uncached)
Row = tuple[str, str, int, int, int, int, int, int]
ROWS = st.lists(
    st.tuples(st.sampled_from(["k1", "k2"]), st.sampled_from(["m1", "m2"]), *[HUGE] * 6),
    min_size=1,
    max_size=6,
)
settings_for_files = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def write_part(path: Path, rows: list[Row]) -> Path:
    lines = [HEADER] + [
        f"2026-09-01,2026-09-20,o,{key},name-{key},{model},{r},0.5,{p},{c},{ca},{cr},{u}"
        for key, model, r, p, c, ca, cr, u in rows
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def split(rows: list[Row], parts: int) -> list[list[Row]]:
    return [rows[i::parts] for i in range(parts) if rows[i::parts]]


def exact_totals(rows: list[Row]) -> dict[str, int]:
    counts = [row[2:] for row in rows]
    totals = {column: sum(int(c[i]) for c in counts) for i, column in enumerate(COUNTS)}
    totals["tokens"] = totals["sum_prompt_tokens"] + totals["sum_completion_tokens"]
    return totals


@settings_for_files
@given(rows=ROWS, parts=st.integers(1, 3))
def test_counts_add_up_exactly_across_parts_or_the_export_is_refused(
    tmp_path: Path, rows: list[Row], parts: int
) -> None:
    files = [
        ExportFile(write_part(tmp_path / f"p{i}.csv", chunk), date(2026, 9, 1), date(2026, 9, 20))
        for i, chunk in enumerate(split(rows, parts))
    ]
    totals = exact_totals(rows)
    if max(totals.values()) > MAX_COUNT:
        with pytest.raises(UsageError, match="adds up to"):
            usage.load(files)
        return
    loaded = usage.load(files)
    frame = loaded.frame
    for column in COUNTS:
        assert frame[column].sum() == totals[column]
    table = loaded.per_key
    for key in ("k1", "k2"):
        mine = [row for row in rows if row[0] == key]
        if not mine:
            continue
        got = table.filter(pl.col("api_key_id") == key).row(0, named=True)
        assert got["requests"] == sum(row[2] for row in mine)
        assert got["tokens"] == sum(row[3] + row[4] for row in mine)


def config(budget_lines: str) -> str:
    return "langdock: {api_key: x}\nschedule: {timezone: UTC}\nbudgets:\n" + textwrap.dedent(
        budget_lines
    )


BUDGETS = config(
    """\
    - name: per-key
      keys: "*"
      limits: {requests: 1, tokens: 1}
    - name: pool
      keys: "*"
      scope: shared
      limits: {requests: 1, tokens: 1}
    """
)


@settings(max_examples=100, deadline=None)
@given(rows=ROWS)
def test_budgets_never_see_a_sum_below_one_of_its_addends_whatever_frame_they_get(
    rows: list[Row],
) -> None:
    """A frame not from the loader (no bound): sums are floats, never wrapped, never negative."""
    frame = pl.DataFrame(
        [(k, f"name-{k}", m, r, 0.5, p, c, ca, cr, u) for k, m, r, p, c, ca, cr, u in rows],
        schema=SCHEMA,
        orient="row",
    )
    cfg = parse_config(BUDGETS)
    resolved = budgets.rules(cfg, NOW)
    frames = dict.fromkeys(budgets.export_ranges(resolved), frame)
    found = budgets.evaluate(resolved, frames, NOW).findings
    for finding in budgets.as_findings(found):
        mine = [row for row in rows if finding.api_key_id in (None, row[0])]
        addends = [row[2] for row in mine] if finding.metric == "requests" else []
        addends += [row[3] + row[4] for row in mine] if finding.metric == "tokens" else []
        assert finding.used >= 0
        assert all(finding.used >= float(addend) for addend in addends)


@settings_for_files
@given(rows=ROWS)
def test_a_cycle_on_huge_counts_alerts_with_exact_context_or_fails_typed(
    tmp_path: Path, rows: list[Row]
) -> None:
    path = write_part(tmp_path / "export.csv", rows)
    outcome = cycle.run_once(cycle.Deps(parse_config(BUDGETS), csv=path), NOW)
    totals = exact_totals(rows)
    if max(totals.values()) > MAX_COUNT:
        assert isinstance(outcome.error, UsageError)
        assert not outcome.crossed
        assert outcome.findings.height == 0
        return
    assert outcome.ok
    assert outcome.plan is not None
    assert outcome.plan.alerts if totals["requests"] else True
    for alert in outcome.plan.alerts:  # the context each alert carries
        mine = [r for r in rows if alert.api_key_id in (None, r[0])]
        assert alert.requests == float(sum(r[2] for r in mine))
    used = {
        (f.budget, f.api_key_id, f.metric): f.used
        for f in budgets.as_findings(outcome.findings)
        if f.model is None
    }
    assert used[("pool", None, "requests")] == float(totals["requests"])
    assert used[("pool", None, "tokens")] == float(totals["tokens"])


def test_costs_that_add_up_past_the_largest_float_are_refused(tmp_path: Path) -> None:
    big = "1e308"
    path = tmp_path / "export.csv"
    path.write_text(
        f"api_key_id,api_key_name,model,requests,total_cost_usd\nk1,n,m,1,{big}\nk2,n,m,1,{big}\n",
        encoding="utf-8",
    )
    with pytest.raises(UsageError, match="total_cost_usd' adds up to more than a float can hold"):
        usage.load_csv(path)
    alone = tmp_path / "one.csv"
    alone.write_text(
        f"api_key_id,api_key_name,model,requests,total_cost_usd\nk1,n,m,1,{big}\n",
        encoding="utf-8",
    )
    with pytest.raises(UsageError, match="parts together: column 'total_cost_usd'"):
        usage.load([ExportFile(alone), ExportFile(alone)])
