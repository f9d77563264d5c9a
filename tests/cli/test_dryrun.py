"""`costwatch check --dry-run` writes nothing: not the state file, its mode, nor its folder.

Each case builds a state file as an older costwatch (or an outside hand) left it, runs
`costwatch check --dry-run` as a process against the simulator, and compares every file in the
state's folder (names, bytes, modes) before and after. A normal `check` afterwards does change
the file, so each case really is one that opening it for writing would have touched.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pgserver
import psycopg
import pytest
from test_cli import NOW, SECRET, write_config

from costwatch.simulator import Simulator, Workspace
from costwatch.state.schema import MIGRATIONS

Snapshot = dict[str, tuple[bytes, int]]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=6), api_key=SECRET, clock=lambda: NOW) as server:
        yield server


def make_state(path: Path, *, version: int, journal: str, mode: int) -> None:
    """A state file with the first `version` migrations, in `journal` mode, with `mode`."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute(f"PRAGMA journal_mode = {journal}")
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for number in range(version):
            for statement in MIGRATIONS[number].split(";"):
                db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (?)", (number + 1,))
        if version:
            db.execute(
                "INSERT INTO outbox (created_at, channel, kind, payload) VALUES (?, ?, ?, ?)",
                (NOW.isoformat(), "#ops", "operational", '{"old": true}'),
            )
    path.chmod(mode)


def snapshot(folder: Path) -> Snapshot:
    return {p.name: (p.read_bytes(), p.stat().st_mode) for p in sorted(folder.iterdir())}


def check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "costwatch", "check", "--config", str(config)]
    return subprocess.run(
        [*command, "--now", NOW.isoformat(), *extra],
        env={**os.environ, "LANGDOCK_API_KEY": SECRET},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("version", "journal", "mode"),
    [
        (1, "WAL", 0o644),  # before the header claim, readable by the group and others
        (1, "DELETE", 0o644),  # ... and with a rollback journal, not yet WAL
        (len(MIGRATIONS), "DELETE", 0o640),  # current schema, never configured by costwatch
    ],
    ids=["schema-1-wal-0644", "schema-1-rollback-0644", "current-rollback-0640"],
)
def test_a_dry_run_leaves_an_older_state_file_byte_for_byte_and_makes_no_companion(
    tmp_path: Path, sim: Simulator, version: int, journal: str, mode: int
) -> None:
    state = tmp_path / "state" / "state.db"
    state.parent.mkdir()
    make_state(state, version=version, journal=journal, mode=mode)
    config = write_config(tmp_path, sim.base_url, limit=20)
    config.write_text(config.read_text().replace(str(tmp_path / "state.db"), str(state)))
    before = snapshot(state.parent)

    done = check(config, "--dry-run")

    assert done.returncode == 1, done.stderr  # alerts planned from the file it read
    assert "Alerts that would be sent (dry run):" in done.stdout
    assert snapshot(state.parent) == before
    assert check(config).returncode == 1  # a real check opens it for writing ...
    assert snapshot(state.parent)[state.name] != before[state.name]  # ... and changes it


def test_a_dry_run_reads_a_file_another_process_has_open_and_changes_nothing(
    tmp_path: Path, sim: Simulator
) -> None:
    state = tmp_path / "state" / "state.db"
    state.parent.mkdir()
    make_state(state, version=1, journal="WAL", mode=0o600)
    config = write_config(tmp_path, sim.base_url, limit=20)
    config.write_text(config.read_text().replace(str(tmp_path / "state.db"), str(state)))
    with closing(sqlite3.connect(state)) as holder:
        holder.execute("SELECT count(*) FROM outbox").fetchone()  # -wal and -shm now exist
        before = snapshot(state.parent)
        assert {f"{state.name}-wal", f"{state.name}-shm"} <= before.keys()

        done = check(config, "--dry-run")

        assert done.returncode == 1, done.stderr
        assert snapshot(state.parent)[state.name] == before[state.name]
        assert snapshot(state.parent).keys() == before.keys()


def test_a_dry_run_on_a_file_too_old_to_read_says_so_and_leaves_it(
    tmp_path: Path, sim: Simulator
) -> None:
    state = tmp_path / "state" / "state.db"
    state.parent.mkdir()
    make_state(state, version=0, journal="DELETE", mode=0o644)
    config = write_config(tmp_path, sim.base_url, limit=20)
    config.write_text(config.read_text().replace(str(tmp_path / "state.db"), str(state)))
    before = snapshot(state.parent)

    done = check(config, "--dry-run")

    assert done.returncode == 2
    assert "written by an older costwatch and missing" in done.stderr
    assert "run `costwatch check` once without --dry-run" in done.stderr
    assert snapshot(state.parent) == before


def test_a_dry_run_against_an_empty_postgresql_database_reads_no_state_and_creates_nothing(
    tmp_path: Path, sim: Simulator
) -> None:
    """The PostgreSQL counterpart of a missing state file: checked as if nothing were stored
    yet, and the database is left empty (no schema created, nothing migrated)."""
    with pgserver.database() as url:
        config = write_config(tmp_path, sim.base_url, limit=20)
        text = config.read_text().replace(f"path: {tmp_path / 'state.db'}", f"url: {url}")
        config.write_text(text)

        done = check(config, "--dry-run")

        assert done.returncode == 1, done.stderr  # over the $20 limit: the usage was checked
        with psycopg.connect(url, autocommit=True) as db:
            schemas = db.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'costwatch'"
            ).fetchone()
        assert schemas == (0,)
        assert not (tmp_path / "state.db").exists()
