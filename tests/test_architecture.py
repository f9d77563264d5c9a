"""The house rules of docs/architecture.md, as checks: no import cycles, a pure core, small
modules, no module-level mutable state, and a map that names every module and interface.

Imports are read from the source (ast), every one of them: at the top, inside functions and
under `if TYPE_CHECKING:` (a cycle only the type checker sees is still a knot for a reader).
`from costwatch.slack import blocks` is an edge to the module `costwatch.slack.blocks`; a name
that is not a module (`from costwatch.slack import Sender`) is an edge to the package, whose
`__init__` is its public face and imports its modules. So a module that imports its own
family's face closes a cycle: inside a family, modules import each other by full path.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import costwatch
from costwatch.cli import _parser
from costwatch.config import Config
from costwatch.metrics import Metrics, render_snapshot

PACKAGE = Path(costwatch.__file__).resolve().parent
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
MAX_LINES = 450

# The pure core (docs/architecture.md, "Pure and IO"): `now` and data in, data out.
PURE = (
    "costwatch.alerts",
    "costwatch.budgets",
    "costwatch.cli.backtest_output",
    "costwatch.cli.output",
    "costwatch.cli.reportformat",
    "costwatch.cli.table",
    "costwatch.config.durations",
    "costwatch.config.summary",
    "costwatch.context",
    "costwatch.detect.anomaly",
    "costwatch.detect.baseline",
    "costwatch.detect.daily",
    "costwatch.detect.findings",
    "costwatch.detect.keys",
    "costwatch.detect.owners",
    "costwatch.detect.rate",
    "costwatch.detect.unitcost",
    "costwatch.fmt",
    "costwatch.forecast",
    "costwatch.globs",
    "costwatch.health",
    "costwatch.history",
    "costwatch.keeping",
    "costwatch.langdock.ranges",
    "costwatch.lifecycle",
    "costwatch.metrics.cap",
    "costwatch.metrics.exposition",
    "costwatch.notices",
    "costwatch.owning",
    "costwatch.periods",
    "costwatch.quote",
    "costwatch.replayed",
    "costwatch.reports",
    "costwatch.selection",
    "costwatch.workspaces",
    "costwatch.slack.blocks",
    "costwatch.slack.findings",
    "costwatch.slack.render",
    "costwatch.slack.report",
    "costwatch.suggest",
    "costwatch.usage.csvshape",
    "costwatch.usage.model",
)
IO_LIBRARIES = frozenset(
    {
        "httpx",
        "sqlite3",
        "psycopg",
        "slack_sdk",
        "prometheus_client",
        "socket",
        "time",
        "apscheduler",
    }
)
# Module-level mutable state, each with its reason.
MUTABLE_GLOBALS = {
    # flock belongs to the process: a second State of one process on one file must share it
    ("costwatch.state.lock", "_HELD"),
}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    return found


MODULES = modules()


def imported(module: Module) -> Iterator[str]:
    """Every absolute module name `module` imports (relative imports resolved): for `from X
    import y`, the module `X.y` when there is one, else `X`."""
    base = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                source = f"{anchor}.{source}" if source else anchor
            for alias in node.names:
                member = f"{source}.{alias.name}"
                yield member if member in MODULES else source


def graph() -> dict[str, set[str]]:
    """Every costwatch module and the costwatch modules it imports."""
    return {
        name: {other for other in imported(module) if other in MODULES and other != name}
        for name, module in MODULES.items()
    }


def cycles(edges_of: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or with a self-loop (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges_of.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges_of.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges_of):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_among_costwatch_modules() -> None:
    assert cycles(graph()) == []


def test_the_cycle_check_finds_a_cycle_when_there_is_one() -> None:
    knot = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(knot) == [["a", "b", "c"], ["e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def reach(start: str) -> set[str]:
    """`start` and every costwatch module it imports, directly or not."""
    seen, todo = {start}, [start]
    edges_of = graph()
    while todo:
        for other in edges_of[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def io_imports(module: Module) -> set[str]:
    return {name for name in imported(module) if name.split(".")[0] in IO_LIBRARIES}


def reads_environment(module: Module) -> bool:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            return True
        if isinstance(node, ast.Name) and node.id in ("environ", "getenv"):
            return True
    return False


@pytest.mark.parametrize("name", PURE)
def test_a_pure_module_imports_no_io_library_even_through_costwatch_modules(name: str) -> None:
    tainted = {other: sorted(io_imports(MODULES[other])) for other in reach(name)}
    assert {other: libraries for other, libraries in tainted.items() if libraries} == {}


@pytest.mark.parametrize("name", PURE)
def test_a_pure_module_reads_no_environment(name: str) -> None:
    assert not reads_environment(MODULES[name])


def test_the_purity_checks_catch_an_io_import_and_an_environment_read() -> None:
    sample = ast.parse("import os\nfrom time import monotonic\nTOKEN = os.environ['X']\n")
    module = Module("costwatch.sample", Path("sample.py"), sample)
    assert io_imports(module) == {"time"}
    assert reads_environment(module)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_longer_than_the_house_allows(name: str) -> None:
    lines = len(MODULES[name].path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by concept"


def mutable_globals(module: Module) -> set[str]:
    """Module-level names bound to an empty dict, list or set: state that lives in no object."""
    empty = (ast.Dict, ast.List, ast.Set)
    names = set()
    for node in module.tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        is_empty = isinstance(value, empty) and not getattr(
            value, "elts", getattr(value, "keys", [])
        )
        is_call = (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id in ("dict", "list", "set")
            and not value.args
        )
        if is_empty or is_call:
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
    return names


def test_no_module_keeps_mutable_state_at_module_level() -> None:
    found = {(name, g) for name, module in MODULES.items() for g in mutable_globals(module)}
    assert found == MUTABLE_GLOBALS


# --- the map is kept true -----------------------------------------------------------------


def architecture() -> str:
    return ARCHITECTURE.read_text()


def mapped_as(module: Module) -> str:
    """How the map names a module: `slack/render.py`; a family by its folder, `slack/`."""
    relative = module.path.relative_to(PACKAGE).as_posix()
    if module.is_package and module.name != "costwatch":
        return relative.removesuffix("__init__.py")
    return relative


def test_the_architecture_map_names_every_module() -> None:
    text = architecture()
    assert [mapped_as(m) for m in MODULES.values() if f"`{mapped_as(m)}`" not in text] == []


def command_names() -> list[str]:
    (commands,) = (a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(commands.choices)


def metric_names() -> set[str]:
    """Every family costwatch exposes, by the name a query uses (counters end in _total)."""
    live = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in Metrics().registry.collect()
        if family.name.startswith("costwatch_")
    }
    exposed = render_snapshot(None, 10).text.decode()
    snapshot = set(re.findall(r"^# TYPE (costwatch_\w+) ", exposed, re.MULTILINE))
    return live | snapshot


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("command", command_names()),
        ("configuration section", sorted(Config.model_fields)),
        ("metric", sorted(metric_names())),
    ],
)
def test_the_architecture_page_lists_every_interface_users_depend_on(
    kind: str, names: list[str]
) -> None:
    text = architecture()
    assert [name for name in names if f"`{name}" not in text] == [], kind
