"""The repeat-shape lane: records whose shape was seen before skip decoding, redaction and mining.

Most records of a busy stream repeat a few hundred line shapes in which only digits change
(timestamps, ids, durations, counts). The full path (decode → assemble → redact → cluster → detect)
costs ~10 µs per record in Python; a record of a known shape costs one ``bytes.translate`` and one
dict lookup, and is then counted in bulk with the others of its run.

**Shape.** The key is the raw bytes with every digit turned into ``0`` (same length, so every field
sits at the same byte offsets in all records of a shape). A shape is learned from a record the full
path handled, only when no step of that handling depends on digit values:

* decoding: JSON, logfmt or an ISO-timestamp-led plain line; ASCII and printable; one line; no
  exception; the timestamp is an ISO string (the decoder's first candidate) that parses back to the
  same float from its byte offsets; the level came from a word, not a number; the service has no
  digits (or comes from the source: Kafka key/header, file name);
* assembly: the event is not one the assembler holds (plain lines at WARNING or above are);
* redaction: every step says it leaves the event, and every event that differs from it only in
  digits, untouched (``leaves_shape_alone``; ``ya29.`` is why the redactor checks with digits zeroed);
* clustering: masking looks at character classes only, so such records mine to the same template
  (the miner's own cache uses the same key).

A shape is learned at the second full-path record of its key (most keys seen once never return);
where less than 1/20 of a probe window of records take the lane, it steps aside for a while
(:class:`FastLane`: ``PROBE``, ``OFF_FOR``).

**Segments.** The decode stage cuts each batch into segments: a stretch of one stream with no
full-path record in it, so everything the full path does stays in read order around it. Inside a
segment the records of each quiet shape form a :class:`Tally` (shapes of one cluster, level, service
and timestamp layout share one: ids of varying length make many shapes of one template); records of
shapes whose events detection must see one by one (level at or above ``detect.min_level``, or a
cluster with an incident: "alert" shapes) are kept in read order with their timestamps.

**Applying a segment** (the cluster stage, :class:`SegmentApplier`): alert records go through
``observe_at`` one at a time, in order (for a cluster with an incident the counting waits for the
segment's end, or for a finding about to copy the cluster: ``Detector.on_snapshot``); then each tally
is counted in bulk (cluster counts, times, level and services with ``bump``; per-minute counts; the
detector's clock); then the context keeps the segment's last lines of each service, in read order;
before a finding leaves, the context first gets the segment's lines that precede it. A shape
remembers its cluster; a record is decoded again and goes through ``add`` like any event when that
cluster is gone (evicted, merged: so creation and merges are the full path's) and while the cluster
still collects samples. The latest record of a cluster counted in bulk is kept aside and becomes its
latest sample when someone looks: before a checkpoint's store flush and before a finding copies the
cluster; an event the full path adds supersedes it.

Differences from the full path, bounded by one segment (at most the waiting batches of one stream):
alert events are applied before the quiet records of their segment, so with timestamps out of order
inside a segment an alert's detection time can miss a later quiet timestamp read before it. When the
decode stage joins a stream's waiting batches (``pipeline.JOIN_RECORDS``), streams are applied in
another order than read (never the records of one stream): which of two streams' records becomes a
cluster's latest sample, and detection of an incident fed by several streams, follow that order, as
they follow any other order in which partitions arrive.

Checked per record before it is counted: its second is a valid date-time, and a numeric zone equals
the shape's; a record that fails (an impossible date such as ``02-30`` or ``:61``) takes the full path
where it was read, its segment cut in two around it. A JSON record that is malformed only by a digit (a number with a leading zero) is
counted with its shape instead of being read as plain text. The lane is off when a step cannot vouch
for shapes (``redact.extra_patterns``).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import islice, repeat
from operator import attrgetter, floordiv, itemgetter, le
from typing import Protocol, overload, runtime_checkable

from triage.accounting import Counters
from triage.clustering.base import Clusterer, Match
from triage.detect import Detector
from triage.model import Cluster, Event, Finding, Level, Record, RowBatch, StreamBatch
from triage.parsing import Decoder, MultilineAssembler
from triage.store import Store
from triage.summarize.context import ContextCollector

ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_ZERO_STR = str.maketrans("123456789", "000000000")
_ISO_TS = re.compile(rb"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,](\d{1,6}))?(Z|z|[+-]\d{2}:?\d{2})?")
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)
_WARNING = Level.WARNING
# Memory: at most _MAX_SHAPES shapes of lines up to _MAX_SHAPE_BYTES (their keys are the lines' bytes:
# 16 MiB at worst), and hashes (not keys) of the keys seen once or rejected.
_MAX_SHAPES = 8_192
_MAX_SHAPE_BYTES = 2_048
_MAX_SECONDS = 65_536
_MAX_SEEN = 65_536


@runtime_checkable
class ShapeStep(Protocol):
    """A processing step that can vouch for a shape (see ``RedactSecrets.leaves_shape_alone``)."""

    def __call__(self, event: Event) -> Event: ...

    def leaves_shape_alone(self, event: Event) -> bool: ...


class Shape:
    """What every record of one shape decodes to, and where its timestamp is."""

    __slots__ = ("a", "alert", "b", "bucket", "cluster", "fa", "fb", "format", "level", "recs", "scale",
                 "sec_end", "service", "za", "zb", "zone", "zone_s")

    def __init__(self, level: Level, service: str | None, fmt: str, a: int, b: int) -> None:
        self.level = level
        self.service = service  # None: the record's source names it (Kafka key or header, file name)
        self.format = fmt
        self.a = a  # the timestamp's bytes: [a, b); its date and time to the second: [a, sec_end)
        self.b = b
        self.sec_end = a + 19
        self.fa = self.fb = 0  # fraction of a second [fa, fb), as ``scale`` µs per unit
        self.scale = 0
        self.za = self.zb = 0  # a numeric zone's bytes (each record must carry the same), its offset
        self.zone: bytes | None = None
        self.zone_s = 0
        self.alert = False  # detection must see these events one by one
        self.recs: list[int] | None = None  # the current segment's records, by index (decode stage only)
        self.cluster: Cluster | None = None  # the cluster its records went to (cluster stage only)
        # The shape whose tally this shape's records join: itself, or once its cluster is known, the
        # first shape with the same cluster, level, service and timestamp layout (ids of varying length
        # make many shapes of one template; one tally for all of them).
        self.bucket = self


class ShapeMemo:
    """Shapes by key, bounded; and a cache of ISO seconds (validated once, shared by all shapes)."""

    __slots__ = ("_invalid", "_rejected", "_seen", "max_line_bytes", "seconds", "shapes")

    def __init__(self, *, max_line_bytes: int = 65_536) -> None:
        self.shapes: dict[bytes, Shape] = {}
        self._rejected: set[int] = set()  # hashes of keys that cannot make a shape (not tried again)
        self._seen: set[int] = set()  # hashes of keys of records that went the full path once
        self.seconds: dict[bytes, int | None] = {}
        self._invalid: set[bytes] = set()  # the keys of _seconds that are no valid date-time
        self.max_line_bytes = max_line_bytes

    def __len__(self) -> int:
        return len(self.shapes)

    def second(self, key: bytes) -> int | None:
        """``YYYY-MM-DDTHH:MM:SS`` as naive epoch seconds; None when it is no valid date-time."""
        seconds = self.seconds
        try:
            return seconds[key]
        except KeyError:
            pass
        try:
            value: int | None = (datetime.fromisoformat(key.decode()) - _EPOCH) // _SECOND
        except ValueError:
            value = None
        if len(seconds) >= _MAX_SECONDS:
            seconds.clear()
            self._invalid.clear()
        seconds[key] = value
        if value is None:
            self._invalid.add(key)
        return value

    def invalid(self, keys: set[bytes]) -> set[bytes]:
        """The keys (``YYYY-MM-DDTHH:MM:SS``) among ``keys`` that are no valid date-time."""
        for key in keys.difference(self.seconds):  # set operations in C; a new second is rare
            self.second(key)
        return keys & self._invalid

    def timestamp(self, shape: Shape, value: bytes) -> float | None:
        """The timestamp of a record of ``shape``, as the decoder computes it (None when invalid)."""
        sec = self.second(value[shape.a:shape.sec_end])
        if sec is None:
            return None
        micros = (sec - shape.zone_s) * 1_000_000
        if shape.scale:
            micros += int(value[shape.fa:shape.fb]) * shape.scale
        return micros / 1_000_000

    def seen_before(self, key: bytes) -> bool:
        """Whether a record with this key went the full path before (else remember that it did now).

        A shape is learned at its second record: most keys that occur once (ids with letters, hashes)
        never come back, and learning costs more than a full-path record."""
        if len(key) > _MAX_SHAPE_BYTES:
            return False
        seen = self._seen
        h = hash(key)  # a collision only learns a shape one record early
        if h in seen:
            return True
        if len(seen) >= _MAX_SEEN:
            seen.clear()
        seen.add(h)
        return False

    def learn(self, key: bytes, record: Record, event: Event, service_found: bool, ts_text: str) -> Shape | None:
        """Make a shape from a record the full path decoded into ``event`` (see the module docstring for
        the conditions the caller checked); None when this record's shape cannot skip the full path."""
        h = hash(key)
        if h in self._rejected or len(key) > _MAX_SHAPE_BYTES:
            return None
        shape = self._make(record, event, service_found, ts_text)
        if shape is None:
            if len(self._rejected) >= _MAX_SEEN:
                self._rejected.clear()
            self._rejected.add(h)
            return None
        if len(self.shapes) >= _MAX_SHAPES:
            self.shapes.clear()  # bounded: a stream with this many shapes mostly takes the full path
        self.shapes[key] = shape
        return shape

    def _make(self, record: Record, event: Event, service_found: bool, ts_text: str) -> Shape | None:
        value = record.data
        raw = event.raw
        if (record.truncated or len(value) >= self.max_line_bytes or event.exception is not None
                or not event.has_timestamp or not raw.isascii() or not raw.isprintable()
                or "\n" in event.message or "\u2026[truncated" in raw or "\\u" in raw):  # \u00XX: digits
            return None
        if event.format == "plain" and event.level >= _WARNING:
            return None  # the assembler holds these (a trace may follow)
        service: str | None = None
        if service_found:
            if event.service.translate(_ZERO_STR) != event.service or "0" in event.service:
                return None  # digits in a service name would make all its siblings one service
            service = event.service
        at = raw.find(ts_text)
        if at < 0 or raw.find(ts_text, at + 1) >= 0 or value[:len(raw)].decode("ascii", "replace") != raw:
            return None
        m = _ISO_TS.fullmatch(ts_text.encode())
        if m is None:
            return None
        shape = Shape(event.level, service, event.format, at, at + len(ts_text))
        if m.group(1) is not None:
            shape.fa, shape.fb = at + m.start(1), at + m.end(1)
            shape.scale = 10 ** (6 - (shape.fb - shape.fa))
        zone = m.group(2)
        if zone is not None and zone not in (b"Z", b"z"):
            digits = zone[1:].replace(b":", b"")
            offset = int(digits[:2]) * 3600 + int(digits[2:]) * 60
            shape.zone_s = offset if zone[:1] == b"+" else -offset
            shape.za, shape.zb = at + m.start(2), at + m.end(2)
            shape.zone = zone
        if self.timestamp(shape, value) != event.timestamp:
            return None  # a layout this reading does not reproduce exactly
        return shape


