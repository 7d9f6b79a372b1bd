"""Detection v1: a cluster becomes a finding the first time it has an event at ``min_level`` or above.

The detector remembers the latest finding version per cluster (restored from the store), so a restart
or a replay of already-seen records does not announce the same cluster again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from triage.clustering.base import Match
from triage.model import Event, Finding, Level


class Detector:
    """Turns cluster matches into findings."""

    __slots__ = ("_clock", "_min_level", "_versions")

    def __init__(self, *, min_level: Level = Level.WARNING, versions: dict[str, int] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._min_level = min_level
        self._versions: dict[str, int] = dict(versions or {})
        self._clock = clock

    def observe(self, event: Event, match: Match) -> Finding | None:
        """Return a new finding when ``match`` makes its cluster worth announcing, else None."""
        if event.level < self._min_level:
            return None
        cluster = match.cluster
        if cluster.id in self._versions:
            return None
        self._versions[cluster.id] = 1
        return Finding.of(cluster, version=1, kind="new", created_at=self._clock())

    def announced(self, cluster_id: str) -> bool:
        return cluster_id in self._versions

    def next_version(self, cluster_id: str) -> int:
        """Reserve the next version of a finding (an update: the model's summary, a spike...)."""
        version = self._versions.get(cluster_id, 0) + 1
        self._versions[cluster_id] = version
        return version
