"""Decode one raw record into an :class:`Event`: JSON, logfmt, or a plain line with a known prefix.

This is the hot path, so the decoder dispatches on the first character before trying any regex,
keeps every regex precompiled, and takes fast paths for the common case (valid UTF-8, printable text).
It never raises: whatever the bytes, the caller gets an Event (or None for a blank line, counted as
dropped "blank").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from triage.accounting import Counters
from triage.model import Event, ExceptionInfo, Level, Record
from triage.parsing.traces import parse_trace

MAX_ATTR_KEYS: Final = 64
MAX_ATTR_CHARS: Final = 1024

_CONTROL_MSG = {i: f"\\x{i:02x}" for i in range(32)} | {9: " ", 10: "\\n", 13: "\\r", 127: "\\x7f"}
_CONTROL_RAW = {i: f"\\x{i:02x}" for i in range(32)} | {9: "\t", 127: "\\x7f"}


def _clean_message(s: str) -> str:
    """Keep NUL and other control characters out of a message (visible escapes instead)."""
    if s.isprintable():
        return s
    s = s.replace("\t", " ")  # mostly the only one: two C-speed passes beat a translate() by table
    return s if s.isprintable() else s.translate(_CONTROL_MSG)


def _clean_raw(s: str) -> str:
    """Like :func:`_clean_message`, but tabs stay (Go and Java frames are tab-indented)."""
    if s.isprintable() or ("\t" in s and s.replace("\t", "").isprintable()):
        return s
    return s.translate(_CONTROL_RAW)


# --- timestamps ----------------------------------------------------------------------------------------

_MONTHS: Final = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def _epoch_number(n: float) -> float | None:
    """Epoch as a number: seconds, milliseconds, microseconds or nanoseconds, told apart by size."""
    if n != n or n <= 0:  # NaN or not positive
        return None
    if n > 1e17:
        return n / 1e9
    if n > 1e14:
        return n / 1e6
    if n > 1e11:
        return n / 1e3
    return float(n)


_EPOCH_NAIVE: Final = datetime(1970, 1, 1)


def _iso_timestamp(value: str) -> float | None:
    """An ISO-8601 string (``YYYY-MM-DD...``) as epoch seconds; without a zone it is taken as UTC."""
    try:
        dt = datetime.fromisoformat(value if value[-1] != "z" else value[:-1] + "Z")
    except ValueError:
        return None
    if dt.tzinfo is None:
        # The same float as dt.replace(tzinfo=UTC).timestamp() (which subtracts the aware epoch), without
        # the copy that costs more than the parse.
        return (dt - _EPOCH_NAIVE).total_seconds()
    try:
        return dt.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def parse_timestamp(value: object) -> float | None:
    """Parse a timestamp as loggers write it (ISO-8601, epoch number or string, GCP {seconds,nanos}).

    Timestamps without a zone are taken as UTC. Returns None when the value is not a timestamp.
    """
    if isinstance(value, str):
        if not value:
            return None
        if value[0].isdigit() and len(value) >= 10 and value[4:5] == "-":
            return _iso_timestamp(value)
        try:
            return _epoch_number(float(value))
        except (ValueError, OverflowError):
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return _epoch_number(float(value))
        except OverflowError:
            return None
    if isinstance(value, dict):
        secs = value.get("seconds", value.get("epochSecond"))
        if isinstance(secs, int | float | str) and not isinstance(secs, bool):
            try:
                nanos = value.get("nanos", value.get("nanoOfSecond", 0))
                return float(secs) + (float(nanos) / 1e9 if isinstance(nanos, int | float) else 0.0)
            except (ValueError, OverflowError):
                return None
    return None


def _ts_year_less(month: int, day: int, hms: str, frac: str, received: float) -> float | None:
    """A timestamp without a year (syslog, klog): the year of ``received``, or the year before when
    that would put it more than a day in the future (a December line read in January)."""
    try:
        year = datetime.fromtimestamp(received, UTC).year
        h, m, s = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
        ts = datetime(year, month, day, h, m, s, tzinfo=UTC).timestamp()
        if ts > received + 86400:
            ts = datetime(year - 1, month, day, h, m, s, tzinfo=UTC).timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    if frac:
        ts += float("0." + frac)
    return ts


# --- service from the path ----------------------------------------------------------------------------

_ROTATION = re.compile(r"(?:[._-]\d{4}-?\d{2}-?\d{2}(?:[T_-]?\d{2,6})?|\.\d+)$")
_EXTENSIONS: Final = (".log", ".txt", ".json", ".jsonl", ".out", ".err")


def service_from_path(path: str) -> str:
    """``/var/log/checkout.log.1.gz`` -> ``checkout``: basename without compression, rotation, extension."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    for _ in range(4):
        before = name
        for ext in (".gz", ".bz2", ".xz", ".zst"):
            if name.endswith(ext):
                name = name[: -len(ext)]
        name = _ROTATION.sub("", name)
        for ext in _EXTENSIONS:
            if name.endswith(ext) and len(name) > len(ext):
                name = name[: -len(ext)]
        if name == before:
            break
    return name


