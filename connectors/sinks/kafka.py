"""The findings topic: each version of a finding as a CloudEvent (binary mode) keyed by cluster id.

Why it is shaped this way:

* **Binary-mode CloudEvents** (CloudEvents Kafka protocol binding 1.0): the event attributes travel
  as ``ce_*`` headers and the data is the message value, so consumers that ignore CloudEvents still
  read plain JSON. ``ce_id`` is ``"{id}:{version}"`` (unique per update, so consumers deduplicate
  replays), ``ce_type`` is ``dev.triage.finding.<kind>``, ``ce_subject`` the cluster id.
* **Keyed by cluster id**: one incident's updates land on one partition, in order, and a compacted
  topic keeps its latest state. Ids are stable hashes, so the findings of several workers merge per key.
* **Value**: ``orjson`` of ``finding.model_dump(mode="json")`` plus ``schema_version``; the JSON Schema
  is generated from the pydantic model into ``docs/finding.schema.json`` (``scripts/gen_schema.py``).
* **Durability**: ``emit`` hands the message to the producer (acks=all by default) and keeps its
  delivery future; ``flush`` awaits them all and raises ``SinkError`` from the first failure, so the
  pipeline commits source offsets only for findings the broker acknowledged. At most
  ``max_pending_findings`` are unacknowledged: beyond, ``emit`` flushes first (bounded memory).
  Idempotence is off by default (the test broker lacks it); turn it on against Apache Kafka/Redpanda.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer

from connectors.kafka_common import client_kwargs, translate
from triage.errors import SinkError
from triage.model import Finding
from triage.settings import KafkaSettings

log = structlog.get_logger("triage.kafka.sink")

SCHEMA_VERSION = 1
CE_TYPE_PREFIX = "dev.triage.finding."
SCHEMA_ID = "https://triage.dev/schemas/finding/v1.json"


def finding_value(finding: Finding) -> bytes:
    """The message value: the finding as JSON, with the schema version it follows."""
    body = finding.model_dump(mode="json")
    body["schema_version"] = SCHEMA_VERSION
    return orjson.dumps(body)


def cloudevent_headers(finding: Finding, *, source: str) -> list[tuple[str, bytes]]:
    """Binary-mode CloudEvent attributes of one finding version, as Kafka headers."""
    when = datetime.fromtimestamp(finding.created_at, UTC).isoformat().replace("+00:00", "Z")
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", f"{finding.id}:{finding.version}".encode()),
        ("ce_source", source.encode()),
        ("ce_type", (CE_TYPE_PREFIX + finding.kind).encode()),
        ("ce_time", when.encode()),
        ("ce_subject", finding.id.encode()),
        ("ce_dataschema", SCHEMA_ID.encode()),
        ("content-type", b"application/json"),
    ]


def finding_schema() -> dict[str, Any]:
    """The versioned JSON Schema of the message value (what ``docs/finding.schema.json`` holds)."""
    schema = Finding.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "triage finding"
    schema["description"] = (
        "One version of a finding, the value of a message on the findings topic (CloudEvents binary "
        "mode; the key is the cluster id). A higher version of the same id is an update.")
    schema["properties"]["schema_version"] = {"const": SCHEMA_VERSION, "type": "integer",
                                              "title": "Schema Version"}
    schema["required"] = [*schema.get("required", []), "schema_version"]
    return schema


class KafkaSink:
    """Publishes findings to a Kafka topic; ``flush`` returns once the broker acknowledged them."""

    def __init__(self, topic: str, settings: KafkaSettings, *, bootstrap_servers: str | None = None,
                 name: str = "kafka") -> None:
        self.name = name
        self.topic = topic
        self.settings = settings
        self._servers = bootstrap_servers or settings.bootstrap_servers
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []
        self._closed = False
        self.published = 0

    async def emit(self, finding: Finding) -> None:
        if self._closed:
            raise SinkError(f"kafka sink {self.name}: closed")
        producer = await self._start()
        if len(self._pending) >= self.settings.max_pending_findings:
            await self.flush()
        with translate(SinkError, f"kafka sink {self.name}: send to {self.topic!r}"):
            fut = await producer.send(
                self.topic, value=finding_value(finding), key=finding.id.encode(),
                headers=cloudevent_headers(finding, source=self.settings.event_source),
            )
        self._pending.append(fut)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*pending, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        self.published += len(results) - len(errors)
        if errors:
            first = errors[0]
            raise SinkError(f"kafka sink {self.name}: {len(errors)} of {len(results)} findings not "
                            f"acknowledged: {type(first).__name__}: {first}") from first

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        producer = self._producer
        try:
            await self.flush()
        finally:
            if producer is not None:
                with translate(SinkError, f"kafka sink {self.name}: close"):
                    await producer.stop()

    async def _start(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        s = self.settings
        producer = AIOKafkaProducer(
            **client_kwargs(s, self._servers),
            acks="all" if s.acks == "all" else int(s.acks),
            enable_idempotence=s.enable_idempotence,
            linger_ms=s.linger_ms,
            compression_type=None if s.compression_type == "none" else s.compression_type,
        )
        with translate(SinkError, f"kafka sink {self.name}: connect to {self._servers}"):
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
        self._producer = producer
        return producer
