"""Masking: replace the variable parts of a message with ``<*>`` in one regex pass.

Why one pass: the masker runs on every event, so it is a single precompiled alternation applied with
``re.split`` (C speed) instead of a chain of substitutions in Python. The one capturing group makes
``split`` return literal text and masked values interleaved, which gives the parameters for free.

What is masked (first alternative that matches at a position wins):
URLs, e-mail addresses, UUIDs, dates and times (ISO, syslog, ``Mon Jan 1 10:00:00 2020``), clock times,
absolute paths (POSIX with two or more components, Windows drive paths), ``0x`` hex, and any run of
word characters that contains a digit (numbers, IPs, ports, durations such as ``30000ms`` or ``1.5s``,
ids with prefixes such as ``blk_-123``, ``user-4512``, ``req_ab12cd``, hex digests). Runs stop at
``: = , ; ( ) [ ] { } " ' / @ |`` so that ``ip:port``, ``key=value`` and ``a/b`` keep their punctuation
in the template. A word of two or more letters followed by one digit (``ssh2``, ``SOCKS5``, ``eth0``)
is kept: such words are protocol or device names far more often than values.
"""

from __future__ import annotations

import re

WILDCARD = "<*>"

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*"
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"

# A character that may not precede a masked run: word characters, or the tail of an earlier "<*>"
# (so masking an already masked string changes nothing).
_NB = r"(?<![\w*>])"
_RUN = r"[\w.\-+#~%$]"  # characters inside a variable run
_PATH_PART = r"[\w.\-~+$%@]"

_ALTERNATIVES = [
    # URL
    r"(?<![\w*>])[A-Za-z][A-Za-z0-9+.\-]*://[^\s,;\"'<>()\[\]{}|]+",
    # e-mail
    _NB + r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)*\.[A-Za-z]{2,}\b",
    # UUID
    _NB + r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
    # ISO date-time
    _NB + r"\d{4}-\d{2}-\d{2}(?:[T ]" + _TIME + r"(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w])",
    # syslog / ctime dates
    _NB + r"(?:" + _DAY + r",?\s+)?" + _MONTH + r"\s+\d{1,2},?\s+(?:\d{4}\s+)?" + _TIME + r"(?:\s+\d{4})?(?![\w:])",
    # clock time
    _NB + _TIME + r"(?![\w:])",
    # absolute POSIX path with two or more components, Windows path
    r"(?<![\w*>:/.])(?:/" + _PATH_PART + r"+){2,}/?",
    _NB + r"[A-Za-z]:\\[^\s,;\"'<>|]*",
    # the text of a quoted key="value", an empty "()" standing for an empty value
    r'(?<==")[^"]*(?=")',
    r"(?<=\s\()(?=\))",
    # host name before :port
    _NB + r"[A-Za-z][\w\-]*(?:\.[\w\-]+)+(?=:\d{1,5}\b)",
    # 0x hex
    _NB + r"0[xX][0-9a-fA-F]+\b",
    # a number with its unit (1.23 KB, 5 sec, 30 bytes)
    _NB + r"\d[\d.,]*\s(?:[KMGTP]i?B|B|bytes?|ms|us|ns|s|secs?|seconds?|mins?|minutes?|hours?)(?![\w.\-])",
    # any run containing a digit, except letters+one digit words (ssh2, eth0)
    _NB + r"(?![A-Za-z]{2,}\d(?![\w.\-+#~%$]))" + _RUN + r"*\d(?:" + _RUN + r"*[\w])?",
]

MASK_RE = re.compile("(" + "|".join(_ALTERNATIVES) + ")")
_split = MASK_RE.split


def mask(message: str) -> tuple[str, list[str]]:
    """Return ``message`` with variables replaced by ``<*>``, and the masked values in order."""
    parts = _split(message)
    if len(parts) == 1:
        return message, []
    return WILDCARD.join(parts[0::2]), parts[1::2]


def mask_text(message: str) -> str:
    """Only the masked text (see :func:`mask`)."""
    parts = _split(message)
    if len(parts) == 1:
        return message
    return WILDCARD.join(parts[0::2])


def tokenize(masked: str) -> list[str]:
    """Split a masked message into tokens, folding runs of wildcard tokens into one ``<*>``.

    Folding makes a value that spans a variable number of tokens (a date with spaces, a list of
    numbers ``<*>, <*>, <*>``) one wildcard, so such lines do not split into several clusters
    (Drain3 #66). A lone token such as ``<*>:<*>`` keeps its shape.
    """
    toks = masked.split()
    if WILDCARD not in masked:
        return toks
    out: list[str] = []
    run = 0  # length of the current run of wildcard-only tokens
    for tok in toks:
        if WILDCARD in tok and (tok == WILDCARD or _ONLY_WILD_RE.fullmatch(tok) is not None):
            run += 1
            if run == 1:
                out.append(tok)
            elif run == 2:
                out[-1] = WILDCARD
        else:
            out.append(tok)
            run = 0
    return out


_ONLY_WILD_RE = re.compile(r"(?:<\*>|[,;:./\-_|()\[\]<>])+")
