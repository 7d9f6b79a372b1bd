"""MultilineAssembler: traces merge into one event per trace, per stream, with exact accounting."""

from __future__ import annotations

from pathlib import Path

from triage.accounting import Counters
from triage.model import Event, Level, Record
from triage.parsing import Decoder, MultilineAssembler

DATA = Path(__file__).parent / "data" / "traces"


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """Decoder + assembler wired like the pipeline, counting records read."""

    def __init__(self, **kw: int) -> None:
        self.counters = Counters()
        self.clock = Clock()
        self.decoder = Decoder(self.counters)
        self.assembler = MultilineAssembler(self.counters, clock=self.clock, **kw)
        self.offsets: dict[str, int] = {}
        self.out: list[Event] = []

    def feed(self, text: str, stream: str = "s1") -> None:
        for line in text.split("\n"):
            off = self.offsets.get(stream, 0)
            data = line.encode()
            self.offsets[stream] = off + len(data) + 1
            self.counters.read += 1
            ev = self.decoder(Record(data=data, source="file", stream=stream, offset=off,
                                     end=off + len(data) + 1, received=1710252000.0, path="/var/log/app.log"))
            if ev is not None:
                self.out += self.assembler.push(ev)

    def finish(self) -> list[Event]:
        self.out += self.assembler.flush_all()
        return self.out

    def balanced(self) -> bool:
        c = self.counters
        return c.read == len(self.out) + c.merged + c.dropped_total


def fixture(name: str) -> str:
    return (DATA / name).read_text().rstrip("\n")


class TestFourLanguages:
    def test_java_spring(self) -> None:
        """The Spring ERROR line and its whole trace (Suppressed, Caused by, ... more) become one event."""
        h = Harness()
        h.feed(fixture("java_spring_hikari.log"))
        out = h.finish()
        assert [e.lines for e in out] == [1, 27, 1]
        ev = out[1]
        assert ev.level == Level.ERROR and ev.message.startswith("Servlet.service() for servlet")
        assert ev.exception is not None and ev.exception.cause is not None
        assert ev.exception.cause.cause is not None and ev.exception.cause.cause.type.endswith("PSQLException")
        assert ev.raw.count("\n") == 26 and ev.raw.endswith("\t... 3 more")
        assert (h.counters.merged, h.counters.dropped_total) == (26, 0) and h.balanced()

    def test_python_logging_exception(self) -> None:
        """logging.exception's line and the chained traceback become one event with the head's message."""
        h = Harness()
        h.feed(fixture("python_chained.log"))
        out = h.finish()
        assert [e.message for e in out] == ["picked job 4411", "charge failed for order 4411", "job 4411 requeued"]
        ev = out[1]
        assert ev.lines == 16 and ev.exception is not None and ev.exception.type == "payments.errors.PaymentError"
        assert ev.exception.cause is not None and h.counters.dropped["blank"] == 2 and h.balanced()

    def test_go_panic_with_goroutines(self) -> None:
        """A Go panic dump, blank lines and all goroutines included, is one CRITICAL event."""
        h = Harness()
        h.feed(fixture("go_panic.log"))
        out = h.finish()
        assert [e.message for e in out] == [
            "listening on :8080",
            "panic: runtime error: invalid memory address or nil pointer dereference",
            "restarting",
        ]
        ev = out[1]
        assert ev.level == Level.CRITICAL and ev.lines == 26 and ev.raw.endswith("exit status 2")
        assert ev.exception is not None and ev.exception.type == "runtime.Error" and len(ev.exception.frames) == 6
        assert h.balanced()

    def test_node_unhandled_rejection(self) -> None:
        """Node's preamble, frames with 'at async', the error's property dump and version line: one event."""
        h = Harness()
        h.feed(fixture("node_rejection.log"))
        out = h.finish()
        assert len(out) == 3
        ev = out[1]
        assert ev.message == "Error: connect ECONNREFUSED 10.0.3.7:6379" and ev.level == Level.ERROR
        assert ev.lines == 15 and ev.raw.startswith("node:internal/") and ev.raw.endswith("Node.js v20.11.1")
        assert ev.exception is not None and len(ev.exception.frames) == 4 and h.balanced()

    def test_bare_traceback_uses_exception_as_message(self) -> None:
        """A trace without a head line takes 'Type: message' of the exception as its message."""
        h = Harness()
        h.feed('Traceback (most recent call last):\n  File "/app/a.py", line 1, in <module>\n    f()\n'
               "ValueError: bad value\nplain line after")
        out = h.finish()
        assert [e.message for e in out] == ["ValueError: bad value", "plain line after"]
        assert out[0].level == Level.ERROR and out[0].lines == 4


