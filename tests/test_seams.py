"""The seams between pipeline, detection, summarizer, store and sinks: restarts, shutdown, versions, eviction."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from anyio import wait_all_tasks_blocked

from connectors.sinks.jsonl import JsonlSink
from tests.fakes.openai_server import FakeOpenAIServer, Script
from tests.support.fakes import ListSource, RecordingSink, records
from triage.app import App, build
from triage.detect import Detector
from triage.model import Finding, Record
from triage.settings import load_settings
from triage.summarize.summarizer import template_hash

ANSWER = {
    "title": "Payments fail",
    "summary": "Payment capture fails for every order.",
    "likely_cause": "An expired credential.",
    "fix_steps": ["Rotate the credential"],
    "severity": "high",
    "confidence": 0.7,
    "related_clusters": [],
}
FOLLOW = {"multiline_quiet_ms": 20}  # following sources: a held line goes out after 20 ms of quiet
BASE = 1_773_478_800.0  # 2026-03-14T09:00:00Z


def _ts(offset: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(BASE + offset)) + "Z"


def _trace(offset: float, message: str) -> list[str]:
    return [
        f"{_ts(offset)} ERROR checkout failed",
        "Traceback (most recent call last):",
        '  File "/app/orders/api.py", line 9, in build',
        "    total(cart)",
        '  File "/app/orders/cart.py", line 88, in total',
        "    return cart.items",
        f"KeyError: {message}",
    ]


class StreamingRecorder(RecordingSink):
    """A recording sink that also takes summary deltas."""

    def __init__(self, block: anyio.Event | None = None) -> None:
        super().__init__(block=block)
        self.deltas: list[tuple[str, str]] = []

    async def summary_delta(self, finding: Finding, text: str) -> None:
        self.deltas.append((finding.id, text))


class QueueSource:
    """A following source fed by the test: ``push`` hands it a batch; ``aclose`` ends it."""

    def __init__(self, name: str = "list") -> None:
        self.name = name
        self._tx, self._rx = anyio.create_memory_object_stream[list[Record]](100)
        self.commits: list[dict[str, int]] = []
        self.served = 0
        self._offset = 0

    def push(self, lines: list[str]) -> list[Record]:
        recs = records(lines, start=self._offset)
        self._offset = recs[-1].end
        self._tx.send_nowait(recs)
        return recs

    async def batches(self) -> AsyncIterator[list[Record]]:
        async with self._rx:
            async for batch in self._rx:
                self.served += len(batch)
                yield batch

    async def commit(self, positions: Mapping[str, int]) -> None:
        self.commits.append(dict(positions))

    async def aclose(self) -> None:
        self._tx.close()


def _app(tmp_path: Path, source: Any, sinks: list[Any], *, server: FakeOpenAIServer | None = None,
         llm: dict[str, Any] | None = None, **overrides: Any) -> App:
    if server is not None:
        overrides["llm"] = {"base_url": "http://model.test/v1", "model": "fake", "max_retries": 0, **(llm or {})}
    overrides.setdefault("pipeline", {"multiline_quiet_ms": 60_000})
    settings = load_settings(None, state_dir=tmp_path / "state", sinks=(), **overrides)
    app = build(settings, follow=False, transport=server.transport() if server is not None else None)
    app.pipeline.sinks = sinks
    app.pipeline.sources = [source]
    app.pipeline._by_name = {source.name: source}
    return app


def _wire_detector(app: App, clock: Any) -> Detector:
    """The detector as build() makes it (incidents resolved before a restart included), with ``clock``."""
    store = app.store
    detector = Detector(app.settings.detect, versions=store.finding_versions(), clock=clock,
                        silences=store.active_silences, resolved=store.resolved_incidents())
    app.pipeline.detector = detector
    app.pipeline.summarizer.detector = detector
    return detector


async def _run(app: App) -> None:
    try:
        with anyio.fail_after(15):
            await app.pipeline.run()
    finally:
        await app.aclose()
        app.store.close()


def _versions(findings: list[Finding]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for f in findings:
        out.setdefault(f.id, []).append(f.version)
    return out


@pytest.mark.anyio
class TestRestart:
    async def test_announced_cluster_is_not_new_again(self, tmp_path: Path) -> None:
        """A second build() on the same state dir continues a firing incident: no second 'new'."""
        first = RecordingSink()
        await _run(_app(tmp_path, ListSource([records([f"{_ts(0)} ERROR payment declined for order 17"])]),
                        [first]))
        second = RecordingSink()
        app = _app(tmp_path, ListSource([records([f"{_ts(5)} ERROR payment declined for order 18"])]), [second])
        await _run(app)
        assert [f.kind for f in first.findings] == ["new"]
        assert second.findings == []
        assert app.pipeline.counters.balanced()

    async def test_resolved_before_restart_reopens_after(self, tmp_path: Path) -> None:
        """Resolved before a restart and firing again after it: announced as reopened ('new', higher version)."""
        first = RecordingSink()
        lines = [f"{_ts(0)} ERROR payment declined for order 17"]
        quiet = [f"{_ts(1_000)} INFO request served in 3 ms"]
        await _run(_app(tmp_path, ListSource([records(lines), records(quiet, start=100)]), [first]))
        assert [(f.kind, f.version) for f in first.findings] == [("new", 1), ("resolved", 2)]
        second = RecordingSink()
        app = _app(tmp_path, ListSource([records([f"{_ts(2_000)} ERROR payment declined for order 18"])]),
                   [second])
        await _run(app)
        assert [(f.id, f.kind, f.version) for f in second.findings] == [(first.findings[0].id, "new", 3)]
        assert app.pipeline.counters.balanced()

    async def test_incident_continued_after_restart_resolves(self, tmp_path: Path) -> None:
        """An incident firing at a restart, continued by an event after it, is resolved when it goes quiet."""
        first = RecordingSink()
        await _run(_app(tmp_path, ListSource([records([f"{_ts(0)} ERROR payment declined for order 17"])]),
                        [first]))
        second = RecordingSink()
        batches = [records([f"{_ts(10)} ERROR payment declined for order 18"]),
                   records([f"{_ts(1_000)} INFO request served in 3 ms"], start=100)]
        app = _app(tmp_path, ListSource(batches), [second])
        await _run(app)
        assert [(f.kind, f.version) for f in second.findings] == [("resolved", 2)]

    async def test_incident_firing_at_restart_resolves_without_new_events(self, tmp_path: Path) -> None:
        """An incident still firing when a run stopped is resolved by the next run once it stays quiet."""
        first = RecordingSink()
        await _run(_app(tmp_path, ListSource([records([f"{_ts(0)} ERROR payment declined for order 17"])]),
                        [first]))
        second = RecordingSink()
        quiet = [records([f"{_ts(1_000)} INFO request served in 3 ms"])]  # only other traffic, later
        app = _app(tmp_path, ListSource(quiet), [second])
        await _run(app)
        assert [(f.id, f.kind, f.version) for f in second.findings] == [(first.findings[0].id, "resolved", 2)]

    async def test_variant_stays_in_its_incident_across_a_restart(self, tmp_path: Path) -> None:
        """A variant's events after a restart still belong to its parent incident: never announced on their own."""
        first = RecordingSink()
        batches = [records([*_trace(0, "'tier'"), f"{_ts(1)} INFO warm"]),
                   records([*_trace(2, "missing user record"), f"{_ts(3)} INFO warm"], start=10_000)]
        await _run(_app(tmp_path, ListSource(batches), [first]))
        assert [f.kind for f in first.findings] == ["new", "variant"]
        second = RecordingSink()
        again = [records([*_trace(5, "missing user record"), f"{_ts(6)} INFO warm"], start=20_000)]
        app = _app(tmp_path, ListSource(again), [second])
        await _run(app)
        assert second.findings == []
        assert app.pipeline.counters.balanced()


