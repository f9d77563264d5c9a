"""`costwatch migrate-state --from state.db --to postgresql://...`: an installation's SQLite
state moved into an empty PostgreSQL database (`state/transfer.py`), without one alert sent
again: the ledger, the outbox (delivered and waiting), export health, the usage history.

The URL's password may be in it, in `--password-file`, or in libpq's `PGPASSWORD`; messages
name the database without it. Exit 0 once everything is committed, 2 if nothing was (the
target not empty, either side unusable). Afterwards: `state.url` in the configuration instead
of `state.path`, then `costwatch run`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from costwatch.config.models import POSTGRES_SCHEMES
from costwatch.config.types import redacted_url
from costwatch.errors import StateError
from costwatch.state import PostgresState
from costwatch.state.transfer import sqlite_to_postgres

__all__ = ["run_migrate"]

EXIT_OK, EXIT_ERROR = 0, 2
_PASSWORD_MAX_BYTES = 64 * 1024


def run_migrate(source: Path, url: str, password_file: Path | None = None) -> int:
    if not url.startswith(POSTGRES_SCHEMES):
        print("costwatch migrate-state: --to must be a postgresql:// URL", file=sys.stderr)
        return EXIT_ERROR
    where = redacted_url(url)
    try:
        password = _password(password_file)
        with PostgresState.open(url, password=password, where=where) as target:
            moved = sqlite_to_postgres(source, target)
    except StateError as error:
        print(f"costwatch migrate-state: {error}; nothing was moved", file=sys.stderr)
        return EXIT_ERROR
    print(f"Moved {moved.describe()} from {source} to {where}.")
    print(
        f"Next: in the configuration, replace state.path with state.url ({where}), then start"
        f" costwatch run; {source} is left as it was."
    )
    return EXIT_OK


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        with path.open("rb") as file:
            data = file.read(_PASSWORD_MAX_BYTES + 1)
    except OSError as error:
        raise StateError(f"{path}: cannot read the password file: {error.strerror}") from None
    if len(data) > _PASSWORD_MAX_BYTES:
        raise StateError(f"{path}: larger than a password file can be")
    return data.decode("utf-8", errors="replace").strip()
