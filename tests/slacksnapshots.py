"""Reviewed snapshots of Slack messages, shared by the render tests (tests/slack/): a message
as Slack gets it (`text`, `blocks`) and as a person reads it (`reads_as`), compared with its
file in tests/slack/snapshots/ (`COSTWATCH_UPDATE_SNAPSHOTS=1` writes them anew), and the
checks every rendered message passes (Slack's limits, slack_sdk's own block models)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from slack_sdk.models.blocks import Block

from costwatch.slack import blocks as slackblocks
from costwatch.slack.render import Rendered, as_terminal_text

SNAPSHOTS = Path(__file__).parent / "slack" / "snapshots"
UPDATE = os.environ.get("COSTWATCH_UPDATE_SNAPSHOTS") == "1"


def snapshot_of(rendered: Rendered) -> dict[str, Any]:
    return {
        "text": rendered.text,
        "reads_as": as_terminal_text(rendered).splitlines(),
        "blocks": rendered.blocks,
    }


def assert_matches_snapshot(file_name: str, rendered: Rendered) -> None:
    """`rendered` is exactly its reviewed snapshot `file_name` (written first when UPDATE)."""
    path = SNAPSHOTS / file_name
    actual = snapshot_of(rendered)
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n")
    assert path.exists(), f"no snapshot {path.name}: run with COSTWATCH_UPDATE_SNAPSHOTS=1"
    assert actual == json.loads(path.read_text())


def assert_valid_for_slack(rendered: Rendered) -> None:
    """Within Slack's limits, and every block parses and validates in slack_sdk."""
    assert slackblocks.problems(rendered.blocks, rendered.text) == []
    for block in rendered.blocks:
        Block.parse(block).validate_json()  # type: ignore[union-attr]