# --- JSON field names ------------------------------------------------------------------------------------

_TS_KEYS: Final = ("@timestamp", "timestamp", "time", "ts", "@t", "t", "date", "datetime", "eventTime",
                   "asctime", "created")
_LEVEL_KEYS: Final = ("level", "lvl", "severity", "@l", "log.level", "levelname", "loglevel", "log_level",
                      "levelName", "Level", "status")
_MSG_KEYS: Final = ("message", "msg", "@m", "event", "textPayload", "log", "Message", "@mt", "text")
_LOGGER_KEYS: Final = ("logger", "logger_name", "log.logger", "loggerName", "name", "SourceContext",
                       "logName")
_SERVICE_KEYS: Final = ("service", "service.name", "serviceName", "service_name", "app", "application",
                        "app_name", "kubernetes.container_name", "kubernetes.labels.app",
                        "serviceContext.service", "resource.labels.service_name", "k8s.container.name",
                        "container_name")
_STACK_KEYS: Final = ("stack_trace", "stacktrace", "exception", "@x", "err.stack", "error.stack_trace",
                      "error.stack", "exc_info", "stack", "traceback", "exception.stacktrace")
_ERR_TYPE_KEYS: Final = ("err.type", "error.type", "error.kind", "exception.type", "errorType")
_ERR_MSG_KEYS: Final = ("err.message", "error.message", "exception.message", "errorMessage", "error")


# Roles, in this order (as the slots of _Shape): ts, level, msg, logger, service, stack, error type and
# error message.
_ROLES: dict[str, tuple[int, int]] = {}  # field name (flat or dotted) -> (role, priority)
for _role, _keys in enumerate((_TS_KEYS, _LEVEL_KEYS, _MSG_KEYS, _LOGGER_KEYS, _SERVICE_KEYS, _STACK_KEYS,
                               _ERR_TYPE_KEYS, _ERR_MSG_KEYS)):
    for _prio, _key in enumerate(_keys):
        _ROLES.setdefault(_key, (_role, _prio))
_NO_NEST = frozenset({"@timestamp", "timestamp", "time", "ts", "@t", "t", "date", "datetime"})
#: objects whose members we look into: every proper prefix of a dotted name above
_PARENTS = frozenset(k.rsplit(".", i)[0] for k in _ROLES for i in range(1, k.count(".") + 1))

Candidate = tuple[int, Any, str]  # (priority, where the value is, top-level key it belongs to)

_NEST_KEYS = _PARENTS - _NO_NEST
_SCALARS: Final = frozenset({int, float, bool, type(None)})  # JSON values kept as attributes as they are
_MAX_SHAPES: Final = 1024


def _by_priority(c: Candidate) -> int:
    return c[0]


