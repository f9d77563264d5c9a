"""A real PostgreSQL for the tests: the one on 127.0.0.1:5432 when it answers, else our own.

- `server()` (cached for the session) is the development machine's PostgreSQL (user postgres,
  trust authentication) when it answers; otherwise a throwaway cluster started here
  (`Cluster`). Tests never skip for want of one.
- `Cluster.start()` makes a cluster of our own: `initdb` into a temporary folder (trust, user
  postgres) and `pg_ctl start` on a free loopback port, with the socket in that folder. As root
  (the dev container), PostgreSQL refuses to run, so both run as the `postgres` user (made by
  Debian's package) through `runuser`. When `initdb` is missing, Debian's `postgresql` package
  is installed with apt-get (as `promtool.py` installs prometheus). Tests that restart the
  database under the daemon use a cluster of their own, never the shared server.
- `database(server)` is a fresh database `costwatch_test_<random>` on it, dropped (FORCE)
  after the test.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from loopback import free_port

SHARED = "postgresql://postgres@127.0.0.1:5432/postgres"
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server: the URL of its `postgres` database (user postgres, trust)."""

    admin_url: str

    def url(self, database: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + f"/{database}"

    def execute(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """One statement as the superuser, in its own transaction; its rows."""
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as db:
            cursor = db.execute(sql.encode(), params)
            return cursor.fetchall() if cursor.description else []


def answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


@functools.cache
def server() -> Server:
    """The shared server when it answers, else a cluster of our own for the session."""
    if answers(SHARED):
        return Server(SHARED)
    cluster = Cluster.start()
    import atexit

    atexit.register(cluster.stop)
    return cluster.server


@contextlib.contextmanager
def database(on: Server | None = None) -> Iterator[str]:
    """A new, empty database on `on` (default: `server()`): its URL; dropped afterwards."""
    where = on or server()
    name = f"costwatch_test_{secrets.token_hex(6)}"
    where.execute(f'CREATE DATABASE "{name}"')
    try:
        yield where.url(name)
    finally:
        with contextlib.suppress(psycopg.Error):
            where.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def terminate(admin: Server, pid: int) -> None:
    """`pg_terminate_backend(pid)`, and wait (5 s at most) until that backend is gone."""
    admin.execute("SELECT pg_terminate_backend(%s)", pid)
    deadline = time.monotonic() + 5
    while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid):
        assert time.monotonic() < deadline, f"backend {pid} outlived pg_terminate_backend"
        time.sleep(0.02)


class Cluster:
    """A throwaway PostgreSQL cluster on a free port (see the module docstring)."""

    def __init__(self, folder: Path, port: int, bin_dir: Path) -> None:
        self.folder = folder
        self.port = port
        self._bin = bin_dir
        self.server = Server(f"postgresql://postgres@127.0.0.1:{port}/postgres")

    @classmethod
    def start(cls) -> Cluster:
        bin_dir = _bin_dir()
        folder = Path(tempfile.mkdtemp(prefix="costwatch-pg-"))
        cluster = cls(folder, free_port(), bin_dir)
        folder.chmod(0o700)
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        cluster._run("initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "postgres")
        cluster.up()
        return cluster

    def up(self) -> None:
        """Start the server (again) and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.folder / "data"),
            "-o",
            options,
            "-l",
            str(self.folder / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def down(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", mode, "-w", "stop")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.down("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, tool: str, *arguments: str) -> None:
        command = [str(self._bin / tool), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120, cwd=self.folder)


def _bin_dir() -> Path:
    """Where initdb and pg_ctl are, installing Debian's `postgresql` package if missing."""
    for attempt in range(2):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if found:
            return Path(found[-1]).parent
        on_path = shutil.which("initdb")
        if on_path:
            return Path(on_path).resolve().parent
        if attempt == 0:
            _install()
    raise RuntimeError("apt-get installed postgresql but no initdb was found")


def _install() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL is missing and installing it needs root")
    for arguments in (("update",), ("install", "-y", "--no-install-recommends", "postgresql")):
        subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=300", *arguments],
            env={**os.environ, **_APT_ENV},
            check=True,
            capture_output=True,
            timeout=900,
        )
