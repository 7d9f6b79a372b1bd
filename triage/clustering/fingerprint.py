"""Stack-trace fingerprints: group exceptions the way Sentry does, by where they were raised.

The fingerprint is the exception type (with the types of its causes) plus the top in-app frames,
normalised so that what changes between builds and runs does not split a group: line numbers,
addresses, and generated names (Java ``$$Lambda$12/0x...``, ``lambda$main$0``, ``$Proxy23``,
``GeneratedMethodAccessor45``, CGLIB/ByteBuddy suffixes; Go ``func1`` and ``(0xc000...)`` arguments;
Node ``<anonymous>`` and ``file.js:12:5`` positions; Python absolute file paths). When no frame is in
app, all frames are used. The message's template (masked) is the second key.

Frame order: ``ExceptionInfo.frames`` is taken as printed by the runtime. Python prints the innermost
frame last; Java, Go and Node print it first. "Top" means innermost, so Python frames are reversed.
"""

from __future__ import annotations

import re

from triage.clustering.masking import mask_text, tokenize
from triage.model import ExceptionInfo, Frame

TOP_FRAMES = 5

_GENERATED = [
    (re.compile(r"\$\$Lambda\$?[\w$]*(?:/0x[0-9a-fA-F]+)?"), "$$Lambda"),
    (re.compile(r"\blambda\$(\w+?)\$\d+"), r"lambda$\1"),
    (re.compile(r"\$Proxy\d+"), "$Proxy"),
    (re.compile(r"\b(GeneratedMethodAccessor|GeneratedConstructorAccessor|GeneratedSerializationConstructorAccessor)\d+"), r"\1"),
    (re.compile(r"\$\$(EnhancerBy\w+?|FastClassBy\w+?|SpringCGLIB|ByteBuddy)\$\$[\w$]*"), r"$$\1"),
    (re.compile(r"\$[0-9a-f]{6,}\b"), "$"),
    (re.compile(r"\.func\d+(?:\.\d+)*"), ".func"),  # Go closures
    (re.compile(r"\((?:0x[0-9a-fA-F]+|\.\.\.|, ?|\{[^}]*\})*\)$"), ""),  # Go argument words
    (re.compile(r"0x[0-9a-fA-F]+"), ""),
    (re.compile(r":\d+(?::\d+)?\)?$"), ""),  # file.js:12:5
]
_PY_PATH = re.compile(r"^.*?(?:site-packages|dist-packages|lib/python[\d.]+)/|^.*/")


def normalise_function(name: str) -> str:
    """A function or module name without generated ids, addresses and positions."""
    for pattern, repl in _GENERATED:
        if pattern.search(name) is not None:
            name = pattern.sub(repl, name)
    name = name.strip()
    if name in ("", "<anonymous>", "Object.<anonymous>", "anonymous"):
        return "<anonymous>"
    return name


def _frame_key(frame: Frame, language: str) -> str:
    module = frame.module
    if language == "python" or module.endswith(".py"):
        module = _PY_PATH.sub("", module)
    return f"{normalise_function(module)}:{normalise_function(frame.function)}"


def top_frames(exc: ExceptionInfo, limit: int = TOP_FRAMES) -> list[Frame]:
    """The innermost ``limit`` in-app frames (all frames if none is in app), innermost first."""
    frames = list(reversed(exc.frames)) if exc.language == "python" else list(exc.frames)
    in_app = [f for f in frames if f.in_app]
    return (in_app or frames)[:limit]


def message_template(message: str) -> str:
    """The masked template of an exception message (the fingerprint's second key)."""
    return " ".join(tokenize(mask_text(message)))


def fingerprint(exc: ExceptionInfo) -> str:
    """The grouping key of an exception: types of the chain, top frames, message template."""
    types = [exc.type]
    cause = exc.cause
    depth = 0
    while cause is not None and depth < 8:
        types.append(cause.type)
        cause = cause.cause
        depth += 1
    frames = "|".join(_frame_key(f, exc.language) for f in top_frames(exc))
    return "trace\x00" + "<-".join(types) + "\x00" + frames + "\x00" + message_template(exc.message)


def trace_template(exc: ExceptionInfo) -> str:
    """The readable template of a trace cluster: ``Type: message template at module.function``."""
    frames = top_frames(exc, 1)
    where = ""
    if frames:
        f = frames[0]
        where = f" at {normalise_function(f.module)}.{normalise_function(f.function)}" if f.module \
            else f" at {normalise_function(f.function)}"
    return f"{exc.type}: {message_template(exc.message)}{where}"
