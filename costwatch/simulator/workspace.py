"""The simulator's synthetic Langdock workspace: deterministic keys, models and usage.

Usage is an integral, not a table. Each key x model pair spends at a rate in USD per hour
(`hourly_cost_usd` x `growth` x the key's scale x the model's price ratio), shaped over the UTC
day by a fixed daily profile, and only on the UTC days its activity mask marks (a bit mask over a
364-day cycle drawn from the seed; pairs are active on 0 to 100 % of days, 50 % on average).

`A(t)`, the profile-weighted active time of a pair up to the instant `t`, is computed with
integer arithmetic and popcounts, never hour by hour. Every counter of a pair (micro-USD,
requests, tokens) is `floor(rate x (A(t) - A(created)))`, so usage over [a, b) is
`counter(b) - counter(a)`: exactly additive over adjacent ranges, and cheap enough for 2,000
keys x 50 models over a month.

Late usage (`late_share`, `late_by`): a share of every pair's usage is reported `late_by` after
it happened, as a real platform's usage keeps arriving for a while. An export seen at `seen_at`
(the simulator's now) lacks that share of the usage in [seen_at - late_by, seen_at): a day
exported right after its midnight falls short of the same day exported once it has settled
(`late_by` after its midnight), which is then exactly the usage that happened. Without
`seen_at`, usage is the settled truth.

Tokens, for BYOK workspaces: `sum_prompt_tokens = cached_prompt_tokens + no_cache_tokens`, and
`cache_creation_tokens` is the part of `no_cache_tokens` that was written to the cache.
"""

from __future__ import annotations

import csv
import io
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import accumulate

__all__ = ["UsageRow", "Workspace", "export_csv"]

CYCLE_DAYS = 364
_US_PER_HOUR = 3_600_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Relative spend per UTC hour; 100 is an average hour (the 24 weights sum to 2,400).
_PROFILE: tuple[int, ...] = (30, 25, 20, 20, 25, 40, 70, 120, 160, 180, 190, 180)
_PROFILE += (165, 165, 180, 175, 150, 130, 100, 80, 70, 50, 40, 35)
_PREFIX = tuple(accumulate(_PROFILE, initial=0))
_DAY_WEIGHT = _PREFIX[-1] * _US_PER_HOUR
_RATE_SCALE = 1_000_000  # rates are stored as integers: units per weighted hour x this
_DIVISOR = 100 * _US_PER_HOUR * _RATE_SCALE
# Share of days a pair is active, with its weight: a fair mix of idle, rare and daily pairs.
_ACTIVITY = (0.0, 0.25, 0.5, 0.75, 1.0)
_ACTIVITY_WEIGHTS = (10, 25, 30, 25, 10)
_KEY_SPREAD = 50.0  # the biggest key spends this many times the smallest
_BYOK_COLUMNS = (
    "sum_prompt_tokens",
    "sum_completion_tokens",
    "cached_prompt_tokens",
    "cache_creation_tokens",
    "no_cache_tokens",
)
# Real-world names first: a Slack mention attempt, non-ASCII, a comma and a double quote.
KEY_NAMES = (
    "support-bot-prod",
    "<!channel> *urgent*",
    "Zürich-Ops",
    "Billing, EU",
    'The "Quoted" Bot',
    "data-pipeline",
    "sales-assistant",
    "hr-chatbot",
    "dev-sandbox",
    "eval-harness",
    "docs-search",
    "legal-review",
)


@dataclass(frozen=True)
class UsageRow:
    """Usage of one API key (and model, or "" for all models) over a range."""

    api_key_id: str
    api_key_name: str
    model: str
    requests: int
    total_cost_usd: float
    sum_prompt_tokens: int = 0
    sum_completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cache_creation_tokens: int = 0
    no_cache_tokens: int = 0


