"""The `costwatch` command: parse, compose, print. `main` is the console script's entry point.

    costwatch run         the daemon (`costwatch.daemon`)
    costwatch check       one whole cycle, delivery included, then exit (`check.py`)
    costwatch backfill    the usage history's missing closed days, day by day (`backfill.py`)
    costwatch suggest     limits proposed from the usage history, as YAML (`suggest.py`)
    costwatch backtest    the budget file replayed over the history: what would have fired when
    costwatch report      a period's spend report: table, Markdown or JSON; `--send` (`report.py`)
    costwatch validate    check a configuration file and summarise it
    costwatch test-slack  one test message to every configured channel
    costwatch demo        the daemon against the built-in simulator (`costwatch.demo`)
    costwatch schema      the configuration's JSON Schema
    costwatch migrate-state  a SQLite state moved into PostgreSQL (`migrate.py`)

    check.py     `run_check`: exit codes, the state, the export client, delivery, output
    output.py    `check --format json` (an interface) and what the table and JSON share
    table.py     the table for people
    delivery.py  check's one bounded delivery round
    migrate.py   `run_migrate`: migrate-state
    backfill.py  `run_backfill`: the missing days exported, paced, resumable
    suggest.py   `costwatch suggest`: its arguments (`add_command`) and `run_suggest`
    backtest.py  `costwatch backtest`: its arguments (`add_command`), the days held in a
                 scratch store, the replay, exit codes (`run_backtest`)
    backtest_output.py  what backtest prints: table, Markdown, JSON (an interface)
    report.py    `costwatch report`: its arguments and `run_report` (reportformat.py: its text)

A command that raises unexpectedly exits 2, never 1 (which reads as "a threshold crossed").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from costwatch import __version__, budgets, usage
from costwatch.cli import arguments, backtest, report, suggest
from costwatch.cli.check import DELIVERY_TIMEOUT, EXIT_CROSSED, EXIT_ERROR, EXIT_OK, run_check
from costwatch.cli.output import TOP_KEYS
from costwatch.config import Config, load_config
from costwatch.config.schema import schema_text
from costwatch.config.summary import summarize
from costwatch.errors import ConfigError, CostwatchError, UsageError
from costwatch.keeping import MAX_BACKFILL_DAYS
from costwatch.quote import quote

TOP = TOP_KEYS

log = logging.getLogger("costwatch")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level or getattr(args, "default_level", "warning"), args.log_format)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception:  # a bug; Python's own exit code 1 would read as "a threshold crossed"
        log.exception("costwatch failed unexpectedly (a bug); nothing is known to be in budget")
        return EXIT_ERROR
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="costwatch",
        description="Keep a Langdock workspace's API spend inside its budgets.",
    )
    parser.add_argument("--version", action="version", version=f"costwatch {__version__}")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: info for run and demo, warning otherwise)",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one JSON object per line, for log pipelines",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the daemon: cycles on a schedule, Slack, /metrics")
    run.add_argument("--config", required=True, type=Path, metavar="FILE")
    run.set_defaults(run=_run, default_level="info")

    test_slack = commands.add_parser(
        "test-slack", help="send one test message to every configured Slack channel"
    )
    test_slack.add_argument("--config", required=True, type=Path, metavar="FILE")
    test_slack.set_defaults(run=_test_slack)

    validate = commands.add_parser("validate", help="check a configuration file and summarise it")
    validate.add_argument("--config", required=True, type=Path, metavar="FILE")
    validate.add_argument(
        "--csv",
        type=Path,
        metavar="EXPORT.csv",
        help="a saved export: also show how many of its keys each budget matches",
    )
    validate.set_defaults(run=_validate)

    check = commands.add_parser("check", help="run one cycle, print spend per key, exit")
    check.add_argument("--config", required=True, type=Path, metavar="FILE")
    check.add_argument(
        "--csv", type=Path, metavar="EXPORT.csv", help="evaluate a saved export, call no API"
    )
    check.add_argument(
        "--dry-run", action="store_true", help="send nothing and leave the state untouched"
    )
    check.add_argument(
        "--queue-only",
        action="store_true",
        help="plan alerts into the outbox, deliver nothing (the next run or check does)",
    )
    check.add_argument(
        "--delivery-timeout",
        type=arguments.duration,
        default=DELIVERY_TIMEOUT,
        metavar="DURATION",
        help="the most Slack delivery may take, e.g. 60s (default) or 2m; what is left waits"
        " in the outbox",
    )
    check.add_argument(
        "--all", action="store_true", help=f"list every key and alert (default: the top {TOP})"
    )
    check.add_argument("--format", choices=["table", "json"], default="table")
    check.add_argument(
        "--now",
        type=_parse_now,
        metavar="ISO",
        help="evaluate as of this instant (ISO 8601; without an offset, in schedule.timezone)",
    )
    check.set_defaults(run=_check)

    backfill = commands.add_parser(
        "backfill",
        help="export the closed days missing from the usage history, day by day",
        description="Export the closed days missing from the usage history in the last N days,"
        " one export per day, paced; a second run skips what is stored. Exit 0 when every day"
        " is stored, 2 when not (what was stored is kept).",
    )
    backfill.add_argument("--config", required=True, type=Path, metavar="FILE")
    backfill.add_argument(
        "--days",
        type=_parse_days,
        metavar="N",
        help=f"closed days back from today, at most {MAX_BACKFILL_DAYS} (the export API's 12"
        " months; default: history.backfill_days, else the longest period in use)",
    )
    backfill.add_argument(
        "--pace",
        type=arguments.pace,
        metavar="DURATION",
        help="the pause between two exports (default: history.pace; 0s: none)",
    )
    backfill.set_defaults(run=_backfill, default_level="info")

    _history_commands(commands)
    backtest.add_command(commands, load=_load)

    schema = commands.add_parser(
        "schema", help="print the configuration file's JSON Schema (for editors and CI)"
    )
    schema.set_defaults(run=_schema)

    migrate = commands.add_parser(
        "migrate-state",
        help="move a SQLite state into an empty PostgreSQL database (no alert sent again)",
    )
    migrate.add_argument("--from", dest="source", required=True, type=Path, metavar="FILE")
    migrate.add_argument("--to", dest="target", required=True, metavar="POSTGRESQL_URL")
    migrate.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="the database password, if not in the URL",
    )
    migrate.set_defaults(run=_migrate)

    demo = commands.add_parser(
        "demo", help="run against the built-in Langdock simulator: no account, no token"
    )
    demo.add_argument(
        "--once", action="store_true", help="run one cycle, print the table, exit (no daemon)"
    )
    demo.add_argument("--format", choices=["table", "json"], default="table", help="with --once")
    demo.set_defaults(run=_demo, default_level="info")
    return parser


def _history_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The commands that read the usage history and live in their own modules."""
    suggest.add_command(commands, load=_load)
    report.add_command(commands, load=_load, parse_now=_parse_now)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # httpx logs every request's full URL at INFO, and a signed download URL is a credential;
    # APScheduler logs every job run at INFO.
    for noisy in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parse_days(text: str) -> int:
    return arguments.whole(
        text,
        unit="days",
        low=1,
        high=MAX_BACKFILL_DAYS,
        why="the export API keeps 12 months of usage",
    )


