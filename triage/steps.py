"""Steps applied to every assembled event before clustering (structlog-style small callables)."""

from __future__ import annotations

import re
from typing import Any

from triage.model import Event
from triage.redact import Redactor, marker

# Structured fields whose value is a secret whatever it looks like.
_SECRET_KEY = re.compile(
    r"(?:^|[._-])(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|authorization|credentials?|"
    r"private[_-]?key|client[_-]?secret|cookie|session[_-]?id)$",
    re.IGNORECASE,
)


class RedactSecrets:
    """Replace secrets irreversibly in everything an event carries, before it is clustered or stored.

    After this step no secret reaches the store, a prompt, a sink or triage's own logs.
    """

    __slots__ = ("_redact",)

    def __init__(self, redactor: Redactor) -> None:
        self._redact = redactor.redact

    def __call__(self, event: Event) -> Event:
        redact = self._redact
        event.message = redact(event.message)
        event.raw = redact(event.raw)
        exc = event.exception
        while exc is not None:
            exc.message = redact(exc.message)
            exc = exc.cause
        if event.attributes:
            event.attributes = {k: self._value(k, v) for k, v in event.attributes.items()}
        return event

    def _value(self, key: str, value: Any) -> Any:
        if _SECRET_KEY.search(key) and value not in (None, "", True, False):
            return marker("password" if "pass" in key.lower() or "pwd" in key.lower() else "secret")
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, dict):
            return {k: self._value(str(k), v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._value(key, v) for v in value]
        return value

