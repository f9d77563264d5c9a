"""One cycle of costwatch, as data flows (DESIGN.md): export the period to date, load it.

Everything that touches the outside world is handed in: the export client, the working folder,
and `now`. Later stages (budgets, alerts, state, Slack, metrics) join here as they are built.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from costwatch import usage
from costwatch.config import LangdockConfig
from costwatch.langdock import ExportResult, LangdockClient, RetryPolicy
from costwatch.periods import Period

log = logging.getLogger("costwatch.cycle")

USER_AGENT = "costwatch (+https://github.com/costwatch/costwatch)"


@dataclass(frozen=True)
class Fetched:
    """Usage for a period to date, and how it was obtained."""

    usage: usage.Usage
    export: ExportResult | None  # None when the range was empty and nothing was asked


@contextmanager
def langdock_client(config: LangdockConfig) -> Iterator[LangdockClient]:
    """An export client built from the configuration, its HTTP connections closed on exit."""
    timeout = httpx.Timeout(config.timeout_seconds, connect=min(config.timeout_seconds, 10.0))
    with httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT}) as http:
        yield LangdockClient(
            http,
            base_url=config.base_url,
            api_key=config.key().get_secret_value(),
            allow_insecure_download=config.allow_insecure_download,
            max_download_bytes=config.max_download_mb * 1024 * 1024,
            retry=RetryPolicy(
                max_attempts=config.max_attempts,
                max_elapsed_seconds=config.retry_max_elapsed_seconds,
            ),
        )


def fetch_usage(client: LangdockClient, period: Period, now: datetime) -> Fetched:
    """Export [period start, now) in the period's zone and load it (404 parts = zero usage)."""
    end = min(now, period.end).astimezone(period.zone)
    if end <= period.start:
        log.info("period %s has not started yet; nothing to export", period.key())
        return Fetched(usage=usage.load([]), export=None)
    with tempfile.TemporaryDirectory(prefix="costwatch-export-") as workdir:
        result = client.export_api_keys(period.start, end, Path(workdir))
        files = [
            usage.ExportFile(part.path, first_day=part.first_day, last_day=part.last_day)
            for part in result.parts
            if part.path is not None
        ]
        loaded = usage.load(files)
    log.info(
        "exported %s to %s: %d part(s), %d row(s), %d API call(s)",
        period.start.isoformat(),
        end.isoformat(),
        len(result.parts),
        loaded.rows_read,
        result.api_calls,
    )
    return Fetched(usage=loaded, export=result)
