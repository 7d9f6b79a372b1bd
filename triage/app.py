"""Wiring: from one ``Settings`` to a ready pipeline (sources, sinks, store, clusterer, detector).

Kept apart from ``cli.py`` so that tests and benchmarks build the same pipeline the CLI runs.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
from rich.console import Console
from rich.table import Table

from connectors.sinks.base import Sink
from connectors.sinks.jsonl import JsonlSink
from connectors.sinks.terminal import TerminalSink, clean
from connectors.sources.base import Source
from connectors.sources.file import FileSource
from connectors.sources.stdin import StdinSource
from triage.clustering import StreamingClusterer
from triage.detect import Detector
from triage.errors import ConfigError
from triage.pipeline import Pipeline
from triage.redact import Redactor
from triage.settings import LLMSettings, Settings
from triage.steps import RedactSecrets
from triage.store import Store
from triage.summarize.client import ChatClient, LLMConfig
from triage.summarize.context import ContextCollector
from triage.summarize.fallback import ModelFreeSummarizer
from triage.summarize.stage import SummarizeStage
from triage.summarize.summarizer import LLMSummarizer

# Where `triage model serve` listens by default, and the model alias it serves.
LOCAL_PORT = 8080
LOCAL_BASE_URL = f"http://127.0.0.1:{LOCAL_PORT}/v1"
LOCAL_ALIAS = "local"


@dataclass
class App:
    settings: Settings
    store: Store
    pipeline: Pipeline
    llm: LLMSummarizer | None = None

    async def aclose(self) -> None:
        if self.llm is not None:
            await self.llm.chat.aclose()


def build_sources(settings: Settings, store: Store, *, follow: bool, name: str | None = None) -> list[Source]:
    sources: list[Source] = []
    for spec in settings.sources:
        if spec.startswith("file:"):
            pattern = spec[len("file:"):]
            if not pattern:
                raise ConfigError(f"source {spec!r}: expected file:GLOB")
            sources.append(FileSource(
                name or spec, [pattern], store, start_at=settings.file.start_at, follow=follow,
                poll_interval=settings.file.poll_interval_s, max_line_bytes=settings.file.max_line_bytes,
            ))
        elif spec in ("stdin", "-"):
            sources.append(StdinSource(max_line_bytes=settings.file.max_line_bytes))
        elif spec.startswith("kafka://"):
            from connectors.kafka_common import parse_kafka_url
            from connectors.sources.kafka import KafkaSource

            servers, topic = parse_kafka_url(spec, settings.kafka)
            p = settings.pipeline  # a paused partition must always have a checkpoint in flight
            floor = p.checkpoint_records + p.max_event_lines + settings.kafka.max_poll_records
            sources.append(KafkaSource(
                name or spec, [topic], settings.kafka, bootstrap_servers=servers, follow=follow,
                pause_uncommitted_records=max(settings.kafka.pause_uncommitted_records, floor),
            ))
        else:
            raise ConfigError(f"source {spec!r}: expected file:GLOB, stdin or kafka://HOST:PORT/TOPIC")
    return sources


def build_sinks(settings: Settings, store: Store, *, color: bool | None = None, quiet: bool = False,
                console_file: TextIO | None = None) -> list[Sink]:
    sinks: list[Sink] = []
    for spec in settings.sinks:
        if spec == "terminal":
            if not quiet:
                sinks.append(TerminalSink(file=console_file, color=color))
        elif spec.startswith("jsonl:") and len(spec) > len("jsonl:"):
            sinks.append(JsonlSink(Path(spec[len("jsonl:"):])))
        elif spec == "slack":
            from connectors.sinks.slack import SlackSink

            sinks.append(SlackSink(settings.slack, store, expect_model_summary=settings.llm.enabled))
        elif spec.startswith("kafka://"):
            from connectors.kafka_common import parse_kafka_url
            from connectors.sinks.kafka import KafkaSink

            servers, topic = parse_kafka_url(spec, settings.kafka, default_topic=settings.kafka.findings_topic)
            sinks.append(KafkaSink(topic, settings.kafka, bootstrap_servers=servers, name=spec))
        else:
            raise ConfigError(f"sink {spec!r}: expected terminal, jsonl:PATH, slack or kafka://HOST:PORT/TOPIC")
    return sinks


def build(settings: Settings, *, follow: bool, color: bool | None = None, quiet: bool = False,
          source_name: str | None = None, console_file: TextIO | None = None,
          transport: httpx.AsyncBaseTransport | None = None) -> App:
    """Open the store and build the pipeline described by ``settings``.

    ``transport`` (tests) replaces the network under the model client.
    """
    store = Store.open(settings.state_dir)
    try:
        sinks = build_sinks(settings, store, color=color, quiet=quiet, console_file=console_file)
        sources = build_sources(settings, store, follow=follow, name=source_name)
        clusterer = StreamingClusterer(max_clusters=settings.clustering.max_clusters,
                                       max_samples=settings.clustering.max_samples, on_evict=store.touch,
                                       on_merge=store.merged)
        clusterer.restore(store.load_clusters(limit=settings.clustering.max_clusters))
        detector = Detector(settings.detect, versions=store.finding_versions(), silences=store.active_silences,
                            resolved=store.resolved_incidents(), variants=store.variants(),
                            on_variant=store.add_variant,
                            firing=store.firing_incidents(settings.detect.max_incidents))
        try:
            redactor = Redactor(pii=settings.redact.pii, ips=settings.redact.ips,
                                extra_patterns=settings.redact.extra_patterns)
        except re.error as e:
            raise ConfigError(f"setting 'redact.extra_patterns': invalid regex {e.pattern!r}: {e}") from e
        llm = build_llm(settings, redactor=redactor, store=store, transport=transport)
        stage = SummarizeStage(store=store, detector=detector, fallback=ModelFreeSummarizer(), llm=llm,
                               settings=settings.llm)
        pipeline = Pipeline(
            sources=sources, sinks=sinks, store=store, clusterer=clusterer, detector=detector,
            summarizer=stage, settings=settings.pipeline, max_line_bytes=settings.file.max_line_bytes,
            steps=[RedactSecrets(redactor)],
            context=ContextCollector(lines=settings.llm.neighbour_lines, window_s=settings.llm.related_window_s),
        )
    except BaseException:
        store.close()
        raise
    return App(settings=settings, store=store, pipeline=pipeline, llm=llm)


def llm_config(settings: LLMSettings) -> LLMConfig:
    """The client's config from settings: a provider preset, overridden by base_url/api_key."""
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    common: dict[str, Any] = {
        "connect_timeout": settings.connect_timeout_s, "read_timeout": settings.read_timeout_s,
        "max_retries": settings.max_retries, "breaker_failures": settings.breaker_failures,
        "breaker_reset_s": settings.breaker_reset_s,
    }
    if settings.provider == "local":
        base = settings.base_url or LOCAL_BASE_URL
        return LLMConfig(base_url=base, model=settings.model or LOCAL_ALIAS, api_key=api_key, **common)
    if settings.provider is not None:
        if not settings.model:
            raise ConfigError(f"setting 'llm.model': required with llm.provider = {settings.provider!r}")
        return LLMConfig.from_provider(settings.provider, settings.model, base_url=settings.base_url,
                                       api_key=api_key, **common)
    if not settings.base_url:
        raise ConfigError("setting 'llm.base_url': required to use a model")
    if not settings.model:
        raise ConfigError("setting 'llm.model': required with llm.base_url")
    return LLMConfig(base_url=settings.base_url, model=settings.model, api_key=api_key, **common)


