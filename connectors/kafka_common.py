"""What the Kafka source and sink share: ``kafka://`` URLs, client settings, and error translation.

Both adapters take the one frozen ``KafkaSettings`` section (no global config) and turn it into aiokafka
keyword arguments here, so that security options (TLS, SASL) are written once. Errors of aiokafka (and
the ``OSError``/timeouts under it) are translated into ``triage.errors`` at the adapter boundary,
raised ``from`` the original.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from aiokafka.errors import KafkaError

from triage.errors import ConfigError, TriageError
from triage.settings import KafkaSettings

SCHEME = "kafka://"


def parse_kafka_url(spec: str, settings: KafkaSettings, *, default_topic: str = "") -> tuple[str, str]:
    """``kafka://HOST:PORT[,HOST:PORT]/TOPIC`` → ``(bootstrap_servers, topic)``.

    An empty host (``kafka:///TOPIC``) takes ``settings.bootstrap_servers``; an empty topic takes
    ``default_topic`` (the sink's ``findings_topic``). Raises ``ConfigError`` naming the spec.
    """
    if not spec.startswith(SCHEME):
        raise ConfigError(f"{spec!r}: expected kafka://HOST:PORT/TOPIC")
    parts = urlsplit(spec)
    servers = parts.netloc or settings.bootstrap_servers
    topic = parts.path.strip("/") or default_topic
    if not topic or "/" in topic:
        raise ConfigError(f"{spec!r}: expected kafka://HOST:PORT/TOPIC (one topic)")
    if any(":" not in s for s in servers.split(",")):
        raise ConfigError(f"{spec!r}: expected HOST:PORT in kafka://HOST:PORT/TOPIC")
    return servers, topic


def client_kwargs(settings: KafkaSettings, bootstrap_servers: str | None = None) -> dict[str, Any]:
    """The connection and security keyword arguments common to aiokafka's consumer and producer."""
    kw: dict[str, Any] = {
        "bootstrap_servers": (bootstrap_servers or settings.bootstrap_servers).split(","),
        "client_id": settings.client_id,
        "request_timeout_ms": settings.request_timeout_ms,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        ctx = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
        ctx.check_hostname = settings.ssl_check_hostname
        kw["ssl_context"] = ctx
    if settings.security_protocol.startswith("SASL"):
        if settings.sasl_mechanism is None or settings.sasl_username is None or settings.sasl_password is None:
            raise ConfigError("kafka: SASL needs sasl_mechanism, sasl_username and sasl_password")
        kw["sasl_mechanism"] = settings.sasl_mechanism
        kw["sasl_plain_username"] = settings.sasl_username
        kw["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kw


@contextmanager
def translate(error: type[TriageError], what: str) -> Iterator[None]:
    """Re-raise aiokafka, socket and timeout errors as ``error(what: ...)`` from the original."""
    try:
        yield
    except KafkaError as e:
        raise error(f"{what}: {type(e).__name__}: {e}") from e
    except OSError as e:  # TimeoutError included
        raise error(f"{what}: {type(e).__name__}: {e}") from e