class TestBoundaries:
    def test_new_prefixed_line_ends_pending(self) -> None:
        """A line with a timestamp ends the pending trace at once (no need to wait for quiet time)."""
        h = Harness()
        h.feed("2024-03-12 14:00:00 ERROR boom\njava.lang.RuntimeException: x\n\tat a.B.c(B.java:1)")
        assert h.out == [] and h.assembler.pending_offsets() == {"s1": 0}
        h.feed("2024-03-12 14:00:01 INFO next")
        assert [e.lines for e in h.out] == [3, 1]

    def test_indented_line_after_info_not_glued(self) -> None:
        """An indented line after an ordinary INFO line is its own event, not a continuation."""
        h = Harness()
        h.feed("2024-03-12 14:00:00 INFO config:\n  key: value\n  other: 2")
        assert [e.lines for e in h.finish()] == [1, 1, 1]

    def test_error_line_without_trace(self) -> None:
        """An ERROR line followed by unrelated plain text does not absorb it."""
        h = Harness()
        h.feed("2024-03-12 14:00:00 ERROR failed\nunrelated text\n  indented too")
        assert [e.lines for e in h.finish()] == [1, 1, 1]

    def test_json_line_ends_pending_and_is_not_held(self) -> None:
        """A JSON line ends the pending event and is returned by the same push."""
        h = Harness()
        h.feed('panic: x\n\ngoroutine 1 [running]:\nmain.main()\n\t/app/m.go:3 +0x1\n{"msg":"hi","level":"info"}')
        assert [e.format for e in h.out] == ["plain", "json"] and h.out[0].lines == 4

    def test_interleaved_streams_do_not_mix(self) -> None:
        """Lines of two streams interleaved assemble into one event per stream."""
        h = Harness()
        a = ["2024-03-12 14:00:00 ERROR a failed", "java.lang.IllegalStateException: a", "\tat a.A.run(A.java:1)",
             "\tat a.A.main(A.java:2)"]
        b = ["ERROR:b:b failed", "Traceback (most recent call last):", '  File "/b.py", line 1, in <module>',
             "    go()", "KeyError: 'b'"]
        for i in range(5):
            if i < len(a):
                h.feed(a[i], "A")
            h.feed(b[i], "B")
        out = h.finish()
        by_stream = {e.stream: e for e in out}
        assert len(out) == 2 and by_stream["A"].lines == 4 and by_stream["B"].lines == 5
        assert "KeyError" not in by_stream["A"].raw and "java" not in by_stream["B"].raw
        assert by_stream["B"].exception is not None and by_stream["B"].exception.type == "KeyError"
        assert h.balanced()


class TestTiming:
    def test_flush_idle_after_quiet_time(self) -> None:
        """The last trace is flushed by flush_idle only once quiet_s has passed since its last line."""
        h = Harness()
        h.feed("2024-03-12 14:00:00 ERROR boom\njava.lang.RuntimeException: x")
        h.clock.now = 101.0
        h.feed("\tat a.B.c(B.java:1)")
        assert h.assembler.next_deadline(2.0) == 103.0
        assert h.assembler.flush_idle(102.9, 2.0) == []
        done = h.assembler.flush_idle(103.0, 2.0)
        assert len(done) == 1 and done[0].lines == 3 and done[0].exception is not None
        assert h.assembler.next_deadline(2.0) is None and h.assembler.pending_offsets() == {}

    def test_pending_offsets_report_start_of_held_event(self) -> None:
        """pending_offsets gives, per stream, the offset of the first record of the held event."""
        h = Harness()
        h.feed("2024-03-12 14:00:00 INFO ok", "A")
        start = h.offsets["A"]
        h.feed("2024-03-12 14:00:01 ERROR bad\njava.lang.Error: e\n\tat a.B.c(B.java:1)", "A")
        h.feed("2024-03-12 14:00:00 INFO ok", "B")
        assert h.assembler.pending_offsets() == {"A": start}
        ev = h.finish()[-1]
        assert (ev.offset, ev.end) == (start, h.offsets["A"])


class TestCaps:
    def test_line_cap(self) -> None:
        """Lines beyond max_event_lines are dropped as event_line_cap and the event is marked."""
        h = Harness(max_event_lines=5)
        frames = "\n".join(f"\tat a.B.m{i}(B.java:{i})" for i in range(10))
        h.feed(f"2024-03-12 14:00:00 ERROR boom\njava.lang.Error: e\n{frames}")
        out = h.finish()
        assert len(out) == 1 and out[0].lines == 5 and out[0].attributes["truncated_lines"] == 7
        assert h.counters.dropped["event_line_cap"] == 7 and h.counters.merged == 4 and h.balanced()
        assert out[0].end == h.offsets["s1"]

    def test_byte_cap(self) -> None:
        """Bytes beyond max_event_bytes are not appended."""
        h = Harness(max_event_bytes=200)
        frames = "\n".join(f"\tat a.B.m{i}(B.java:{i})" for i in range(20))
        h.feed(f"java.lang.Error: e\n{frames}")
        out = h.finish()
        assert len(out[0].raw) <= 200 and out[0].attributes["truncated_lines"] > 0 and h.balanced()
