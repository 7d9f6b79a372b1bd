"""Stack-trace grammar for Python, Java/JVM, Go and Node.js.

Two users share this module: :func:`parse_trace` turns a whole trace into an :class:`ExceptionInfo`,
and the multi-line assembler asks :func:`line_kind` what one line is, so both agree on what a trace
line looks like. The grammar is line-based and forgiving: unknown lines are skipped, never raised on.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from triage.model import ExceptionInfo, Frame

# --- line kinds (small ints: the assembler compares them on the hot path) ----------------------------

NONE: Final = 0
PY_START: Final = 1  # Traceback (most recent call last):
PY_FILE: Final = 2  # File "x.py", line 3, in f
PY_CHAIN: Final = 3  # During handling of ... / The above exception was the direct cause ...
AT_FRAME: Final = 4  # Java "\tat a.B.c(B.java:1)" or Node "    at fn (/x.js:1:2)"
JAVA_CAUSE: Final = 5  # Caused by: / Suppressed:
JAVA_MORE: Final = 6  # ... 12 more / ... 3 common frames omitted
JAVA_START: Final = 7  # Exception in thread "main" ...
EXC_LINE: Final = 8  # java.lang.IllegalStateException: x / TypeError: x / Error: x
GO_START: Final = 9  # panic: ... / fatal error: ...
GO_GOROUTINE: Final = 10  # goroutine 1 [running]:
GO_FILE: Final = 11  # \t/app/main.go:12 +0x1d
GO_MISC: Final = 12  # [signal SIGSEGV ...] / created by ... / ...additional frames elided...
NODE_CAUSE: Final = 13  # [cause]: Error: x
NODE_MATCH: Final = 14  # ... 4 lines matching cause stack trace ...
NODE_PRE: Final = 15  # node:internal/process/promises:288 (the location line node prints first)
INDENTED: Final = 16  # any other line starting with whitespace
OTHER: Final = 17  # any other non-indented line

#: kinds that may start a trace on their own (a line with no head before it)
START_KINDS: Final = frozenset({PY_START, JAVA_START, EXC_LINE, GO_START, NODE_PRE})

_PY_FILE = re.compile(r'^\s+File "([^"]*)", line (\d+)(?:, in (.*))?\s*$')
_PY_CHAIN = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
_JAVA_FRAME = re.compile(r"^\s+at (?:[\w$.-]+/)*([\w$.<>\[\]/-]+)\.([\w$<>\[\]-]+)\(([^()]*)\)")
_NODE_FRAME = re.compile(r"^\s+at (?:async )?(?:new )?(?:(.+?) \((.+)\)|(.+))\s*$")
_JAVA_MORE = re.compile(r"^\s*\.\.\. \d+ (?:more|common frames omitted)")
_JAVA_START = re.compile(r'^Exception in thread "[^"]*" (.*)$')
# An exception line: ``pkg.Name: msg``, ``NameError: msg``, ``Error: msg``, ``Error [CODE]: msg``.
_EXC_LINE = re.compile(
    r"^(?:Uncaught )?((?:[A-Za-z_$][\w$]*\.)+[A-Za-z_$][\w$]*|[A-Za-z_$][\w$]*(?:Error|Exception|Throwable|Failure)"
    r"|Error)(?: \[[\w.-]+\])?(?::(?: (.*))?)?$"
)
_EXC_NAME_STRICT = re.compile(r"(?:Error|Exception|Throwable|Failure|Fault|Interrupt|Exit|Warning)$")
_GO_GOROUTINE = re.compile(r"^goroutine \d+ \[[^\]]*\]:\s*$")
_GO_FILE = re.compile(r"^\t(.+?):(\d+)(?: \+0x[0-9a-f]+)?\s*$")
_NODE_MATCH = re.compile(r"^\s*\.\.\. \d+ lines? matching cause stack trace \.\.\.")
_NODE_PRE = re.compile(r"^(?:node:[\w/.-]+|/[^\s:]+\.[cm]?[jt]s):\d+$")
_PY_EXC = re.compile(r"^([A-Za-z_][\w.]*)(?:: ?(.*))?$")


def line_kind(line: str) -> int:
    """Classify one line of text by the trace grammar alone (no context)."""
    if not line:
        return NONE
    c = line[0]
    if c == " " or c == "\t":
        s = line.lstrip()
        if s.startswith("at "):
            return AT_FRAME
        if s.startswith("File \"") and _PY_FILE.match(line):
            return PY_FILE
        if s.startswith(("Caused by: ", "Suppressed: ")):
            return JAVA_CAUSE
        if s.startswith("..."):
            if _JAVA_MORE.match(s):
                return JAVA_MORE
            if _NODE_MATCH.match(s):
                return NODE_MATCH
        if s.startswith("[cause]: "):
            return NODE_CAUSE
        if c == "\t" and _GO_FILE.match(line) and ".go:" in line:
            return GO_FILE
        if s.startswith("panic: "):
            return GO_START
        return INDENTED
    if c == "T" and line.startswith("Traceback (most recent call last):"):
        return PY_START
    if c == "C" and line.startswith("Caused by: "):
        return JAVA_CAUSE
    if c == "E" and line.startswith("Exception in thread "):
        return JAVA_START
    if (c == "D" or c == "T") and line.rstrip() in _PY_CHAIN:
        return PY_CHAIN
    if c == "p" and line.startswith("panic: "):
        return GO_START
    if c == "f" and line.startswith("fatal error: "):
        return GO_START
    if c == "g" and _GO_GOROUTINE.match(line):
        return GO_GOROUTINE
    if c == "[":
        if line.startswith("[signal "):
            return GO_MISC
        if line.startswith("[cause]: "):
            return NODE_CAUSE
    if c == "." and line.startswith("...additional frames elided..."):
        return GO_MISC
    if c == "c" and line.startswith("created by "):
        return GO_MISC
    if (c == "n" or c == "/") and _NODE_PRE.match(line):
        return NODE_PRE
    if _EXC_LINE.match(line):
        return EXC_LINE
    return OTHER


def is_strict_exception_line(line: str) -> bool:
    """True for an exception line that can start a trace without a head (``x.YError: m``, ``TypeError``).

    Dotted names alone (``config.yaml: loaded``) are too common in ordinary text to count.
    """
    m = _EXC_LINE.match(line)
    if m is None:
        return False
    name = m.group(1)
    return name == "Error" or _EXC_NAME_STRICT.search(name) is not None


def is_java_frame(line: str) -> bool:
    """True when an ``at`` line has the JVM shape ``at a.B.c(B.java:1)`` (Node has ``at f (x.js:1:2)``)."""
    m = _JAVA_FRAME.match(line)
    return m is not None and m.group(3).count(":") <= 1


# --- parse_trace -------------------------------------------------------------------------------------

Language = Literal["python", "java", "go", "node", "unknown"]


def parse_trace(text: str) -> ExceptionInfo | None:
    """Parse a whole stack trace (Python, Java/JVM, Go or Node.js) into an :class:`ExceptionInfo`.

    Lines before the trace (a log line that introduced it) are skipped. Returns None when the text
    holds no trace we recognise. Never raises.
    """
    try:
        lines = [ln.rstrip("\r") for ln in text.split("\n")]
        lang = _detect(lines)
        if lang == "python":
            return _parse_python(lines)
        if lang == "java":
            return _parse_java(lines)
        if lang == "go":
            return _parse_go(lines)
        if lang == "node":
            return _parse_node(lines)
    except Exception:  # a parser bug must never take the pipeline down; the event keeps its raw text
        return None
    return None


def _detect(lines: list[str]) -> Language:
    for i, ln in enumerate(lines):
        k = line_kind(ln)
        if k in (PY_START, PY_FILE, PY_CHAIN):
            return "python"
        if k in (GO_START, GO_GOROUTINE, GO_FILE):
            return "go"
        if k in (JAVA_START, JAVA_CAUSE, JAVA_MORE):
            return "java"
        if k == AT_FRAME:
            return "java" if is_java_frame(ln) else "node"
        if k in (NODE_CAUSE, NODE_MATCH, NODE_PRE):
            return "node"
        # zap/Go "stacktrace" fields: a function line followed by a tab-indented file line
        if k == OTHER and i + 1 < len(lines) and _GO_FILE.match(lines[i + 1]) and ".go:" in lines[i + 1]:
            return "go"
    return "unknown"


def _split_exc(line: str) -> tuple[str, str]:
    """Split ``Type: message`` (the message may be empty)."""
    m = _EXC_LINE.match(line)
    if m is not None:
        return m.group(1), m.group(2) or ""
    head, sep, rest = line.partition(": ")
    if sep and " " not in head and head:
        return head, rest
    return "", line


# Python ------------------------------------------------------------------------------------------------

_PY_STDLIB = re.compile(r"site-packages|dist-packages|^<frozen |/lib/python\d|\\Lib\\|^<string>$")


def _parse_python(lines: list[str]) -> ExceptionInfo | None:
    blocks: list[list[str]] = [[]]
    started = False
    for ln in lines:
        if not ln.strip():
            continue
        k = line_kind(ln)
        if k == PY_CHAIN:
            blocks.append([])
            continue
        if k == PY_START:
            started = True
        if not started and k != PY_FILE:
            continue  # the log line that introduced the trace
        started = True
        blocks[-1].append(ln)
    result: ExceptionInfo | None = None
    for block in blocks:
        exc = _python_block(block)
        if exc is None:
            continue
        exc.cause = result  # the earlier printed exception caused (or was handled by) this one
        result = exc
    return result


def _python_block(block: list[str]) -> ExceptionInfo | None:
    frames: list[Frame] = []
    exc_type = ""
    message: list[str] = []
    seen_exc = False
    for ln in block:
        if seen_exc:
            if not ln[:1].isspace():
                message.append(ln)
            continue
        if ln.startswith("Traceback "):
            continue
        m = _PY_FILE.match(ln)
        if m is not None:
            path = m.group(1)
            frames.append(Frame(function=(m.group(3) or "").strip() or "<module>", module=path,
                                lineno=int(m.group(2)), in_app=_PY_STDLIB.search(path) is None))
            continue
        if ln[:1].isspace():
            continue  # source line, carets, notes
        pm = _PY_EXC.match(ln)
        if pm is not None:
            exc_type, first = pm.group(1), pm.group(2) or ""
        else:
            exc_type, first = "", ln
        message.append(first)
        seen_exc = True
    if not seen_exc and not frames:
        return None
    return ExceptionInfo(type=exc_type, message="\n".join(message), frames=frames, language="python")


# Java ----------------------------------------------------------------------------------------------------

_JAVA_LIB_PREFIXES = (
    "java.", "javax.", "jdk.", "sun.", "com.sun.", "jakarta.", "org.springframework.", "org.apache.",
    "io.netty.", "kotlin.", "kotlinx.", "scala.", "org.hibernate.", "com.zaxxer.", "org.eclipse.jetty.",
    "io.undertow.", "reactor.", "io.micrometer.", "com.fasterxml.", "org.junit.", "org.slf4j.",
    "ch.qos.logback.", "io.grpc.", "com.google.common.", "org.postgresql.", "com.mysql.", "akka.",
    "io.vertx.", "org.glassfish.", "groovy.", "org.codehaus.groovy.",
)


def _java_frame(line: str) -> Frame | None:
    m = _JAVA_FRAME.match(line)
    if m is None:
        return None
    cls, fn, loc = m.group(1), m.group(2), m.group(3)
    lineno: int | None = None
    _, sep, num = loc.rpartition(":")
    if sep and num.isdigit():
        lineno = int(num)
    return Frame(function=fn, module=cls, lineno=lineno, in_app=not cls.startswith(_JAVA_LIB_PREFIXES))


def _parse_java(lines: list[str]) -> ExceptionInfo | None:
    root: ExceptionInfo | None = None
    cur: ExceptionInfo | None = None
    suppressed_indent = -1  # >= 0 while inside a "Suppressed:" block (its frames are not ours)
    in_message = False
    for ln in lines:
        if not ln.strip():
            continue
        indent = len(ln) - len(ln.lstrip())
        if suppressed_indent >= 0:
            if indent > suppressed_indent:
                continue
            suppressed_indent = -1
        k = line_kind(ln)
        s = ln.strip()
        if k == AT_FRAME:
            in_message = False
            if cur is not None:
                f = _java_frame(ln)
                if f is not None:
                    cur.frames.append(f)
            continue
        if k == JAVA_MORE:
            in_message = False
            continue
        if k == JAVA_CAUSE:
            in_message = False
            if s.startswith("Suppressed: "):
                suppressed_indent = indent
                continue
            t, msg = _split_exc(s[len("Caused by: "):])
            nxt = ExceptionInfo(type=t, message=msg, language="java")
            if cur is None:
                root = nxt
            else:
                cur.cause = nxt
            cur = nxt
            in_message = True
            continue
        if cur is None:
            if k == JAVA_START:
                m = _JAVA_START.match(s)
                s = m.group(1) if m else s
            elif k != EXC_LINE:
                continue  # the log line that introduced the trace
            t, msg = _split_exc(s)
            root = cur = ExceptionInfo(type=t, message=msg, language="java")
            in_message = True
            continue
        if in_message and indent == 0:
            cur.message = f"{cur.message}\n{ln}" if cur.message else ln  # multi-line exception message
    return root


# Go ------------------------------------------------------------------------------------------------------

_GO_STDLIB = frozenset({
    "runtime", "net", "sync", "syscall", "os", "io", "bufio", "fmt", "encoding", "crypto", "database",
    "context", "reflect", "internal", "testing", "time", "strings", "bytes", "log", "errors", "strconv",
    "sort", "math", "path", "regexp", "unicode", "mime", "html", "text", "compress", "archive", "container",
    "debug", "embed", "expvar", "flag", "go", "hash", "image", "index", "plugin", "slices", "maps", "iter",
    "unsafe", "vendor", "cmp",
})


def _go_split_func(line: str) -> tuple[str, str]:
    """``net/http.(*conn).serve(0xc0, {0x1})`` -> (``net/http``, ``(*conn).serve``)."""
    s = line.strip()
    if s.startswith("created by "):
        s = s[len("created by "):]
        s = s.split(" in goroutine ", 1)[0]
    if s.endswith(")"):  # strip the argument list: the last balanced (...) group
        depth = 0
        for i in range(len(s) - 1, -1, -1):
            ch = s[i]
            if ch == ")":
                depth += 1
            elif ch == "(":
                depth -= 1
                if depth == 0:
                    if i > 0 and s[i - 1] != ".":  # not the receiver "(*T)"
                        s = s[:i]
                    break
    slash = s.rfind("/")
    dot = s.find(".", slash + 1)
    if dot < 0:
        return "", s
    return s[:dot], s[dot + 1:]


def _go_in_app(pkg: str, path: str) -> bool:
    if "/go/src/" in path or "/libexec/src/" in path or "/pkg/mod/golang.org/toolchain" in path:
        return False
    first = pkg.split("/", 1)[0]
    if "." in first:
        return True  # github.com/..., example.com/...
    return first not in _GO_STDLIB


def _parse_go(lines: list[str]) -> ExceptionInfo | None:
    panics: list[tuple[str, str]] = []
    frames: list[Frame] = []
    goroutines = 0
    pending_func: tuple[str, str] | None = None
    for ln in lines:
        if not ln.strip():
            continue
        s = ln.strip()
        if s.startswith("panic: ") or s.startswith("fatal error: "):
            if goroutines == 0:
                text = s.split(": ", 1)[1]
                if text.endswith(" [recovered]"):
                    text = text[: -len(" [recovered]")]
                if s.startswith("fatal error: "):
                    panics.append(("fatal error", text))
                elif text.startswith("runtime error: "):
                    panics.append(("runtime.Error", text))
                else:
                    panics.append(("panic", text))
            continue
        if _GO_GOROUTINE.match(ln):
            goroutines += 1
            pending_func = None
            continue
        if goroutines > 1:
            continue  # frames of the panicking goroutine only (it is printed first)
        m = _GO_FILE.match(ln)
        if m is not None:
            if pending_func is not None:
                pkg, fn = pending_func
                path = m.group(1)
                frames.append(Frame(function=fn, module=pkg or path, lineno=int(m.group(2)),
                                    in_app=_go_in_app(pkg, path)))
                pending_func = None
            continue
        if ln[0] in " \t" or s.startswith(("[signal ", "...additional frames", "exit status")):
            continue
        pending_func = _go_split_func(s)  # "main.main()", or "main.main" in zap's stacktrace field
    if not panics and not frames:
        return None
    if not panics:
        return ExceptionInfo(type="", message="", frames=frames, language="go")
    result: ExceptionInfo | None = None
    for t, msg in panics:  # a re-panic printed later is the one that killed the program
        result = ExceptionInfo(type=t, message=msg, frames=[], language="go", cause=result)
    assert result is not None
    result.frames = frames
    return result


# Node ----------------------------------------------------------------------------------------------------


def _node_frame(line: str) -> Frame | None:
    if line.endswith(" {"):
        line = line[:-2]  # the last frame opens the dump of the error's own properties
    m = _NODE_FRAME.match(line)
    if m is None:
        return None
    fn = m.group(1) or "<anonymous>"
    loc = m.group(2) or m.group(3) or ""
    if " (" in fn and loc.endswith(")"):  # "at f (eval at x (file:1:2))" style nesting: keep it simple
        fn = fn.split(" (", 1)[0]
    lineno: int | None = None
    parts = loc.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        loc, lineno = parts[0], int(parts[1])
    in_app = not (loc.startswith(("node:", "internal/", "native")) or "node_modules" in loc)
    return Frame(function=fn, module=loc, lineno=lineno, in_app=in_app)


def _parse_node(lines: list[str]) -> ExceptionInfo | None:
    root: ExceptionInfo | None = None
    cur: ExceptionInfo | None = None
    for ln in lines:
        if not ln.strip():
            continue
        k = line_kind(ln)
        s = ln.strip()
        if k == AT_FRAME:
            if cur is not None:
                f = _node_frame(ln)
                if f is not None:
                    cur.frames.append(f)
            continue
        if k == NODE_CAUSE:
            t, msg = _split_exc(s[len("[cause]: "):].rstrip(" {"))
            nxt = ExceptionInfo(type=t, message=msg, language="node")
            if cur is None:
                root = nxt
            else:
                cur.cause = nxt
            cur = nxt
            continue
        if cur is None and k == EXC_LINE:
            t, msg = _split_exc(s)
            root = cur = ExceptionInfo(type=t, message=msg, language="node")
    return root
