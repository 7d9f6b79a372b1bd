"""The streaming chat client against the scripted OpenAI-compatible server (mock transport and real HTTP)."""

from __future__ import annotations

import asyncio
import email.utils
import random
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAIServer, Script, tokenize
from triage.errors import SummarizeError
from triage.summarize.client import PROVIDERS, ChatClient, Delta, Done, LLMConfig, StreamEvent, Usage
from triage.summarize.jsonstream import JsonFieldStreamer

MESSAGES = [{"role": "user", "content": "summarize"}]


class FakeTime:
    """Monotonic clock and sleep under test control: sleeping advances the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(
    server: FakeOpenAIServer, t: FakeTime | None = None, *, http: httpx.AsyncClient | None = None, **cfg: Any
) -> ChatClient:
    t = t or FakeTime()
    config = LLMConfig(base_url=cfg.pop("base_url", "http://fake/v1"), model="m", **cfg)
    http = http or httpx.AsyncClient(transport=server.transport())
    return ChatClient(
        config, client=http, clock=t.clock, wall=lambda: 1_700_000_000.0, rng=random.Random(7), sleep=t.sleep
    )


async def collect(client: ChatClient, **kw: Any) -> list[StreamEvent]:
    kw.setdefault("max_tokens", 64)
    async with aclosing(client.stream(MESSAGES, **kw)) as events:
        return [e async for e in events]


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


@asynccontextmanager
async def real_http(server: FakeOpenAIServer, **cfg: Any) -> AsyncIterator[ChatClient]:
    async with server.serve() as base_url, httpx.AsyncClient() as http:
        client = make_client(server, http=http, base_url=base_url, **cfg)
        yield client


@pytest.mark.anyio
class TestDialects:
    async def test_xllamacpp_null_first_content_and_usage_chunk(self) -> None:
        """xllamacpp's null first content is skipped and its choices-less usage chunk fills Done.usage."""
        server = FakeOpenAIServer(
            [Script(content="Pool exhausted: raise max_connections.", dialect="xllamacpp")]
        )
        events = await collect(make_client(server))
        assert text_of(events) == "Pool exhausted: raise max_connections."
        done = events[-1]
        assert isinstance(done, Done)
        n = len(tokenize("Pool exhausted: raise max_connections."))
        assert done == Done("stop", Usage(42, n, 42 + n), "fake-model")
        assert all(isinstance(e, Delta) for e in events[:-1])

    async def test_llamacpp_python_pings_and_no_usage(self) -> None:
        """llama_cpp.server's ': ping' comments and role-only chunk are ignored; usage is None."""
        server = FakeOpenAIServer([Script(content="a b c", dialect="llamacpp_python", pings=3)])
        events = await collect(make_client(server))
        assert text_of(events) == "a b c"
        assert events[-1] == Done("stop", None, "fake-model")

    async def test_crlf_and_data_without_space(self) -> None:
        """CRLF line ends and 'data:' without a space parse the same."""
        server = FakeOpenAIServer(
            [Script(content="x: y\nz", dialect="openai", crlf=True, data_no_space=True)]
        )
        events = await collect(make_client(server))
        assert text_of(events) == "x: y\nz"
        assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"

    async def test_stream_without_done_after_finish_is_complete(self) -> None:
        """A stream that ends after a finish_reason but without [DONE] still ends with Done."""
        server = FakeOpenAIServer([Script(content="ok then", send_done=False)])
        events = await collect(make_client(server))
        assert text_of(events) == "ok then"
        assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"

    async def test_stream_without_done_or_finish_is_an_error(self) -> None:
        """A stream that ends with neither [DONE] nor a finish_reason raises after what it yielded."""
        server = FakeOpenAIServer([Script(content="half an", send_done=False, send_finish=False)])
        client = make_client(server)
        got: list[str] = []
        with pytest.raises(SummarizeError, match="after output began"):
            async with aclosing(client.stream(MESSAGES, max_tokens=8)) as events:
                async for e in events:
                    if isinstance(e, Delta):
                        got.append(e.text)
        assert "".join(got) == "half an"
        assert len(server.requests) == 1

    async def test_non_streamed_json_answer_is_accepted(self) -> None:
        """A server that ignores stream=true and returns one JSON completion still yields Delta then Done."""

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200,
                json={"model": "x", "choices": [{"message": {"content": "whole"}, "finish_reason": "stop"}]},
            )

        client = ChatClient(
            LLMConfig("http://fake/v1", "m"), client=httpx.AsyncClient(transport=httpx.MockTransport(handler))
        )
        assert await collect(client) == [Delta("whole"), Done("stop", None, "x")]


