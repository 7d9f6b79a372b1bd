"""One OpenAI-compatible chat-completions client, streaming (SSE) over httpx.

Speaks to Cerebras, OpenAI, vLLM, Ollama and the llama.cpp servers alike, and tolerates the dialect
differences seen in practice: a first chunk with ``"content": null``, role-only chunks, ``: ping``
comment lines, ``data:`` without a space, CRLF line ends, a final usage chunk with ``choices: []``,
``[DONE]`` (or a stream that simply ends after a ``finish_reason``), and servers that reject
``stream_options`` (retried once without it, and remembered).

Failure policy (a model failure must never lose a finding, and must not stall the pipeline):

- connect/read timeouts, connection errors, 429 (honouring ``Retry-After``, capped) and 5xx are retried
  with jittered exponential backoff, at most ``max_retries`` times, and only before the first delta was
  yielded: after that a broken stream raises, and the caller keeps the text it already has;
- a circuit breaker opens after ``breaker_failures`` consecutive failed calls; while open, `stream`
  raises at once (the finding goes out with the model-free summary); after ``breaker_reset_s`` one
  trial call is let through (half-open);
- every error surfaces as `SummarizeError`, raised ``from`` the original;
- closing the event iterator early (or cancelling its consumer) closes the HTTP response, so the server
  stops generating. Consume it with ``contextlib.aclosing`` so that happens promptly::

      async with aclosing(chat.stream(messages, max_tokens=400)) as events:
          async for event in events:
              ...
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import orjson

from triage.errors import SummarizeError

# Parameters some hosted endpoints (Cerebras) reject with 400; never sent, whatever ``extra`` says.
REJECTED_PARAMS = frozenset(
    {"frequency_penalty", "presence_penalty", "logit_bias", "parallel_tool_calls", "service_tier"}
)
# Body keys the client owns; ``extra`` cannot override them.
_OWNED_KEYS = frozenset({"model", "messages", "stream", "stream_options", "max_tokens"})


@dataclass(frozen=True, slots=True)
class Provider:
    """A preset: where a kind of endpoint usually listens, and which env var holds its API key."""

    name: str
    base_url: str
    api_key_env: str | None = None


PROVIDERS: dict[str, Provider] = {
    "cerebras": Provider("cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    "openai": Provider("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "vllm": Provider("vllm", "http://127.0.0.1:8000/v1"),
    "ollama": Provider("ollama", "http://127.0.0.1:11434/v1"),
    "llamacpp": Provider("llamacpp", "http://127.0.0.1:8080/v1"),
}


@dataclass(frozen=True, slots=True)
class LLMConfig:
    """Where the model is and how patient to be with it. Built once from Settings, at the edge."""

    base_url: str
    model: str
    api_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_retries: int = 3
    backoff_base: float = 0.25
    backoff_max: float = 8.0
    retry_after_max: float = 30.0
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0

    @classmethod
    def from_provider(
        cls,
        provider: str,
        model: str,
        *,
        env: Mapping[str, str] | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        **overrides: Any,
    ) -> LLMConfig:
        """A config from a preset; explicit ``base_url``/``api_key`` win over the preset and its env var."""
        try:
            preset = PROVIDERS[provider]
        except KeyError:
            known = ", ".join(sorted(PROVIDERS))
            raise SummarizeError(f"unknown LLM provider {provider!r} (known: {known})") from None
        env = os.environ if env is None else env
        key = api_key
        if key is None and preset.api_key_env:
            key = env.get(preset.api_key_env) or None
        return cls(base_url=base_url or preset.base_url, model=model, api_key=key, **overrides)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts reported by the server (absent on servers that do not send them when streaming)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer's text, in order."""

    text: str


@dataclass(frozen=True, slots=True)
class Done:
    """The last event: why generation stopped (``"stop"``, ``"length"`` ...), usage if known, the model id."""

    finish_reason: str | None
    usage: Usage | None
    model: str


StreamEvent = Delta | Done


class CircuitBreaker:
    """Consecutive-failure breaker: closed → open (fail fast) → half-open (one trial) → closed.

    Counts whole calls, not HTTP attempts: a call that exhausted its retries is one failure.
    """

    __slots__ = ("_clock", "_failures", "_opened_at", "_trial", "failures_to_open", "reset_s")

    def __init__(self, failures_to_open: int, reset_s: float, clock: Callable[[], float]) -> None:
        self.failures_to_open = failures_to_open
        self.reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False  # a half-open trial call is in flight

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``."""
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_s:
            return "half_open"
        return "open"

    def acquire(self) -> bool:
        """Admit a call (True when it is the half-open trial); raise `SummarizeError` while open."""
        state = self.state
        if state == "closed":
            return False
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        raise SummarizeError("circuit open")

    def release(self, trial: bool, *, ok: bool | None) -> None:
        """Record a call's outcome (``ok=None``: abandoned by the caller, counts as neither)."""
        if trial:
            self._trial = False
        if ok is None:
            return
        if ok:
            self._failures = 0
            self._opened_at = None
            return
        self._failures += 1
        if trial or self._failures >= self.failures_to_open:
            self._opened_at = self._clock()


