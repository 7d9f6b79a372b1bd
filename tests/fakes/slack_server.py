"""A local fake of Slack's Web API (``chat.postMessage``, ``chat.update``) and of an incoming webhook.

Usable as an ``httpx.MockTransport`` handler (``server.transport()``) or as a real HTTP/1.1 server on
127.0.0.1 (``async with server.serve() as api_url``). It behaves like Slack where the sink can get it
wrong: checks the bearer token (``not_authed``/``invalid_auth``), the JSON body, the channel
(``channel_not_found``), the message to edit (``message_not_found``) and Block Kit limits
(``invalid_blocks``, ``msg_too_long``); answers increasing ``ts`` and the channel id; records every
call with the time of the injected ``clock``; and injects faults: a ratio of 429s with
``Retry-After``, scripted ``"429"``/``"500"``/``"hang"`` answers, or a fixed error code.
It also flags what would ping people (``pings``): unescaped ``<!channel>``, ``<@U…>``, ``@here``...
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import orjson

TOKEN = "xoxb-test-token"
WEBHOOK_PATH = "/services/T000/B000/XXXX"

_PING = re.compile(r"<[!@#]|(?<![\w\u200b])@(channel|here|everyone)\b", re.IGNORECASE)


@dataclass
class Call:
    """One request as the server saw it."""

    time: float
    method: str  # chat.postMessage | chat.update | webhook
    body: dict[str, Any]
    status: int
    error: str | None  # None: ok

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Message:
    channel: str
    ts: str
    thread_ts: str | None
    versions: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (time, body) of post + edits

    @property
    def body(self) -> dict[str, Any]:
        return self.versions[-1][1]


def texts_of(body: dict[str, Any]) -> list[str]:
    """Every text a message shows: the fallback text and the texts of its blocks."""
    texts = [body.get("text", "")]
    for b in body.get("blocks") or []:
        if b.get("text"):
            texts.append(b["text"]["text"])
        texts += [x["text"] for x in b.get("fields") or []]
        texts += [x.get("text", "") for x in b.get("elements") or []]
    return texts


class FakeSlack:
    """The fake; ``messages`` holds what a channel would show, ``calls`` every request."""

    def __init__(self, *, token: str = TOKEN, clock: Callable[[], float] | None = None,
                 ratelimit_ratio: float = 0.0, retry_after: int = 1, seed: int = 0,
                 unknown_channels: frozenset[str] = frozenset(), error: str | None = None) -> None:
        self.token = token
        self.clock = clock or (lambda: 0.0)
        self.ratelimit_ratio = ratelimit_ratio
        self.retry_after = retry_after
        self.unknown_channels = unknown_channels
        self.error = error  # answer every call with this error code
        self.script: deque[str] = deque()  # "429" | "500" | "hang" | an error code: next calls, in order
        self.calls: list[Call] = []
        self.messages: dict[str, Message] = {}  # by ts
        self.pings: list[str] = []
        self.channel_ids: dict[str, str] = {}
        self.hang_release = anyio.Event()
        self._rng = random.Random(seed)
        self._ts = 0

    # --- views ---------------------------------------------------------------------------------------

    def ok_calls(self, method: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.ok and (method is None or c.method == method)]

    def roots(self) -> list[Message]:
        return [m for m in self.messages.values() if m.thread_ts is None]

    def replies(self, ts: str) -> list[Message]:
        return [m for m in self.messages.values() if m.thread_ts == ts]

    def counts(self) -> dict[str, int]:
        posts = [c for c in self.ok_calls("chat.postMessage") if "thread_ts" not in c.body]
        replies = [c for c in self.ok_calls("chat.postMessage") if "thread_ts" in c.body]
        return {"posts": len(posts), "updates": len(self.ok_calls("chat.update")), "replies": len(replies),
                "webhooks": len(self.ok_calls("webhook")),
                "429": sum(1 for c in self.calls if c.status == 429),
                "errors": sum(1 for c in self.calls if not c.ok and c.status != 429), "calls": len(self.calls)}

    # --- the API -------------------------------------------------------------------------------------

    def _channel_id(self, channel: str) -> str | None:
        if channel in self.channel_ids.values():
            return channel
        if channel in self.unknown_channels:
            return None
        return self.channel_ids.setdefault(channel, f"C{len(self.channel_ids) + 1:04d}")

    async def answer(self, method: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one request (shared by both transports)."""
        now = self.clock()
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except (orjson.JSONDecodeError, ValueError):
            body = {}
            return self._record(now, method, body, 200, "invalid_json")
        fault = self.script.popleft() if self.script else None
        if fault is None and self.ratelimit_ratio and self._rng.random() < self.ratelimit_ratio:
            fault = "429"
        if fault == "hang":
            self.calls.append(Call(now, method, body, 0, "hang"))
            await self.hang_release.wait()
            return 504, {}, b""
        if fault == "429":
            return self._record(now, method, body, 429, "ratelimited", {"Retry-After": str(self.retry_after)})
        if fault == "500":
            return self._record(now, method, body, 500, "http_500")
        if fault is not None or self.error is not None:
            return self._record(now, method, body, 200, fault or self.error)
        if method == "webhook":
            error = self._check_blocks(body)
            if error:
                return self._record(now, method, body, 400, error, raw_error=True)
            self._scan(body)
            self._ts += 1
            ts = f"{1700000000 + self._ts}.000100"
            self.messages[ts] = Message("webhook", ts, None, [(now, body)])
            return self._record(now, method, body, 200, None, raw_ok=True)
        auth = headers.get("authorization", "")
        if not auth:
            return self._record(now, method, body, 200, "not_authed")
        if auth != f"Bearer {self.token}":
            return self._record(now, method, body, 200, "invalid_auth")
        channel = self._channel_id(str(body.get("channel", "")))
        if channel is None:
            return self._record(now, method, body, 200, "channel_not_found")
        if not body.get("text") and not body.get("blocks"):
            return self._record(now, method, body, 200, "no_text")
        error = self._check_blocks(body)
        if error:
            return self._record(now, method, body, 200, error)
        self._scan(body)
        if method == "chat.postMessage":
            thread = body.get("thread_ts")
            if thread is not None and thread not in self.messages:
                return self._record(now, method, body, 200, "thread_not_found")
            self._ts += 1
            ts = f"{1700000000 + self._ts}.000100"
            self.messages[ts] = Message(channel, ts, thread, [(now, body)])
            return self._record(now, method, body, 200, None, extra={"channel": channel, "ts": ts})
        if method == "chat.update":
            msg = self.messages.get(str(body.get("ts")))
            if msg is None or msg.channel != body.get("channel"):
                return self._record(now, method, body, 200, "message_not_found")
            msg.versions.append((now, body))
            return self._record(now, method, body, 200, None, extra={"channel": channel, "ts": msg.ts})
        return self._record(now, method, body, 404, "unknown_method")

    def _record(self, now: float, method: str, body: dict[str, Any], status: int, error: str | None,
                headers: dict[str, str] | None = None, *, extra: dict[str, Any] | None = None,
                raw_ok: bool = False, raw_error: bool = False) -> tuple[int, dict[str, str], bytes]:
        self.calls.append(Call(now, method, body, status, error))
        if raw_ok:
            return status, {"Content-Type": "text/plain"}, b"ok"
        if raw_error or status >= 500:
            return status, {"Content-Type": "text/plain"}, (error or "").encode()
        obj: dict[str, Any] = {"ok": error is None, **(extra or {})}
        if error is not None:
            obj["error"] = error
        return status, {"Content-Type": "application/json", **(headers or {})}, orjson.dumps(obj)

    def _check_blocks(self, body: dict[str, Any]) -> str | None:
        """Slack's limits: the error code Slack would answer, or None."""
        text = body.get("text", "")
        if not isinstance(text, str):
            return "invalid_arguments"
        if len(text) > 40_000 or len(orjson.dumps(body)) > 50_000:
            return "msg_too_long"
        blocks = body.get("blocks")
        if blocks is None:
            return None
        if not isinstance(blocks, list) or len(blocks) > 50:
            return "invalid_blocks"
        for b in blocks:
            kind = b.get("type")
            if kind == "header":
                t = b.get("text", {})
                if t.get("type") != "plain_text" or not 0 < len(t.get("text", "")) <= 150:
                    return "invalid_blocks"
            elif kind == "section":
                t = b.get("text")
                fields = b.get("fields")
                if t is None and not fields:
                    return "invalid_blocks"
                if t is not None and not 0 < len(t.get("text", "")) <= 3000:
                    return "invalid_blocks"
                if fields is not None and (len(fields) > 10 or any(not 0 < len(x["text"]) <= 2000 for x in fields)):
                    return "invalid_blocks"
            elif kind == "context":
                els = b.get("elements", [])
                if not 0 < len(els) <= 10 or any(len(e.get("text", "")) > 3000 for e in els):
                    return "invalid_blocks"
            elif kind != "divider":
                return "invalid_blocks"
        return None

    def _scan(self, body: dict[str, Any]) -> None:
        """Note anything that would notify people (mentions that were not neutralised)."""
        for t in texts_of(body):
            if _PING.search(t):
                self.pings.append(t)

    # --- transports ---------------------------------------------------------------------------------

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        method = "webhook" if path == WEBHOOK_PATH else path.rsplit("/", 1)[-1]
        status, headers, content = await self.answer(method, {k.lower(): v for k, v in request.headers.items()},
                                                     request.content)
        return httpx.Response(status, headers=headers, content=content)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1") -> AsyncIterator[str]:
        """A real HTTP/1.1 server; yields the API base URL (``http://host:port/api``)."""

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while True:
                    line = await reader.readline()
                    if not line:
                        break
                    _verb, target, _ = line.decode("latin-1").split(" ", 2)
                    headers: dict[str, str] = {}
                    while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                        k, _, v = h.decode("latin-1").partition(":")
                        headers[k.strip().lower()] = v.strip()
                    raw = await reader.readexactly(int(headers.get("content-length", "0")))
                    method = "webhook" if target == WEBHOOK_PATH else target.rsplit("/", 1)[-1]
                    status, out_headers, content = await self.answer(method, headers, raw)
                    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(content)}"]
                    head += [f"{k}: {v}" for k, v in out_headers.items()]
                    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + content)
                    await writer.drain()
            writer.close()

        server = await asyncio.start_server(on_connect, host, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://{host}:{port}/api"
        finally:
            self.hang_release.set()
            server.close()
            await server.wait_closed()


class VirtualClock:
    """Time for the sink and the fake: ``sleep`` waits for ``advance`` (or, with ``autojump``, jumps).

    Kept in whole microseconds, and a sleep always ends a microsecond late rather than early, so
    float rounding can never wake a throttled sender just before its deadline.
    """

    def __init__(self, start: float = 1_773_478_800.0, *, autojump: bool = False) -> None:
        self._us = round(start * 1_000_000)
        self.autojump = autojump
        self._sleepers: list[tuple[int, anyio.Event]] = []

    def __call__(self) -> float:
        return self._us / 1_000_000

    @property
    def now(self) -> float:
        return self()

    async def sleep(self, delay: float) -> None:
        deadline = self._us + max(0, math.ceil(delay * 1_000_000)) + 1
        if self.autojump:
            self._us = deadline
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        self._sleepers.append((deadline, event))
        await event.wait()

    def advance(self, delay: float) -> None:
        self._us += round(delay * 1_000_000)
        due = [s for s in self._sleepers if s[0] <= self._us]
        self._sleepers = [s for s in self._sleepers if s[0] > self._us]
        for _, event in due:
            event.set()

    def run_free(self) -> None:
        """From now on sleeps jump (used to drain at the end of a paced test)."""
        self.autojump = True
        if self._sleepers:
            self.advance((max(t for t, _ in self._sleepers) - self._us) / 1_000_000)
