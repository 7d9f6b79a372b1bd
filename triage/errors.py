"""The error tree of triage.

Adapters (sources, sinks, the store, the LLM client) translate the errors of the libraries they use
into these, raised ``from`` the original, so the pipeline handles one vocabulary::

    TriageError
    ├── ConfigError            settings or command-line arguments are wrong (one clear line)
    ├── SourceError            a source cannot be read (missing file, broker gone)
    ├── DecodeError            one record cannot be decoded (counted, never fatal)
    ├── StoreError             the SQLite store failed (disk full, locked, corrupt)
    ├── SinkError              a sink could not deliver or flush
    │   └── SinkBackpressure   the sink is full; retry after ``retry_after`` seconds
    └── SummarizeError         the model endpoint failed (the finding still goes out)
"""

from __future__ import annotations


class TriageError(Exception):
    """Base of every error raised by triage on purpose."""


class ConfigError(TriageError):
    """Settings or arguments are invalid; the message is one line naming the key."""


class SourceError(TriageError):
    """A source cannot be opened or read."""


class DecodeError(TriageError):
    """One record cannot be decoded."""


class StoreError(TriageError):
    """The store failed."""


class SinkError(TriageError):
    """A sink could not deliver or flush."""


class SinkBackpressure(SinkError):
    """The sink is full; the caller should slow down for ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SummarizeError(TriageError):
    """The summarizer's model endpoint failed."""
