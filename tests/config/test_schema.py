"""`costwatch schema`: the configuration's JSON Schema, committed beside the example files and
kept in step with the models; what the reader accepts as written, the schema accepts too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from costwatch.config import parse_config
from costwatch.config.schema import schema_text
from costwatch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "config" / "costwatch.schema.json"
FILES = [
    ROOT / "config.example.yaml",
    ROOT / "config" / "costwatch.yaml",
    ROOT / "config" / "demo.yaml",
    *sorted((ROOT / "config" / "examples").glob("*.yaml")),
]
ENV = {"N": "4", "B": "true"}


class AsWritten(yaml.SafeLoader):
    """YAML as an editor's language server reads it (YAML 1.2: no timestamp type)."""


AsWritten.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if not tag.endswith(":timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def as_written(text: str) -> Any:
    return yaml.load(text, Loader=AsWritten)  # noqa: S506 (a SafeLoader, less timestamps)


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(COMMITTED.read_text()))


def problems(data: Any) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in validator().iter_errors(data)]


def test_costwatch_schema_prints_the_committed_schema() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "costwatch", "schema"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert printed == schema_text() == COMMITTED.read_text(), (
        "config/costwatch.schema.json is out of step: `costwatch schema >"
        " config/costwatch.schema.json` rewrites it"
    )
    jsonschema.Draft202012Validator.check_schema(json.loads(printed))


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_every_configuration_file_in_the_repository_is_valid_under_the_schema(path: Path) -> None:
    assert problems(as_written(path.read_text())) == []


def test_the_example_names_the_schema_in_its_first_line_for_editors() -> None:
    first = (ROOT / "config.example.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=./config/costwatch.schema.json"


# Each form the reader takes, written as a user would: the schema must take it too.
ACCEPTED = {
    "a duration as text": "schedule: {every: 15m}",
    "a duration in seconds": "schedule: {every: 900}",
    "a cron line instead": 'schedule: {cron: "*/10 * * * *"}',
    "thresholds as numbers, percentages and mappings": (
        "defaults: {thresholds: [50, '80%', {at: 100, severity: critical}]}"
    ),
    "forecast switched off": "defaults: {forecast: false}",
    "a forecast as a mapping": "defaults: {forecast: {min_elapsed: 20%, min_spend_usd: 5}}",
    "keys as one glob": "budgets: [{name: b, keys: '*', limits: {cost_usd: 10}}]",
    "keys as a list, a per-model limit": (
        "budgets: [{name: b, keys: [a, b], limits: {requests: 5}, models: {'gpt-4*': {tokens: 9}}}]"
    ),
    "a number from the environment": "langdock: {api_key: x, max_attempts: '${N}'}",
    "a boolean from the environment": "langdock: {api_key: x, allow_insecure_download: '${B}'}",
    "several workspaces, budgets scoped to them": (
        "workspaces:\n"
        "  - {name: a, api_key: x, channel: '#a',"
        " budgets: [{name: o, keys: '*', limits: {cost_usd: 1}}]}\n"
        "  - {name: b, api_key: y, base_url: 'https://b.example', timeout_seconds: '${N}'}\n"
        "budgets: [{name: b, keys: '*', limits: {cost_usd: 10}, workspaces: [a, b]}]"
    ),
    "a silence until a time": (
        "silences: [{budget: b, until: 2030-01-01T00:00:00+01:00, reason: planned}]\n"
        "budgets: [{name: b, keys: '*', limits: {cost_usd: 10}}]"
    ),
}


@pytest.mark.parametrize("text", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_what_the_reader_accepts_the_schema_accepts(text: str) -> None:
    if not text.startswith(("langdock", "workspaces")):
        text = "langdock: {api_key: x}\n" + text
    parse_config(text, env=ENV)  # the reader takes it
    assert problems(as_written(text)) == []


REFUSED = {
    "an unknown section": ("langdock: {api_key: x}\nlangdoc: {}", "langdoc"),
    "an unknown key": ("langdock: {api_key: x, base_uri: 'https://x'}", "base_uri"),
    "a list where a mapping goes": ("langdock: [x]", "is not of type 'object'"),
    "an unknown period": (
        "langdock: {api_key: x}\ndefaults: {period: fortnight}",
        "fortnight",
    ),
    "langdock and workspaces together": (
        "langdock: {api_key: x}\nworkspaces: [{name: a, api_key: y}]",
        "is valid under each of",
    ),
    "a workspace without a name": ("workspaces: [{api_key: y}]", "'name' is a required property"),
    "a budget without limits": (
        "langdock: {api_key: x}\nbudgets: [{name: b, keys: '*'}]",
        "limits",
    ),
}


@pytest.mark.parametrize(("text", "named"), REFUSED.values(), ids=REFUSED.keys())
def test_what_the_schema_refuses_the_reader_refuses_too(text: str, named: str) -> None:
    found = problems(as_written(text))
    assert found, text
    assert named in " ".join(found)
    with pytest.raises(ConfigError):
        parse_config(text, env=ENV)