class _Shape:
    """Which fields of a JSON object may fill which role of an event, each role's candidates in priority
    order, and where to find their values.

    For a flat object this depends only on its keys, so it is computed once per key set (a stream has a
    handful) and the per-record work is direct lookups: the values are the object itself and a
    candidate's "where" is its key. ``taken`` and ``attrs`` then also precompute the attributes for the
    common case where the first candidate of every role is the one used. An object with a nested member
    that holds role fields (ECS ``log: {level: ...}``), or whose key set is seen for the first time, gets
    a one-off shape over the list of the values found instead.
    """

    __slots__ = ("attrs", "emsg", "etype", "level", "logger", "msg", "nest", "serilog_info", "service",
                 "stack", "taken", "ts")

    def __init__(self, found: list[list[Candidate]], serilog_info: bool) -> None:
        for c in found:
            if len(c) > 1:
                c.sort(key=_by_priority)  # stable: equal priorities (flat and nested) keep object order
        self.ts, self.level, self.msg, self.logger, self.service, self.stack, self.etype, self.emsg = found
        self.serilog_info = serilog_info  # "@t" without "@l"
        self.nest: tuple[str, ...] = ()  # keys that, holding an object, make this flat shape not apply
        self.taken: frozenset[str] = frozenset()
        self.attrs: tuple[tuple[str, str], ...] | None = None  # (key, attribute name); None: per record

    @classmethod
    def of_keys(cls, keys: tuple[str, ...]) -> _Shape:
        """The shape shared by flat objects with these keys (to cache)."""
        found: list[list[Candidate]] = [[], [], [], [], [], [], [], []]
        roles = _ROLES
        for k in keys:
            r = roles.get(k)
            if r is not None:
                found[r[0]].append((r[1], k, k))
        shape = cls(found, "@t" in keys and "@l" not in keys)
        shape.nest = tuple(k for k in keys if k in _NEST_KEYS)
        shape.taken = frozenset(c[0][2] for c in found if c)
        rest = tuple((k, k if len(k) <= 128 else k[:128]) for k in keys if k not in shape.taken)
        if len(rest) <= MAX_ATTR_KEYS:  # else the cut at MAX_ATTR_KEYS is left to the general loop
            shape.attrs = rest
        return shape

    @classmethod
    def of(cls, obj: dict[str, Any]) -> tuple[_Shape, list[Any]]:
        """The shape of this one object, nested members looked into, and the values it points at."""
        found: list[list[Candidate]] = [[], [], [], [], [], [], [], []]
        values: list[Any] = []
        for k, v in obj.items():
            if type(v) is dict and k in _NEST_KEYS:
                _nested(found, values, k, k, v, 0)
                continue
            r = _ROLES.get(k)
            if r is not None:
                found[r[0]].append((r[1], len(values), k))
                values.append(v)
        return cls(found, "@t" in obj and "@l" not in obj), values


def _nested(found: list[list[Candidate]], values: list[Any], top: str, prefix: str, obj: dict[str, Any],
            depth: int) -> None:
    for k, v in obj.items():
        name = f"{prefix}.{k}"
        if type(v) is dict and depth < 2 and name in _PARENTS:
            _nested(found, values, top, name, v, depth + 1)
            continue
        r = _ROLES.get(name)
        if r is not None:
            found[r[0]].append((r[1], len(values), top))
            values.append(v)


def _bounded(value: Any) -> Any:
    """A JSON-safe value of bounded size (long strings cut, big containers kept as a cut JSON string)."""
    if isinstance(value, str):
        return value if len(value) <= MAX_ATTR_CHARS else value[:MAX_ATTR_CHARS] + "…"
    if isinstance(value, dict | list):
        try:
            text = orjson.dumps(value).decode()
        except (TypeError, orjson.JSONEncodeError):
            return None
        return value if len(text) <= MAX_ATTR_CHARS else text[:MAX_ATTR_CHARS] + "…"
    return value


# --- logfmt -----------------------------------------------------------------------------------------------

_LOGFMT_PAIR = re.compile(r'([A-Za-z_@][\w.@/-]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_LOGFMT_KEYS: Final = frozenset({"msg", "message", "level", "lvl", "ts", "time", "t"})


def _parse_logfmt(text: str) -> dict[str, Any] | None:
    """Parse ``k=v k2="q v"``; None unless it is mostly pairs and has a msg/level/time key."""
    pairs = _LOGFMT_PAIR.findall(text)
    if len(pairs) < 2:
        return None
    out: dict[str, Any] = {}
    covered = 0
    for k, v in pairs:
        covered += len(k) + len(v) + 2
        if v[:1] == '"':
            v = v[1:-1]
            if "\\" in v:
                v = v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        out[k] = v
    if covered < 0.7 * len(text) or _LOGFMT_KEYS.isdisjoint(out):
        return None
    return out


# --- plain prefixes ----------------------------------------------------------------------------------------

_LEVEL_WORD = (r"TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRIT|CRITICAL|FATAL|SEVERE|PANIC|ALERT|EMERG"
               r"|trace|debug|info|notice|warn|warning|error|err|crit|critical|fatal|alert|emerg"
               r"|Trace|Debug|Info|Notice|Warn|Warning|Error|Critical|Fatal")
_ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?: ?(?:Z|[+-]\d{2}:?\d{2}))?)[\]\s|]\s*"
)
_SPRING = re.compile(r"\s*([A-Za-z]+)\s+(\d+)\s+---\s+(?:\[[^\]]*\]\s+)?\[\s*([^\]]*)\]\s+(\S+)\s*:\s?(.*)", re.S)
_LOG4J = re.compile(r"\[([^\]]*)\]\s+([A-Za-z]+)\s+(\S+)\s+-\s?(.*)", re.S)
_LOG4J_B = re.compile(r"([A-Za-z]+)\s+\[([^\]]*)\]\s+(\S+)\s+-\s?(.*)", re.S)
_PY_ASCTIME = re.compile(r"-\s(\S+)\s-\s([A-Za-z]+)\s-\s?(.*)", re.S)
_LEVEL_LEAD = re.compile(r"[\[<]?(" + _LEVEL_WORD + r")[\]>]?(?::\s*|\s+-\s+|\s+|$)(.*)", re.S)
_LEVEL_ANY = re.compile(
    r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|CRIT|CRITICAL|FATAL|SEVERE|PANIC)\b"
    r"|\[(trace|debug|info|notice|warn|warning|error|err|crit|critical|fatal|alert|emerg)\]"
)
_SLASH_TS = re.compile(r"(\d{4})/(\d{2})/(\d{2}) (\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))? ")
_NGINX = re.compile(r"\[(\w+)\] (\d+)#(\d+): (?:\*\d+ )?(.*)", re.S)
_APACHE = re.compile(
    r"\[\w{3} (\w{3}) (\d{1,2}) (\d{2}:\d{2}:\d{2})(?:\.(\d+))? (\d{4})\] \[(?:([\w-]+):)?(\w+)\] "
    r"(?:\[pid (\d+)(?::tid \d+)?\] )?(?:\[client [^\]]*\] )?(.*)", re.S)
