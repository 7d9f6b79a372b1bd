"""The clustering seam: event in, (cluster, parameters) out.

Engines keep a bounded table of live clusters. The pipeline calls ``add`` for every event, reads
``clusters()`` to persist them at checkpoints, and ``restore`` at start-up with what the store kept.
Evicted clusters (least recently seen, beyond the cap) are handed to ``on_evict`` so the store keeps
them; a later event of an evicted cluster recreates it under the same id (ids are stable hashes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from triage.model import Cluster, Event, Level


@dataclass(slots=True)
class Match:
    """The result of clustering one event."""

    cluster: Cluster
    created: bool  # the cluster did not exist before this event
    params: tuple[str, ...] = ()  # values at the template's wildcards


EvictHook = Callable[[Cluster], None]
# Called when a cluster is absorbed by another (its template generalised into the other's): the
# absorbed id and the surviving cluster, which now carries the absorbed counts.
MergeHook = Callable[[str, Cluster], None]


class Clusterer(Protocol):
    def add(self, event: Event) -> Match:
        """Assign ``event`` to a cluster (creating one if needed), update counts and samples."""
        ...

    def bump(self, cluster: Cluster, n: int, first_ts: float, last_ts: float, level: Level,
             services: Mapping[str, int]) -> None:
        """Count ``n`` more events of a live cluster in bulk (counts, times, level, services; no samples)."""
        ...

    def refresh_sample(self, cluster: Cluster, event: Event) -> None:
        """Make ``event`` the cluster's latest sample without counting it."""
        ...

    def sample_room(self, cluster: Cluster) -> int:
        """How many more events ``add`` would keep as samples of ``cluster``."""
        ...

    def clusters(self) -> Iterator[Cluster]:
        """The live clusters."""
        ...

    def get(self, cluster_id: str) -> Cluster | None:
        """A live cluster by id (or by an alias id it absorbed)."""
        ...

    def restore(self, clusters: Iterable[Cluster]) -> None:
        """Load clusters kept by the store, keeping their ids, counts and first-seen times."""
        ...