@pytest.mark.anyio
class TestRequest:
    async def test_body_shape_and_no_auth_without_key(self) -> None:
        """The body streams with include_usage, carries the settings, and no Authorization without a key."""
        server = FakeOpenAIServer()
        rf = {"type": "json_object", "schema": {"type": "object"}}
        await collect(make_client(server), max_tokens=96, response_format=rf, temperature=0.1)
        req = server.requests[0]
        assert req.path == "/v1/chat/completions"
        assert "authorization" not in req.headers
        assert req.json == {
            "model": "m",
            "messages": MESSAGES,
            "max_tokens": 96,
            "temperature": 0.1,
            "stream": True,
            "stream_options": {"include_usage": True},
            "response_format": rf,
        }

    async def test_bearer_sent_when_key_set(self) -> None:
        """With an API key the request carries 'Authorization: Bearer <key>'."""
        server = FakeOpenAIServer()
        await collect(make_client(server, api_key="sk-abc"))
        assert server.requests[0].headers["authorization"] == "Bearer sk-abc"

    async def test_rejected_params_never_sent(self) -> None:
        """Parameters Cerebras rejects are dropped from extra; other extras pass; owned keys are not overridden."""
        server = FakeOpenAIServer()
        extra = {"frequency_penalty": 0.5, "presence_penalty": 0.1, "logit_bias": {}, "parallel_tool_calls": False,
                 "service_tier": "auto", "seed": 3, "top_p": 0.9, "model": "evil", "stream": False}  # fmt: skip
        await collect(make_client(server), extra=extra)
        body = server.requests[0].json
        assert body["seed"] == 3 and body["top_p"] == 0.9
        assert body["model"] == "m" and body["stream"] is True
        for key in (
            "frequency_penalty",
            "presence_penalty",
            "logit_bias",
            "parallel_tool_calls",
            "service_tier",
        ):
            assert key not in body

    async def test_stream_options_rejected_then_remembered(self) -> None:
        """A 400 to stream_options is retried once without it, and later calls do not send it."""
        server = FakeOpenAIServer(default=Script(content="fine", reject_stream_options=True))
        t = FakeTime()
        client = make_client(server, t)
        assert text_of(await collect(client)) == "fine"
        assert text_of(await collect(client)) == "fine"
        sent = ["stream_options" in r.json for r in server.requests]
        assert sent == [True, False, False]
        assert t.sleeps == []

    async def test_other_400_is_not_retried(self) -> None:
        """A 400 that is not about stream_options (the retry without it fails too) raises, without looping."""
        server = FakeOpenAIServer(default=Script(status=400))
        client = make_client(server)
        with pytest.raises(SummarizeError, match="HTTP 400"):
            await collect(client)
        assert len(server.requests) == 2
        assert client.include_usage is True

    async def test_provider_presets(self) -> None:
        """Presets fill the base URL and read the API key from their env var; explicit values win."""
        cfg = LLMConfig.from_provider("cerebras", "qwen-3-coder", env={"CEREBRAS_API_KEY": "k1"})
        assert (cfg.base_url, cfg.api_key, cfg.model) == ("https://api.cerebras.ai/v1", "k1", "qwen-3-coder")
        assert LLMConfig.from_provider("ollama", "q", env={}).api_key is None
        assert (
            LLMConfig.from_provider("vllm", "q", env={}, base_url="http://h:1/v1").base_url == "http://h:1/v1"
        )
        assert set(PROVIDERS) == {"cerebras", "openai", "vllm", "ollama", "llamacpp"}
        with pytest.raises(SummarizeError, match="unknown LLM provider"):
            LLMConfig.from_provider("nope", "q", env={})


