"""End to end against the real local model (xllamacpp + Qwen2.5-Coder-1.5B, 1 thread), installed by `make model`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from triage.summarize.client import ChatClient, Delta, Done, LLMConfig, StreamEvent
from triage.summarize.jsonstream import JsonFieldStreamer
from triage.summarize.local_model import LocalModel, missing_reason

REASON = missing_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REASON is not None, reason=f"local model unavailable: {REASON}"),
]

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "summary": {"type": "string"}},
    "required": ["title", "summary"],
}
MESSAGES = [
    {
        "role": "system",
        "content": "You triage production log clusters. Answer with one JSON object: title, summary.",
    },
    {
        "role": "user",
        "content": (
            "Cluster (new, 212 events in 60 s, service sshd):\n"
            "```log\nFailed password for invalid user <*> from <*> port <*> ssh2\n```\n"
            "Samples: 'Failed password for invalid user admin from 203.0.113.7 port 52110 ssh2'"
        ),
    },
]


@pytest.mark.anyio
class TestLocalModel:
    async def test_streams_json_then_stops_when_abandoned(self) -> None:
        """Real server: JSON deltas stream with a finish_reason and usage; an abandoned stream frees the server."""
        async with LocalModel(threads=1, n_ctx=2048, start_timeout=120) as model:
            chat = ChatClient(
                LLMConfig(base_url=model.base_url, model="local", read_timeout=120, max_retries=0)
            )
            try:
                streamer = JsonFieldStreamer(("title", "summary"))
                deltas: list[str] = []
                done: Done | None = None
                t0 = time.monotonic()
                ttft: float | None = None
                rf = {"type": "json_object", "schema": SCHEMA}
                async with aclosing(
                    chat.stream(MESSAGES, max_tokens=96, response_format=rf, temperature=0.0)
                ) as ev:
                    async for e in ev:
                        if isinstance(e, Delta):
                            ttft = ttft if ttft is not None else time.monotonic() - t0
                            deltas.append(e.text)
                            streamer.feed(e.text)
                        else:
                            assert done is None, "exactly one Done, last"
                            done = e
                # Strict protocol.
                assert len(deltas) >= 2 and all(deltas)
                assert done is not None and done.finish_reason in ("stop", "length")
                if done.usage is not None:
                    assert 0 < done.usage.completion_tokens <= 96
                    assert done.usage.prompt_tokens > 0
                # Loose content: some JSON object with a non-empty title or summary.
                obj, complete = streamer.result()
                assert "".join(deltas).lstrip().startswith("{")
                assert obj.get("title") or obj.get("summary"), obj
                assert complete or done.finish_reason == "length"

                # Abandon a long answer (~1000 tokens, well over a minute at 1 thread) after its first delta;
                # with n_parallel=1 the next request is only served promptly if the server stopped generating.
                count = [
                    {"role": "user", "content": "Count from 1 to 1000, separated by commas. Nothing else."}
                ]
                async with aclosing(chat.stream(count, max_tokens=1000, temperature=0.0)) as ev:
                    async for e in ev:
                        assert isinstance(e, Delta)
                        break
                t1 = time.monotonic()
                async with aclosing(chat.stream(MESSAGES, max_tokens=4, temperature=0.0)) as ev:
                    events = await asyncio.wait_for(_collect(ev), 120)
                assert isinstance(events[-1], Done)
                assert time.monotonic() - t1 < 30
                print(f"\nlocal model: ttft {ttft:.2f}s, {len(deltas)} deltas, usage {done.usage}")
            finally:
                await chat.aclose()


async def _collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [e async for e in events]
