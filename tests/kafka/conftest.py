"""One Tansu broker per test session, plus helpers to create topics, produce and read them back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.support.broker import Broker, BrokerUnavailable, start_broker
from triage.settings import KafkaSettings

Message = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]  # key, value, headers


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The broker, started on first use and stopped at the end of the session."""
    try:
        b = start_broker(tmp_path_factory.mktemp("tansu"))
    except BrokerUnavailable as e:  # a missing binary is a failure to report, not a skip
        pytest.fail(f"Kafka broker unavailable: {e}")
    yield b
    b.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def kafka_settings(broker: Broker, **overrides: Any) -> KafkaSettings:
    """Client settings with the short timings the test broker allows."""
    values: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap, "group_id": unique("g"), "session_timeout_ms": 2000,
        "heartbeat_interval_ms": 300, "fetch_max_wait_ms": 50, "poll_timeout_ms": 100,
        "revoke_timeout_s": 3.0, "linger_ms": 0,
    }
    values.update(overrides)
    return KafkaSettings(**values)


async def create_topic(broker: Broker, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def produce(broker: Broker, topic: str, messages: Sequence[Message], *,
                  partition: int | None = None) -> None:
    """Produce and wait for every ack (keyed messages go to the key's partition)."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False,
                                max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        futs = [await producer.send(topic, value=v, key=k, headers=h, partition=partition)
                for k, v, h in messages]
        for f in futs:
            await f
    finally:
        await producer.stop()


async def read_all(broker: Broker, topic: str, expect: int | None = None, *, within_s: float = 10.0) -> list[Any]:
    """Every message of ``topic`` (no group): until ``expect`` are read, or until caught up."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    out: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or
                                                         await _partitions(consumer, topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        with anyio.fail_after(within_s):
            while True:
                data = await consumer.getmany(timeout_ms=200)
                for msgs in data.values():
                    out.extend(msgs)
                if expect is not None:
                    if len(out) >= expect:
                        break
                elif not data and await _caught_up(consumer, tps):
                    break
    finally:
        await consumer.stop()
    return out


async def _caught_up(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    for tp in tps:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer.topics()
    return consumer.partitions_for_topic(topic) or {0}


async def committed_offsets(broker: Broker, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets by partition, read without joining the group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        out = {}
        for p in sorted(await _partitions(consumer, topic)):
            offset = await consumer.committed(TopicPartition(topic, p))
            if offset is not None and offset >= 0:
                out[p] = offset
        return out
    finally:
        await consumer.stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"
