"""An in-process OpenAI-compatible chat-completions server that streams scripted answers (SSE).

Usable two ways, with the same scripts:

- as an ``httpx.MockTransport`` handler: ``httpx.AsyncClient(transport=server.transport())``;
- as a real HTTP/1.1 server on 127.0.0.1 (hand-written on asyncio streams, chunked transfer encoding,
  TCP_NODELAY, keep-alive): ``async with server.serve() as base_url: ...`` (``base_url`` ends in ``/v1``).
  The latency benchmark uses it as an emulator streaming at N tokens/s after a time to first token.

Each request takes the next `Script` from the queue (`push`), or the ``default`` (a `Script`, or a
callable building one from the request body). A script chooses the dialect (``"xllamacpp"``: first
chunk with ``content: null`` and a usage chunk with ``choices: []``; ``"llamacpp_python"``: ``: ping``
comments while slow, role-only first chunk, no usage; ``"openai"``), the content and its split into
tokens, pacing (TTFT, tokens/s, or a semaphore ``step`` the test releases token by token), error
statuses (429 with ``Retry-After``, 500), a disconnect after N tokens, ``finish_reason``, and
formatting quirks (CRLF, ``data:`` without a space, no ``[DONE]``).

Every request is recorded (`requests`), so tests can assert what left the process; `disconnects`
counts streams the client abandoned before the end (the server "stops generating" then).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson

Dialect = Literal["xllamacpp", "llamacpp_python", "openai"]

_TOKEN_RE = re.compile(r"\s*[A-Za-z0-9_]+|\s*[^\sA-Za-z0-9_]|\s+")


def tokenize(text: str) -> list[str]:
    """Split text into word/punctuation tokens whose concatenation is exactly ``text``."""
    return _TOKEN_RE.findall(text)


@dataclass
class Script:
    """How to answer one request."""

    content: str = "Hello from the fake model."
    tokens: list[str] | None = None  # explicit split; default: tokenize(content)
    dialect: Dialect = "xllamacpp"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (Retry-After ...)
    error_body: bytes = b'{"error": {"message": "scripted error", "type": "server_error"}}'
    ttft_s: float = 0.0  # delay before the first content token
    tokens_per_s: float | None = None  # None: as fast as possible
    step: asyncio.Semaphore | None = None  # when set, each token waits for one release (test-paced)
    disconnect_after: int | None = None  # drop the connection after N content tokens
    finish_reason: str = "stop"
    send_done: bool = True
    send_finish: bool = True  # False: no chunk carries a finish_reason
    usage: bool | None = None  # None: send usage iff requested and the dialect supports it
    reject_stream_options: bool = False  # answer 400 when the body has stream_options
    pings: int = 1  # llamacpp_python: ": ping" comments sent before the first token
    crlf: bool = False
    data_no_space: bool = False
    model: str = "fake-model"
    prompt_tokens: int = 42


@dataclass(frozen=True)
class RecordedRequest:
    """What the client sent."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


class _Disconnect(Exception):
    """Raised inside the event generator to make the transport drop the connection."""


