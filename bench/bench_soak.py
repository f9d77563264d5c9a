"""Soak: 2,000 cycles against the simulator; RSS, open files and state size at start and end.

    python bench/bench_soak.py [--cycles 2000] [--step 1h] [--retention 7d]

The driver is a loop in this process, not the daemon: `cycle.run_once` (a real export over
loopback HTTP from the built-in simulator, load, evaluate, plan, commit, prune) then
`slack.deliver` to a sender that only counts, with `now` advanced by `--step` each cycle. The
daemon with `every: 1s` would spend 2,000 s waiting for its schedule; this loop runs the same
per-cycle code back to back, and the simulated hour per cycle carries the state through about
three months of periods, so the ledger and delivered alerts outlive `state.retention` and must be
pruned. The simulator's own request log is cleared every cycle (it is the bench's stand-in,
not costwatch, whose growth is measured).

Samples after a warm-up (cycle `--warmup`, past the retention window), half-way and at the
end: VmRSS, entries in /proc/self/fd, the state file's size (database plus WAL) and its row
counts. Numbers only, no assertions.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from costwatch import cycle, langdock, slack
from costwatch.config import parse_config
from costwatch.config.durations import parse_duration
from costwatch.deadline import UNBOUNDED, Deadline
from costwatch.simulator import Simulator, Workspace
from costwatch.slack.render import Rendered
from costwatch.state import SqliteState

START = datetime(2026, 1, 2, tzinfo=UTC)


@dataclass(frozen=True)
class Sample:
    cycle: int
    rss: int  # bytes
    fds: int
    db_bytes: int  # database + WAL
    ledger_rows: int
    outbox_rows: int


@dataclass(frozen=True)
class Soak:
    samples: tuple[Sample, ...]  # after warm-up, half-way, at the end
    cycles: int
    seconds: float
    alerts_sent: int
    failed_cycles: int


@dataclass
class CountingSender:
    """A Slack sender that accepts and counts."""

    posts: int = 0

    def post(self, channel: str | None, message: Rendered, deadline: Deadline = UNBOUNDED) -> None:
        self.posts += 1


def config_text(sim: Simulator, state: Path, retention: str) -> str:
    return f"""\
langdock:
  base_url: {sim.base_url}
  api_key: {sim.api_key}
  allow_insecure_download: true
schedule:
  every: 1s
  timezone: Europe/Berlin
state:
  path: {state}
  retention: {retention}
slack:
  token: not-used-the-bench-counts-messages
  channel: "#ai-spend"
  min_interval_seconds: 0
defaults:
  period: day
  thresholds: [50, 80, 100]
budgets:
  - name: every-key
    keys: "*"
    limits: {{cost_usd: 5}}
  - name: workspace
    scope: shared
    keys: "*"
    period: week
    limits: {{cost_usd: 100}}
"""


def sample(n: int, state_path: Path) -> Sample:
    gc.collect()
    rss = 0
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    size = sum(
        p.stat().st_size for p in state_path.parent.iterdir() if p.name.startswith(state_path.name)
    )
    with sqlite3.connect(state_path) as db:
        (ledger,) = db.execute("SELECT count(*) FROM ledger").fetchone()
        (outbox,) = db.execute("SELECT count(*) FROM outbox").fetchone()
    return Sample(n, rss, len(os.listdir("/proc/self/fd")), size, int(ledger), int(outbox))


def measure(
    cycles: int = 2_000,
    step: timedelta = timedelta(hours=1),
    retention: str = "7d",
    warmup: int = 200,
) -> Soak:
    now = START
    with (
        tempfile.TemporaryDirectory(prefix="costwatch-soak-") as tmp,
        Simulator(Workspace(), clock=lambda: now) as sim,
    ):
        state_path = Path(tmp) / "state.db"
        config = parse_config(config_text(sim, state_path, retention))
        assert config.slack is not None
        sender = CountingSender()
        samples: list[Sample] = []
        failed = 0
        started = time.perf_counter()
        with (
            SqliteState.open(state_path) as state,
            langdock.connect(config.sole_langdock(), sleep=lambda _: None) as client,
        ):
            deps = cycle.Deps(config, client=client, state=state)
            for n in range(1, cycles + 1):
                outcome = cycle.run_once(deps, now)
                failed += not outcome.ok
                slack.deliver(state, sender, config.slack, now, sleep=lambda _: None)
                sim._requests.clear()  # the stand-in's log, not costwatch's
                if n in (warmup, (warmup + cycles) // 2, cycles):
                    samples.append(sample(n, state_path))
                now += step
        return Soak(tuple(samples), cycles, time.perf_counter() - started, sender.posts, failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=2_000)
    parser.add_argument("--step", default="1h")
    parser.add_argument("--retention", default="7d")
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)
    soak = measure(args.cycles, parse_duration(args.step), args.retention, args.warmup)
    print(
        f"{soak.cycles:,} cycles in {soak.seconds:.0f} s, {soak.alerts_sent} Slack messages, "
        f"{soak.failed_cycles} failed cycles"
    )
    print(f"{'cycle':>7}{'RSS MiB':>9}{'fds':>6}{'state KiB':>11}{'ledger':>9}{'outbox':>8}")
    for s in soak.samples:
        print(
            f"{s.cycle:>7}{s.rss / 2**20:>9.1f}{s.fds:>6}{s.db_bytes / 1024:>11.0f}"
            f"{s.ledger_rows:>9}{s.outbox_rows:>8}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
