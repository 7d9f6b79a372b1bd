"""JSONL sink: one line per finding version, appended; ``flush`` fsyncs.

Consumers deduplicate by ``(id, version)``: after a crash the pipeline replays from the last
checkpoint, so a version written after it may be written again (at-least-once).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
import orjson

from triage.errors import SinkError
from triage.model import Finding


class JsonlSink:
    """Appends findings to a file as JSON lines."""

    def __init__(self, path: Path, *, name: str = "jsonl") -> None:
        self.name = name
        self.path = Path(path)
        self._file: BinaryIO | None = None
        self.written = 0

    def _open(self) -> BinaryIO:
        if self._file is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            except OSError as e:
                raise SinkError(f"jsonl: cannot open {self.path}: {e.strerror}") from e
        return self._file

    async def emit(self, finding: Finding) -> None:
        line = orjson.dumps(finding.model_dump(mode="json")) + b"\n"
        try:
            self._open().write(line)
        except OSError as e:
            raise SinkError(f"jsonl: cannot write {self.path}: {e.strerror}") from e
        self.written += 1

    async def flush(self) -> None:
        f = self._file
        if f is None:
            return
        try:
            f.flush()
            await anyio.to_thread.run_sync(os.fsync, f.fileno())
        except OSError as e:
            raise SinkError(f"jsonl: cannot flush {self.path}: {e.strerror}") from e

    async def aclose(self) -> None:
        if self._file is not None:
            try:
                await self.flush()
            finally:
                self._file.close()
                self._file = None