class FakeOpenAIServer:
    """Scripted OpenAI-compatible SSE server (see the module docstring)."""

    def __init__(
        self, scripts: list[Script] | None = None, default: Script | Callable[[Any], Script] | None = None
    ) -> None:
        self._queue: deque[Script] = deque(scripts or ())
        self._default = default if default is not None else Script()
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self.completed = 0  # streams sent to the end
        self.disconnected = asyncio.Event()  # set when a client abandons a stream
        self.first_token_sent_at: list[float] = []  # time.perf_counter() per streamed response
        self._arrived = asyncio.Event()

    def push(self, *scripts: Script) -> None:
        """Queue scripts for the next requests, in order."""
        self._queue.extend(scripts)

    async def wait_requests(self, n: int) -> None:
        """Return once at least ``n`` requests have arrived (an event, not a poll)."""
        while len(self.requests) < n:
            self._arrived.clear()
            await self._arrived.wait()

    @property
    def bodies(self) -> list[bytes]:
        """Every request body received so far."""
        return [r.body for r in self.requests]

    def _script_for(self, body: Any) -> Script:
        if self._queue:
            return self._queue.popleft()
        if isinstance(self._default, Script):
            return self._default
        return self._default(body)

    # -- the protocol, independent of the transport ------------------------------------------------

    def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        """Returns (status, headers, payload) where payload is bytes or an async iterator of bytes."""
        self.requests.append(RecordedRequest(method, path, headers, body))
        self._arrived.set()
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return (
                200,
                {"content-type": "application/json"},
                orjson.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}),
            )
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            return 404, {"content-type": "application/json"}, b'{"error": {"message": "not found"}}'
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, {"content-type": "application/json"}, b'{"error": {"message": "bad json"}}'
        script = self._script_for(req)
        if script.reject_stream_options and "stream_options" in req:
            return (
                400,
                {"content-type": "application/json"},
                b'{"error": {"message": "Unrecognized request argument supplied: stream_options"}}',
            )
        if script.status != 200:
            return script.status, {"content-type": "application/json", **script.headers}, script.error_body
        hdrs = {"content-type": "text/event-stream", "cache-control": "no-cache", **script.headers}
        return 200, hdrs, self._events(script, req)

    async def _events(self, script: Script, req: dict[str, Any]) -> AsyncIterator[bytes]:
        nl = "\r\n" if script.crlf else "\n"
        prefix = "data:" if script.data_no_space else "data: "
        created = int(time.time())
        cid = f"chatcmpl-fake{len(self.requests)}"

        def event(obj: Any) -> bytes:
            return (prefix + orjson.dumps(obj).decode() + nl + nl).encode()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return event(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": script.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )

        tokens = script.tokens if script.tokens is not None else tokenize(script.content)
        loop = asyncio.get_running_loop()
        start = loop.time()
        if script.dialect == "xllamacpp":
            yield chunk({"role": "assistant", "content": None})
        elif script.dialect == "llamacpp_python":
            for _ in range(script.pings):
                yield f": ping - {time.strftime('%Y-%m-%d %H:%M:%S')}{nl}{nl}".encode()
            yield chunk({"role": "assistant"})
        else:
            yield chunk({"role": "assistant", "content": ""})
        if script.ttft_s > 0:
            await asyncio.sleep(script.ttft_s)
        first_at = loop.time()
        sent = 0
        for i, tok in enumerate(tokens):
            if script.disconnect_after is not None and sent >= script.disconnect_after:
                raise _Disconnect()
            if script.step is not None:
                await script.step.acquire()
            if script.tokens_per_s:
                due = first_at + i / script.tokens_per_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if i == 0:
                self.first_token_sent_at.append(time.perf_counter())
            yield chunk({"content": tok})
            sent += 1
        if script.disconnect_after is not None and sent >= script.disconnect_after:
            raise _Disconnect()
        if script.send_finish:
            yield chunk({}, script.finish_reason)
        wants_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        send_usage = (
            script.usage
            if script.usage is not None
            else (wants_usage and script.dialect != "llamacpp_python")
        )
        if send_usage:
            n = len(tokens)
            yield event(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": script.model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": script.prompt_tokens,
                        "completion_tokens": n,
                        "total_tokens": script.prompt_tokens + n,
                    },
                    "timings": {"predicted_ms": (loop.time() - start) * 1000.0},
                }
            )
        if script.send_done:
            yield f"{prefix}[DONE]{nl}{nl}".encode()
        self.completed += 1

    def _abandoned(self) -> None:
        self.disconnects += 1
        self.disconnected.set()

    # -- as an httpx.MockTransport handler ---------------------------------------------------------

    async def handler(self, request: httpx.Request) -> httpx.Response:
        """``httpx.MockTransport(server.handler)``: answer one request in-process."""
        body = await request.aread()
        status, headers, payload = self._route(
            request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()}, body
        )
        if isinstance(payload, bytes):
            return httpx.Response(status, headers=headers, content=payload)
        return httpx.Response(status, headers=headers, stream=_MockStream(payload, self))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    # -- as a real HTTP/1.1 server -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Listen on ``host:port`` (0: any free port) and yield the base URL (``http://h:p/v1``)."""
        tasks: set[asyncio.Task[None]] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._connection(reader, writer)
            except asyncio.CancelledError:
                pass  # server shutdown; asyncio logs cancelled connection callbacks as errors otherwise
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(on_connect, host, port)
        bound = server.sockets[0].getsockname()[1]
        try:
            yield f"http://{host}:{bound}/v1"
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            for task in list(tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, target, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                status, rheaders, payload = self._route(method, target.split("?", 1)[0], headers, body)
                head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
                head += [f"{k}: {v}" for k, v in rheaders.items()]
                if isinstance(payload, bytes):
                    head.append(f"content-length: {len(payload)}")
                    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
                    await writer.drain()
                    continue
                head.append("transfer-encoding: chunked")
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
                if not await self._stream_chunked(payload, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _stream_chunked(
        self, events: AsyncIterator[bytes], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Write the events as chunks; False when the connection must close (disconnect, client gone)."""
        # A client that closes its side mid-stream is noticed at once, as llama.cpp does.
        gone = asyncio.ensure_future(reader.read(1))
        agen = events
        try:
            async for data in agen:
                if gone.done():
                    self._abandoned()
                    return False
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        except _Disconnect:
            return False  # scripted: close without the terminating chunk
        except ConnectionError:
            self._abandoned()
            return False
        finally:
            if not gone.done():
                gone.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gone
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()


class _MockStream(httpx.AsyncByteStream):
    """Response body for MockTransport: knows when the client closed it before the end."""

    def __init__(self, events: AsyncIterator[bytes], server: FakeOpenAIServer) -> None:
        self._events = events
        self._server = server
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._events:
                yield data
        except _Disconnect:
            self._finished = True  # scripted, not the client's doing
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            ) from None
        self._finished = True

    async def aclose(self) -> None:
        if not self._finished:
            self._finished = True
            self._server._abandoned()
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
