"""A subject's normal day: the median and the median absolute deviation of its trailing days.

Why median and MAD, not a mean or a high percentile: the median ignores up to half the days
being spikes (last week's incident does not make today's look normal), and the MAD measures
the ordinary day-to-day swing the same robust way (1.4826 x MAD is the standard deviation of
normal noise). A high percentile of 28 days is set by the two or three busiest days, so it
would either flag every ordinary peak or need months of history to settle.

Which days: the covered days (days the history holds whole) of the `window` before today, on
or after the subject's first day of use (a key created last week is not measured against the
weeks before it existed), chosen by `seasonality`: the same weekday as today when there are
`min_days` of them, else today's group (weekdays, or Saturday and Sunday), else every day;
fewer than `min_days` and the subject has no baseline (it is not judged). A covered day
without a row is a day of $0, counted as such without being written out: the order
statistics are taken over the sorted observed values merged with that many zeros, so the
work grows with the rows there are, not with subjects x days. Pure (polars).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from costwatch.config.detect import Seasonality

BASES = ("same weekday", "weekday/weekend", "all days")
MAD_TO_SIGMA = 1.4826  # 1 / the normal distribution's third quartile: MAD -> sigma
_FLAGS = ("_same_weekday", "_same_group", "_any")
_SEASONS: dict[Seasonality, tuple[int, ...]] = {
    "auto": (0, 1, 2),
    "same_weekday": (0,),
    "weekday_weekend": (1,),
    "none": (2,),
}


@dataclass(frozen=True)
class Window:
    """Which past days make a baseline (see the module docstring)."""

    days: int
    min_days: int
    seasonality: Seasonality = "auto"


@dataclass(frozen=True)
class Days:
    """The day judged, the days the history holds whole, and the window of its baseline."""

    today: date
    covered: tuple[date, ...]
    window: Window

    @classmethod
    def of(cls, today: date, covered: Iterable[date], window: Window) -> Days:
        return cls(today, tuple(sorted(set(covered))), window)


def stats(
    observations: pl.DataFrame,
    subject: Sequence[str],
    days: Days,
    *,
    values: Sequence[str] = ("value",),
    firsts: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Per subject with a row `today`: the `subject` columns, `first_seen`, `basis` (a name of
    BASES, null without a baseline), `baseline_days`, and for each column `v` of `values`:
    `v` (today's), `v:normal` (median) and `v:spread` (1.4826 x MAD), null without a
    baseline. `metric(result, subject, v)` names them value, normal, spread.

    `observations` has the `subject` columns, `day` and `values` (>= 0), one row per subject
    and day, for today and days before it (earlier than the window too: they date first use).
    `firsts` (the `subject` columns, `first_seen`) dates first use instead, when the
    observations do not show every day of use. One group_by reads the observations once.
    """
    keys, today, window = list(subject), days.today, days.window
    calendar = _calendar(today, days.covered, window.days)
    options = _SEASONS[window.seasonality]
    day = pl.col("day")
    held = day.is_in(calendar.get_column("day").implode())
    flags = {
        0: held & (day.dt.weekday() == today.isoweekday()),
        1: held & ((day.dt.weekday() >= 6) == (today.weekday() >= 5)),
        2: held,
    }
    lists = [
        pl.col(v).filter(pl.col(f"_in{i}")).sort().alias(f"_{v}:{i}")
        for v in values
        for i in options
    ]
    is_today = pl.col("_is_today")
    grouped = (
        observations.lazy()
        .filter(day <= today)
        .with_columns(
            (day == today).alias("_is_today"), *(flags[i].alias(f"_in{i}") for i in options)
        )
        .group_by(keys)
        .agg(
            is_today.any().alias("_today"),
            *(pl.col(v).filter(is_today).sum() for v in values),
            *([] if firsts is not None else [day.min().alias("first_seen")]),
            *lists,
        )
        .filter(pl.col("_today"))
        .collect()
    )
    if firsts is not None:
        grouped = grouped.join(firsts, on=keys, how="left")
    counted = grouped.sort("first_seen").join_asof(
        calendar.select("day", *(f"_n{flag}" for flag in _FLAGS)),
        left_on="first_seen",
        right_on="day",
        strategy="forward",
    )
    chosen = counted.with_columns(_basis(window).alias("_basis")).with_columns(
        pl.coalesce(
            *(pl.when(pl.col("_basis") == i).then(pl.col(f"_n{f}")) for i, f in enumerate(_FLAGS)),
            pl.lit(0, dtype=pl.UInt32),
        )
        .cast(pl.Int64)
        .alias("_n")
    )
    for v in values:
        chosen = _order_statistics(chosen, v, options)
    return chosen.select(
        *keys,
        "first_seen",
        pl.col("_basis").replace_strict(dict(enumerate(BASES)), default=None).alias("basis"),
        pl.col("_n").alias("baseline_days"),
        *(pl.col(f"{v}{part}") for v in values for part in ("", ":normal", ":spread")),
    )


def metric(result: pl.DataFrame, subject: Sequence[str], value: str) -> pl.DataFrame:
    """One value's columns of `stats` as value, normal and spread, beside the rest."""
    return result.select(
        *subject,
        "first_seen",
        "basis",
        "baseline_days",
        pl.col(value).alias("value"),
        pl.col(f"{value}:normal").alias("normal"),
        pl.col(f"{value}:spread").alias("spread"),
    )


