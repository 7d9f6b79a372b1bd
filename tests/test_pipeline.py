"""The pipeline: accounting, findings, checkpoints, backpressure, shutdown."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from tests.support.fakes import ListSource, RecordingSink, records
from triage.clustering import StreamingClusterer
from triage.detect import Detector
from triage.errors import SinkError
from triage.model import Level
from triage.pipeline import Pipeline
from triage.settings import LLMSettings, PipelineSettings
from triage.store import Store
from triage.summarize.fallback import ModelFreeSummarizer
from triage.summarize.stage import SummarizeStage

JAVA_TRACE = [
    "2026-03-14 09:12:01.123 ERROR 1 --- [exec-7] c.e.checkout.CartService : total failed",
    "java.lang.NullPointerException: cart is null",
    "\tat com.example.checkout.CartService.total(CartService.java:88)",
    "\tat com.example.checkout.CheckoutController.pay(CheckoutController.java:41)",
]


def _pipeline(sources: list[ListSource], sinks: list[RecordingSink], store: Store,
              **settings: object) -> Pipeline:
    opts: dict[str, object] = {"checkpoint_records": 1_000_000, "multiline_quiet_ms": 60_000, **settings}
    detector = Detector(min_level=Level.WARNING, versions=store.finding_versions())
    return Pipeline(
        sources=sources, sinks=sinks, store=store,
        clusterer=StreamingClusterer(on_evict=store.touch), detector=detector,
        summarizer=SummarizeStage(store=store, detector=detector, fallback=ModelFreeSummarizer(), llm=None,
                                  settings=LLMSettings()),
        settings=PipelineSettings.model_validate(opts),
    )


def _lines(n: int) -> list[str]:
    return [f"2026-03-14T09:00:{i % 60:02d}Z INFO request served in {i} ms" for i in range(n)]


@pytest.mark.anyio
class TestReplay:
    async def test_every_record_is_accounted_for(self, tmp_path: Path) -> None:
        """After a replay, read == clustered + merged + dropped, and the final position is committed."""
        lines = [*_lines(10), "", *JAVA_TRACE, "   ", "2026-03-14T09:01:00Z WARN disk 91% full"]
        recs = records(lines)
        source = ListSource([recs[:7], recs[7:]])
        sink = RecordingSink()
        counters = await _pipeline([source], [sink], Store.open(tmp_path)).run()
        assert counters.read == len(lines)
        assert counters.balanced(), counters.as_dict()
        assert counters.merged == 3
        assert counters.dropped["blank"] == 2
        assert counters.clustered == 12
        assert source.commits[-1] == {"s1": recs[-1].end}

    async def test_one_finding_per_new_warning_cluster(self, tmp_path: Path) -> None:
        """Each new cluster at WARNING+ is announced once, INFO clusters never, with a labelled summary."""
        lines = [*_lines(5), *JAVA_TRACE, *JAVA_TRACE, "2026-03-14T09:01:00Z WARN disk 91% full",
                 "2026-03-14T09:01:01Z WARN disk 92% full"]
        sink = RecordingSink()
        await _pipeline([ListSource([records(lines)])], [sink], Store.open(tmp_path)).run()
        assert len(sink.findings) == 2
        kinds = {f.cluster_kind for f in sink.findings}
        assert kinds == {"trace", "template"}
        trace = next(f for f in sink.findings if f.cluster_kind == "trace")
        assert trace.exception is not None and trace.exception.type == "java.lang.NullPointerException"
        assert trace.summary is not None and trace.summary.source == "model-free"
        assert "model-free" in trace.summary.text

    async def test_restart_does_not_announce_again(self, tmp_path: Path) -> None:
        """A second run on the same store continues cluster counts and announces nothing twice."""
        lines = ["2026-03-14T09:01:00Z ERROR payment declined for order 17"]
        first = RecordingSink()
        store = Store.open(tmp_path)
        await _pipeline([ListSource([records(lines)])], [first], store).run()
        store.close()
        second = RecordingSink()
        store = Store.open(tmp_path)
        p = _pipeline([ListSource([records(["2026-03-14T09:02:00Z ERROR payment declined for order 18"])])],
                      [second], store)
        p.clusterer.restore(store.load_clusters())
        await p.run()
        store.flush()
        assert len(first.findings) == 1 and second.findings == []
        [cluster] = store.load_clusters()
        assert cluster.count == 2


@pytest.mark.anyio
class TestCheckpoints:
    async def test_commit_waits_for_held_trace(self, tmp_path: Path) -> None:
        """A checkpoint taken while a trace is held commits the trace's start, not past it."""
        recs = records(["2026-03-14T09:00:00Z INFO warm", *JAVA_TRACE[:2]])
        more = records(JAVA_TRACE[2:], start=recs[-1].end)
        gate = anyio.Event()
        source = ListSource([recs, more], gate=gate)
        store = Store.open(tmp_path)
        p = _pipeline([source], [RecordingSink()], store, checkpoint_records=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            while not source.commits:
                await wait_all_tasks_blocked()
            assert source.commits[0] == {"s1": recs[1].offset}
            gate.set()
        assert source.commits[-1] == {"s1": more[-1].end}

    async def test_failed_sink_flush_commits_nothing(self, tmp_path: Path) -> None:
        """When a sink cannot flush, the source's position is not committed (the records replay)."""
        source = ListSource([records(["2026-03-14T09:01:00Z ERROR boom 1"])])
        with pytest.raises(ExceptionGroup) as e:
            await _pipeline([source], [RecordingSink(fail_flush=True)], Store.open(tmp_path)).run()
        assert e.group_contains(SinkError)
        assert source.commits == []


@pytest.mark.anyio
class TestFlowControl:
    async def test_backpressure_bounds_reading(self, tmp_path: Path) -> None:
        """A blocked sink stops the source after a bounded number of batches, not the whole input."""
        batches = [records([f"2026-03-14T09:00:00Z ERROR failure kind {i}"], start=i * 100) for i in range(500)]
        block = anyio.Event()
        sink = RecordingSink(block=block)
        source = ListSource(batches)
        p = _pipeline([source], [sink], Store.open(tmp_path), queue_batches=2, checkpoint_records=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            await sink.blocked.wait()
            await wait_all_tasks_blocked()
            held = source.served
            block.set()
        # two finding channels of 2*64 items, two batch channels of 2, a few items in the stages' hands
        assert held <= 2 * (2 * 64) + 2 * 2 + 8
        assert len(sink.findings) >= 1
        assert p.counters.read == 500 and p.counters.balanced()

    async def test_stop_drains_and_commits(self, tmp_path: Path) -> None:
        """stop() on a following source ends the run with everything processed and committed."""
        recs = records([*_lines(3), *JAVA_TRACE])
        source = ListSource([recs], follow=True)
        sink = RecordingSink()
        p = _pipeline([source], [sink], Store.open(tmp_path))
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            while source.served < len(recs):
                await wait_all_tasks_blocked()
            await wait_all_tasks_blocked()
            p.stop()
        assert p.counters.balanced() and p.counters.read == len(recs)
        assert source.commits[-1] == {"s1": recs[-1].end}
        assert len(sink.findings) == 1 and sink.closed

    async def test_quiet_time_flushes_last_trace(self, tmp_path: Path) -> None:
        """The last trace of a following source goes out after the quiet time, without more input."""
        source = ListSource([records(JAVA_TRACE)], follow=True)
        sink = RecordingSink()
        p = _pipeline([source], [sink], Store.open(tmp_path), multiline_quiet_ms=20)
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.run)
            with anyio.fail_after(5):
                await sink.emitted.wait()
            p.stop()
        assert sink.findings[0].exception is not None
