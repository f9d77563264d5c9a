"""The one-screen summary `costwatch validate` prints for a good configuration file."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from costwatch.budgets import Unevaluated
from costwatch.config import (
    Budget,
    Config,
    Defaults,
    ForecastConfig,
    LangdockConfig,
    Limits,
    SlackConfig,
    Threshold,
)
from costwatch.config.durations import format_duration
from costwatch.selection import matched_keys


def summarize(
    config: Config,
    known_keys: Sequence[tuple[str, str]] | None = None,
    *,
    now: datetime | None = None,
    unevaluated: Sequence[Unevaluated] = (),
) -> str:
    """The one-screen description of a valid configuration; never shows a secret.

    With `known_keys` ((api_key_id, api_key_name) pairs) each budget says how many it matches.
    Warnings end it: with `now`, silences that have expired (they are ignored); the limits of
    `unevaluated` (what a saved export cannot evaluate, e.g. tokens without token columns).
    """
    schedule, slack = config.schedule, config.slack
    trigger = (
        f"every {format_duration(schedule.every)}" if schedule.every else f"cron '{schedule.cron}'"
    )
    lines = [
        *_describe_workspaces(config),
        f"schedule  {trigger}, time zone {schedule.timezone}",
        f"state     {config.state.where()}",
        f"slack     {_describe_slack(slack)}",
        f"metrics   {config.metrics.listen} (at most {config.metrics.max_series} series)",
        f"defaults  {_describe_defaults(config.defaults)}",
        f"budgets   {len(config.budgets)}",
    ]
    matched = matched_keys(config.budgets, known_keys) if known_keys is not None else None
    for index, budget in enumerate(config.budgets):
        lines.append(f"  {budget.name}: {_describe_budget(config, budget)}")
        if known_keys is not None and matched is not None:
            lines.append(f"    matches {len(matched[index])} of {len(known_keys)} keys")
    if known_keys is not None and matched is not None:
        covered = {key for keys in matched for key in keys}
        lines.append(
            f"keys      {len(known_keys) - len(covered)} of {len(known_keys)} in no budget"
        )
    for silence in config.silences:
        what = ", ".join(
            f"{k} {v}" for k, v in (("budget", silence.budget), ("keys", silence.keys)) if v
        )
        lines.append(f"silence   {what} until {silence.until.isoformat()}: {silence.reason}")
    for report in config.reports:
        where = report.channel or (slack.channel if slack and slack.channel else "the webhook")
        zone = report.timezone or schedule.timezone
        lines.append(
            f"report    {report.name}: every {report.every}, due {report.at} ({zone}) after it,"
            f" top {report.top}, to {where}"
        )
    lines += [f"warning   {warning}" for warning in _warnings(config, now, unevaluated)]
    return "\n".join(lines)


def _warnings(
    config: Config, now: datetime | None, unevaluated: Sequence[Unevaluated]
) -> list[str]:
    warnings = [
        f"silences[{index}] ended {silence.until.isoformat()} and is ignored:"
        f" remove it ({silence.reason})"
        for index, silence in enumerate(config.silences)
        if now is not None and silence.until <= now
    ]
    return warnings + [item.describe() for item in unevaluated]


def _describe_workspaces(config: Config) -> list[str]:
    if config.langdock is not None:
        return [f"langdock  {_describe_connection(config.langdock)}"]
    lines = [f"workspaces {len(config.workspaces)}"]
    width = max(len(item.name) for item in config.workspaces)
    for item in config.workspaces:
        channel = f"; default channel {item.channel}" if item.channel else ""
        owned = f"; {len(item.budgets)} own budget{'s' if len(item.budgets) != 1 else ''}"
        lines.append(f"  {item.name:<{width}}  {_describe_connection(item)}{owned}{channel}")
    return lines


def _describe_connection(langdock: LangdockConfig) -> str:
    source = f"read from {langdock.api_key_file}" if langdock.api_key_file else "given inline"
    return f"{langdock.base_url} (API key {source})"


def _describe_slack(slack: SlackConfig | None) -> str:
    if slack is None:
        return "off (no alerts are sent)"
    if slack.mode == "webhook":
        return "incoming webhook"
    return f"bot token, default channel {slack.channel}, API {slack.api_url}"


def _describe_defaults(defaults: Defaults) -> str:
    return f"period {defaults.period}, {_describe_thresholds(defaults.thresholds)}, " + (
        _describe_forecast(defaults.forecast)
    )


def _describe_thresholds(thresholds: Sequence[Threshold]) -> str:
    return "thresholds " + "/".join(f"{threshold.at:g}" for threshold in thresholds) + "%"


def _describe_forecast(forecast: ForecastConfig) -> str:
    if not forecast.enabled:
        return "forecast off"
    how = "linear" if forecast.method == "linear" else f"{forecast.method}, {forecast.window} days"
    return (
        f"forecast ({how}) once {forecast.min_elapsed:.0%} of the period has passed"
        f" and ${forecast.min_spend_usd:,.2f} is spent"
    )


def _describe_limits(limits: Limits) -> str:
    units = {"cost_usd": "${:,.2f}", "requests": "{:,.0f} requests", "tokens": "{:,.0f} tokens"}
    return ", ".join(units[metric].format(limit) for metric, limit in limits.items())


def _describe_budget(config: Config, budget: Budget) -> str:
    parts = [
        f"{'shared pool' if budget.scope == 'shared' else 'per key'}"
        + (" (fallback)" if budget.fallback else ""),
        "keys " + ", ".join(budget.keys) + ("".join(f" -{x}" for x in budget.exclude)),
        f"{budget.effective_period(config.defaults)} in "
        + budget.effective_timezone(config.schedule),
        _describe_limits(budget.limits),
        *(f"{model}: {_describe_limits(limits)}" for model, limits in budget.models.items()),
        _describe_thresholds(budget.effective_thresholds(config.defaults)),
    ]
    if config.workspaces:
        reads = budget.workspaces
        parts.append(
            "all workspaces (an organisation total)"
            if reads is None
            else f"workspace{'s' if len(reads) > 1 else ''} {', '.join(reads)}"
        )
    channel = budget.channel or (config.slack.channel if config.slack else None)
    if channel:
        parts.append(f"to {channel}")
    return "; ".join(parts)
