"""The `costwatch` command: validate, check, demo.

Exit codes of `check` (interface): 0 all within budget, 1 some threshold crossed, 2 the
configuration, the export or its data could not be used, or no configured limit can be compared
with the export (nothing was evaluated). Slack delivery does not change them: what did not go
out is listed and stays in the outbox.

`check` is one whole cycle, delivery included, so a cron job can replace the daemon: it plans
into the outbox, then delivers what it planned and what was waiting (`checkdelivery`, bounded
by `--delivery-timeout`). `--queue-only` plans into the outbox and leaves delivery to the next
`run` or `check`; `--dry-run` plans and writes and sends nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from costwatch import __version__, budgets, cycle, langdock, report, usage
from costwatch.config import Config, load_config
from costwatch.config.durations import parse_duration
from costwatch.config.summary import summarize
from costwatch.errors import ConfigError, CostwatchError, ExportError, StateError, UsageError
from costwatch.langdock import LangdockClient
from costwatch.quote import quote
from costwatch.state import Store, open_store

EXIT_OK = 0
EXIT_CROSSED = 1
EXIT_ERROR = 2
# How long `check` waits for another process (a running `costwatch run`) to let go of the
# state file before it refuses; `check --dry-run` writes nothing and does not wait.
STATE_WAIT_SECONDS = 5.0
TOP = report.TOP_KEYS
DELIVERY_TIMEOUT = timedelta(seconds=60)  # check's default bound on Slack delivery

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
        type=_parse_timeout,
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

    demo = commands.add_parser(
        "demo", help="run against the built-in Langdock simulator: no account, no token"
    )
    demo.add_argument(
        "--once", action="store_true", help="run one cycle, print the table, exit (no daemon)"
    )
    demo.add_argument("--format", choices=["table", "json"], default="table", help="with --once")
    demo.set_defaults(run=_demo, default_level="info")
    return parser


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


def _parse_timeout(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


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
    try:
        return load_config(path, env)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from costwatch import daemon  # noqa: PLC0415 (the scheduler and server load only for run)

    return daemon.run(args.config)


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
        findings, selected = budgets.evaluate_with_selections(rules, frames, now)
        unevaluated = budgets.unevaluated(rules, frames, findings, selected)
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
        output=args.format,
        dry_run=args.dry_run,
        deliver=not args.queue_only,
        delivery_timeout=args.delivery_timeout,
        all_keys=args.all,
    )


def run_check(
    config: Config,
    *,
    now: datetime | None,
    csv: Path | None,
    output: str,
    dry_run: bool = False,
    deliver: bool | None = None,
    delivery_timeout: timedelta = DELIVERY_TIMEOUT,
    all_keys: bool = False,
) -> int:
    """One cycle for `check` and `demo`: export (or read `csv`), evaluate, plan, record,
    deliver (`deliver` True; False: queue only, and say so; None, `demo --once`: neither),
    print."""
    zone = config.schedule.zone
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=zone)
    delivery: report.DeliverySummary | None = None
    try:
        with _state(config, dry_run) as state, _client(config, csv) as client:
            deps = cycle.Deps(config=config, client=client, csv=csv, state=state, dry_run=dry_run)
            outcome = cycle.run_once(deps, now)
            if state is not None and not dry_run and deliver is not None:
                delivery = _deliver(config, state, now, deliver, delivery_timeout)
            pending = [cycle.describe_pending(item) for item in state.pending()] if state else []
    except StateError as error:
        print(f"costwatch: {error}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        print(f"costwatch: {error.filename or csv}: {error.strerror}", file=sys.stderr)
        return EXIT_ERROR
    if outcome.error is not None:
        _print_failure(outcome.error, delivery)
        return EXIT_ERROR
    assert outcome.usage is not None
    plan = outcome.plan
    result = report.UsageReport(
        period=outcome.period,
        now=now,
        source=outcome.source,
        per_key=outcome.usage.per_key,
        top_models=outcome.usage.top_models(report.TOP_MODELS),
        findings=outcome.findings if config.budgets else None,
        alerts=plan.alerts if plan else (),
        silenced=plan.silenced if plan else (),
        pending=pending,
        dry_run=dry_run or state_is_missing(config, dry_run),
        unevaluated=outcome.unevaluated,
        delivery=delivery,
        default_channel=config.slack.channel if config.slack else None,
        all_keys=all_keys,
    )
    text = report.render_json(result) if output == "json" else report.render_table(result)
    sys.stdout.write(text)
    if outcome.unevaluated and not outcome.findings.height:
        print(
            "costwatch: nothing was evaluated: no configured limit can be compared with this"
            " export; budgets are not known to be within limits.",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_CROSSED if outcome.crossed else EXIT_OK


def _deliver(
    config: Config, state: Store, now: datetime, deliver: bool, timeout: timedelta
) -> report.DeliverySummary:
    """Deliver the outbox after the cycle, or say why not."""
    if not deliver:
        note = "--queue-only"
    elif config.slack is None:
        note = "no slack section: alerts stay in the outbox"
    else:
        from costwatch import checkdelivery  # noqa: PLC0415 (slack_sdk loads only to deliver)

        return checkdelivery.deliver(state, config.slack, now, timeout=timeout)
    return report.DeliverySummary(attempted=False, pending=state.pending_count(), note=note)


def state_is_missing(config: Config, dry_run: bool) -> bool:
    return dry_run and not config.state.path.exists()


@contextmanager
def _state(config: Config, dry_run: bool) -> Iterator[Store | None]:
    """The state file; a dry run reads an existing one and never creates it (nor takes the
    writer lock: it writes nothing); otherwise this process becomes the file's one writer,
    waiting a little for another one to finish."""
    if state_is_missing(config, dry_run):
        yield None
        return
    if dry_run:
        opened = open_store(config.state, write=False)
    else:
        opened = open_store(config.state, wait=STATE_WAIT_SECONDS, command="costwatch check")
    with opened as state:
        yield state


@contextmanager
def _client(config: Config, csv: Path | None) -> Iterator[LangdockClient | None]:
    if csv is not None:
        yield None
        return
    with langdock.connect(config.langdock) as client:
        yield client


def _print_failure(error: CostwatchError, delivery: report.DeliverySummary | None) -> None:
    if isinstance(error, ExportError):
        print(f"costwatch: the Langdock export failed ({error.reason}): {error}", file=sys.stderr)
    else:
        print(f"costwatch: the export's data cannot be used: {error}", file=sys.stderr)
    print(
        "costwatch: nothing was evaluated; budgets are not known to be within limits.",
        file=sys.stderr,
    )
    if delivery is not None and (delivery.sent or delivery.pending):
        print(f"costwatch: {report.delivery_line(delivery)}", file=sys.stderr)


def _demo(args: argparse.Namespace) -> int:
    from costwatch import demo  # noqa: PLC0415 (only the demo loads the simulator)

    if not args.once:
        return demo.run()

    def one_cycle(env: dict[str, str]) -> int:
        config = _load(demo.config_path(), env)
        if config is None:
            return EXIT_ERROR
        code = run_check(config, now=None, csv=None, output=args.format)
        return EXIT_OK if code == EXIT_CROSSED else code  # crossing budgets is the demo working

    print("costwatch demo: one cycle against a simulated Langdock workspace\n", file=sys.stderr)
    return demo.run(once=one_cycle)
