"""costwatch.config: the YAML file parsed once into frozen models, every problem at once.

The corpus INVALID pairs a file with the exact problems `costwatch validate` prints for it,
path and line included; the other tests each name the behaviour they prove.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from costwatch.config import (
    Budget,
    Config,
    Defaults,
    ForecastConfig,
    Threshold,
    load_config,
    parse_config,
    severity_for,
)
from costwatch.config.durations import format_duration, normalize_cron, parse_duration
from costwatch.config.summary import summarize
from costwatch.config.types import SECRET_FILE_MAX_BYTES
from costwatch.errors import ConfigError
from costwatch.globs import key_matches

SECRET = "sk-SECRET-123"
SLACK_SECRET = "xoxb-SECRET-456"
ENV = {"LANGDOCK_API_KEY": SECRET, "SLACK_BOT_TOKEN": SLACK_SECRET}
CORPUS_ENV = {"LANGDOCK_API_KEY": SECRET}  # SLACK_BOT_TOKEN stays unset
EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
L = "langdock:\n  api_key: ${LANGDOCK_API_KEY}\n"  # lines 1-2 of most cases
B = "budgets:\n  - name: a\n    keys: '*'\n"  # lines 3-5 of the budget cases
MINIMAL = L + B + "    limits: {cost_usd: 100}\n"


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    """The problems parse_config reports for `text`, as `costwatch validate` prints them."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env=CORPUS_ENV if env is None else env)
    return [str(problem) for problem in caught.value.problems]


def parse(text: str, **kwargs: object) -> Config:
    env = kwargs.pop("env", ENV)
    assert isinstance(env, dict)
    base_dir = kwargs.pop("base_dir", None)
    assert base_dir is None or isinstance(base_dir, Path)
    return parse_config(text, env=env, base_dir=base_dir)


