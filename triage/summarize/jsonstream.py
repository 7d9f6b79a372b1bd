"""Stream chosen string fields out of a JSON object while it is still arriving token by token.

The model answers with one JSON object (title, summary, cause, fix ...). Waiting for the whole object
before showing anything would waste the stream: `JsonFieldStreamer` runs a small incremental lexer over
the chunks and hands out the decoded text of chosen top-level string fields as it arrives, so a sink
can show the summary growing. At the end `result` parses the whole text, and when the answer was cut off
(``finish_reason: "length"``) or is malformed, repairs it as well as it can (close the open string,
drop an incomplete key or literal, close arrays and objects) and says it is partial.

Text before the first ``{`` (a Markdown fence, a preamble) and after the object's closing ``}`` is
ignored, since small models wrap JSON in fences even when asked not to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_WS = " \t\r\n"
_SPECIAL = re.compile(r'["\\]')

# Lexer modes.
_PRE, _STRUCT, _STR, _POST = 0, 1, 2, 3
# What the top-level object expects next.
_KEY, _COLON, _VALUE, _COMMA = 0, 1, 2, 3


class JsonFieldStreamer:
    """Incremental lexer: ``feed(chunk)`` returns ``[(field, text_delta), ...]`` for the chosen fields.

    Only string values of the top-level object's keys named in ``fields`` are streamed; escapes
    (including ``\\uXXXX`` and surrogate pairs split across chunks) are decoded. ``values`` holds
    the decoded text streamed so far per field.
    """

    __slots__ = (
        "_buf",
        "_emit",
        "_end",
        "_esc",
        "_esc_at",
        "_expect",
        "_fields",
        "_hex",
        "_high",
        "_key",
        "_key_chars",
        "_mode",
        "_pos",
        "_role",
        "_safe",
        "_stack",
        "_start",
        "values",
    )

    def __init__(self, fields: Iterable[str] = ("title", "summary")) -> None:
        self._fields = frozenset(fields)
        self._buf: list[str] = []
        self._pos = 0  # absolute offset of the next character fed
        self._mode = _PRE
        self._start = -1  # offset of the top-level "{"
        self._end = -1  # offset just past the top-level "}"
        self._stack: list[str] = []
        self._expect = _KEY
        self._role = ""  # inside a string: "key", "value" (top-level value) or "other"
        self._emit: str | None = None  # field being streamed, when inside its value
        self._key = ""
        self._key_chars: list[str] = []
        self._esc = 0  # 0: none, 1: after a backslash, 2: inside \uXXXX
        self._esc_at = -1  # offset of the backslash of the escape in progress
        self._hex = ""
        self._high: str | None = None  # a high surrogate waiting for its low half
        # Offsets where the text so far could be cut and closed validly, with the open containers then.
        self._safe: list[tuple[int, tuple[str, ...]]] = []
        self.values: dict[str, str] = {}

    @property
    def text(self) -> str:
        """Everything fed so far."""
        if len(self._buf) > 1:
            self._buf[:] = ["".join(self._buf)]
        return self._buf[0] if self._buf else ""

    def feed(self, chunk: str) -> list[tuple[str, str]]:
        """Consume ``chunk``; return the decoded text deltas of streamed fields it completed."""
        self._buf.append(chunk)
        out: list[tuple[str, str]] = []
        base = self._pos
        self._pos += len(chunk)
        i = 0
        n = len(chunk)
        while i < n:
            mode = self._mode
            if mode == _STR:
                if self._esc == 0:
                    # Fast path: copy the run up to the next quote or backslash in one slice.
                    m = _SPECIAL.search(chunk, i)
                    j = m.start() if m else n
                    if j > i:
                        self._chars(chunk[i:j], out)
                        i = j
                        continue
                    c = chunk[i]
                    if c == '"':
                        self._flush_high(out)
                        self._end_string(base + i + 1)
                    else:
                        self._esc = 1
                        self._esc_at = base + i
                    i += 1
                    continue
                c = chunk[i]
                i += 1
                if self._esc == 1:
                    if c == "u":
                        self._esc = 2
                        self._hex = ""
                    else:
                        self._esc = 0
                        self._flush_high(out)
                        self._chars(_ESCAPES.get(c, c), out)
                    continue
                self._hex += c  # _esc == 2
                if len(self._hex) == 4:
                    self._esc = 0
                    self._unicode(self._hex, out)
                continue
            c = chunk[i]
            i += 1
            if mode == _PRE:
                if c == "{":
                    self._mode = _STRUCT
                    self._start = base + i - 1
                    self._stack.append("{")
                    self._expect = _KEY
                    self._safe.append((base + i, ("{",)))
                continue
            if mode == _POST:
                continue
            self._struct(c, base + i, out)
        return _coalesce(out)

    # -- lexer helpers --------------------------------------------------------------------------------

    def _struct(self, c: str, after: int, out: list[tuple[str, str]]) -> None:
        """One character outside strings; ``after`` is the offset just past it."""
        if c in _WS:
            return
        depth = len(self._stack)
        if c == '"':
            self._mode = _STR
            if depth == 1 and self._expect == _KEY:
                self._role = "key"
                self._key_chars = []
            elif depth == 1 and self._expect == _VALUE:
                self._role = "value"
                if self._key in self._fields:
                    self._emit = self._key
                    self.values.setdefault(self._key, "")
            else:
                self._role = "other"
            return
        if c in "{[":
            self._stack.append(c)
            self._safe.append((after, tuple(self._stack)))
            return
        if c in "}]":
            if self._stack:
                self._stack.pop()
            if not self._stack:
                self._mode = _POST
                self._end = after
                return
            if len(self._stack) == 1:
                self._expect = _COMMA
            self._safe.append((after, tuple(self._stack)))
            return
        if c == ",":
            self._safe.append((after - 1, tuple(self._stack)))
            if depth == 1:
                self._expect = _KEY
            return
        if c == ":":
            if depth == 1:
                self._expect = _VALUE
            return
        # A number or literal character.
        if depth == 1 and self._expect == _VALUE:
            self._expect = _COMMA

    def _end_string(self, after: int) -> None:
        self._mode = _STRUCT
        if self._role == "key":
            self._key = "".join(self._key_chars)
            self._expect = _COLON
            return
        if self._role == "value":
            self._expect = _COMMA
            self._emit = None
        self._safe.append((after, tuple(self._stack)))

    def _chars(self, s: str, out: list[tuple[str, str]]) -> None:
        if self._role == "key":
            self._key_chars.append(s)
        elif self._emit is not None:
            self.values[self._emit] += s
            out.append((self._emit, s))

    def _unicode(self, hex4: str, out: list[tuple[str, str]]) -> None:
        try:
            code = int(hex4, 16)
        except ValueError:
            self._flush_high(out)
            self._chars("\ufffd", out)
            return
        if 0xD800 <= code <= 0xDBFF:
            self._flush_high(out)
            self._high = hex4
            return
        if 0xDC00 <= code <= 0xDFFF:
            if self._high is not None:
                high = int(self._high, 16)
                self._high = None
                self._chars(chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)), out)
            else:
                self._chars("\ufffd", out)
            return
        self._flush_high(out)
        self._chars(chr(code), out)

    def _flush_high(self, out: list[tuple[str, str]]) -> None:
        """A high surrogate not followed by a low one becomes U+FFFD (a lone surrogate is not text)."""
        if self._high is not None:
            self._high = None
            self._chars("\ufffd", out)

    # -- the end ------------------------------------------------------------------------------------

    def result(self) -> tuple[dict[str, Any], bool]:
        """``(object, True)`` when the text holds one complete valid object; else ``(best_effort, False)``.

        The best effort is the repaired prefix (open string closed, incomplete key or literal dropped,
        containers closed); fields that streamed but did not survive the repair are filled in from
        `values`, so text the engineer already saw is never lost.
        """
        text = self.text
        if self._start < 0:
            return dict(self.values), False
        if self._end >= 0:
            obj = _loads(text[self._start : self._end])
            if obj is not None:
                return obj, True
        partial = self._repair(text) or {}
        for field, value in self.values.items():
            current = partial.get(field)
            if not isinstance(current, str) or len(current) < len(value):
                partial[field] = value
        return partial, False

    def _repair(self, text: str) -> dict[str, Any] | None:
        candidates: list[str] = []
        if self._mode == _STR:
            cut = self._esc_at if self._esc else len(text)
            body = text[self._start : cut]
            if self._role == "value" or self._role == "other":
                candidates.append(body + '"' + _closers(self._stack))
        elif self._mode == _STRUCT:
            candidates.append(text[self._start :] + _closers(self._stack))
        for pos, stack in reversed(self._safe[-64:]):
            candidates.append(text[self._start : pos] + _closers(stack))
            if len(candidates) > 8:
                break
        if self._end >= 0:  # closed but invalid: try the safe points before the end
            candidates = [c for c in candidates if len(c) <= self._end - self._start + 8]
        for candidate in candidates:
            obj = _loads(candidate)
            if obj is not None:
                return obj
        return None


def _closers(stack: list[str] | tuple[str, ...]) -> str:
    return "".join("}" if c == "{" else "]" for c in reversed(stack))


def _loads(text: str) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _coalesce(out: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Merge consecutive deltas of the same field (one chunk can hold several escape-split pieces)."""
    if len(out) < 2:
        return out
    merged: list[tuple[str, str]] = [out[0]]
    for field, text in out[1:]:
        if merged[-1][0] == field:
            merged[-1] = (field, merged[-1][1] + text)
        else:
            merged.append((field, text))
    return merged
