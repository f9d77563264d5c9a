"""Reading a configuration file into a `Config`, or every problem with it at once.

    load_config(path, env=None) -> Config       read the file, or raise ConfigError
    parse_config(text, *, source, env, base_dir) -> Config

The YAML is read with positions (`costwatch.config.reader`), `${VAR}` / `${VAR:-x}` / `$$` are
interpolated in string values, `*_file` secrets are read (relative paths, like `state.path`,
from the config file's folder), and pydantic validates once. Every problem found is raised
together in one `ConfigError`, each with its dotted path and line, sorted by line. No problem
message contains a value from the file or the environment (a value a validator quotes is
shown as the `${NAME}` it came from). `env` defaults to `os.environ`: the one place
configuration reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from costwatch.config.models import Config
from costwatch.config.reader import Loc, RawConfig, format_path, read_yaml, translate
from costwatch.errors import ConfigError, ConfigProblem

# --- loading ---------------------------------------------------------------------------------


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the file at `path`; `env` (default os.environ) feeds ${VAR}."""
    try:
        data = path.read_bytes()
    except OSError as error:
        problem = ConfigProblem("", f"cannot read the file: {error.strerror or 'error'}")
        raise ConfigError(str(path), [problem]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        problem = ConfigProblem("", "the file is not UTF-8 text", line)
        raise ConfigError(str(path), [problem]) from None
    return parse_config(text, source=str(path), env=env, base_dir=path.absolute().parent)


def parse_config(
    text: str,
    *,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Validate configuration YAML; raises ConfigError with every problem, sorted by line."""
    raw = read_yaml(text, os.environ if env is None else env)
    if isinstance(raw.data, dict):
        _check_budget_names(raw)
        try:
            config = Config.model_validate(raw.data, context={"base_dir": base_dir})
        except ValidationError as error:
            for detail in error.errors(include_input=False, include_url=False):
                problem = translate(detail, raw, Config)
                if problem is not None and problem not in raw.problems:
                    raw.problems.append(problem)
        else:
            if not raw.problems:
                return config
    problems = sorted(raw.problems, key=lambda problem: problem.line or 0)
    raise ConfigError(source, problems)


def _check_budget_names(raw: RawConfig) -> None:
    """Budget names are unique in the whole file (a workspace's own budgets too: alerts are
    remembered by budget name), workspace names among the workspaces, and report names among
    the reports (a report is remembered as sent by its name)."""
    data = raw.data if isinstance(raw.data, dict) else {}
    places: list[Loc] = [("budgets", index) for index, _ in enumerate(_items(data, "budgets"))]
    names: list[Loc] = []
    for index, item in enumerate(_items(data, "workspaces")):
        names.append(("workspaces", index))
        own = _items(item, "budgets")
        places += [("workspaces", index, "budgets", i) for i, _ in enumerate(own)]
    _check_unique(raw, places, "budget")
    _check_unique(raw, names, "workspace")
    reports: list[Loc] = [("reports", index) for index, _ in enumerate(_items(data, "reports"))]
    _check_unique(raw, reports, "report")


def _items(data: object, key: str) -> list[object]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, list) else []


def _check_unique(raw: RawConfig, places: list[Loc], what: str) -> None:
    first: dict[str, Loc] = {}
    for place in sorted(places, key=lambda place: raw.line(place) or 0):  # the first written
        item = _follow(raw.data, place)
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        loc: Loc = (*place, "name")
        if name.strip() in first:
            earlier = first[name.strip()]
            where = f"{format_path(earlier[:-1])}, line {raw.line(earlier)}"
            shown = raw.shown(loc)(name)
            raw.add(loc, f"duplicate {what} name {shown} (also {where})", broken=False)
        first.setdefault(name.strip(), loc)


def _follow(data: object, loc: Loc) -> object:
    for part in loc:
        data = data[part]  # type: ignore[index]  # the places were found in `data` itself
    return data
