"""The repeat-shape lane: the same clusters, timelines, findings and prompt context as the full path."""

from __future__ import annotations

import gzip
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import triage.pipeline as pipeline_module
from tests.support.fakes import ListSource, RecordingSink
from triage.accounting import Counters
from triage.clustering import StreamingClusterer
from triage.detect import Detector
from triage.fastlane import ZERO_DIGITS, ShapeMemo
from triage.model import Finding, Record, RowBatch, StreamBatch
from triage.parsing import Decoder
from triage.pipeline import Pipeline
from triage.redact import Redactor
from triage.settings import DetectSettings, LLMSettings, PipelineSettings
from triage.steps import RedactSecrets
from triage.store import Store
from triage.summarize.context import ContextCollector
from triage.summarize.fallback import ModelFreeSummarizer
from triage.summarize.prompt import PromptContext
from triage.summarize.stage import FindingWork, SummarizeStage

DEMO = Path(__file__).resolve().parent.parent / "triage" / "demo" / "sample"
SERVICES = ("checkout", "orders", "api-gateway", "inventory")
T0 = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
_WORK: Callable[[Finding, ContextCollector], FindingWork] = pipeline_module._work  # before any monkeypatch


def _ts(i: int, per_second: int = 40) -> str:
    t = T0 + timedelta(microseconds=i * 1_000_000 // per_second)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _line(i: int, svc: str, jitter: bool = False) -> str:
    """A busy stream: ids of many lengths, an error burst from minute 3 to 4, then quiet, then again.
    With ``jitter`` one record in seven carries a timestamp from about a second later (out of order)."""
    ts = _ts(i + 37 if jitter and i % 7 == 3 else i)
    minute = i // 2400
    burst = minute in (3, 9) and i % 3 == 0
    k = i % 50
    if burst or k == 0:
        return f'{{"ts":"{ts}","level":"error","msg":"payment declined for order {i}","service":"{svc}"}}'
    if minute in (4, 5, 6, 7) and k < 3:  # the warnings stop for a while: their incident resolves
        return f'{{"ts":"{ts}","level":"info","msg":"cache warm","keys":{i % 97}}}'
    if k < 5:
        return f'time={ts} level=warn msg="slow query took {i % 900} ms" table=t{i % 7}'
    if k < 25:
        return f"{ts} INFO GET /v1/items/{i} 200 {i % 40} ms user={i * 7 % 10_000}"
    return f'{{"ts":"{ts}","level":"info","msg":"cart updated","items":{i % 9},"user":"u{i % 5000}"}}'


# Records the full path must see: each makes the lane hand over (or its shape is never learned).
ODD = [
    '{"ts":"2026-03-14T09:01:00.000Z","level":"info","msg":"cart updated","items":3,"user":"u12"}',
    '{"ts":"2026-03-14T09:01:61.000Z","level":"info","msg":"cart updated","items":3,"user":"u12"}',  # :61
    '{"ts":"2026-03-14T09:02:30.000Z","level":30,"msg":"numeric level"}',
    '{"ts":"2026-03-14T09:02:31.000Z","level":50,"msg":"numeric level"}',
    '{"ts":"2026-03-14T09:02:32.000Z","level":"info","msg":"token ya00.abcdefghijklmnop"}',
    '{"ts":"2026-03-14T09:02:33.000Z","level":"info","msg":"token ya29.abcdefghijklmnop"}',
    "2026-03-14T09:02:34.000+02:00 INFO zone line 1",
    "2026-03-14T09:02:35.000+05:00 INFO zone line 2",
    "2026-03-14T09:02:36.000+02:00 INFO zone line 3",
    "2026-03-14T09:02:37.000Z WARN retrying after failure",
    "Traceback (most recent call last):",
    '  File "/app/pay.py", line 12, in pay',
    "    total = cart['total']",
    "KeyError: 'total'",
    "2026-03-14T09:02:38.000Z INFO GET /v1/items/7 200 3 ms user=1",
    "2026-03-14T09:02:38.500Z INFO GET /v1/items/7 200 3 ms user=1",
]


def _batches(n: int, per_batch: int = 250, *, jitter: bool = False) -> list[list[Record]]:
    """Kafka-like: four partitions keyed by service (one attributes dict per key), a batch per partition."""
    parts: list[list[Record]] = [[] for _ in SERVICES]
    attrs = [{"key": s, "service": s} for s in SERVICES]
    for i in range(n):
        p = i % 4
        parts[p].append(Record(_line(i, SERVICES[p], jitter).encode(), "kafka", f"logs/{p}", len(parts[p]),
                               len(parts[p]) + 1, 1.0, "", attrs[p]))
    odd = [Record(line.encode(), "kafka", "logs/0", 10**6 + j, 10**6 + j + 1, 1.0, "", attrs[0])
           for j, line in enumerate(ODD)]
    parts[0][n // 8:n // 8] = odd  # mid-stream, in read order (offsets only need to rise per stream)
    for j, r in enumerate(parts[0]):
        r.offset, r.end = j, j + 1
    out: list[list[Record]] = []
    for start in range(0, max(map(len, parts)), per_batch):
        out.extend(StreamBatch(part[start:start + per_batch]) for part in parts if part[start:start + per_batch])
    return out


def _as_rows(batches: list[list[Record]]) -> list[list[Record]]:
    """The same batches as RowBatches (what the Kafka source hands out): columns up front, the Record
    (here: the very same one) made on demand."""
    out: list[Any] = []
    for b in batches:
        recs = list(b)
        out.append(RowBatch(recs[0].stream, recs, [r.data for r in recs], [r.offset for r in recs],
                            [r.attributes for r in recs], lambda row, value, attributes: row))
    return out


@dataclass
class Outcome:
    counters: Counters
    clusters: dict[str, tuple[Any, ...]]
    timelines: dict[str, list[tuple[int, int]]]
    findings: list[tuple[Any, ...]]
    work: list[tuple[Any, ...]]
    lane_records: int


def _finding_key(f: Finding) -> tuple[Any, ...]:
    return (f.id, f.kind, f.version, f.count, f.first_seen, f.last_seen, f.level, dict(f.services),
            [(s.timestamp, s.service, s.message, tuple(s.params)) for s in f.samples])


def _run(tmp_path: Path, batches: list[list[Record]], *, lane: bool, monkeypatch: pytest.MonkeyPatch,
         join: bool = False, detect: dict[str, Any] | None = None) -> Outcome:
    """One replay. Without ``join`` the decode stage does not join waiting batches: streams keep the
    order they were read in, so the two paths see the same sequence of records."""
    monkeypatch.setattr(pipeline_module, "JOIN_RECORDS", pipeline_module.JOIN_RECORDS if join else 1)
    store = Store.open(tmp_path / ("lane" if lane else "full") / ("join" if join else "read-order"))
    detector = Detector(DetectSettings(**{"resolve_after_s": 60, "group_interval_s": 30, **(detect or {})}),
                        versions=store.finding_versions(), clock=lambda: 0.0)  # log time only: same instants
    work: list[tuple[Any, ...]] = []
    original = _WORK

    def recording(finding: Finding, context: ContextCollector) -> FindingWork:
        item = original(finding, context)
        ctx: PromptContext = item.context
        work.append((finding.id, finding.kind, finding.version, tuple(ctx.neighbours)))
        return item

    monkeypatch.setattr(pipeline_module, "_work", recording)
    fresh = [b if isinstance(b, RowBatch) else list(b) if not lane else StreamBatch(b) for b in batches]
    if any(isinstance(b, RowBatch) for b in batches):
        fresh = _as_rows([list(b) for b in batches])  # joining extends them: fresh ones per run
    pipeline = Pipeline(
        sources=[ListSource(fresh)], sinks=[RecordingSink()],
        store=store, clusterer=StreamingClusterer(on_evict=store.touch, on_merge=store.merged), detector=detector,
        summarizer=SummarizeStage(store=store, detector=detector, fallback=ModelFreeSummarizer(), llm=None,
                                  settings=LLMSettings()),
        settings=PipelineSettings(fast_lane=lane, checkpoint_records=700, multiline_quiet_ms=60_000),
        steps=[RedactSecrets(Redactor())], context=ContextCollector(),
    )
    try:
        counters = anyio.run(pipeline.run)
        clusters = {c.id: (c.template, c.count, c.warn_count, c.level, c.first_seen, c.last_seen, dict(c.services),
                           [(s.timestamp, s.service, s.message, tuple(s.params)) for s in c.samples])
                    for c in store.load_clusters()}
        timelines = {cid: store.timeline(cid) for cid in clusters}
        findings = [_finding_key(f) for f in store.findings()]
    finally:
        store.close()
    return Outcome(counters, clusters, timelines, findings, work, pipeline.lane_records)


def _assert_same(full: Outcome, lane: Outcome) -> None:
    assert lane.counters.as_dict() == full.counters.as_dict()
    assert lane.counters.balanced()
    assert set(lane.clusters) == set(full.clusters)
    for cid, expected in full.clusters.items():
        assert lane.clusters[cid] == expected, cid
    assert lane.timelines == full.timelines
    assert lane.findings == full.findings
    assert lane.work == full.work


class TestSameAsFullPath:
    @pytest.mark.parametrize("rows", [False, True], ids=["records", "row-batches"])
    def test_kafka_like_stream(self, rows: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A busy keyed stream with bursts, a resolve and odd records: identical outcome, mostly in bulk
        (also when the batches come as RowBatches, as from the Kafka source)."""
        batches = _batches(30_000)
        full = _run(tmp_path, batches, lane=False, monkeypatch=monkeypatch)
        lane = _run(tmp_path, _as_rows(batches) if rows else batches, lane=True, monkeypatch=monkeypatch)
        _assert_same(full, lane)
        kinds = {f[1] for f in full.findings}
        assert {"new", "spike", "resolved"} <= kinds  # the lane had detection work to do
        assert full.lane_records == 0
        assert lane.lane_records > 0.9 * full.counters.read

    def test_timestamps_out_of_order_count_the_same(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Out-of-order timestamps in a stream: same counts, first/last seen, samples and timelines
        (detection may differ: the lane applies an alert before the quiet records of its segment)."""
        batches = _batches(12_000, jitter=True)
        full = _run(tmp_path, batches, lane=False, monkeypatch=monkeypatch)
        lane = _run(tmp_path, batches, lane=True, monkeypatch=monkeypatch)
        assert lane.counters.as_dict() == full.counters.as_dict()
        assert lane.clusters == full.clusters
        assert lane.timelines == full.timelines

    def test_joined_batches_count_the_same(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Joining a stream's waiting batches reorders streams, never records of a stream: same counts,
        times, services and timelines (which record of two streams is a cluster's latest sample, and
        detection across streams, may differ, as they may with any other read order of partitions)."""
        batches = _batches(12_000)
        full = _run(tmp_path, batches, lane=False, monkeypatch=monkeypatch)
        lane = _run(tmp_path, _as_rows(batches), lane=True, monkeypatch=monkeypatch, join=True)
        assert lane.counters.read == full.counters.read and lane.counters.balanced()
        assert lane.counters.clustered == full.counters.clustered
        assert {cid: c[:7] for cid, c in lane.clusters.items()} == {cid: c[:7] for cid, c in full.clusters.items()}
        assert lane.timelines == full.timelines

    def test_lane_steps_aside_where_shapes_do_not_repeat(self, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        """Lines that never repeat a shape switch the lane off for a while; it comes back for lines that do."""
        rng = random.Random(7)
        unique = [f'{{"ts":"{_ts(i)}","level":"info","msg":"request {rng.getrandbits(64):x} done"}}'
                  for i in range(20_000)]
        repeating = [_line(20_000 + i, "checkout") for i in range(60_000)]
        recs = [Record(line.encode(), "t", "s", i, i + 1, 1.0, "app.log") for i, line in enumerate(unique + repeating)]
        batches: list[list[Record]] = [StreamBatch(recs[i:i + 500]) for i in range(0, len(recs), 500)]
        full = _run(tmp_path, batches, lane=False, monkeypatch=monkeypatch)
        lane = _run(tmp_path, batches, lane=True, monkeypatch=monkeypatch)
        _assert_same(full, lane)
        # Off after the first probe window of unique lines, for FastLane.OFF_FOR records; then on again.
        assert 0.5 * len(repeating) < lane.lane_records < len(repeating)

    @pytest.mark.parametrize("seed", [1, 7])
    @pytest.mark.parametrize("detect", [{}, {"min_count": 3, "group_wait_s": 20, "spike_min_count": 5}],
                             ids=["defaults", "min-count-3"])
    def test_mixed_streams(self, seed: int, detect: dict[str, Any], tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
        """Traces, held warnings, numeric levels and impossible seconds among repeated shapes: identical."""
        batches = _mixed(seed, 6000)
        full = _run(tmp_path, batches, lane=False, monkeypatch=monkeypatch, detect=detect)
        lane = _run(tmp_path, _as_rows(batches), lane=True, monkeypatch=monkeypatch, detect=detect)
        _assert_same(full, lane)
        assert lane.lane_records > 0.8 * full.counters.clustered

    def test_demo_sample(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The demo incident (traces, held warnings, four formats): identical outcome."""
        batches: list[list[Record]] = []
        for n, path in enumerate(sorted(DEMO.glob("*.log.gz"))):
            lines = gzip.decompress(path.read_bytes()).splitlines()
            recs = [Record(line, "demo", f"file{n}", i, i + 1, 1.0, str(path)) for i, line in enumerate(lines)]
            batches.extend(recs[i:i + 1000] for i in range(0, len(recs), 1000))
        full = _run(tmp_path, batches, lane=False, monkeypatch=monkeypatch)
        lane = _run(tmp_path, batches, lane=True, monkeypatch=monkeypatch)
        _assert_same(full, lane)
        assert lane.lane_records > 0


TRACE = ["Traceback (most recent call last):", '  File "/app/x.py", line 3, in f', "    g()", "ValueError: bad"]


def _mixed(seed: int, n: int) -> list[list[Record]]:
    """Three keyed streams in time order with everything that makes the lane hand over: traces after
    held warnings, numeric levels, impossible seconds, records without a key; random batch sizes."""
    rng = random.Random(seed)
    parts: list[list[tuple[str, dict[str, str] | None]]] = [[], [], []]
    attrs: list[dict[str, str] | None] = [{"key": s, "service": s} for s in ("a", "b", "c")] + [None]
    for i in range(n):
        p = rng.randrange(3)
        r = rng.random()
        if r < 0.01:
            lines = [f"{_ts(i)} ERROR job failed", *TRACE]
        elif r < 0.02:
            lines = [f'{{"ts":"{_ts(i)}","level":{rng.choice([30, 40, 50])},"msg":"numeric {i}"}}']
        elif r < 0.025:
            ts = _ts(i)
            ts = ts[:17] + rng.choice(["61", "99", ts[17:19]]) + ts[19:]
            lines = [f'{{"ts":"{ts}","level":"info","msg":"cart updated","items":{i % 9},"user":"u{i % 5000}"}}']
        elif r < 0.03:
            lines = [f"{_ts(i)} WARN disk {rng.randrange(100)}% full"]
        else:
            lines = [_line(i, f"svc{p}")]
        parts[p].extend((line, attrs[rng.choice([p, 3])]) for line in lines)
    streams = [[Record(line.encode(), "k", f"s/{p}", j, j + 1, 1.0, "", a) for j, (line, a) in enumerate(part)]
               for p, part in enumerate(parts)]
    size = rng.choice([50, 300, 1000])
    return [StreamBatch(recs[s:s + size]) for s in range(0, max(map(len, streams)), size) for recs in streams
            if recs[s:s + size]]


def _shape_of(lines: list[str]) -> tuple[ShapeMemo, Decoder, list[Record]]:
    """Run ``lines`` through a decoder and teach a memo what the lane would learn from them."""
    memo = ShapeMemo()
    decoder = Decoder(Counters())
    recs = [Record(line.encode(), "t", "s", i, i + 1, 1.0, "", {"service": "svc"}) for i, line in enumerate(lines)]
    for r in recs:
        event = decoder(r)
        plan = decoder.plan
        assert event is not None and plan is not None
        key = r.data.translate(ZERO_DIGITS)
        if plan.ts_text is not None and plan.digit_free and memo.seen_before(key):
            memo.learn(key, r, event, bool(plan.service), plan.ts_text)
    return memo, decoder, recs


class TestShapes:
    @pytest.mark.parametrize("lines", [
        ['{"ts":"2026-03-14T09:00:00Z","level":30,"msg":"a"}', '{"ts":"2026-03-14T09:00:01Z","level":50,"msg":"a"}'],
        ['{"ts":"2026-03-14T09:00:00Z","level":"info","msg":"a","service":"api-v2"}',
         '{"ts":"2026-03-14T09:00:01Z","level":"info","msg":"a","service":"api-v3"}'],
        ['{"ts":1710406800,"level":"info","msg":"a"}', '{"ts":1710406801,"level":"info","msg":"a"}'],
        ["2026-03-14T09:00:00Z WARN disk 91% full", "2026-03-14T09:00:01Z WARN disk 92% full"],
        ['{"ts":"2026-03-14T09:00:00Z","level":"info","msg":"\\u0041 b"}',
         '{"ts":"2026-03-14T09:00:01Z","level":"info","msg":"\\u0042 b"}'],
    ], ids=["numeric-level", "digits-in-service", "epoch-timestamp", "held-warning", "json-escape"])
    def test_digit_dependent_records_make_no_shape(self, lines: list[str]) -> None:
        """Where a digit changes what the full path does, the records keep taking the full path."""
        memo, _, _ = _shape_of(lines)
        assert len(memo) == 0

    def test_a_repeated_line_makes_a_shape_at_its_second_record(self) -> None:
        """The first record of a key is only remembered; the second one teaches the shape."""
        line = '{"ts":"2026-03-14T09:00:00.250Z","level":"info","msg":"cart updated","items":3}'
        assert len(_shape_of([line])[0]) == 0
        assert len(_shape_of([line, line.replace("00.250", "07.125")])[0]) == 1

    @settings(max_examples=200, deadline=None)
    @given(
        when=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 12, 31)),
        digits=st.integers(0, 6), sep=st.sampled_from("T "), quote=st.booleans(),
        zone=st.sampled_from(["", "Z", "z", "+02:00", "-0530", "+00:00"]),
    )
    def test_timestamps_read_from_offsets_equal_the_decoders(self, when: datetime, digits: int, sep: str,
                                                              quote: bool, zone: str) -> None:
        """For every layout a shape accepts, the lane's timestamp is the decoder's float, bit for bit."""
        frac = f".{when.microsecond:06d}"[:digits + 1] if digits else ""
        stamp = when.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + frac + zone
        other = (when + timedelta(seconds=1, microseconds=7)).strftime(f"%Y-%m-%d{sep}%H:%M:%S") + \
            (f".{(when.microsecond + 7) % 1_000_000:06d}"[:digits + 1] if digits else "") + zone
        if quote:
            lines = [f'{{"ts":"{s}","level":"info","msg":"cart updated"}}' for s in (stamp, other)]
        else:
            lines = [f"{s} INFO cart updated" for s in (stamp, other)]
        memo, decoder, recs = _shape_of(lines)
        if len(memo) == 0:  # a layout the decoder reads another way (or not at all): nothing to check
            return
        shape = next(iter(memo.shapes.values()))
        for r in recs:
            event = decoder.event_of(r)
            assert memo.timestamp(shape, r.data) == event.timestamp

    def test_an_impossible_second_takes_the_full_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A record of a known shape with second 61 is decoded as the full path decodes it."""
        good = '{"ts":"2026-03-14T09:01:%02d.000Z","level":"info","msg":"cart updated","items":3}'
        lines = [good % (i % 60) for i in range(50)] + [good % 61] + [good % 5]
        batches: list[list[Record]] = [[Record(line.encode(), "t", "s", i, i + 1, 1.0, "a.log")
                                        for i, line in enumerate(lines)]]
        full = _run(tmp_path, batches, lane=False, monkeypatch=monkeypatch)
        lane = _run(tmp_path, batches, lane=True, monkeypatch=monkeypatch)
        _assert_same(full, lane)
        assert 0 < lane.lane_records < len(lines)  # the :61 record (at least) took the full path