@pytest.mark.anyio
class TestStopDuringModelCall:
    async def test_stop_while_streaming_ends_within_drain_timeout(self, tmp_path: Path) -> None:
        """stop() while an answer streams: the run ends within drain_timeout_s, v1 delivered, stored, committed."""
        step = asyncio.Semaphore(0)
        server = FakeOpenAIServer(default=Script(content=json.dumps(ANSWER), step=step))
        recs = records([f"{_ts(0)} ERROR payment declined for order 17"])
        source = ListSource([recs], follow=True)
        sink = StreamingRecorder()
        app = _app(tmp_path, source, [sink], server=server, llm={"drain_timeout_s": 0.5}, pipeline=FOLLOW)
        step.release()  # one token streams, then the answer hangs
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run, app)
            with anyio.fail_after(5):
                await sink.emitted.wait()
                await server.wait_requests(1)
            started = time.monotonic()
            app.pipeline.stop()
        assert time.monotonic() - started < 0.5 + 2.0
        assert [(f.kind, f.version) for f in sink.findings] == [("new", 1)]
        counters = app.pipeline.counters
        assert counters.balanced() and counters.read == 1
        assert source.commits[-1] == {"s1": recs[-1].end}
        from triage.store import Store

        store = Store.open(tmp_path / "state")
        assert [(f.id, f.version) for f in store.findings()] == [(sink.findings[0].id, 1)]
        store.close()


