"""The Kafka source: one aiokafka consumer in a consumer group; partitions are the unit of scale-out.

Why it is shaped this way:

* **Pull-driven, no queue of our own.** ``batches()`` calls ``getmany(max_records=max_poll_records)``
  only when the pipeline asks for the next batch, so a slow pipeline slows the polling; the only
  buffer is aiokafka's prefetch, bounded by its fetch sizes. One record per message: ``data`` is
  the value, ``stream`` is ``"topic/partition"``, ``offset`` the message offset, ``end`` = offset + 1.
* **At-least-once.** Auto-commit is off. ``commit(positions)`` (called by the pipeline only after the
  store and every sink flushed) commits, for each partition still assigned, the position if it moves
  forward and does not pass what this assignment has handed out. A crash replays from the last commit.
* **Bounded duplicate window (pausing).** A partition with more than ``pause_uncommitted_records``
  records read but not committed is paused (``consumer.pause``) and resumed once commits bring it
  under half of that; polling goes on meanwhile, so the member stays in the group. The threshold is
  kept above one checkpoint's worth of records (see ``build_sources``), so a paused partition always
  has a checkpoint in flight that will un-pause it.
* **Rebalances.** On revocation the source stops handing out records of those partitions, then waits
  (at most ``revoke_timeout_s``) until the checkpoints already in flight have committed everything it
  handed out for them; commits of partitions no longer assigned are ignored. On assignment it resumes
  from the group's committed offsets. What is guaranteed: nothing is lost; a record is processed
  twice only if it was in the uncommitted window of a crashed or revoked member (at most one
  checkpoint interval, or the records since the last barrier when a revocation times out, counted in
  ``revoked_uncommitted``).
* **Dead letters.** A value over ``max_record_bytes`` is marked ``"oversized"``; a value that is
  binary rather than text (mostly control bytes or invalid UTF-8: Avro/Protobuf framing, compressed
  bytes) is marked ``"undecodable"``. Text with a few bad bytes is not: the decoder replaces them and
  counts ``invalid_utf8``. The pipeline hands marked records to ``dead_letter``, which produces the
  original key, value and headers to ``dead_letter_topic`` with ``triage-dlq-*`` headers saying why
  and where from, and awaits the broker's ack. With no dead-letter topic nothing is marked.
* **Close.** ``aclose()`` makes ``batches()`` end within one poll; the consumer itself (needed for the
  pipeline's final commit) is stopped by an ``aclose()`` that finds ``batches()`` finished, or by the
  second one, or when ``batches()`` ends abnormally (cancelled, failed).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import anyio
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, KafkaError, MessageSizeTooLargeError

from connectors.kafka_common import client_kwargs, translate
from triage.errors import SourceError
from triage.model import Record, RowBatch, StreamBatch
from triage.settings import KafkaSettings

log = structlog.get_logger("triage.kafka.source")

MAX_HEADERS = 16
MAX_ATTR_NAME = 64
MAX_ATTR_VALUE = 256
DLQ_TRUNCATE_TO = 1024  # bytes kept of a dead letter the dead-letter topic refuses as too large
_SERVICE_HEADERS = ("service", "service.name", "service_name", "app")
# Control bytes that do not occur in text logs (tab, LF, CR, FF and ESC do).
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27)) + b"\x7f"
_ATTR_CACHE_MAX = 4096

RebalanceHook = Callable[[frozenset[str], frozenset[str]], None]


_VALUE = attrgetter("value")
_OFFSET = attrgetter("offset")
_KEY = attrgetter("key")
_HEADERS = attrgetter("headers")


def looks_binary(value: bytes) -> bool:
    """True when ``value`` is binary rather than a (possibly damaged) text line.

    More than 1/8 of control bytes or invalid UTF-8 sequences: Avro/Protobuf framing, compressed or
    encrypted bytes. A latin-1 line with a few accented letters is text (the decoder repairs it).
    """
    n = len(value)
    # Control bytes counted by deleting them (one C pass; cheaper than a regex search for the common
    # case of ASCII text without any).
    bad = n - len(value.translate(None, _CONTROL))
    if not value.isascii():
        try:
            value.decode()
        except UnicodeDecodeError:
            bad += value.decode("utf-8", "replace").count("\ufffd")
    return bad * 8 > n


@dataclass(slots=True)
class _Partition:
    """What this member handed out and committed for one assigned partition (this assignment only)."""

    yielded: int = -1  # end of the last record handed out (-1: none yet)
    committed: int = -1  # last position committed by this member (-1: none yet)
    first: int = -1  # offset of the first record handed out in this assignment
    revoking: bool = False
    paused: bool = False

    @property
    def uncommitted(self) -> int:
        if self.yielded < 0:
            return 0
        return self.yielded - max(self.committed, self.first)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._source._on_assigned(assigned)


class KafkaSource:
    """Records from Kafka topics through a consumer group, committed after durable processing."""

    def __init__(
        self,
        name: str,
        topics: Sequence[str],
        settings: KafkaSettings,
        *,
        bootstrap_servers: str | None = None,
        follow: bool = True,
        pause_uncommitted_records: int | None = None,
        on_rebalance: RebalanceHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not topics:
            raise ValueError("at least one topic")
        self.name = name
        self.topics = tuple(topics)
        self.settings = settings
        self.follow = follow
        self._servers = bootstrap_servers or settings.bootstrap_servers
        self._pause_at = pause_uncommitted_records or settings.pause_uncommitted_records
        self._on_rebalance = on_rebalance
        self._clock = clock
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._parts: dict[TopicPartition, _Partition] = {}
        self._streams: dict[TopicPartition, str] = {}
        self._attr_cache: dict[bytes, dict[str, str]] = {}
        self._dlq_meta: dict[tuple[str, int], tuple[bytes | None, list[tuple[str, bytes]]]] = {}
        self._closing = False
        self._close_calls = 0
        self._iterating = 0
        self._stopped = False
        self._assigned_once = False
        self._progress: anyio.Event | None = None  # set at each commit (made in the event loop)
        # Observable figures (tests, metrics).
        self.commits = 0
        self.commit_failures = 0
        self.revoked_uncommitted = 0
        self.dead_letters = 0

    # --- public state ---------------------------------------------------------------------------

    @property
    def assignment(self) -> frozenset[str]:
        """The streams (``topic/partition``) currently assigned to this member."""
        return frozenset(self._stream(tp) for tp in self._parts)

    @property
    def committed(self) -> dict[str, int]:
        """Positions this member committed in its current assignment."""
        return {self._stream(tp): p.committed for tp, p in self._parts.items() if p.committed >= 0}

    @property
    def closing(self) -> bool:
        """``aclose()`` was called: ``batches()`` ends at its next poll."""
        return self._closing

    @property
    def checkpoint_wanted(self) -> bool:
        """A revocation waits for the records handed out to be committed (a hint for the pipeline)."""
        return any(p.revoking and p.uncommitted for p in self._parts.values())

    # --- Source -----------------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[Sequence[Record]]:
        consumer = await self._start()
        max_records = self.settings.max_poll_records
        timeout_ms = self.settings.poll_timeout_ms
        normal_end = False
        self._iterating += 1
        try:
            while not self._is_closing():
                try:
                    with translate(SourceError, f"kafka source {self.name}: poll"):
                        data = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
                except SourceError as e:
                    if isinstance(e.__cause__, ConsumerStoppedError) and self._is_closing():
                        break
                    raise
                if self._is_closing():
                    break  # what was just polled is not handed out: it is read again after a restart
                batches = self._records(data) if data else []
                if batches:
                    for batch in batches:  # one per partition: the pipeline merges a stream's batches
                        yield batch
                    if not self.follow and not self.checkpoint_wanted and await self._caught_up(consumer):
                        break  # replay: read to the end; no empty poll to wait for
                elif not self.checkpoint_wanted and not self.follow and await self._caught_up(consumer):
                    break
                else:
                    # An empty batch lets the pipeline commit an idle topic and place a barrier while a
                    # revocation waits for one.
                    yield []
            normal_end = True
        finally:
            self._iterating -= 1
            if not normal_end:  # cancelled or failed: no commit will follow
                with anyio.CancelScope(shield=True):
                    await self._stop()

    async def commit(self, positions: Mapping[str, int]) -> None:
        consumer = self._consumer
        if consumer is None or self._stopped:
            return
        offsets: dict[TopicPartition, int] = {}
        for tp, part in self._parts.items():
            pos = positions.get(self._stream(tp))
            # Forward only, and never past what this assignment handed out (a stale position from an
            # earlier assignment of the partition is ignored).
            if pos is not None and part.committed < pos <= part.yielded:
                offsets[tp] = pos
        if not offsets:
            return
        try:
            with anyio.fail_after(self.settings.commit_timeout_s):
                await consumer.commit(offsets)
        except CommitFailedError as e:
            # The group rebalanced: the partitions may be elsewhere now; their new owner reads from
            # the last commit (duplicates, never loss).
            self.commit_failures += 1
            log.warning("commit failed after a rebalance", source=self.name, error=str(e))
            return
        except TimeoutError as e:
            raise SourceError(f"kafka source {self.name}: commit timed out") from e
        except KafkaError as e:
            raise SourceError(f"kafka source {self.name}: commit: {type(e).__name__}: {e}") from e
        self.commits += 1
        for tp, pos in offsets.items():
            done = self._parts.get(tp)
            if done is None:
                continue
            done.committed = pos
            if done.paused and done.uncommitted <= self._pause_at // 2:
                done.paused = False
                consumer.resume(tp)
        if self._progress is not None:
            self._progress.set()
        self._progress = anyio.Event()

    async def dead_letter(self, record: Record) -> None:
        """Produce ``record`` to the dead-letter topic with why and where from; return once acked."""
        topic = self.settings.dead_letter_topic
        key, headers = self._dlq_meta.pop((record.stream, record.offset), (None, []))
        src_topic, _, partition = record.stream.rpartition("/")
        meta = [
            ("triage-dlq-reason", (record.dead_letter or "unknown").encode()),
            ("triage-dlq-topic", src_topic.encode()),
            ("triage-dlq-partition", partition.encode()),
            ("triage-dlq-offset", str(record.offset).encode()),
            ("triage-dlq-size", str(len(record.data)).encode()),
            ("triage-dlq-group", self.settings.group_id.encode()),
        ]
        producer = await self._dlq_producer()
        value = record.data
        with translate(SourceError, f"kafka source {self.name}: dead letter to {topic!r}"):
            try:
                fut = await producer.send(topic, value=value, key=key, headers=headers + meta)
                await fut
            except MessageSizeTooLargeError:
                # The dead-letter topic refuses the original size: keep its head, and say so.
                meta.append(("triage-dlq-truncated", str(len(value)).encode()))
                fut = await producer.send(topic, value=value[:DLQ_TRUNCATE_TO], key=key, headers=headers + meta)
                await fut
        self.dead_letters += 1

    async def aclose(self) -> None:
        self._closing = True
        self._close_calls += 1
        if self._iterating == 0 or self._close_calls >= 2:
            await self._stop()

    # --- internals --------------------------------------------------------------------------------

    def _is_closing(self) -> bool:
        return self._closing  # a call, so that type checkers do not narrow it across awaits

    def _stream(self, tp: TopicPartition) -> str:
        s = self._streams.get(tp)
        if s is None:
            s = self._streams[tp] = f"{tp.topic}/{tp.partition}"
        return s

    async def _start(self) -> AIOKafkaConsumer:
        if self._consumer is not None:
            return self._consumer
        s = self.settings
        consumer = AIOKafkaConsumer(
            **client_kwargs(s, self._servers),
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            max_poll_records=s.max_poll_records,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            # A message larger than this is still returned whole (Kafka >= 0.10.1 semantics); the
            # value check below decides what is oversized.
            max_partition_fetch_bytes=max(1024 * 1024, s.max_record_bytes + 1024),
        )
        consumer.subscribe(list(self.topics), listener=_Listener(self))
        self._consumer = consumer
        with translate(SourceError, f"kafka source {self.name}: connect to {self._servers}"):
            try:
                await consumer.start()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._stop()
                raise
        return consumer

    async def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        consumer, producer = self._consumer, self._producer
        try:
            if consumer is not None:
                await consumer.stop()  # leaves the group, so its partitions move at once
        except KafkaError as e:
            log.warning("consumer stop failed", source=self.name, error=str(e))
        finally:
            if producer is not None:
                try:
                    await producer.stop()
                except KafkaError as e:
                    log.warning("dead-letter producer stop failed", source=self.name, error=str(e))

    async def _dlq_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            s = self.settings
            producer = AIOKafkaProducer(
                **client_kwargs(s, self._servers),
                acks="all" if s.acks == "all" else int(s.acks),
                enable_idempotence=s.enable_idempotence,
                max_request_size=max(1024 * 1024, s.max_record_bytes * 2),
            )
            with translate(SourceError, f"kafka source {self.name}: dead-letter producer"):
                await producer.start()
            self._producer = producer
        return self._producer

    def _records(self, data: Mapping[TopicPartition, list[Any]]) -> list[StreamBatch | RowBatch]:
        """The records of one poll, one batch per partition."""
        batches: list[StreamBatch | RowBatch] = []
        now = self._clock()
        max_bytes = self.settings.max_record_bytes
        dead_letters = bool(self.settings.dead_letter_topic)
        consumer = self._consumer
        for tp, msgs in data.items():
            part = self._parts.get(tp)
            if part is None or part.revoking or not msgs:
                continue  # revoked meanwhile: its next owner reads these from the last commit
            stream = self._stream(tp)
            make = self._maker(stream, now)
            if not dead_letters:  # the common case: columns made in C, a Record only when one is needed
                batches.append(self._row_batch(stream, msgs, make))
            else:
                out = StreamBatch()
                batches.append(out)
                for m in msgs:
                    value = m.value if m.value is not None else b""  # a tombstone: counted blank
                    r = make(m, value, self._attributes_of(m.key, m.headers))
                    if len(value) > max_bytes:
                        r.dead_letter = "oversized"
                    elif looks_binary(value):
                        r.dead_letter = "undecodable"
                    if r.dead_letter is not None:
                        self._dlq_meta[(stream, m.offset)] = (m.key, list(m.headers))
                    out.append(r)
            if part.first < 0:
                part.first = msgs[0].offset
            part.yielded = msgs[-1].offset + 1
            if not part.paused and part.uncommitted > self._pause_at and consumer is not None:
                part.paused = True
                consumer.pause(tp)
        return batches

    def _maker(self, stream: str, now: float) -> Callable[[Any, bytes, dict[str, str] | None], Record]:
        """How a message of ``stream`` becomes a Record (``now``: its time when it has none)."""
        name = self.name

        def make(m: Any, value: bytes, attributes: dict[str, str] | None) -> Record:
            ts = m.timestamp
            return Record(value, name, stream, m.offset, m.offset + 1, ts / 1000 if ts and ts > 0 else now, "",
                          attributes)

        return make

    def _row_batch(self, stream: str, msgs: list[Any],
                   make: Callable[[Any, bytes, dict[str, str] | None], Record]) -> RowBatch:
        """One partition's messages as a :class:`RowBatch`: values, offsets and attributes (one shared
        dict per key) as columns; ``make`` turns a message into a Record when the pipeline asks."""
        values: list[bytes] = list(map(_VALUE, msgs))
        if None in values:  # tombstones: no log line (the decoder counts them blank)
            values = [v if v is not None else b"" for v in values]
        offsets: list[int] = list(map(_OFFSET, msgs))
        attributes_of = self._attributes_of
        if any(map(_HEADERS, msgs)):
            attrs = [attributes_of(m.key, m.headers) for m in msgs]
        else:
            attrs = list(map(self._attr_cache.get, map(_KEY, msgs)))
            if None in attrs:  # a key not cached yet (or no key)
                attrs = [a if a is not None else attributes_of(m.key, ()) for a, m in zip(attrs, msgs, strict=True)]
        return RowBatch(stream, msgs, values, offsets, attrs, make)

    def _attributes_of(self, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> dict[str, str] | None:
        """A message's key and headers as attributes (keyed without headers: one shared dict per key)."""
        if headers:
            return _attributes(key, headers)
        if key is None:
            return None
        cache = self._attr_cache
        attrs = cache.get(key)
        if attrs is None:
            if len(cache) >= _ATTR_CACHE_MAX:
                cache.clear()
            attrs = cache[key] = _attributes(key, ())
        return attrs

    async def _caught_up(self, consumer: AIOKafkaConsumer) -> bool:
        """Replay mode: every assigned partition is read to its high-water mark (after an empty poll)."""
        if not self._assigned_once:
            return False
        for tp in consumer.assignment():
            high = consumer.highwater(tp)  # known once a fetch for the partition answered
            if high is None:
                return False
            try:
                if await consumer.position(tp) < high:
                    return False
            except KafkaError:
                return False
        return True

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._parts[tp] = _Partition()
        self._assigned_once = True
        log.info("partitions assigned", source=self.name, partitions=sorted(map(self._stream, assigned)))
        if self._on_rebalance is not None:
            self._on_rebalance(frozenset(map(self._stream, assigned)), frozenset())

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        parts = [(tp, self._parts[tp]) for tp in revoked if tp in self._parts]
        for _, part in parts:
            part.revoking = True
        # Wait for the checkpoints in flight to commit what was handed out, bounded in time.
        with anyio.move_on_after(self.settings.revoke_timeout_s):
            while any(p.uncommitted for _, p in parts) and not self._stopped:
                if self._progress is None:
                    self._progress = anyio.Event()
                await self._progress.wait()
        left = sum(p.uncommitted for _, p in parts)
        if left:
            self.revoked_uncommitted += left
            log.warning("revoked with records not committed (their next owner reads them again)",
                        source=self.name, records=left)
        for tp, _ in parts:
            del self._parts[tp]
        if self._on_rebalance is not None:
            self._on_rebalance(frozenset(), frozenset(self._stream(tp) for tp, _ in parts))


def _attributes(key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Key and headers as bounded text attributes, plus ``service`` from a header or the key."""
    attrs: dict[str, str] = {}
    if key is not None:
        attrs["key"] = key[:MAX_ATTR_VALUE].decode("utf-8", "replace")
    for name, value in headers[:MAX_HEADERS]:
        attrs[name[:MAX_ATTR_NAME]] = (value or b"")[:MAX_ATTR_VALUE].decode("utf-8", "replace")
    for h in _SERVICE_HEADERS:
        v = attrs.get(h)
        if v:
            attrs["service"] = v
            break
    else:
        k = attrs.get("key", "")
        if k and len(k) <= MAX_ATTR_NAME and k.isprintable() and " " not in k:
            attrs["service"] = k
    return attrs
