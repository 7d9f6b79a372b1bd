"""The summarize stage: findings pass through at once; model answers follow as deltas and a new version.

::

    FindingWork ──▶ [cache hit: finding carries the cached answer]                     ──▶ Finding v1
                    [no model / budget spent / breaker open / backlog: model-free, labelled] ─▶ Finding v1
                    [else: Finding v1 (model-free) now, then a task: SummaryDelta… ─▶ Finding v2]

The tasks are bounded (``concurrency`` in flight, ``max_pending`` waiting). On shutdown the calls in
flight get ``drain_timeout_s`` to finish, then are cancelled (their findings are already out).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass

import anyio
import structlog
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from triage.detect import Detector
from triage.model import Checkpoint, Finding, Level, Summary
from triage.settings import LLMSettings
from triage.store import Store
from triage.summarize.fallback import ModelFreeSummarizer
from triage.summarize.prompt import PromptContext
from triage.summarize.summarizer import LLMSummarizer, with_note

log = structlog.get_logger("triage.summarize")


@dataclass(slots=True)
class FindingWork:
    """A finding as detection made it, with the evidence gathered for its prompt."""

    finding: Finding
    context: PromptContext


class SummaryDelta:
    """A piece of a finding's summary text, as the model streams it."""

    __slots__ = ("finding", "text")

    def __init__(self, finding: Finding, text: str) -> None:
        self.finding = finding
        self.text = text


_LEVELS = {level.name: int(level) for level in Level}
MAX_REMEMBERED = 10_000  # incidents whose latest summary is kept for their updates

# Kinds that can lead to a model call: a new incident, or a new variant of one (a new template).
MODEL_KINDS = frozenset({"new", "variant"})

WorkItem = FindingWork | Checkpoint
OutItem = Finding | SummaryDelta | Checkpoint


class PriorityLimiter:
    """At most ``slots`` holders at once; waiters are let in by priority (lowest first), then arrival.

    When the model is slow or the budget tight, an ERROR's summary should not wait behind a WARNING's.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: list[tuple[int, int, anyio.Event]] = []
        self._seq = 0

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        self._seq += 1
        entry = (priority, self._seq, anyio.Event())
        heapq.heappush(self._waiting, entry)
        try:
            await entry[2].wait()
        except BaseException:
            if entry in self._waiting:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            else:  # the slot was handed over just as we were cancelled: pass it on
                self.release()
            raise

    def release(self) -> None:
        if self._waiting:
            heapq.heappop(self._waiting)[2].set()  # the slot goes straight to the next waiter
        else:
            self._free += 1


class SummarizeStage:
    """Attaches summaries to findings; the model is called off the hot path."""

    def __init__(self, *, store: Store, detector: Detector, fallback: ModelFreeSummarizer,
                 llm: LLMSummarizer | None, settings: LLMSettings) -> None:
        self.store = store
        self.detector = detector
        self.fallback = fallback
        self.llm = llm
        self.settings = settings
        self._limiter = PriorityLimiter(settings.concurrency)
        self.pending = 0
        self.skipped: dict[str, int] = {}
        self._latest: OrderedDict[str, Summary] = OrderedDict()
        # Versions are stamped in two places (detection, and model answers here); a version is fixed and
        # sent under this lock, and one not above the latest sent for its id is stamped again, so that
        # sinks see every id's versions strictly increasing (and its times never going back).
        self._order = anyio.Lock()
        self._sent: OrderedDict[str, tuple[int, float]] = OrderedDict()

    async def run(self, inp: ObjectReceiveStream[WorkItem], out: MemoryObjectSendStream[OutItem]) -> None:
        async with inp, out, anyio.create_task_group() as tg:
            async for item in inp:
                if isinstance(item, Checkpoint):
                    await out.send(item)
                    continue
                finding, start = self._first_version(item.finding)
                finding = await self._publish(finding, out)
                if start:
                    self.pending += 1
                    tg.start_soon(self._call, finding, item.context, out.clone())
            # Input closed (shutdown or end of replay): calls in flight get a bounded time to finish.
            tg.cancel_scope.deadline = anyio.current_time() + self.settings.drain_timeout_s

    def _first_version(self, finding: Finding) -> tuple[Finding, bool]:
        """The finding to send now, and whether a model call should follow."""
        if finding.kind not in MODEL_KINDS:  # an update of a known incident keeps its latest summary
            last = self._latest.get(finding.id)
            return finding.model_copy(update={"summary": last or self.fallback(finding)}), False
        model_free = self.fallback(finding)
        if self.llm is None:
            return self._keep(finding.model_copy(update={"summary": model_free})), False
        cached = self.llm.cached(finding)
        if cached is not None:
            return self._keep(finding.model_copy(update={"summary": cached})), False
        reason = self.llm.refusal()
        if reason is None and self.pending >= self.settings.max_pending:
            reason = "too many findings waiting for the model"
        if reason is not None:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
            return self._keep(finding.model_copy(update={"summary": with_note(model_free, reason)})), False
        return self._keep(finding.model_copy(update={"summary": model_free})), True

    def _keep(self, finding: Finding) -> Finding:
        """Remember the latest summary of each incident (bounded), for its later updates."""
        if finding.summary is not None:
            self._latest[finding.id] = finding.summary
            self._latest.move_to_end(finding.id)
            while len(self._latest) > MAX_REMEMBERED:
                self._latest.popitem(last=False)
        return finding

    async def _call(self, finding: Finding, context: PromptContext, out: MemoryObjectSendStream[OutItem]) -> None:
        assert self.llm is not None
        async with out:
            try:
                await self._limiter.acquire(-_LEVELS.get(finding.level, 0))  # most severe first
                try:

                    async def on_delta(text: str) -> None:
                        await out.send(SummaryDelta(finding, text))

                    fallback = finding.summary or self.fallback(finding)
                    try:
                        summary: Summary = await self.llm.summarize(finding, context, on_delta, fallback)
                    except Exception:  # a bug in answer handling must not stop the pipeline
                        log.exception("summarizer failed", cluster=finding.id)
                        summary = with_note(fallback, "internal error while reading the answer")
                finally:
                    self._limiter.release()
            finally:
                self.pending -= 1
            update = finding.model_copy(update={
                "version": 0, "kind": "summary", "summary": summary, "created_at": self.detector.now(),
            })
            await self._publish(self._keep(update), out)

    async def _publish(self, finding: Finding, out: MemoryObjectSendStream[OutItem]) -> Finding:
        """Store and send ``finding`` with a version above every version of its id sent before."""
        async with self._order:
            version, created_at = self._sent.get(finding.id, (0, finding.created_at))
            if finding.version <= version or finding.created_at < created_at:
                finding = finding.model_copy(update={
                    "version": self.detector.next_version(finding.id) if finding.version <= version
                    else finding.version,
                    "created_at": max(created_at, finding.created_at),
                })
            self._sent[finding.id] = (finding.version, finding.created_at)
            self._sent.move_to_end(finding.id)
            while len(self._sent) > MAX_REMEMBERED:
                self._sent.popitem(last=False)
            self.store.add_finding(finding)
            await out.send(finding)
        return finding
