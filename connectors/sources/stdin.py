"""The stdin source: lines of a byte stream (standard input by default) until EOF.

The blocking reads run in a dedicated *daemon* thread, not in anyio's worker pool: a read of a
terminal or an idle pipe can block forever, and a pool thread blocked in it would keep the process
from exiting after ``aclose``. The thread hands each chunk over an unbuffered memory object stream
(``max_buffer_size=0``), so it reads the next chunk only once the previous one was taken: the
consumer's pace is the reading pace, and at most two chunks are in flight. ``aclose`` closes the
receiving end, which wakes a waiting ``batches()`` at once and makes the thread's next hand-over
fail, ending the thread.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import BinaryIO

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from connectors.sources.file import LineSplitter
from triage.errors import SourceError
from triage.model import Record

STREAM = "stdin"


class StdinSource:
    """Records per line of ``stream`` (offsets counted from 0); ends at EOF. Nothing to resume."""

    def __init__(
        self,
        name: str = "stdin",
        stream: BinaryIO | None = None,
        *,
        max_line_bytes: int = 65536,
        max_batch: int = 2048,
        read_chunk: int = 64 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_batch < 1 or read_chunk < 1:
            raise ValueError("max_batch and read_chunk must be positive")
        self.name = name
        self._stream = stream
        self._splitter = LineSplitter(max_line_bytes)
        self._max_batch = max_batch
        self._chunk = read_chunk
        self._clock = clock
        self._closed = anyio.Event()
        self._started = False
        self._recv: MemoryObjectReceiveStream[bytes | OSError] | None = None

    async def batches(self) -> AsyncIterator[list[Record]]:
        """Yield batches of at most ``max_batch`` line records until EOF or ``aclose``."""
        if self._started:
            raise RuntimeError("StdinSource.batches() can be iterated only once")
        self._started = True
        if self._closed.is_set():
            return
        stream = self._stream if self._stream is not None else sys.stdin.buffer
        send, recv = anyio.create_memory_object_stream[bytes | OSError](0)
        self._recv = recv
        thread = threading.Thread(
            target=self._reader, args=(stream, send, anyio.lowlevel.current_token()),
            name=f"triage-{self.name}-reader", daemon=True)
        thread.start()
        split = self._splitter
        pos = 0
        try:
            while not self._closed.is_set():
                if split.pending:
                    out: list[Record] = []
                    split.drain(out, self._max_batch, self.name, STREAM, "", self._clock())
                    yield out
                    continue
                try:
                    data = await recv.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    data = b""
                if self._closed.is_set():
                    return
                if isinstance(data, OSError):
                    raise SourceError(f"cannot read {self.name}: {data}") from data
                if not data:
                    last = split.flush(pos, self.name, STREAM, "", self._clock())
                    if last is not None:
                        yield [last]
                    return
                split.feed(data, pos)
                pos += len(data)
        finally:
            recv.close()

    def _reader(self, stream: BinaryIO, send: MemoryObjectSendStream[bytes | OSError],
                token: anyio.lowlevel.EventLoopToken) -> None:
        """Thread body: read chunks and hand each over; any failure to hand over ends the thread."""
        read = getattr(stream, "read1", stream.read)
        try:
            while True:
                item: bytes | OSError
                try:
                    item = read(self._chunk)
                except OSError as exc:
                    item = exc
                except ValueError:  # the stream was closed under us
                    item = b""
                anyio.from_thread.run(send.send, item, token=token)
                if not isinstance(item, bytes) or not item:
                    return
        except Exception:  # the consumer is gone (stream closed) or the event loop ended
            return
        finally:
            try:
                anyio.from_thread.run_sync(send.close, token=token)
            except Exception:  # the event loop is gone: nothing else can touch the stream now
                send.close()

    async def commit(self, positions: Mapping[str, int]) -> None:
        """Nothing to persist: stdin cannot be re-read."""

    async def aclose(self) -> None:
        """End ``batches()`` promptly, even while a read is blocked. Idempotent."""
        self._closed.set()
        if self._recv is not None:
            self._recv.close()