@pytest.mark.anyio
class TestSlowStreams:
    @pytest.mark.parametrize("real", [False, True], ids=["mock", "http"])
    async def test_each_token_reaches_the_caller_before_the_next_is_sent(self, real: bool) -> None:
        """Deltas are yielded as they arrive: token k+1 is only released after delta k was received."""
        step = asyncio.Semaphore(0)
        words = ["alpha", " beta", " gamma", " delta"]
        server = FakeOpenAIServer([Script(tokens=words, step=step)])

        async def run(client: ChatClient) -> list[str]:
            got: list[str] = []
            step.release()
            async with aclosing(client.stream(MESSAGES, max_tokens=8)) as events:
                async for e in events:
                    if isinstance(e, Delta):
                        got.append(e.text)
                        step.release()
            return got

        if real:
            async with real_http(server) as client:
                got = await asyncio.wait_for(run(client), 10)
        else:
            got = await asyncio.wait_for(run(make_client(server)), 10)
        assert got == words

    async def test_ttft_and_rate_pacing_over_real_http(self) -> None:
        """The emulator paces tokens after a TTFT; the client receives them all over real HTTP."""
        server = FakeOpenAIServer([Script(content="x " * 40, ttft_s=0.05, tokens_per_s=2000)])
        async with real_http(server) as client:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            events = await asyncio.wait_for(collect(client), 10)
            elapsed = loop.time() - t0
        assert text_of(events) == "x " * 40
        assert elapsed >= 0.05


