"""The pipeline: stages in one task group, joined by bounded channels, with one shutdown path.

::

    read (one task per source) ──batches──▶ decode+assemble+redact ──events──▶ cluster+detect
        ──findings──▶ summarize (model calls off the hot path) ──findings, summary deltas──▶
        deliver (sinks; at each Checkpoint: store.flush, sinks.flush, source.commit)

Each channel holds at most ``queue_batches`` items (a batch is one read of a source, up to a few
thousand records), so a slow stage slows the sources instead of growing memory. ``Checkpoint``
barriers travel behind the records they cover; the assembler lowers a barrier's position for a stream
whose trace it still holds, so a commit never covers a record that is not processed.

Shutdown: ``stop()`` (first Ctrl-C) closes the sources; each stage ends when its input closes, after
forwarding what it holds; the last barrier commits. Cancelling the task group (second Ctrl-C) exits at
once without committing: the records since the last checkpoint are read again on the next start.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from typing import Protocol

import anyio
import structlog
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream

from connectors.sinks.base import BackgroundSink, Sink, StreamingSink
from connectors.sources.base import DeadLetterSource, Source
from triage.accounting import Counters
from triage.clustering.base import Clusterer
from triage.detect import Detector
from triage.fastlane import FastLane, Segment, SegmentApplier, ShapeMemo, ShapeStep
from triage.model import Checkpoint, Cluster, Event, Finding, Record, RowBatch, StreamBatch
from triage.parsing import Decoder, MultilineAssembler
from triage.settings import PipelineSettings
from triage.store import Store
from triage.summarize.context import ContextCollector
from triage.summarize.prompt import PromptContext
from triage.summarize.stage import MODEL_KINDS, FindingWork, OutItem, SummarizeStage, SummaryDelta, WorkItem

log = structlog.get_logger("triage.pipeline")

# While no record arrives, the decode stage still sends an (empty) batch this often, so that detection
# can resolve quiet incidents and remind of firing ones.
TICK_S = 1.0

RecordItem = Sequence[Record] | Checkpoint
EventItem = Sequence[Event | Segment] | Checkpoint


class EventStep(Protocol):
    """A processing step applied to every assembled event before clustering (redaction)."""

    def __call__(self, event: Event) -> Event: ...


@dataclass(frozen=True, slots=True)
class Hooks:
    """Optional callbacks for observers (the demo's progress, tests)."""

    on_finding: Callable[[Finding], None] | None = None
    on_checkpoint: Callable[[Checkpoint], None] | None = None


class Pipeline:
    """Wires sources → decode → cluster → detect → sinks around one store."""

    def __init__(
        self,
        *,
        sources: Sequence[Source],
        sinks: Sequence[Sink],
        store: Store,
        clusterer: Clusterer,
        detector: Detector,
        summarizer: SummarizeStage,
        settings: PipelineSettings,
        context: ContextCollector | None = None,
        max_line_bytes: int = 65_536,
        steps: Sequence[EventStep] = (),
        counters: Counters | None = None,
        hooks: Hooks = Hooks(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sources = list(sources)
        self.sinks = list(sinks)
        self.store = store
        self.clusterer = clusterer
        self.detector = detector
        self.summarizer = summarizer
        self.context = context if context is not None else ContextCollector()
        self.settings = settings
        self.counters = counters if counters is not None else Counters()
        self.steps = list(steps)
        self.hooks = hooks
        self._clock = clock
        self._decoder = Decoder(self.counters, max_line_bytes=max_line_bytes)
        self._assembler = MultilineAssembler(
            self.counters, max_event_lines=settings.max_event_lines, max_event_bytes=settings.max_event_bytes,
            clock=clock,
        )
        # The decode stage's loop, with the repeat-shape lane (triage/fastlane/) when it is on and every
        # step can vouch for shapes.
        self._lane = FastLane(ShapeMemo(max_line_bytes=max_line_bytes) if settings.fast_lane else None,
                              self._decoder, self._assembler, self.steps, self.counters, min_level=detector.min_level)
        self._segments: SegmentApplier | None = None
        memo = self._lane.memo
        if memo is not None:
            shape_steps = [step for step in self.steps if isinstance(step, ShapeStep)]
            self._segments = SegmentApplier(memo, self._decoder, shape_steps, clusterer, store, detector,
                                            self.context, self.counters, context_lines=self.context.lines,
                                            on_created=self._created)
        self._stopping = anyio.Event()
        self._by_name = {s.name: s for s in self.sources}
        if len(self._by_name) != len(self.sources):
            raise ValueError("source names must be unique")
        self.checkpoints = 0
        self.close_timeout_s = 5.0

    @property
    def lane_records(self) -> int:
        """Records the repeat-shape lane counted (the rest took the full path)."""
        return self._lane.records

    # --- control ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop: sources close, stages drain, the last checkpoint commits."""
        self._stopping.set()

    async def run(self) -> Counters:
        """Run until every source has ended (replay) or ``stop()`` was called, then return counters."""
        with _collector_tuned():
            return await self._run()

    async def _run(self) -> Counters:
        records_tx, records_rx = anyio.create_memory_object_stream[RecordItem](self.settings.queue_batches)
        events_tx, events_rx = anyio.create_memory_object_stream[EventItem](self.settings.queue_batches)
        work_tx, work_rx = anyio.create_memory_object_stream[WorkItem](self.settings.queue_batches * 64)
        findings_tx, findings_rx = anyio.create_memory_object_stream[OutItem](self.settings.queue_batches * 64)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_stop)
                background = [s for s in self.sinks if isinstance(s, BackgroundSink)]
                for bg in background:
                    tg.start_soon(bg.run)
                async with records_tx:
                    for source in self.sources:
                        tg.start_soon(self._read, source, records_tx.clone())
                tg.start_soon(self._decode, records_rx, events_tx)
                tg.start_soon(self._cluster, events_rx, work_tx)
                tg.start_soon(self.summarizer.run, work_rx, findings_tx)
                await self._deliver(findings_rx)
                # Model answers that arrived after the last checkpoint: make them durable too.
                self.store.flush()
                for sink in self.sinks:
                    await sink.flush()
                for bg in background:  # ends their senders (each drains for a bounded time)
                    await bg.aclose()
                self._stopping.set()  # releases _watch_stop
        finally:
            # Bounded, so that a hung sink cannot keep a second Ctrl-C from exiting.
            with anyio.move_on_after(self.close_timeout_s, shield=True):
                for sink in self.sinks:
                    try:
                        await sink.aclose()
                    except Exception:  # a sink failing to close must not hide the original error
                        log.exception("sink close failed", sink=sink.name)
                for source in self.sources:
                    await source.aclose()
        return self.counters

    async def _watch_stop(self) -> None:
        await self._stopping.wait()
        for source in self.sources:
            await source.aclose()

    # --- stages ------------------------------------------------------------------------------------

    async def _read(self, source: Source, out: ObjectSendStream[RecordItem]) -> None:
        counters = self.counters
        every_n = self.settings.checkpoint_records
        every_s = self.settings.checkpoint_interval_s
        positions: dict[str, int] = {}
        since = 0
        last = self._clock()
        async with out:
            async for batch in source.batches():
                if not batch:
                    # An idle source (or one waiting on a rebalance) still commits what it handed out.
                    now = self._clock()
                    if since and (now - last >= every_s or getattr(source, "checkpoint_wanted", False)):
                        await out.send(Checkpoint(source.name, dict(positions)))
                        since, last = 0, now
                    continue
                counters.read += len(batch)
                # Each stream's position: the end of its last record.
                if isinstance(batch, StreamBatch | RowBatch):
                    last_record = batch[-1]
                    positions[last_record.stream] = last_record.end
                else:
                    positions.update(zip(map(_STREAM, batch), map(_END, batch), strict=True))  # in C
                if not isinstance(batch, RowBatch) and any(map(_DEAD_LETTER, batch)):  # reason: non-empty
                    batch = await self._dead_letter(source, batch)
                await out.send(batch)
                since += len(batch)
                now = self._clock()
                if since >= every_n or now - last >= every_s or getattr(source, "checkpoint_wanted", False):
                    await out.send(Checkpoint(source.name, dict(positions)))
                    since, last = 0, now
            await out.send(Checkpoint(source.name, dict(positions), final=True))

    async def _dead_letter(self, source: Source, batch: Sequence[Record]) -> list[Record]:
        """Hand records the source marked to its dead-letter place; pass the others on."""
        keep = []
        for r in batch:
            if r.dead_letter is None:
                keep.append(r)
            elif isinstance(source, DeadLetterSource):
                await source.dead_letter(r)
                self.counters.dead_lettered += 1
            else:
                self.counters.drop(r.dead_letter)
        return keep

    async def _decode(self, inp: MemoryObjectReceiveStream[RecordItem], out: ObjectSendStream[EventItem]) -> None:
        assembler, steps, lane = self._assembler, self.steps, self._lane
        join = lane.memo is not None
        quiet = self.settings.multiline_quiet_ms / 1000
        lookahead: RecordItem | None = None  # taken from the channel while joining batches
        ended = False
        async with inp, out:
            tick_at = self._clock() + TICK_S
            while True:
                item: RecordItem | None = None
                if lookahead is not None:
                    item, lookahead = lookahead, None
                elif ended:
                    break
                else:
                    held = assembler.next_deadline(quiet)
                    deadline = tick_at if held is None else min(held, tick_at)
                    with anyio.move_on_after(max(0.0, deadline - self._clock())):
                        try:
                            item = await inp.receive()
                        except anyio.EndOfStream:
                            break
                if item is None:
                    now = self._clock()
                    done = assembler.flush_idle(now, quiet)  # quiet time passed: a held trace is complete
                    if done or now >= tick_at:
                        # An empty list still goes out: it tells detection that time passed.
                        tick_at = now + TICK_S
                        await out.send(_apply(steps, done))
                    continue
                if isinstance(item, Checkpoint):
                    if item.final:
                        done = assembler.flush_all()
                        if done:
                            await out.send(_apply(steps, done))
                    _lower_positions(item.positions, assembler.pending_offsets())
                    await out.send(item)
                    continue
                if join and isinstance(item, StreamBatch | RowBatch):
                    # Batches waiting behind this one join it, per stream: longer runs for the lane.
                    batches, lookahead, ended = _join_waiting(item, inp)
                else:
                    batches = [item]
                for batch in batches:
                    processed = lane.process(batch)
                    if processed:
                        await out.send(processed)
            done = assembler.flush_all()
            if done:
                await out.send(_apply(steps, done))

    async def _cluster(self, inp: ObjectReceiveStream[EventItem], out: ObjectSendStream[WorkItem]) -> None:
        clusterer, store, detector, counters = self.clusterer, self.store, self.detector, self.counters
        context = self.context
        segments = self._segments
        work: list[FindingWork] = []

        def emit(finding: Finding) -> None:  # the context is taken when the finding happens
            counters.findings += 1
            work.append(_work(finding, context))

        last_tick = float("-inf")
        async with inp, out:
            async for item in inp:
                if isinstance(item, Checkpoint):
                    if segments is not None:
                        segments.settle()  # clusters counted in bulk get their latest sample before the flush
                    await out.send(item)
                    continue
                for event in item:
                    if not isinstance(event, Event):  # a Segment of the repeat-shape lane
                        if segments is not None:
                            segments(event, emit)
                        for w in work:
                            await out.send(w)
                        work.clear()
                        continue
                    match = clusterer.add(event)
                    cluster = match.cluster
                    counters.clustered += 1
                    if match.created:
                        self._created(cluster)
                    elif segments is not None:
                        segments.superseded(cluster)
                    store.touch(cluster)
                    store.count(cluster.id, event.timestamp)
                    for finding in detector.observe(event, match):
                        counters.findings += 1
                        await out.send(_work(finding, context))
                    context.observe(event)
                if detector.now() - last_tick >= TICK_S:  # resolves and reminders, in log time
                    last_tick = float("-inf")
                    for finding in detector.tick():
                        counters.findings += 1
                        await out.send(_work(finding, context))
            if segments is not None:
                segments.settle()

    def _created(self, cluster: Cluster) -> None:
        """A new live cluster: it continues the one the store kept if it was evicted (same stable id)."""
        _merge_evicted(cluster, self.store.get_cluster(cluster.id))

    async def _deliver(self, inp: ObjectReceiveStream[OutItem]) -> None:
        streaming = [s for s in self.sinks if isinstance(s, StreamingSink)]
        async with inp:
            async for item in inp:
                if isinstance(item, Checkpoint):
                    await self._checkpoint(item)
                elif isinstance(item, SummaryDelta):
                    for live in streaming:
                        await live.summary_delta(item.finding, item.text)
                else:
                    for sink in self.sinks:
                        await sink.emit(item)
                    if self.hooks.on_finding is not None:
                        self.hooks.on_finding(item)

    async def _checkpoint(self, cp: Checkpoint) -> None:
        """Make everything up to ``cp`` durable, then commit the source's positions."""
        self.store.flush()
        for sink in self.sinks:
            await sink.flush()
        await self._by_name[cp.source].commit(cp.positions)
        self.checkpoints += 1
        if self.hooks.on_checkpoint is not None:
            self.hooks.on_checkpoint(cp)


_STREAM = attrgetter("stream")
_END = attrgetter("end")
_DEAD_LETTER = attrgetter("dead_letter")


@contextmanager
def _collector_tuned() -> Iterator[None]:
    """Python's cyclic collector, tuned for a pipeline run.

    A run allocates records, events and batches at a high rate, almost all short-lived and free of
    cycles. With the default threshold (a young collection every 700 allocations) the collector scans
    them over and over (~15% of the full path's time in bench/kafka.py); young collections every
    50,000 allocations keep memory bounded (a batch is a few thousand records) at a fraction of that
    cost. What exists before the run (imports, settings, restored clusters) is frozen: full
    collections no longer scan it. Restored afterwards.
    """
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(before[0], 50_000), before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


JOIN_RECORDS = 16_384  # at most this many records in batches joined by the decode stage


def _join_waiting(first: StreamBatch | RowBatch, inp: MemoryObjectReceiveStream[RecordItem]
                  ) -> tuple[list[Sequence[Record]], RecordItem | None, bool]:
    """``first`` and the one-stream batches already waiting in ``inp``, joined per stream.

    A stream's batches may be joined across other streams' batches: assembly and the decoder's clock
    are per stream, and the order in which partitions arrive is not defined anyway. Inside a stream
    the order stays. Stops at a checkpoint or any other batch (returned to be handled next), when
    nothing waits (or the channel ended: the flag), or at ``JOIN_RECORDS``.
    """
    by_stream: dict[str, StreamBatch | RowBatch] = {}
    total = 0
    item: RecordItem = first
    while True:
        if not isinstance(item, StreamBatch | RowBatch) or not item:
            return list(by_stream.values()), item, False
        stream = item.stream if isinstance(item, RowBatch) else item[0].stream
        run = by_stream.get(stream)
        if run is None:
            by_stream[stream] = item
        elif isinstance(run, RowBatch) and isinstance(item, RowBatch):  # noqa: SIM114 - two types, two extends
            run.extend(item)
        elif isinstance(run, StreamBatch) and isinstance(item, StreamBatch):
            run.extend(item)
        else:  # one stream in two kinds of batch: keep them apart
            return list(by_stream.values()), item, False
        total += len(item)
        if total >= JOIN_RECORDS:
            break
        try:
            item = inp.receive_nowait()
        except anyio.WouldBlock:
            break
        except anyio.EndOfStream:
            return list(by_stream.values()), None, True
    return list(by_stream.values()), None, False


def _work(finding: Finding, context: ContextCollector) -> FindingWork:
    """Evidence is gathered for the findings that can lead to a model call."""
    if finding.kind in MODEL_KINDS:
        return FindingWork(finding, context.context(finding))
    return FindingWork(finding, PromptContext())


def _apply(steps: Sequence[EventStep], events: list[Event]) -> list[Event]:
    if not steps:
        return events
    out = []
    for event in events:
        for step in steps:
            event = step(event)
        out.append(event)
    return out


def _lower_positions(positions: dict[str, int], pending: Mapping[str, int]) -> None:
    for stream, offset in pending.items():
        if stream in positions and offset < positions[stream]:
            positions[stream] = offset


def _merge_evicted(cluster: Cluster, kept: Cluster | None) -> None:
    """A cluster re-created after eviction continues the one the store kept (same stable id)."""
    if kept is None or kept is cluster:
        return
    cluster.count += kept.count
    cluster.warn_count += kept.warn_count
    cluster.first_seen = min(cluster.first_seen, kept.first_seen)
    cluster.last_seen = max(cluster.last_seen, kept.last_seen)
    cluster.level = max(cluster.level, kept.level)
    for service, n in kept.services.items():
        cluster.services[service] = cluster.services.get(service, 0) + n
    keep = max(len(kept.samples), len(cluster.samples))
    cluster.samples[:] = (kept.samples + cluster.samples)[:keep]
    if cluster.exception is None:
        cluster.exception = kept.exception
