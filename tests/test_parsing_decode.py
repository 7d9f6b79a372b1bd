"""Decoder: JSON flavours, logfmt and plain prefixes map to timestamp/level/service/message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from triage.accounting import Counters
from triage.model import Event, Level, Record
from triage.parsing import Decoder, service_from_path

RECEIVED = datetime(2024, 3, 12, 15, 0, 0, tzinfo=UTC).timestamp()


def ts(s: str) -> float:
    return datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()


def rec(data: bytes | str, *, path: str = "", attributes: dict[str, str] | None = None, truncated: int = 0) -> Record:
    raw = data.encode() if isinstance(data, str) else data
    return Record(data=raw, source="src", stream="s", offset=10, end=10 + len(raw) + 1, received=RECEIVED,
                  path=path, attributes=attributes, truncated=truncated)


def decode(data: bytes | str | dict[str, Any], **kw: Any) -> Event:
    if isinstance(data, dict):
        data = orjson.dumps(data)
    ev = Decoder(Counters())(rec(data, **kw))
    assert ev is not None
    return ev


class TestJsonFlavours:
    def test_structlog(self) -> None:
        """structlog: event/level/timestamp/logger, exception string parsed into a trace."""
        ev = decode({"event": "payment failed", "level": "error", "timestamp": "2024-03-12T14:00:00.5Z",
                     "logger": "pay", "order": 7,
                     "exception": 'Traceback (most recent call last):\n  File "/app/x.py", line 3, in f\n'
                                  "    g()\nKeyError: 'x'"})
        assert (ev.message, ev.level, ev.logger, ev.format) == ("payment failed", Level.ERROR, "pay", "json")
        assert ev.timestamp == ts("2024-03-12T14:00:00.5") and ev.has_timestamp
        assert ev.exception is not None and ev.exception.type == "KeyError"
        assert ev.attributes == {"order": 7}

    def test_logstash_logback(self) -> None:
        """Logback/Logstash JSON: @timestamp, logger_name, thread_name, stack_trace."""
        ev = decode({"@timestamp": "2024-03-12T14:00:00.123+01:00", "message": "boom", "level": "WARN",
                     "logger_name": "c.e.Svc", "thread_name": "main",
                     "stack_trace": "java.lang.IllegalStateException: bad\n\tat c.e.Svc.run(Svc.java:10)\n"})
        assert ev.timestamp == ts("2024-03-12T13:00:00.123") and ev.level == Level.WARNING
        assert ev.logger == "c.e.Svc" and ev.attributes == {"thread_name": "main"}
        assert ev.exception is not None and ev.exception.type == "java.lang.IllegalStateException"
        assert ev.exception.frames[0].lineno == 10

    def test_bunyan_pino(self) -> None:
        """Bunyan/Pino: numeric level, time in ms, name, err.stack."""
        ev = decode({"level": 50, "time": 1710252000123, "name": "api", "msg": "db down", "pid": 3,
                     "err": {"type": "Error", "message": "ECONNREFUSED",
                             "stack": "Error: ECONNREFUSED\n    at connect (/app/db.js:3:9)"}})
        assert ev.level == Level.ERROR and ev.timestamp == pytest.approx(1710252000.123)
        assert ev.logger == "api" and ev.message == "db down"
        assert ev.exception is not None and ev.exception.language == "node"
        assert ev.exception.frames[0].module == "/app/db.js"

    def test_zap(self) -> None:
        """Zap: ts float seconds, caller kept, error string becomes the exception message."""
        ev = decode({"level": "error", "ts": 1710252000.25, "caller": "api/h.go:12", "msg": "save failed",
                     "error": "disk full", "stacktrace": "main.save\n\t/app/main.go:12\nmain.main\n\t/app/main.go:5"})
        assert ev.timestamp == pytest.approx(1710252000.25) and ev.level == Level.ERROR
        assert ev.attributes["caller"] == "api/h.go:12"
        assert ev.exception is not None and ev.exception.message == "disk full"
        assert [f.function for f in ev.exception.frames] == ["save", "main"]

    def test_serilog_compact(self) -> None:
        """Serilog compact: @t, @mt rendered, missing @l means Information, @x parsed."""
        ev = decode({"@t": "2024-03-12T14:00:00Z", "@mt": "User {UserId} logged in", "UserId": 42})
        assert ev.message == "User 42 logged in" and ev.level == Level.INFO
        ev = decode({"@t": "2024-03-12T14:00:00Z", "@m": "failed", "@l": "Error",
                     "@x": "System.InvalidOperationException: nope\n   at App.Run() in /src/App.cs:line 5"})
        assert ev.level == Level.ERROR and ev.message == "failed"

    def test_ecs_nested_and_dotted(self) -> None:
        """ECS: nested objects and flattened dotted keys both work."""
        nested = decode({"@timestamp": "2024-03-12T14:00:00Z", "message": "m", "log": {"level": "error"},
                         "service": {"name": "cart"}, "error": {"type": "IOError", "message": "eof"}})
        dotted = decode({"@timestamp": "2024-03-12T14:00:00Z", "message": "m", "log.level": "error",
                         "service.name": "cart", "error.type": "IOError", "error.message": "eof"})
        for ev in (nested, dotted):
            assert (ev.level, ev.service) == (Level.ERROR, "cart")
            assert ev.exception is not None and (ev.exception.type, ev.exception.message) == ("IOError", "eof")

    def test_gcp(self) -> None:
        """GCP: severity, textPayload, serviceContext.service, {seconds, nanos} timestamps."""
        ev = decode({"severity": "CRITICAL", "textPayload": "oom", "serviceContext": {"service": "render"},
                     "timestamp": {"seconds": 1710252000, "nanos": 500000000}})
        assert (ev.level, ev.message, ev.service) == (Level.CRITICAL, "oom", "render")
        assert ev.timestamp == pytest.approx(1710252000.5)

    def test_aws_lambda(self) -> None:
        """AWS Lambda JSON: level, message, timestamp, requestId kept as attribute."""
        ev = decode({"timestamp": "2024-03-12T14:00:00.000Z", "level": "ERROR", "requestId": "abc",
                     "message": "handler failed"})
        assert (ev.level, ev.message, ev.attributes) == (Level.ERROR, "handler failed", {"requestId": "abc"})

    def test_kubernetes_container_name(self) -> None:
        """kubernetes.container_name names the service."""
        ev = decode({"msg": "x", "level": "info", "kubernetes": {"container_name": "web"}})
        assert ev.service == "web"

    def test_message_with_embedded_trace(self) -> None:
        """A message carrying a trace after its first line: first line is the message, the rest the exception."""
        ev = decode({"message": "failed\nTraceback (most recent call last):\n  File \"a.py\", line 1, in <module>\n"
                                "ValueError: v", "level": "error"})
        assert ev.message == "failed" and ev.exception is not None and ev.exception.type == "ValueError"

    def test_big_attributes_are_bounded(self) -> None:
        """Long strings and big nested values are cut, and the number of keys is capped."""
        obj: dict[str, Any] = {"msg": "m", "big": "x" * 5000, "nested": {"a": ["y" * 3000]}}
        obj.update({f"k{i}": i for i in range(200)})
        ev = decode(obj)
        assert len(ev.attributes["big"]) <= 1025 and isinstance(ev.attributes["nested"], str)
        assert len(ev.attributes) <= 65 and ev.attributes["truncated_attributes"] is True

    @pytest.mark.parametrize("line", ["[1,2,3]", "42", '{"a": ', "{not json}", "[" * 10000,
                                      '{"a":' * 2000 + "1" + "}" * 2000])
    def test_non_object_json_is_plain(self, line: str) -> None:
        """A JSON line that is not an object, invalid, or too deep still yields a plain event."""
        ev = decode(line)
        assert ev.format == "plain" and ev.level == Level.UNKNOWN

    def test_nested_attribute_too_deep_to_serialise(self) -> None:
        """An object nested deeper than orjson can write back is kept bounded, not raised on."""
        ev = decode('{"msg":"m","deep":' + '{"a":' * 300 + "1" + "}" * 301)
        assert ev.format == "json" and ev.message == "m" and ev.attributes["deep"] is None


class TestLogfmt:
    def test_logfmt_fields(self) -> None:
        """logfmt: quoted values, ts/level/msg mapped, the rest as attributes."""
        ev = decode('ts=2024-03-12T14:00:00Z level=warn msg="cache miss storm" service=edge hits=3')
        assert ev.format == "logfmt" and ev.level == Level.WARNING and ev.message == "cache miss storm"
        assert ev.service == "edge" and ev.timestamp == ts("2024-03-12T14:00:00")
        assert ev.attributes == {"hits": "3"}

    def test_escaped_quotes(self) -> None:
        """Escaped quotes inside a quoted value are unescaped."""
        ev = decode(r'level=error msg="said \"no\"" err="x"')
        assert ev.message == 'said "no"'

    def test_text_with_an_equals_is_not_logfmt(self) -> None:
        """A sentence that merely contains key=value is not logfmt."""
        ev = decode("Retrying the request because the upstream said status=503 again")
        assert ev.format == "plain"


class TestPlainPrefixes:
    @pytest.mark.parametrize(
        ("line", "when", "level", "message"),
        [
            ("2024-03-12T14:00:00.123Z ERROR something broke", "2024-03-12T14:00:00.123", Level.ERROR, "something broke"),
            ("2024-03-12 14:00:00 WARN low disk", "2024-03-12T14:00:00", Level.WARNING, "low disk"),
            ("2024-03-12T14:00:00+02:00 [error] upstream gone", "2024-03-12T12:00:00", Level.ERROR, "upstream gone"),
            ("2024-03-12 14:00:00,123 [main] ERROR com.example.App - Request failed", "2024-03-12T14:00:00.123",
             Level.ERROR, "Request failed"),
            ("2024-03-12 14:00:00.123 ERROR 4121 --- [nio-8080-exec-7] c.e.Checkout : checkout failed",
             "2024-03-12T14:00:00.123", Level.ERROR, "checkout failed"),
            ("2024-03-12T14:00:00.123Z  INFO 4121 --- [shop] [           main] c.e.App : started",
             "2024-03-12T14:00:00.123", Level.INFO, "started"),
            ("2024-03-12 14:00:00,123 - payments.worker - WARNING - slow charge", "2024-03-12T14:00:00.123",
             Level.WARNING, "slow charge"),
            ("2024/03/12 14:00:00 [error] 31#0: *5 connect() failed (111)", "2024-03-12T14:00:00", Level.ERROR,
             "connect() failed (111)"),
            ("2024/03/12 14:00:00 listening on :8080", "2024-03-12T14:00:00", Level.UNKNOWN, "listening on :8080"),
            ("[Tue Mar 12 14:00:00.123456 2024] [core:error] [pid 123] AH00037: Symbolic link not allowed",
             "2024-03-12T14:00:00.123456", Level.ERROR, "AH00037: Symbolic link not allowed"),
            ("E0312 14:00:00.123456       1 controller.go:12] failed to sync", "2024-03-12T14:00:00.123456",
             Level.ERROR, "failed to sync"),
            ("[2024-03-12 14:00:00,5] WARN Cleaner: slow", "2024-03-12T14:00:00.5", Level.WARNING, "Cleaner: slow"),
        ],
    )
    def test_prefix(self, line: str, when: str, level: Level, message: str) -> None:
        """Each common prefix gives the timestamp (UTC when no zone), level and message."""
        ev = decode(line)
        assert ev.has_timestamp and ev.timestamp == pytest.approx(ts(when))
        assert (ev.level, ev.message, ev.format) == (level, message, "plain")

    def test_spring_logger(self) -> None:
        """Spring Boot lines give the logger and the thread."""
        ev = decode("2024-03-12 14:00:00.123 ERROR 4121 --- [nio-8080-exec-7] c.e.Checkout : checkout failed")
        assert ev.logger == "c.e.Checkout" and ev.attributes["thread"] == "nio-8080-exec-7"

    def test_python_default_format(self) -> None:
        """Python logging's default LEVEL:logger:msg."""
        ev = decode("ERROR:payments.worker:charge failed")
        assert (ev.level, ev.logger, ev.message, ev.has_timestamp) == (Level.ERROR, "payments.worker",
                                                                        "charge failed", False)
        assert ev.timestamp == RECEIVED

    def test_syslog_3164_with_pri(self) -> None:
        """RFC 3164 with PRI: severity from PRI, tag is the service, year from the received time."""
        ev = decode("<11>Mar 12 14:00:00 web-1 sshd[812]: Failed password for root")
        assert ev.level == Level.ERROR and ev.service == "sshd" and ev.message == "Failed password for root"
        assert ev.timestamp == ts("2024-03-12T14:00:00") and ev.attributes == {"host": "web-1", "pid": 812}

    def test_syslog_3164_without_pri(self) -> None:
        """RFC 3164 without PRI: the level comes from a level word in the message."""
        ev = decode("Mar  2 04:05:06 db-2 postgres: ERROR: relation missing")
        assert ev.service == "postgres" and ev.level == Level.ERROR
        assert ev.timestamp == ts("2024-03-02T04:05:06")

    def test_syslog_year_rollover(self) -> None:
        """A December line read in early January belongs to the previous year."""
        r = rec("<13>Dec 31 23:59:00 h app: x")
        r.received = datetime(2025, 1, 1, 0, 5, tzinfo=UTC).timestamp()
        ev = Decoder(Counters())(r)
        assert ev is not None and ev.timestamp == ts("2024-12-31T23:59:00")

    def test_syslog_5424(self) -> None:
        """RFC 5424: timestamp with zone, APP-NAME as service, structured data kept."""
        ev = decode('<165>1 2024-03-12T14:00:00.003Z host1 evntslog 99 ID47 [exampleSDID@32473 iut="3"] '
                    "\ufeffAn application event")
        assert (ev.service, ev.level, ev.message) == ("evntslog", Level.NOTICE, "An application event")
        assert ev.timestamp == ts("2024-03-12T14:00:00.003") and ev.attributes["msgid"] == "ID47"

    def test_unknown_line(self) -> None:
        """An unknown line is a plain event with level UNKNOWN and the whole line as message."""
        ev = decode("the quick brown fox")
        assert (ev.level, ev.message, ev.raw, ev.has_timestamp) == (Level.UNKNOWN, "the quick brown fox",
                                                                      "the quick brown fox", False)

    def test_level_word_in_header(self) -> None:
        """A level word anywhere in the header is picked up."""
        ev = decode("2024-03-12T14:00:00Z web-1 myapp ERROR cannot open socket")
        assert ev.level == Level.ERROR


