"""Find `promtool`, installing Debian's `prometheus` package when it is missing.

Tests that lint an exposition call `promtool()`; it never skips: when the binary is not on
PATH it runs `apt-get update` and `apt-get install -y --no-install-recommends prometheus` (the
tests run as root in the dev container; Docker's `policy-rc.d` keeps the service from starting)
and fails loudly when that does not produce one. The answer is cached for the session.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from pathlib import Path

_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=300")
_ATTEMPTS = 3  # apt's list lock is not covered by the timeout: retry when another apt holds it


class PromtoolUnavailableError(RuntimeError):
    """promtool is not on PATH and installing the `prometheus` package did not provide it."""


@functools.cache
def promtool() -> Path:
    """The path of a working `promtool`, installed on first use when missing."""
    found = shutil.which("promtool")
    if found is None:
        _install()
        found = shutil.which("promtool")
    if found is None:
        raise PromtoolUnavailableError("apt-get installed 'prometheus' but promtool is not on PATH")
    return Path(found)


def check_metrics(exposition: bytes) -> subprocess.CompletedProcess[str]:
    """Run `promtool check metrics` with `exposition` on its stdin."""
    return subprocess.run(
        [str(promtool()), "check", "metrics"],
        input=exposition.decode("utf-8"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _install() -> None:
    if os.geteuid() != 0:
        raise PromtoolUnavailableError("promtool is missing and installing it needs root")
    _apt("update")
    _apt("install", "-y", "--no-install-recommends", "prometheus")


def _apt(*arguments: str) -> None:
    command = ["apt-get", *_LOCK_WAIT, *arguments]
    for attempt in range(1, _ATTEMPTS + 1):
        done = subprocess.run(
            command,
            env={**os.environ, **_APT_ENV},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode == 0:
            return
        if attempt < _ATTEMPTS:
            time.sleep(5 * attempt)
    tail = "\n".join(done.stderr.strip().splitlines()[-5:])
    raise PromtoolUnavailableError(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")