def _all_kinds_batches() -> list[list[Record]]:
    lines: list[list[str]] = [
        [f"{_ts(0)} ERROR payment declined for order 1", f"{_ts(1)} ERROR payment declined for order 2",
         f"{_ts(2)} ERROR payment declined for order 3"],  # new, then a spike (3 in a minute)
        _trace(3, "'tier'"),
        [f"{_ts(4)} INFO warm"],
        _trace(5, "missing user record"),  # same exception type and frames, another message: a variant
        [f"{_ts(6)} INFO warm"],
        [f"{_ts(70)} ERROR payment declined for order 4", f"{_ts(71)} INFO warm"],  # a reminder (repeat)
        [f"{_ts(5_000)} INFO quiet now"],  # both incidents resolve
    ]
    out = []
    offset = 0
    for chunk in lines:
        recs = records(chunk, start=offset)
        offset = recs[-1].end
        out.append(recs)
    return out


ALL_KINDS_DETECT = {"spike_factor": 2, "spike_min_count": 3, "group_interval_s": 0, "repeat_interval_s": 60,
                    "resolve_after_s": 120}


@pytest.mark.anyio
class TestVersions:
    async def test_every_kind_reaches_jsonl_with_increasing_versions(self, tmp_path: Path) -> None:
        """new, summary, spike, variant, repeat, resolved all reach JSONL, versions strictly increasing per id,
        and the store holds exactly the (id, version) pairs the sinks got."""
        server = FakeOpenAIServer(default=Script(content=json.dumps(ANSWER)))
        out = tmp_path / "f.jsonl"
        rec = StreamingRecorder()
        app = _app(tmp_path, ListSource(_all_kinds_batches()), [rec, JsonlSink(out)], server=server,
                   detect=ALL_KINDS_DETECT, pipeline={"multiline_quiet_ms": 60_000, "checkpoint_records": 1})
        await _run(app)
        rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
        assert {r["kind"] for r in rows} == {"new", "summary", "spike", "variant", "repeat", "resolved"}
        per_id: dict[str, list[int]] = {}
        for r in rows:
            per_id.setdefault(r["id"], []).append(r["version"])
        for fid, versions in per_id.items():
            assert versions == sorted(set(versions)), (fid, versions)
        from triage.store import Store

        store = Store.open(tmp_path / "state")
        findings = store.findings()
        stored = {(f.id, f.version) for f in findings}
        store.close()
        assert stored == {(r["id"], r["version"]) for r in rows}
        by_store = _versions(findings)
        assert all(v == sorted(v) for v in by_store.values()), by_store  # store order = version order
        assert app.pipeline.counters.balanced()

    async def test_model_answer_never_overtaken_by_an_older_version(self, tmp_path: Path) -> None:
        """An answer completing while detection's next finding waits in the queue does not overtake it."""
        step = asyncio.Semaphore(0)
        server = FakeOpenAIServer(default=Script(content=json.dumps(ANSWER), step=step))
        source = QueueSource()
        block = anyio.Event()
        rec = StreamingRecorder(block)  # holds the first finding until released: the channels fill up
        app = _app(tmp_path, source, [rec], server=server, llm={"max_pending": 1},  # one call: the first
                   detect={"spike_factor": 2, "spike_min_count": 2, "group_interval_s": 0},
                   pipeline={**FOLLOW, "queue_batches": 1})
        detector = app.pipeline.detector
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run, app)
            source.push([f"{_ts(0)} ERROR payment declined for order 1"])
            with anyio.fail_after(5):
                await rec.blocked.wait()
                await server.wait_requests(1)
            # 100 new clusters, then the spike (version 2) queued behind them
            source.push([*(f"{_ts(1)} ERROR {' '.join(_word(i, k) for k in range(4))}" for i in range(100)),
                         f"{_ts(2)} ERROR payment declined for order 2", f"{_ts(3)} INFO warm"])
            [cid] = app.store.finding_versions()
            with anyio.fail_after(5):
                while (incident := detector.incident(cid)) is None or incident.version < 2:  # the spike
                    await wait_all_tasks_blocked()
            for _ in range(1_000):
                step.release()
            block.set()
            with anyio.fail_after(5):
                while len([f for f in rec.findings if f.id == cid]) < 3:
                    await wait_all_tasks_blocked()
            await source.aclose()
        versions = [f.version for f in rec.findings if f.id == cid]
        kinds = [f.kind for f in rec.findings if f.id == cid]
        assert versions == sorted(set(versions)) and sorted(kinds) == ["new", "spike", "summary"], (versions, kinds)
        assert app.pipeline.counters.balanced()