def run_start(
    observations: pl.DataFrame,
    levels: pl.DataFrame,
    subject: Sequence[str],
    days: Days,
    *,
    value: str = "value",
) -> pl.DataFrame:
    """`subject` columns and `since`: the first day of the unbroken run of covered days up to
    today whose `value` reached the subject's `level` (a column of `levels`); today when the
    day before did not (or is not covered). Looks back at most the window's days."""
    keys, today = list(subject), days.today
    calendar = _calendar(today, days.covered, days.window.days).select("day")
    above = (
        observations.join(calendar, on="day", how="semi")
        .join(levels.select(*keys, "level"), on=keys, how="inner")
        .filter(pl.col(value) >= pl.col("level"))
        .with_columns((pl.lit(today) - pl.col("day")).dt.total_days().alias("_back"))
        .group_by(keys)
        .agg((pl.col("_back").sort() == pl.int_range(1, pl.len() + 1)).sum().alias("_run"))
    )
    return (
        levels.select(keys)
        .join(above, on=keys, how="left")
        .select(
            *keys,
            (pl.lit(today) - pl.duration(days=pl.col("_run").fill_null(0))).alias("since"),
        )
    )


def _calendar(today: date, covered: Iterable[date], days: int) -> pl.DataFrame:
    """The covered days of the window, oldest first, each with its basis flags and, per flag,
    how many flagged days fall on or after it (`_n<flag>`)."""
    window = sorted({d for d in covered if timedelta(0) < today - d <= timedelta(days=days)})
    weekend = today.weekday() >= 5
    frame = pl.DataFrame({"day": window}, schema={"day": pl.Date()}).with_columns(
        (pl.col("day").dt.weekday() == today.isoweekday()).alias("_same_weekday"),
        ((pl.col("day").dt.weekday() >= 6) == weekend).alias("_same_group"),
        pl.lit(value=True).alias("_any"),
    )
    return frame.with_columns(
        pl.col(flag).cast(pl.UInt32).cum_sum(reverse=True).alias(f"_n{flag}") for flag in _FLAGS
    )


def _basis(window: Window) -> pl.Expr:
    """The index in BASES of the first basis `seasonality` allows with `min_days` days."""
    options = _SEASONS[window.seasonality]
    enough = [pl.col(f"_n{_FLAGS[i]}").fill_null(0) >= window.min_days for i in options]
    return pl.coalesce(
        *(pl.when(ok).then(pl.lit(i, dtype=pl.Int8)) for i, ok in zip(options, enough, strict=True))
    )


def _order_statistics(chosen: pl.DataFrame, value: str, options: tuple[int, ...]) -> pl.DataFrame:
    """`chosen` with `value:normal` (median) and `value:spread` (1.4826 x MAD) of each
    subject's baseline: its observed values on the chosen basis's days (`_value:i`, sorted)
    and, for the rest of its `_n` days, zeros. The deviations of those zeros from the median
    are the median itself; they are merged into the deviations' order the same way."""
    listed = pl.coalesce(
        *(pl.when(pl.col("_basis") == i).then(pl.col(f"_{value}:{i}")) for i in options)
    )
    normal, deviations = pl.col(f"{value}:normal"), pl.col("_devs")
    with_median = chosen.with_columns(listed.alias("_values")).with_columns(
        (pl.col("_n") - pl.col("_values").list.len().fill_null(0)).alias("_zeros")
    )
    with_median = with_median.with_columns(
        _median("_values", fill=pl.lit(0.0), below=pl.lit(0)).alias(normal.meta.output_name())
    ).with_columns((pl.col("_values") - normal).list.eval(pl.element().abs().sort()).alias("_devs"))
    below = (deviations - normal).list.eval((pl.element() < 0).cast(pl.UInt32)).list.sum()
    return with_median.with_columns(below.fill_null(0).alias("_below")).with_columns(
        (_median("_devs", fill=normal, below=pl.col("_below")) * MAD_TO_SIGMA).alias(
            f"{value}:spread"
        )
    )


def _median(values: str, *, fill: pl.Expr, below: pl.Expr) -> pl.Expr:
    """The median of the sorted list `values` merged with `_zeros` copies of `fill` (`below`
    of the list's elements are smaller than `fill`); null for none at all (`_n` is 0)."""
    n = pl.col("_n")
    low = _kth(values, (n - 1) // 2, fill, below)
    high = _kth(values, n // 2, fill, below)
    return pl.when(n > 0).then(low / 2 + high / 2)


def _kth(values: str, k: pl.Expr, fill: pl.Expr, below: pl.Expr) -> pl.Expr:
    """The k-th smallest (from 0) of the merge of a sorted list and `_zeros` copies of `fill`."""
    zeros = pl.col("_zeros")
    listed = pl.col(values)
    return (
        pl.when(k < below)
        .then(listed.list.get(k, null_on_oob=True))
        .when(k < below + zeros)
        .then(fill)
        .otherwise(listed.list.get(k - zeros, null_on_oob=True))
    )
