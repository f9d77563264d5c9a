"""Opening the state file: create it, recognise it, configure it, migrate it.

- A new file is built under a temporary name (mode 0600, as SQLite then makes its `-wal` and
  `-shm`) and moved into place once migrated, so costwatch never leaves an empty or half-made
  state file behind; an existing file and its companions are tightened to 0600.
- Before SQLite writes anything, the file is checked: empty, not SQLite, damaged (`quick_check`),
  another application's database (the header's `application_id`, or for files from before it,
  the tables), or written by a newer costwatch: each is a `StateError` saying what to do, and the
  file is left as it was. Never a silent fresh start: that would re-send the period's alerts.
- Then WAL and `synchronous=FULL`, and the missing migrations in one transaction.
- `connect_read_only` is for dry runs: the same checks, then nothing else. SQLite opens the
  file `mode=ro` (and `immutable=1` when no `-wal`/`-shm` is beside it, so that none is made):
  no WAL switch, no chmod, no migration, so an older costwatch can still use the file. An
  older schema is read as it is, when it has every table this costwatch reads.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import tempfile
from pathlib import Path

from costwatch.errors import StateError

APPLICATION_ID = 0x63777374  # "cwst" in the SQLite header: this file is costwatch's state

# The daily usage history (migration 3, `daily.py`). Keys, models, key names and zones are
# interned as small integers (id 0 stands for an empty cell and has no row); a day is its
# number of days since 1970-01-01. `usage_day` says which days of a zone are stored;
# `usage_daily` holds their rows, keyed so that a range of days of a zone is one range scan.
# This is migration 3's text: never edit it; a change to these tables is a new migration.
HISTORY_TABLES_SQL = """
    CREATE TABLE usage_zone (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE usage_key (id INTEGER PRIMARY KEY, api_key_id TEXT NOT NULL UNIQUE);
    CREATE TABLE usage_model (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE usage_name (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE usage_day (
        zone INTEGER NOT NULL, day INTEGER NOT NULL,
        exported_at TEXT NOT NULL, settled INTEGER NOT NULL, rows INTEGER NOT NULL,
        has_tokens INTEGER NOT NULL,
        PRIMARY KEY (zone, day)
    ) WITHOUT ROWID;
    CREATE TABLE usage_daily (
        zone INTEGER NOT NULL, day INTEGER NOT NULL, key INTEGER NOT NULL, model INTEGER NOT NULL,
        name INTEGER NOT NULL, requests INTEGER NOT NULL, cost REAL NOT NULL,
        prompt INTEGER, completion INTEGER, cached INTEGER, creation INTEGER, no_cache INTEGER,
        PRIMARY KEY (zone, day, key, model)
    ) WITHOUT ROWID;
    CREATE TABLE marks (name TEXT PRIMARY KEY, at TEXT NOT NULL) WITHOUT ROWID;
"""

# Migration 4's text (never edit it). A mark whose name is not a finding's identity stays a mark.
FINDING_MARKS_TO_LEDGER = """
    INSERT OR IGNORE INTO ledger (budget, subject, model, metric, kind, period, level,
        limit_value, used, sent_at)
    SELECT '', json_extract(identity, '$[1]'), json_extract(identity, '$[2]'),
        json_extract(identity, '$[3]'), json_extract(identity, '$[4]'),
        json_extract(identity, '$[5]'), 0, 0, 0, at
    FROM (SELECT substr(name, 9) AS identity, at FROM marks WHERE name LIKE 'finding:%')
    WHERE CASE WHEN json_valid(identity) THEN json_array_length(identity) = 6
        AND json_type(identity, '$[1]') = 'text' AND json_type(identity, '$[2]') = 'text'
        AND json_type(identity, '$[3]') = 'text' AND json_type(identity, '$[4]') = 'text'
        AND json_type(identity, '$[5]') = 'text' ELSE 0 END;
    DELETE FROM marks WHERE name LIKE 'finding:%'
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE ledger (
        budget TEXT NOT NULL, subject TEXT NOT NULL, model TEXT NOT NULL, metric TEXT NOT NULL,
        kind TEXT NOT NULL, period TEXT NOT NULL,
        level REAL NOT NULL, limit_value REAL NOT NULL, used REAL NOT NULL, sent_at TEXT,
        PRIMARY KEY (budget, subject, model, metric, kind, period)
    ) WITHOUT ROWID;
    CREATE INDEX ledger_period ON ledger (period);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        channel TEXT,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_attempt_at TEXT,
        sent_at TEXT
    );
    CREATE INDEX outbox_pending ON outbox (sent_at, id);
    CREATE TABLE history (
        at TEXT NOT NULL, budget TEXT NOT NULL, subject TEXT NOT NULL, metric TEXT NOT NULL,
        used REAL NOT NULL, limit_value REAL NOT NULL
    );
    CREATE INDEX history_at ON history (at);
    CREATE INDEX history_subject ON history (budget, subject, metric, at);
    CREATE TABLE export_health (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        consecutive_failures INTEGER NOT NULL, failing_since TEXT, last_success TEXT,
        last_reason TEXT, alerted INTEGER NOT NULL
    );
    """,
    # 2: claim the file in its header, so that no other application's database is taken for it
    f"PRAGMA application_id = {APPLICATION_ID}",
    # 3: the daily usage history (issue 13). The budget history (one row per budget subject
    # per cycle, read by nothing) is dropped: it grew with every cycle; the daily history
    # replaces it.
    "DROP TABLE history;" + HISTORY_TABLES_SQL,
    # 4: the detectors' findings are notices in the ledger (`notices.py`): each finding's mark
    # (`finding:` and its identity as JSON: budget, subject, model, metric, kind, day) becomes
    # the ledger row of its notice, so an upgrade sends none of today's findings again
    FINDING_MARKS_TO_LEDGER,
    # 5: the hourly snapshots of today so far, for the spend rate now (`hourly.py`)
    """
    CREATE TABLE usage_hour (
        zone INTEGER NOT NULL, day INTEGER NOT NULL, hour INTEGER NOT NULL,
        taken_at TEXT NOT NULL, rows INTEGER NOT NULL,
        PRIMARY KEY (zone, day, hour)
    ) WITHOUT ROWID;
    CREATE TABLE usage_hourly (
        zone INTEGER NOT NULL, day INTEGER NOT NULL, hour INTEGER NOT NULL, key INTEGER NOT NULL,
        name INTEGER NOT NULL, requests INTEGER NOT NULL, cost REAL NOT NULL,
        PRIMARY KEY (zone, day, hour, key)
    ) WITHOUT ROWID
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
# A file from before migration 2 has no application_id: it is ours if it holds only these tables.
_UNCLAIMED_TABLES = frozenset(
    {"schema_version", "ledger", "outbox", "history", "export_health", "sqlite_sequence"}
)
_READ_TABLES = frozenset({"ledger", "outbox", "export_health"})  # what State must read
# The daily usage history's tables: a dry run on an older file reads it as empty.
HISTORY_TABLES = frozenset(
    {"usage_zone", "usage_key", "usage_model", "usage_name", "usage_day", "usage_daily", "marks"}
)


def has_history(connection: sqlite3.Connection) -> bool:
    """The file has the daily usage history's tables (migration 3 or later)."""
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    return tables >= HISTORY_TABLES


def empty_history() -> sqlite3.Connection:
    """An in-memory database with the history's tables and nothing in them: an older file's
    history, read by the same SQL."""
    connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    connection.executescript(HISTORY_TABLES_SQL)
    return connection


_SQLITE_MAGIC = b"SQLite format 3\x00"
_FRESH_START = "move it away to start afresh, knowing that this period's alerts will be sent again"


def connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection to the state file at `path`, created or migrated to the current schema."""
    if not os.path.lexists(path):
        _create(path, busy_timeout)
    _check_header(path)
    connection = _connect(path, path, busy_timeout)
    try:
        version = _inspect(connection, path)
        _tighten(path)
        _configure(connection, path)
        if version < SCHEMA_VERSION:
            _migrate(connection, path)
    except BaseException:
        connection.close()
        raise
    return connection


def connect_read_only(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection that cannot write to the state file at `path`, which must exist.

    The file's bytes, mode and folder stay exactly as they are; any write on the connection
    fails (SQLite refuses it), so a dry run writes nothing by construction.
    """
    _check_header(path)
    live = any(companion.exists() for companion in _companions(path))
    uri = path.absolute().as_uri() + ("?mode=ro" if live else "?mode=ro&immutable=1")
    try:
        connection = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
    except sqlite3.Error as error:
        raise StateError(f"{path}: cannot open the state file: {error}") from None
    try:
        version = _inspect(connection, path)
        if version < SCHEMA_VERSION:
            _check_readable(connection, path)
    except BaseException:
        connection.close()
        raise
    return connection


def _check_readable(connection: sqlite3.Connection, path: Path) -> None:
    """An older schema: readable as it is only if it has every table this costwatch reads."""
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    missing = sorted(_READ_TABLES - tables)
    if missing:
        raise StateError(
            f"{path}: written by an older costwatch and missing {', '.join(missing)}; a dry run"
            " does not migrate it: run `costwatch check` once without --dry-run (it migrates"
            " the file, after which an older costwatch cannot use it)"
        )


def rollback(db: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not already; never mask the error at hand."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _create(path: Path, busy_timeout: float) -> None:
    """Build a new, migrated state file under a temporary name, then move it to `path`."""
    folder = path.parent
    ensure_folder(path)
    try:
        descriptor, name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".new")
    except OSError as error:
        raise StateError(f"{path}: cannot create the state file: {error.strerror}") from None
    os.close(descriptor)  # mkstemp made it 0600, and SQLite gives -wal and -shm the same mode
    temporary = Path(name)
    try:
        connection = _connect(temporary, path, busy_timeout)
        try:
            _configure(connection, path)
            _migrate(connection, path)
        finally:
            connection.close()  # checkpoints the WAL into the file and removes it
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(temporary, path)
        _sync_folder(folder)
    except OSError as error:
        raise StateError(f"{path}: cannot create the state file: {error.strerror}") from None
    finally:
        for leftover in (temporary, *_companions(temporary)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def ensure_folder(path: Path) -> None:
    """The state file's folder, made 0700 if missing."""
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise StateError(f"{path}: cannot create the state file: {folder} is not a folder")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise StateError(f"{path}: cannot create the state file: {error.strerror}") from None


def _check_header(path: Path) -> None:
    """Refuse, before SQLite touches it, what cannot be a costwatch state file."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise StateError(f"{path}: the state file is not a regular file")
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_MAGIC))
    except OSError as error:
        raise StateError(f"{path}: cannot read the state file: {error.strerror}") from None
    if not header:
        raise StateError(
            f"{path}: the state file is empty (costwatch never leaves it so: was it truncated?);"
            f" {_FRESH_START}"
        )
    if header != _SQLITE_MAGIC:
        raise StateError(f"{path}: not a SQLite database, so not a costwatch state file")


def _connect(file: Path, path: Path, busy_timeout: float) -> sqlite3.Connection:
    try:
        return sqlite3.connect(
            file, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
    except sqlite3.Error as error:
        raise StateError(f"{path}: cannot open the state file: {error}") from None


def _inspect(connection: sqlite3.Connection, path: Path) -> int:
    """The file's schema version, read without writing; refuses damaged and foreign files."""
    try:
        problems = [row[0] for row in connection.execute("PRAGMA quick_check(5)")]
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        version = 0
        if "schema_version" in tables:
            version = connection.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    except sqlite3.Error as error:
        if _environmental(error):
            raise StateError(
                f"{path}: cannot read the state file ({error}); the file itself may be sound:"
                " check the disk (free space, quotas, permissions) and start again"
            ) from None
        raise StateError(
            f"{path}: not a usable costwatch state file ({error}); {_FRESH_START}"
        ) from None
    if problems != ["ok"]:
        raise StateError(
            f"{path}: the state file is damaged ({'; '.join(problems)}); restore it from a"
            f" backup or {_FRESH_START}"
        )
    unclaimed = application_id == 0 and "schema_version" in tables and tables <= _UNCLAIMED_TABLES
    if application_id != APPLICATION_ID and not unclaimed:
        raise StateError(
            f"{path}: a SQLite database of another application (application_id"
            f" {application_id:#x}, tables {', '.join(sorted(tables)) or 'none'}), not a"
            " costwatch state file; point state.path elsewhere"
        )
    return _known_version(version or 0, path)


# SQLite's primary result codes that say the file's surroundings failed, not its content:
# IOERR, FULL, CANTOPEN, BUSY, LOCKED, READONLY, PERM, NOMEM. Advising a fresh start for these
# would have an operator re-send the period's alerts because a disk was full.
_ENVIRONMENTAL_CODES = frozenset({10, 13, 14, 5, 6, 8, 3, 7})


def _environmental(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _ENVIRONMENTAL_CODES


def _known_version(version: int, path: Path) -> int:
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{path}: written by a newer costwatch (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); upgrade costwatch"
        )
    return version


def _companions(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _tighten(path: Path) -> None:
    """Mode 0600 for the file and its -wal and -shm, whoever created them."""
    for file in (path, *_companions(path)):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise StateError(
                f"{file}: cannot restrict access to the owner: {error.strerror}"
            ) from None


def _sync_folder(folder: Path) -> None:
    """Make a new name in `folder` durable (where the platform allows opening a folder)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _configure(connection: sqlite3.Connection, path: Path) -> None:
    try:
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        connection.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as error:
        raise StateError(f"{path}: cannot configure the state file: {error}") from None
    if str(mode).lower() != "wal":
        raise StateError(f"{path}: cannot use write-ahead logging (journal mode {mode})")


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Run the migrations the file lacks, all in one transaction."""
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
        version = _known_version(row[0] or 0, path)  # another process may have migrated it
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute("INSERT INTO schema_version VALUES (?)", (number + 1,))
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        rollback(connection)
        raise StateError(f"{path}: cannot prepare the state file: {error}") from None
    except BaseException:
        rollback(connection)
        raise