@pytest.mark.anyio
class TestDisconnects:
    async def test_mid_stream_disconnect_raises_after_partial_output(self) -> None:
        """A disconnect after output began raises SummarizeError; the caller keeps the deltas; no retry."""
        server = FakeOpenAIServer(
            [Script(tokens=["a", "b", "c", "d"], disconnect_after=2), Script(content="retry")]
        )
        client = make_client(server)
        got: list[str] = []
        with pytest.raises(SummarizeError) as info:
            async with aclosing(client.stream(MESSAGES, max_tokens=8)) as events:
                async for e in events:
                    assert isinstance(e, Delta)
                    got.append(e.text)
        assert got == ["a", "b"]
        assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
        assert len(server.requests) == 1

    async def test_disconnect_before_first_token_is_retried(self) -> None:
        """A connection dropped before any delta is retried, and the retry's answer is streamed."""
        server = FakeOpenAIServer([Script(content="lost", disconnect_after=0), Script(content="second try")])
        t = FakeTime()
        events = await collect(make_client(server, t))
        assert text_of(events) == "second try"
        assert len(server.requests) == 2 and len(t.sleeps) == 1

    async def test_disconnect_over_real_http(self) -> None:
        """Over real HTTP, a connection closed without the final chunk raises after the partial output."""
        server = FakeOpenAIServer([Script(tokens=["a", "b", "c"], disconnect_after=1)])
        got: list[str] = []
        async with real_http(server) as client:
            with pytest.raises(SummarizeError):
                async with aclosing(client.stream(MESSAGES, max_tokens=8)) as events:
                    async for e in events:
                        if isinstance(e, Delta):
                            got.append(e.text)
        assert got == ["a"]

    async def test_closing_early_closes_the_response(self) -> None:
        """Leaving the iteration early closes the HTTP response: the server sees the stream abandoned."""
        server = FakeOpenAIServer([Script(content="one two three four five")])
        client = make_client(server)
        async with aclosing(client.stream(MESSAGES, max_tokens=8)) as events:
            async for e in events:
                assert isinstance(e, Delta)
                break
        assert server.disconnects == 1
        assert client.breaker.state == "closed"

    async def test_cancellation_stops_the_server_generating(self) -> None:
        """Cancelling the consumer mid-stream closes the connection; the real server stops sending."""
        step = asyncio.Semaphore(0)
        server = FakeOpenAIServer([Script(tokens=["a", "b", "c", "d", "e"], step=step)])
        first = asyncio.Event()

        async def consume(client: ChatClient) -> None:
            async with aclosing(client.stream(MESSAGES, max_tokens=8)) as events:
                async for _ in events:
                    first.set()

        async with real_http(server) as client:
            step.release()
            task = asyncio.create_task(consume(client))
            await asyncio.wait_for(first.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(5):
                step.release()
            await asyncio.wait_for(server.disconnected.wait(), 10)
        assert server.completed == 0
        assert client.breaker.state == "closed"


@pytest.mark.anyio
class TestRetries:
    async def test_429_honours_retry_after_seconds(self) -> None:
        """A 429 waits the server's Retry-After seconds, then the retry succeeds."""
        server = FakeOpenAIServer([Script(status=429, headers={"Retry-After": "2"}), Script(content="ok")])
        t = FakeTime()
        assert text_of(await collect(make_client(server, t))) == "ok"
        assert t.sleeps == [2.0]

    async def test_429_retry_after_http_date_and_cap(self) -> None:
        """An HTTP-date Retry-After becomes a delay from now; a huge one is capped at retry_after_max."""
        date = email.utils.formatdate(1_700_000_000.0 + 5, usegmt=True)
        server = FakeOpenAIServer([
            Script(status=429, headers={"Retry-After": date}),
            Script(status=429, headers={"Retry-After": "86400"}),
            Script(content="ok"),
        ])  # fmt: skip
        t = FakeTime()
        assert text_of(await collect(make_client(server, t, retry_after_max=12.0))) == "ok"
        assert t.sleeps == [5.0, 12.0]

    async def test_5xx_retried_with_bounded_jittered_backoff(self) -> None:
        """5xx answers are retried with exponential backoff within [50%, 100%] of each step."""
        server = FakeOpenAIServer(
            [Script(status=500), Script(status=503), Script(status=502), Script(content="ok")]
        )
        t = FakeTime()
        client = make_client(server, t, max_retries=3, backoff_base=0.25, backoff_max=0.6)
        assert text_of(await collect(client)) == "ok"
        assert len(t.sleeps) == 3
        for sleep, step in zip(t.sleeps, [0.25, 0.5, 0.6], strict=True):
            assert step * 0.5 <= sleep <= step

    async def test_gives_up_after_max_retries(self) -> None:
        """Persistent 500s raise SummarizeError from the HTTP status error after max_retries + 1 attempts."""
        server = FakeOpenAIServer(default=Script(status=500))
        t = FakeTime()
        with pytest.raises(SummarizeError, match="giving up after 3 attempts") as info:
            await collect(make_client(server, t, max_retries=2))
        assert isinstance(info.value.__cause__, httpx.HTTPStatusError)
        assert len(server.requests) == 3

    @pytest.mark.parametrize(
        "exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow")]
    )
    async def test_transport_errors_are_retried_then_surface(self, exc: Exception) -> None:
        """Connect errors and timeouts are retried, then surface as SummarizeError raised from them."""
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            raise exc

        t = FakeTime()
        client = ChatClient(
            LLMConfig("http://fake/v1", "m", max_retries=2),
            client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
            clock=t.clock,
            sleep=t.sleep,
        )
        with pytest.raises(SummarizeError) as info:
            await collect(client)
        assert info.value.__cause__ is exc
        assert calls == 3

    async def test_401_is_not_retried(self) -> None:
        """A client error such as 401 fails at once."""
        server = FakeOpenAIServer(default=Script(status=401))
        t = FakeTime()
        with pytest.raises(SummarizeError, match="HTTP 401"):
            await collect(make_client(server, t, api_key="bad"))
        assert len(server.requests) == 1 and t.sleeps == []