def build_llm(settings: Settings, *, redactor: Redactor, store: Store,
              transport: httpx.AsyncBaseTransport | None = None) -> LLMSummarizer | None:
    if not settings.llm.enabled:
        return None
    config = llm_config(settings.llm)
    client = None
    if transport is not None:
        client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(
            connect=config.connect_timeout, read=config.read_timeout, write=config.read_timeout,
            pool=config.connect_timeout))
    chat = ChatClient(config, client=client)
    return LLMSummarizer(chat, settings=settings.llm, redactor=redactor, cache=store,
                         audit_log=settings.llm.audit_log)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def print_clusters(app: App, *, top: int = 25, file: TextIO | None = None) -> None:
    """The final table: clusters by level then count."""
    app.store.flush()
    clusters = app.store.load_clusters()
    clusters.sort(key=lambda c: (-int(c.level), -c.count))
    found = app.store.finding_versions()
    table = Table(title=f"clusters ({len(clusters)} in all; top {min(top, len(clusters))})", expand=False)
    for col in ("", "level", "service", "count", "first", "last", "id", "template"):
        table.add_column(col, overflow="fold" if col == "template" else "ellipsis", no_wrap=col != "template")
    for c in clusters[:top]:
        service = max(c.services, key=lambda s: c.services[s]) if c.services else ""
        table.add_row("●" if c.id in found else "", c.level.name, clean(service), str(c.count),
                      _when(c.first_seen), _when(c.last_seen), c.id, clean(c.template)[:160])
    Console(file=file or sys.stdout, highlight=False, width=200).print(table)


def print_counters(app: App, *, file: TextIO) -> None:
    c = app.pipeline.counters
    dropped = ", ".join(f"{k}={v}" for k, v in sorted(c.dropped.items())) or "none"
    status = "balanced" if c.balanced() else f"UNBALANCED ({c.read - c.accounted} unaccounted)"
    print(
        f"records: read={c.read} clustered={c.clustered} merged={c.merged} "
        f"dropped={c.dropped_total} ({dropped}) dead_lettered={c.dead_lettered} -> {status}; "
        f"decoded={c.decoded} truncated={c.truncated} invalid_utf8={c.invalid_utf8} "
        f"findings={c.findings} checkpoints={app.pipeline.checkpoints} fast_lane={app.pipeline.lane_records}",
        file=file,
    )
