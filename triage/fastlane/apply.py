"""The cluster stage's side of the repeat-shape lane: a segment applied in bulk, detection one by one."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import islice, repeat
from operator import attrgetter, floordiv, itemgetter, le

from triage.accounting import Counters
from triage.clustering.base import Clusterer, Match
from triage.detect import Detector
from triage.fastlane.lane import Segment, Tally
from triage.fastlane.shapes import MAX_SHAPES, Shape, ShapeMemo, ShapeStep
from triage.model import Cluster, Event, Finding, Level, Record
from triage.parsing import Decoder
from triage.store import Store
from triage.summarize.context import ContextCollector

FindingSink = Callable[[Finding], None]
_ATTRIBUTES = attrgetter("attributes")
_OFFSET = attrgetter("offset")
_END = 1 << 62  # an offset past every record (the segment's end)


def _alert_offset(alert: tuple[Record, Shape, float]) -> int:
    return alert[0].offset


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
            self._lines(segment, _END)
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
            if len(leaders) >= MAX_SHAPES:
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
            recs = tally.records
            fixed = tally.shape.service
            wanted = 1 if fixed is not None else tally.kinds or len(set(map(id, tally.attributes)))
            seen: dict[str, int] = {}
            # Read order is offset order; at the segment's end (no bound) start from the last record.
            top = len(recs) if before >= _END else bisect_left(tally.offsets, before)
            for j in range(top - 1, -1, -1):
                r = recs[j]
                if r.offset <= after:
                    break
                service = fixed if fixed is not None else self._service(r)
                k = seen.get(service, 0)
                if k < keep:
                    seen[service] = k + 1
                    picked.append((r.offset, service, tally.values[j]))
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
