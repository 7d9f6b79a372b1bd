"""The stdin source: lines of a pipe until EOF, and a close that does not wait for the writer."""

from __future__ import annotations

import os
from collections.abc import Iterator

import anyio
import pytest

from connectors.sources.base import Source
from connectors.sources.stdin import StdinSource
from triage.model import Record


class Pipe:
    """An os.pipe(): a binary reader for the source, and a writer end the test controls."""

    def __init__(self) -> None:
        rfd, self._wfd = os.pipe()
        self.reader = open(rfd, "rb")  # noqa: SIM115 - closed by close()
        self._open = True

    def write(self, data: bytes) -> None:
        os.write(self._wfd, data)

    def close_writer(self) -> None:
        if self._open:
            self._open = False
            os.close(self._wfd)

    def close(self) -> None:
        self.close_writer()  # EOF first, so that a reader thread blocked on the pipe returns
        self.reader.close()


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    p = Pipe()
    try:
        yield p
    finally:
        p.close()


@pytest.mark.anyio
class TestStdin:
    async def test_lines_until_eof(self, pipe: Pipe) -> None:
        """Lines written to the pipe are received with offsets from 0; EOF ends the iteration."""
        src = StdinSource(stream=pipe.reader)
        assert isinstance(src, Source)
        got: list[Record] = []
        pipe.write(b"one\ntwo\r\nthr")
        pipe.write(b"ee\nlast")
        pipe.close_writer()
        with anyio.fail_after(5):
            async for batch in src.batches():
                got.extend(batch)
        assert [(r.data, r.offset, r.end, r.stream, r.source) for r in got] == [
            (b"one", 0, 4, "stdin", "stdin"), (b"two", 4, 9, "stdin", "stdin"),
            (b"three", 9, 15, "stdin", "stdin"), (b"last", 15, 19, "stdin", "stdin")]
        await src.commit({"stdin": 19})  # a no-op that must not fail

    async def test_lines_arrive_while_writer_is_open(self, pipe: Pipe) -> None:
        """Each line is delivered as it is written, without waiting for EOF."""
        src = StdinSource(stream=pipe.reader, max_line_bytes=4)
        it = src.batches()
        try:
            with anyio.fail_after(5):
                pipe.write(b"first\n")
                batch = await anext(it)
                assert [(r.data, r.truncated) for r in batch] == [(b"firs", 1)]
                pipe.write(b"ok\n")
                assert [r.data for r in await anext(it)] == [b"ok"]
        finally:
            await src.aclose()
            await it.aclose()  # type: ignore[attr-defined]

    async def test_aclose_while_read_blocks(self, pipe: Pipe) -> None:
        """aclose ends batches() promptly while the reader is blocked on a silent pipe."""
        src = StdinSource(stream=pipe.reader)
        got: list[Record] = []
        first = anyio.Event()
        ended = anyio.Event()

        async def consume() -> None:
            async for batch in src.batches():
                got.extend(batch)
                first.set()
            ended.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                pipe.write(b"hello\n")
                await first.wait()
                await src.aclose()
                await ended.wait()
        assert [r.data for r in got] == [b"hello"]
        await src.aclose()  # idempotent
