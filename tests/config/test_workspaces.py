"""`workspaces:`: several Langdock workspaces in one file, budgets scoped to one of them or
spanning several (an organisation total); a file with `langdock:` stays one workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from costwatch.cli import main
from costwatch.config import Config, parse_config
from costwatch.config.summary import summarize
from costwatch.errors import ConfigError

SECRET = "sk-SECRET-123"
ENV = {"MARKETING_KEY": SECRET, "RESEARCH_KEY": "sk-research"}
TWO = (
    "slack: {token: xoxb-1, channel: '#ai-spend'}\n"  # 1
    "workspaces:\n"  # 2
    "  - name: marketing\n"  # 3
    "    api_key: ${MARKETING_KEY}\n"  # 4
    "    channel: '#marketing'\n"  # 5
    "    budgets:\n"  # 6
    "      - {name: marketing-keys, keys: '*', limits: {cost_usd: 50}}\n"  # 7
    "  - name: research\n"  # 8
    "    base_url: https://research.example/api/public/\n"  # 9
    "    api_key: ${RESEARCH_KEY}\n"  # 10
    "    timeout_seconds: 300\n"  # 11
    "budgets:\n"  # 12
    "  - {name: org, keys: '*', scope: shared, limits: {cost_usd: 1000}}\n"  # 13
    "  - {name: research-pool, keys: '*', limits: {cost_usd: 9}, workspaces: [research]}\n"  # 14
)


def parse(text: str) -> Config:
    return parse_config(text, env=ENV)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env=ENV)
    return [str(problem) for problem in caught.value.problems]


def test_each_workspace_is_a_connection_with_the_langdock_sections_settings() -> None:
    config = parse(TWO)
    assert [c.name for c in config.connections] == ["marketing", "research"]
    marketing, research = (c.langdock for c in config.connections)
    assert marketing.secret_api_key() == SECRET
    assert marketing.base_url == "https://api.langdock.com"  # the default, as for langdock:
    assert research.base_url == "https://research.example/api/public"
    assert research.timeout_seconds == 300
    assert [c.channel for c in config.connections] == ["#marketing", None]
    assert config.langdock is None


def test_top_level_budgets_read_every_workspace_unless_they_name_some() -> None:
    config = parse(TWO)
    reads = {budget.name: config.reads(budget) for budget in config.budgets}
    assert reads == {
        "org": ("marketing", "research"),
        "research-pool": ("research",),
        "marketing-keys": ("marketing",),  # a workspace's own budget reads it alone
    }


def test_a_budget_reading_one_workspace_alone_goes_to_its_channel() -> None:
    config = parse(TWO.replace("  - name: research\n", "  - name: research\n    channel: '#r'\n"))
    channels = {budget.name: budget.channel for budget in config.budgets}
    assert channels == {"org": None, "research-pool": "#r", "marketing-keys": "#marketing"}


def test_a_budgets_own_channel_wins_over_its_workspaces() -> None:
    text = TWO.replace("limits: {cost_usd: 50}}", "limits: {cost_usd: 50}, channel: '#own'}")
    assert [b.channel for b in parse(text).budgets if b.name == "marketing-keys"] == ["#own"]


def test_a_langdock_file_is_one_workspace_named_default() -> None:
    text = "langdock: {api_key: k}\nbudgets: [{name: b, keys: '*', limits: {cost_usd: 1}}]\n"
    config = parse(text)
    assert [c.name for c in config.connections] == ["default"]
    assert config.connections[0].langdock is config.langdock
    assert config.reads(config.budgets[0]) == ("default",)
    scoped = parse(text.replace("limits:", "workspaces: [default], limits:"))
    assert scoped.reads(scoped.budgets[0]) == ("default",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "langdock: {api_key: k}\n" + TWO,
            ["workspaces (line 3): give langdock (one workspace) or workspaces, not both"],
            id="both",
        ),
        pytest.param(
            "workspaces: []\n",
            ["workspaces (line 1): must not be empty"],
            id="empty",
        ),
        pytest.param(
            TWO.replace("workspaces: [research]", "workspaces: [research, sales]"),
            [
                "budgets[1].workspaces[1] (line 14): names no workspace of this file"
                " (workspaces: marketing, research)"
            ],
            id="unknown-workspace",
        ),
        pytest.param(
            TWO.replace("name: research\n", "name: marketing\n"),
            [
                "workspaces[1].name (line 8): duplicate workspace name 'marketing'"
                " (also workspaces[0], line 3)",
                "budgets[1].workspaces[0] (line 14): names no workspace of this file"
                " (workspaces: marketing)",
            ],
            id="duplicate-workspace",
        ),
        pytest.param(
            TWO.replace("name: research-pool", "name: marketing-keys"),
            [
                "budgets[1].name (line 14): duplicate budget name 'marketing-keys'"
                " (also workspaces[0].budgets[0], line 7)"
            ],
            id="duplicate-budget-across-a-workspace",
        ),
        pytest.param(
            TWO.replace("name: research\n", "name: Research Lab\n"),
            [
                "workspaces[1].name (line 8): bad workspace name 'Research Lab': lower-case"
                " letters, digits, '_' and '-', at most 63, starting with a letter or digit"
                " (it labels metrics and alerts)"
            ],
            id="bad-name",
        ),
        pytest.param(
            TWO.replace("    api_key: ${RESEARCH_KEY}\n", ""),
            ["workspaces[1].api_key (line 8): is required (or api_key_file)"],
            id="workspace-without-a-key",
        ),
        pytest.param(
            TWO.replace("limits: {cost_usd: 50}}", "limits: {cost_usd: 50}, workspaces: [x]}"),
            [
                "workspaces[0].budgets[0].workspaces (line 7): a workspace's own budget reads"
                " that workspace alone (a budget of the top-level budgets may name several)"
            ],
            id="own-budget-naming-workspaces",
        ),
        pytest.param(
            TWO.replace(
                "{token: xoxb-1, channel: '#ai-spend'}", "{webhook_url: 'https://h.example/x'}"
            ),
            [
                "workspaces[0].channel (line 5): needs slack.token: a webhook posts to its own"
                " channel only"
            ],
            id="workspace-channel-with-a-webhook",
        ),
        pytest.param(
            "langdock: {api_key: k}\n"
            "budgets: [{name: b, keys: '*', limits: {cost_usd: 1}, workspaces: [marketing]}]\n",
            [
                "budgets[0].workspaces[0] (line 2): names no workspace of this file"
                " (workspaces: default)"
            ],
            id="a-langdock-file-has-only-default",
        ),
    ],
)
def test_a_bad_workspaces_section_is_each_problem_with_its_place(
    text: str, expected: list[str]
) -> None:
    assert problems(text) == expected


def test_a_workspace_name_from_the_environment_is_shown_as_written() -> None:
    text = TWO.replace("name: research\n", "name: ${MARKETING_KEY}\n")
    assert problems(text) == [
        "workspaces[1].name (line 8): bad workspace name '${MARKETING_KEY}': lower-case"
        " letters, digits, '_' and '-', at most 63, starting with a letter or digit"
        " (it labels metrics and alerts)"
    ]


def test_validate_summarises_each_workspace_and_what_each_budget_reads() -> None:
    lines = summarize(parse(TWO)).splitlines()
    assert lines[:3] == [
        "workspaces 2",
        "  marketing  https://api.langdock.com (API key given inline); 1 own budget;"
        " default channel #marketing",
        "  research   https://research.example/api/public (API key given inline); 0 own budgets",
    ]
    budgets = [line for line in lines if line.startswith("  ") and ": " in line]
    assert budgets == [
        "  org: shared pool; keys *; month in UTC; $1,000.00; thresholds 50/80/100%;"
        " all workspaces (an organisation total); to #ai-spend",
        "  research-pool: per key; keys *; month in UTC; $9.00; thresholds 50/80/100%;"
        " workspace research; to #ai-spend",
        "  marketing-keys: per key; keys *; month in UTC; $50.00; thresholds 50/80/100%;"
        " workspace marketing; to #marketing",
    ]
    assert SECRET not in "\n".join(lines)


def test_costwatch_validate_reads_a_file_of_several_workspaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "costwatch.yaml"
    path.write_text(TWO)
    assert main(["validate", "--config", str(path)]) == 0
    assert "workspaces 2" in capsys.readouterr().out