_BRACKET_ISO = re.compile(r"\[(\d{4}-\d{2}-\d{2}[T ][^\]]+)\]\s*(.*)", re.S)
_SYSLOG3164 = re.compile(
    r"(?:<(\d{1,3})>)?([A-Z][a-z]{2}) ([ \d]\d) (\d{2}:\d{2}:\d{2}) (\S+) ([^:\[\s]+)(?:\[(\d+)\])?: ?(.*)",
    re.S)
_SYSLOG5424 = re.compile(
    r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|(?:\[(?:[^\]\\]|\\.)*\])+) ?(.*)", re.S)
_KLOG = re.compile(r"([IWEF])(\d{2})(\d{2}) (\d{2}:\d{2}:\d{2})\.(\d{6})\s+(\d+) ([^:\]\s]+:\d+)\] ?(.*)", re.S)
_PY_DEFAULT = re.compile(r"(CRITICAL|ERROR|WARNING|INFO|DEBUG|NOTSET):([^:\s]*):(.*)", re.S)


# Enum members as module constants: ``Level.UNKNOWN`` is a class attribute lookup that costs ~60 ns on
# Python 3.11, several times per record on the paths below.
_UNKNOWN: Final = Level.UNKNOWN
_INFO: Final = Level.INFO

_LEVEL_CACHE: dict[str, Level] = {}


def _level_of(name: str) -> Level:
    """``Level.parse`` for strings, memoised (a handful of distinct values per stream)."""
    level = _LEVEL_CACHE.get(name)
    if level is None:
        level = Level.parse(name)
        if len(_LEVEL_CACHE) < 1024:
            _LEVEL_CACHE[name] = level
    return level


class _Parsed:
    """What a line parser found; a plain mutable bag (cheaper than a dict on the hot path)."""

    __slots__ = ("attributes", "digit_free", "exception", "fmt", "level", "logger", "message", "service", "ts",
                 "ts_text")

    def __init__(self, message: str, fmt: str) -> None:
        self.message = message
        self.fmt = fmt
        self.ts: float | None = None
        # For the repeat-shape lane (triage.fastlane): the ISO text the timestamp was parsed from, and
        # whether no decision of this parse depended on digit values (a numeric level, say).
        self.ts_text: str | None = None
        self.digit_free = True
        self.level = _UNKNOWN
        self.service = ""
        self.logger = ""
        self.exception: ExceptionInfo | None = None
        self.attributes: dict[str, Any] = {}