class Rows(Sequence[Record]):
    """Some records of a batch, by index, made only when asked for (a :class:`RowBatch` makes its
    Records on demand)."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: Sequence[Record], index: list[int]) -> None:
        self._batch = batch
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    @overload
    def __getitem__(self, i: int) -> Record: ...

    @overload
    def __getitem__(self, i: slice) -> list[Record]: ...

    def __getitem__(self, i: int | slice) -> Record | list[Record]:
        if isinstance(i, slice):
            return list(map(self._batch.__getitem__, self._index[i]))
        return self._batch[self._index[i]]

    def __iter__(self) -> Iterator[Record]:
        return map(self._batch.__getitem__, self._index)


class Tally:
    """The records of one quiet shape in one segment, in read order, with the columns counted in bulk."""

    __slots__ = ("attributes", "keys", "kinds", "offsets", "records", "shape", "values")

    def __init__(self, shape: Shape, records: Sequence[Record], values: list[bytes], keys: list[bytes],
                 offsets: list[int], attributes: list[dict[str, str] | None]) -> None:
        self.shape = shape
        self.records = records
        self.values = values
        self.keys = keys  # each record's date and time to the second (validated)
        self.offsets = offsets
        self.attributes = attributes
        self.kinds = 0  # distinct attributes objects among the records (0: not counted yet)


class Segment:
    """What the decode stage hands on for a stretch of one stream that took the lane."""

    __slots__ = ("alerts", "stream", "tallies")

    def __init__(self, stream: str, tallies: list[Tally], alerts: list[tuple[Record, Shape, float]]) -> None:
        self.stream = stream
        self.tallies = tallies
        self.alerts = alerts  # (record, shape, timestamp) in read order

    def __len__(self) -> int:
        return sum(len(t.records) for t in self.tallies) + len(self.alerts)


class FastLane:
    """The decode stage's loop: records of known shapes into segments, the others down the full path."""

    __slots__ = ("_assembler", "_counters", "_decoder", "_memo", "_min_level", "_off_for", "_seen", "_steps",
                 "_window_hits", "records")

    # Where shapes do not repeat (an id with letters in every line) the lane only costs: after a window
    # of PROBE records of which less than 1/20 took it, the next OFF_FOR records skip it entirely (the
    # shapes learned so far are kept for the next probe).
    PROBE = 4_096
    OFF_FOR = 8 * PROBE

    def __init__(self, memo: ShapeMemo, decoder: Decoder, assembler: MultilineAssembler,
                 steps: Sequence[ShapeStep], counters: Counters, *, min_level: Level) -> None:
        self.records = 0  # records that took the lane (the rest took the full path)
        self._memo = memo
        self._decoder = decoder
        self._assembler = assembler
        self._steps = list(steps)
        self._counters = counters
        self._min_level = min_level
        self._seen = 0  # records of the current probe window
        self._window_hits = 0
        self._off_for = 0  # records left that skip the lane

    def process(self, batch: Sequence[Record]) -> list[Event | Segment]:
        """Events of the full path and segments, in read order (see the module docstring)."""
        if self._off_for > 0:
            self._off_for -= len(batch)
            return self._plain(batch)
        before = self.records
        out = self._lane(batch)
        self._seen += len(batch)
        self._window_hits += self.records - before
        if self._seen >= self.PROBE:
            if self._window_hits * 20 < self._seen:
                self._off_for = self.OFF_FOR
            self._seen = self._window_hits = 0
        return out

    def _plain(self, batch: Sequence[Record]) -> list[Event | Segment]:
        """The full path for every record, learning nothing (the pipeline's loop without the lane)."""
        out: list[Event | Segment] = []
        decoder, push, steps = self._decoder, self._assembler.push, self._steps
        for r in batch:
            event = decoder(r)
            if event is not None:
                for e in push(event):
                    for step in steps:
                        e = step(e)
                    out.append(e)
        return out

    def _lane(self, batch: Sequence[Record]) -> list[Event | Segment]:
        out: list[Event | Segment] = []
        get = self._memo.shapes.get
        holds = self._assembler.holds
        zero = ZERO_DIGITS
        seg: list[Shape] = []  # quiet shapes with records (indices into batch) in the current segment
        alerts: list[tuple[int, Shape]] = []
        if isinstance(batch, RowBatch):  # one stream; values made by the source, Records on demand
            values, one_stream, stream = batch.values, True, batch.stream
        else:
            values = list(map(_DATA, batch))  # map with C callables: no bytecode per record
            one_stream = isinstance(batch, StreamBatch) and bool(batch)
            stream = batch[0].stream if one_stream else ""
        lane = one_stream and not holds(stream)
        for i, v in enumerate(values):
            if not one_stream and batch[i].stream != stream:
                if seg or alerts:
                    self._flush(out, seg, alerts, stream, batch, values)
                stream = batch[i].stream
                lane = not holds(stream)
            if lane:
                key = v.translate(zero)
                shape = get(key)
                if shape is not None:
                    shape = shape.bucket
                    if shape.alert:
                        alerts.append((i, shape))
                        continue
                    recs = shape.recs
                    if recs is None:
                        shape.recs = recs = []
                        seg.append(shape)
                    recs.append(i)
                    continue
            else:
                key = None
            if seg or alerts:
                self._flush(out, seg, alerts, stream, batch, values)
            self._full(batch[i], key, out)
            lane = not holds(stream)
        if seg or alerts:
            self._flush(out, seg, alerts, stream, batch, values)
        return out

    # --- internals --------------------------------------------------------------------------------

    def _full(self, record: Record, key: bytes | None, out: list[Event | Segment]) -> None:
        """The full path for one record; learn its shape when it qualifies."""
        decoder = self._decoder
        event = decoder(record)
        if event is None:
            return
        plan = decoder.plan
        done = self._assembler.push(event)
        ts_text = plan.ts_text if plan is not None and plan.digit_free else None
        learn = (key is not None and ts_text is not None and len(done) == 1 and done[0] is event
                 and self._memo.seen_before(key) and all(s.leaves_shape_alone(event) for s in self._steps))
        for e in done:
            for step in self._steps:
                e = step(e)
            out.append(e)
        if learn and key is not None and ts_text is not None and plan is not None:
            shape = self._memo.learn(key, record, event, bool(plan.service), ts_text)
            if shape is not None and shape.level >= self._min_level:
                shape.alert = True

    def _flush(self, out: list[Event | Segment], seg: list[Shape], alerts: list[tuple[int, Shape]],
               stream: str, batch: Sequence[Record], column: list[bytes]) -> None:
        """Hand on the segment gathered in ``seg`` (quiet shapes with their records' indices into
        ``batch``; ``column`` is the batch's values) and ``alerts``."""
        memo = self._memo
        tallies: list[Tally] = []
        bad: set[int] = set()  # indices of records whose timestamp is no valid date-time (or another zone)
        rows = batch if isinstance(batch, RowBatch) else None
        for shape in seg:
            idx = shape.recs
            if not idx:
                continue
            a, se = shape.a, shape.sec_end
            values = list(map(column.__getitem__, idx))  # map with C callables: no bytecode per record
            keys = list(map(itemgetter(slice(a, se)), values))
            zone = shape.zone
            invalid = memo.invalid(set(keys))
            if invalid or (zone is not None and any(v[shape.za:shape.zb] != zone for v in values)):
                for i, v in zip(idx, values, strict=True):
                    if v[a:se] in invalid or (zone is not None and v[shape.za:shape.zb] != zone):
                        bad.add(i)
            if rows is not None:
                offsets = list(map(rows.offsets.__getitem__, idx))
                attributes = list(map(rows.attributes.__getitem__, idx))
                records: Sequence[Record] = Rows(batch, idx)
            else:
                records = list(map(batch.__getitem__, idx))
                offsets = list(map(_OFFSET, records))
                attributes = list(map(_ATTRIBUTES, records))
            tallies.append(Tally(shape, records, values, keys, offsets, attributes))
        timed: list[tuple[Record, Shape, float]] = []
        seconds = memo.seconds
        for i, shape in alerts:  # memo.timestamp, inlined: these run one per alert record
            v = column[i]
            sec = seconds.get(v[shape.a:shape.sec_end])
            if sec is None:
                sec = memo.second(v[shape.a:shape.sec_end])
            if sec is None or (shape.zone is not None and v[shape.za:shape.zb] != shape.zone):
                bad.add(i)
                continue
            micros = (sec - shape.zone_s) * 1_000_000
            if shape.scale:
                micros += int(v[shape.fa:shape.fb]) * shape.scale
            timed.append((batch[i], shape, micros / 1_000_000))
        if bad:
            self._replay(out, seg, alerts, bad, stream, batch, column)
            return
        for shape in seg:
            shape.recs = None
        seg.clear()
        alerts.clear()
        if not tallies and not timed:
            return
        segment = Segment(stream, tallies, timed)
        last, last_shape, last_offset = b"", None, -1
        for t in tallies:
            if t.offsets[-1] > last_offset:
                last, last_shape, last_offset = t.values[-1], t.shape, t.offsets[-1]
        if timed and timed[-1][0].offset > last_offset:
            last, last_shape = timed[-1][0].data, timed[-1][1]
        ts = memo.timestamp(last_shape, last) if last_shape is not None else None
        if ts is not None:
            self._decoder.set_last_timestamp(stream, ts)
        n = len(segment)
        self._counters.decoded += n
        self.records += n
        out.append(segment)

    def _replay(self, out: list[Event | Segment], seg: list[Shape], alerts: list[tuple[int, Shape]], bad: set[int],
                stream: str, batch: Sequence[Record], column: list[bytes]) -> None:
        """A segment with records whose timestamp is invalid (``:61``, ``02-30``) or in another zone: in
        read order again, each of them takes the full path where it was read, between the segments
        before and after it (so its fallback timestamp, the stream's previous one, is the full path's)."""
        rows = [(i, shape) for shape in seg for i in shape.recs or ()] + alerts
        for shape in seg:
            shape.recs = None
        seg.clear()
        alerts.clear()
        rows.sort(key=_first_of)  # indices are read order
        holds = self._assembler.holds
        part: list[Shape] = []
        part_alerts: list[tuple[int, Shape]] = []
        for i, shape in rows:
            if i in bad or holds(stream):  # a held event (a bad line may start a trace) goes on in full
                if part or part_alerts:
                    self._flush(out, part, part_alerts, stream, batch, column)
                self._full(batch[i], None, out)
            elif shape.alert:
                part_alerts.append((i, shape))
            else:
                recs = shape.recs
                if recs is None:
                    shape.recs = recs = []
                    part.append(shape)
                recs.append(i)
        if part or part_alerts:
            self._flush(out, part, part_alerts, stream, batch, column)


