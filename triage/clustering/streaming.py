"""StreamingClusterer: the ``Clusterer`` the pipeline uses (template miner + trace fingerprints).

Ids. A cluster id is ``template_id`` (``c`` + 15 hex of blake2b) of what the cluster was created from:
the masked template of its first line, or its trace fingerprint. Guaranteed: a template that never
generalises (every variable part is masked) gets the same id in every process and for any input
order; a trace cluster's id depends only on its fingerprint. When a template generalises (a constant
position becomes ``<*>``), the cluster keeps its id, its ``template`` updates, and the id the new
template hashes to becomes an alias (``get(alias)`` finds the cluster), so two processes that saw the
lines in a different order agree through aliases. Merged clusters: the older one survives; the other's
id becomes an alias and its counts are added.

Memory. At most ``max_clusters`` live clusters; beyond that the least recently seen is evicted and handed
to ``on_evict``. The miner keeps an evicted template as a bounded ghost (tokens and id only), so a later
matching line recreates the cluster under the same id (``Match.created`` is true; the pipeline merges the
counts kept by the store). Samples (``max_samples``) and services per cluster (``max_services``,
the rest counted under ``"(other)"``) are bounded.
"""

from __future__ import annotations

import itertools
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping

from triage.clustering.base import EvictHook, Match, MergeHook
from triage.clustering.fingerprint import fingerprint, message_template, trace_template
from triage.clustering.masking import mask
from triage.clustering.miner import DEFAULT_SIMILARITY, Node, TemplateMiner, template_id
from triage.model import Cluster, Event, ExceptionInfo, Level, Sample

OTHER_SERVICES = "(other)"
_LINE_CACHE = 65_536
_WARNING = Level.WARNING


class _Entry:
    """Per live cluster: the cluster, its miner node (template clusters) or trace key, param regex."""

    __slots__ = ("cluster", "key", "live", "node", "regex", "regex_for")

    def __init__(self, cluster: Cluster, node: Node | None, key: str) -> None:
        self.cluster = cluster
        self.live = True
        self.node = node
        self.key = key
        self.regex: re.Pattern[str] | None = None
        self.regex_for = ""


