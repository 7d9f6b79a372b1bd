"""The values that flow through the pipeline.

Hot-path values (``Record``, ``Event``, ``Cluster``) are plain dataclasses with ``__slots__``;
``Finding`` leaves the process (JSONL, Kafka, Slack), so it is a frozen pydantic model.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field


class Level(enum.IntEnum):
    """Severity, ordered; ``UNKNOWN`` sorts below everything."""

    UNKNOWN = 0
    TRACE = 5
    DEBUG = 10
    INFO = 20
    NOTICE = 25
    WARNING = 30
    ERROR = 40
    CRITICAL = 50

    @classmethod
    def parse(cls, value: object) -> Level:
        """Map a level as written by common loggers (names, abbreviations, numbers) to a Level."""
        if isinstance(value, bool):
            return cls.UNKNOWN
        if isinstance(value, int | float):
            return _level_from_number(int(value))
        if not isinstance(value, str):
            return cls.UNKNOWN
        key = value.strip().lower()
        if key.isdigit():
            return _level_from_number(int(key))
        return _LEVEL_NAMES.get(key, cls.UNKNOWN)


def _level_from_number(n: int) -> Level:
    # Bunyan/Pino: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
    # Syslog severities 0..7 (0 emergency .. 7 debug).
    if 0 <= n <= 7:
        return (
            Level.CRITICAL, Level.CRITICAL, Level.CRITICAL, Level.ERROR,
            Level.WARNING, Level.NOTICE, Level.INFO, Level.DEBUG,
        )[n]
    if n >= 60:
        return Level.CRITICAL
    if n >= 50:
        return Level.ERROR
    if n >= 40:
        return Level.WARNING
    if n >= 30:
        return Level.INFO
    if n >= 20:
        return Level.DEBUG
    if n >= 10:
        return Level.TRACE
    return Level.UNKNOWN


_LEVEL_NAMES: dict[str, Level] = {
    "trace": Level.TRACE, "trc": Level.TRACE, "t": Level.TRACE, "finest": Level.TRACE, "finer": Level.TRACE,
    "verbose": Level.TRACE, "v": Level.TRACE,
    "debug": Level.DEBUG, "dbg": Level.DEBUG, "d": Level.DEBUG, "fine": Level.DEBUG, "config": Level.DEBUG,
    "info": Level.INFO, "inf": Level.INFO, "i": Level.INFO, "information": Level.INFO,
    "informational": Level.INFO,
    "notice": Level.NOTICE, "n": Level.NOTICE,
    "warning": Level.WARNING, "warn": Level.WARNING, "wrn": Level.WARNING, "w": Level.WARNING,
    "error": Level.ERROR, "err": Level.ERROR, "e": Level.ERROR, "severe": Level.ERROR, "fail": Level.ERROR,
    "critical": Level.CRITICAL, "crit": Level.CRITICAL, "fatal": Level.CRITICAL, "ftl": Level.CRITICAL,
    "f": Level.CRITICAL, "emerg": Level.CRITICAL, "emergency": Level.CRITICAL, "alert": Level.CRITICAL,
    "panic": Level.CRITICAL, "dpanic": Level.CRITICAL, "c": Level.CRITICAL,
}


@dataclass(slots=True)
class Record:
    """One raw record as read: a line of a file, a Kafka message, a line of stdin.

    ``stream`` names where inside the source it came from (a file identity such as ``dev:inode``,
    or ``topic/partition``); ``offset`` is where the record starts and ``end`` is the position to
    commit once it is processed (the next byte offset, or the Kafka offset + 1).
    """

    data: bytes
    source: str
    stream: str
    offset: int
    end: int
    received: float
    path: str = ""
    attributes: dict[str, str] | None = None
    truncated: int = 0  # bytes cut from an oversized line by the source (the decoder marks and counts it)
    dead_letter: str | None = None  # set by a source that cannot pass the record on: the reason


class StreamBatch(list[Record]):
    """A batch whose records all come from one stream, in read order (a Kafka partition's share of a
    poll): the pipeline may join a stream's consecutive batches into one."""

    __slots__ = ()