INVALID = [
    pytest.param(
        L + "budgets: [\n",
        [
            "(file) (line 4): YAML syntax error: while parsing a flow node, expected the "
            "node content, but found '<stream end>' (column 1)",
        ],
        id="yaml-syntax-unclosed-flow",
    ),
    pytest.param(
        "langdock:\n\tapi_key: x\n",
        [
            "(file) (line 2): YAML syntax error: while scanning for the next token, found "
            "character '\\t' that cannot start any token (column 1)",
        ],
        id="yaml-tab-indent",
    ),
    pytest.param(
        L + "---\nbudgets: []\n",
        [
            "(file) (line 3): YAML syntax error: expected a single document in the stream, "
            "but found another document (column 1)",
        ],
        id="yaml-two-documents",
    ),
    pytest.param(
        "",
        [
            "(file): the file is empty: it needs at least a 'langdock' section (or 'workspaces')",
        ],
        id="empty-file",
    ),
    pytest.param(
        "# costwatch\n# nothing here yet\n",
        [
            "(file): the file is empty: it needs at least a 'langdock' section (or 'workspaces')",
        ],
        id="only-comments",
    ),
    pytest.param(
        "- langdock\n- budgets\n",
        [
            "(file) (line 1): the top level must be a mapping of sections (langdock, budgets, ...)",
        ],
        id="top-level-list",
    ),
    pytest.param(
        "costwatch\n",
        [
            "(file) (line 1): the top level must be a mapping of sections (langdock, budgets, ...)",
        ],
        id="top-level-scalar",
    ),
    pytest.param(
        "budgets: []\n",
        [
            "langdock: is required (or workspaces: a list of Langdock workspaces)",
        ],
        id="missing-langdock",
    ),
    pytest.param(
        L + "budgets: []\nbudgets: []\n",
        [
            "budgets (line 4): duplicate key 'budgets' (first at line 3)",
        ],
        id="duplicate-yaml-key",
    ),
    pytest.param(
        L + B + "    limits: {cost_usd: 1}\n    keys: b\n",
        [
            "budgets[0].keys (line 7): duplicate key 'keys' (first at line 5)",
        ],
        id="duplicate-yaml-key-in-budget",
    ),
    pytest.param(
        L + "budgets:\n  - {name: a, keys: '*', limits: {cost_usd: 1}}\n  - {name: b, keys: '*', "
        "limits: {cost_usd: 1}}\n  - {name: a, keys: x, limits: {cost_usd: 2}}\n",
        [
            "budgets[2].name (line 6): duplicate budget name 'a' (also budgets[0], line 4)",
        ],
        id="duplicate-budget-names",
    ),
    pytest.param(
        L + "budget: []\n",
        [
            "budget (line 3): unknown key 'budget' (did you mean 'budgets'?)",
        ],
        id="unknown-top-level-key",
    ),
    pytest.param(
        "langdock:\n  api_key: x\n  timeout: 5\n",
        [
            "langdock.timeout (line 3): unknown key 'timeout' (did you mean 'timeout_seconds'?)",
        ],
        id="unknown-key-langdock",
    ),
    pytest.param(
        L + "schedule:\n  evry: 15m\n",
        [
            "schedule.evry (line 4): unknown key 'evry' (did you mean 'every'?)",
        ],
        id="unknown-key-schedule",
    ),
    pytest.param(
        L + "state:\n  file: x.db\n",
        [
            "state.file (line 4): unknown key 'file' (did you mean 'url_file'?)",
        ],
        id="unknown-key-state",
    ),
    pytest.param(
        L + "slack:\n  token: t\n  chanel: '#a'\n",
        [
            "slack.chanel (line 5): unknown key 'chanel' (did you mean 'channel'?)",
        ],
        id="unknown-key-slack",
    ),
    pytest.param(
        L + "metrics:\n  port: 9108\n",
        [
            "metrics.port (line 4): unknown key 'port' (known keys: listen, max_series,"
            " basic_auth_user, basic_auth_password, basic_auth_password_file, tls_cert_file,"
            " tls_key_file)",
        ],
        id="unknown-key-metrics",
    ),
    pytest.param(
        L + "defaults:\n  periods: day\n",
        [
            "defaults.periods (line 4): unknown key 'periods' (did you mean 'period'?)",
        ],
        id="unknown-key-defaults",
    ),
    pytest.param(
        L + B + "    limts: {cost_usd: 1}\n",
        [
            "budgets[0].limits (line 4): is required",
            "budgets[0].limts (line 6): unknown key 'limts' (did you mean 'limits'?)",
        ],
        id="unknown-key-budget",
    ),
    pytest.param(
        L + B + "    limits: {cost: 1}\n",
        [
            "budgets[0].limits.cost (line 6): unknown key 'cost' (did you mean 'cost_usd'?)",
        ],
        id="unknown-key-limits",
    ),
    pytest.param(
        L + B + "    limits: {cost_usd: 2}\n    models: {gpt-4o: {request: 5}}\n",
        [
            "budgets[0].models.gpt-4o.request (line 7): unknown key 'request' (did you mean "
            "'requests'?)",
        ],
        id="unknown-key-model-limits",
    ),
    pytest.param(
        L + "defaults:\n  thresholds: [{at: 80, sevrity: info}]\n",
        [
            "defaults.thresholds[0].sevrity (line 4): unknown key 'sevrity' (did you mean "
            "'severity'?)",
        ],
        id="unknown-key-threshold",
    ),
    pytest.param(
        L + "defaults:\n  forecast: {min_elapse: 10%}\n",
        [
            "defaults.forecast.min_elapse (line 4): unknown key 'min_elapse' (did you mean "
            "'min_elapsed'?)",
        ],
        id="unknown-key-forecast",
    ),
    pytest.param(
        L + "silences:\n  - {budget: a, until: 2030-01-01T00:00:00Z, reason: r, untill: 1}\n",
        [
            "silences[0].untill (line 4): unknown key 'untill' (did you mean 'until'?)",
        ],
        id="unknown-key-silence",
    ),
    pytest.param(
        L + "zzz: 1\n",
        [
            "zzz (line 3): unknown key 'zzz' (known keys: langdock, workspaces, schedule, state, "
            "history, slack, metrics, defaults, budgets, silences, anomalies, unit_cost, "
            "unowned, owners, reports)",
        ],
        id="unknown-key-no-close-match",
    ),
    pytest.param(
        "langdock:\n  api_key: x\n  timeout_seconds: soon\n",
        [
            "langdock.timeout_seconds (line 3): must be a number",
        ],
        id="wrong-type-number",
    ),
    pytest.param(
        "langdock:\n  api_key: x\n  max_attempts: 2.5\n",
        [
            "langdock.max_attempts (line 3): must be a whole number",
        ],
        id="wrong-type-whole-number",
    ),
    pytest.param(
        "langdock:\n  api_key: x\n  max_download_mb: true\n",
        [
            "langdock.max_download_mb (line 3): must be a number, not true or false",
        ],
        id="wrong-type-bool-as-number",
    ),
    pytest.param(
        "langdock:\n  api_key: x\n  allow_insecure_download: maybe\n",
        [
            "langdock.allow_insecure_download (line 3): must be true or false",
        ],
        id="wrong-type-bool",
    ),
    pytest.param(
        "langdock: https://api.langdock.com\n",
        [
            "langdock (line 1): must be a mapping (key: value)",
        ],
        id="wrong-type-section",
    ),
    pytest.param(
        L + "budgets:\n  name: a\n",
        [
            "budgets (line 3): must be a list",
        ],
        id="wrong-type-budgets-mapping",
    ),
    pytest.param(
        L + B + "    limits: 5\n",
        [
            "budgets[0].limits (line 6): must be a mapping (key: value)",
        ],
        id="wrong-type-limits",
    ),
    pytest.param(
        L + "budgets:\n  - name: a\n    keys: 5\n    limits: {cost_usd: 1}\n",
        [
            "budgets[0].keys (line 5): must be a glob or a list of globs, names or key ids",
        ],
        id="wrong-type-keys",
    ),
    pytest.param(
        L + "budgets:\n  - name: 5\n    keys: '*'\n    limits: {cost_usd: 1}\n",
        [
            "budgets[0].name (line 4): must be a string",
        ],
        id="wrong-type-name",
    ),
    pytest.param(
        L + "budgets:\n  - name: ' '\n    keys: '*'\n    limits: {cost_usd: 1}\n",
        [
            "budgets[0].name (line 4): must not be empty",
        ],
        id="empty-name",
    ),
    pytest.param(
        L + "budgets:\n  - name: a\n    keys: []\n    limits: {cost_usd: 1}\n",
        [
            "budgets[0].keys (line 5): must not be empty",
        ],
        id="empty-keys",
    ),
    pytest.param(
        L + "budgets:\n  - name: a\n    keys: [ok-*, 'bad[']\n    limits: {cost_usd: 1}\n",
        [
            "budgets[0].keys[1] (line 5): bad glob 'bad[': '[' at position 4 is never closed",
        ],
        id="bad-glob-keys",
    ),
    pytest.param(
        L
        + B
        + "    exclude: ['[!x']\n    limits: {cost_usd: 1}\n    models: {'gpt-[4': {cost_usd: "
        "1}}\n",
        [
            "budgets[0].exclude[0] (line 6): bad glob '[!x': '[' at position 1 is never closed",
            "budgets[0].models[\"gpt-[4\"] (line 8): bad glob 'gpt-[4': '[' at position 5 is "
            "never closed",
        ],
        id="bad-glob-exclude-and-model",
    ),
    pytest.param(
        L + "schedule:\n  timezone: Europe/Berln\n",
        [
            "schedule.timezone (line 4): bad time zone 'Europe/Berln' (did you mean "
            "'Europe/Berlin'?)",
        ],
        id="bad-time-zone-schedule",
    ),
    pytest.param(
        L + B + "    limits: {cost_usd: 1}\n    timezone: Mars/Olympus\n",
        [
            "budgets[0].timezone (line 7): bad time zone 'Mars/Olympus'",
        ],
        id="bad-time-zone-budget",
    ),
    pytest.param(
        L + "slack:\n  token: ${SLACK_BOT_TOKEN}\n  channel: '#a'\n",
        [
            "slack.token (line 4): environment variable SLACK_BOT_TOKEN is not set",
        ],
        id="missing-env-var",
    ),
    pytest.param(
        "langdock:\n  api_key: x\n  base_url: https://${HOST}:${PORT}/api\n",
        [
            "langdock.base_url (line 3): environment variables HOST, PORT are not set",
        ],
        id="missing-env-vars-in-one-value",
    ),
    pytest.param(
        "langdock:\n  api_key: x\n  base_url: 'https://${host name}/'\n",
        [
            "langdock.base_url (line 3): bad variable reference: write ${NAME} or "
            "${NAME:-default}, and $$ for a '$'",
        ],
        id="bad-variable-reference",
    ),
    pytest.param(
        L + B + "    limits: {cost_usd: -5, requests: 0, tokens: 1.5}\n",
        [
            "budgets[0].limits.cost_usd (line 6): must be greater than 0",
            "budgets[0].limits.requests (line 6): must be greater than 0",
            "budgets[0].limits.tokens (line 6): must be a whole number",
        ],
        id="negative-and-zero-limits",
    ),
    pytest.param(
        L + B + "    limits: {}\n",
        [
            "budgets[0].limits (line 6): give at least one of cost_usd, requests, tokens",
        ],
        id="no-limit-given",
    ),
    pytest.param(
        L + B + "    limits: {cost_usd: 5}\n    models:\n      gpt-4.1: {}\n",
        [
            'budgets[0].models["gpt-4.1"] (line 8): give at least one of cost_usd, requests, '
            "tokens",
        ],
        id="model-limits-empty",
    ),
    pytest.param(
        L + B + "    limits: {cost_usd: .inf}\n",
        [
            "budgets[0].limits.cost_usd (line 6): must be a finite number",
        ],
        id="limit-not-finite",
    ),
    pytest.param(
        L + "schedule:\n  every: 15m\n  cron: '*/15 * * * *'\n",
        [
            "schedule.cron (line 5): give either every or cron (one of them)",
        ],
        id="every-and-cron",
    ),
    pytest.param(
        L + "schedule:\n  cron: '*/15 * * *'\n",
        [
            "schedule.cron (line 4): must have 5 fields (minute hour day-of-month month "
            "day-of-week), not 4",
        ],
        id="cron-field-count",
    ),
    pytest.param(
        L + "schedule:\n  cron: '0 24 * * *'\n",
        [
            "schedule.cron (line 4): hour field value '24' is not in 0-23",
        ],
        id="cron-value-out-of-range",
    ),
    pytest.param(
        L + "schedule:\n  cron: '0 9 * * MON#2'\n",
        [
            "schedule.cron (line 4): day-of-week field 'MON#2' is not a crontab field",
        ],
        id="cron-characters",
    ),
    pytest.param(
        L + "schedule:\n  every: 15 minutes\n",
        [
            "schedule.every (line 4): must be a duration like '90s', '15m', '24h', '7d' or '1h30m'",
        ],
        id="bad-duration-every",
    ),
    pytest.param(
        L + "schedule:\n  every: 0s\n",
        [
            "schedule.every (line 4): must be a duration greater than 0",
        ],
        id="zero-duration",
    ),
    pytest.param(
        L + B + "    limits: {cost_usd: 1}\n    repeat: 1.5h\n",
        [
            "budgets[0].repeat (line 7): must be a duration like '90s', '15m', '24h', '7d' "
            "or '1h30m'",
        ],
        id="bad-duration-repeat",
    ),
    pytest.param(
        L + "schedule:\n  every: 1:30\n",
        [
            "schedule.every (line 4): must be a duration like '90s', '15m', '24h', '7d' or '1h30m'",
        ],
        id="sexagesimal-is-not-a-duration",
    ),
    pytest.param(
        L + "silences:\n  - budget: a\n    until: 2030-01-01 00:00:00\n    reason: r\n",
        [
            "silences[0].until (line 5): must include a UTC offset, like 2025-07-01T00:00:00+02:00",
        ],
        id="naive-until",
    ),
    pytest.param(
        L + "silences:\n  - keys: a-*\n    until: 2030-01-01\n    reason: r\n",
        [
            "silences[0].until (line 5): must include a UTC offset, like 2025-07-01T00:00:00+02:00",
        ],
        id="until-date-only",
    ),
    pytest.param(
        L + "silences:\n  - keys: a-*\n    until: next week\n    reason: r\n",
        [
            "silences[0].until (line 5): must be an ISO 8601 date and time with a UTC "
            "offset, like 2025-07-01T00:00:00Z",
        ],
        id="until-not-a-date",
    ),
    pytest.param(
        L + "silences:\n  - until: 2030-01-01T00:00:00Z\n    reason: r\n",
        [
            "silences[0].budget (line 4): is required (or keys, or both)",
        ],
        id="silence-without-target",
    ),
    pytest.param(
        L + B + "    limits: {cost_usd: 1}\n    scope: shared\n    fallback: true\n",
        [
            "budgets[0].fallback (line 8): a fallback budget must have scope: key",
        ],
        id="fallback-shared",
    ),
    pytest.param(
        L + B + "    limits: {cost_usd: 1}\n    scope: team\n    period: year\n",
        [
            "budgets[0].scope (line 7): must be one of 'key' or 'shared'",
            "budgets[0].period (line 8): must be one of 'day', 'week', 'month' or 'quarter'",
        ],
        id="bad-scope-and-period",
    ),
    pytest.param(
        L + "slack:\n  token: xoxb-1\n",
        [
            "slack.channel (line 3): is required with a bot token (the default channel)",
        ],
        id="slack-token-without-channel",
    ),
    pytest.param(
        L + "slack:\n  token: xoxb-1\n  channel: '#a'\n  webhook_url: "
        "https://hooks.slack.com/services/x\n",
        [
            "slack.webhook_url (line 6): give a bot token or a webhook_url, not both",
        ],
        id="slack-token-and-webhook",
    ),
    pytest.param(
        L + "slack:\n  channel: '#a'\n",
        [
            "slack.token (line 3): is required (or token_file, webhook_url, webhook_url_file)",
        ],
        id="slack-no-credentials",
    ),
    pytest.param(
        L + "slack:\n  webhook_url: https://hooks.slack.com/services/x\nbudgets:\n  - name: a\n    "
        "keys: '*'\n    limits: {cost_usd: 1}\n    channel: '#b'\n",
        [
            "budgets[0].channel (line 9): needs slack.token: a webhook posts to its own "
            "channel only",
        ],
        id="slack-webhook-with-budget-channel",
    ),
    pytest.param(
        L + "reports:\n  - {name: w, every: fortnight, at: 'Mox 9:00', top: 500}\n"
        "  - {name: w, every: month, at: '25:00'}\n  - {name: m, every: week, at: noon}\n",
        [
            "reports[0].every (line 4): must be one of 'day', 'week', 'month' or 'quarter'",
            "reports[0].at (line 4): unknown weekday: give one of Mon, Tue, Wed, Thu, Fri, Sat,"
            " Sun (or the whole name)",
            "reports[0].top (line 4): must be at most 50",
            "reports[1].name (line 5): duplicate report name 'w' (also reports[0], line 4)",
            "reports[1].at (line 5): 25:00 is not a time of day (00:00 to 23:59)",
            'reports[2].at (line 6): must be a local time like "09:00" or "Mon 09:00"',
        ],
        id="bad-reports",
    ),
    pytest.param(
        L + "slack:\n  webhook_url: https://hooks.slack.com/services/x\nreports:\n"
        "  - {name: w, every: week, channel: '#b'}\n",
        [
            "reports[0].channel (line 6): needs slack.token: a webhook posts to its own "
            "channel only",
        ],
        id="slack-webhook-with-report-channel",
    ),
    pytest.param(
        L + "history: {enabled: false}\nreports: [{name: w, every: week}]\n",
        [
            "reports (line 4): needs the usage history (history.enabled: true)",
        ],
        id="reports-without-history",
    ),
    pytest.param(
        L + "metrics:\n  listen: 0.0.0.0\n",
        [
            "metrics.listen (line 4): must be host:port, like 0.0.0.0:9108 or [::]:9108",
        ],
        id="listen-without-port",
    ),
    pytest.param(
        L + "metrics:\n  listen: '[::]:70000'\n",
        [
            "metrics.listen (line 4): port must be between 1 and 65535",
        ],
        id="listen-port-out-of-range",
    ),
    pytest.param(
        L + "metrics:\n  listen: ':::9108'\n",
        [
            "metrics.listen (line 4): must be host:port, like 0.0.0.0:9108 or [::]:9108",
        ],
        id="listen-ipv6-without-brackets",
    ),
    pytest.param(
        L + "defaults:\n  thresholds: [50, 80, 80]\n",
        [
            "defaults.thresholds (line 4): lists the same threshold twice",
        ],
        id="thresholds-duplicate",
    ),
    pytest.param(
        L + "defaults:\n  thresholds: [0, {at: 90, severity: panic}]\n",
        [
            "defaults.thresholds[0].at (line 4): must be greater than 0",
            "defaults.thresholds[1].severity (line 4): must be one of 'info', 'warning' or "
            "'critical'",
        ],
        id="threshold-zero-and-bad-severity",
    ),
    pytest.param(
        L + "defaults:\n  thresholds: [[80]]\n",
        [
            "defaults.thresholds[0] (line 4): must be a percentage or a mapping like {at: "
            "80, severity: warning}",
        ],
        id="threshold-wrong-shape",
    ),
    pytest.param(
        L + "defaults:\n  thresholds: []\n",
        [
            "defaults.thresholds (line 4): must not be empty",
        ],
        id="thresholds-empty",
    ),
    pytest.param(
        L + "defaults:\n  forecast: sometimes\n",
        [
            "defaults.forecast (line 4): must be true, false or a mapping like {enabled: "
            "true, min_elapsed: 20%}",
        ],
        id="forecast-wrong-shape",
    ),
    pytest.param(
        L + "defaults:\n  forecast: {min_elapsed: 150%, min_spend_usd: -1}\n",
        [
            "defaults.forecast.min_elapsed (line 4): must be at most 1",
            "defaults.forecast.min_spend_usd (line 4): must be at least 0",
        ],
        id="forecast-min-elapsed",
    ),
    pytest.param(
        "langdock:\n  api_key: x\n  base_url: ftp://example.com\n",
        [
            "langdock.base_url (line 3): must be an http or https URL",
        ],
        id="base-url-not-http",
    ),
    pytest.param(
        "langdock:\n  api_key: x\n  api_key_file: /run/secrets/langdock\n",
        [
            "langdock.api_key_file (line 3): give api_key or api_key_file, not both",
        ],
        id="api-key-and-file",
    ),
    pytest.param(
        "langdock:\n  timeout_seconds: 60\n",
        [
            "langdock.api_key (line 1): is required (or api_key_file)",
        ],
        id="api-key-missing",
    ),
    pytest.param(
        "langdock:\n  api_key: ''\n",
        [
            "langdock.api_key (line 2): must not be empty",
        ],
        id="api-key-empty",
    ),
    pytest.param(
        "langdock:\n  api_key_file: /nonexistent/costwatch/key\n",
        [
            "langdock.api_key_file (line 2): cannot read '/nonexistent/costwatch/key': No such "
            "file or directory",
        ],
        id="api-key-file-missing",
    ),
    pytest.param(
        "langdock:\n  api_key: !vault secret/langdock\n",
        [
            "langdock.api_key (line 2): is not a valid value for tag '!vault'",
        ],
        id="unsupported-tag",
    ),
    pytest.param(
        "langdock: !!python/object/apply:os.system [echo]\n",
        [
            "langdock (line 1): unsupported tag '!!python/object/apply:os.system'",
        ],
        id="python-tag",
    ),
    pytest.param(
        "langdock:\n  api_key: x\n  max_attempts: !!int many\n",
        [
            "langdock.max_attempts (line 3): is not a valid value for tag '!!int'",
        ],
        id="bad-int-tag",
    ),
    pytest.param(
        "langdock: &a\n  api_key: x\n  self: *a\n",
        [
            "langdock.self (line 3): refers to itself through an alias",
        ],
        id="recursive-alias",
    ),
    pytest.param(
        L + "? [a, b]\n: 1\n",
        [
            "(file) (line 3): a key must be a plain name, not a list or mapping",
        ],
        id="list-as-key",
    ),
    pytest.param(
        L + B + "    limits: {cost_usd: 1}\n    mention: ['@alice']\n",
        [
            "budgets[0].mention[0] (line 7): must be a Slack mention like '<@U0123ABCD>' or "
            "'<!subteam^S0123ABCD>'",
        ],
        id="bad-mention",
    ),
    pytest.param(
        L + "slack:\n  token: t\n  channel: 'ai spend'\n",
        [
            "slack.channel (line 5): must be a channel like '#ai-spend' or a channel ID, "
            "without spaces",
        ],
        id="bad-channel",
    ),
]


