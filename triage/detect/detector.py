"""Detection: which clusters are worth telling someone about, and when to tell them again.

The lifecycle of an incident (one per announced cluster), Alertmanager's model adapted to clusters::

    (cluster at min_level, count >= min_count, after group_wait) ──▶ new
    new / firing ──(rate >= spike_factor × its own baseline)──▶ spike        (at most once per group_interval)
    new / firing ──(a new trace cluster with the same exception and frames)──▶ variant (into the same incident)
    firing ──(still firing after repeat_interval)──▶ repeat
    firing ──(quiet for resolve_after)──▶ resolved ──(fires again)──▶ new (reopened, same id)

Time is the log's time (event timestamps) carried forward by the wall clock between events, so that a
replay resolves what a live run would, and a quiet live system still resolves. Silences (by cluster id
or template pattern, with expiry) suppress findings of every kind; they live in the store so that
``triage silence add`` takes effect in a running pipeline.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from triage.clustering.base import Match
from triage.detect.silences import Silence
from triage.model import Cluster, Event, ExceptionInfo, Finding, FindingKind, Level
from triage.settings import DetectSettings


@dataclass(slots=True)
class Incident:
    """What detection remembers about one announced cluster."""

    id: str
    version: int
    firing: bool = True
    last_event: float = 0.0  # detection time of its latest event
    last_notified: float = 0.0
    announced_at: float = 0.0
    minute: int = -1
    minute_count: int = 0
    baseline: float = 0.0  # events per minute, exponentially weighted
    spiked_minute: int = -1
    trace_key: tuple[str, ...] | None = None
    members: set[str] = field(default_factory=set)  # cluster ids folded into it (variants)
    stream: str = ""  # where its latest event came from (whose clock says how long it has been quiet)
    events: int = 0
    first_event: float = 0.0

    def quiet_needed(self, resolve_after: float, gaps: float) -> float:
        """Quiet time before resolving: the setting, or ``gaps`` × its usual gap for sparse incidents."""
        if self.events < 2:
            return resolve_after
        gap = (self.last_event - self.first_event) / (self.events - 1)
        return max(resolve_after, gaps * gap)


@dataclass(slots=True)
class _Pending:
    cluster: Cluster
    due: float
    stream: str


def trace_key(exc: ExceptionInfo | None) -> tuple[str, ...] | None:
    """Exception types and top in-app frames, without the message: what makes traces 'the same bug'."""
    if exc is None:
        return None
    key: list[str] = []
    cur: ExceptionInfo | None = exc
    while cur is not None and len(key) < 12:
        key.append(cur.type)
        cur = cur.cause
    frames = [f for f in exc.frames if f.in_app] or exc.frames
    key.extend(f"{f.module}:{f.function}" for f in frames[:5])
    return tuple(key)


class Detector:
    """Turns cluster matches and the passing of time into findings."""

    def __init__(self, settings: DetectSettings | None = None, *, versions: dict[str, int] | None = None,
                 min_level: Level | None = None, clock: Callable[[], float] = time.time,
                 silences: Callable[[float], Iterable[Silence]] | None = None,
                 resolved: Iterable[str] = (), firing: Iterable[Cluster] = (),
                 variants: Mapping[str, str] | None = None,
                 on_variant: Callable[[str, str], None] | None = None) -> None:
        self.settings = settings if settings is not None else DetectSettings()
        self._min_level = min_level if min_level is not None else Level[self.settings.min_level]
        self._clock = clock
        self._versions: dict[str, int] = dict(versions or {})
        # Incidents whose latest word before a restart was "resolved": their next event reopens them.
        self._resolved: set[str] = set(resolved)
        self._incidents: OrderedDict[str, Incident] = OrderedDict()
        self._by_trace: dict[tuple[str, ...], str] = {}
        # A variant cluster -> its incident; kept by the store (``on_variant``) so it survives restarts.
        self._variant_of: dict[str, str] = dict(variants or {})
        self._on_variant = on_variant
        self._pending: dict[str, _Pending] = {}
        self._last_cluster: dict[str, Cluster] = {}  # the latest cluster snapshot per incident
        self._load_silences = silences
        # Called with a cluster just before a finding snapshots it: whoever counts events lazily (the
        # repeat-shape lane) brings its counts and latest sample up to date.
        self.on_snapshot: Callable[[Cluster], None] | None = None
        self._silences: list[Silence] = []
        self._silences_at = float("-inf")
        self._log_now: float | None = None
        self._wall_at = clock()
        # Log time per stream: files replayed side by side are at different times; each incident is
        # judged by the clock of the stream its events come from.
        self._streams: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.silenced = 0
        for cluster in firing:  # firing when the last run stopped: they resolve if they stay quiet
            self._revive(cluster)

    @property
    def min_level(self) -> Level:
        """The level from which a cluster can start an incident."""
        return self._min_level

    # --- time ------------------------------------------------------------------------------------

    def now(self, stream: str | None = None) -> float:
        """Detection time: the latest event time (of ``stream``, or of all), carried forward by the wall clock."""
        if stream is not None:
            seen = self._streams.get(stream)
            if seen is not None:
                return seen[0] + max(0.0, self._clock() - seen[1])
        if self._log_now is None:
            return self._clock()
        return self._log_now + max(0.0, self._clock() - self._wall_at)

    def _advance(self, stream: str, ts: float) -> float:
        """Move the stream's clock (and the global one) to ``ts``; return the stream's detection time,
        with the wall clock read once (this runs for every event)."""
        wall = self._clock()
        streams = self._streams
        seen = streams.get(stream)
        if seen is None or ts > seen[0]:
            streams[stream] = seen = (ts, wall)
            streams.move_to_end(stream)
            if len(streams) > 4096:
                streams.popitem(last=False)
        if self._log_now is None or ts > self._log_now:
            self._log_now = ts
            self._wall_at = wall
        return seen[0] + max(0.0, wall - seen[1])

    # --- events ----------------------------------------------------------------------------------

    def observe(self, event: Event, match: Match) -> list[Finding]:
        """Findings caused by one event (usually none)."""
        return self.observe_at(event.stream, event.timestamp, event.level, match.cluster)

    def observe_at(self, stream: str, ts: float, level: Level, cluster: Cluster) -> list[Finding]:
        """:meth:`observe` for an event given by its stream, timestamp and level (no Event needed)."""
        now = self._advance(stream, ts)
        incident_id = self._variant_of.get(cluster.id, cluster.id)
        incident = self._incidents.get(incident_id)
        if incident is not None:
            self._incidents.move_to_end(incident_id)
            return self._firing(incident, cluster, stream, level, now)
        if incident_id in self._versions:  # announced before a restart: continue its incident
            incident = self._restore(incident_id, now, stream, cluster)
            return self._firing(incident, cluster, stream, level, now)
        if level < self._min_level:
            return []
        key = trace_key(cluster.exception) if cluster.kind == "trace" else None
        parent_id = self._by_trace.get(key) if key is not None else None
        if parent_id is not None and parent_id in self._incidents and parent_id != cluster.id:
            parent = self._incidents[parent_id]
            self._variant_of[cluster.id] = parent_id
            if self._on_variant is not None:
                self._on_variant(cluster.id, parent_id)
            parent.members.add(cluster.id)
            parent.last_event = now
            parent.stream = stream
            parent.events += 1
            return self._emit(parent, cluster, "variant", now)
        if self.settings.group_wait_s > 0:  # the wait starts with the first event; min_count applies at its end
            if cluster.id not in self._pending:
                if len(self._pending) >= self.settings.max_incidents:
                    self._pending.pop(next(iter(self._pending)))
                self._pending[cluster.id] = _Pending(cluster, now + self.settings.group_wait_s, stream)
            return self.tick()
        if cluster.count < self.settings.min_count:
            return []
        return self._announce(cluster, now, key, stream)

    def tracks(self, cluster_id: str) -> bool:
        """Whether the cluster's events go to an incident (firing or resolved) of this run: then an
        event's findings do not depend on the cluster's counts (see ``on_snapshot``)."""
        return self._variant_of.get(cluster_id, cluster_id) in self._incidents

    def quiet(self, cluster_id: str, level: Level) -> bool:
        """True when events of ``level`` in this cluster only move the clock: no incident follows them and
        none can start from them (the repeat-shape lane then counts them in bulk, see :meth:`advance`)."""
        incident_id = self._variant_of.get(cluster_id, cluster_id)
        return (level < self._min_level and incident_id not in self._incidents
                and incident_id not in self._versions)

    def advance(self, stream: str, ts: float) -> None:
        """What :meth:`observe` does for events of a :meth:`quiet` cluster, the latest of them at ``ts``."""
        self._advance(stream, ts)

    def tick(self) -> list[Finding]:
        """Findings due to time alone: group_wait over, resolved, still firing."""
        now = self.now()
        out: list[Finding] = []
        s = self.settings
        for cid, pending in list(self._pending.items()):
            at = self.now(pending.stream)
            if pending.due <= at and pending.cluster.count >= s.min_count:
                del self._pending[cid]
                out.extend(self._announce(pending.cluster, at, trace_key(pending.cluster.exception),
                                          pending.stream))
        for incident in list(self._incidents.values()):
            if not incident.firing:
                continue
            now = self.now(incident.stream or None)
            if now - incident.last_event >= incident.quiet_needed(s.resolve_after_s, s.resolve_gaps):
                incident.firing = False
                out.extend(self._emit_id(incident, "resolved", now))
            elif s.repeat_interval_s and now - incident.last_notified >= s.repeat_interval_s:
                out.extend(self._emit_id(incident, "repeat", now))
        return out

    # --- internals -------------------------------------------------------------------------------

    def _announce(self, cluster: Cluster, now: float, key: tuple[str, ...] | None, stream: str = "") -> list[Finding]:
        if self._is_silenced(cluster, now):  # not remembered: once the silence ends, it is announced
            self.silenced += 1
            return []
        incident = Incident(id=cluster.id, version=self._versions.get(cluster.id, 0), last_event=now,
                            announced_at=now, trace_key=key, minute=int(now // 60), minute_count=1,
                            stream=stream, events=1, first_event=now)
        self._remember(incident)
        if key is not None:
            self._by_trace.setdefault(key, cluster.id)
        return self._emit(incident, cluster, "new", now)

    def _firing(self, incident: Incident, cluster: Cluster, stream: str, level: Level, now: float) -> list[Finding]:
        incident.last_event = now
        incident.stream = stream
        incident.events += 1
        minute = int(now // 60)
        if minute != incident.minute:
            self._roll(incident, minute)
        incident.minute_count += 1
        if not incident.firing:
            if level < self._min_level:
                return []
            incident.firing = True  # fires again after it was resolved: reopened, same id
            incident.baseline = 0.0  # (its usual gap is kept: a sparse incident resolves slowly next time)
            return self._emit(incident, cluster, "new", now)
        s = self.settings
        if (incident.spiked_minute != minute and incident.minute_count >= s.spike_min_count
                and incident.minute_count >= s.spike_factor * max(incident.baseline, 1.0)
                and now - incident.last_notified >= s.group_interval_s):
            incident.spiked_minute = minute
            return self._emit(incident, cluster, "spike", now)
        return []

    def _roll(self, incident: Incident, minute: int) -> None:
        """Fold the finished minute into the baseline (quiet minutes count as zero, bounded)."""
        alpha = self.settings.baseline_alpha
        if incident.minute >= 0:
            incident.baseline = alpha * incident.minute_count + (1 - alpha) * incident.baseline
            for _ in range(min(max(0, minute - incident.minute - 1), 120)):
                incident.baseline *= 1 - alpha
        incident.minute = minute
        incident.minute_count = 0

    def _emit(self, incident: Incident, cluster: Cluster, kind: FindingKind, now: float) -> list[Finding]:
        if self._is_silenced(cluster, now):
            self.silenced += 1
            return []
        incident.version = self._versions.get(incident.id, incident.version) + 1
        self._versions[incident.id] = incident.version
        incident.last_notified = now
        if self.on_snapshot is not None:
            self.on_snapshot(cluster)
        finding = Finding.of(cluster, version=incident.version, kind=kind, created_at=now)
        if finding.id != incident.id:
            finding = finding.model_copy(update={"id": incident.id})
        self._last_cluster[incident.id] = cluster
        return [finding]

    def _emit_id(self, incident: Incident, kind: FindingKind, now: float) -> list[Finding]:
        cluster = self._last_cluster.get(incident.id)
        if cluster is None:
            return []
        return self._emit(incident, cluster, kind, now)

    def _remember(self, incident: Incident) -> None:
        self._incidents[incident.id] = incident
        while len(self._incidents) > self.settings.max_incidents:
            old_id, old = self._incidents.popitem(last=False)
            self._last_cluster.pop(old_id, None)
            if not old.firing:  # forgotten while resolved: its next event reopens it
                self._resolved.add(old_id)
            if old.trace_key is not None and self._by_trace.get(old.trace_key) == old_id:
                del self._by_trace[old.trace_key]
            for member in old.members:
                self._variant_of.pop(member, None)

    def _restore(self, incident_id: str, now: float, stream: str, cluster: Cluster) -> Incident:
        """An incident announced before a restart (or forgotten): firing again, or resolved if it was.

        It keeps a cluster snapshot, so that it can be resolved and reminded of like any other.
        """
        resolved = incident_id in self._resolved
        self._resolved.discard(incident_id)
        key = trace_key(cluster.exception) if cluster.kind == "trace" else None
        incident = Incident(id=incident_id, version=self._versions[incident_id], firing=not resolved,
                            last_event=now, announced_at=now, last_notified=now, minute=int(now // 60),
                            stream=stream, first_event=now, trace_key=key)
        self._remember(incident)
        self._last_cluster[incident_id] = cluster
        if key is not None:
            self._by_trace.setdefault(key, incident_id)
        return incident

    def _revive(self, cluster: Cluster) -> None:
        """An incident that was firing when the previous run stopped, judged by its last event."""
        if cluster.id not in self._versions or cluster.id in self._resolved:
            return
        key = trace_key(cluster.exception) if cluster.kind == "trace" else None
        incident = Incident(id=cluster.id, version=self._versions[cluster.id], last_event=cluster.last_seen,
                            announced_at=cluster.first_seen, last_notified=cluster.last_seen,
                            minute=int(cluster.last_seen // 60), events=cluster.count,
                            first_event=cluster.first_seen, trace_key=key)
        self._remember(incident)
        self._last_cluster[cluster.id] = cluster
        if key is not None:
            self._by_trace.setdefault(key, cluster.id)

    def _is_silenced(self, cluster: Cluster, now: float) -> bool:
        if self._load_silences is not None and self._clock() - self._silences_at >= 2.0:
            self._silences = list(self._load_silences(self._clock()))
            self._silences_at = self._clock()
        wall = self._clock()
        return any(s.expires_at > wall and s.matches(cluster) for s in self._silences)

    # --- views -----------------------------------------------------------------------------------

    def announced(self, cluster_id: str) -> bool:
        return cluster_id in self._versions or cluster_id in self._variant_of

    def next_version(self, cluster_id: str) -> int:
        """Reserve the next version of a finding (an update such as the model's summary)."""
        version = self._versions.get(cluster_id, 0) + 1
        self._versions[cluster_id] = version
        incident = self._incidents.get(cluster_id)
        if incident is not None:
            incident.version = version
        return version

    def incident(self, incident_id: str) -> Incident | None:
        return self._incidents.get(incident_id)