@dataclass(frozen=True)
class Workspace:
    """Deterministic synthetic workspace."""

    keys: int = 12
    models: tuple[str, ...] = (
        "gpt-4o",
        "gpt-4o-mini",
        "claude-sonnet-4",
        "mistral-large",
        "o3-mini",
    )
    seed: int = 7
    byok: bool = False
    created: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    model_column: str = "model"
    hourly_cost_usd: float = 0.05
    growth: float = 1.0
    late_share: float = 0.0  # share of usage reported `late_by` after it happened
    late_by: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.keys < 0 or not self.models or len(set(self.models)) != len(self.models):
            raise ValueError("keys must be >= 0 and models a non-empty tuple of distinct names")
        if self.created.tzinfo is None:
            raise ValueError("created must be an aware datetime")
        if self.hourly_cost_usd < 0 or self.growth < 0 or not self.model_column:
            raise ValueError("hourly_cost_usd and growth must be >= 0, model_column non-empty")
        if not 0.0 <= self.late_share <= 1.0 or self.late_by < timedelta(0):
            raise ValueError("late_share must be within 0..1 and late_by not negative")

    def key_ids(self) -> list[tuple[str, str]]:
        """(api_key_id, api_key_name) of every key, in a fixed order."""
        return list(_build(self).keys)

    def org_id(self) -> str:
        """The workspace id (the CSV's org_id column)."""
        return _build(self).org_id

    def usage(
        self,
        start: datetime,
        end: datetime,
        *,
        by_model: bool = True,
        seen_at: datetime | None = None,
    ) -> list[UsageRow]:
        """Usage over [start, end) (aware instants), one row per key x model with usage.

        With `by_model=False`, one row per key with usage, summed over models (`model` "").
        Nothing is used before `created`; the caller clamps `end` to its notion of now.
        `seen_at`: usage as reported at that instant, the late share of the last `late_by`
        not yet in it (see the module docstring); None: all of it, settled.
        """
        lo = max(_micros(start), _micros(self.created))
        hi = _micros(end)
        if hi <= lo:
            return []
        built = _build(self)
        tallies = _tally(built, lo, hi)
        if seen_at is not None and self.late_share and self.late_by:
            pending = max(lo, _micros(seen_at - self.late_by))
            if pending < hi:
                share = round(self.late_share * 1_000_000)
                tallies = _unreported(tallies, _tally(built, pending, hi), share)
        if not by_model:
            tallies = _sum_by_key(tallies)
        return [_row(built, self.models, tally) for tally in tallies]


def export_csv(
    workspace: Workspace, rows: list[UsageRow], period: tuple[str, str], *, grouped: bool
) -> bytes:
    """The export file: documented columns (+ the model column, + BYOK tokens), CRLF lines."""
    head = ["period_start", "period_end", "org_id", "api_key_id", "api_key_name"]
    head += [workspace.model_column] if grouped else []
    head += ["requests", "total_cost_usd", *(_BYOK_COLUMNS if workspace.byok else ())]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(head)
    org = workspace.org_id()
    for row in rows:
        line: list[object] = [*period, org, row.api_key_id, row.api_key_name]
        line += [row.model] if grouped else []
        line += [row.requests, f"{row.total_cost_usd:.6f}"]
        line += [getattr(row, name) for name in _BYOK_COLUMNS] if workspace.byok else []
        writer.writerow(line)
    return out.getvalue().encode()


@dataclass(frozen=True)
class _Pair:
    key: int
    model: int
    mask: int  # bit d set: active on UTC day d (mod CYCLE_DAYS) since 1970-01-01
    ones: int  # mask.bit_count()
    origin: int  # A(created)
    rates: tuple[int, ...]  # micro-USD, requests[, completion, cached, creation, uncached]


@dataclass(frozen=True)
class _Built:
    org_id: str
    keys: tuple[tuple[str, str], ...]
    pairs: tuple[_Pair, ...]


@dataclass(frozen=True)
class _ModelTraits:
    price_ratio: float
    usd_per_request: float
    prompt_per_request: float
    completion_per_request: float
    cached_share: float
    creation_share: float


# (key index, model index or -1, counters in _Pair.rates order)
_Tally = tuple[int, int, tuple[int, ...]]


@lru_cache(maxsize=16)
def _build(ws: Workspace) -> _Built:
    org = uuid.UUID(int=_rng(ws.seed, "org").getrandbits(128), version=4)
    traits = [_model_traits(ws.seed, name) for name in ws.models]
    keys: list[tuple[str, str]] = []
    pairs: list[_Pair] = []
    origin_point = _Point(_micros(ws.created))
    for k in range(ws.keys):
        rng = _rng(ws.seed, "key", k)
        key_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        keys.append((key_id, KEY_NAMES[k] if k < len(KEY_NAMES) else f"service-{k:04d}"))
        hourly = ws.hourly_cost_usd * ws.growth * _key_scale(k, rng)
        for m, trait in enumerate(traits):
            mask = _activity_mask(rng)
            origin = origin_point.weighted(mask, mask.bit_count())
            rates = _rates(hourly * trait.price_ratio, trait, ws.byok)
            pairs.append(_Pair(k, m, mask, mask.bit_count(), origin, rates))
    return _Built(str(org), tuple(keys), tuple(pairs))


def _rng(seed: int, *parts: object) -> random.Random:
    """A generator of its own per seed and part: adding keys or models changes no other data."""
    return random.Random(":".join(map(str, (seed, *parts))))  # noqa: S311 (synthetic data)


def _key_scale(index: int, rng: random.Random) -> float:
    """Spend multiplier of a key: log-uniform over a 50x spread; key 0 the top, key 1 the bottom."""
    draw = rng.random()  # drawn for every key, so each key's stream stays aligned
    position = {0: 1.0, 1: 0.0}.get(index, draw)
    return float(0.1 * _KEY_SPREAD**position)


