"""Records/s of the whole pipeline with the repeat-shape lane on and off, in the same run.

Two inputs, each as four in-memory streams in batches of 500 Records (so no broker and no Kafka
source in the picture): ``repeating`` is the stream of ``bench/kafka.py``
(shapes repeat, ids and durations change), ``unique`` has a random hex id in every line (no shape ever
repeats: the lane should step aside). Every run must account for every record.

Run: ``python bench/lane.py [--records N] [--repeat R]`` (best of R runs per row).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.kafka import _lines
from tests.support.fakes import ListSource
from triage.app import build
from triage.model import Record, StreamBatch
from triage.settings import load_settings


def _batches(kind: str, n: int) -> list[list[Record]]:
    if kind == "repeating":
        values = [v for _, v in _lines(n)]
    else:
        rng = random.Random(1)
        values = [f'{{"ts":"2026-03-14T09:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z","level":"info",'
                  f'"msg":"request {rng.getrandbits(64):x} done"}}'.encode() for i in range(n)]
    attrs = {"key": "svc", "service": "svc"}
    parts: list[list[Record]] = [[] for _ in range(4)]
    for i, v in enumerate(values):
        part = parts[i % 4]
        part.append(Record(v, "bench", f"logs/{i % 4}", len(part), len(part) + 1, 1.0, "", attrs))
    return [StreamBatch(p[s:s + 500]) for s in range(0, len(parts[0]), 500) for p in parts if p[s:s + 500]]


def _run(kind: str, n: int, lane: bool) -> float:
    batches = _batches(kind, n)
    with tempfile.TemporaryDirectory() as state:
        settings = load_settings(None, state_dir=Path(state), sinks=(), sources=("stdin",),
                                 pipeline={"fast_lane": lane})
        app = build(settings, follow=False, quiet=True)
        source = ListSource(batches, name=app.pipeline.sources[0].name)
        app.pipeline.sources = [source]
        app.pipeline._by_name = {source.name: source}
        try:
            t0 = time.perf_counter()
            counters = anyio.run(app.pipeline.run)
            secs = time.perf_counter() - t0
        finally:
            app.store.close()
    if counters.read != n or not counters.balanced():
        raise SystemExit(f"{kind}: read {counters.read} of {n}, balanced={counters.balanced()}")
    return n / secs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)
    print(f"{'input':10} {'full path':>12} {'lane':>12} {'ratio':>7}")
    for kind in ("repeating", "unique"):
        full = max(_run(kind, args.records, False) for _ in range(args.repeat))
        lane = max(_run(kind, args.records, True) for _ in range(args.repeat))
        print(f"{kind:10} {full:12,.0f} {lane:12,.0f} {lane / full:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
