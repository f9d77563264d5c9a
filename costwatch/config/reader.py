"""Reading the configuration YAML with positions, and saying where each problem is.

`read_yaml(text, env)` composes pyyaml's node tree (so nothing but plain scalars is ever
constructed) and walks it into plain data: dicts with string keys, lists, scalars. On the way
it records the 1-based line of every key and list item under its path tuple, replaces `${VAR}`
in string values from `env`, and collects what pyyaml would not say or would silently accept:
syntax errors, duplicate keys, unknown tags, missing variables. `translate(...)` then turns each
pydantic error into a `ConfigProblem` with a dotted path, the line, and a short plain message.

Echoes are built, never searched for afterwards. A validator that names what it refused raises
a `Refusal` (`costwatch.quote`), and `translate` alone renders its values: quoted (escaped,
capped) as a rule; as the text written in the file (`'${NAME}'`) when the value came from the
environment, whatever the validator did to it (a cron field is lower-cased); and not at all in
a secret field. Key names and tags, the only other outside text in a message, are quoted.
"""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import yaml
from pydantic import BaseModel, SecretStr
from pydantic_core import ErrorDetails, PydanticCustomError

from costwatch.errors import ConfigProblem
from costwatch.quote import Refusal, quote

__all__ = ["CUSTOM_ERROR", "Loc", "RawConfig", "at", "format_path", "read_yaml", "translate"]

Loc = tuple[str | int, ...]

CUSTOM_ERROR = "costwatch"
_MAX_NODES = 100_000  # an alias "billion laughs" file must not eat the memory
_YAML = "tag:yaml.org,2002:"
_TEXT_TAGS = {f"{_YAML}str", f"{_YAML}timestamp", f"{_YAML}merge", f"{_YAML}value"}
_NUMBER_TAGS = {f"{_YAML}int", f"{_YAML}float"}
_MERGE = f"{_YAML}merge"


def at(where: str | Loc, message: str) -> PydanticCustomError:
    """An error for a model validator to raise that points at `where` below the model."""
    loc = (where,) if isinstance(where, str) else where
    return PydanticCustomError(CUSTOM_ERROR, "{message}", {"message": message, "at": loc})


@dataclass
class RawConfig:
    """The file as plain data, where each path is, and what was wrong before validation."""

    data: object = None
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)
    broken: set[Loc] = field(default_factory=set)  # unreadable values: later errors there drop
    from_env: dict[Loc, str] = field(default_factory=dict)  # a value with ${VAR}: as written

    def line(self, loc: Loc) -> int | None:
        """The line of `loc`, or of its nearest parent that has one."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None

    def shown(self, loc: Loc) -> Callable[[str], str]:
        """How a message may show a value refused at `loc`: quoted, or as written in the file
        when it came from the environment (it could be a secret put in the wrong place)."""
        for end in range(len(loc), 0, -1):
            written = self.from_env.get(loc[:end])
            if written is not None:
                return lambda _value: quote(written)
        return quote

    def add(self, loc: Loc, message: str, *, line: int | None = None, broken: bool = True) -> None:
        where = line if line is not None else self.line(loc)
        self.problems.append(ConfigProblem(format_path(loc), message, where))
        if broken:
            self.broken.add(loc)


def format_path(loc: Loc) -> str:
    """("budgets", 2, "limits") -> "budgets[2].limits"; odd keys as models["gpt-4.1"]."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


# --- YAML -> data with positions -------------------------------------------------------------


class _TooLarge(Exception):
    pass


# libyaml's loader when pyyaml was built with it (4x faster on a 200-budget file); both keep
# line numbers on every node. A file it refuses is read again by Python's loader, whose
# messages say more ("found character '\t' that cannot start any token").
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


def _compose(text: str) -> yaml.Node | None:
    if _FAST_LOADER is not None:
        try:
            node: yaml.Node | None = yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass
        else:
            return node
    return yaml.compose(text, Loader=yaml.SafeLoader)


def read_yaml(text: str, env: Mapping[str, str]) -> RawConfig:
    """Parse `text`; syntax problems end up in `problems` and leave `data` as None."""
    raw = RawConfig()
    root = None
    try:
        root = _compose(text)
        if root is not None:
            raw.data = _Walker(raw, env).node(root, ())
    except yaml.MarkedYAMLError as error:
        raw.problems = [_syntax_problem(error)]
        raw.data = None
    except yaml.YAMLError as error:
        raw.problems = [_reader_problem(error, text)]
        raw.data = None
    except (RecursionError, _TooLarge):
        raw.problems = [ConfigProblem("", "is nested too deeply or expands too many aliases")]
        raw.data = None
    if raw.data is None and not raw.problems:
        raw.add((), "the file is empty: it needs at least a 'langdock' section (or 'workspaces')")
    elif raw.data is not None and not isinstance(raw.data, dict):
        line = root.start_mark.line + 1 if root is not None else None
        raw.add(
            (), "the top level must be a mapping of sections (langdock, budgets, ...)", line=line
        )
    return raw


