"""Build and run the Dockerfile without a Docker engine: Debian's buildah and podman, as root.

`ensure_tools()` installs `buildah`, `podman`, `runc` and `debootstrap` with apt-get when one is
missing (the tests run as root here and in CI) and fails loudly when that does not work; it
never skips. No container registry is reachable, so `base_image()` makes the Python base the
Dockerfile's PYTHON_IMAGE argument names: `debootstrap` of this machine's Debian release (the
mirror taken from its apt sources) with python3, venv and pip, and this machine's CA bundle
copied in so pip reaches PyPI from inside the build as it does from the host. The base is
cached outside the repository, in CACHE (a tarball) and in podman's storage (the image),
keyed by the release, the package list and the CA bundle: the first run makes it (a minute or
two), later runs reuse it. A file lock keeps two test runs on one machine from making it twice.

`run_flags()` are what podman needs on this machine: runc (crun refuses its cgroup setup),
the host network (the tests' servers are on loopback), and ulimits within the machine's hard
limits (podman's defaults exceed them).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

CACHE = Path("/var/cache/costwatch-test")
BASE_REPOSITORY = "localhost/costwatch-test-base"
# What the Dockerfile needs of its base: `python` on PATH with venv and pip (as the official
# python images have), groupadd/useradd (in every Debian base) and CA certificates.
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TOOLS = {"buildah": "buildah", "podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))

_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
_APT_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=300")
_ATTEMPTS = 3  # apt's list lock is not covered by the timeout: retry when another apt holds it
_LOCK_SECONDS = 1200  # another run making the base image holds the lock this long at most


class ContainerToolsError(RuntimeError):
    """A tool is missing and could not be installed, or a step of making the base failed."""


def run(
    argv: Sequence[str], *, timeout: float, **options: object
) -> subprocess.CompletedProcess[str]:
    """`argv` with its output captured as text; never raises on a non-zero exit."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, **options
    )


def checked(argv: Sequence[str], *, timeout: float, **options: object) -> str:
    """`argv`'s stdout; ContainerToolsError with the tail of stderr when it fails."""
    done = run(argv, timeout=timeout, **options)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ContainerToolsError(f"{' '.join(argv)} failed ({done.returncode}):\n{tail}")
    return done.stdout


# --- the tools -------------------------------------------------------------------------------


def ensure_tools() -> None:
    """Install the Debian packages of whichever of buildah, podman, runc, debootstrap is missing."""
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ContainerToolsError(f"{', '.join(missing)} missing, and installing needs root")
    _apt("update")
    _apt("install", "-y", "--no-install-recommends", *missing)
    still = [tool for tool in TOOLS if shutil.which(tool) is None]
    if still:
        raise ContainerToolsError(f"apt-get installed {missing} but {still} is not on PATH")


def _apt(*arguments: str) -> None:
    command = ["apt-get", *_APT_LOCK_WAIT, *arguments]
    for attempt in range(1, _ATTEMPTS + 1):
        done = run(command, timeout=900, env={**os.environ, **_APT_ENV})
        if done.returncode == 0:
            return
        if attempt < _ATTEMPTS:
            time.sleep(5 * attempt)
    tail = "\n".join(done.stderr.strip().splitlines()[-5:])
    raise ContainerToolsError(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")


def run_flags() -> list[str]:
    """podman flags for every container here (before the image name)."""
    _, files = resource.getrlimit(resource.RLIMIT_NOFILE)
    _, processes = resource.getrlimit(resource.RLIMIT_NPROC)
    files = 20000 if files == resource.RLIM_INFINITY else min(files, 20000)
    processes = 4096 if processes == resource.RLIM_INFINITY else min(processes, 4096)
    return [
        *("--runtime", "runc", "--network", "host"),
        *("--ulimit", f"nofile={files}:{files}", "--ulimit", f"nproc={processes}:{processes}"),
    ]


def podman(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run(["podman", *arguments], timeout=timeout)


# --- the base image --------------------------------------------------------------------------


def os_release() -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            fields[name] = value.strip().strip('"')
    return fields


def debian_mirror(codename: str) -> tuple[str, Path | None]:
    """(URI, keyring or None) of the first apt source that serves `codename` main over HTTP."""
    for source in _apt_sources():
        uri, suites, components, keyring = source
        if codename in suites and "main" in components and uri.startswith(("http:", "https:")):
            return uri, keyring
    raise ContainerToolsError(f"no apt source serves {codename} main over http(s)")


def _apt_sources() -> Iterator[tuple[str, list[str], list[str], Path | None]]:
    files: list[Path] = []
    for place in APT_SOURCES:
        if place.is_dir():
            files += sorted(place.glob("*.sources")) + sorted(place.glob("*.list"))
        elif place.is_file():
            files.append(place)
    for path in files:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".sources":
            yield from _deb822(text)
        else:
            yield from _one_line(text)


def _deb822(text: str) -> Iterator[tuple[str, list[str], list[str], Path | None]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        keyring = Path(fields["signed-by"]) if fields.get("signed-by", "").startswith("/") else None
        for uri in fields.get("uris", "").split():
            yield (
                uri,
                fields.get("suites", "").split(),
                fields.get("components", "").split(),
                keyring,
            )


def _one_line(text: str) -> Iterator[tuple[str, list[str], list[str], Path | None]]:
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line).split()
        if len(words) >= 3 and words[0] == "deb":
            signed = re.search(r"signed-by=(\S+?)[\s\]]", line)
            yield words[1], [words[2]], words[3:], Path(signed[1]) if signed else None


@contextlib.contextmanager
def _locked(path: Path, seconds: float) -> Iterator[None]:
    """An exclusive flock on `path`, waited for at most `seconds`."""
    with path.open("a") as handle:
        deadline = time.monotonic() + seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ContainerToolsError(f"{path} stayed locked for {seconds}s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def base_image() -> str:
    """The name of a local Python base image of this machine's Debian release; made if missing."""
    codename = os_release().get("VERSION_CODENAME", "")
    if not codename:
        raise ContainerToolsError("/etc/os-release names no VERSION_CODENAME (not Debian?)")
    key = hashlib.sha256(
        repr((codename, BASE_PACKAGES, BASE_ENV)).encode() + CA_BUNDLE.read_bytes()
    ).hexdigest()[:12]
    name = f"{BASE_REPOSITORY}:{codename}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / "base.lock", _LOCK_SECONDS):
        if podman("image", "exists", name).returncode == 0:
            return name
        tarball = CACHE / f"base-{codename}-{key}.tar"
        if not tarball.is_file():
            _debootstrap(codename, tarball)
        changes = [f"--change=ENV {setting}" for setting in BASE_ENV]
        checked(["podman", "import", *changes, str(tarball), name], timeout=600)
    return name


def _debootstrap(codename: str, tarball: Path) -> None:
    """A minimal root filesystem with BASE_PACKAGES and the host's CA bundle, as a tarball."""
    mirror, keyring = debian_mirror(codename)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as scratch:
        root = Path(scratch) / "rootfs"
        keyring_option = [f"--keyring={keyring}"] if keyring and keyring.is_file() else []
        checked(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                *keyring_option,
                codename,
                str(root),
                mirror,
            ],
            timeout=1200,
        )
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        shutil.copyfile(CA_BUNDLE, root / CA_BUNDLE.relative_to("/"))
        partial = tarball.with_suffix(".partial")
        checked(["tar", "-C", str(root), "-cf", str(partial), "."], timeout=600)
        partial.rename(tarball)
