"""Assemble multi-line events (stack traces) from decoded single-line events, per stream.

Design notes:

* One pending event per ``stream`` at most; lines of different streams are never merged.
* Only events that can be followed by a trace are held: a plain line at WARNING or above (the head
  of ``logger.exception(...)`` or a Logback ERROR line) or a line that starts a trace on its own
  (``Traceback ...``, ``panic: ...``, ``Exception in thread ...``, ``TypeError: ...``). Everything
  else (JSON, logfmt, INFO lines) goes straight through, after the stream's pending event.
* Whether a line continues the pending event is decided by the trace grammar of
  :mod:`triage.parsing.traces` plus the state of the pending trace (its language and last line kind),
  never by indentation alone, so an indented line after an ordinary event does not glue lines forever.
  A line with a parsed timestamp, or a JSON/logfmt line, always ends the pending event.
* Blank lines never reach the assembler: the decoder drops them (counted ``blank``). The grammar bridges
  the gaps a blank line leaves in a trace: in a Go dump the next line is ``goroutine N [...]:``, in a
  chained Python traceback it is ``During handling ...``/``Traceback ...``. So ``raw`` of an assembled
  event has no blank lines, and the accounting stays one bucket per record.
* Lines beyond ``max_event_lines``/``max_event_bytes`` are dropped (``event_line_cap``), the event is
  marked with ``attributes["truncated_lines"]`` and its ``end`` still advances past them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from triage.accounting import Counters
from triage.model import Event, Level
from triage.parsing.traces import (
    AT_FRAME,
    EXC_LINE,
    GO_FILE,
    GO_GOROUTINE,
    GO_MISC,
    GO_START,
    INDENTED,
    JAVA_CAUSE,
    JAVA_MORE,
    JAVA_START,
    NODE_CAUSE,
    NODE_MATCH,
    NODE_PRE,
    OTHER,
    PY_CHAIN,
    PY_FILE,
    PY_START,
    is_java_frame,
    is_strict_exception_line,
    line_kind,
    parse_trace,
)

_GO_FUNC = 100  # a Go function line inside a goroutine dump (context decides, so not a line kind)
_PY_FINAL = 101  # the "KeyError: 'x'" line that ends a Python traceback
_MARKER_STARTS = frozenset({PY_START, GO_START, JAVA_START})
_WARNING = Level.WARNING  # a module constant: the enum lookup costs ~60 ns per event on Python 3.11


class _Pending:
    """The event a stream is assembling, and where its trace grammar stands."""

    __slots__ = ("capped", "event", "lang", "last", "lines", "nbytes", "node_obj", "seen", "start_kind",
                 "trace_from")

    def __init__(self, event: Event, lang: str, kind: int, seen: float) -> None:
        self.event = event
        self.lines = [event.raw]
        self.nbytes = len(event.raw)
        self.lang = lang  # "" head without trace yet | "exc" exception line, language open | python java go node
        self.last = kind
        self.start_kind = kind
        self.trace_from = 0 if lang else -1
        self.capped = 0
        self.seen = seen
        self.node_obj = False  # inside the "{ code: ..., errno: ... }" dump after a Node trace


class MultilineAssembler:
    """Merge continuation lines (stack traces) into the event they belong to, per stream.

    ``push`` returns the events completed by that push; ``flush_idle`` completes events whose last
    line is older than ``quiet_s``; ``flush_all`` completes everything. Each record pushed ends as a
    returned event, as ``counters.merged`` or as ``counters.dropped["event_line_cap"]``.
    """

    __slots__ = ("_clock", "_counters", "_max_bytes", "_max_lines", "_pending")

    def __init__(self, counters: Counters, *, max_event_lines: int = 500, max_event_bytes: int = 256 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._counters = counters
        self._max_lines = max(1, max_event_lines)
        self._max_bytes = max(1, max_event_bytes)
        self._clock = clock
        self._pending: dict[str, _Pending] = {}

    # -- API ---------------------------------------------------------------------------------------

    def holds(self, stream: str) -> bool:
        """Whether ``stream`` has an event held (the next line may continue it)."""
        return stream in self._pending

    def push(self, event: Event) -> list[Event]:
        """Feed one decoded event; return the events this completes (in stream order)."""
        stream = event.stream
        pending = self._pending.get(stream)
        if pending is None and (event.format != "plain" or (event.has_timestamp and event.level < _WARNING)):
            return [event]  # the common case: nothing held, nothing to hold
        now = self._clock()
        plain = event.format == "plain" and not event.has_timestamp
        kind = line_kind(event.raw) if plain else OTHER
        if pending is not None:
            if plain and self._accept(pending, kind, event.raw):
                self._append(pending, event)
                pending.seen = now
                return []
            del self._pending[stream]
            done = [self._finish(pending)]
        else:
            done = []
        lang = self._starts(event, kind) if event.format == "plain" else None
        if lang is None:
            done.append(event)
        else:
            self._pending[stream] = _Pending(event, lang, kind, now)
        return done

    def flush_idle(self, now: float, quiet_s: float) -> list[Event]:
        """Complete pending events whose last line arrived at least ``quiet_s`` before ``now``."""
        due = [s for s, p in self._pending.items() if p.seen + quiet_s <= now]
        return [self._finish(self._pending.pop(s)) for s in due]

    def flush_all(self) -> list[Event]:
        """Complete every pending event (end of input, shutdown)."""
        pending, self._pending = self._pending, {}
        return [self._finish(p) for p in pending.values()]

    def pending_offsets(self) -> dict[str, int]:
        """Stream -> offset of the earliest record still held (a checkpoint must not pass it)."""
        return {s: p.event.offset for s, p in self._pending.items()}

    def next_deadline(self, quiet_s: float) -> float | None:
        """The monotonic time at which ``flush_idle(now, quiet_s)`` would complete something."""
        if not self._pending:
            return None
        return min(p.seen for p in self._pending.values()) + quiet_s

    # -- grammar -----------------------------------------------------------------------------------

    @staticmethod
    def _starts(event: Event, kind: int) -> str | None:
        """Whether a new event is held (may take continuation lines): its trace language, "" for a head
        line without a trace yet, None to emit it now."""
        if not event.has_timestamp:
            if kind == PY_START:
                return "python"
            if kind == GO_START:
                return "go"
            if kind == JAVA_START:
                return "java"
            if kind == NODE_PRE:
                return "node"
            if kind == EXC_LINE and is_strict_exception_line(event.raw):
                return "exc"
        if event.level >= _WARNING:
            return ""
        return None

    def _accept(self, p: _Pending, kind: int, line: str) -> bool:
        """Whether ``line`` continues ``p``; updates the grammar state when it does."""
        lang = p.lang
        last = p.last
        if lang == "":
            if kind == PY_START:
                p.lang = "python"
            elif kind == JAVA_START:
                p.lang = "java"
            elif kind == GO_START:
                p.lang = "go"
            elif kind == NODE_PRE:
                p.lang = "node"
            elif kind == EXC_LINE and is_strict_exception_line(line):
                p.lang = "exc"
            elif kind == AT_FRAME:
                p.lang = "java" if is_java_frame(line) else "node"
            elif kind == JAVA_CAUSE:
                p.lang = "java"
            else:
                return False
            p.trace_from = len(p.lines)
            p.last = kind
            return True
        if lang == "python":
            if kind in (PY_FILE, PY_START, PY_CHAIN):
                p.last = kind
                return True
            if last in (PY_FILE, INDENTED):
                if kind == INDENTED:
                    p.last = INDENTED
                    return True
                if kind in (EXC_LINE, OTHER):
                    p.last = _PY_FINAL
                    return True
            return False
        if lang == "java" or lang == "exc":
            if kind == AT_FRAME:
                if lang == "exc":
                    p.lang = "java" if is_java_frame(line) else "node"
                p.last = kind
                return True
            if kind in (JAVA_CAUSE, JAVA_MORE):
                p.lang = "java"
                p.last = kind
                return True
            if kind == NODE_CAUSE and lang == "exc":
                p.lang = "node"
                p.last = kind
                return True
            # an indented line directly after the exception line (a multi-line message)
            return kind == INDENTED and last in (EXC_LINE, JAVA_START)
        if lang == "node":
            if kind in (AT_FRAME, NODE_CAUSE, NODE_MATCH):
                p.last = kind
                p.node_obj = line.endswith("{")
                return True
            if p.node_obj:
                if kind == INDENTED:
                    return True
                if line.startswith("}"):
                    p.node_obj = False
                    return True
            if p.start_kind == NODE_PRE and last in (NODE_PRE, INDENTED, OTHER):
                if kind == EXC_LINE:
                    p.last = EXC_LINE
                    return True
                if kind in (INDENTED, OTHER) and len(p.lines) - p.trace_from < 4:
                    p.last = kind  # the source line and the caret under it
                    return True
            if kind == EXC_LINE and last in (EXC_LINE,):
                return False
            return line.startswith("Node.js v") and last in (AT_FRAME, NODE_MATCH, OTHER, INDENTED)
        if lang == "go":
            if kind in (GO_GOROUTINE, GO_FILE, GO_MISC):
                p.last = kind
                return True
            if kind == GO_START and not any(ln.startswith("goroutine ") for ln in p.lines[-3:]):
                p.last = kind
                return True
            if last in (GO_GOROUTINE, GO_FILE, GO_MISC) and kind in (OTHER, EXC_LINE) and line.endswith(")"):
                p.last = _GO_FUNC
                return True
            if last == GO_START and kind in (OTHER, INDENTED) and line.lstrip().startswith(("[", "panic")):
                return True
            return line.startswith("exit status ") and last == GO_FILE
        return False

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _append(self, p: _Pending, event: Event) -> None:
        line = event.raw
        p.event.end = event.end
        if len(p.lines) >= self._max_lines or p.nbytes + 1 + len(line) > self._max_bytes:
            p.capped += 1
            self._counters.drop("event_line_cap")
            return
        p.lines.append(line)
        p.nbytes += 1 + len(line)
        self._counters.merged += 1

    def _finish(self, p: _Pending) -> Event:
        event = p.event
        lines = p.lines
        if len(lines) > 1:
            event.raw = "\n".join(lines)
            event.lines = len(lines)  # records merged in; capped ones are counted in truncated_lines
        if p.capped:
            event.attributes["truncated_lines"] = p.capped
        if p.trace_from >= 0 and (len(lines) - p.trace_from >= 2 or p.start_kind in _MARKER_STARTS):
            trace = event.raw if p.trace_from == 0 else "\n".join(lines[p.trace_from:])  # joined once
            exc = parse_trace(trace)
            if exc is not None:
                event.exception = exc
                if p.trace_from == 0:
                    text = exc.message.split("\n", 1)[0]
                    if exc.language == "go" and exc.type == "runtime.Error":
                        event.message = f"panic: {text}"  # the text already says "runtime error: "
                    elif exc.type and text:
                        event.message = f"{exc.type}: {text}"
                    else:
                        event.message = exc.type or text or event.message
                if event.level is Level.UNKNOWN:
                    go_panic = exc.language == "go" and exc.type in ("panic", "runtime.Error", "fatal error")
                    event.level = Level.CRITICAL if go_panic else Level.ERROR
        return event
