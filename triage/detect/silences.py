"""Silences: findings of a cluster (by id) or of matching templates (by glob) are held back until expiry."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Protocol


class _HasTemplate(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def template(self) -> str: ...


@dataclass(slots=True)
class Silence:
    """Suppresses findings of a cluster id, or of clusters whose template matches a glob pattern."""

    id: int
    cluster_id: str
    pattern: str
    expires_at: float
    comment: str = ""

    def matches(self, cluster: _HasTemplate) -> bool:
        if self.cluster_id and self.cluster_id == cluster.id:
            return True
        return bool(self.pattern) and fnmatch.fnmatchcase(cluster.template, self.pattern)