@pytest.mark.anyio
class TestCircuitBreaker:
    async def test_opens_after_consecutive_failures(self) -> None:
        """After breaker_failures failed calls, calls fail fast with 'circuit open' and send nothing."""
        server = FakeOpenAIServer(default=Script(status=500))
        client = make_client(server, max_retries=0, breaker_failures=3)
        for _ in range(3):
            with pytest.raises(SummarizeError, match="giving up"):
                await collect(client)
        with pytest.raises(SummarizeError, match="circuit open"):
            await collect(client)
        assert len(server.requests) == 3
        assert client.breaker.state == "open"

    async def test_half_open_lets_one_trial_through(self) -> None:
        """After breaker_reset_s one trial call passes (others still fail fast); its success closes it."""
        step = asyncio.Semaphore(0)
        server = FakeOpenAIServer([Script(status=500), Script(status=500), Script(tokens=["ok"], step=step)])
        t = FakeTime()
        client = make_client(server, t, max_retries=0, breaker_failures=2, breaker_reset_s=30.0)
        for _ in range(2):
            with pytest.raises(SummarizeError):
                await collect(client)
        t.now += 30.0
        assert client.breaker.state == "half_open"
        trial = asyncio.create_task(collect(client))
        await asyncio.wait_for(server.wait_requests(3), 10)  # the trial is in flight, waiting on `step`
        with pytest.raises(SummarizeError, match="circuit open"):
            await collect(client)
        step.release()
        assert text_of(await trial) == "ok"
        assert client.breaker.state == "closed"

    async def test_failed_trial_reopens(self) -> None:
        """A failed half-open trial opens the breaker again for another breaker_reset_s."""
        server = FakeOpenAIServer(default=Script(status=503))
        t = FakeTime()
        client = make_client(server, t, max_retries=0, breaker_failures=1, breaker_reset_s=10.0)
        with pytest.raises(SummarizeError, match="giving up"):
            await collect(client)
        t.now += 10.0
        with pytest.raises(SummarizeError, match="giving up"):
            await collect(client)
        assert client.breaker.state == "open"
        t.now += 9.0
        with pytest.raises(SummarizeError, match="circuit open"):
            await collect(client)
        assert len(server.requests) == 2

    async def test_success_resets_the_failure_count(self) -> None:
        """Failures must be consecutive: a success in between resets the count."""
        server = FakeOpenAIServer([Script(status=500), Script(content="ok"), Script(status=500)])
        client = make_client(server, max_retries=0, breaker_failures=2)
        with pytest.raises(SummarizeError):
            await collect(client)
        await collect(client)
        with pytest.raises(SummarizeError):
            await collect(client)
        assert client.breaker.state == "closed"


@pytest.mark.anyio
class TestTruncatedJson:
    async def test_length_cut_json_streams_summary_and_repairs(self) -> None:
        """A JSON answer cut by max_tokens ends with finish_reason 'length'; the streamed summary survives."""
        answer = '{"title": "DB pool exhausted", "summary": "Connections to orders-db time out af'
        server = FakeOpenAIServer([Script(content=answer, finish_reason="length", dialect="xllamacpp")])
        streamer = JsonFieldStreamer(("title", "summary"))
        summary: list[str] = []
        done: Done | None = None
        async with aclosing(make_client(server).stream(MESSAGES, max_tokens=20)) as events:
            async for e in events:
                if isinstance(e, Delta):
                    summary += [t for f, t in streamer.feed(e.text) if f == "summary"]
                else:
                    done = e
        assert done is not None and done.finish_reason == "length"
        assert "".join(summary) == "Connections to orders-db time out af"
        obj, complete = streamer.result()
        assert complete is False
        assert obj == {"title": "DB pool exhausted", "summary": "Connections to orders-db time out af"}
