"""Shapes: what the full path did with a record, for the records that differ from it only in digits.

See :mod:`triage.fastlane` for the conditions under which a shape is learned.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from triage.model import Cluster, Event, Level, Record

ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_ZERO_STR = str.maketrans("123456789", "000000000")
_ISO_TS = re.compile(rb"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,](\d{1,6}))?(Z|z|[+-]\d{2}:?\d{2})?")
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)
_WARNING = Level.WARNING
# Memory: at most MAX_SHAPES shapes of lines up to _MAX_SHAPE_BYTES (their keys are the lines' bytes:
# 16 MiB at worst), and hashes (not keys) of the keys seen once or rejected.
MAX_SHAPES = 8_192
_MAX_SHAPE_BYTES = 2_048
_MAX_SECONDS = 65_536
_MAX_SEEN = 65_536


@runtime_checkable
class ShapeStep(Protocol):
    """A processing step that can vouch for a shape (see ``RedactSecrets.leaves_shape_alone``)."""

    def __call__(self, event: Event) -> Event: ...

    def leaves_shape_alone(self, event: Event) -> bool: ...


class Shape:
    """What every record of one shape decodes to, and where its timestamp is."""

    __slots__ = ("a", "alert", "b", "bucket", "cluster", "fa", "fb", "format", "level", "recs", "scale",
                 "sec_end", "service", "za", "zb", "zone", "zone_s")

    def __init__(self, level: Level, service: str | None, fmt: str, a: int, b: int) -> None:
        self.level = level
        self.service = service  # None: the record's source names it (Kafka key or header, file name)
        self.format = fmt
        self.a = a  # the timestamp's bytes: [a, b); its date and time to the second: [a, sec_end)
        self.b = b
        self.sec_end = a + 19
        self.fa = self.fb = 0  # fraction of a second [fa, fb), as ``scale`` µs per unit
        self.scale = 0
        self.za = self.zb = 0  # a numeric zone's bytes (each record must carry the same), its offset
        self.zone: bytes | None = None
        self.zone_s = 0
        self.alert = False  # detection must see these events one by one
        self.recs: list[int] | None = None  # the current segment's records, by index (decode stage only)
        self.cluster: Cluster | None = None  # the cluster its records went to (cluster stage only)
        # The shape whose tally this shape's records join: itself, or once its cluster is known, the
        # first shape with the same cluster, level, service and timestamp layout (ids of varying length
        # make many shapes of one template; one tally for all of them).
        self.bucket = self


class ShapeMemo:
    """Shapes by key, bounded; and a cache of ISO seconds (validated once, shared by all shapes)."""

    __slots__ = ("_invalid", "_rejected", "_seen", "max_line_bytes", "seconds", "shapes")

    def __init__(self, *, max_line_bytes: int = 65_536) -> None:
        self.shapes: dict[bytes, Shape] = {}
        self._rejected: set[int] = set()  # hashes of keys that cannot make a shape (not tried again)
        self._seen: set[int] = set()  # hashes of keys of records that went the full path once
        self.seconds: dict[bytes, int | None] = {}
        self._invalid: set[bytes] = set()  # the keys of _seconds that are no valid date-time
        self.max_line_bytes = max_line_bytes

    def __len__(self) -> int:
        return len(self.shapes)

    def second(self, key: bytes) -> int | None:
        """``YYYY-MM-DDTHH:MM:SS`` as naive epoch seconds; None when it is no valid date-time."""
        seconds = self.seconds
        try:
            return seconds[key]
        except KeyError:
            pass
        try:
            value: int | None = (datetime.fromisoformat(key.decode()) - _EPOCH) // _SECOND
        except ValueError:
            value = None
        if len(seconds) >= _MAX_SECONDS:
            seconds.clear()
            self._invalid.clear()
        seconds[key] = value
        if value is None:
            self._invalid.add(key)
        return value

    def invalid(self, keys: set[bytes]) -> set[bytes]:
        """The keys (``YYYY-MM-DDTHH:MM:SS``) among ``keys`` that are no valid date-time."""
        for key in keys.difference(self.seconds):  # set operations in C; a new second is rare
            self.second(key)
        return keys & self._invalid

    def timestamp(self, shape: Shape, value: bytes) -> float | None:
        """The timestamp of a record of ``shape``, as the decoder computes it (None when invalid or in
        another zone than the shape's)."""
        key = value[shape.a:shape.sec_end]
        sec = self.seconds.get(key)  # the common case without a call
        if sec is None:
            sec = self.second(key)
        if sec is None or (shape.zone is not None and value[shape.za:shape.zb] != shape.zone):
            return None
        micros = (sec - shape.zone_s) * 1_000_000
        if shape.scale:
            micros += int(value[shape.fa:shape.fb]) * shape.scale
        return micros / 1_000_000

    def seen_before(self, key: bytes) -> bool:
        """Whether a record with this key went the full path before (else remember that it did now).

        A shape is learned at its second record: most keys that occur once (ids with letters, hashes)
        never come back, and learning costs more than a full-path record."""
        if len(key) > _MAX_SHAPE_BYTES:
            return False
        seen = self._seen
        h = hash(key)  # a collision only learns a shape one record early
        if h in seen:
            return True
        if len(seen) >= _MAX_SEEN:
            seen.clear()
        seen.add(h)
        return False

    def learn(self, key: bytes, record: Record, event: Event, service_found: bool, ts_text: str) -> Shape | None:
        """Make a shape from a record the full path decoded into ``event`` (see the module docstring for
        the conditions the caller checked); None when this record's shape cannot skip the full path."""
        h = hash(key)
        if h in self._rejected or len(key) > _MAX_SHAPE_BYTES:
            return None
        shape = self._make(record, event, service_found, ts_text)
        if shape is None:
            if len(self._rejected) >= _MAX_SEEN:
                self._rejected.clear()
            self._rejected.add(h)
            return None
        if len(self.shapes) >= MAX_SHAPES:
            self.shapes.clear()  # bounded: a stream with this many shapes mostly takes the full path
        self.shapes[key] = shape
        return shape

    def _make(self, record: Record, event: Event, service_found: bool, ts_text: str) -> Shape | None:
        value = record.data
        raw = event.raw
        if (record.truncated or len(value) >= self.max_line_bytes or event.exception is not None
                or not event.has_timestamp or not raw.isascii() or not raw.isprintable()
                or "\n" in event.message or "\u2026[truncated" in raw or "\\u" in raw):  # \u00XX: digits
            return None
        if event.format == "plain" and event.level >= _WARNING:
            return None  # the assembler holds these (a trace may follow)
        service: str | None = None
        if service_found:
            if event.service.translate(_ZERO_STR) != event.service or "0" in event.service:
                return None  # digits in a service name would make all its siblings one service
            service = event.service
        at = raw.find(ts_text)
        if at < 0 or raw.find(ts_text, at + 1) >= 0 or value[:len(raw)].decode("ascii", "replace") != raw:
            return None
        m = _ISO_TS.fullmatch(ts_text.encode())
        if m is None:
            return None
        shape = Shape(event.level, service, event.format, at, at + len(ts_text))
        if m.group(1) is not None:
            shape.fa, shape.fb = at + m.start(1), at + m.end(1)
            shape.scale = 10 ** (6 - (shape.fb - shape.fa))
        zone = m.group(2)
        if zone is not None and zone not in (b"Z", b"z"):
            digits = zone[1:].replace(b":", b"")
            offset = int(digits[:2]) * 3600 + int(digits[2:]) * 60
            shape.zone_s = offset if zone[:1] == b"+" else -offset
            shape.za, shape.zb = at + m.start(2), at + m.end(2)
            shape.zone = zone
        if self.timestamp(shape, value) != event.timestamp:
            return None  # a layout this reading does not reproduce exactly
        return shape