class TestService:
    @pytest.mark.parametrize(
        ("path", "service"),
        [("/var/log/checkout.log.1.gz", "checkout"), ("/var/log/api.log", "api"),
         ("/logs/web-2024-01-01.log", "web"), ("/x/orders.2024-01-01.json.gz", "orders"), ("C:\\l\\svc.txt", "svc")],
    )
    def test_service_from_path(self, path: str, service: str) -> None:
        """The service is the path's basename without compression, rotation suffix and extension."""
        assert service_from_path(path) == service

    def test_precedence(self) -> None:
        """Line > record attribute > path > source."""
        assert decode('{"msg":"m","service":"line"}', attributes={"service": "attr"}, path="/p.log").service == "line"
        assert decode("x", attributes={"service": "attr"}, path="/p.log").service == "attr"
        assert decode("x", path="/var/log/p.log.2").service == "p"
        assert decode("x").service == "src"


class TestRobustness:
    def test_blank_lines_dropped(self) -> None:
        """Blank and whitespace-only records return None and count as dropped 'blank'."""
        c = Counters()
        d = Decoder(c)
        assert d(rec(b"")) is None and d(rec(b"  \t\r\n")) is None
        assert c.dropped["blank"] == 2 and c.decoded == 0

    def test_invalid_utf8(self) -> None:
        """Invalid UTF-8 is replaced, counted, and still decoded."""
        c = Counters()
        ev = Decoder(c)(rec(b"ERROR bad \xff\xfe bytes"))
        assert ev is not None and "\ufffd" in ev.message and ev.level == Level.ERROR
        assert (c.invalid_utf8, c.decoded) == (1, 1)

    def test_control_chars_kept_out_of_message(self) -> None:
        """NUL and control characters never reach the message."""
        ev = decode(b"a\x00b\x1bc\td")
        assert ev.message == "a\\x00b\\x1bc d" and ev.message.isprintable()

    def test_truncated_by_source(self) -> None:
        """A record the source already cut is marked and counted once."""
        c = Counters()
        ev = Decoder(c)(rec("ERROR long line", truncated=500))
        assert ev is not None and ev.message.endswith(" …[truncated 500 bytes]")
        assert ev.raw.endswith("…[truncated 500 bytes]") and c.truncated == 1

    def test_truncated_here(self) -> None:
        """A record over max_line_bytes is cut without splitting a UTF-8 character."""
        c = Counters()
        ev = Decoder(c, max_line_bytes=10)(rec("é" * 20))
        assert ev is not None and ev.message.startswith("é" * 5) and "\ufffd" not in ev.message
        assert ev.message.endswith("…[truncated 30 bytes]") and c.truncated == 1 and c.invalid_utf8 == 0

    def test_record_fields_copied(self) -> None:
        """source/stream/offset/end come from the record."""
        ev = decode("x")
        assert (ev.source, ev.stream, ev.offset, ev.end, ev.lines) == ("src", "s", 10, 12, 1)
