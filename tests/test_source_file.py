"""The file source: replay, tail -F following, rotation, truncation, checkpoints, oversized lines."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import anyio
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.sources.base import MemoryCheckpointStore, Source
from connectors.sources.file import FileSource, LineSplitter
from triage.errors import SourceError
from triage.model import Record

POLL = 0.01


class Reader:
    """Pulls records from a source's batches, keeping extras so that duplicates are noticed."""

    def __init__(self, source: FileSource) -> None:
        self.source = source
        self.it: AsyncIterator[list[Record]] = source.batches()
        self.buf: list[Record] = []
        self.batch_sizes: list[int] = []

    async def _more(self) -> None:
        batch = await anext(self.it)
        self.batch_sizes.append(len(batch))
        self.buf.extend(batch)

    async def take(self, n: int) -> list[Record]:
        with anyio.fail_after(5):
            while len(self.buf) < n:
                await self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def until(self, sentinel: bytes) -> list[Record]:
        """Everything up to and including the record ``sentinel``; nothing may follow it yet."""
        with anyio.fail_after(5):
            while not any(r.data == sentinel for r in self.buf):
                await self._more()
        i = next(k for k, r in enumerate(self.buf) if r.data == sentinel)
        out, self.buf = self.buf[: i + 1], self.buf[i + 1 :]
        assert self.buf == []
        return out

    async def rest(self) -> list[Record]:
        """Everything until the iterator ends (replay)."""
        with anyio.fail_after(5):
            async for batch in self.it:
                self.batch_sizes.append(len(batch))
                self.buf.extend(batch)
        out, self.buf = self.buf, []
        return out

    async def close(self) -> None:
        await self.source.aclose()
        await self.it.aclose()  # type: ignore[attr-defined]


class StartedClock:
    """A clock that tells when the source read for the first time, i.e. after it opened its files."""

    def __init__(self) -> None:
        self.started = threading.Event()

    def __call__(self) -> float:
        self.started.set()
        return time.time()

    async def wait(self) -> None:
        assert await anyio.to_thread.run_sync(self.started.wait, 5)


def data(records: list[Record]) -> list[bytes]:
    return [r.data for r in records]


async def _extend(into: list[Record], coro: Awaitable[list[Record]]) -> None:
    into.extend(await coro)


def append(path: Path, text: bytes) -> None:
    with path.open("ab") as f:
        f.write(text)


def lines(prefix: str, n: int) -> bytes:
    return b"".join(f"{prefix}{i}\n".encode() for i in range(n))


def follow(tmp_path: Path, store: MemoryCheckpointStore | None = None, pattern: str = "*.log",
           **kw: object) -> FileSource:
    return FileSource("files", [str(tmp_path / pattern)], store or MemoryCheckpointStore(),
                      follow=True, poll_interval=POLL, **kw)  # type: ignore[arg-type]


def replay(tmp_path: Path, store: MemoryCheckpointStore | None = None, pattern: str = "*",
           **kw: object) -> FileSource:
    return FileSource("files", [str(tmp_path / pattern)], store or MemoryCheckpointStore(),
                      follow=False, poll_interval=POLL, **kw)  # type: ignore[arg-type]


