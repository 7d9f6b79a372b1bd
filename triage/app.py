"""Wiring: from one ``Settings`` to a ready pipeline (sources, sinks, store, clusterer, detector).

Kept apart from ``cli.py`` so that tests and benchmarks build the same pipeline the CLI runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

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
from triage.model import Level
from triage.pipeline import Pipeline
from triage.settings import Settings
from triage.store import Store
from triage.summarize.fallback import ModelFreeSummarizer


@dataclass
class App:
    settings: Settings
    store: Store
    pipeline: Pipeline


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
        else:
            raise ConfigError(f"source {spec!r}: expected file:GLOB or stdin")
    return sources


def build_sinks(specs: Sequence[str], *, color: bool | None = None, quiet: bool = False,
                console_file: TextIO | None = None) -> list[Sink]:
    sinks: list[Sink] = []
    for spec in specs:
        if spec == "terminal":
            if not quiet:
                sinks.append(TerminalSink(file=console_file, color=color))
        elif spec.startswith("jsonl:") and len(spec) > len("jsonl:"):
            sinks.append(JsonlSink(Path(spec[len("jsonl:"):])))
        else:
            raise ConfigError(f"sink {spec!r}: expected terminal or jsonl:PATH")
    return sinks


def build(settings: Settings, *, follow: bool, color: bool | None = None, quiet: bool = False,
          source_name: str | None = None, console_file: TextIO | None = None) -> App:
    """Open the store and build the pipeline described by ``settings``."""
    sinks = build_sinks(settings.sinks, color=color, quiet=quiet, console_file=console_file)
    store = Store.open(settings.state_dir)
    try:
        sources = build_sources(settings, store, follow=follow, name=source_name)
        clusterer = StreamingClusterer(max_clusters=settings.clustering.max_clusters,
                                       max_samples=settings.clustering.max_samples, on_evict=store.touch)
        clusterer.restore(store.load_clusters(limit=settings.clustering.max_clusters))
        detector = Detector(min_level=Level[settings.detect.min_level], versions=store.finding_versions())
        pipeline = Pipeline(
            sources=sources, sinks=sinks, store=store, clusterer=clusterer, detector=detector,
            summarize=ModelFreeSummarizer(), settings=settings.pipeline,
            max_line_bytes=settings.file.max_line_bytes,
        )
    except BaseException:
        store.close()
        raise
    return App(settings=settings, store=store, pipeline=pipeline)


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
        f"findings={c.findings} checkpoints={app.pipeline.checkpoints}",
        file=file,
    )
