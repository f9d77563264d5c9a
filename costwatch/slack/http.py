"""The HTTP under slack_sdk's clients: no redirect is ever followed, and no answer, however
odd, escapes as anything but `Redirected`, `UnexpectedAnswer` or slack_sdk's own errors.

slack_sdk opens requests with urllib's default opener, which follows redirects: a POST answered
301, 302 or 303 becomes a GET to wherever `Location` points, carrying the request's headers (the
bot token's `Authorization` among them), and that GET's 200 is then taken for Slack's answer.
The clients here open every request with an opener that has no redirect handler at all, and a
guard that sees each answer before urllib's error processing does:

- **Any 3xx is refused** (`Redirected`): the request went to the configured host only, and the
  credential with it; `Location` is never read.
- **A body over `MAX_BODY` bytes is refused** (`UnexpectedAnswer`); Slack's answers are small.
- **The body is decoded once, safely** (an unknown charset or undecodable bytes never raise)
  and handed on as UTF-8, so slack_sdk's own decoding cannot fail.
- **Web API bodies must parse** where slack_sdk would crash on them: a 2xx body must be a JSON
  object (a list, a string, `null` or malformed JSON raise inside slack_sdk), and no body may be
  JSON too deep or a number too long for `json.loads`. Whether it says `ok: true` is for
  `senders.py` to judge; webhook bodies are judged there too (only `ok` is accepted).

`GuardedWebClient` and `GuardedWebhookClient` replace one method each, the one that opens the
request (`_perform_urllib_http_request_internal` and `_perform_http_request_internal`, private
slack_sdk API since its retry handlers, 3.9). `require_supported` (called when a sender is made)
and each client refuse to go on if slack_sdk no longer has that method, rather than silently
following redirects again.
"""

from __future__ import annotations

import codecs
import io
import json
import urllib.request
from email.message import Message
from typing import Any, Literal
from urllib.request import BaseHandler, OpenerDirector, Request
from urllib.response import addinfourl

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from slack_sdk.webhook import WebhookClient, WebhookResponse

__all__ = [
    "MAX_BODY",
    "GuardedWebClient",
    "GuardedWebhookClient",
    "Redirected",
    "UnexpectedAnswer",
    "require_supported",
]

MAX_BODY = 1 << 20  # bytes; chat.postMessage echoes the message, which stays far below this

Shape = Literal["a body over 1 MiB", "not JSON", "JSON, not an object"]


class Redirected(SlackClientError):
    """The answer was a redirect (3xx); it was not followed."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: a redirect, not followed")


class UnexpectedAnswer(SlackClientError):
    """The answer cannot be Slack's: `shape` says how (never what the body held)."""

    def __init__(self, status: int, shape: Shape) -> None:
        self.status = status
        self.shape = shape
        super().__init__(f"HTTP {status}: {shape}")


class _Guard(BaseHandler):
    """Sees each answer before urllib's error processing (handler_order 1000) does."""

    handler_order = 100

    def __init__(self, *, api: bool) -> None:
        self._api = api  # Web API answers are JSON; a webhook's are text

    def http_response(self, request: Request, response: Any) -> _Answer:
        status = int(response.code)
        if 300 <= status < 400:
            response.close()
            raise Redirected(status)
        raw = response.read(MAX_BODY + 1)
        response.close()
        if len(raw) > MAX_BODY:
            raise UnexpectedAnswer(status, "a body over 1 MiB")
        headers = response.info()
        text = raw.decode(_charset(headers), "replace")
        if self._api:
            _check_json(status, text)
        if headers.get("Content-Type") is not None:
            headers.replace_header("Content-Type", f"{headers.get_content_type()}; charset=utf-8")
        return _Answer(text.encode("utf-8"), headers, response, status)

    https_response = http_response


class _Answer(addinfourl):
    """An answer whose body was read and re-encoded as UTF-8."""

    def __init__(self, body: bytes, headers: Message, original: Any, status: int) -> None:
        super().__init__(io.BytesIO(body), headers, original.url, status)
        self.msg = original.msg  # the reason phrase, read by urllib's error processing


def _charset(headers: Message) -> str:
    """The declared charset if Python knows it, else UTF-8."""
    try:
        declared = headers.get_content_charset() or "utf-8"
        return codecs.lookup(declared).name
    except (LookupError, ValueError, TypeError):
        return "utf-8"


def _check_json(status: int, text: str) -> None:
    """Raise for a body slack_sdk's own JSON handling would crash on."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        if 200 <= status < 300:
            raise UnexpectedAnswer(status, "not JSON") from None
        return  # slack_sdk reads an error answer that is not JSON as ok: false
    except (ValueError, RecursionError):  # a number too long, nesting too deep
        raise UnexpectedAnswer(status, "not JSON") from None
    if 200 <= status < 300 and not isinstance(value, dict):
        raise UnexpectedAnswer(status, "JSON, not an object")


def _opener(*, api: bool, proxy: str | None, ssl: Any) -> OpenerDirector:
    """HTTP(S), the proxy slack_sdk would use, errors as HTTPError, and no redirect handler."""
    opener = OpenerDirector()
    proxies = urllib.request.ProxyHandler({"http": proxy, "https": proxy} if proxy else None)
    for handler in (
        proxies,
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(context=ssl),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        _Guard(api=api),
    ):
        opener.add_handler(handler)
    return opener


def require_supported() -> None:
    """Raise unless slack_sdk still opens its requests where these clients take over."""
    _require(WebClient, "_perform_urllib_http_request_internal")
    _require(WebhookClient, "_perform_http_request_internal")


def _require(cls: type, method: str) -> None:
    if not callable(getattr(cls, method, None)):
        raise RuntimeError(
            f"slack_sdk's {cls.__name__} has no {method} any more: costwatch cannot make sure"
            " it follows no redirect; use a slack_sdk version costwatch supports"
        )


class GuardedWebClient(WebClient):
    """slack_sdk's WebClient, opening its requests through the guarded opener."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _require(WebClient, "_perform_urllib_http_request_internal")
        super().__init__(*args, **kwargs)
        self._opener = _opener(api=True, proxy=self.proxy, ssl=self.ssl)

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        if not url.lower().startswith("http"):
            raise SlackClientError("only http and https URLs are opened")
        response = self._opener.open(req, timeout=self.timeout)
        body = response.read().decode("utf-8")
        return {"status": response.code, "headers": response.headers, "body": body}


class GuardedWebhookClient(WebhookClient):
    """slack_sdk's WebhookClient, opening its requests through the guarded opener."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _require(WebhookClient, "_perform_http_request_internal")
        super().__init__(*args, **kwargs)
        self._opener = _opener(api=False, proxy=self.proxy, ssl=self.ssl)

    def _perform_http_request_internal(self, url: str, req: Request) -> WebhookResponse:
        if not url.lower().startswith("http"):
            raise SlackClientError("only http and https URLs are opened")
        response = self._opener.open(req, timeout=self.timeout)
        body = response.read().decode("utf-8")
        return WebhookResponse(
            url=url, status_code=response.code, body=body, headers=response.headers
        )
