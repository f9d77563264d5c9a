"""`costwatch check` (and `demo --once`): one whole cycle, delivery included, then exit.

Exit codes (interface): 0 all within budget, 1 some threshold crossed, 2 the configuration, the
export or its data could not be used, or no configured limit can be compared with the export
(nothing was evaluated). Slack delivery does not change them: what did not go out is listed
and stays in the outbox.

It plans into the outbox, then delivers what it planned and what was waiting (`delivery.py`,
bounded by `--delivery-timeout`), so a cron job can replace the daemon. `--queue-only` plans
into the outbox and leaves delivery to the next `run` or `check`; `--dry-run` plans and writes
and sends nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from costwatch import cycle
from costwatch.cli import output, table
from costwatch.config import Config
from costwatch.errors import CostwatchError, ExportError, StateError, StateMissing
from costwatch.state import Store, open_store

if TYPE_CHECKING:  # httpx loads only where an export is made (`check --csv` needs none)
    from costwatch.langdock import LangdockClient

EXIT_OK = 0
EXIT_CROSSED = 1
EXIT_ERROR = 2
# How long `check` waits for another process (a running `costwatch run`) to let go of the
# state file before it refuses; `check --dry-run` writes nothing and does not wait.
STATE_WAIT_SECONDS = 5.0
DELIVERY_TIMEOUT = timedelta(seconds=60)  # check's default bound on Slack delivery


def run_check(
    config: Config,
    *,
    now: datetime | None,
    csv: Path | None,
    output_format: str,
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
    delivery: output.DeliverySummary | None = None
    try:
        with state_for(config, dry_run) as state, _clients(config, csv) as clients:
            deps = cycle.Deps(config=config, clients=clients, csv=csv, state=state, dry_run=dry_run)
            outcome = cycle.run_once(deps, now)
            if state is not None and not dry_run and deliver is not None:
                delivery = _deliver(config, state, now, deliver, delivery_timeout)
            pending = [output.describe_pending(item) for item in state.pending()] if state else []
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
    per_key = outcome.usage.per_key
    # The table lists the TOP_KEYS biggest spenders: only their top models are ranked.
    listed = None if all_keys or output_format == "json" else per_key.head(output.TOP_KEYS)
    keys = None if listed is None else listed.get_column("api_key_id").to_list()
    result = output.UsageReport(
        period=outcome.period,
        now=now,
        source=outcome.source,
        per_key=per_key,
        top_models=outcome.usage.top_models(output.TOP_MODELS, keys),
        findings=outcome.findings if config.budgets else None,
        alerts=plan.alerts if plan else (),
        silenced=plan.silenced if plan else (),
        pending=pending,
        dry_run=dry_run or state_is_missing(config, dry_run),
        unevaluated=outcome.unevaluated,
        delivery=delivery,
        default_channel=config.slack.channel if config.slack else None,
        all_keys=all_keys,
        detected=outcome.detected,
    )
    text = output.render_json(result) if output_format == "json" else table.render_table(result)
    sys.stdout.write(text)
    for name, failure in outcome.failed_workspaces.items():
        print(
            f"costwatch: workspace {name}: the Langdock export failed: {failure}", file=sys.stderr
        )
    if outcome.failed_workspaces:
        print(
            "costwatch: the budgets reading those workspaces were not evaluated; they are not"
            " known to be within limits.",
            file=sys.stderr,
        )
        return EXIT_ERROR
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
) -> output.DeliverySummary:
    """Deliver the outbox after the cycle, or say why not."""
    if not deliver:
        note = "--queue-only"
    elif config.slack is None:
        note = "no slack section: alerts stay in the outbox"
    else:
        from costwatch.cli import delivery  # noqa: PLC0415 (slack_sdk loads only to deliver)

        return delivery.deliver(state, config.slack, now, timeout=timeout)
    return output.DeliverySummary(attempted=False, pending=state.pending_count(), note=note)


def state_is_missing(config: Config, dry_run: bool) -> bool:
    return dry_run and config.state.url is None and not config.state.path.exists()


@contextmanager
def state_for(config: Config, dry_run: bool) -> Iterator[Store | None]:
    """The state file; a dry run reads an existing one and never creates it (nor takes the
    writer lock: it writes nothing); otherwise this process becomes the file's one writer,
    waiting a little for another one to finish."""
    if state_is_missing(config, dry_run):
        yield None
        return
    if dry_run:
        try:
            opened = open_store(config.state, write=False)
        except StateMissing:  # an empty database: read as no state, as a missing file is
            opened = None
        if opened is None:
            yield None
            return
    else:
        opened = open_store(config.state, wait=STATE_WAIT_SECONDS, command="costwatch check")
    with opened as state:
        yield state


@contextmanager
def _clients(config: Config, csv: Path | None) -> Iterator[dict[str, LangdockClient]]:
    """An export client per workspace; none for a saved file."""
    if csv is not None:
        yield {}
        return
    from costwatch import langdock  # noqa: PLC0415 (httpx loads only to export)

    with langdock.connect_all(config) as clients:
        yield clients


def _print_failure(error: CostwatchError, delivery: output.DeliverySummary | None) -> None:
    if isinstance(error, ExportError):
        print(f"costwatch: the Langdock export failed ({error.reason}): {error}", file=sys.stderr)
    else:
        print(f"costwatch: the export's data cannot be used: {error}", file=sys.stderr)
    print(
        "costwatch: nothing was evaluated; budgets are not known to be within limits.",
        file=sys.stderr,
    )
    if delivery is not None and (delivery.sent or delivery.pending):
        print(f"costwatch: {output.delivery_line(delivery)}", file=sys.stderr)