@pytest.mark.parametrize(("text", "expected"), INVALID)
def test_an_invalid_file_reports_exactly_these_problems_with_path_and_line(
    text: str, expected: list[str]
) -> None:
    assert problems(text) == expected


@pytest.mark.parametrize(("text", "expected"), INVALID)
def test_no_problem_message_ever_contains_the_secret(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env=CORPUS_ENV)
    error = caught.value
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert error.__cause__ is None  # pydantic's error (which echoes inputs) is not chained
    assert error.__context__ is None


def test_the_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 30


# --- errors: reporting -----------------------------------------------------------------------


def test_a_missing_environment_variable_names_the_variable_and_the_key() -> None:
    assert problems(L, env={}) == [
        "langdock.api_key (line 2): environment variable LANGDOCK_API_KEY is not set"
    ]


def test_every_problem_is_reported_at_once_sorted_by_line() -> None:
    text = """\
budgets:
  - name: a
    keys: "x["
    limits: {cost_usd: 0}
langdock:
  api_key: ${NOT_SET}
  timeout_seconds: -1
schedule:
  timezone: Europe/Berln
  evry: 15m
silences:
  - {budget: a, until: 2030-01-01 00:00:00, reason: r}
"""
    assert problems(text) == [
        "budgets[0].keys[0] (line 3): bad glob 'x[': '[' at position 2 is never closed",
        "budgets[0].limits.cost_usd (line 4): must be greater than 0",
        "langdock.api_key (line 6): environment variable NOT_SET is not set",
        "langdock.timeout_seconds (line 7): must be greater than 0",
        "schedule.timezone (line 9): bad time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)",
        "schedule.evry (line 10): unknown key 'evry' (did you mean 'every'?)",
        "silences[0].until (line 12): must include a UTC offset, like 2025-07-01T00:00:00+02:00",
    ]


