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

    __slots__ = ("_keys", "_might", "_might_any", "_redact")

    def __init__(self, redactor: Redactor) -> None:
        self._redact = redactor.redact
        self._might = redactor.might_contain_secret
        self._might_any = redactor.might_contain_secret_any_digits
        self._keys: dict[str, bool] = {}  # attribute key -> names a secret (keys repeat: cached, bounded)

    def __call__(self, event: Event) -> Event:
        # Fast path: message, exception and attribute values all come from the raw text, so when the
        # raw text passes the cheap check (and has no JSON \u escapes that could spell a secret) and no
        # attribute is named like a secret, there is nothing to do.
        raw = event.raw
        if "\\u" not in raw and not self._might(raw) and not self._secret_key_in(event.attributes):
            return event
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

    def leaves_shape_alone(self, event: Event) -> bool:
        """True when this step changes nothing in ``event``, nor in any event that differs from it only in
        digit values (the repeat-shape lane then skips the step for such events)."""
        raw = event.raw
        return "\\u" not in raw and not self._might_any(raw) and not self._secret_key_in(event.attributes)

    def _secret_key_in(self, attributes: dict[str, Any]) -> bool:
        keys = self._keys
        for key, value in attributes.items():
            hit = keys.get(key)
            if hit is None:
                if len(keys) >= 4096:
                    keys.clear()
                hit = keys[key] = _SECRET_KEY.search(key) is not None
            if hit or type(value) is dict:
                return True
        return False

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

