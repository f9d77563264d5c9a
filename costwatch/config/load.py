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
from costwatch.config.reader import Loc, RawConfig, read_yaml, translate
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
    budgets = raw.data.get("budgets") if isinstance(raw.data, dict) else None
    first: dict[str, Loc] = {}
    for index, budget in enumerate(budgets if isinstance(budgets, list) else []):
        name = budget.get("name") if isinstance(budget, dict) else None
        if not isinstance(name, str):
            continue
        loc: Loc = ("budgets", index, "name")
        if name.strip() in first:
            where = f"budgets[{first[name.strip()][1]}], line {raw.line(first[name.strip()])}"
            shown = raw.shown(loc)(name)
            raw.add(loc, f"duplicate budget name {shown} (also {where})", broken=False)
        first.setdefault(name.strip(), loc)
