"""The decode stage's side of the repeat-shape lane: records of known shapes into segments."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter, itemgetter
from typing import overload

from triage.accounting import Counters
from triage.fastlane.shapes import ZERO_DIGITS, Shape, ShapeMemo, ShapeStep
from triage.model import Event, Level, Record, RowBatch, StreamBatch
from triage.parsing import Decoder, MultilineAssembler


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
    """The records of one quiet shape in one segment, in read order, with the columns counted in bulk.

    ``offsets`` and ``attributes`` are made when first read (from the batch's columns, or from the
    Records): most tallies need only their last few.
    """

    __slots__ = ("_attributes", "_offsets", "_rows", "keys", "kinds", "records", "shape", "values")

    def __init__(self, shape: Shape, records: Sequence[Record], values: list[bytes], keys: list[bytes],
                 rows: tuple[RowBatch, list[int]] | None = None) -> None:
        self.shape = shape
        self.records = records
        self.values = values
        self.keys = keys  # each record's date and time to the second (validated)
        self.kinds = 0  # distinct attributes objects among the records (0: not counted yet)
        self._rows = rows  # the RowBatch and indices the records come from (None: Records)
        self._offsets: list[int] | None = None
        self._attributes: list[dict[str, str] | None] | None = None

    @property
    def offsets(self) -> list[int]:
        if self._offsets is None:
            if self._rows is not None:
                batch, idx = self._rows
                self._offsets = list(map(batch.offsets.__getitem__, idx))
            else:
                self._offsets = list(map(_OFFSET, self.records))
        return self._offsets

    @property
    def attributes(self) -> list[dict[str, str] | None]:
        if self._attributes is None:
            if self._rows is not None:
                batch, idx = self._rows
                self._attributes = list(map(batch.attributes.__getitem__, idx))
            else:
                self._attributes = list(map(_ATTRIBUTES, self.records))
        return self._attributes

    @property
    def last_offset(self) -> int:
        if self._rows is not None:
            batch, idx = self._rows
            return batch.offsets[idx[-1]]
        return self.records[-1].offset


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

    __slots__ = ("_assembler", "_counters", "_decoder", "_memo", "_min_level", "_off_for", "_on", "_seen",
                 "_steps", "_vouchers", "_window_hits", "records")

    # Where shapes do not repeat (an id with letters in every line) the lane only costs: after a window
    # of PROBE records of which less than 1/20 took it, the next OFF_FOR records skip it entirely (the
    # shapes learned so far are kept for the next probe).
    PROBE = 4_096
    OFF_FOR = 8 * PROBE

    def __init__(self, memo: ShapeMemo | None, decoder: Decoder, assembler: MultilineAssembler,
                 steps: Sequence[Callable[[Event], Event]], counters: Counters, *, min_level: Level) -> None:
        """Without ``memo``, or with a step that cannot vouch for shapes (:class:`ShapeStep`), every
        record takes the full path (the lane is off)."""
        self.records = 0  # records that took the lane (the rest took the full path)
        self._steps = list(steps)
        self._vouchers = [step for step in self._steps if isinstance(step, ShapeStep)]
        self._on = memo is not None and len(self._vouchers) == len(self._steps)
        self._memo = memo if memo is not None else ShapeMemo()
        self._decoder = decoder
        self._assembler = assembler
        self._counters = counters
        self._min_level = min_level
        self._seen = 0  # records of the current probe window
        self._window_hits = 0
        self._off_for = 0  # records left that skip the lane

    @property
    def memo(self) -> ShapeMemo | None:
        """The shapes the lane knows; None when the lane is off."""
        return self._memo if self._on else None

    def process(self, batch: Sequence[Record]) -> list[Event | Segment]:
        """Events of the full path and segments, in read order (see the module docstring)."""
        if not self._on:
            return self._plain(batch)
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
        """The full path for every record, learning nothing."""
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
                 and self._memo.seen_before(key) and all(s.leaves_shape_alone(event) for s in self._vouchers))
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
                tallies.append(Tally(shape, Rows(batch, idx), values, keys, (rows, idx)))
            else:
                tallies.append(Tally(shape, list(map(batch.__getitem__, idx)), values, keys))
        timed: list[tuple[Record, Shape, float]] = []
        timestamp = memo.timestamp
        for i, shape in alerts:
            ts = timestamp(shape, column[i])
            if ts is None:
                bad.add(i)
            else:
                timed.append((batch[i], shape, ts))
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
            offset = t.last_offset
            if offset > last_offset:
                last, last_shape, last_offset = t.values[-1], t.shape, offset
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