def test_the_error_message_names_the_source_and_counts_the_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("langdock: {}\nzzz: 1\n", source="costwatch.yaml", env={})
    assert str(caught.value).splitlines() == [
        "costwatch.yaml: 2 problems",
        "  langdock.api_key (line 1): is required (or api_key_file)",
        "  zzz (line 2): unknown key 'zzz' (known keys: langdock, workspaces, schedule, state, "
        "history, slack, metrics, defaults, budgets, silences, anomalies, unit_cost, "
        "unowned, owners, reports)",
    ]


def test_a_secret_in_a_field_of_the_wrong_type_is_not_echoed() -> None:
    text = "langdock:\n  api_key: x\n  timeout_seconds: ${LANGDOCK_API_KEY}\n"
    assert problems(text) == ["langdock.timeout_seconds (line 3): must be a number"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            L + "schedule: {timezone: '${LANGDOCK_API_KEY}'}\n",
            "schedule.timezone (line 3): bad time zone '${LANGDOCK_API_KEY}'",
        ),
        (
            L + "budgets: [{name: a, keys: 'x[${LANGDOCK_API_KEY}', limits: {cost_usd: 1}}]\n",
            "budgets[0].keys[0] (line 3): bad glob 'x[${LANGDOCK_API_KEY}': '[' at position 2 "
            "is never closed",
        ),
        (
            L + "budgets:\n  - {name: '${LANGDOCK_API_KEY}', keys: a, limits: {cost_usd: 1}}\n"
            "  - {name: '${LANGDOCK_API_KEY}', keys: b, limits: {cost_usd: 1}}\n",
            "budgets[1].name (line 5): duplicate budget name '${LANGDOCK_API_KEY}' "
            "(also budgets[0], line 4)",
        ),
    ],
    ids=["time-zone", "glob", "duplicate-name"],
)
def test_a_message_quoting_a_value_shows_a_variable_by_its_name(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_a_bad_webhook_url_from_the_environment_is_reported_without_its_value() -> None:
    text = L + "slack:\n  webhook_url: ${LANGDOCK_API_KEY}\n"
    assert problems(text) == ["slack.webhook_url (line 4): must be an https URL"]


def test_an_alias_bomb_is_a_problem_not_a_hang() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    assert problems("\n".join(lines) + "\n") == [
        "(file): is nested too deeply or expands too many aliases"
    ]


def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    text = "langdock: " + "[" * 3000 + "]" * 3000 + "\n"
    assert problems(text) == ["(file): is nested too deeply or expands too many aliases"]


# --- loading files ---------------------------------------------------------------------------


def test_load_config_reads_the_file_and_names_it_as_the_source(tmp_path: Path) -> None:
    path = tmp_path / "costwatch.yaml"
    path.write_text(MINIMAL + "  - {name: a, keys: b, limits: {requests: 1}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert caught.value.source == str(path)
    assert [str(p) for p in caught.value.problems] == [
        "budgets[1].name (line 7): duplicate budget name 'a' (also budgets[0], line 4)"
    ]


def test_an_unreadable_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.yaml", ENV)
    assert str(caught.value) == (
        f"{tmp_path / 'missing.yaml'}: 1 problem\n"
        "  (file): cannot read the file: No such file or directory"
    )


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"langdock:\n  api_key: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert [str(p) for p in caught.value.problems] == [
        "(file) (line 2): the file is not UTF-8 text"
    ]


def test_load_config_defaults_env_to_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
    path = tmp_path / "costwatch.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert load_config(path).sole_langdock().secret_api_key() == SECRET


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeff".encode() + MINIMAL.encode())
    assert load_config(path, ENV).budgets[0].name == "a"


# --- secrets ---------------------------------------------------------------------------------


def test_api_key_file_is_read_stripped_relative_to_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "langdock").write_text(f"  {SECRET}\n", encoding="utf-8")
    path = tmp_path / "costwatch.yaml"
    path.write_text("langdock:\n  api_key_file: secrets/langdock\n", encoding="utf-8")
    config = load_config(path, {})
    assert config.sole_langdock().secret_api_key() == SECRET
    assert config.sole_langdock().api_key_file == tmp_path / "secrets" / "langdock"
    assert SECRET not in repr(config)
    assert SECRET not in summarize(config)
    assert f"read from {tmp_path / 'secrets' / 'langdock'}" in summarize(config)


