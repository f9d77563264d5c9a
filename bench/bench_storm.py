"""Alert storm: 5,000 threshold crossings in one cycle across 10 channels, through Slack's pacing.

    python bench/bench_storm.py [--keys 5000] [--channels 10]

One `cycle.run_once` over a saved export in which every key is over its budget's only threshold
(10 budgets, one channel each, 500 keys per budget), committed to a fresh state file; then
`slack.deliver` rounds against the Slack stand-in (`tests/slackstub.py`, real `slack_sdk` over
loopback HTTP) with Slack's pacing (`min_interval_seconds: 1` per channel, real sleeps) until
the outbox is empty. Reports how many messages Slack received, how long it took, and the outbox
rows marked sent, which must equal the crossings (none lost). Numbers only, no assertions.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from slackstub import TOKEN, SlackStub  # noqa: E402 (tests/ is put on the path just above)

from costwatch import cycle, slack  # noqa: E402
from costwatch.config import parse_config  # noqa: E402
from costwatch.state import SqliteState  # noqa: E402

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
HEADER = "period_start,period_end,api_key_id,api_key_name,model,requests,total_cost_usd\n"


@dataclass(frozen=True)
class Storm:
    crossings: int  # alerts the cycle planned
    messages: int  # chat.postMessage calls Slack accepted
    posts: int  # chat.postMessage calls made
    rounds: int  # deliver() rounds until the outbox was empty
    cycle_seconds: float
    deliver_seconds: float
    sent_rows: int  # outbox rows marked sent
    pending: int  # outbox rows left


def write_export(path: Path, keys: int, channels: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        for n in range(keys):
            team = n % channels
            out.write(f"2026-11-01,2026-11-20,id-{n},team{team}-{n},gpt-4o,10,150.0\n")


def config_text(workdir: Path, stub: SlackStub, channels: int) -> str:
    lines = [
        "langdock:",
        "  api_key: not-used-with-csv",
        "schedule:",
        "  timezone: UTC",
        "state:",
        f"  path: {workdir / 'state.db'}",
        "slack:",
        f"  token: {TOKEN}",
        '  channel: "#ai-spend"',
        f"  api_url: {stub.api_url}",
        "  min_interval_seconds: 1",
        "defaults:",
        "  thresholds: [100]",
        "  forecast: false",
        "budgets:",
    ]
    for team in range(channels):
        lines += [
            f"  - name: team{team}",
            f'    keys: "team{team}-*"',
            "    limits: {cost_usd: 100}",
            f'    channel: "#team{team}"',
        ]
    return "\n".join(lines) + "\n"


def measure(keys: int = 5_000, channels: int = 10) -> Storm:
    with tempfile.TemporaryDirectory(prefix="costwatch-storm-") as tmp, SlackStub() as stub:
        workdir = Path(tmp)
        stub.add_channel("ai-spend")
        for team in range(channels):
            stub.add_channel(f"team{team}")
        export = workdir / "export.csv"
        write_export(export, keys, channels)
        config = parse_config(config_text(workdir, stub, channels))
        assert config.slack is not None
        sender = slack.sender_from_config(config.slack)
        with SqliteState.open(config.state.path) as state:
            started = time.perf_counter()
            outcome = cycle.run_once(cycle.Deps(config, csv=export, state=state), NOW)
            cycle_seconds = time.perf_counter() - started
            crossings = len(outcome.plan.alerts) if outcome.plan else 0
            started = time.perf_counter()
            rounds = 0
            while state.pending_count() and rounds < 100:
                slack.deliver(state, sender, config.slack, NOW)
                rounds += 1
            deliver_seconds = time.perf_counter() - started
            pending = state.pending_count()
        with sqlite3.connect(config.state.path) as db:
            (sent_rows,) = db.execute(
                "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"
            ).fetchone()
        posts = stub.posts()
        return Storm(
            crossings=crossings,
            messages=sum(1 for post in posts if post.accepted),
            posts=len(posts),
            rounds=rounds,
            cycle_seconds=cycle_seconds,
            deliver_seconds=deliver_seconds,
            sent_rows=int(sent_rows),
            pending=pending,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=5_000)
    parser.add_argument("--channels", type=int, default=10)
    args = parser.parse_args(argv)
    storm = measure(args.keys, args.channels)
    print(f"crossings planned in one cycle: {storm.crossings:,} ({storm.cycle_seconds:.2f} s)")
    print(
        f"Slack messages: {storm.messages} accepted of {storm.posts} posts, "
        f"{storm.rounds} deliver rounds, {storm.deliver_seconds:.1f} s"
    )
    print(f"outbox rows sent: {storm.sent_rows:,}, still pending: {storm.pending}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