class Decoder:
    """Decode records into events; configured once, then called per record.

    ``decoder(record)`` returns an :class:`Event`, or None for a blank record (counted ``blank``).
    Counts ``decoded`` per event, ``invalid_utf8`` and ``truncated`` as marks (the event still goes on).
    """

    __slots__ = ("_counters", "_last_ts", "_max", "_seen_keys", "_service_cache", "_shapes", "plan")

    def __init__(self, counters: Counters, *, max_line_bytes: int = 65536) -> None:
        self._counters = counters
        self._max = max(1, max_line_bytes)
        self._service_cache: dict[str, str] = {}
        # The last timestamp seen per stream: a line without one (a Go panic, a bare trace) happened
        # right after it, which is truer than the time we read it (and makes replays reproducible).
        self._last_ts: dict[str, float] = {}
        self._shapes: dict[tuple[str, ...], _Shape] = {}  # JSON key set -> its field roles
        self._seen_keys: set[tuple[str, ...]] = set()  # JSON key sets seen once (not cached yet)
        # What the parser found for the latest record (None for a blank one): the repeat-shape lane
        # reads it to decide whether the record's shape can skip decoding next time.
        self.plan: _Parsed | None = None

    def __call__(self, record: Record) -> Event | None:
        try:
            return self._decode(record, True)
        except Exception:  # a bug here must not stop the stream: keep the line as a plain event
            self.plan = None
            self._counters.decoded += 1
            text = _clean_raw(bytes(record.data[: self._max]).decode("utf-8", "replace"))
            return Event(timestamp=record.received, level=Level.UNKNOWN, message=_clean_message(text),
                         raw=text, source=record.source, stream=record.stream, offset=record.offset,
                         end=record.end, service=self._fallback_service(record))

    # -- per record --------------------------------------------------------------------------------

    def event_of(self, record: Record) -> Event:
        """The event of a record of a known shape, decoded again: nothing counted, no stream state moved."""
        event = self._decode(record, False)
        if event is None:
            raise ValueError("a record of a known shape is never blank")
        return event

    def set_last_timestamp(self, stream: str, ts: float) -> None:
        """The stream's latest timestamp, for records the repeat-shape lane took past this decoder."""
        self._last_ts[stream] = ts

    def fallback_service(self, record: Record) -> str:
        """The service of a record whose text names none (its source's attributes, path or name)."""
        return self._fallback_service(record)

    def _decode(self, record: Record, count: bool) -> Event | None:
        data = record.data
        cut = record.truncated if record.truncated > 0 else 0
        if len(data) > self._max:
            keep = self._max
            while keep > 0 and keep > self._max - 4 and (data[keep] & 0xC0) == 0x80:
                keep -= 1  # do not split a UTF-8 sequence (that would look like invalid input)
            cut += len(data) - keep
            data = data[:keep]
        try:
            text = data.decode()
        except UnicodeDecodeError:
            text = bytes(data).decode("utf-8", "replace")
            self._counters.invalid_utf8 += 1
        if text[-1:] in ("\n", "\r"):
            text = text.rstrip("\r\n")
        if not text or (text[0].isspace() and not text.strip()):
            if cut:  # a blank-looking head of a huge line still carries bytes: keep it
                text = ""
            else:
                self.plan = None
                self._counters.drop("blank")
                return None

        p = self._parse(text, record) if text else _Parsed("", "plain")
        self.plan = p
        message = p.message
        if text.isprintable():
            raw = text
            if message is not text and not message.isprintable():
                message = _clean_message(message)
        else:
            raw = _clean_raw(text)
            message = _clean_message(message)
        if cut:
            marker = f" …[truncated {cut} bytes]"
            raw += marker
            message += marker
            self._counters.truncated += 1
        stream = record.stream
        ts = p.ts
        last_ts = self._last_ts
        if count:
            if ts is not None:
                if len(last_ts) >= 4096 and stream not in last_ts:
                    last_ts.clear()  # bounded: only a huge number of streams can get here
                last_ts[stream] = ts
            self._counters.decoded += 1
        # Positional, in the order of Event's fields: keywords cost ~0.4 µs per event on this path.
        return Event(
            ts if ts is not None else last_ts.get(stream, record.received),  # timestamp
            p.level,
            message,
            raw,
            record.source,
            stream,
            record.offset,
            record.end,
            p.service or self._fallback_service(record),  # service
            p.logger,
            p.exception,
            p.attributes,
            1,  # lines
            ts is not None,  # has_timestamp
            p.fmt,  # format
        )

    def _fallback_service(self, record: Record) -> str:
        attrs = record.attributes
        if attrs:
            s = attrs.get("service")
            if s:
                return s
        path = record.path
        if path:
            cached = self._service_cache.get(path)
            if cached is None:
                cached = service_from_path(path)
                if len(self._service_cache) >= 4096:
                    self._service_cache.clear()
                self._service_cache[path] = cached
            if cached:
                return cached
        return record.source

    def _parse(self, text: str, record: Record) -> _Parsed:
        c = text[0]
        if c == "{" or (c in " \t" and text.lstrip()[:1] == "{"):
            p = self._parse_json(text)
            if p is not None:
                return p
            return _Parsed(text, "plain")
        if "=" in text and (c.isalpha() or c == "_"):
            fields = _parse_logfmt(text)
            if fields is not None:
                p = _Parsed("", "logfmt")
                self._map_fields(fields, p, text)
                return p
        return self._parse_plain(text, record.received)

    # -- JSON ------------------------------------------------------------------------------------------

    def _parse_json(self, text: str) -> _Parsed | None:
        try:
            obj = orjson.loads(text)
        except (orjson.JSONDecodeError, RecursionError, ValueError):
            return None
        if not isinstance(obj, dict):
            return None
        p = _Parsed("", "json")
        self._map_fields(obj, p, text)
        return p

    def _map_fields(self, obj: dict[str, Any], p: _Parsed, text: str) -> None:
        """Map the common field names of structlog, Logback/Logstash, Bunyan/Pino, Zap, Serilog, ECS,
        GCP, AWS and Docker onto the event; whatever is left becomes bounded attributes."""
        keys = tuple(obj)
        shape = self._shapes.get(keys)
        values: Any = obj
        if shape is None:
            shape, values = self._new_shape(keys, obj)
        else:
            for k in shape.nest:
                if type(obj[k]) is dict:
                    shape, values = _Shape.of(obj)
                    break
        used: set[str] = set()
        ts: float | None = None
        first = True
        for _, where, top in shape.ts:
            v = values[where]
            ts = parse_timestamp(v)
            if ts is not None:
                used.add(top)
                if first and type(v) is str and v[4:5] == "-":
                    p.ts_text = v
                break
            first = False
        p.ts = ts
        level = _UNKNOWN
        for _, where, top in shape.level:
            v = values[where]
            if type(v) is str:
                level = _LEVEL_CACHE.get(v) or _level_of(v)  # no call when cached (UNKNOWN is falsy)
                if not v.isalpha():
                    p.digit_free = False
            elif not isinstance(v, dict | list):
                level = Level.parse(v)
                p.digit_free = False
            if level is not _UNKNOWN:
                used.add(top)
                break
        if level is _UNKNOWN and shape.serilog_info:
            level = _INFO  # Serilog compact leaves out @l for Information
        p.level = level
        message = ""
        for _, where, top in shape.msg:
            v = values[where]
            if type(v) is str:
                message = v
                used.add(top)
                if top == "@mt" and "{" in v:
                    message = _render_template(v, obj)
                break
        for _, where, top in shape.logger:
            v = values[where]
            if type(v) is str:
                p.logger = v
                used.add(top)
                break
        for _, where, top in shape.service:
            v = values[where]
            if type(v) is str and v:
                p.service = v
                used.add(top)
                break
        if shape.stack or shape.etype or shape.emsg:
            self._exception(shape, values, p, used)
        if message.endswith("\n"):
            message = message.rstrip("\n")  # Docker json-file "log" values
        if "\n" in message:
            head, _, rest = message.partition("\n")
            if p.exception is None:
                exc = parse_trace(rest)
                if exc is not None:
                    p.exception = exc
                    message = head
        p.message = message if message else (text if len(text) <= MAX_ATTR_CHARS else text[:MAX_ATTR_CHARS])
        if shape.attrs is not None and used == shape.taken:
            if shape.attrs:  # the common case: the attribute keys are known, only values to bound
                attrs: dict[str, Any] = {}
                for k, name in shape.attrs:
                    v = obj[k]
                    t = type(v)
                    if t is str:
                        if len(v) > MAX_ATTR_CHARS:
                            v = v[:MAX_ATTR_CHARS] + "…"
                    elif t not in _SCALARS:
                        v = _bounded(v)
                    attrs[name] = v
                p.attributes = attrs
        elif len(obj) > len(used):
            attrs = {}
            for k, v in obj.items():
                if k in used:
                    continue
                if len(attrs) >= MAX_ATTR_KEYS:
                    attrs["truncated_attributes"] = True
                    break
                attrs[k if len(k) <= 128 else k[:128]] = _bounded(v)
            p.attributes = attrs

    def _new_shape(self, keys: tuple[str, ...], obj: dict[str, Any]) -> tuple[_Shape, Any]:
        """The shape of an object whose key set has no cached shape yet: a key set is cached the second
        time it is seen, so objects with ever-new keys (ids as keys) cost no more than a one-off shape."""
        seen = self._seen_keys
        if keys not in seen:
            if len(seen) >= _MAX_SHAPES:
                seen.clear()
            seen.add(keys)
            return _Shape.of(obj)
        if len(self._shapes) >= _MAX_SHAPES:
            self._shapes.clear()  # bounded: only many distinct repeating key sets get here
        shape = self._shapes[keys] = _Shape.of_keys(keys)
        for k in shape.nest:
            if type(obj[k]) is dict:
                return _Shape.of(obj)
        return shape, obj

    @staticmethod
    def _exception(shape: _Shape, values: Any, p: _Parsed, used: set[str]) -> None:
        exc: ExceptionInfo | None = None
        for _, where, top in shape.stack:
            v = values[where]
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                v = "".join(x if x.endswith("\n") else x + "\n" for x in v)  # exc_info as a list of lines
            if isinstance(v, str) and v:
                exc = parse_trace(v)
                used.add(top)
                break
        etype = emsg = ""
        for _, where, top in shape.etype:
            v = values[where]
            if type(v) is str:
                etype = v
                used.add(top)
                break
        for _, where, top in shape.emsg:
            v = values[where]
            if type(v) is str:
                emsg = v
                used.add(top)
                break
        if exc is not None:
            if not exc.type and etype:
                exc.type = etype
            if not exc.message and emsg:
                exc.message = emsg
        elif etype:
            exc = ExceptionInfo(type=etype, message=emsg)
        p.exception = exc

    # -- plain ------------------------------------------------------------------------------------------

    def _parse_plain(self, text: str, received: float) -> _Parsed:
        c = text[0]
        p = _Parsed(text, "plain")
        if c.isdigit():
            m = _ISO.match(text)
            if m is not None:
                ts = m.group(1)
                if " " in ts[19:]:  # "12:00:00.123 +02:00": fromisoformat wants no space before the zone
                    ts = ts[:19] + ts[19:].replace(" ", "")
                p.ts = _iso_timestamp(ts)  # the pattern guarantees the ISO date prefix
                p.ts_text = ts
                self._after_timestamp(text[m.end():], p)
                return p
            if text[4:5] == "/":
                m = _SLASH_TS.match(text)
                if m is not None:
                    p.ts = _iso_timestamp(f"{m.group(1)}-{m.group(2)}-{m.group(3)}T{m.group(4)}"
                                           + (f".{m.group(5)[:6]}" if m.group(5) else ""))
                    rest = text[m.end():]
                    n = _NGINX.match(rest)
                    if n is not None:
                        p.level = _level_of(n.group(1))
                        p.message = n.group(4)
                        p.attributes = {"pid": int(n.group(2))}
                        return p
                    self._after_timestamp(rest, p)
                    return p
        elif c == "<":
            gt = text.find(">", 1, 5)
            if gt > 0 and text[gt + 1:gt + 3] == "1 ":
                m = _SYSLOG5424.match(text)
                if m is not None:
                    p.ts = parse_timestamp(m.group(2))
                    p.level = Level.parse(int(m.group(1)) & 7)
                    if m.group(4) != "-":
                        p.service = m.group(4)
                    p.message = m.group(8).lstrip("\ufeff")
                    attrs: dict[str, Any] = {}
                    if m.group(3) != "-":
                        attrs["host"] = m.group(3)
                    if m.group(5) != "-":
                        attrs["pid"] = m.group(5)
                    if m.group(6) != "-":
                        attrs["msgid"] = m.group(6)
                    if m.group(7) != "-":
                        attrs["structured_data"] = _bounded(m.group(7))
                    p.attributes = attrs
                    return p
            return self._syslog3164(text, p, received)
        elif c == "[":
            if text[1:2].isdigit():
                m = _BRACKET_ISO.match(text)
                if m is not None:
                    p.ts_text = m.group(1).replace(",", ".")
                    p.ts = _iso_timestamp(p.ts_text)
                    self._after_timestamp(m.group(2), p)
                    return p
            else:
                m = _APACHE.match(text)
                if m is not None:
                    month = _MONTHS.get(m.group(1))
                    if month is not None:
                        try:
                            dt = datetime(int(m.group(5)), month, int(m.group(2)), int(m.group(3)[0:2]),
                                          int(m.group(3)[3:5]), int(m.group(3)[6:8]), tzinfo=UTC)
                            p.ts = dt.timestamp() + (float("0." + m.group(4)) if m.group(4) else 0.0)
                        except (ValueError, OverflowError):
                            p.ts = None
                    p.level = _level_of(m.group(7))
                    p.message = m.group(9)
                    attrs = {}
                    if m.group(6):
                        attrs["module"] = m.group(6)
                    if m.group(8):
                        attrs["pid"] = int(m.group(8))
                    p.attributes = attrs
                    return p
        elif c.isupper():
            if c in "IWEF" and text[1:2].isdigit():
                m = _KLOG.match(text)
                if m is not None:
                    p.ts = _ts_year_less(int(m.group(2)), int(m.group(3)), m.group(4), m.group(5), received)
                    p.level = _level_of(m.group(1))
                    p.message = m.group(8)
                    p.attributes = {"caller": m.group(7)}
                    return p
            if text[1:3].islower() and text[3:4] == " ":
                q = self._syslog3164(text, p, received)
                if q.ts is not None:
                    return q
            m = _PY_DEFAULT.match(text)
            if m is not None:
                p.level = _level_of(m.group(1))
                p.logger = m.group(2)
                p.message = m.group(3)
                return p
        m = _LEVEL_LEAD.match(text)
        if m is not None and (m.group(1).isupper() or text[0] in "[<"):
            p.level = _level_of(m.group(1))
            p.message = m.group(2)
        return p

    def _syslog3164(self, text: str, p: _Parsed, received: float) -> _Parsed:
        m = _SYSLOG3164.match(text)
        if m is None:
            return p
        month = _MONTHS.get(m.group(2))
        if month is None:
            return p
        p.ts = _ts_year_less(month, int(m.group(3)), m.group(4), "", received)
        p.service = m.group(6)
        msg = m.group(8)
        p.message = msg
        attrs: dict[str, Any] = {"host": m.group(5)}
        if m.group(7):
            attrs["pid"] = int(m.group(7))
        p.attributes = attrs
        if m.group(1) is not None:
            p.level = Level.parse(int(m.group(1)) & 7)
        else:
            self._level_in(msg, p)
        return p

    def _after_timestamp(self, rest: str, p: _Parsed) -> None:
        """Parse what follows a leading timestamp: Spring Boot, log4j/Logback, Python asctime, or a level
        word somewhere in the header."""
        c = rest[:1]
        if c == "[":
            m = _LOG4J.match(rest)
            if m is not None and _level_of(m.group(2)) is not _UNKNOWN:
                p.attributes = {"thread": m.group(1)}
                p.level = _level_of(m.group(2))
                p.logger = m.group(3)
                p.message = m.group(4)
                return
        elif c == "-":
            m = _PY_ASCTIME.match(rest)
            if m is not None and _level_of(m.group(2)) is not _UNKNOWN:
                p.logger = m.group(1)
                p.level = _level_of(m.group(2))
                p.message = m.group(3)
                return
        elif c.isalpha() or c == " ":
            # The substring checks are necessary for the regexes and much cheaper than a failing match.
            m = _SPRING.match(rest) if "---" in rest else None
            if m is not None:
                p.level = _level_of(m.group(1))
                p.attributes = {"pid": int(m.group(2)), "thread": m.group(3).strip()}
                p.logger = m.group(4)
                p.message = m.group(5)
                return
            m = _LOG4J_B.match(rest) if "[" in rest else None
            if m is not None and _level_of(m.group(1)) is not _UNKNOWN:
                p.level = _level_of(m.group(1))
                p.attributes = {"thread": m.group(2)}
                p.logger = m.group(3)
                p.message = m.group(4)
                return
        m = _LEVEL_LEAD.match(rest)
        if m is not None:
            p.level = _level_of(m.group(1))
            p.message = m.group(2)
            return
        p.message = rest
        self._level_in(rest, p)

    @staticmethod
    def _level_in(text: str, p: _Parsed) -> None:
        """A level word in the header (the first 80 characters): ``ERROR``, ``WARN``, ``[error]``."""
        m = _LEVEL_ANY.search(text, 0, 80)
        if m is not None:
            p.level = _level_of(m.group(1) or m.group(2))


_TEMPLATE_HOLE = re.compile(r"\{@?([\w.]+)(?:[:,][^}]*)?\}")


def _render_template(template: str, obj: dict[str, Any]) -> str:
    """Render a Serilog message template (``@mt``) with the event's properties."""
    def sub(m: re.Match[str]) -> str:
        v = obj.get(m.group(1))
        if v is None:
            return m.group(0)
        return v if isinstance(v, str) else orjson.dumps(v).decode()
    try:
        return _TEMPLATE_HOLE.sub(sub, template)
    except (TypeError, orjson.JSONEncodeError):
        return template


__all__: Final = ["Decoder", "parse_timestamp", "service_from_path"]
