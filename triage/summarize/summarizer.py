"""The model summarizer: one streamed call per new or changed cluster, cached, budgeted, never blocking.

What it guarantees:
- a finding never waits for the model: the pipeline sends it with the model-free summary first, and the
  model's answer follows as deltas and then as a new version of the finding;
- one call per (cluster id, template): answers are cached in the store, so a restart does not pay again;
- bounded: ``max_tokens`` per call, ``tokens_per_hour``, ``concurrency`` calls in flight, ``max_pending``
  waiting; beyond any of them the finding keeps the model-free summary, labelled with the reason;
- a model failure (timeouts, 429/5xx after retries, circuit open, invalid or cut-off JSON) keeps what
  streamed, marks the summary partial, or falls back to the model-free text: it never loses a finding.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog
from pydantic import ValidationError

from triage.errors import SummarizeError
from triage.model import Finding, Summary
from triage.redact import PlaceholderTable, Redactor
from triage.settings import LLMSettings
from triage.summarize.client import ChatClient, Delta, Done
from triage.summarize.jsonstream import JsonFieldStreamer
from triage.summarize.prompt import Answer, PromptContext, build_messages, response_format

log = structlog.get_logger("triage.summarize")

OnDelta = Callable[[str], Awaitable[None]]


class SummaryCache(Protocol):
    def get_summary(self, cluster_id: str, template_hash: str) -> Summary | None: ...

    def put_summary(self, cluster_id: str, template_hash: str, summary: Summary) -> None: ...


def template_hash(template: str) -> str:
    return hashlib.blake2b(template.encode(), digest_size=8).hexdigest()


class TokenBudget:
    """Tokens spent in the last hour (sliding window); ``per_hour == 0`` means no model calls at all."""

    __slots__ = ("_clock", "_spent", "per_hour")

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour
        self._clock = clock
        self._spent: deque[tuple[float, int]] = deque()

    def used(self) -> int:
        horizon = self._clock() - 3600
        while self._spent and self._spent[0][0] < horizon:
            self._spent.popleft()
        return sum(n for _, n in self._spent)

    def allows(self, tokens: int) -> bool:
        return self.used() + tokens <= self.per_hour

    def spend(self, tokens: int) -> None:
        self._spent.append((self._clock(), tokens))


class _Restorer:
    """Puts PII back into streamed text, holding back a placeholder split across deltas."""

    __slots__ = ("_held", "_table")

    def __init__(self, table: PlaceholderTable) -> None:
        self._table = table
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        cut = text.rfind("<")
        if cut != -1 and ">" not in text[cut:] and len(text) - cut <= 16:
            self._held, text = text[cut:], text[:cut]
        else:
            self._held = ""
        return self._table.restore(text)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._table.restore(text)


def with_note(summary: Summary, note: str) -> Summary:
    """The model-free summary, labelled with why the model was not used."""
    return summary.model_copy(update={"text": f"{summary.text} (model not used: {note})"})


class LLMSummarizer:
    """Streams a summary and a suggested fix for one finding from an OpenAI-compatible endpoint."""

    def __init__(self, chat: ChatClient, *, settings: LLMSettings, redactor: Redactor, cache: SummaryCache,
                 clock: Callable[[], float] = time.monotonic, audit_log: Path | None = None) -> None:
        self.chat = chat
        self.settings = settings
        self.redactor = redactor
        self.cache = cache
        self.budget = TokenBudget(settings.tokens_per_hour, clock)
        self.audit_log = audit_log
        self._format = response_format(_format_for(settings))
        self.calls = 0
        self.failures = 0
        # Seconds from sending a request to the end of its answer, for the latest calls (benchmarks).
        self.call_seconds: deque[float] = deque(maxlen=1000)

    @property
    def model(self) -> str:
        return self.chat.config.model

    def cached(self, finding: Finding) -> Summary | None:
        return self.cache.get_summary(finding.id, template_hash(finding.template))

    def refusal(self) -> str | None:
        """Why a call cannot be made now (budget, open breaker), or None."""
        if self.chat.breaker.state == "open":
            return "model endpoint failing, circuit open"
        if not self.budget.allows(self.settings.max_tokens):
            return "hourly token budget spent"
        return None

    async def summarize(self, finding: Finding, context: PromptContext, on_delta: OnDelta,
                        fallback: Summary) -> Summary:
        """Stream the answer's summary text through ``on_delta``; return the final Summary.

        On failure returns ``fallback`` labelled with the reason (with any streamed text kept).
        """
        table = PlaceholderTable()
        messages = build_messages(finding, context, redactor=self.redactor, table=table,
                                  samples=self.settings.samples, max_chars=self.settings.prompt_max_chars)
        prompt_chars = sum(len(m["content"]) for m in messages)
        estimate = prompt_chars // 3 + self.settings.max_tokens
        if not self.budget.allows(estimate):
            return with_note(fallback, "hourly token budget spent")
        self._audit(finding, messages)
        streamer = JsonFieldStreamer(fields=("summary",))
        restorer = _Restorer(table)
        finish: str | None = None
        raw_chars = 0
        tokens = 0
        self.calls += 1
        started = time.perf_counter()
        try:
            async with aclosing(self.chat.stream(messages, max_tokens=self.settings.max_tokens,
                                                 response_format=self._format,
                                                 temperature=self.settings.temperature)) as events:
                async for event in events:
                    if isinstance(event, Delta):
                        raw_chars += len(event.text)
                        for _field, text in streamer.feed(event.text):
                            out = restorer.feed(text)
                            if out:
                                await on_delta(out)
                    elif isinstance(event, Done):
                        finish = event.finish_reason
                        if event.usage is not None and event.usage.total_tokens:
                            tokens = event.usage.total_tokens
        except SummarizeError as e:
            self.failures += 1
            self.budget.spend(tokens or prompt_chars // 4 + raw_chars // 4)
            log.warning("model call failed", cluster=finding.id, error=str(e))
            streamed = streamer.values.get("summary", "")
            if streamed:
                return self._partial(streamer, table, finding, note=f"model failed mid-answer: {e}")
            return with_note(fallback, f"model failed: {e}")
        self.call_seconds.append(time.perf_counter() - started)
        tail = restorer.flush()
        if tail:
            await on_delta(tail)
        self.budget.spend(tokens or prompt_chars // 4 + raw_chars // 4)
        obj, complete = streamer.result()
        if complete and finish != "length":
            try:
                answer = Answer.model_validate(obj)
            except ValidationError:
                return self._partial(streamer, table, finding, note="answer did not match the schema")
            summary = self._summary(answer.model_dump(), table, partial=False)
            self.cache.put_summary(finding.id, template_hash(finding.template), summary)
            return summary
        return self._partial(streamer, table, finding,
                             note="answer cut off at max_tokens" if finish == "length" else "answer was not valid JSON")

    def _partial(self, streamer: JsonFieldStreamer, table: PlaceholderTable, finding: Finding, *,
                 note: str) -> Summary:
        obj, _ = streamer.result()
        obj = dict(obj) if isinstance(obj, dict) else {}
        if not obj.get("summary"):
            obj["summary"] = streamer.values.get("summary", "")
        summary = self._summary(obj, table, partial=True)
        log.info("partial model answer", cluster=finding.id, note=note)
        return summary.model_copy(update={"text": f"{summary.text} [partial: {note}]".strip()})

    def _summary(self, obj: dict[str, Any], table: PlaceholderTable, *, partial: bool) -> Summary:
        def text(key: str, n: int = 4000) -> str:
            v = obj.get(key)
            return table.restore(str(v))[:n] if v is not None else ""

        steps = obj.get("fix_steps")
        fix = [table.restore(str(s))[:500] for s in steps[:8]] if isinstance(steps, list) else []
        related = obj.get("related_clusters")
        conf = obj.get("confidence")
        return Summary(
            source="llm", title=text("title", 200), text=text("summary"), likely_cause=text("likely_cause"),
            fix_steps=fix, severity=text("severity", 20),
            confidence=float(conf) if isinstance(conf, int | float) and 0 <= conf <= 1 else None,
            related=[str(r)[:40] for r in related[:10]] if isinstance(related, list) else [],
            partial=partial, model=self.model,
        )

    def _audit(self, finding: Finding, messages: list[dict[str, str]]) -> None:
        if self.audit_log is None:
            return
        body = self.chat.build_body(messages, max_tokens=self.settings.max_tokens,
                                    response_format=self._format, temperature=self.settings.temperature)
        line = orjson.dumps({"time": time.time(), "cluster": finding.id, "url": self.chat.config.base_url,
                             "body": body})
        with self.audit_log.open("ab") as f:
            f.write(line + b"\n")


def _format_for(settings: LLMSettings) -> str:
    if settings.response_format != "auto":
        return settings.response_format
    if settings.provider in ("llamacpp", "local", None):
        return "json_object_schema"
    if settings.provider == "ollama":
        return "json_object"
    return "json_schema"
