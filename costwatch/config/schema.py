"""The JSON Schema of the configuration file, made from the models: `costwatch schema`.

Committed as `config/costwatch.schema.json` (a test keeps it in step with the models), so an
editor that reads the `yaml-language-server` modeline at the top of a file completes its keys
and marks unknown ones. The schema describes the file as written, before it is read: a value
written as `${VAR}` is text until then, so every number and boolean also accepts a string, and
the shorthands the reader takes are there too (a threshold as `80` or `"80%"`, `forecast: false`,
`keys: "*"`, durations as `"15m"` or seconds). What only the reader can tell (a time zone, a
glob, a crontab line, `${VAR}` itself) `costwatch validate` checks.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from costwatch.config.durations import format_duration
from costwatch.config.models import Config

__all__ = ["SCHEMA_ID", "schema", "schema_text"]

SCHEMA_ID = "https://github.com/costwatch/costwatch/config/costwatch.schema.json"
# Models the reader also takes in a shorter form, and those forms.
_SHORTHANDS: dict[str, list[dict[str, Any]]] = {
    "Threshold": [{"type": "number"}, {"type": "string"}],
    "ForecastConfig": [{"type": "boolean"}],
}


_ANNOTATIONS = ("title", "description", "default")


class _FileSchema(GenerateJsonSchema):
    def encode_default(self, dft: Any) -> Any:
        """Defaults as a file writes them: durations as "15m", not ISO 8601's "PT15M"."""
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def schema() -> dict[str, Any]:
    """The configuration's JSON Schema (draft 2020-12)."""
    generated = Config.model_json_schema(schema_generator=_FileSchema)
    # `langdock:` is a mapping when written (None only stands for "not written").
    generated["properties"]["langdock"] = {"$ref": "#/$defs/LangdockConfig"}
    for name, forms in _SHORTHANDS.items():
        generated["$defs"][name] = {"anyOf": [*forms, generated["$defs"][name]]}
    document = _written(generated)
    assert isinstance(document, dict)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "costwatch configuration",
        "description": "The file `costwatch --config` reads; config.example.yaml documents it.",
        **{key: value for key, value in document.items() if key != "title"},
        # One workspace under `langdock:`, or several under `workspaces:`; not both.
        "oneOf": [{"required": ["langdock"]}, {"required": ["workspaces"]}],
    }


def schema_text() -> str:
    """`schema()` as the committed file holds it."""
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def _written(node: Any) -> Any:
    """Every number or boolean may also be written as text (`${VAR}`, "80%", "20%")."""
    if isinstance(node, list):
        return [_written(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _written(value) for key, value in node.items()}
    if node.get("type") not in ("number", "integer", "boolean"):
        return node
    about = {key: node.pop(key) for key in _ANNOTATIONS if key in node}
    return {**about, "anyOf": [node, {"type": "string"}]}