def test_slack_token_and_webhook_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(SLACK_SECRET, encoding="utf-8")
    (tmp_path / "hook").write_text("https://hooks.slack.com/services/T/B/x\n", encoding="utf-8")
    token = parse(L + "slack: {token_file: token, channel: '#a'}\n", base_dir=tmp_path)
    assert token.slack is not None
    assert token.slack.secret_token() == SLACK_SECRET
    assert token.slack.mode == "token"
    hook = parse(L + "slack: {webhook_url_file: hook}\n", base_dir=tmp_path)
    assert hook.slack is not None
    assert hook.slack.secret_webhook_url() == "https://hooks.slack.com/services/T/B/x"
    assert hook.slack.mode == "webhook"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b" \n\t\n", "is empty"),
        (b"sk-\xff\xfeSECRET", "cannot read '{path}': not a UTF-8 text file"),
    ],
    ids=["empty", "whitespace-only", "not-utf8"],
)
def test_an_unusable_secret_file_names_the_key_and_path_not_the_content(
    tmp_path: Path, content: bytes, message: str
) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_bytes(content)
    expected = message.format(path=secret_file)
    if message == "is empty":
        expected = f"'{secret_file}' is empty"
    text = f"langdock:\n  api_key_file: {secret_file}\n"
    assert problems(text, env={}) == [f"langdock.api_key_file (line 2): {expected}"]


def test_a_secret_file_that_is_a_folder_is_a_problem(tmp_path: Path) -> None:
    text = f"langdock:\n  api_key_file: {tmp_path}\n"
    assert problems(text, env={}) == [
        f"langdock.api_key_file (line 2): '{tmp_path}' is a folder, not a regular file with the "
        "secret"
    ]


def test_secrets_appear_in_no_repr_str_dump_or_summary() -> None:
    text = L + "slack:\n  token: ${SLACK_BOT_TOKEN}\n  channel: '#a'\n" + B[:-1] + "\n"
    config = parse(text + "    limits: {cost_usd: 1}\n")
    assert config.slack is not None
    for shown in (
        repr(config),
        str(config),
        repr(config.sole_langdock()),
        str(config.sole_langdock().api_key),
        config.model_dump_json(),
        str(config.model_dump()),
        summarize(config),
        summarize(config, [("k1", "a")]),
    ):
        assert SECRET not in shown
        assert SLACK_SECRET not in shown
    assert config.sole_langdock().secret_api_key() == SECRET
    assert config.slack.secret_token() == SLACK_SECRET


# --- interpolation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${HOST}", {"HOST": "h.example"}, "https://h.example/x"),
        ("${HOST:-d.example}", {}, "https://d.example/x"),
        ("${HOST:-d.example}", {"HOST": ""}, "https://d.example/x"),
        ("${HOST:-d.example}", {"HOST": "h.example"}, "https://h.example/x"),
        ("h.example/a$$b", {}, "https://h.example/a$b/x"),
        ("h.example/a$b", {}, "https://h.example/a$b/x"),
    ],
    ids=["set", "default-when-unset", "default-when-empty", "set-beats-default", "$$", "lone-$"],
)
def test_variables_in_string_values_are_interpolated(
    value: str, env: dict[str, str], expected: str
) -> None:
    config = parse(f"langdock:\n  api_key: k\n  base_url: https://{value}/x\n", env=env)
    assert config.sole_langdock().base_url == expected


def test_an_interpolated_value_is_not_interpolated_again() -> None:
    config = parse("langdock:\n  api_key: ${A}\n", env={"A": "${B}"})
    assert config.sole_langdock().secret_api_key() == "${B}"


def test_interpolated_numbers_are_validated_as_numbers() -> None:
    config = parse("langdock:\n  api_key: k\n  timeout_seconds: ${T}\n", env={"T": "30"})
    assert config.sole_langdock().timeout_seconds == 30


# --- defaults and normalisation --------------------------------------------------------------


def test_a_minimal_file_gets_every_default() -> None:
    config = parse(MINIMAL)
    assert config.sole_langdock().base_url == "https://api.langdock.com"
    assert config.sole_langdock().timeout_seconds == 120
    assert config.sole_langdock().max_download_mb == 512
    assert config.sole_langdock().allow_insecure_download is False
    assert config.sole_langdock().retry_max_elapsed_seconds == 300
    assert config.sole_langdock().max_attempts == 6
    assert config.schedule.every == timedelta(minutes=15)
    assert config.schedule.cron is None
    assert config.schedule.timezone == "UTC"
    assert config.state.path == Path("/var/lib/costwatch/state.db")
    assert config.slack is None
    assert config.metrics.listen == "0.0.0.0:9108"
    assert config.metrics.max_series == 50000
    assert config.defaults == Defaults()
    assert [t.at for t in config.defaults.thresholds] == [50, 80, 100]
    assert config.defaults.forecast == ForecastConfig(enabled=True, min_elapsed=0.2)
    assert config.silences == ()
    budget = config.budgets[0]
    assert budget.keys == ("*",)
    assert (budget.scope, budget.fallback, budget.exclude, budget.models) == ("key", False, (), {})