class RowBatch(Sequence[Record]):
    """A batch of one stream kept as its source's rows (a Kafka partition's share of a poll), in read
    order: the columns the repeat-shape lane reads are made up front (``values``, ``offsets``,
    ``attributes``), a :class:`Record` only when one is asked for (``make(row, value, attributes)``).

    Like :class:`StreamBatch` the pipeline may join a stream's consecutive batches (``extend``). It
    never carries dead letters: a source that marks records hands out Records.
    """

    __slots__ = ("_make", "attributes", "offsets", "rows", "stream", "values")

    def __init__(self, stream: str, rows: list[Any], values: list[bytes], offsets: list[int],
                 attributes: list[dict[str, str] | None],
                 make: Callable[[Any, bytes, dict[str, str] | None], Record]) -> None:
        self.stream = stream
        self.rows = rows
        self.values = values
        self.offsets = offsets
        self.attributes = attributes
        self._make = make

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, i: int) -> Record: ...

    @overload
    def __getitem__(self, i: slice) -> list[Record]: ...

    def __getitem__(self, i: int | slice) -> Record | list[Record]:
        if isinstance(i, slice):
            return list(map(self._make, self.rows[i], self.values[i], self.attributes[i]))
        return self._make(self.rows[i], self.values[i], self.attributes[i])

    def __iter__(self) -> Iterator[Record]:
        return map(self._make, self.rows, self.values, self.attributes)

    def extend(self, other: RowBatch) -> None:
        """Append a later batch of the same stream (made by the same source)."""
        self.rows.extend(other.rows)
        self.values.extend(other.values)
        self.offsets.extend(other.offsets)
        self.attributes.extend(other.attributes)


@dataclass(slots=True)
class Frame:
    """One stack frame, as parsed from a trace."""

    function: str
    module: str = ""  # Java class / Python file / Go package / JS file
    lineno: int | None = None
    in_app: bool = True


@dataclass(slots=True)
class ExceptionInfo:
    """An exception parsed from a stack trace; ``cause`` links chained exceptions (outermost first)."""

    type: str
    message: str
    frames: list[Frame] = field(default_factory=list)
    language: Literal["python", "java", "go", "node", "unknown"] = "unknown"
    cause: ExceptionInfo | None = None


@dataclass(slots=True)
class Event:
    """A decoded log event: one line, or several lines assembled into one (a stack trace)."""

    timestamp: float  # epoch seconds: from the log when it has one, else the received time
    level: Level
    message: str
    raw: str
    source: str
    stream: str
    offset: int
    end: int
    service: str = ""
    logger: str = ""
    exception: ExceptionInfo | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    lines: int = 1  # records that make up this event
    has_timestamp: bool = False  # False when the timestamp was taken from the received time
    format: str = "plain"  # json | logfmt | plain


@dataclass(slots=True)
class Sample:
    """A kept example of a cluster: the (redacted) message and the values at its wildcards."""

    timestamp: float
    service: str
    message: str
    params: tuple[str, ...] = ()
    attributes: dict[str, Any] | None = None  # the event's structured fields (a reference, not a copy)

    def display(self, limit: int = 400) -> str:
        """The message with the event's scalar fields (``status=502 path=/api``): what a sample says."""
        if not self.attributes:
            return self.message
        parts = [self.message]
        size = len(self.message)
        for key, value in self.attributes.items():
            if isinstance(value, dict | list) or value is None:
                continue
            part = f"{key}={value}"
            if size + len(part) + 1 > limit:
                break
            parts.append(part)
            size += len(part) + 1
        return " ".join(parts)


