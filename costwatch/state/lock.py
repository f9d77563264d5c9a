"""The writer lock: one process at a time writes a state file.

- A writer takes the lock before it opens the file, and holds it for as long as it has the file
  open: an exclusive `flock` on the companion `<state>.lock` (mode 0600). The kernel releases it
  when the process ends, however it ends (SIGKILL included), so a restart right after always
  finds it free. The lock file stays; only an open that was refused (a file that is not
  costwatch's) removes the lock file it made, while still holding it. That is safe because a
  writer that gets the lock checks that the name still leads to the file it locked, and
  otherwise starts again.
- The lock belongs to the process: a second `SqliteState` of the same process on the same file
  shares it (and SQLite's transactions keep the two apart), so only another process is refused.
- The holder writes who it is (command, pid, host, since) into the lock file, so that a refused
  process can say: "<path> is in use by costwatch run (pid 1234 on host h since ...): one
  process at a time writes a state file". A waiting writer polls until its deadline.
- A separate file and `flock`, not the database: SQLite keeps POSIX byte-range locks on the
  database, and closing any descriptor of a file drops every POSIX lock the process holds on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from costwatch.errors import StateError
from costwatch.state.schema import ensure_folder

log = logging.getLogger("costwatch.state")

LOCK_SUFFIX = ".lock"
_POLL_SECONDS = 0.1  # how often a waiting writer tries the lock again
_HOLDER_BYTES = 4096


def lock_path(path: Path) -> Path:
    """The writer lock's file beside the state file at `path`."""
    return path.with_name(path.name + LOCK_SUFFIX)


@dataclass
class _Held:
    descriptor: int  # the open lock file whose open file description holds the flock
    users: int  # WriterLocks of this process on it


# Every lock file this process holds, by (device, inode): the lock belongs to the process, so
# a second State of the same process on the same file shares it instead of waiting for itself.
_HELD: dict[tuple[int, int], _Held] = {}
_HELD_GUARD = threading.Lock()


class WriterLock:
    """This process's hold on a state file's writer lock; `release()` lets go of it (the last
    holder of the process closes the lock file, which releases the `flock`)."""

    def __init__(self, key: tuple[int, int], lock_file: Path, *, created: bool = False) -> None:
        self._key: tuple[int, int] | None = key
        self._lock_file = lock_file
        self._created = created  # this hold made the lock file

    @classmethod
    def acquire(cls, path: Path, *, wait: float, command: str) -> WriterLock:
        """Become the writer of the state file at `path`, waiting up to `wait` seconds for
        another process to let go; `StateError` naming the holder if it does not. `command`
        says who this process is in the holder's record ("costwatch run")."""
        ensure_folder(path)
        deadline = time.monotonic() + wait
        announced = False
        while True:
            descriptor, created = _open_lock_file(path)
            try:
                held = _try_to_hold(path, descriptor, command, created=created)
                if held is not None:
                    return held
                holder = _holder(descriptor)
            except _Replaced:
                if time.monotonic() < deadline + 1:  # bounded: a file replaced over and over
                    continue
                holder = "another process (it keeps replacing the lock file)"
            finally:
                os.close(descriptor)  # a hold keeps a duplicate of its own
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f" (waited {wait:g} s)" if wait > 0 else ""
                raise StateError(
                    f"{path} is in use by {holder}: one process at a time writes a state"
                    f" file{waited}"
                )
            if not announced:
                log.warning("%s is in use by %s: waiting up to %g s for it", path, holder, wait)
                announced = True
            time.sleep(min(_POLL_SECONDS, left))

    def release(self, *, discard: bool = False) -> None:
        """Let go (once; later calls do nothing). `discard`: the state file was refused, so
        remove the lock file too if this hold made it and nobody else in the process holds it
        (nothing is left behind beside a file that is not costwatch's)."""
        key, self._key = self._key, None
        if key is None:
            return
        with _HELD_GUARD:
            held = _HELD[key]
            held.users -= 1
            if held.users == 0:
                del _HELD[key]
                if discard and self._created:
                    with contextlib.suppress(OSError):
                        self._lock_file.unlink()  # still locked: see the module's docstring
                os.close(held.descriptor)


class _Replaced(Exception):
    """The lock file was removed or replaced between opening and locking it: open it again."""


def _try_to_hold(path: Path, descriptor: int, command: str, *, created: bool) -> WriterLock | None:
    """The lock through `descriptor`, or through this process's hold already; None while
    another process holds it. On success the hold keeps a duplicate of `descriptor`."""
    key = _identity(descriptor)
    lock = lock_path(path)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held.users += 1
            return WriterLock(key, lock)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        except OSError as error:  # ENOLCK, EINVAL: a file system without locks
            raise StateError(
                f"{lock}: cannot lock the state file ({error.strerror}); keep the state on a"
                " file system that supports flock"
            ) from None
        if _identity_of(lock) != key:  # removed or replaced while we locked it
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            raise _Replaced
        _write_holder(descriptor, command)
        _HELD[key] = _Held(descriptor=os.dup(descriptor), users=1)
        return WriterLock(key, lock, created=created)


def _open_lock_file(path: Path) -> tuple[int, bool]:
    """The lock file, created 0600 if missing (and tightened to it if it is not); whether this
    call created it."""
    lock = lock_path(path)
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        try:
            descriptor, created = os.open(lock, flags | os.O_EXCL, 0o600), True
        except FileExistsError:
            descriptor, created = os.open(lock, flags, 0o600), False
    except OSError as error:
        raise StateError(f"{lock}: cannot open the state's lock file: {error.strerror}") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise StateError(f"{lock}: the state's lock file is not a regular file")
        if status.st_mode & 0o077:
            os.fchmod(descriptor, 0o600)
    except OSError as error:
        os.close(descriptor)
        raise StateError(f"{lock}: cannot restrict access to the owner: {error.strerror}") from None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor, created


def _identity(descriptor: int) -> tuple[int, int]:
    status = os.fstat(descriptor)
    return status.st_dev, status.st_ino


def _identity_of(file: Path) -> tuple[int, int] | None:
    try:
        status = file.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _write_holder(descriptor: int, command: str) -> None:
    """Who holds the lock, for the refusal another process prints (best effort)."""
    record = {
        "command": command,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    data = (json.dumps(record) + "\n").encode()
    with contextlib.suppress(OSError):
        os.pwrite(descriptor, data, 0)
        os.ftruncate(descriptor, len(data))


def _holder(descriptor: int) -> str:
    """The holder's record as text: "costwatch run (pid 1234 on host h since ...)"."""
    try:
        record = json.loads(os.pread(descriptor, _HOLDER_BYTES, 0))
        command, pid = _printable(record["command"]), int(record["pid"])
        host, since = _printable(record["host"]), _printable(record["since"])
    except (OSError, ValueError, TypeError, KeyError):
        return "another process (it has not said which)"
    return f"{command} (pid {pid} on host {host} since {since})"


def _printable(value: object) -> str:
    """A field of the lock file as one short line of text (the file is data, not trusted)."""
    text = str(value)[:100]
    return "".join(c if c.isprintable() else "?" for c in text)