def test_budget_settings_fall_back_to_defaults_and_schedule() -> None:
    config = parse(
        L + "schedule: {timezone: Europe/Berlin}\n"
        "defaults: {period: week, thresholds: [90], forecast: false}\n"
        "budgets:\n"
        "  - {name: plain, keys: '*', limits: {cost_usd: 1}}\n"
        "  - {name: own, keys: '*', limits: {cost_usd: 1}, period: day, timezone: Asia/Tokyo,\n"
        "     thresholds: [70], forecast: true}\n"
    )
    plain, own = config.budgets
    defaults, schedule = config.defaults, config.schedule
    assert plain.period is None
    assert plain.effective_period(defaults) == "week"
    assert [t.at for t in plain.effective_thresholds(defaults)] == [90]
    assert plain.effective_forecast(defaults).enabled is False
    assert plain.effective_timezone(schedule) == "Europe/Berlin"
    assert own.effective_period(defaults) == "day"
    assert [t.at for t in own.effective_thresholds(defaults)] == [70]
    assert own.effective_forecast(defaults).enabled is True
    assert str(own.effective_zone(schedule)) == "Asia/Tokyo"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("50", Threshold(at=50, severity="info")),
        ("79.5", Threshold(at=79.5, severity="info")),
        ("80", Threshold(at=80, severity="warning")),
        ("'95%'", Threshold(at=95, severity="warning")),
        ("100", Threshold(at=100, severity="critical")),
        ("120", Threshold(at=120, severity="critical")),
        ("{at: 100, severity: info}", Threshold(at=100, severity="info")),
        ("{at: 60, mention: ['<!here>']}", Threshold(at=60, severity="info", mention=("<!here>",))),
    ],
)
def test_a_threshold_is_normalised_to_the_object_form(written: str, expected: Threshold) -> None:
    config = parse(L + f"defaults:\n  thresholds: [{written}]\n")
    assert config.defaults.thresholds == (expected,)


def test_default_severity_by_level() -> None:
    assert [severity_for(level) for level in (1, 79.9, 80, 99.9, 100, 150)] == [
        "info",
        "info",
        "warning",
        "warning",
        "critical",
        "critical",
    ]


def test_thresholds_are_sorted_by_level() -> None:
    config = parse(L + "defaults:\n  thresholds: [100, 50, 80]\n")
    assert [t.at for t in config.defaults.thresholds] == [50, 80, 100]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("true", ForecastConfig()),
        ("false", ForecastConfig(enabled=False)),
        ("{min_elapsed: 30%}", ForecastConfig(min_elapsed=0.3)),
        (
            "{min_elapsed: 0.5, min_spend_usd: 10}",
            ForecastConfig(min_elapsed=0.5, min_spend_usd=10),
        ),
        ("{enabled: false}", ForecastConfig(enabled=False)),
    ],
)
def test_forecast_accepts_a_bool_or_an_object(written: str, expected: ForecastConfig) -> None:
    assert parse(L + f"defaults:\n  forecast: {written}\n").defaults.forecast == expected


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("'*'", ("*",)),
        ("support-*", ("support-*",)),
        ("[a, 'b-*', key_123]", ("a", "b-*", "key_123")),
    ],
)
def test_budget_keys_are_normalised_to_a_tuple_of_patterns(
    written: str, expected: tuple[str, ...]
) -> None:
    config = parse(L + f"budgets:\n  - {{name: a, keys: {written}, limits: {{requests: 5}}}}\n")
    assert config.budgets[0].keys == expected


def test_per_model_limits_are_parsed() -> None:
    config = parse(MINIMAL + "    models: {gpt-4o: {cost_usd: 900}, 'claude-*': {tokens: 10}}\n")
    models = config.budgets[0].models
    assert models["gpt-4o"].items() == (("cost_usd", 900),)
    assert models["claude-*"].items() == (("tokens", 10),)


def test_cron_replaces_the_default_every_and_weekdays_become_names() -> None:
    config = parse(L + "schedule:\n  cron: '*/15  8-18 * * 1-5'\n")
    assert config.schedule.every is None
    assert config.schedule.cron == "*/15 8-18 * * mon,tue,wed,thu,fri"


def test_schedule_zone_is_a_zoneinfo() -> None:
    config = parse(L + "schedule: {timezone: America/New_York}\n")
    assert str(config.schedule.zone) == "America/New_York"


def test_state_path_is_resolved_against_the_config_folder(tmp_path: Path) -> None:
    relative = parse(L + "state: {path: data/state.db}\n", base_dir=tmp_path)
    assert relative.state.path == tmp_path / "data" / "state.db"
    absolute = parse(L + "state: {path: /srv/state.db}\n", base_dir=tmp_path)
    assert absolute.state.path == Path("/srv/state.db")


def test_urls_are_normalised() -> None:
    config = parse(
        "langdock: {api_key: k, base_url: 'https://h.example/api/public/'}\n"
        "slack: {token: t, channel: C012AB3CD, api_url: 'http://127.0.0.1:8080/api'}\n"
    )
    assert config.sole_langdock().base_url == "https://h.example/api/public"
    assert config.slack is not None
    assert config.slack.api_url == "http://127.0.0.1:8080/api/"


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("0.0.0.0:9108", "0.0.0.0", 9108), ("[::]:9108", "::", 9108), ("localhost:1", "localhost", 1)],
)
def test_metrics_listen_is_host_and_port(listen: str, host: str, port: int) -> None:
    metrics = parse(L + f"metrics: {{listen: '{listen}'}}\n").metrics
    assert (metrics.host, metrics.port) == (host, port)


def test_yaml_anchors_and_merge_keys_work() -> None:
    config = parse(
        L + "budgets:\n"
        "  - &base {name: a, keys: '*', limits: {cost_usd: 1}, period: day}\n"
        "  - <<: *base\n"
        "    name: b\n"
    )
    assert [(b.name, b.period) for b in config.budgets] == [("a", "day"), ("b", "day")]


def test_silences_parse_with_an_aware_until() -> None:
    config = parse(L + "silences:\n  - {keys: 'ci-*', until: 2030-01-01T00:00:00Z, reason: CI}\n")
    assert config.silences[0].until == datetime(2030, 1, 1, tzinfo=UTC)


def test_models_are_frozen_and_hashable() -> None:
    config = parse(MINIMAL + "    models: {gpt-4o: {cost_usd: 1}}\n")
    with pytest.raises(ValidationError):
        config.budgets[0].name = "b"
    assert hash(config) == hash(parse(MINIMAL + "    models: {gpt-4o: {cost_usd: 1}}\n"))
    assert {config.budgets[0]} == {config.budgets[0]}


# --- key matching ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "key_id", "key_name", "expected"),
    [
        (("*",), "k1", "anything", True),
        (("support-*",), "k1", "support-bot-prod", True),
        (("support-*",), "k1", "Support-bot", False),
        (("k1",), "k1", "other", True),
        (("k*",), "k1", "other", False),
        (("a", "b"), "k1", "b", True),
        ((), "k1", "a", False),
    ],
)
def test_key_matches_globs_names_and_exact_ids(
    patterns: tuple[str, ...], key_id: str, key_name: str, expected: bool
) -> None:
    assert key_matches(patterns, key_id, key_name) is expected


def test_a_budget_matches_its_keys_minus_its_excludes() -> None:
    budget = parse(MINIMAL + "    exclude: ['test-*', k9]\n").budgets[0]
    assert isinstance(budget, Budget)
    assert budget.matches("k1", "prod")
    assert not budget.matches("k2", "test-x")
    assert not budget.matches("k9", "prod")


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), (300, 300)],
)
def test_durations_parse(value: str | int, seconds: int) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)
    assert parse_duration(format_duration(parse_duration(value))) == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["", "15", "0", "15x", "1.5h", "m15", "30m1h", True, 1.5, -5])