def _syntax_problem(error: yaml.MarkedYAMLError) -> ConfigProblem:
    mark = error.problem_mark or error.context_mark
    what = ", ".join(part for part in (error.context, error.problem) if part)
    column = f" (column {mark.column + 1})" if mark is not None else ""
    line = mark.line + 1 if mark is not None else None
    return ConfigProblem("", f"YAML syntax error: {what}{column}", line)


def _reader_problem(error: yaml.YAMLError, text: str) -> ConfigProblem:
    position = getattr(error, "position", None)
    line = text[:position].count("\n") + 1 if isinstance(position, int) else None
    return ConfigProblem("", "the file contains a character YAML does not allow", line)


class _Walker:
    def __init__(self, raw: RawConfig, env: Mapping[str, str]) -> None:
        self.raw = raw
        self.env = env
        self.visits = 0
        self.active: set[int] = set()
        self.constructor = yaml.constructor.SafeConstructor()

    def node(self, node: yaml.Node, loc: Loc) -> object:
        self.visits += 1
        if self.visits > _MAX_NODES:
            raise _TooLarge
        if id(node) in self.active:
            self.raw.add(loc, "refers to itself through an alias")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, loc)
            if isinstance(node, yaml.SequenceNode):
                return self.sequence(node, loc)
            return self.scalar(node, loc)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, object] | None:
        if node.tag != f"{_YAML}map":
            self.raw.add(loc, f"unsupported tag {quote(_short(node.tag))}")
            return None
        result = self.merged(node, loc)
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.raw.add(loc, "a key must be a plain name, not a list or mapping", line=line)
                continue
            key = str(key_node.value)  # as written: `on:` is the key "on", not True
            if key in first_lines:
                message = f"duplicate key {quote(key)} (first at line {first_lines[key]})"
                self.raw.add((*loc, key), message, line=line, broken=False)
            first_lines[key] = line
            self.raw.lines[(*loc, key)] = line
            result[key] = self.node(value_node, (*loc, key))
        return result

    def merged(self, node: yaml.MappingNode, loc: Loc) -> dict[str, object]:
        """The keys that `<<: *anchor` entries bring in; earlier sources win, own keys later."""
        result: dict[str, object] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in reversed(sources):
                value = self.node(source, loc) if isinstance(source, yaml.Node) else None
                if isinstance(value, dict):
                    result.update(value)
                else:
                    self.raw.add(loc, "'<<' must merge a mapping or a list of mappings")
        return result

    def sequence(self, node: yaml.SequenceNode, loc: Loc) -> list[object] | None:
        if node.tag != f"{_YAML}seq":
            self.raw.add(loc, f"unsupported tag {quote(_short(node.tag))}")
            return None
        items = []
        for index, item in enumerate(node.value):
            self.raw.lines[(*loc, index)] = item.start_mark.line + 1
            items.append(self.node(item, (*loc, index)))
        return items

    def scalar(self, node: yaml.Node, loc: Loc) -> object:
        sexagesimal = node.tag in _NUMBER_TAGS and ":" in node.value  # YAML 1.1: 1:30 is 90
        if node.tag in _TEXT_TAGS or sexagesimal:
            value: object = node.value
        else:
            try:
                value = self.constructor.construct_object(node)
            except (yaml.YAMLError, ValueError, LookupError, TypeError, ArithmeticError):
                self.raw.add(loc, f"is not a valid value for tag {quote(_short(node.tag))}")
                return None
        if isinstance(value, str) and "$" in value:
            used: dict[str, str] = {}
            try:
                return interpolate(value, self.env, used)
            except ValueError as error:
                self.raw.add(loc, str(error))
            finally:
                if used:
                    self.raw.from_env[loc] = value
        return value


def _short(tag: str) -> str:
    return tag.replace(_YAML, "!!")


# --- ${VAR} interpolation --------------------------------------------------------------------

_REFERENCE = re.compile(r"\$(?:\$|\{(?P<body>[^}]*)\}|(?P<open>\{))")
_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^${]*))?")