# The years a period can be computed in: its end (a quarter later) must still be a datetime.
NOW_YEARS = range(1971, 9999)


def _parse_now(text: str) -> datetime:
    try:
        now = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {quote(text)} (example: 2026-11-25T10:30:00+01:00)"
        ) from None
    if now.year not in NOW_YEARS:
        raise argparse.ArgumentTypeError(
            f"{quote(text)} is outside the years {NOW_YEARS.start} to {NOW_YEARS.stop - 1}"
        )
    return now


def _load(path: Path, env: dict[str, str] | None = None) -> Config | None:
    """The configuration at `path`, or None once its problems are printed."""
    try:
        return load_config(path, env)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    """`costwatch run`: 0 after a clean shutdown, 2 when it cannot start."""
    from costwatch.daemon import Daemon  # noqa: PLC0415 (the scheduler and server load only here)

    started = logging.getLogger("costwatch.daemon")
    try:
        daemon = Daemon.from_path(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr, flush=True)
        return EXIT_ERROR
    except (OSError, CostwatchError) as error:  # the state is locked or unusable, say
        started.error("cannot start: %s", error)
        return EXIT_ERROR
    try:
        return daemon.run()
    except OSError as error:  # e.g. the metrics port is taken
        started.error("cannot serve metrics on %s: %s", daemon.listen, error.strerror or error)
        return EXIT_ERROR
    except CostwatchError as error:  # e.g. the state became unreadable during start-up
        started.error("cannot start: %s", error)
        return EXIT_ERROR


