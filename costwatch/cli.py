"""The `costwatch` command: validate, check, demo.

Exit codes of `check` (interface): 0 all within budget, 1 some threshold crossed, 2 the
configuration, the export or its data could not be used (nothing was evaluated).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from costwatch import __version__, cycle, report, usage
from costwatch.config import Config, load_config
from costwatch.configsummary import summarize
from costwatch.errors import ConfigError, CostwatchError, ExportError, StateError, UsageError
from costwatch.langdock import LangdockClient
from costwatch.state import State

EXIT_OK = 0
EXIT_CROSSED = 1
EXIT_ERROR = 2

log = logging.getLogger("costwatch")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="costwatch",
        description="Keep a Langdock workspace's API spend inside its budgets.",
    )
    parser.add_argument("--version", action="version", version=f"costwatch {__version__}")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: warning)",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

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
    demo.add_argument("--format", choices=["table", "json"], default="table")
    demo.set_defaults(run=_demo)
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request's full URL at INFO, and a signed download URL is a credential.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parse_now(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (example: 2026-11-25T10:30:00+01:00)"
        ) from None


def _load(path: Path, env: dict[str, str] | None = None) -> Config | None:
    try:
        return load_config(path, env)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return None


def _validate(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_ERROR
    known: list[tuple[str, str]] | None = None
    if args.csv is not None:
        try:
            loaded = usage.load_csv(args.csv)
        except (UsageError, OSError) as error:
            print(f"{args.csv}: {error}", file=sys.stderr)
            return EXIT_ERROR
        keys = usage.per_key(loaded).select("api_key_id", "api_key_name")
        known = [(key_id, name or "") for key_id, name in keys.iter_rows()]
    print(f"{args.config}: OK")
    print(summarize(config, known))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_ERROR
    return run_check(config, now=args.now, csv=args.csv, output=args.format, dry_run=args.dry_run)


def run_check(
    config: Config, *, now: datetime | None, csv: Path | None, output: str, dry_run: bool = False
) -> int:
    """One cycle for `check` and `demo`: export (or read `csv`), evaluate, plan, record, print."""
    zone = config.schedule.zone
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=zone)
    try:
        with _state(config, dry_run) as state, _client(config, csv) as client:
            deps = cycle.Deps(config=config, client=client, csv=csv, state=state, dry_run=dry_run)
            outcome = cycle.run_once(deps, now)
            pending = [cycle.describe_pending(item) for item in state.pending()] if state else []
    except StateError as error:
        print(f"costwatch: {error}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        print(f"costwatch: {error.filename or csv}: {error.strerror}", file=sys.stderr)
        return EXIT_ERROR
    if outcome.error is not None:
        _print_failure(outcome.error)
        return EXIT_ERROR
    assert outcome.usage is not None
    plan = outcome.plan
    result = report.UsageReport(
        period=outcome.period,
        now=now,
        source=outcome.source,
        per_key=usage.per_key(outcome.usage),
        top_models=usage.top_models(outcome.usage, report.TOP_MODELS),
        findings=outcome.findings if config.budgets else None,
        alerts=plan.alerts if plan else (),
        silenced=plan.silenced if plan else (),
        pending=pending,
        dry_run=dry_run or state_is_missing(config, dry_run),
    )
    text = report.render_json(result) if output == "json" else report.render_table(result)
    sys.stdout.write(text)
    return EXIT_CROSSED if outcome.crossed else EXIT_OK


def state_is_missing(config: Config, dry_run: bool) -> bool:
    return dry_run and not config.state.path.exists()


@contextmanager
def _state(config: Config, dry_run: bool) -> Iterator[State | None]:
    """The state file; a dry run reads an existing one and never creates it."""
    if state_is_missing(config, dry_run):
        yield None
        return
    with State.open(config.state.path) as state:
        yield state


@contextmanager
def _client(config: Config, csv: Path | None) -> Iterator[LangdockClient | None]:
    if csv is not None:
        yield None
        return
    with cycle.langdock_client(config.langdock) as client:
        yield client


def _print_failure(error: CostwatchError) -> None:
    if isinstance(error, ExportError):
        print(f"costwatch: the Langdock export failed ({error.reason}): {error}", file=sys.stderr)
    else:
        print(f"costwatch: the export's data cannot be used: {error}", file=sys.stderr)
    print(
        "costwatch: nothing was evaluated; budgets are not known to be within limits.",
        file=sys.stderr,
    )


def _demo(args: argparse.Namespace) -> int:
    # Only the demo needs the simulator; `check` and `run` never load it.
    from costwatch.simulator import Simulator, Workspace  # noqa: PLC0415

    with (
        Simulator(Workspace()) as sim,
        tempfile.TemporaryDirectory(prefix="costwatch-demo-") as tmp,
    ):
        env = {
            **os.environ,
            "COSTWATCH_DEMO_URL": sim.base_url,
            "COSTWATCH_DEMO_KEY": sim.api_key,
            "COSTWATCH_DEMO_STATE": str(Path(tmp) / "state.db"),
        }
        config = _load(demo_config_path(), env)
        if config is None:
            return EXIT_ERROR
        print(
            f"costwatch demo: a simulated Langdock workspace on {sim.base_url} "
            "(no account, no token)\n",
            file=sys.stderr,
        )
        code = run_check(config, now=None, csv=None, output=args.format)
    return EXIT_OK if code == EXIT_CROSSED else code  # crossing budgets is the demo working


def demo_config_path() -> Path:
    """The demo's configuration: beside this module in a wheel, in config/ in a checkout."""
    packaged = Path(__file__).with_name("demo.yaml")
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
