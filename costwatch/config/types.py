"""Value types of the configuration: numbers, zones, globs, URLs, mentions, secrets from files.

Annotated pydantic types and their validators, shared by the models in `costwatch.config`.
Messages are short and plain, and never quote a secret.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import stat
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
)

from costwatch import globs
from costwatch.config.durations import normalize_cron, parse_duration
from costwatch.quote import Refusal

SECRET_FILE_MAX_BYTES = 64 * 1024
_T = TypeVar("_T")

# --- value types -----------------------------------------------------------------------------


def number(value: object) -> object:
    """Numbers (and numeric strings, e.g. from ${VAR}) pass; `true` is not 1."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


def percent(value: object) -> object:
    """80 or "80%"."""
    if isinstance(value, str) and value.strip().endswith("%"):
        return value.strip()[:-1]
    return number(value)


def fraction(value: object) -> object:
    """0.2 or "20%"."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError("must be a fraction like 0.2 or a percentage like '20%'") from None
    return number(value)


def _check_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(name, _zone_names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""  # a zone name, not the value
        raise Refusal(
            "bad time zone {}" + hint.replace("{", "{{").replace("}", "}}"), name
        ) from None
    return name


@functools.cache
def _zone_names() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def _check_glob(pattern: str) -> str:
    problem = globs.problem(pattern)
    if problem is not None:
        raise Refusal("bad glob {}: " + problem.replace("{", "{{").replace("}", "}}"), pattern)
    return pattern


def check_url(url: str) -> str:
    """An http(s) URL without a user or password: HTTP clients log URLs, never a secret."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http or https URL")
    if "@" in parts.netloc:
        raise ValueError(
            "must not contain a user or password (user:password@): a key goes in its own field"
        )
    return url


def check_listen(text: str) -> str:
    split_listen(text)
    return text


def split_listen(text: str) -> tuple[str, int]:
    match = re.fullmatch(
        r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>\d{1,5})", text
    )
    if match is None:
        raise ValueError("must be host:port, like 0.0.0.0:9108 or [::]:9108")
    if not 1 <= int(match["port"]) <= 65535:
        raise ValueError("port must be between 1 and 65535")
    return match["v6"] or match["host"], int(match["port"])


_MENTION = re.compile(r"<(?:@[A-Z0-9]+|!subteam\^[A-Z0-9]+(?:\|[^<>]*)?|!here|!channel|!everyone)>")


def _check_mention(text: str) -> str:
    if not _MENTION.fullmatch(text):
        raise ValueError("must be a Slack mention like '<@U0123ABCD>' or '<!subteam^S0123ABCD>'")
    return text


def non_empty(items: tuple[_T, ...]) -> tuple[_T, ...]:
    if not items:
        raise ValueError("must not be empty")
    return items


def _check_channel(name: str) -> str:
    if not re.fullmatch(r"\S+", name):
        raise ValueError("must be a channel like '#ai-spend' or a channel ID, without spaces")
    return name


_WORKSPACE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def _check_workspace_name(name: str) -> str:
    if not _WORKSPACE_NAME.fullmatch(name):
        raise Refusal(
            "bad workspace name {}: lower-case letters, digits, '_' and '-', at most 63,"
            " starting with a letter or digit (it labels metrics and alerts)",
            name,
        )
    return name


def _as_patterns(value: object) -> object:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        raise ValueError("must be a glob or a list of globs, names or key ids")
    return value


