"""The export client the configuration describes, with its HTTP connections: `connect(config)`;
`connect_all(config)`: one per workspace of a file with `workspaces:`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import httpx

from costwatch.config import Config, LangdockConfig
from costwatch.deadline import UNBOUNDED, Deadline
from costwatch.langdock.client import LangdockClient
from costwatch.langdock.retry import RetryPolicy

USER_AGENT = "costwatch (+https://github.com/costwatch/costwatch)"


@contextmanager
def connect(
    config: LangdockConfig | Config,
    *,
    deadline: Deadline = UNBOUNDED,
    sleep: Callable[[float], None] | None = None,
    workspace: str | None = None,
) -> Iterator[LangdockClient]:
    """An export client built from the configuration, its HTTP connections closed on exit.

    The daemon passes a `deadline` whose stop signal aborts requests and retry sleeps on
    shutdown; `sleep` (default: the deadline's wait) is for benchmarks that must not wait.
    A whole `Config` must have one workspace (`Config.sole_langdock`), or name the one
    (`workspace`: "default" for a file with `langdock:`).
    """
    if isinstance(config, Config) and workspace is not None:
        config = next(c.langdock for c in config.connections if c.name == workspace)
    elif isinstance(config, Config):
        config = config.sole_langdock()
    timeout = httpx.Timeout(config.timeout_seconds, connect=min(config.timeout_seconds, 10.0))
    with httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT}) as http:
        yield LangdockClient(
            http,
            base_url=config.base_url,
            api_key=config.secret_api_key(),
            allow_insecure_download=config.allow_insecure_download,
            max_download_bytes=config.max_download_mb * 1024 * 1024,
            retry=RetryPolicy(
                max_attempts=config.max_attempts,
                max_elapsed_seconds=config.retry_max_elapsed_seconds,
            ),
            request_timeout=config.timeout_seconds,
            deadline=deadline,
            sleep=sleep,
        )


@contextmanager
def connect_all(
    config: Config,
    *,
    deadline: Deadline = UNBOUNDED,
    sleep: Callable[[float], None] | None = None,
) -> Iterator[dict[str, LangdockClient]]:
    """An export client per workspace (by name), each with its own connections, all closed on
    exit."""
    with ExitStack() as stack:
        yield {
            workspace.name: stack.enter_context(
                connect(workspace.langdock, deadline=deadline, sleep=sleep)
            )
            for workspace in config.connections
        }
