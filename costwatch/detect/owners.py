"""Owners: who answers for each key, from the `owners:` section.

    owners_of(owners, keys) -> pl.DataFrame   api_key_id, owner, mention, channel

An entry selects a key the way a budget does (`globs.any_matches`, the frame form of
`globs.key_matches`: a glob over its name or its id, less `exclude`); the first entry in file
order that selects a key is its owner. `owner` is that entry's index (null: nobody),
`mention` its Slack mentions, `channel` its channel (null: the alert's own). Pure (polars):
each entry's globs are matched once over the whole table of keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from costwatch import globs
from costwatch.config.detect import Owner

SCHEMA: dict[str, pl.DataType] = {
    "api_key_id": pl.String(),
    "owner": pl.Int64(),
    "mention": pl.List(pl.String()),
    "channel": pl.String(),
}


def owners_of(owners: Sequence[Owner], keys: pl.DataFrame) -> pl.DataFrame:
    """For each key of `keys` (api_key_id, api_key_name), its owner (SCHEMA), in `keys`' order."""
    names, ids = pl.col("api_key_name"), pl.col("api_key_id")
    chosen = [
        pl.when(_selects(owner, names, ids)).then(pl.lit(index, dtype=pl.Int64))
        for index, owner in enumerate(owners)
    ]
    table = pl.DataFrame(
        {
            "owner": list(range(len(owners))),
            "mention": [list(owner.mention) for owner in owners],
            "channel": [owner.channel for owner in owners],
        },
        schema={k: v for k, v in SCHEMA.items() if k != "api_key_id"},
    )
    return (
        keys.select(
            "api_key_id",
            pl.coalesce(*chosen, pl.lit(None, dtype=pl.Int64)).alias("owner"),
        )
        .join(table, on="owner", how="left", maintain_order="left")
        .select(list(SCHEMA))
    )


def _selects(owner: Owner, names: pl.Expr, ids: pl.Expr) -> pl.Expr:
    selected = globs.any_matches(owner.keys, names=names, ids=ids)
    if owner.exclude:
        selected = selected & ~globs.any_matches(owner.exclude, names=names, ids=ids)
    return selected
