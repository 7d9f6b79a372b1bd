"""Slack's Web API (``chat.postMessage``, ``chat.update``) and incoming webhooks over httpx.

Slack answers most errors with HTTP 200 and ``{"ok": false, "error": "..."}``; this module sorts every
answer into one of::

    SinkError
    └── SlackError(error)              carries Slack's error code
        ├── SlackRetry(retry_after)    429/ratelimited (Retry-After), 5xx, timeouts, transport errors
        └── SlackRefused(scope)        permanent: scope "auth" (the whole sink), "channel", "message"
                                       (the payload: invalid_blocks, msg_too_long), "gone" (the message
                                       to edit or thread is gone)
"""

from __future__ import annotations

from typing import Any, Literal

import anyio
import httpx
import orjson

from triage.errors import SinkError

Scope = Literal["auth", "channel", "message", "gone"]

AUTH_ERRORS = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "no_permission",
    "missing_scope", "not_allowed_token_type", "ekm_access_denied", "team_access_not_granted",
})
CHANNEL_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "restricted_action", "channel_is_archived",
    "action_prohibited", "no_service", "no_active_hooks", "invalid_token",
})
GONE_ERRORS = frozenset({"message_not_found", "cant_update_message", "edit_window_closed", "thread_not_found"})
TRANSIENT_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
    "team_added_to_org",
})


class SlackError(SinkError):
    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error


class SlackRetry(SlackError):
    """Try again: after ``retry_after`` seconds when Slack said so, else after a backoff."""

    def __init__(self, error: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(error, message)
        self.retry_after = retry_after


class SlackRefused(SlackError):
    """Slack will never accept this as it is: do not retry it."""

    def __init__(self, error: str, message: str, scope: Scope) -> None:
        super().__init__(error, message)
        self.scope = scope


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def classify(error: str, what: str) -> SlackError:
    """The exception for Slack's error code ``error`` (unknown codes are refusals of the message)."""
    msg = f"slack {what}: {error}"
    if error in TRANSIENT_ERRORS:
        return SlackRetry(error, msg)
    if error in AUTH_ERRORS:
        return SlackRefused(error, msg, "auth")
    if error in CHANNEL_ERRORS:
        return SlackRefused(error, msg, "channel")
    if error in GONE_ERRORS:
        return SlackRefused(error, msg, "gone")
    return SlackRefused(error, msg, "message")


class SlackAPI:
    """A few Web API methods; errors translated (see the module docstring)."""

    def __init__(self, client: httpx.AsyncClient, *, api_url: str, token: str | None,
                 timeout_s: float) -> None:
        self._client = client
        self._base = api_url.rstrip("/")
        self._token = token
        self._timeout = timeout_s

    async def _send(self, what: str, url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        content = orjson.dumps(body)
        headers = {"Content-Type": "application/json; charset=utf-8", **headers}
        try:
            # Our own bound as well as httpx's: a server that never answers must not hold the sender.
            with anyio.fail_after(self._timeout):
                response = await self._client.post(url, content=content, headers=headers)
        except TimeoutError as e:
            raise SlackRetry("timeout", f"slack {what}: no answer in {self._timeout:g} s") from e
        except httpx.TimeoutException as e:
            raise SlackRetry("timeout", f"slack {what}: timed out ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise SlackRetry("transport", f"slack {what}: {type(e).__name__}: {e}") from e
        if response.status_code == 429:
            raise SlackRetry("ratelimited", f"slack {what}: rate limited", _retry_after(response))
        if response.status_code >= 500:
            raise SlackRetry(f"http_{response.status_code}", f"slack {what}: HTTP {response.status_code}")
        return response

    async def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON to ``method``; the answer's fields when ``ok``."""
        if self._token is None:
            raise SlackRefused("not_authed", "slack: no token", "auth")
        response = await self._send(method, f"{self._base}/{method}", body,
                                    {"Authorization": f"Bearer {self._token}"})
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError as e:
            if response.status_code >= 400:
                raise classify(f"http_{response.status_code}", method) from e
            raise SlackRetry("bad_response", f"slack {method}: answer is not JSON") from e
        if not isinstance(data, dict):
            raise SlackRetry("bad_response", f"slack {method}: answer is not an object")
        if not data.get("ok"):
            error = str(data.get("error") or f"http_{response.status_code}")
            exc = classify(error, method)
            if isinstance(exc, SlackRetry) and error in ("ratelimited", "rate_limited"):
                exc.retry_after = _retry_after(response)
            raise exc
        return data

    async def webhook(self, url: str, body: dict[str, Any]) -> None:
        """POST to an incoming webhook (answers ``ok`` as text, or an error code with a 4xx status)."""
        response = await self._send("webhook", url, body, {})
        if response.status_code >= 400:
            error = response.text.strip()[:80] or f"http_{response.status_code}"
            exc = classify(error, "webhook")
            if isinstance(exc, SlackRefused) and exc.scope == "gone":
                exc = SlackRefused(error, str(exc), "channel")
            raise exc
