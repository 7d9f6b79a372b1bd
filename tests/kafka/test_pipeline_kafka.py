"""Kafka in and out through the real pipeline: findings as CloudEvents, dead letters, two workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from connectors.sources.kafka import KafkaSource
from tests.kafka.conftest import Message, create_topic, kafka_settings, produce, read_all, unique
from tests.support.broker import Broker
from triage.accounting import Counters
from triage.app import build
from triage.model import Checkpoint
from triage.pipeline import Hooks
from triage.settings import KafkaSettings, Settings, load_settings

pytestmark = pytest.mark.anyio

SERVICES = ("checkout", "orders", "api-gateway")


def log_stream(n: int, *, seed: int = 0) -> list[Message]:
    """A realistic mix: JSON, logfmt and plain lines from three services, errors among info, one trace.

    Keyed by service (so one service's lines stay in order on one partition), with a service header.
    """
    out: list[Message] = []
    for i in range(n):
        svc = SERVICES[(i + seed) % 3]
        ts = f"2026-03-14T09:{(i // 60) % 60:02d}:{i % 60:02d}Z"
        if svc == "checkout":
            if i % 10 == 0:
                line = json.dumps({"ts": ts, "level": "error", "msg": f"payment declined for order {i}",
                                   "service": svc})
            else:
                line = json.dumps({"ts": ts, "level": "info", "msg": f"cart updated items={i % 7}"})
        elif svc == "orders":
            if i % 15 == 1:
                line = f'time={ts} level=error msg="db timeout after {i % 90} ms" table=orders'
            else:
                line = f'time={ts} level=info msg="order {i} created" user={i * 7}'
        else:
            if i % 20 == 2:
                line = f"{ts} ERROR upstream 10.0.{i % 9}.{i % 250} returned 503 for GET /v1/items/{i}"
            else:
                line = f"{ts} INFO GET /v1/items/{i} 200 {i % 40} ms"
        out.append((svc.encode(), line.encode(), [("service", svc.encode())]))
    return out


def trace(service: str) -> list[Message]:
    lines = ["2026-03-14T09:30:00Z ERROR request failed",
             "Traceback (most recent call last):",
             '  File "/app/handlers.py", line 42, in handle',
             "    return charge(order)",
             '  File "/app/payments.py", line 17, in charge',
             "    raise ConnectionError('card processor unreachable')",
             "ConnectionError: card processor unreachable"]
    return [(service.encode(), line.encode(), []) for line in lines]


def _settings(broker: Broker, tmp_path: Path, sources: list[str], sinks: list[str], kafka: KafkaSettings,
              **pipeline: Any) -> Settings:
    return load_settings(None, state_dir=tmp_path / unique("state"), sources=tuple(sources), sinks=tuple(sinks),
                         kafka=kafka.model_dump(), pipeline={"checkpoint_interval_s": 0.2, **pipeline})


async def _replay(settings: Settings) -> Counters:
    """Build the pipeline for ``settings``, replay it to the end (bounded in time), close the store."""
    app = build(settings, follow=False, quiet=True)
    try:
        with anyio.fail_after(20):
            return await app.pipeline.run()
    finally:
        app.store.close()


def _headers(msg: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in msg.headers}


class TestFindingsTopic:
    async def test_log_stream_yields_cloudevents_keyed_by_cluster(self, broker: Broker, tmp_path: Path) -> None:
        """A log stream over three partitions gives findings on the findings topic as binary CloudEvents."""
        logs, findings_topic = unique("logs"), unique("findings")
        await create_topic(broker, logs, 3)
        await create_topic(broker, findings_topic, 2)
        stream = log_stream(600) + trace("checkout")
        await produce(broker, logs, stream)
        kafka = kafka_settings(broker)
        settings = _settings(broker, tmp_path, [broker.url(logs)], [broker.url(findings_topic)], kafka)
        app = build(settings, follow=False, quiet=True)
        try:
            with anyio.fail_after(20):
                counters = await app.pipeline.run()
            stored = app.store.findings()
        finally:
            app.store.close()

        assert counters.read == len(stream) and counters.balanced()
        assert counters.merged == len(trace("checkout")) - 1  # the trace's lines became one event
        assert len(stored) >= 4 and counters.findings == len(stored)
        msgs = await read_all(broker, findings_topic, expect=len(stored))
        assert len(msgs) == len(stored)
        seen = set()
        for m in msgs:
            h = _headers(m)
            value = orjson.loads(m.value)
            assert m.key == value["id"].encode()
            assert h["ce_specversion"] == "1.0" and h["content-type"] == "application/json"
            assert h["ce_id"] == f"{value['id']}:{value['version']}"
            assert h["ce_type"] == f"dev.triage.finding.{value['kind']}"
            assert h["ce_source"] == "triage" and h["ce_time"].endswith("Z") and h["ce_subject"] == value["id"]
            assert value["schema_version"] == 1
            seen.add((value["id"], value["version"]))
        assert seen == {(f.id, f.version) for f in stored}
        services = {orjson.loads(m.value)["service"] for m in msgs}
        assert services == set(SERVICES)
        assert any(orjson.loads(m.value)["exception"] for m in msgs)  # the traceback made it as one finding

    async def test_offsets_committed_to_the_end_after_replay(self, broker: Broker, tmp_path: Path) -> None:
        """A replay commits every partition to its end, so a second run with the group reads nothing."""
        logs = unique("logs")
        await create_topic(broker, logs, 2)
        await produce(broker, logs, log_stream(200))
        kafka = kafka_settings(broker)
        for expected in (200, 0):
            counters = await _replay(_settings(broker, tmp_path, [broker.url(logs)], [], kafka))
            assert counters.read == expected and counters.balanced()


class TestDeadLetters:
    async def test_oversized_and_binary_records_go_to_the_dead_letter_topic(
            self, broker: Broker, tmp_path: Path) -> None:
        """Oversized and binary values are produced to the dead-letter topic with why and where from."""
        logs, dlq = unique("logs"), unique("dlq")
        await create_topic(broker, logs, 1)
        await create_topic(broker, dlq, 1)
        avro = b"\x00\x00\x00\x00\x07" + bytes([2, 0, 0x1e, 4, 0xC8, 1, 0, 0, 3, 0x80, 0x81, 0xff])
        stream: list[Message] = [
            *log_stream(30),
            (b"checkout", b"E" * 5000, [("service", b"checkout"), ("trace-id", b"abc")]),  # oversized
            (b"orders", avro, []),  # Confluent-framed Avro: binary, not a log line
            (b"api-gateway", "2026-03-14T09:00:00Z ERROR caf\xe9 closed".encode("latin-1"), []),  # text
            *log_stream(30, seed=1),
        ]
        await produce(broker, logs, stream)
        kafka = kafka_settings(broker, dead_letter_topic=dlq, max_record_bytes=4096)
        counters = await _replay(_settings(broker, tmp_path, [broker.url(logs)], [], kafka))
        assert counters.read == len(stream) and counters.balanced()
        assert counters.dead_lettered == 2 and counters.invalid_utf8 == 1
        msgs = await read_all(broker, dlq, expect=2)
        by_reason = {_headers(m)["triage-dlq-reason"]: m for m in msgs}
        assert set(by_reason) == {"oversized", "undecodable"}
        big = by_reason["oversized"]
        h = _headers(big)
        assert (h["triage-dlq-topic"], h["triage-dlq-partition"], h["triage-dlq-offset"]) == (logs, "0", "30")
        assert big.value == b"E" * 5000 and big.key == b"checkout" and h["trace-id"] == "abc"
        assert by_reason["undecodable"].value == avro
        assert _headers(by_reason["undecodable"])["triage-dlq-offset"] == "31"


class TestScaleOut:
    async def test_two_workers_split_partitions_and_account_for_every_record(
            self, broker: Broker, tmp_path: Path) -> None:
        """Two workers in one group take disjoint partitions, read every record once, agree on cluster ids."""
        logs = unique("logs")
        await create_topic(broker, logs, 4)
        kafka = kafka_settings(broker)
        split = anyio.Event()
        n = 1200
        apps = []
        sources: list[KafkaSource] = []

        def on_rebalance(_assigned: frozenset[str], _revoked: frozenset[str]) -> None:
            mine = [s.assignment for s in sources]
            if len(mine) == 2 and all(mine) and not (mine[0] & mine[1]) and len(mine[0] | mine[1]) == 4:
                split.set()

        done = anyio.Event()

        def on_checkpoint(_cp: Checkpoint) -> None:
            if sum(sum(s.committed.values()) for s in sources) == n:
                done.set()

        for _ in range(2):
            settings = _settings(broker, tmp_path, [broker.url(logs)], [], kafka, checkpoint_records=1)
            app = build(settings, follow=True, quiet=True)
            app.pipeline.hooks = Hooks(on_checkpoint=on_checkpoint)
            src = app.pipeline.sources[0]
            assert isinstance(src, KafkaSource)
            src._on_rebalance = on_rebalance
            sources.append(src)
            apps.append(app)
        results = []
        try:
            async with anyio.create_task_group() as tg:

                async def run(app: Any) -> None:
                    results.append(await app.pipeline.run())

                for app in apps:
                    tg.start_soon(run, app)
                with anyio.fail_after(20):
                    await split.wait()
                    # unkeyed: every partition (so both workers) sees every template
                    await produce(broker, logs, [(None, v, h) for _k, v, h in log_stream(n)])
                    await done.wait()
                for app in apps:
                    app.pipeline.stop()
        finally:
            ids = [{c.id for c in app.store.load_clusters()} for app in apps]
            for app in apps:
                app.store.close()

        assert all(c.balanced() for c in results)
        assert sum(c.read for c in results) == n and all(c.read for c in results)
        assert not (sources[0].assignment & sources[1].assignment)
        assert ids[0] & ids[1]  # the same templates seen by both workers have the same stable ids