def _model_traits(seed: int, name: str) -> _ModelTraits:
    rng = _rng(seed, "model", name)
    ratio = 0.1 * 30 ** rng.random()
    return _ModelTraits(
        price_ratio=ratio,
        usd_per_request=0.004 * ratio * rng.uniform(0.7, 1.4),
        prompt_per_request=rng.uniform(600, 3000),
        completion_per_request=rng.uniform(100, 800),
        cached_share=rng.uniform(0.0, 0.5),
        creation_share=rng.uniform(0.0, 0.1),
    )


def _activity_mask(rng: random.Random) -> int:
    share = rng.choices(_ACTIVITY, _ACTIVITY_WEIGHTS)[0]
    a, b = rng.getrandbits(CYCLE_DAYS), rng.getrandbits(CYCLE_DAYS)
    full = (1 << CYCLE_DAYS) - 1
    return {0.0: 0, 0.25: a & b, 0.5: a, 0.75: a | b, 1.0: full}[share]


def _rates(usd_per_hour: float, trait: _ModelTraits, byok: bool) -> tuple[int, ...]:
    requests = usd_per_hour / trait.usd_per_request
    per_hour = [usd_per_hour * 1e6, requests]
    if byok:
        prompt = requests * trait.prompt_per_request
        cached, creation = prompt * trait.cached_share, prompt * trait.creation_share
        uncached = prompt - cached - creation
        per_hour += [requests * trait.completion_per_request, cached, creation, uncached]
    return tuple(round(value * _RATE_SCALE) for value in per_hour)


class _Point:
    """An instant split into what A(t) needs: cycle count, day in cycle, weight into the day."""

    def __init__(self, micros: int) -> None:
        day, into_day = divmod(micros, 24 * _US_PER_HOUR)
        self.cycles, self.day = divmod(day, CYCLE_DAYS)
        self.below = (1 << self.day) - 1
        hour, rest = divmod(into_day, _US_PER_HOUR)
        self.partial = _PREFIX[hour] * _US_PER_HOUR + _PROFILE[hour] * rest

    def weighted(self, mask: int, ones: int) -> int:
        """A(t): profile-weighted active microseconds from 1970 to this instant."""
        days = self.cycles * ones + (mask & self.below).bit_count()
        return days * _DAY_WEIGHT + ((mask >> self.day) & 1) * self.partial


def _tally(built: _Built, lo: int, hi: int) -> list[_Tally]:
    start, end = _Point(lo), _Point(hi)
    out: list[_Tally] = []
    for pair in built.pairs:
        a = start.weighted(pair.mask, pair.ones) - pair.origin
        b = end.weighted(pair.mask, pair.ones) - pair.origin
        if b == a:
            continue
        counts = tuple(b * r // _DIVISOR - a * r // _DIVISOR for r in pair.rates)
        if any(counts):
            out.append((pair.key, pair.model, counts))
    return out


def _unreported(full: list[_Tally], recent: list[_Tally], share_ppm: int) -> list[_Tally]:
    """`full` less `share_ppm` millionths of `recent` (its tail, not yet reported), pair by pair;
    pairs left with nothing are dropped."""
    late = {
        (key, model): tuple(count * share_ppm // 1_000_000 for count in counts)
        for key, model, counts in recent
    }
    out: list[_Tally] = []
    for key, model, counts in full:
        missing = late.get((key, model), (0,) * len(counts))
        reported = tuple(c - m for c, m in zip(counts, missing, strict=True))
        if any(reported):
            out.append((key, model, reported))
    return out


def _sum_by_key(tallies: list[_Tally]) -> list[_Tally]:
    sums: dict[int, tuple[int, ...]] = {}
    for key, _model, counts in tallies:
        prior = sums.get(key)
        sums[key] = counts if prior is None else tuple(map(sum, zip(prior, counts, strict=True)))
    return [(key, -1, counts) for key, counts in sums.items()]


def _row(built: _Built, models: tuple[str, ...], tally: _Tally) -> UsageRow:
    key, model, counts = tally
    key_id, key_name = built.keys[key]
    micro_usd, requests, *tokens = counts
    completion, cached, creation, uncached = tokens or (0, 0, 0, 0)
    return UsageRow(
        api_key_id=key_id,
        api_key_name=key_name,
        model=models[model] if model >= 0 else "",
        requests=requests,
        total_cost_usd=micro_usd / 1e6,
        sum_prompt_tokens=cached + creation + uncached,
        sum_completion_tokens=completion,
        cached_prompt_tokens=cached,
        cache_creation_tokens=creation,
        no_cache_tokens=creation + uncached,
    )


def _micros(instant: datetime) -> int:
    if instant.tzinfo is None:
        raise ValueError("usage ranges take aware datetimes")
    return (instant - _EPOCH) // timedelta(microseconds=1)
