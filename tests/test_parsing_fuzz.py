"""Decoder + MultilineAssembler never raise on arbitrary input, and every record is accounted for."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triage.accounting import Counters
from triage.model import Record
from triage.parsing import Decoder, MultilineAssembler, parse_trace

TRACE_LINES = [
    "Traceback (most recent call last):", '  File "/app/x.py", line 3, in f', "    f()", "KeyError: 'x'",
    "During handling of the above exception, another exception occurred:",
    "java.lang.IllegalStateException: bad", "\tat com.x.Y.m(Y.java:12)", "Caused by: java.io.IOException: eof",
    "\t... 12 more", "\tSuppressed: java.lang.Error: s", "Exception in thread \"main\" java.lang.Error",
    "panic: boom", "goroutine 1 [running]:", "main.main()", "\t/app/main.go:12 +0x1d", "created by x.y in goroutine 1",
    "[signal SIGSEGV: segmentation violation]", "TypeError: x is undefined", "    at fn (/app/x.js:1:2)",
    "    at async /app/x.js:3:4", "    [cause]: Error: c", "node:internal/process/promises:288", "  code: 'E'", "}",
    "2024-03-12 14:00:00 ERROR head", "ERROR:root:oops", '{"level":"error","msg":"j"}', "", "   ", "\x00\x01",
    "[" * 3000, '{"a":' * 1100, "ts=1 level=info msg=x", "<34>Mar 12 14:00:00 h app[1]: m",
]

line_bytes = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(TRACE_LINES).map(str.encode),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.integers(min_value=70_000, max_value=120_000).map(lambda n: b"x" * n),
    st.binary(min_size=1, max_size=20).map(lambda b: b"\xff" + b),
)


@st.composite
def inputs(draw: st.DrawFn) -> list[tuple[str, bytes, int]]:
    lines = draw(st.lists(line_bytes, max_size=60))
    return [(draw(st.sampled_from(["a", "b", "c"])), data, draw(st.integers(0, 3))) for data in lines]


class TestFuzz:
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(records=inputs(), max_lines=st.integers(1, 20), flush_every=st.integers(1, 30))
    def test_never_raises_and_accounting_adds_up(self, records: list[tuple[str, bytes, int]], max_lines: int,
                                                 flush_every: int) -> None:
        """records in == events out + merged + dropped, whatever the bytes, streams, caps and idle flushes."""
        counters = Counters()
        now = [0.0]
        decoder = Decoder(counters, max_line_bytes=65536)
        assembler = MultilineAssembler(counters, max_event_lines=max_lines, max_event_bytes=4096,
                                       clock=lambda: now[0])
        out = 0
        offsets = {"a": 0, "b": 0, "c": 0}
        for i, (stream, data, truncated) in enumerate(records):
            counters.read += 1
            start = offsets[stream]
            offsets[stream] = start + len(data) + 1
            event = decoder(Record(data=data, source="fuzz", stream=stream, offset=start, end=offsets[stream],
                                   received=1e9 + i, path="/var/log/x.log", truncated=truncated))
            if event is not None:
                assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in event.message)
                out += len(assembler.push(event))
            now[0] += 1.0
            if i % flush_every == 0:
                out += len(assembler.flush_idle(now[0], 2.5))
            for s, off in assembler.pending_offsets().items():
                assert off <= offsets[s]
        out += len(assembler.flush_all())
        assert counters.read == out + counters.merged + counters.dropped_total
        assert assembler.pending_offsets() == {} and assembler.next_deadline(1.0) is None

    @settings(max_examples=200, deadline=None)
    @given(lines=st.lists(st.one_of(st.sampled_from(TRACE_LINES), st.text(max_size=80)), max_size=40))
    def test_parse_trace_never_raises(self, lines: list[str]) -> None:
        """parse_trace on any mix of trace lines returns an ExceptionInfo or None."""
        exc = parse_trace("\n".join(lines))
        assert exc is None or isinstance(exc.type, str)
