"""costwatch.detect.owners: the `owners:` section resolved per key with the budgets' matching
(globs over names, ids, exclude); the first entry that selects a key owns it."""

from __future__ import annotations

import polars as pl
import pytest

from costwatch.config import parse_config
from costwatch.config.detect import Owner
from costwatch.detect import owners_of
from costwatch.errors import ConfigError

OWNERS = (
    Owner(keys=("support-*",), exclude=("support-lab",), mention=("<@UALICE>",), channel="#sup"),
    Owner(keys=("id-42", "etl"), mention=("<!subteam^SDATA>", "<@UBOB>")),
    Owner(keys=("*",), mention=("<@UFINANCE>",)),
)


def keys(*pairs: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"api_key_id": [i for i, _ in pairs], "api_key_name": [n for _, n in pairs]},
        schema={"api_key_id": pl.String(), "api_key_name": pl.String()},
    )


def test_the_first_entry_that_selects_a_key_owns_it() -> None:
    table = keys(
        ("id-1", "support-bot"),
        ("id-2", "support-lab"),
        ("id-42", "renamed"),
        ("id-3", "etl"),
        ("id-4", "<!channel> *x*"),
    )
    assert owners_of(OWNERS, table).rows() == [
        ("id-1", 0, ["<@UALICE>"], "#sup"),
        ("id-2", 2, ["<@UFINANCE>"], None),
        ("id-42", 1, ["<!subteam^SDATA>", "<@UBOB>"], None),
        ("id-3", 1, ["<!subteam^SDATA>", "<@UBOB>"], None),
        ("id-4", 2, ["<@UFINANCE>"], None),
    ]


def test_a_key_no_entry_selects_has_no_owner_and_no_entries_own_nothing() -> None:
    table = keys(("id-9", "other"))
    assert owners_of(OWNERS[:2], table).rows() == [("id-9", None, None, None)]
    assert owners_of((), table).rows() == [("id-9", None, None, None)]
    assert owners_of(OWNERS, keys()).is_empty()


def test_the_section_is_read_from_the_file() -> None:
    text = (
        "langdock: {api_key: x}\nslack: {token: t, channel: '#a'}\n"
        "owners:\n  - {keys: 'support-*', mention: '<@UALICE>', channel: '#sup'}\n"
    )
    (owner,) = parse_config(text, env={}).owners
    assert owner == OWNERS[0].model_copy(update={"exclude": ()})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "slack: {webhook_url: 'https://hooks.slack.com/x'}\n"
            "owners: [{keys: a, mention: '<@U1>', channel: '#x'}]\n",
            "owners[0].channel (line 3): needs slack.token: a webhook posts to its own channel",
        ),
        ("owners: [{keys: a, mention: alice}]\n", "owners[0].mention[0] (line 2): must be a Slack"),
        ("owners: [{keys: [], mention: '<@U1>'}]\n", "owners[0].keys (line 2): must not be empty"),
        ("owners: [{keys: a}]\n", "owners[0].mention (line 2): "),
    ],
)
def test_an_owner_that_cannot_be_used_is_refused_with_its_place(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("langdock: {api_key: x}\n" + text, env={})
    assert any(str(p).startswith(problem) for p in caught.value.problems), caught.value.problems