def test_bad_durations_are_refused(value: object) -> None:
    if value == "15":
        assert parse_duration(value) == timedelta(seconds=15)  # a plain number is seconds
        return
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("*/15 * * * *", "*/15 * * * *"),
        ("0 9 * * 0", "0 9 * * sun"),
        ("0 9 * * 7", "0 9 * * sun"),
        ("0 9 1 jan-mar */2", "0 9 1 jan-mar sun,tue,thu,sat"),
        ("5/20 * * * MON", "5/20 * * * mon"),
    ],
)
def test_cron_lines_are_checked_and_weekdays_named(cron: str, expected: str) -> None:
    assert normalize_cron(cron) == expected


# --- the example file ------------------------------------------------------------------------


def test_the_example_file_validates() -> None:
    config = load_config(EXAMPLE, ENV)
    assert [b.name for b in config.budgets] == ["every-key", "support-bot", "workspace"]
    assert config.budgets[1].models["gpt-4o"].cost_usd == 900
    assert config.budgets[2].scope == "shared"
    assert config.slack is not None
    assert config.slack.secret_token() == SLACK_SECRET


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for info in model.model_fields.values():
        for sub in _models_in(info.annotation):
            names |= _field_names(sub, seen)
    return names


def _models_in(annotation: object) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def test_the_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = [name for name in _field_names(Config, set()) if f"{name}:" not in text]
    assert missing == []


# --- summary ---------------------------------------------------------------------------------


def test_the_summary_shows_each_section_and_budget() -> None:
    config = load_config(EXAMPLE, ENV)
    assert summarize(config).splitlines() == [
        "langdock  https://api.langdock.com (API key given inline)",
        "schedule  every 15m, time zone Europe/Berlin",
        "state     /var/lib/costwatch/state.db",
        "slack     bot token, default channel #ai-spend, API https://slack.com/api/",
        "metrics   0.0.0.0:9108 (at most 50000 series)",
        "defaults  period month, thresholds 50/80/100%, forecast (auto, 14 days) once 20% of "
        "the period has passed and $1.00 is spent",
        "budgets   3",
        "  every-key: per key; keys *; month in Europe/Berlin; $200.00, 100,000 requests; "
        "thresholds 50/80/100%; to #ai-spend",
        "  support-bot: per key; keys support-bot-prod; month in Europe/Berlin; $1,500.00; "
        "gpt-4o: $900.00; thresholds 80/100%; to #support-eng",
        "  workspace: shared pool; keys *; month in Europe/Berlin; $20,000.00; "
        "thresholds 50/80/100%; to #ai-spend",
        "silence   budget support-bot, keys support-bot-* until 2030-01-01T00:00:00+01:00: "
        "migration to the new support bot, spend approved",
        "report    weekly: every week, due Mon 09:00 (Europe/Berlin) after it, top 10, "
        "to #ai-spend",
        "report    monthly: every month, due 09:00 (Europe/Berlin) after it, top 10, to #ai-spend",
    ]


def test_the_summary_counts_the_keys_each_budget_matches() -> None:
    config = parse(
        L + "budgets:\n"
        "  - {name: bots, keys: '*-bot', exclude: [old-bot], limits: {cost_usd: 1}}\n"
        "  - {name: rest, keys: '*', fallback: true, limits: {cost_usd: 1}}\n"
        "  - {name: pool, keys: [k3, k4], scope: shared, limits: {cost_usd: 1}}\n"
    )
    known = [("k1", "a-bot"), ("k2", "old-bot"), ("k3", "x"), ("k4", "b-bot"), ("k5", "")]
    lines = summarize(config, known).splitlines()
    assert lines[lines.index(next(x for x in lines if x.startswith("  bots:"))) + 1] == (
        "    matches 2 of 5 keys"
    )
    assert "    matches 3 of 5 keys" in lines  # rest: k2, k3, k5 (no per-key budget took them)
    assert lines[-1] == "keys      0 of 5 in no budget"
    assert "matches" not in summarize(config)