class StreamingClusterer:
    """Streaming template mining and stack-trace fingerprints behind the ``Clusterer`` seam."""

    __slots__ = ("_aliases", "_lines", "_live", "_max", "_max_samples", "_max_services", "_miner", "_on_evict",
                 "_on_merge", "_traces")

    def __init__(self, *, max_clusters: int = 20_000, max_samples: int = 5, on_evict: EvictHook | None = None,
                 max_services: int = 32, similarity: float = DEFAULT_SIMILARITY,
                 on_merge: MergeHook | None = None) -> None:
        if max_clusters < 1 or max_samples < 1:
            raise ValueError("max_clusters and max_samples must be positive")
        self._max = max_clusters
        self._max_samples = max_samples
        self._max_services = max_services
        self._on_evict = on_evict
        self._on_merge = on_merge
        self._miner = TemplateMiner(similarity=similarity, cache_size=max(4 * max_clusters, 4096),
                                    max_ghosts=max_clusters, on_merge=self._merged)
        self._live: OrderedDict[str, _Entry] = OrderedDict()  # least recently seen first
        self._aliases: dict[str, str] = {}  # alias id -> live id
        self._traces: dict[str, _Entry] = {}  # fingerprint -> entry
        # Exact-line cache in front of the miner: message -> (entry, template, params). Repeated lines
        # (health checks, retries) skip masking and parameter extraction. Bounded, cleared by halves.
        self._lines: dict[str, tuple[_Entry, str, tuple[str, ...]]] = {}

    # --- Clusterer ----------------------------------------------------------------------------------

    def add(self, event: Event) -> Match:
        """Assign ``event`` to a cluster, creating or generalising one, and update its stats."""
        if event.exception is not None:
            entry, created, params = self._add_trace(event.exception)
        elif (hit := self._lines.get(event.message)) is not None and hit[0].live \
                and hit[0].cluster.template is hit[1]:
            entry, _, params = hit
            created = False
        else:
            node, created = self._miner.match(event.message)
            payload = node.payload
            if isinstance(payload, _Entry):
                entry = payload
                if entry.cluster.template is not node.template:
                    entry.cluster.template = node.template
                    for alias in node.aliases:
                        self._aliases[alias] = node.id
            else:
                cluster = Cluster(id=node.id, template=node.template, kind="template", level=event.level,
                                  count=0, first_seen=event.timestamp, last_seen=event.timestamp)
                entry = _Entry(cluster, node, "")
                node.payload = entry
                self._live[node.id] = entry
                for alias in node.aliases:
                    self._aliases[alias] = node.id
                created = True
            params = self._params(entry, event.message)
            lines = self._lines
            if len(lines) >= _LINE_CACHE:
                for key in list(itertools.islice(lines, _LINE_CACHE // 2)):
                    del lines[key]
            lines[event.message] = (entry, entry.cluster.template, params)
        cluster = entry.cluster
        self._update(cluster, event, params)
        self._live.move_to_end(cluster.id)
        if created and len(self._live) > self._max:
            self._evict()
        return Match(cluster, created, params)

    def bump(self, cluster: Cluster, n: int, first_ts: float, last_ts: float, level: Level,
             services: Mapping[str, int]) -> None:
        """Count ``n`` more events of a live cluster in bulk, as ``add`` would one by one, but without
        touching its samples (the repeat-shape lane adds the first and last event of a run with ``add``).

        ``first_ts``/``last_ts`` are the earliest and latest timestamps of the ``n`` events, ``level`` their
        level and ``services`` how many came from each service.
        """
        if n <= 0:
            return
        if cluster.count == 0:
            cluster.first_seen = first_ts
            cluster.last_seen = last_ts
        else:
            if last_ts > cluster.last_seen:
                cluster.last_seen = last_ts
            if first_ts < cluster.first_seen:
                cluster.first_seen = first_ts
        cluster.count += n
        if level > cluster.level:
            cluster.level = level
        if level >= _WARNING:
            cluster.warn_count += n
        have = cluster.services
        for service, k in services.items():
            if service in have:
                have[service] += k
            elif len(have) < self._max_services:
                have[service] = k
            else:
                have[OTHER_SERVICES] = have.get(OTHER_SERVICES, 0) + k
        if cluster.id in self._live:
            self._live.move_to_end(cluster.id)

    def refresh_sample(self, cluster: Cluster, event: Event) -> None:
        """Make ``event`` the cluster's latest sample, as ``add`` does, without counting it (the
        repeat-shape lane counts events in bulk and keeps the latest one for later)."""
        entry = self._live.get(cluster.id)
        if entry is not None and entry.cluster is cluster and entry.node is not None:
            params = self._params(entry, event.message)
        else:  # evicted meanwhile (the store keeps it), or a trace cluster
            params = tuple(mask(event.message)[1]) if "<*>" in cluster.template else ()
        samples = cluster.samples
        if len(samples) < self._max_samples:
            samples.append(Sample(event.timestamp, event.service, event.message, params, event.attributes or None))
        else:
            last = samples[-1]
            last.timestamp = event.timestamp
            last.service = event.service
            last.message = event.message
            last.params = params
            last.attributes = event.attributes or None

    def sample_room(self, cluster: Cluster) -> int:
        """How many more events ``add`` would keep as samples of ``cluster`` (the rest refresh the last)."""
        return max(0, self._max_samples - len(cluster.samples))

    def clusters(self) -> Iterator[Cluster]:
        """The live clusters, least recently seen first."""
        for entry in self._live.values():
            yield entry.cluster

    def get(self, cluster_id: str) -> Cluster | None:
        """A live cluster by id or alias."""
        entry = self._live.get(cluster_id)
        if entry is None:
            live_id = self._aliases.get(cluster_id)
            entry = self._live.get(live_id) if live_id is not None else None
        return entry.cluster if entry is not None else None

    def restore(self, clusters: Iterable[Cluster]) -> None:
        """Load clusters kept by the store: they keep id, counts and first-seen; new lines join them."""
        for cluster in clusters:
            if cluster.id in self._live:
                continue
            if cluster.kind == "trace" and cluster.exception is not None:
                key = fingerprint(cluster.exception)
                entry = _Entry(cluster, None, key)
                self._traces[key] = entry
            elif cluster.kind == "template":
                node = self._miner.insert(cluster.template, cluster.id)
                if node.payload is not None:  # same template restored twice: keep the first
                    self._aliases[cluster.id] = node.id
                    continue
                entry = _Entry(cluster, node, "")
                node.payload = entry
                alias = template_id(node.template)
                if alias != cluster.id:
                    self._aliases[alias] = cluster.id
            else:
                continue
            self._live[cluster.id] = entry
            self._live.move_to_end(cluster.id, last=False)  # restored = least recently seen
        while len(self._live) > self._max:
            self._evict()

    def __len__(self) -> int:
        return len(self._live)

    # --- internals ----------------------------------------------------------------------------------

    def _add_trace(self, exc: ExceptionInfo) -> tuple[_Entry, bool, tuple[str, ...]]:
        key = fingerprint(exc)
        entry = self._traces.get(key)
        created = entry is None
        if entry is None:
            cid = template_id(key)
            cluster = Cluster(id=cid, template=trace_template(exc), kind="trace", level=Level.UNKNOWN,
                              count=0, first_seen=0.0, last_seen=0.0, exception=exc)
            entry = self._traces[key] = _Entry(cluster, None, key)
            self._live[cid] = entry
        if message_template(exc.message) == exc.message:
            return entry, created, ()
        return entry, created, tuple(mask(exc.message)[1])

    def _update(self, cluster: Cluster, event: Event, params: tuple[str, ...]) -> None:
        ts = event.timestamp
        if cluster.count == 0:
            cluster.first_seen = ts
            cluster.last_seen = ts
        elif ts > cluster.last_seen:
            cluster.last_seen = ts
        elif ts < cluster.first_seen:
            cluster.first_seen = ts
        cluster.count += 1
        level = event.level
        if level > cluster.level:
            cluster.level = level
        if level >= _WARNING:
            cluster.warn_count += 1
        services = cluster.services
        service = event.service
        if service in services:
            services[service] += 1
        elif len(services) < self._max_services:
            services[service] = 1
        else:
            services[OTHER_SERVICES] = services.get(OTHER_SERVICES, 0) + 1
        samples = cluster.samples
        if len(samples) < self._max_samples:
            samples.append(Sample(ts, service, event.message, params, event.attributes or None))
        else:  # keep the first ones, refresh the last one in place (no allocation per event)
            last = samples[-1]
            last.timestamp = ts
            last.service = service
            last.message = event.message
            last.params = params
            last.attributes = event.attributes or None

    def _params(self, entry: _Entry, message: str) -> tuple[str, ...]:
        template = entry.cluster.template
        if "<*>" not in template:
            return ()
        if entry.regex is None or entry.regex_for is not template:
            entry.regex = template_regex(template)
            entry.regex_for = template
        m = entry.regex.fullmatch(message.strip())
        if m is None:  # cannot happen for a line of this template; fall back to the masked values
            return tuple(mask(message)[1])
        return m.groups()

    def _evict(self) -> None:
        _, entry = self._live.popitem(last=False)
        entry.live = False
        cluster = entry.cluster
        if entry.node is not None:
            for alias in entry.node.aliases:
                if self._aliases.get(alias) == cluster.id:
                    del self._aliases[alias]
            self._miner.remove(entry.node)
        else:
            self._traces.pop(entry.key, None)
        if self._on_evict is not None:
            self._on_evict(cluster)

    def _merged(self, survivor: Node, absorbed: Node) -> None:
        """The miner merged ``absorbed`` into ``survivor``: fold the stats, keep the old id as alias."""
        gone = absorbed.payload
        absorbed.payload = None
        if isinstance(gone, _Entry):
            gone.live = False
        keep = survivor.payload
        if not isinstance(keep, _Entry):
            if isinstance(gone, _Entry):  # the survivor was a ghost or new: it takes over the entry
                self._live.pop(gone.cluster.id, None)
                old_id = gone.cluster.id
                gone.node = survivor
                gone.cluster.id = survivor.id
                gone.cluster.template = survivor.template
                gone.live = True
                survivor.payload = gone
                self._live[survivor.id] = gone
                if self._on_merge is not None and old_id != survivor.id:
                    self._on_merge(old_id, gone.cluster)
            for alias in survivor.aliases:
                self._aliases[alias] = survivor.id
            return
        keep.cluster.template = survivor.template
        for alias in survivor.aliases:
            self._aliases[alias] = survivor.id
        if not isinstance(gone, _Entry):
            return
        self._live.pop(gone.cluster.id, None)
        a, b = keep.cluster, gone.cluster
        if b.count:
            if a.count == 0 or b.first_seen < a.first_seen:
                a.first_seen = b.first_seen
            a.last_seen = max(a.last_seen, b.last_seen)
        a.count += b.count
        a.warn_count += b.warn_count
        if b.level > a.level:
            a.level = b.level
        for service, n in b.services.items():
            if service in a.services or len(a.services) < self._max_services:
                a.services[service] = a.services.get(service, 0) + n
            else:
                a.services[OTHER_SERVICES] = a.services.get(OTHER_SERVICES, 0) + n
        room = self._max_samples - len(a.samples)
        if room > 0:
            a.samples.extend(b.samples[:room])
        if self._on_merge is not None:
            self._on_merge(b.id, a)


_SPACES = re.compile(r"\s+")


def template_regex(template: str) -> re.Pattern[str]:
    """A regex that matches the messages of ``template`` and captures the values at its wildcards."""
    parts = template.split("<*>")
    literal = [re.escape(" ".join(p.split())).replace(r"\ ", r"\s+") for p in parts]
    # A literal part that starts or ends with a space lost it to split(): restore the separator.
    out = []
    for i, part in enumerate(parts):
        lit = literal[i]
        if part and part.isspace():
            out.append(r"\s+" if 0 < i < len(parts) - 1 else "")
            continue
        if part[:1].isspace() and i > 0:
            lit = r"\s+" + lit
        if part[-1:].isspace() and i < len(parts) - 1:
            lit = lit + r"\s+"
        out.append(lit)
    return re.compile("(.*?)".join(out), re.DOTALL)


def template_matches(template: str, message: str) -> bool:
    """Whether ``message`` is an instance of ``template`` (``<*>`` matches any text, spaces are loose)."""
    return template_regex(template).fullmatch(message.strip()) is not None