def _test_slack(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_ERROR
    if config.slack is None:
        print(f"{args.config}: there is no slack section to test", file=sys.stderr)
        return EXIT_ERROR
    from costwatch import slack  # noqa: PLC0415

    channels: list[str | None] = [config.slack.channel]
    if config.slack.mode == "token":
        channels += [b.channel for b in config.budgets if b.channel]
        channels += [o.channel for o in config.owners if o.channel]  # alerts go there too
    channels = list(dict.fromkeys(channels))
    sender = slack.sender_from_config(config.slack)
    checks = slack.test_channels(sender, [c or "" for c in channels], datetime.now(UTC))
    for check in checks:
        where = check.channel or "the webhook's channel"
        if check.ok:
            print(f"ok      {where}")
        else:
            print(f"FAILED  {where}: {check.error} - {check.remedy}")
    worked = sum(1 for c in checks if c.ok)
    print(f"{worked} of {len(checks)} channel(s) reached")
    return EXIT_OK if worked == len(checks) else EXIT_CROSSED


def _validate(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_ERROR
    now = datetime.now(UTC)
    known: list[tuple[str, str]] | None = None
    unevaluated: list[budgets.Unevaluated] = []
    if args.csv is not None:
        try:
            loaded = usage.load_csv(args.csv)
        except (UsageError, OSError) as error:
            print(f"{args.csv}: {error}", file=sys.stderr)
            return EXIT_ERROR
        keys = loaded.per_key.select("api_key_id", "api_key_name")
        known = [(key_id, name or "") for key_id, name in keys.iter_rows()]
        rules = budgets.rules(config, now)
        frames = dict.fromkeys(budgets.export_ranges(rules), loaded.frame)
        unevaluated = budgets.unevaluated(rules, frames, budgets.evaluate(rules, frames, now))
    print(f"{args.config}: OK")
    print(summarize(config, known, now=now, unevaluated=unevaluated))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_ERROR
    return run_check(
        config,
        now=args.now,
        csv=args.csv,
        output_format=args.format,
        dry_run=args.dry_run,
        deliver=not args.queue_only,
        delivery_timeout=args.delivery_timeout,
        all_keys=args.all,
    )


def _backfill(args: argparse.Namespace) -> int:
    config = _load(args.config)  # every workspace's history (`partitions.py`)
    if config is None:
        return EXIT_ERROR
    if not config.history.enabled:
        print(
            f"{args.config}: history.enabled is false: there is no history to fill", file=sys.stderr
        )
        return EXIT_ERROR
    from costwatch.cli.backfill import run_backfill  # noqa: PLC0415 (httpx loads only here)

    return run_backfill(config, days=args.days, pace=args.pace)


def _migrate(args: argparse.Namespace) -> int:
    from costwatch.cli.migrate import run_migrate  # noqa: PLC0415 (psycopg loads only here)

    return run_migrate(args.source, args.target, args.password_file)


def _schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from costwatch import demo  # noqa: PLC0415 (only the demo loads the simulator)

    if not args.once:
        return demo.run()

    def one_cycle(config: Config) -> int:
        code = run_check(config, now=None, csv=None, output_format=args.format)
        return EXIT_OK if code == EXIT_CROSSED else code  # crossing budgets is the demo working

    print("costwatch demo: one cycle against a simulated Langdock workspace\n", file=sys.stderr)
    return demo.run(once=one_cycle)