def test_the_summary_says_where_the_secrets_come_from_and_the_slack_mode(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(SECRET, encoding="utf-8")
    config = parse(
        "langdock: {api_key_file: key}\nslack: {webhook_url: 'https://hooks.slack.com/s/x'}\n"
        "schedule: {cron: '0 * * * *'}\n",
        base_dir=tmp_path,
    )
    summary = summarize(config)
    assert f"(API key read from {tmp_path / 'key'})" in summary
    assert "slack     incoming webhook" in summary
    assert "schedule  cron '0 * * * *', time zone UTC" in summary
    assert "hooks.slack.com" not in summary
    assert "slack     off (no alerts are sent)" in summarize(parse(MINIMAL))


# --- robustness ------------------------------------------------------------------------------

YAMLISH = st.lists(
    st.sampled_from(
        [
            "langdock:",
            "budgets:",
            "schedule:",
            "  api_key: ",
            "  - ",
            "name: ",
            "keys: ",
            "limits: ",
            "{",
            "}",
            "[",
            "]",
            ", ",
            ": ",
            "\n",
            "  ",
            "${A}",
            "${",
            "$$",
            "&a ",
            "*a",
            "<<: *a",
            "!!int ",
            "!!python/object ",
            "!x ",
            "'",
            '"',
            "#",
            "---",
            "? ",
            "15m",
            "-1",
            "0",
            "1e999",
            ".nan",
            "2030-01-01",
            "true",
            "null",
            "~",
            "\t",
            "\x00",
            "cost_usd",
            "every: ",
            "cron: ",
            "until: ",
            "timezone: ",
            "Europe/Berln",
            "x[",
        ]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200) | YAMLISH)
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config(text, env={"A": SECRET})
    except ConfigError as error:
        message = str(error)
    else:
        message = ""
    assert SECRET not in message


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_bytes_give_a_config_or_a_config_error(data: bytes) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(data.decode("utf-8", errors="replace"), env={})


def test_the_example_is_loaded_with_real_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", {**os.environ, **ENV})
    assert load_config(EXAMPLE).sole_langdock().secret_api_key() == SECRET


def test_a_percent_sign_is_only_accepted_where_a_percentage_is_meant() -> None:
    config = parse(L + "defaults: {thresholds: ['90%'], forecast: {min_elapsed: '25%'}}\n")
    assert config.defaults.thresholds[0].at == 90
    assert config.defaults.forecast.min_elapsed == 0.25
    assert problems(L + B + "    limits: {cost_usd: '5%'}\n") == [
        "budgets[0].limits.cost_usd (line 6): must be a number"
    ]


def test_slack_mentions_accept_users_groups_and_specials() -> None:
    mentions = "['<@U0123ABCD>', '<!subteam^S0123ABCD|@oncall>', '<!here>', '<!channel>']"
    config = parse(MINIMAL + f"    mention: {mentions}\n")
    assert len(config.budgets[0].mention) == 4


# --- secret files: regular files of sane size, never a wait --------------------------------


def _problems_within(text: str, seconds: float = 10.0) -> list[str]:
    """`problems(text)`, failing (not hanging) if loading takes longer than `seconds`."""
    found: list[list[str]] = []
    worker = threading.Thread(target=lambda: found.append(problems(text, env={})), daemon=True)
    worker.start()
    worker.join(seconds)
    assert found, f"loading did not finish within {seconds}s (it waits on the file)"
    return found[0]


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays
    return path


def _big(path: Path) -> Path:
    path.write_bytes(b"k" * (SECRET_FILE_MAX_BYTES + 1))
    return path


@pytest.mark.parametrize(
    ("make", "complaint"),
    [
        (_fifo, "is a FIFO (named pipe), not a regular file with the secret"),
        (_socket, "is a socket, not a regular file with the secret"),
        (lambda _path: Path("/dev/null"), "is a character device, not a regular file"),
        (lambda path: path.parent, "is a folder, not a regular file with the secret"),
        (_big, "is larger than 64 KiB: not a file holding one secret"),
    ],
    ids=["fifo", "socket", "device", "folder", "too-large"],
)
def test_a_secret_file_that_is_not_a_small_regular_file_is_refused_at_once_by_path(
    tmp_path: Path, make: typing.Callable[[Path], Path], complaint: str
) -> None:
    target = make(tmp_path / "key")
    [found] = _problems_within(f"langdock:\n  api_key_file: {target}\n")
    assert found.startswith(f"langdock.api_key_file (line 2): '{target}' {complaint}")


def test_a_secret_file_of_exactly_the_limit_behind_a_symlink_is_read(tmp_path: Path) -> None:
    real = tmp_path / "..data" / "key"
    real.parent.mkdir()
    real.write_bytes(b"k" * SECRET_FILE_MAX_BYTES)
    (tmp_path / "key").symlink_to(real)  # how Kubernetes mounts a secret
    config = parse("langdock:\n  api_key_file: key\n", base_dir=tmp_path)
    assert config.sole_langdock().secret_api_key() == "k" * SECRET_FILE_MAX_BYTES


def test_validate_with_a_secret_file_that_is_a_fifo_exits_2_at_once(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path / "token")
    config = tmp_path / "costwatch.yaml"
    config.write_text(
        f"langdock:\n  api_key: x\nslack:\n  token_file: {fifo}\n  channel: '#a'\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "costwatch", "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"slack.token_file (line 4): '{fifo}' is a FIFO (named pipe)" in done.stderr


# --- echoes: a value from the environment or a secret field is never formatted -------------

# Every place a string from ${VAR} can land, as a YAML line under its section. The values
# that validators refuse there are quoted back, or shown as the ${VAR} they came from.
ECHO_SITES = [
    ("schedule", "  cron: '{v}'"),
    ("schedule", "  cron: '*/5 {v} * * *'"),
    ("schedule", "  cron: '* * * * {v}'"),
    ("schedule", "  timezone: '{v}'"),
    ("schedule", "  every: '{v}'"),
    ("schedule", "  jitter: '{v}'"),
    ("langdock", "  base_url: '{v}'"),
    ("langdock", "  timeout_seconds: '{v}'"),
    ("langdock", "  api_key_file: '{v}'"),
    ("slack", "  token_file: '{v}'\n  channel: '#a'"),
    ("slack", "  token: x\n  channel: '{v}'"),
    ("slack", "  webhook_url: '{v}'"),
    ("slack", "  token: x\n  channel: '#a'\n  api_url: '{v}'"),
    ("metrics", "  listen: '{v}'"),
    ("state", "  url: '{v}'"),
    ("state", "  url: 'postgresql://u@h/db'\n  password_file: '{v}'"),
    ("metrics", "  basic_auth_user: '{v}'\n  basic_auth_password: x"),
    (
        "budgets",
        "  - {{name: '{v}', keys: a, limits: {{cost_usd: 1}}}}\n"
        "  - {{name: '{v}', keys: b, limits: {{cost_usd: 1}}}}",
    ),
    ("budgets", "  - {{name: a, keys: 'x[{v}', limits: {{cost_usd: 1}}}}"),
    ("budgets", "  - {{name: a, keys: a, exclude: ['{v}['], limits: {{cost_usd: 1}}}}"),
    ("budgets", "  - {{name: a, keys: a, limits: {{cost_usd: '{v}'}}}}"),
    ("budgets", "  - {{name: a, keys: a, period: '{v}', limits: {{cost_usd: 1}}}}"),
    ("budgets", "  - {{name: a, keys: a, timezone: '{v}', limits: {{cost_usd: 1}}}}"),
    ("budgets", "  - {{name: a, keys: a, mention: ['{v}'], limits: {{cost_usd: 1}}}}"),
    ("budgets", "  - {{name: a, keys: a, repeat: '{v}', limits: {{cost_usd: 1}}}}"),
    ("budgets", "  - {{name: a, keys: a, thresholds: ['{v}'], limits: {{cost_usd: 1}}}}"),
    ("silences", "  - {{budget: a, until: '{v}', reason: r}}"),
    ("defaults", "  period: '{v}'"),
]
SECRETS = st.text(
    alphabet=st.sampled_from(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_[]*/,"
    ),
    min_size=12,
    max_size=40,
).filter(lambda text: sum(char.isalnum() for char in text) >= 10)


def _echoes(secret: str, message: str, written: str = "") -> bool:
    """Whether `message` holds 8 characters of `secret` in a row, in any letter case, that are
    not also in what was `written` (a secret "0000KEY_FILE" is not echoed by "api_key_file")."""
    lowered, text, own = secret.lower(), message.lower(), written.lower()
    windows = (lowered[i : i + 8] for i in range(len(lowered) - 7))
    return any(window in text and window not in own for window in windows)


@settings(max_examples=150, deadline=None)
@given(site=st.sampled_from(ECHO_SITES), secret=SECRETS)
def test_a_secret_from_the_environment_is_never_echoed_by_any_validator(
    site: tuple[str, str], secret: str
) -> None:
    section, line = site
    header = "" if section == "langdock" else "langdock:\n  api_key: x\n"
    text = f"{header}{section}:\n{line.format(v='${WRONG}')}\n"
    try:
        parse_config(text, env={"WRONG": secret})
    except ConfigError as error:
        message = str(error)
    else:
        return  # a value that happens to be valid there
    assert not _echoes(secret, message, text), message
    assert "${WRONG}" in message or "WRONG" not in text or "must" in message or "is " in message


def test_a_cron_field_from_the_environment_is_shown_as_written_not_lower_cased() -> None:
    text = "langdock:\n  api_key: x\nschedule:\n  cron: '*/5 ${WRONG} * * *'\n"
    assert problems(text, env={"WRONG": "XOXB-Secret-Token"}) == [
        "schedule.cron (line 4): hour field '*/5 ${WRONG} * * *' is not a crontab field"
    ]


def test_a_key_name_with_control_characters_is_quoted_escaped() -> None:
    text = 'langdock:\n  api_key: x\n  "tim\\e[31meout\\nERROR forged": 1\n'
    [message] = problems(text, env={})
    assert "\x1b" not in message
    assert "\n" not in message
    assert "unknown key 'tim\\x1b[31meout\\nERROR forged'" in message


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ("langdock", "  base_url: https://admin:pa55-W0rd@langdock.example.com/api/public"),
        ("langdock", "  base_url: https://ld-k3y-only@langdock.example.com"),
        ("slack", "  token: x\n  channel: '#a'\n  api_url: https://u:pa55-W0rd@slack.example"),
    ],
    ids=["user-and-password", "user-only", "slack-api-url"],
)
def test_a_url_with_a_user_or_password_is_refused_without_echoing_it(
    section: str, line: str
) -> None:
    header = "" if section == "langdock" else "langdock:\n  api_key: x\n"
    text = f"{header}{section}:\n{line}\n" + ("  api_key: x\n" if section == "langdock" else "")
    [found] = problems(text, env={})
    assert "must not contain a user or password" in found
    assert "pa55" not in found
    assert "k3y" not in found