class _Retryable(Exception):
    """An attempt failed in a way worth retrying (before any delta); ``delay`` overrides the backoff."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class _RejectsStreamOptions(Exception):
    """The server answered 400 to a request carrying ``stream_options``."""


_RETRYABLE_HTTPX = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class ChatClient:
    """Streams chat completions from one OpenAI-compatible endpoint.

    ``client`` is injectable (tests pass ``httpx.AsyncClient(transport=MockTransport(...))``); when not
    given, the client owns one and closes it in `aclose`. ``clock`` drives the breaker, ``wall`` reads
    the wall clock for HTTP-date ``Retry-After``, ``rng`` jitters the backoff and ``sleep`` waits it out,
    so tests control time instead of waiting.
    """

    def __init__(
        self,
        config: LLMConfig,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.config = config
        self._owns_client = client is None
        self._timeout = httpx.Timeout(
            connect=config.connect_timeout,
            read=config.read_timeout,
            write=config.read_timeout,
            pool=config.connect_timeout,
        )
        self._client = client if client is not None else httpx.AsyncClient(timeout=self._timeout)
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"
        self._wall = wall
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_s, clock)
        self.include_usage = True  # turned off for good once a server rejects stream_options

    def build_body(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        response_format: dict[str, Any] | None = None,
        temperature: float = 0.2,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The request body (without ``stream_options``, which each attempt decides)."""
        body: dict[str, Any] = {}
        if extra:
            body.update((k, v) for k, v in extra.items() if k not in REJECTED_PARAMS and k not in _OWNED_KEYS)
        body.update(
            model=self.config.model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
        )
        if response_format is not None:
            body["response_format"] = response_format
        return body

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        response_format: dict[str, Any] | None = None,
        temperature: float = 0.2,
        extra: dict[str, Any] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield `Delta` events as the answer arrives, then exactly one `Done`.

        Raises `SummarizeError` (``"circuit open"`` at once while the breaker is open).
        """
        trial = self.breaker.acquire()
        body = self.build_body(
            messages,
            max_tokens=max_tokens,
            response_format=response_format,
            temperature=temperature,
            extra=extra,
        )
        outcome: bool | None = None
        try:
            async with aclosing(self._with_retries(body)) as events:
                async for event in events:
                    yield event
            outcome = True
        except SummarizeError:
            outcome = False
            raise
        finally:
            self.breaker.release(trial, ok=outcome)

    async def _with_retries(self, body: dict[str, Any]) -> AsyncGenerator[StreamEvent, None]:
        attempt = 0
        dropped_options = False
        while True:
            yielded = False
            try:
                async with aclosing(
                    self._attempt(body, self.include_usage and not dropped_options)
                ) as events:
                    async for event in events:
                        yielded = True
                        yield event
                if dropped_options:
                    self.include_usage = False  # it worked without stream_options: remember for good
                return
            except _RejectsStreamOptions:
                dropped_options = True  # retry at once without it (a 400 again is then a real error)
            except _Retryable as exc:
                cause = exc.__cause__ or exc
                if yielded:
                    raise SummarizeError(f"stream broken after output began: {exc}") from cause
                if attempt >= self.config.max_retries:
                    raise SummarizeError(f"giving up after {attempt + 1} attempts: {exc}") from cause
                delay = exc.delay if exc.delay is not None else self._backoff(attempt)
                attempt += 1
                await self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter in [50%, 100%] of the step, capped at ``backoff_max``."""
        step = min(self.config.backoff_max, self.config.backoff_base * (2.0**attempt))
        return step * (0.5 + 0.5 * self._rng.random())

    async def _attempt(self, body: dict[str, Any], include_usage: bool) -> AsyncGenerator[StreamEvent, None]:
        """One HTTP request; translates failures into `_Retryable` or `SummarizeError`."""
        payload = dict(body)
        if include_usage:
            payload["stream_options"] = {"include_usage": True}
        content = orjson.dumps(payload)
        yielded = False
        try:
            async with self._client.stream(
                "POST", self._url, content=content, headers=self._headers, timeout=self._timeout
            ) as resp:
                if resp.status_code != 200:
                    await self._raise_for_status(resp, include_usage)
                ctype = resp.headers.get("content-type", "")
                if ctype.startswith("application/json"):
                    # A server that ignored stream=true and sent the whole completion at once.
                    for event in _events_from_completion(await resp.aread(), self.config.model):
                        yield event
                    return
                parser = _ChunkParser(self.config.model)
                async with aclosing(_sse_data(resp.aiter_lines())) as payloads:
                    async for data in payloads:
                        if data == "[DONE]":
                            yield parser.done()
                            return
                        for event in parser.feed(data):
                            yielded = True
                            yield event
                if parser.finish_reason is not None:
                    yield parser.done()  # ended without [DONE], but generation had finished
                    return
                raise _Retryable("stream ended before a finish_reason")
        except _RETRYABLE_HTTPX as exc:
            kind = type(exc).__name__
            if yielded:
                raise SummarizeError(f"stream broken after output began ({kind}): {exc}") from exc
            raise _Retryable(f"{kind}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise SummarizeError(f"{type(exc).__name__}: {exc}") from exc

    async def _raise_for_status(self, resp: httpx.Response, include_usage: bool) -> None:
        text = (await resp.aread())[:500].decode("utf-8", "replace")
        status = resp.status_code
        try:
            resp.raise_for_status()
            cause: Exception = httpx.HTTPStatusError(f"HTTP {status}", request=resp.request, response=resp)
        except httpx.HTTPStatusError as exc:
            cause = exc
        if status == 400 and include_usage:
            raise _RejectsStreamOptions() from cause
        if status == 429:
            raise _Retryable(f"HTTP 429: {text}", delay=self._retry_after(resp)) from cause
        if status >= 500 or status == 408:
            raise _Retryable(f"HTTP {status}: {text}", delay=self._retry_after(resp)) from cause
        raise SummarizeError(f"HTTP {status} from {self._url}: {text}") from cause

    def _retry_after(self, resp: httpx.Response) -> float | None:
        """``Retry-After`` in seconds (delta or HTTP date), capped at ``retry_after_max``; None if absent."""
        raw = resp.headers.get("retry-after")
        if raw is None:
            return None
        raw = raw.strip()
        try:
            seconds = float(raw)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - self._wall()
        return min(max(seconds, 0.0), self.config.retry_after_max)

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_client:
            await self._client.aclose()


async def _sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The ``data`` payloads of an SSE stream (multi-line data joined with ``\\n``; comments skipped)."""
    buf: list[str] = []
    async for line in lines:
        if not line:
            if buf:
                yield "\n".join(buf)
                buf.clear()
            continue
        if line.startswith("data:"):
            value = line[5:]
            buf.append(value[1:] if value.startswith(" ") else value)
            if value.strip() == "[DONE]":  # some servers omit the blank line before closing
                yield "\n".join(buf)
                buf.clear()
        # ":" comments (keep-alive pings), "event:", "id:", "retry:" carry nothing we use.
    if buf:
        yield "\n".join(buf)


class _ChunkParser:
    """Turns ``chat.completion.chunk`` payloads into events, remembering finish_reason, usage and model."""

    __slots__ = ("finish_reason", "model", "usage")

    def __init__(self, model: str) -> None:
        self.model = model
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def feed(self, data: str) -> list[StreamEvent]:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SummarizeError(f"malformed stream chunk: {data[:200]!r}") from exc
        if not isinstance(obj, dict):
            raise SummarizeError(f"unexpected stream chunk: {data[:200]!r}")
        if obj.get("error"):
            raise SummarizeError(f"server error in stream: {str(obj['error'])[:300]}")
        model = obj.get("model")
        if isinstance(model, str) and model:
            self.model = model
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = _usage(usage)
        out: list[StreamEvent] = []
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                out.append(Delta(content))
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                self.finish_reason = reason
        return out

    def done(self) -> Done:
        return Done(self.finish_reason, self.usage, self.model)


def _usage(raw: dict[str, Any]) -> Usage:
    def num(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) else 0

    return Usage(num("prompt_tokens"), num("completion_tokens"), num("total_tokens"))


def _events_from_completion(raw: bytes, model: str) -> list[StreamEvent]:
    try:
        obj = orjson.loads(raw)
        choice = obj["choices"][0]
        content = (choice.get("message") or {}).get("content") or ""
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise SummarizeError(f"unexpected non-streamed response: {raw[:200]!r}") from exc
    usage = obj.get("usage")
    events: list[StreamEvent] = [Delta(content)] if content else []
    events.append(
        Done(
            choice.get("finish_reason"),
            _usage(usage) if isinstance(usage, dict) else None,
            obj.get("model") or model,
        )
    )
    return events