def reference(content: bytes, max_line: int) -> list[tuple[bytes, int, int, int]]:
    """What the splitter must produce: (data, offset, end, truncated) per line, last partial included."""
    out = []
    off = 0
    while off < len(content):
        nl = content.find(b"\n", off)
        end = len(content) if nl < 0 else nl + 1
        line = content[off : end - 1] if nl >= 0 else content[off:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        out.append((line[:max_line], off, end, max(0, len(line) - max_line)))
        off = end
    return out


@pytest.mark.anyio
class TestReplay:
    async def test_several_files_end_with_exact_lines(self, tmp_path: Path) -> None:
        """A replay reads every matching file to its end, last line without newline included, and ends."""
        (tmp_path / "a.log").write_bytes(lines("a", 3) + b"a-last")
        (tmp_path / "b.log").write_bytes(lines("b", 2))
        src = replay(tmp_path)
        assert isinstance(src, Source)
        got = await Reader(src).rest()
        assert sorted(data(got)) == sorted([b"a0", b"a1", b"a2", b"a-last", b"b0", b"b1"])
        a = [r for r in got if r.path.endswith("a.log")]
        assert [(r.offset, r.end) for r in a] == [(0, 3), (3, 6), (6, 9), (9, 15)]
        st_a = os.stat(tmp_path / "a.log")
        assert {r.stream for r in a} == {f"{st_a.st_dev}:{st_a.st_ino}"}
        assert all(r.source == "files" for r in got)

    async def test_no_matching_file_raises_source_error(self, tmp_path: Path) -> None:
        """A replay whose patterns match no file fails at the first iteration with SourceError."""
        src = replay(tmp_path, pattern="nothing-*.log")
        with pytest.raises(SourceError, match="no file matches"):
            await anext(src.batches())

    async def test_crlf_and_empty_lines(self, tmp_path: Path) -> None:
        """A trailing \\r is stripped; empty lines are records with exact offsets."""
        (tmp_path / "x.log").write_bytes(b"one\r\n\r\n\ntwo\r\nlast\r")
        got = await Reader(replay(tmp_path)).rest()
        assert [(r.data, r.offset, r.end) for r in got] == [
            (b"one", 0, 5), (b"", 5, 7), (b"", 7, 8), (b"two", 8, 13), (b"last", 13, 18)]

    @pytest.mark.parametrize("chunk", [7, 64, 256 * 1024])
    async def test_oversized_line_truncated(self, tmp_path: Path, chunk: int) -> None:
        """A line over max_line_bytes keeps its first bytes, counts the rest, and the next line is intact."""
        long = b"x" * 100 + b"y" * 250
        (tmp_path / "x.log").write_bytes(b"short\n" + long + b"\nnext\n")
        got = await Reader(replay(tmp_path, max_line_bytes=100, read_chunk=chunk)).rest()
        assert [(r.data, r.truncated, r.offset, r.end) for r in got] == [
            (b"short", 0, 0, 6), (b"x" * 100, 250, 6, 357), (b"next", 0, 357, 362)]

    async def test_batches_are_bounded(self, tmp_path: Path) -> None:
        """No batch holds more than max_batch records, and nothing is lost across batches."""
        (tmp_path / "x.log").write_bytes(lines("l", 1000))
        reader = Reader(replay(tmp_path, max_batch=64, read_chunk=1024))
        got = await reader.rest()
        assert data(got) == [f"l{i}".encode() for i in range(1000)]
        assert max(reader.batch_sizes) <= 64

    async def test_gz_is_decompressed(self, tmp_path: Path) -> None:
        """A .gz file is read decompressed, offsets counted in the decompressed stream."""
        with gzip.open(tmp_path / "old.log.gz", "wb") as f:
            f.write(lines("z", 5) + b"tail")
        got = await Reader(replay(tmp_path, read_chunk=8)).rest()
        assert data(got) == [b"z0", b"z1", b"z2", b"z3", b"z4", b"tail"]
        assert got[-1].offset == 15 and got[-1].end == 19

    async def test_corrupt_gz_is_logged_not_fatal(self, tmp_path: Path) -> None:
        """A cut .gz file delivers what is readable and logs an error instead of crashing."""
        payload = gzip.compress(lines("c", 2000))
        (tmp_path / "cut.log.gz").write_bytes(payload[: len(payload) // 2])
        with structlog.testing.capture_logs() as logs:
            got = await Reader(replay(tmp_path)).rest()
        assert got and got[0].data == b"c0"
        assert any(e["event"] == "file_source.corrupt_gzip" for e in logs)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
    async def test_unreadable_file_is_skipped(self, tmp_path: Path) -> None:
        """A file that cannot be opened is logged once and skipped; the others are read."""
        (tmp_path / "ok.log").write_bytes(b"fine\n")
        bad = tmp_path / "bad.log"
        bad.write_bytes(b"secret\n")
        bad.chmod(0)
        with structlog.testing.capture_logs() as logs:
            got = await Reader(replay(tmp_path)).rest()
        assert data(got) == [b"fine"]
        assert [e["event"] for e in logs].count("file_source.cannot_open") == 1


@pytest.mark.anyio
class TestFollow:
    @pytest.mark.parametrize("offload", [False, True])
    async def test_append_while_following(self, tmp_path: Path, offload: bool) -> None:
        """Lines appended while following are received exactly once, in order (reads inline or offloaded)."""
        log = tmp_path / "app.log"
        log.write_bytes(lines("a", 3))
        r = Reader(follow(tmp_path, offload=offload))
        try:
            assert data(await r.take(3)) == [b"a0", b"a1", b"a2"]
            append(log, lines("b", 4) + b"END\n")
            assert data(await r.until(b"END")) == [b"b0", b"b1", b"b2", b"b3", b"END"]
        finally:
            await r.close()

    async def test_partial_line_held_until_completed(self, tmp_path: Path) -> None:
        """A last line without newline is not delivered half; it arrives whole once completed."""
        log = tmp_path / "app.log"
        log.write_bytes(b"one\nhal")
        r = Reader(follow(tmp_path))
        try:
            assert data(await r.take(1)) == [b"one"]
            append(log, b"f-done\nEND\n")
            got = await r.until(b"END")
            assert [(x.data, x.offset, x.end) for x in got] == [(b"half-done", 4, 14), (b"END", 14, 18)]
        finally:
            await r.close()

    @pytest.mark.parametrize("offload", [False, True])
    async def test_rotation_by_rename(self, tmp_path: Path, offload: bool) -> None:
        """Lines written to the old file around a rename and to the new file are all received once."""
        log = tmp_path / "app.log"
        old = log.open("ab", buffering=0)
        try:
            old.write(lines("a", 3))
            r = Reader(follow(tmp_path, pattern="app.log", offload=offload))
            try:
                assert data(await r.take(3)) == [b"a0", b"a1", b"a2"]
                old.write(b"before-rename\n")
                log.rename(tmp_path / "app.log.1")
                old.write(b"after-rename\nunterminated")
                log.write_bytes(lines("b", 2))
                got = await r.take(5)
                assert sorted(data(got)) == sorted(
                    [b"before-rename", b"after-rename", b"unterminated", b"b0", b"b1"])
                append(log, b"END\n")
                assert data(await r.until(b"END")) == [b"END"]
            finally:
                await r.close()
        finally:
            old.close()

    async def test_copy_truncate(self, tmp_path: Path) -> None:
        """After copy-truncate the file is read again from 0: new lines once, nothing old re-read."""
        log = tmp_path / "app.log"
        log.write_bytes(lines("old", 5))
        store = MemoryCheckpointStore()
        r = Reader(follow(tmp_path, store, pattern="app.log"))
        try:
            first = await r.take(5)
            shutil.copy(log, tmp_path / "app.log.1")
            with log.open("r+b") as f:
                f.truncate(0)
            append(log, b"new0\nEND\n")
            got = await r.until(b"END")
            assert [(x.data, x.offset) for x in got] == [(b"new0", 0), (b"END", 5)]
            assert got[0].stream != first[0].stream
            # A late commit of the old content is ignored; the new content's commit is kept.
            await r.source.commit({first[-1].stream: first[-1].end})
            await r.source.commit({got[-1].stream: got[-1].end})
            state = json.loads(next(iter(store.load_checkpoints("files").values())))
            assert state["offset"] == got[-1].end
        finally:
            await r.close()

    async def test_truncate_and_rewrite_longer(self, tmp_path: Path) -> None:
        """A file truncated and refilled beyond the old offset while idle is detected by its first bytes."""
        log = tmp_path / "app.log"
        log.write_bytes(lines("old", 3))
        r = Reader(follow(tmp_path, pattern="app.log"))
        try:
            await r.take(3)
            with log.open("r+b") as f:
                f.truncate(0)
            append(log, lines("fresh", 10) + b"END\n")
            got = await r.until(b"END")
            assert data(got) == [f"fresh{i}".encode() for i in range(10)] + [b"END"]
        finally:
            await r.close()

    async def test_new_file_matching_glob_is_picked_up(self, tmp_path: Path) -> None:
        """A file created after the start that matches the pattern is read from its beginning."""
        (tmp_path / "sub").mkdir()
        (tmp_path / "a.log").write_bytes(b"a\n")
        clock = StartedClock()
        r = Reader(follow(tmp_path, pattern="**/*.log", start_at="end", clock=clock))
        got: list[Record] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: _extend(got, r.until(b"END")))
                await clock.wait()
                (tmp_path / "sub" / "b.log").write_bytes(b"b0\nb1\nEND\n")
        finally:
            await r.close()
        assert data(got) == [b"b0", b"b1", b"END"]

    async def test_start_at_end_skips_existing(self, tmp_path: Path) -> None:
        """start_at='end' skips complete existing lines; a partial last line arrives whole once completed."""
        log = tmp_path / "app.log"
        log.write_bytes(lines("old", 50) + b"par")
        clock = StartedClock()
        r = Reader(follow(tmp_path, start_at="end", clock=clock))
        got: list[Record] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: _extend(got, r.until(b"END")))
                await clock.wait()
                append(log, b"tial\nEND\n")
        finally:
            await r.close()
        assert data(got) == [b"partial", b"END"]
        assert got[0].offset == len(lines("old", 50))

    async def test_deleted_file_is_finished_then_dropped(self, tmp_path: Path) -> None:
        """A deleted file's remaining lines (and last partial line) are delivered before it is dropped."""
        log = tmp_path / "app.log"
        w = log.open("ab", buffering=0)
        try:
            w.write(b"one\n")
            r = Reader(follow(tmp_path))
            try:
                await r.take(1)
                w.write(b"two\nthree")
                log.unlink()
                assert data(await r.take(2)) == [b"two", b"three"]
                (tmp_path / "other.log").write_bytes(b"END\n")
                assert data(await r.until(b"END")) == [b"END"]
            finally:
                await r.close()
        finally:
            w.close()

    async def test_nothing_matching_waits_in_follow(self, tmp_path: Path) -> None:
        """In follow mode a pattern that matches nothing is not an error: the source waits for files."""
        r = Reader(follow(tmp_path))
        try:
            (tmp_path / "late.log").write_bytes(b"END\n")
            assert data(await r.until(b"END")) == [b"END"]
        finally:
            await r.close()

    async def test_aclose_wakes_an_idle_poll(self, tmp_path: Path) -> None:
        """aclose ends a batches() waiting out a long poll interval at once."""
        (tmp_path / "app.log").write_bytes(b"one\n")
        src = FileSource("files", [str(tmp_path / "*.log")], MemoryCheckpointStore(), poll_interval=60)
        ended = anyio.Event()
        got: list[Record] = []
        first = anyio.Event()

        async def consume() -> None:
            async for batch in src.batches():
                got.extend(batch)
                first.set()
            ended.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await first.wait()
                await src.aclose()
                await ended.wait()
        assert data(got) == [b"one"]
        await src.aclose()  # idempotent


@pytest.mark.anyio
class TestCheckpoints:
    async def test_restart_resumes_exactly(self, tmp_path: Path) -> None:
        """After commit and restart with the same store, nothing is read twice and nothing is lost."""
        log = tmp_path / "app.log"
        log.write_bytes(lines("l", 10))
        store = MemoryCheckpointStore()
        r = Reader(follow(tmp_path, store))
        try:
            got = await r.take(4)
            await r.source.commit({got[-1].stream: got[-1].end})
        finally:
            await r.close()
        append(log, lines("m", 2) + b"END\n")
        r2 = Reader(follow(tmp_path, store))
        try:
            rest = await r2.until(b"END")
        finally:
            await r2.close()
        assert data(rest) == [f"l{i}".encode() for i in range(4, 10)] + [b"m0", b"m1", b"END"]
        assert rest[0].offset == got[-1].end

    async def test_lower_commit_replays_from_there(self, tmp_path: Path) -> None:
        """A commit lower than what was read (a pending multi-line event) replays from that position."""
        (tmp_path / "app.log").write_bytes(lines("l", 6))
        store = MemoryCheckpointStore()
        r = Reader(replay(tmp_path, store))
        got = await r.rest()
        await r.source.commit({got[2].stream: got[2].end})
        again = await Reader(replay(tmp_path, store)).rest()
        assert data(again) == [b"l3", b"l4", b"l5"]

    async def test_gz_restart_skips_committed(self, tmp_path: Path) -> None:
        """A .gz replay restarted after a commit skips exactly what was committed."""
        with gzip.open(tmp_path / "a.log.gz", "wb") as f:
            f.write(lines("g", 400))
        store = MemoryCheckpointStore()
        r = Reader(replay(tmp_path, store, read_chunk=100))
        got = await r.take(150)
        await r.source.commit({got[-1].stream: got[-1].end})
        await r.close()
        state = json.loads(next(iter(store.load_checkpoints("files").values())))
        assert state["gz"] is True and state["offset"] == got[-1].end
        rest = await Reader(replay(tmp_path, store, read_chunk=100)).rest()
        assert data(rest) == [f"g{i}".encode() for i in range(150, 400)]

    async def test_rewritten_file_with_same_inode_is_read_from_start(self, tmp_path: Path) -> None:
        """A checkpoint whose fingerprint no longer matches the file (inode reuse) reads it from 0."""
        log = tmp_path / "app.log"
        log.write_bytes(lines("old", 5))
        store = MemoryCheckpointStore()
        r = Reader(replay(tmp_path, store))
        got = await r.rest()
        await r.source.commit({got[-1].stream: got[-1].end})
        with log.open("r+b") as f:
            f.write(lines("new", 5))  # same inode, same size, other content
        again = await Reader(replay(tmp_path, store)).rest()
        assert data(again) == [f"new{i}".encode() for i in range(5)]

    async def test_state_json_shape(self, tmp_path: Path) -> None:
        """The saved state is JSON with path, dev, ino, offset, fingerprint and gz."""
        log = tmp_path / "app.log"
        log.write_bytes(b"x\n")
        store = MemoryCheckpointStore()
        r = Reader(replay(tmp_path, store))
        got = await r.rest()
        await r.source.commit({got[0].stream: got[0].end})
        st_ = os.stat(log)
        (key, text), = store.load_checkpoints("files").items()
        state = json.loads(text)
        assert key == f"{st_.st_dev}:{st_.st_ino}"
        assert {k: state[k] for k in ("path", "dev", "ino", "offset", "gz")} == {
            "path": str(log), "dev": st_.st_dev, "ino": st_.st_ino, "offset": 2, "gz": False}
        assert isinstance(state["fingerprint"], str)

    async def test_checkpoint_of_gone_file_is_dropped_at_start(self, tmp_path: Path) -> None:
        """A saved state whose file no longer exists is deleted when the source starts."""
        gone = tmp_path / "gone.log"
        gone.write_bytes(b"x\n")
        (tmp_path / "keep.log").write_bytes(b"y\n")
        store = MemoryCheckpointStore()
        r = Reader(replay(tmp_path, store))
        got = await r.rest()
        await r.source.commit({x.stream: x.end for x in got})
        gone.unlink()
        assert await Reader(replay(tmp_path, store)).rest() == []
        states = store.load_checkpoints("files")
        assert len(states) == 1
        assert "keep.log" in next(iter(states.values()))


class TestLineSplitter:
    @settings(max_examples=200, deadline=None)
    @given(content=st.binary(max_size=300).map(lambda b: b.replace(b"a", b"\n").replace(b"b", b"\r")),
           chunk=st.integers(1, 40), max_line=st.integers(1, 30), room=st.integers(1, 5))
    def test_matches_reference_whatever_the_chunking(self, content: bytes, chunk: int, max_line: int,
                                                     room: int) -> None:
        """Any chunking and draining gives the reference lines with exact offsets and truncation."""
        split = LineSplitter(max_line)
        out: list[Record] = []
        for base in range(0, len(content), chunk):
            split.feed(content[base : base + chunk], base)
            while split.pending:
                split.drain(out, room, "s", "k", "p", 0.0)
        last = split.flush(len(content), "s", "k", "p", 0.0)
        if last is not None:
            out.append(last)
        assert [(r.data, r.offset, r.end, r.truncated) for r in out] == reference(content, max_line)
