"""What Slack's answers mean for delivery: `DeliveryError`, what it rules out, and the remedy
in plain words. Pure: slack_sdk's error types are only inspected.

An error's `scope` decides what `costwatch.slack.deliver` does next:

- `workspace`: nothing more can go through this round (a wrong or revoked token, a dead
  webhook, an answer that is a redirect or not Slack's at all); the rows stay in the outbox.
- `channel`: this channel refuses (unknown, archived, the app not in it); with a token the rows
  are re-routed to the default channel.
- `message`: Slack refuses this message only (malformed blocks: a costwatch bug).
- `transient`: rate limits after slack_sdk's retries, 5xx, timeouts, connection errors and
  codes not known here; the channel waits for the next round.

Only Slack's own acceptance delivers: a webhook's HTTP 200 with the body `ok`, a Web API HTTP
200 with a JSON object whose `ok` is `true` (`senders.py` checks both). Any other 2xx answer
(an empty body, an HTML page such as a proxy's login, a code at status 200) is
`unexpected_answer`, and a redirect is `redirected` (never followed: `http.py`); both stop
the round and keep the rows, since every post goes to the same address.

No message here holds a secret: codes are taken only when they look like Slack's codes
(`[a-z_]+`), exceptions contribute their type name, never their text, and an odd answer is
described from a fixed vocabulary ("an HTML page"), never quoted.
"""

from __future__ import annotations

import re
from urllib.error import URLError

from slack_sdk.errors import SlackApiError

from costwatch.errors import DeliveryError, DeliveryScope

_BUG: tuple[DeliveryScope, str] = (
    "message",
    "Slack refused the message ({code}): a costwatch bug, please report it",
)
_API_ERRORS: dict[str, tuple[DeliveryScope, str]] = {
    "invalid_auth": ("workspace", "check slack.token: Slack says invalid_auth"),
    "not_authed": ("workspace", "check slack.token: Slack says not_authed (no token arrived)"),
    "account_inactive": ("workspace", "slack.token belongs to a deactivated app: reinstall it"),
    "token_revoked": ("workspace", "slack.token was revoked: reinstall the app, set its token"),
    "token_expired": ("workspace", "slack.token expired: reinstall the app, set its token"),
    "missing_scope": ("workspace", "give the app the chat:write scope and reinstall it"),
    "channel_not_found": ("channel", "no channel {channel}: check its name, or /invite @costwatch"),
    "not_in_channel": ("channel", "invite the app to {channel}: /invite @costwatch"),
    "is_archived": ("channel", "{channel} is archived: unarchive it or configure another one"),
    **dict.fromkeys(["invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text"], _BUG),
}
_NEW_WEBHOOK = "create a new incoming webhook and set slack.webhook_url"
_WEBHOOK_ERRORS: dict[str, tuple[DeliveryScope, str]] = {
    "no_service": ("workspace", f"the webhook no longer exists (no_service): {_NEW_WEBHOOK}"),
    "invalid_token": ("workspace", f"the webhook URL is not valid (invalid_token): {_NEW_WEBHOOK}"),
    "channel_is_archived": ("workspace", "the webhook's channel is archived: unarchive it"),
    "channel_not_found": ("workspace", f"the webhook's channel is gone: {_NEW_WEBHOOK}"),
    "action_prohibited": ("workspace", "a Slack admin restricts posting to the webhook's channel"),
    "team_disabled": ("workspace", "the Slack workspace of the webhook is disabled"),
    **dict.fromkeys(["invalid_payload", "no_text", "too_many_attachments"], _BUG),
}
_WEBHOOK_STATUS = {404: "no_service", 403: "invalid_token", 410: "channel_is_archived"}
_ADDRESS = "check slack.api_url or slack.webhook_url, and any proxy between costwatch and Slack"
_ANSWER_ERRORS = ("redirected", "unexpected_answer")
# The errors retrying cannot fix, for metrics to create at zero up front.
PERMANENT_ERRORS: tuple[str, ...] = tuple(
    sorted(
        [code for code, entry in {**_API_ERRORS, **_WEBHOOK_ERRORS}.items() if entry is not _BUG]
        + list(_ANSWER_ERRORS)
    )
)
# The failures retried later, for metrics to create at zero up front (http_<status> is any).
TRANSIENT_ERRORS: tuple[str, ...] = (
    "connection",
    "http_500",
    "http_502",
    "http_503",
    "ratelimited",
    "timeout",
)
_CODE = re.compile(r"[a-z_]{1,64}")  # a Slack error code, never anything the server echoed


def api_error(error: SlackApiError, channel: str | None) -> DeliveryError:
    data = error.response.data
    code = str(data.get("error") or "") if isinstance(data, dict) else ""
    return _classify(error.response.status_code, code, _API_ERRORS, channel)


def webhook_error(status: int, body: str, channel: str | None) -> DeliveryError:
    """What a webhook answer other than HTTP 200 `ok` means."""
    text = body.strip()
    code = text if _CODE.fullmatch(text) else _WEBHOOK_STATUS.get(status, "")
    if 200 <= status < 300 and code not in _WEBHOOK_ERRORS:
        return unexpected_answer(status, _describe(text), channel)
    return _classify(status, code, _WEBHOOK_ERRORS, channel)


def redirected(status: int, channel: str | None) -> DeliveryError:
    remedy = (
        f"the post was answered with a redirect (HTTP {status}), which costwatch never follows"
        f" (it would take the credential elsewhere): {_ADDRESS}"
    )
    return DeliveryError("redirected", remedy, scope="workspace", channel=channel)


def unexpected_answer(status: int, what: str, channel: str | None) -> DeliveryError:
    """An answer that is not Slack's; `what` comes from a fixed vocabulary, never the body."""
    remedy = f"the answer (HTTP {status}, {what}) is not Slack's: {_ADDRESS}"
    return DeliveryError("unexpected_answer", remedy, scope="workspace", channel=channel)


def _describe(text: str) -> str:
    if not text:
        return "an empty body"
    if text.startswith("<"):
        return "an HTML page"
    if text == "ok":
        return "ok, but not with HTTP 200"
    return "a body other than ok"


def _classify(
    status: int, code: str, known: dict[str, tuple[DeliveryScope, str]], channel: str | None
) -> DeliveryError:
    """What an answer other than ok means; unknown codes are taken for transient."""
    if status == 429:
        return _transient("ratelimited", "Slack rate-limits posts; trying again later", channel)
    if 200 <= status < 300 and not _CODE.fullmatch(code):
        return unexpected_answer(status, "ok: false without an error code", channel)
    if status >= 500 or not _CODE.fullmatch(code):
        return _transient(f"http_{status}", "Slack is failing; trying again later", channel)
    scope, remedy = known.get(code, ("transient", f"Slack says {code}; trying again later"))
    remedy = remedy.format(channel=channel, code=code)
    return DeliveryError(code, remedy, scope=scope, channel=channel)


def transport_error(error: Exception, channel: str | None) -> DeliveryError:
    reason = error.reason if isinstance(error, URLError) else error
    if isinstance(reason, TimeoutError):
        return _transient("timeout", "Slack did not answer in time; trying again later", channel)
    remedy = f"cannot reach Slack ({type(reason).__name__}); trying again later"
    return _transient("connection", remedy, channel)


def _transient(code: str, remedy: str, channel: str | None) -> DeliveryError:
    return DeliveryError(code, remedy, scope="transient", channel=channel)
