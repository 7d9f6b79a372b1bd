"""Where every record ends up.

Each record read ends in exactly one bucket::

    read == clustered + merged + dropped + dead_lettered        (once nothing is in flight)

``clustered`` counts events handed to the clusterer (an event starts with one record); ``merged`` counts
the continuation records assembled into an event (the lines of a stack trace after its first line).
``dropped`` is broken down by reason. ``truncated`` and ``invalid_utf8`` are not buckets: those records
are still clustered, only marked.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


class Counters:
    """The pipeline's counters, in one place; exported as metrics and printed at the end of a replay."""

    __slots__ = (
        "clustered",
        "dead_lettered",
        "decoded",
        "dropped",
        "findings",
        "invalid_utf8",
        "merged",
        "read",
        "truncated",
    )

    def __init__(self) -> None:
        self.read = 0
        self.decoded = 0
        self.merged = 0
        self.clustered = 0
        self.dead_lettered = 0
        self.dropped: Counter[str] = Counter()
        self.truncated = 0
        self.invalid_utf8 = 0
        self.findings = 0

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` records dropped for ``reason`` (a short snake_case word)."""
        self.dropped[reason] += n

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def accounted(self) -> int:
        return self.clustered + self.merged + self.dropped_total + self.dead_lettered

    def balanced(self) -> bool:
        """True when every record read is in exactly one bucket."""
        return self.read == self.accounted

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "decoded": self.decoded,
            "merged": self.merged,
            "clustered": self.clustered,
            "dead_lettered": self.dead_lettered,
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_total": self.dropped_total,
            "truncated": self.truncated,
            "invalid_utf8": self.invalid_utf8,
            "findings": self.findings,
            "balanced": self.balanced(),
        }