def resolve_path(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else Path(base) / path


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
PositiveFloat = Annotated[float, BeforeValidator(number), Field(gt=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, BeforeValidator(number), Field(gt=0)]
# How the JSON Schema (`costwatch schema`) describes what the file may hold as written.
_DURATION_SCHEMA = {
    "anyOf": [{"type": "string"}, {"type": "integer", "exclusiveMinimum": 0}],
    "description": "a duration like '90s', '15m', '24h', '7d' or '1h30m', or whole seconds",
}
_PATTERNS_SCHEMA = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    "description": "a glob over key names or a key id, or a list of them",
}
Duration = Annotated[timedelta, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
Cron = Annotated[str, AfterValidator(normalize_cron)]
ZoneName = Annotated[str, AfterValidator(_check_zone)]
Glob = Annotated[str, AfterValidator(_check_glob)]
Patterns = Annotated[
    tuple[Glob, ...], BeforeValidator(_as_patterns), WithJsonSchema(_PATTERNS_SCHEMA)
]
Url = Annotated[str, AfterValidator(check_url)]
Mention = Annotated[str, AfterValidator(_check_mention)]
Channel = Annotated[str, AfterValidator(_check_channel)]
WorkspaceName = Annotated[str, AfterValidator(_check_workspace_name)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- secrets ---------------------------------------------------------------------------------


class _Invalid:
    """Put in place of a field's input by a `before` validator: the field then reports it."""

    def __init__(self, error: ValueError) -> None:
        self.error = error


def _raise_invalid(value: object) -> object:
    if isinstance(value, _Invalid):
        raise value.error
    return value


Secret = Annotated[SecretStr, Field(min_length=1), BeforeValidator(_raise_invalid)]


def refused(message: str) -> object:
    """Put in place of a field's input by a `before` validator: the field reports `message`."""
    return _Invalid(ValueError(message))


def redacted_url(url: str) -> str:
    """A database URL as logs may show it: scheme, host, port and path; never the user's
    password nor the query (which may carry one)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


def header_token_problem(value: str) -> str | None:
    """What keeps `value` (a key sent as `Authorization: Bearer <value>`) out of an HTTP header,
    or None. Never quotes the value."""
    if value != value.strip():
        return (
            "has whitespace at its start or end (a trailing newline, as `kubectl create secret "
            "--from-file` leaves it?): remove it, or read the key with api_key_file, which "
            "strips it"
        )
    if any(character.isspace() for character in value):
        return "contains whitespace: an API key has none"
    if not all("!" <= character <= "~" for character in value):
        return (
            "contains a character that is not printable ASCII: it cannot be sent in an HTTP header"
        )
    return None


SecretPath = Annotated[Path, BeforeValidator(_raise_invalid)]


def read_secret_files(data: object, info: ValidationInfo, *names: str) -> object:
    """For each `name`: exactly-one-of `name`/`name_file` check, and read the file into `name`."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for name in names:
        file_key = f"{name}_file"
        if data.get(file_key) is None:
            continue
        if data.get(name) is not None:
            data[file_key] = _Invalid(ValueError(f"give {name} or {file_key}, not both"))
        elif isinstance(data[file_key], str):
            path = resolve_path(Path(data[file_key]), info)
            try:
                data[name], data[file_key] = _read_secret(path), path
            except Refusal as error:
                data[file_key] = _Invalid(error)
    return data


def _check_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        raise Refusal(f"{{}} is {kind}, not a regular file with the secret", str(path))


def _read_at_most(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0 and (chunk := os.read(fd, size)):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _read_secret(path: Path) -> str:
    """The stripped content of a regular file of at most SECRET_FILE_MAX_BYTES.

    Opened without blocking (a FIFO would wait for a writer for ever, and a reload with it),
    then checked on the descriptor itself: anything but a regular file is refused before a
    byte is read. The Refusal names the path (rendered by the config's error translation),
    never what is in the file.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        _check_regular(path, os.stat(path).st_mode)  # a socket cannot even be opened
        fd = os.open(path, flags)
    except OSError as error:
        raise Refusal(f"cannot read {{}}: {error.strerror or 'error'}", str(path)) from None
    try:
        _check_regular(path, os.fstat(fd).st_mode)  # what was opened, whatever changed since
        data = _read_at_most(fd, SECRET_FILE_MAX_BYTES + 1)
    except OSError as error:
        raise Refusal(f"cannot read {{}}: {error.strerror or 'error'}", str(path)) from None
    finally:
        os.close(fd)
    if len(data) > SECRET_FILE_MAX_BYTES:
        limit = SECRET_FILE_MAX_BYTES // 1024
        raise Refusal(f"{{}} is larger than {limit} KiB: not a file holding one secret", str(path))
    try:
        content = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Refusal("cannot read {}: not a UTF-8 text file", str(path)) from None
    if not content:
        raise Refusal("{} is empty", str(path))
    return content