_DATA = attrgetter("data")
_ATTRIBUTES = attrgetter("attributes")
_OFFSET = attrgetter("offset")


def _first_of(row: tuple[int, Shape]) -> int:
    return row[0]


def _alert_offset(alert: tuple[Record, Shape, float]) -> int:
    return alert[0].offset


FindingSink = Callable[[Finding], None]


class _Deferred:
    """Events of a cluster with an incident, detected one by one, counted together."""

    __slots__ = ("cluster", "levels", "records", "services", "stamps")

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.stamps: list[float] = []
        self.records: list[Record] = []
        self.services: list[str | None] = []  # the shape's service (None: the record's source names it)
        self.levels: list[Level] = []


class SegmentApplier:
    """The cluster stage's side: apply a segment to the clusterer, store, detector and context.

    A cluster counted in bulk keeps its latest record aside; it becomes the cluster's latest sample
    (decoded again) only when someone looks: before a checkpoint's store flush (:meth:`settle`), before
    detection's timed findings, and when a finding of that cluster is made. An event the full path adds
    to the cluster supersedes it (:meth:`superseded`).
    """

    __slots__ = ("_caught", "_clusterer", "_context", "_context_lines", "_counters", "_decoder", "_defer",
                 "_deferred", "_detector", "_emit", "_latest", "_leaders", "_memo", "_on_created", "_segment",
                 "_steps", "_store")

    def __init__(self, memo: ShapeMemo, decoder: Decoder, steps: Sequence[ShapeStep], clusterer: Clusterer,
                 store: Store, detector: Detector, context: ContextCollector, counters: Counters,
                 *, context_lines: int, on_created: Callable[[Cluster], None]) -> None:
        self._memo = memo
        self._decoder = decoder
        self._steps = list(steps)
        self._clusterer = clusterer
        self._store = store
        self._detector = detector
        self._context = context
        self._context_lines = context_lines
        self._counters = counters
        self._on_created = on_created
        self._segment: Segment | None = None
        self._caught = -1  # context lines of the segment up to this offset were given already
        self._emit: FindingSink = _drop
        self._latest: dict[str, tuple[Cluster, Record]] = {}  # cluster id -> its latest record, not decoded
        self._leaders: dict[tuple[object, ...], Shape] = {}
        self._deferred: dict[str, _Deferred] = {}  # cluster id -> events counted at the segment's end
        self._defer = detector.settings.min_count <= 1  # see _one
        detector.on_snapshot = self._snapshot

    def __call__(self, segment: Segment, emit: FindingSink) -> None:
        """Apply ``segment``; each finding goes to ``emit`` when it happens (the context is then up to
        the record that caused it)."""
        self._segment = segment
        self._caught = -1
        self._emit = emit
        try:
            if segment.alerts:
                self._alerts(segment)
            for tally in segment.tallies:
                self._tally(segment, tally)
            self._sync_all()
            self._lines(segment, 1 << 62)
            self._counters.clustered += len(segment)
        finally:
            self._segment = None
            self._emit = _drop

    def settle(self) -> None:
        """Make the latest record of every cluster counted in bulk its latest sample."""
        self._sync_all()
        latest = self._latest
        if latest:
            refresh = self._clusterer.refresh_sample
            touch = self._store.touch
            for cluster, record in latest.values():
                if self._kept(cluster):
                    refresh(cluster, self._event(record))
                    touch(cluster)  # a flush may have written the cluster since it was counted
            latest.clear()

    def _kept(self, cluster: Cluster) -> bool:
        """Live, or evicted (the store keeps it); not merged into another cluster since it was counted."""
        current = self._clusterer.get(cluster.id)
        return current is cluster or current is None

    def superseded(self, cluster: Cluster) -> None:
        """The full path added a later event to ``cluster`` (and so refreshed its latest sample)."""
        if self._latest:
            self._latest.pop(cluster.id, None)

    # --- internals --------------------------------------------------------------------------------

    def _valid(self, cluster: Cluster | None) -> bool:
        """The shape's cluster is still the live one and keeps no more samples: records can be counted."""
        clusterer = self._clusterer
        return cluster is not None and clusterer.get(cluster.id) is cluster and not clusterer.sample_room(cluster)

    def _alerts(self, segment: Segment) -> None:
        one = self._one
        checked: set[int] = set()  # clusters found valid; only ``_full`` (clusterer.add) changes that
        for r, shape, ts in segment.alerts:
            cluster = shape.cluster
            if cluster is not None and (id(cluster) in checked or self._valid(cluster)):
                checked.add(id(cluster))
                one(segment, cluster, shape, r, ts)
            else:
                self._full(r, shape)
                checked.clear()

    def _one(self, segment: Segment, cluster: Cluster, shape: Shape, r: Record, ts: float) -> None:
        """One event detection sees by itself; its counting waits for the segment's end (or for a
        finding's snapshot: ``on_snapshot``). Detection reads a cluster's counts only to announce it
        once ``detect.min_count`` events arrived: with a min_count above 1, the events of a cluster
        without an incident are counted at once."""
        cid = cluster.id
        level = shape.level
        if self._defer or self._detector.tracks(cid):
            deferred = self._deferred.get(cid)
            if deferred is None or deferred.cluster is not cluster:
                if deferred is not None:
                    self._sync(deferred)
                deferred = self._deferred[cid] = _Deferred(cluster)
            deferred.stamps.append(ts)
            deferred.records.append(r)
            deferred.services.append(shape.service)
            deferred.levels.append(level)
        else:
            service = shape.service if shape.service is not None else self._service(r)
            self._clusterer.bump(cluster, 1, ts, ts, level, {service: 1})
            self._store.touch(cluster)
            self._store.count(cid, ts)
            self._keep_latest(cluster, r)
        found = self._detector.observe_at(segment.stream, ts, level, cluster)
        if found:
            self._found(found, r.offset)

    def _sync(self, deferred: _Deferred) -> None:
        """Count a cluster's deferred events (see :meth:`_one`)."""
        cluster = deferred.cluster
        stamps, records, fixed, levels = deferred.stamps, deferred.records, deferred.services, deferred.levels
        bump = self._clusterer.bump
        if levels.count(levels[0]) == len(levels):
            unnamed = fixed.count(None)
            if unnamed == len(fixed):
                services = self._services(list(map(_ATTRIBUTES, records)), records.__getitem__)
            else:
                services = Counter(f for f in fixed if f is not None)
                if unnamed:
                    rest = [r for r, f in zip(records, fixed, strict=True) if f is None]
                    for name, k in self._services(list(map(_ATTRIBUTES, rest)), rest.__getitem__).items():
                        services[name] = services.get(name, 0) + k
            bump(cluster, len(stamps), min(stamps), max(stamps), levels[0], services)
        else:
            for ts, r, named, level in zip(stamps, records, fixed, levels, strict=True):
                bump(cluster, 1, ts, ts, level, {named if named is not None else self._service(r): 1})
        self._store.count_minutes(cluster.id, Counter(map(int, map(floordiv, stamps, repeat(60.0)))))  # in C
        self._store.touch(cluster)
        self._keep_latest(cluster, max(records, key=_OFFSET))

    def _keep_latest(self, cluster: Cluster, record: Record) -> None:
        """``record`` becomes the cluster's pending latest sample unless one read after it (same stream,
        later offset: several tallies and alert records of one cluster in a segment) is pending."""
        latest = self._latest
        pending = latest.get(cluster.id)
        if (pending is None or pending[0] is not cluster or pending[1].stream != record.stream
                or pending[1].offset < record.offset):
            latest[cluster.id] = (cluster, record)

    def _sync_all(self) -> None:
        deferred = self._deferred
        if deferred:
            for d in deferred.values():
                self._sync(d)
            deferred.clear()

    def _snapshot(self, cluster: Cluster) -> None:
        """A finding is about to copy ``cluster``: its deferred counts and latest sample first."""
        deferred = self._deferred.pop(cluster.id, None) if self._deferred else None
        if deferred is not None:
            self._sync(deferred)
        pending = self._latest.pop(cluster.id, None) if self._latest else None
        if pending is not None and pending[0] is cluster and self._kept(cluster):
            self._clusterer.refresh_sample(cluster, self._event(pending[1]))
            self._store.touch(cluster)

    def _tally(self, segment: Segment, tally: Tally) -> None:
        shape, recs = tally.shape, tally.records
        n = len(recs)
        i = 0
        cluster = shape.cluster
        while i < n and (cluster is None or not self._valid(cluster)):
            cluster = self._full(recs[i], shape)
            i += 1
        if cluster is None:
            return
        if i < n:
            if self._detector.quiet(cluster.id, shape.level):
                self._bulk(segment, tally, cluster, i, n)
                self._keep_latest(cluster, recs[-1])
            else:  # an incident started meanwhile: from now on, one by one
                shape.alert = True
                self._one_by_one(segment, tally, cluster, i, n)
        self._store.touch(cluster)

    def _event(self, record: Record) -> Event:
        event = self._decoder.event_of(record)
        for step in self._steps:
            event = step(event)
        return event

    def _found(self, found: list[Finding], offset: int) -> None:
        """Findings of a record: the context first gets the segment's lines before it."""
        self._lines(self._segment, offset)
        for finding in found:
            self._emit(finding)

    def _full(self, record: Record, shape: Shape) -> Cluster:
        """One record as the full path's cluster stage handles it (counted by the caller)."""
        self._sync_all()  # earlier events first: this one becomes the latest sample
        event = self._event(record)
        match: Match = self._clusterer.add(event)
        cluster = match.cluster
        self.superseded(cluster)
        if match.created:
            self._on_created(cluster)
        if shape.cluster is not cluster:
            shape.cluster = cluster
            self._join(shape, cluster)
        self._store.touch(cluster)
        self._store.count(cluster.id, event.timestamp)
        found = self._detector.observe(event, match)
        if found:
            self._found(found, record.offset)
        return cluster

    def _join(self, shape: Shape, cluster: Cluster) -> None:
        """Let ``shape``'s records join the tally of the first shape of the same cluster and layout."""
        if shape.bucket is not shape:
            return
        key = (cluster.id, shape.level, shape.service, shape.format, shape.a, shape.b, shape.fa, shape.fb,
               shape.zone)
        leaders = self._leaders
        leader = leaders.get(key)
        if leader is None or leader.cluster is not cluster:
            if len(leaders) >= _MAX_SHAPES:
                leaders.clear()
            leaders[key] = shape
        elif leader is not shape:
            shape.bucket = leader
            if shape.alert:
                leader.alert = True

    def _service(self, record: Record) -> str:
        """The service of a record whose shape has none (the decoder's fallback)."""
        attrs = record.attributes
        service = attrs.get("service") if attrs else None
        return service if service else self._decoder.fallback_service(record)

    def _services(self, attrs: list[dict[str, str] | None], record_at: Callable[[int], Record],
                  tally: Tally | None = None) -> dict[str, int]:
        """Records per service, for records whose shape has none, from their ``attrs`` (``record_at(i)``
        is the i-th record). The service follows from a record's attributes object (shared per Kafka
        key), its path and source, which are one per stream: so one lookup per distinct attributes
        object, and the counting in C. With ``tally``, the number of distinct ones is kept on it."""
        if attrs.count(attrs[0]) == len(attrs):  # one service (a shared dict compares by identity: C)
            if tally is not None:
                tally.kinds = 1
            return {self._service(record_at(len(attrs) - 1)): len(attrs)}
        if tally is not None:
            tally.kinds = len(set(map(id, attrs)))
        last = dict(zip(map(id, attrs), range(len(attrs)), strict=True))
        out: dict[str, int] = {}
        for aid, k in Counter(map(id, attrs)).items():
            service = self._service(record_at(last[aid]))
            out[service] = out.get(service, 0) + k
        return out

    def _bulk(self, segment: Segment, tally: Tally, cluster: Cluster, lo: int, hi: int) -> None:
        """Records ``lo..hi-1`` of a quiet tally, counted together."""
        shape = tally.shape
        memo = self._memo
        n = hi - lo
        values = tally.values[lo:hi] if lo else tally.values
        keys = tally.keys[lo:hi] if lo else tally.keys  # "YYYY-MM-DDTHH:MM:SS": byte order is time order
        a = shape.a
        in_order = all(map(le, keys, islice(keys, 1, None)))  # a stream mostly is; stops at a step back
        # The earliest and latest timestamps: to the second from the keys, then the fractions of the
        # records in those seconds only (all records when the keys are not in order).
        if in_order:
            head = values[:bisect_right(keys, keys[0])]
            tail = values[bisect_left(keys, keys[-1]):]
        else:
            head = tail = values
        if shape.scale:
            get = itemgetter(slice(a, shape.b))
            head_stamps = list(map(get, head))
            tail_stamps = head_stamps if tail is head else list(map(get, tail))
            low = head[head_stamps.index(min(head_stamps))]
            high = tail[tail_stamps.index(max(tail_stamps))]
        else:
            low = head[keys.index(min(keys))] if not in_order else head[0]
            high = tail[keys.index(max(keys))] if not in_order else tail[0]
        first = memo.timestamp(shape, low)
        last = memo.timestamp(shape, high)
        if first is None or last is None:  # validated by the decode stage
            raise ValueError("a tally with an invalid timestamp")
        if shape.service is not None:
            services: dict[str, int] = {shape.service: n}
        else:
            records = tally.records
            if lo:
                services = self._services(tally.attributes[lo:hi], lambda j: records[lo + j])
            else:
                services = self._services(tally.attributes, records.__getitem__, tally)
        self._clusterer.bump(cluster, n, first, last, shape.level, services)
        # Per minute: from the ordered keys, one bisection per minute; else "YYYY-MM-DDTHH:MM" counted in C.
        second = memo.second
        zone_s = shape.zone_s
        minutes: dict[bytes, int]
        if in_order:
            minutes = {}
            i = 0
            while i < n:
                minute = keys[i][:16]
                j = bisect_left(keys, minute + b";", i)  # ";" sorts right after the ":" of ":SS"
                minutes[minute] = j - i
                i = j
        else:
            minutes = Counter(map(itemgetter(slice(0, 16)), keys))
        per_minute: dict[int, int] = {}
        for key, k in minutes.items():
            sec = second(key + b":00")
            if sec is not None:
                per_minute[(sec - zone_s) // 60] = k
        self._store.count_minutes(cluster.id, per_minute)
        self._detector.advance(segment.stream, last)

    def _one_by_one(self, segment: Segment, tally: Tally, cluster: Cluster, lo: int, hi: int) -> None:
        """Records ``lo..hi-1`` of a tally whose cluster detection now follows."""
        shape = tally.shape
        stamp = self._memo.timestamp
        for j in range(lo, hi):
            r = tally.records[j]
            ts = stamp(shape, r.data)
            if ts is None:
                raise ValueError("a tally with an invalid timestamp")
            self._one(segment, cluster, shape, r, ts)

    def _lines(self, segment: Segment | None, before: int) -> None:
        """Give the context the segment's lines read before offset ``before`` (and after those given
        already): the last few of each service, in read order."""
        keep = self._context_lines
        if segment is None or not keep or before <= self._caught + 1:
            return
        after = self._caught
        picked: list[tuple[int, str, bytes]] = []
        for tally in segment.tallies:
            recs, offsets = tally.records, tally.offsets
            fixed = tally.shape.service
            wanted = 1 if fixed is not None else tally.kinds or len(set(map(id, tally.attributes)))
            seen: dict[str, int] = {}
            for j in range(bisect_left(offsets, before) - 1, -1, -1):  # read order: sorted
                if offsets[j] <= after:
                    break
                service = fixed if fixed is not None else self._service(recs[j])
                k = seen.get(service, 0)
                if k < keep:
                    seen[service] = k + 1
                    picked.append((offsets[j], service, tally.values[j]))
                    if k + 1 == keep:
                        wanted -= 1
                        if wanted <= 0:  # every service of the tally has its lines
                            break
        if segment.alerts:
            seen = {}
            alerts = segment.alerts
            for j in range(bisect_left(alerts, before, key=_alert_offset) - 1, -1, -1):
                r, shape, _ = alerts[j]
                if r.offset <= after:
                    break
                service = shape.service if shape.service is not None else self._service(r)
                k = seen.get(service, 0)
                if k < keep:
                    seen[service] = k + 1
                    picked.append((r.offset, service, r.data))
        self._caught = before - 1
        if not picked:
            return
        picked.sort(key=_first)
        per: Counter[str] = Counter(service for _, service, _ in picked)
        line = self._context.observe_line
        for _, service, value in picked:
            if per[service] > keep:  # an earlier one of a service with later lines elsewhere
                per[service] -= 1
                continue
            line(service, value.decode().rstrip("\r\n"))


def _drop(finding: Finding) -> None:
    raise RuntimeError("a finding outside a segment")


def _first(item: tuple[int, str, bytes]) -> int:
    return item[0]
