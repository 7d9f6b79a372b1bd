"""The source seam: an async iterator of record batches, a commit, and a close.

A source yields *batches* of records (a list per read) so that the per-record cost of the channels
stays out of the hot path. ``commit`` is called by the pipeline only after everything up to
``positions`` is durably processed (the at-least-once rule), with ``positions`` mapping each
``Record.stream`` to the ``Record.end`` of the last record processed in it (or lower).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from triage.model import Record


@runtime_checkable
class Source(Protocol):
    name: str

    def batches(self) -> AsyncIterator[Sequence[Record]]:
        """Yield batches of records (a list, or a ``RowBatch`` that makes its Records on demand); ends
        when the source is exhausted (replay) or closed."""
        ...

    async def commit(self, positions: Mapping[str, int]) -> None:
        """Persist positions; after a restart the source resumes from them."""
        ...

    async def aclose(self) -> None:
        """Stop reading: ``batches()`` ends soon after. Idempotent."""
        ...


@runtime_checkable
class DeadLetterSource(Source, Protocol):
    """A source with a dead-letter place (a Kafka topic): records it marks ``dead_letter`` go there.

    The pipeline calls ``dead_letter`` for each such record before the record's position can be
    committed; it returns once the record is durably stored there (or raises ``SourceError``).
    """

    async def dead_letter(self, record: Record) -> None: ...


class CheckpointStore(Protocol):
    """Where a source keeps its positions: one opaque JSON text per stream (the store implements it)."""

    def load_checkpoints(self, source: str) -> dict[str, str]: ...

    def save_checkpoints(self, source: str, states: Mapping[str, str]) -> None: ...

    def delete_checkpoints(self, source: str, streams: list[str]) -> None: ...


class MemoryCheckpointStore:
    """A checkpoint store kept in memory (stdin, tests)."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, str]] = {}

    def load_checkpoints(self, source: str) -> dict[str, str]:
        return dict(self._data.get(source, {}))

    def save_checkpoints(self, source: str, states: Mapping[str, str]) -> None:
        self._data.setdefault(source, {}).update(states)

    def delete_checkpoints(self, source: str, streams: list[str]) -> None:
        for stream in streams:
            self._data.get(source, {}).pop(stream, None)
