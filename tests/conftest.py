"""What the whole suite shares, run on several workers (pytest-xdist: `-n` in pyproject's
addopts) or in one process (`-n 0`).

- Hypothesis has no deadline: a generated example that takes longer than 200 ms on a loaded
  machine is not a failure (no timed assertions; speed belongs in bench/).
- The files with `slow` tests are handed out first (addopts keep xdist from reordering): a long
  file picked up last would keep the run going alone after the rest has finished.
- Without pytest-xdist (a `.venv` made before it was a dev dependency, or `-p no:xdist`), `-n`,
  `--dist` and `--no-loadscope-reorder` are accepted and the suite runs in this one process, as
  the header says; `make .venv/.installed` installs it.
- `pg_url`, a fresh PostgreSQL database (`pgserver`), and `store`, which runs a test once on
  each implementation of `Store` (the SQLite file and PostgreSQL, the real ones).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pgserver
import pytest
from hypothesis import settings

from costwatch.state import PostgresState, SqliteState, Store

settings.register_profile("costwatch", deadline=None)
settings.load_profile("costwatch")


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    if pluginmanager.has_plugin("xdist"):
        return
    group = parser.getgroup("xdist", "pytest-xdist is not installed: these do nothing")
    # `_addoption`, as pytest-xdist itself does: lowercase short options are pytest's own
    group._addoption("-n", "--numprocesses", dest="numprocesses", default=None)
    group.addoption("--dist", dest="dist", default="no")
    group.addoption("--no-loadscope-reorder", dest="loadscopereorder", action="store_false")


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.pluginmanager.has_plugin("xdist"):
        return None
    return "pytest-xdist is off (-p no:xdist) or not installed (make .venv/.installed): one process"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with `slow` tests first; otherwise the collection order (a stable sort)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


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