@pytest.mark.anyio
class TestVariant:
    async def test_variant_calls_the_model_and_answers_as_the_parent(self, tmp_path: Path) -> None:
        """A variant is summarized by the model; the answer is a new version of the parent id, cached under
        the parent id and the variant's template."""
        server = FakeOpenAIServer(default=Script(content=json.dumps(ANSWER)))
        rec = StreamingRecorder()
        batches = [records([*_trace(0, "'tier'"), f"{_ts(1)} INFO warm"]),
                   records([*_trace(2, "missing user record"), f"{_ts(3)} INFO warm"], start=10_000)]
        app = _app(tmp_path, ListSource(batches), [rec], server=server)
        await _run(app)
        assert len(server.requests) == 2
        kinds = [(f.kind, f.version) for f in rec.findings]
        assert ("variant", 2) in kinds or ("variant", 3) in kinds
        [parent] = {f.id for f in rec.findings}
        variant = next(f for f in rec.findings if f.kind == "variant")
        answers = [f for f in rec.findings if f.kind == "summary"]
        assert len(answers) == 2 and all(f.summary is not None and f.summary.source == "llm" for f in answers)
        assert any(f.template == variant.template and f.version > variant.version for f in answers)
        from triage.store import Store

        store = Store.open(tmp_path / "state")
        assert store.get_summary(parent, template_hash(variant.template)) is not None
        store.close()
        assert app.pipeline.counters.balanced()


class Clock:
    """Wall clock under test control."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.mark.anyio
class TestSilenceWhileRunning:
    async def test_silence_added_to_store_is_honoured_within_two_seconds(self, tmp_path: Path) -> None:
        """A silence added to the store during a run holds back matching clusters once 2 s of clock passed."""
        source = QueueSource()
        rec = RecordingSink()
        app = _app(tmp_path, source, [rec], pipeline=FOLLOW)
        clock = Clock(time.time())
        detector = _wire_detector(app, clock)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run, app)
            source.push([f"{_ts(0)} ERROR payment declined for order 1"])
            with anyio.fail_after(5):
                await rec.emitted.wait()
            app.store.add_silence(pattern="disk * full*", expires_at=clock.t + 3_600)
            clock.t += 2.1
            source.push([f"{_ts(1)} ERROR disk sda full", f"{_ts(2)} ERROR queue orders stalled"])
            with anyio.fail_after(5):
                while len(rec.findings) < 2:
                    await wait_all_tasks_blocked()
            await source.aclose()
        assert [f.template for f in rec.findings][1:] == ["queue orders stalled"]
        assert detector.silenced == 1
        assert app.pipeline.counters.balanced()


def _word(i: int, k: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    n = i * 4 + k
    return "".join(letters[(n // 26**j) % 26] for j in range(3)) + "x" + letters[k]


@pytest.mark.anyio
class TestEviction:
    async def test_evicted_clusters_are_counted_and_never_announced_twice(self, tmp_path: Path) -> None:
        """With max_clusters=10 and 100 templates seen twice, the store counts every event and each
        cluster is announced once."""
        lines = [f"{_ts(i % 50)} ERROR {' '.join(_word(i, k) for k in range(4))}" for i in range(100)]
        batches = [records(lines), records(lines, start=100_000)]
        rec = RecordingSink()
        app = _app(tmp_path, ListSource(batches), [rec], clustering={"max_clusters": 10},
                   pipeline={"multiline_quiet_ms": 60_000, "checkpoint_records": 7})
        await _run(app)
        counters = app.pipeline.counters
        assert counters.balanced() and counters.clustered == 200
        from triage.store import Store

        store = Store.open(tmp_path / "state")
        clusters = store.load_clusters()
        store.close()
        assert sum(c.count for c in clusters) == counters.clustered
        assert len(clusters) == 100 and {c.count for c in clusters} == {2}
        news = [f.id for f in rec.findings if f.kind == "new"]
        assert len(news) == len(set(news)) == 100


class TestForgottenIncident:
    def test_incident_forgotten_while_resolved_reopens(self) -> None:
        """An incident pushed out of the bounded table after it resolved is reopened ('new') when it fires again."""
        from triage.clustering.base import Match
        from triage.model import Cluster, Event, Level
        from triage.settings import DetectSettings

        d = Detector(DetectSettings(max_incidents=10, resolve_after_s=60), clock=Clock(0.0))

        def at(ts: float, cid: str, level: Level = Level.ERROR) -> list[Finding]:
            c = Cluster(id=cid, template=f"{cid} failed", kind="template", level=level, count=1, first_seen=ts,
                        last_seen=ts)
            ev = Event(timestamp=ts, level=level, message="m", raw="m", source="s", stream="s", offset=0, end=1)
            return d.observe(ev, Match(cluster=c, created=False))

        at(0, "c1")
        at(100, "quiet", Level.INFO)
        assert [f.kind for f in d.tick()] == ["resolved"]
        for i in range(10):
            at(101 + i, f"other{i}")
        assert d.incident("c1") is None
        assert [(f.kind, f.version) for f in at(120, "c1")] == [("new", 3)]
