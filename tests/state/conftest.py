"""Fixtures of the state tests: a fresh PostgreSQL database (`pg_url`), and `store`, which runs a
test once on each implementation of `Store` (the SQLite file and PostgreSQL, the real ones)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pgserver
import pytest

from costwatch.state import PostgresState, SqliteState, Store


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty database on the test PostgreSQL (`pgserver`), dropped afterwards."""
    with pgserver.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store of each kind: the SQLite file, and PostgreSQL (unfenced: no elector)."""
    if request.param == "sqlite":
        with SqliteState.open(tmp_path / "state.db") as sqlite:
            yield sqlite
        return
    with pgserver.database() as url, PostgresState.open(url, where="test database") as postgres:
        yield postgres
