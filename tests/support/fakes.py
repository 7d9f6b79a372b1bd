"""Test doubles for the two seams: a scripted source and a recording sink."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping

import anyio

from triage.errors import SinkError
from triage.model import Finding, Record


def records(lines: Iterable[bytes | str], *, source: str = "list", stream: str = "s1", path: str = "app.log",
            start: int = 0) -> list[Record]:
    """Records for ``lines`` as a file source would make them (offsets count the newline)."""
    out = []
    offset = start
    now = time.time()
    for line in lines:
        data = line.encode() if isinstance(line, str) else line
        end = offset + len(data) + 1
        out.append(Record(data, source, stream, offset, end, now, path))
        offset = end
    return out


class ListSource:
    """Yields scripted batches; ``gate`` (optional) holds back everything after the first batch;
    ``follow`` keeps it open after the last batch until ``aclose``."""

    def __init__(self, batches: list[list[Record]], *, name: str = "list", follow: bool = False,
                 gate: anyio.Event | None = None) -> None:
        self.name = name
        self._batches = batches
        self._follow = follow
        self._gate = gate
        self._closed = anyio.Event()
        self.commits: list[dict[str, int]] = []
        self.served = 0

    async def batches(self) -> AsyncIterator[list[Record]]:
        for i, batch in enumerate(self._batches):
            if self._closed.is_set():
                return
            if i == 1 and self._gate is not None:
                await self._gate.wait()
            self.served += len(batch)
            yield batch
        if self._follow:
            await self._closed.wait()

    async def commit(self, positions: Mapping[str, int]) -> None:
        self.commits.append(dict(positions))

    async def aclose(self) -> None:
        self._closed.set()


class RecordingSink:
    """Keeps what it is given; can be told to block on emit or fail on flush."""

    def __init__(self, *, name: str = "rec", fail_flush: bool = False, block: anyio.Event | None = None) -> None:
        self.name = name
        self.findings: list[Finding] = []
        self.flushes = 0
        self.closed = False
        self._fail_flush = fail_flush
        self._block = block
        self.blocked = anyio.Event()
        self.emitted = anyio.Event()

    async def emit(self, finding: Finding) -> None:
        if self._block is not None and not self._block.is_set():
            self.blocked.set()
            await self._block.wait()
        self.findings.append(finding)
        self.emitted.set()

    async def flush(self) -> None:
        if self._fail_flush:
            raise SinkError("rec: disk full")
        self.flushes += 1

    async def aclose(self) -> None:
        self.closed = True