@dataclass(slots=True)
class Cluster:
    """A group of events sharing a template or a stack-trace fingerprint.

    ``id`` is a stable hash of what the cluster was created from, so every process that sees the same
    template computes the same id.
    """

    id: str
    template: str
    kind: Literal["template", "trace"]
    level: Level
    count: int
    first_seen: float
    last_seen: float
    services: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    exception: ExceptionInfo | None = None
    warn_count: int = 0  # events at WARNING or above


class Checkpoint:
    """A barrier that flows behind the records it covers.

    ``positions`` maps ``stream`` to the position to commit for one source; a stage that still holds
    records of a stream (the multi-line assembler) lowers that stream's position to what it holds.
    """

    __slots__ = ("final", "positions", "source")

    def __init__(self, source: str, positions: dict[str, int], final: bool = False) -> None:
        self.source = source
        self.positions = positions
        self.final = final

    def __repr__(self) -> str:
        return f"Checkpoint({self.source!r}, {self.positions!r}, final={self.final})"


# --- what leaves the process -------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FrameOut(_Frozen):
    function: str
    module: str = ""
    lineno: int | None = None
    in_app: bool = True


class ExceptionOut(_Frozen):
    type: str
    message: str
    language: str = "unknown"
    frames: list[FrameOut] = Field(default_factory=list)
    cause: ExceptionOut | None = None

    @classmethod
    def of(cls, exc: ExceptionInfo) -> ExceptionOut:
        return cls(
            type=exc.type,
            message=exc.message,
            language=exc.language,
            frames=[FrameOut(function=f.function, module=f.module, lineno=f.lineno, in_app=f.in_app)
                    for f in exc.frames],
            cause=cls.of(exc.cause) if exc.cause is not None else None,
        )


class SampleOut(_Frozen):
    timestamp: float
    service: str
    message: str
    params: list[str] = Field(default_factory=list)


class Summary(_Frozen):
    """What the engineer reads: from a model, or the deterministic model-free text (labelled so)."""

    source: Literal["model-free", "llm"]
    title: str
    text: str
    likely_cause: str = ""
    fix_steps: list[str] = Field(default_factory=list)
    severity: str = ""
    confidence: float | None = None
    related: list[str] = Field(default_factory=list)
    partial: bool = False
    model: str = ""


# new: a cluster worth announcing appeared; summary: the model's answer arrived; spike: its rate jumped
# against its own baseline; variant: a new template/message variant joined it; repeat: still firing
# after repeat_interval; resolved: quiet for the resolve period.
FindingKind = Literal["new", "summary", "spike", "variant", "repeat", "resolved"]


class Finding(_Frozen):
    """A cluster worth telling someone about. ``id`` is the cluster id; higher ``version`` = update."""

    id: str
    version: int
    kind: FindingKind
    created_at: float
    template: str
    cluster_kind: Literal["template", "trace"]
    level: str
    service: str
    services: dict[str, int]
    count: int
    first_seen: float
    last_seen: float
    samples: list[SampleOut]
    exception: ExceptionOut | None = None
    summary: Summary | None = None

    @classmethod
    def of(cls, cluster: Cluster, *, version: int, kind: FindingKind, created_at: float,
           summary: Summary | None = None) -> Finding:
        service = max(cluster.services, key=lambda s: cluster.services[s]) if cluster.services else ""
        return cls(
            id=cluster.id,
            version=version,
            kind=kind,
            created_at=created_at,
            template=cluster.template,
            cluster_kind=cluster.kind,
            level=cluster.level.name,
            service=service,
            services=dict(cluster.services),
            count=cluster.count,
            first_seen=cluster.first_seen,
            last_seen=cluster.last_seen,
            samples=cls.samples_of(cluster),
            exception=ExceptionOut.of(cluster.exception) if cluster.exception else None,
            summary=summary,
        )

    @staticmethod
    def samples_of(cluster: Cluster) -> list[SampleOut]:
        """The cluster's samples as a finding carries them."""
        return [SampleOut(timestamp=s.timestamp, service=s.service, message=s.display(), params=list(s.params))
                for s in cluster.samples]