def interpolate(text: str, env: Mapping[str, str], used: dict[str, str] | None = None) -> str:
    """Replace ${NAME} and ${NAME:-default} from `env`, and $$ by $.

    Raises ValueError naming the missing variables (never a value). Each value taken from
    `env` is recorded in `used` as value -> "${NAME}".
    """
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        body = _BODY.fullmatch(match["body"] or "") if not match["open"] else None
        if body is None:
            raise ValueError(
                "bad variable reference: write ${NAME} or ${NAME:-default}, and $$ for a '$'"
            )
        value = env.get(body["name"])
        if value is None or (value == "" and body["default"] is not None):
            if body["default"] is None:
                missing.append(body["name"])
                return ""
            return body["default"]
        if used is not None:
            used[value] = f"${{{body['name']}}}"
        return value

    result = _REFERENCE.sub(replace, text)
    if len(missing) == 1:
        raise ValueError(f"environment variable {missing[0]} is not set")
    if missing:
        raise ValueError(f"environment variables {', '.join(missing)} are not set")
    return result


# --- pydantic errors -> ConfigProblem --------------------------------------------------------

_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
    "path_type": "must be a file path",
    "timezone_aware": "must include a UTC offset, like 2025-07-01T00:00:00+02:00",
}
_DATETIME_HINT = "must be an ISO 8601 date and time with a UTC offset, like 2025-07-01T00:00:00Z"


def translate(error: ErrorDetails, raw: RawConfig, root: type[BaseModel]) -> ConfigProblem | None:
    """One pydantic error as a problem at its place in the file (None: already reported)."""
    loc = _clean_loc(tuple(error["loc"]), raw.data)
    ctx = error.get("ctx", {})
    if error["type"] == CUSTOM_ERROR:
        loc = (*loc, *ctx["at"])
    if any(loc[:end] in raw.broken for end in range(len(loc) + 1)):
        return None
    show = _hidden if _is_secret(root, loc) else raw.shown(loc)
    return ConfigProblem(format_path(loc), _message(error, loc, root, show), raw.line(loc))


def _clean_loc(loc: Loc, data: object) -> Loc:
    """Drop pydantic's own steps (union tags, "[key]") by following the data itself."""
    kept: list[str | int] = []
    for index, part in enumerate(loc):
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_list or (isinstance(data, dict) and part in data):
            data = data[part]  # type: ignore[index]
        elif index < len(loc) - 1 or part == "[key]":
            continue
        kept.append(part)
    return tuple(kept)


def _hidden(_value: str) -> str:
    return "(not shown: a secret)"


def _message(
    error: ErrorDetails, loc: Loc, root: type[BaseModel], show: Callable[[str], str]
) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == CUSTOM_ERROR:
        return str(ctx["message"])
    if kind == "value_error":
        refused = ctx["error"]
        return refused.render(show) if isinstance(refused, Refusal) else str(refused)
    if kind == "extra_forbidden":
        return _unknown_key(str(loc[-1]) if loc else "", _fields_at(root, loc[:-1]))
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
        bound, value = next(iter(ctx.items()))
        return f"must be {words[bound]} {value:g}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    if kind.startswith("datetime"):
        return _DATETIME_HINT
    return _MESSAGES.get(kind) or _lower_first(error["msg"])


def _unknown_key(key: str, fields: list[str]) -> str:
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if close:
        return f"unknown key {quote(key)} (did you mean '{close[0]}'?)"
    return f"unknown key {quote(key)} (known keys: {', '.join(fields)})"


def _is_secret(model: type[BaseModel], loc: Loc) -> bool:
    """Whether `loc` names a secret field (a `SecretStr`) of the configuration's schema."""
    info = None
    for part in loc:
        info = model.model_fields.get(part) if isinstance(part, str) else info
        if isinstance(part, str) and info is None:
            return False
        if info is not None:
            model = next(_models_in(info.annotation), model)
    return info is not None and _holds(info.annotation, SecretStr)


def _holds(annotation: object, kind: type) -> bool:
    if annotation is kind:
        return True
    return any(_holds(arg, kind) for arg in typing.get_args(annotation))


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The field names of the model found at `loc` (list indexes and dict keys skipped)."""
    for part in loc:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        if info is not None:
            model = next(_models_in(info.annotation), model)
    return list(model.model_fields)


def _models_in(annotation: object) -> typing.Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):  # Annotated, X | None, tuple[X, ...], dict[str, X]
        yield from _models_in(arg)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
