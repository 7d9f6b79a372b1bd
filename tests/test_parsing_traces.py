"""parse_trace: Python, Java, Go and Node traces into ExceptionInfo with frames and causes."""

from __future__ import annotations

from pathlib import Path

from triage.parsing import parse_trace

DATA = Path(__file__).parent / "data" / "traces"


def trace_of(name: str, first: str, last: str) -> str:
    """The lines of a fixture from the first line starting with ``first`` to the one starting with ``last``."""
    lines = (DATA / name).read_text().splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith(first))
    j = max(n for n, ln in enumerate(lines) if ln.startswith(last))
    return "\n".join(lines[i:j + 1])


class TestJava:
    def test_spring_hikari_chain(self) -> None:
        """Outermost first, Caused by chain in order, Suppressed frames not mixed in, library frames marked."""
        exc = parse_trace(trace_of("java_spring_hikari.log", "org.springframework", "\t... 3 more"))
        assert exc is not None and exc.language == "java"
        assert exc.type == "org.springframework.jdbc.CannotGetJdbcConnectionException"
        assert [f.function for f in exc.frames][:3] == ["getConnection", "execute", "findOpenOrders"]
        assert len(exc.frames) == 7  # the Suppressed block's frames are not this exception's
        assert exc.frames[2].module == "com.example.shop.orders.OrderRepository" and exc.frames[2].lineno == 57
        assert [f.in_app for f in exc.frames] == [False, False, True, True, True, False, False]
        assert exc.frames[5].module == "jdk.internal.reflect.NativeMethodAccessorImpl" and exc.frames[5].lineno is None
        cause = exc.cause
        assert cause is not None and cause.type == "java.sql.SQLTransientConnectionException"
        assert cause.message.startswith("HikariPool-1 - Connection is not available")
        assert cause.cause is not None and cause.cause.type == "org.postgresql.util.PSQLException"
        assert cause.cause.cause is None and len(cause.cause.frames) == 3

    def test_exception_in_thread(self) -> None:
        """'Exception in thread' heads give the exception type and message."""
        exc = parse_trace('Exception in thread "main" java.lang.NullPointerException: x is null\n'
                          "\tat com.acme.Main.main(Main.java:5)")
        assert exc is not None and (exc.type, exc.message) == ("java.lang.NullPointerException", "x is null")
        assert exc.frames[0].in_app


class TestPython:
    def test_chained_last_printed_is_outermost(self) -> None:
        """For 'During handling...', the last printed exception is raised; the earlier one is its cause."""
        exc = parse_trace(trace_of("python_chained.log", "Traceback", "payments.errors"))
        assert exc is not None and exc.language == "python"
        assert (exc.type, exc.message) == ("payments.errors.PaymentError", "charge failed")
        assert [(f.function, f.lineno) for f in exc.frames] == [("run_job", 41), ("charge", 92)]
        assert exc.cause is not None and exc.cause.type == "requests.exceptions.ConnectionError"
        assert [f.in_app for f in exc.cause.frames] == [True, False, False]
        assert exc.cause.frames[-1].module.endswith("requests/adapters.py")

    def test_direct_cause_and_frozen(self) -> None:
        """'The above exception was the direct cause' chains too; <frozen ...> frames are not in-app."""
        text = ('Traceback (most recent call last):\n  File "<frozen importlib._bootstrap>", line 1, in _load\n'
                "KeyError: 'k'\n\nThe above exception was the direct cause of the following exception:\n\n"
                'Traceback (most recent call last):\n  File "/app/m.py", line 9, in load\n    raise X\n'
                "m.ConfigError")
        exc = parse_trace(text)
        assert exc is not None and (exc.type, exc.message) == ("m.ConfigError", "")
        assert exc.cause is not None and exc.cause.message == "'k'" and not exc.cause.frames[0].in_app


class TestGo:
    def test_panic_with_goroutines(self) -> None:
        """runtime errors get type runtime.Error; frames are the panicking goroutine's only."""
        exc = parse_trace(trace_of("go_panic.log", "panic:", "exit status"))
        assert exc is not None and exc.language == "go" and exc.type == "runtime.Error"
        assert exc.message == "runtime error: invalid memory address or nil pointer dereference"
        assert [f.function for f in exc.frames] == ["(*Store).Reserve", "(*Handler).reserve",
                                                    "HandlerFunc.ServeHTTP", "serverHandler.ServeHTTP",
                                                    "(*conn).serve", "(*Server).Serve"]
        assert exc.frames[0].module == "github.com/example/inventory/internal/store" and exc.frames[0].lineno == 118
        assert [f.in_app for f in exc.frames] == [True, True, False, False, False, False]

    def test_plain_panic_recovered(self) -> None:
        """A re-panic after [recovered] is the outermost; the recovered panic is its cause."""
        exc = parse_trace("panic: first [recovered]\n\tpanic: second\n\ngoroutine 1 [running]:\n"
                          "main.main()\n\t/app/main.go:9 +0x1d")
        assert exc is not None and (exc.type, exc.message) == ("panic", "second")
        assert exc.cause is not None and exc.cause.message == "first"
        assert exc.frames[0].function == "main" and exc.frames[0].module == "main"


class TestNode:
    def test_unhandled_rejection(self) -> None:
        """Node: preamble skipped, 'at async' frames parsed, node_modules and node: frames not in-app."""
        exc = parse_trace(trace_of("node_rejection.log", "node:internal", "Node.js"))
        assert exc is not None and exc.language == "node"
        assert (exc.type, exc.message) == ("Error", "connect ECONNREFUSED 10.0.3.7:6379")
        assert [(f.function, f.lineno, f.in_app) for f in exc.frames] == [
            ("TCPConnectWrap.afterConnect [as oncomplete]", 1555, False),
            ("RedisClient.connect", 412, False),
            ("loadSession", 27, True),
            ("<anonymous>", 88, True),
        ]

    def test_cause(self) -> None:
        """[cause]: chains the cause exception, with its own frames."""
        text = ("Error: request failed\n    at handler (/app/h.js:10:5)\n    at async run (/app/r.js:2:1) {\n"
                "  [cause]: TypeError: fetch failed\n      at fetch (node:internal/deps/undici:1:1)\n"
                "      ... 1 lines matching cause stack trace ...\n}")
        exc = parse_trace(text)
        assert exc is not None and exc.type == "Error" and len(exc.frames) == 2
        assert exc.cause is not None and (exc.cause.type, exc.cause.message) == ("TypeError", "fetch failed")
        assert exc.cause.frames[0].in_app is False


class TestNoTrace:
    def test_plain_text(self) -> None:
        """Text without a trace gives None."""
        assert parse_trace("just a line\nand another") is None
        assert parse_trace("") is None
