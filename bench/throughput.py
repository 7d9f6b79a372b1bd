"""Throughput and peak memory of triage's clusterer against Drain3, next to the JSON-decoding floor.

    python bench/throughput.py [--data ../shared/loghub2k] [--lines 1000000] [--drain3-changing-lines N]
                               [--cap-check] [--json OUT]

Streams (generated from the Loghub-2k systems, read in place, never copied):
- ``repeat``: the concrete Content lines of all systems, interleaved, cycled up to ``--lines``;
- ``changing``: the same lines rebuilt from their ground-truth template with every parameter re-drawn
  (each digit replaced by a random digit, parameters without digits swapped for another value seen at
  that wildcard of that template), so almost every line is new text.

Isolation. Every measurement runs in a fresh interpreter (this script re-run with a hidden ``--worker``
flag), one at a time, so no engine, allocator arena or stream of one measurement is seen by another.
Inside a worker the stream is generated lazily (the input is never held in memory) after the imports,
the reading of the Loghub CSVs, and a warm-up (a throw-away engine fed 1,000 lines, so lazy imports and
module-level caches are not charged to the engine).

Speed run (no tracemalloc): the stream comes in chunks of 5,000 lines generated outside the timed loop;
the clock runs only around the engine calls. triage runs ``StreamingClusterer.add`` on one ``Event`` per
line (Events are built with the chunk, outside the timed loop: building them is the decoder's work, and
Drain3 is given the bare strings); Drain3 runs ``add_log_message`` with its default configuration.
``rss`` is the process's ``ru_maxrss`` at the end minus a baseline taken in the same worker just before
the engine is created: there the high-water mark is reset to the current resident set (``clear_refs``;
without the reset it would still hold the setup's peak and, after fork, the parent's size), and the
baseline is ``ru_maxrss`` right after the reset. So ``rss`` is the resident growth of the engine plus
one chunk of input (a few MB at most). Where the reset is refused (``hwm_reset`` false in ``-v``
output) the baseline is the current resident set and ``rss`` can under-report.

Memory run (a second worker, with tracemalloc): tracemalloc starts after the warm-up, just before the
engine is created, and lines are generated and fed one at a time; ``peak`` is tracemalloc's peak of the
Python allocations made from then on: the engine's state plus the transient allocations of one line.
tracemalloc slows both engines 7-9x here, hence the separate run for speed (and no RSS from this run:
tracemalloc's own bookkeeping is resident too).

Drain3 on the changing stream slows as its clusters fragment (about 13k lines/s over the first 200k
lines, about 3k/s over 1M, and 8x slower again under tracemalloc), so by default it is measured on the
first ``--drain3-changing-lines`` lines of the same stream (printed, and written as ``drain3_lines``);
a prefix flatters Drain3. triage is also timed on that prefix (``triage_lps_on_drain3_lines``) for a
same-input ratio. ``--drain3-changing-lines 0`` runs Drain3 on all lines (about 6 more minutes, and the
tracemalloc run then takes most of an hour).

The floor is ``orjson.loads`` of the same number of JSON records read from a file.

Cap check (``--cap-check``, instead of the table above): triage on the changing stream at 250k lines and at
``--lines`` lines, with ``max_clusters=200`` and with the default cap, speed and memory runs each: memory
bounded by the cap shows as peaks that stay flat while the input grows 4x.

Time on a shared 2-core machine: about 6.5 minutes for the default run, 4.5 for ``--cap-check``; most of
it is the tracemalloc runs (tracemalloc slows these engines 7-9x).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import MB, drain3_miner, max_rss_mb, reset_max_rss, rss_mb, systems  # noqa: E402

_DIGIT = re.compile(r"\d")
CHUNK = 5_000
WARMUP = 1_000
SMALL_CAP = 200
CAP_LINES = 250_000

Row = tuple[list[str], list[str], str]  # (template literal parts, params, template key)


class StreamSource:
    """The generated streams of the Loghub-2k systems (the rows and value pools, not the lines)."""

    __slots__ = ("per_system", "pools", "true_templates")

    def __init__(self, data: Path) -> None:
        from triage.clustering import template_regex

        self.per_system: list[list[Row]] = []
        self.pools: dict[tuple[str, int], list[str]] = {}
        templates: set[str] = set()
        for system in systems(data):
            rows: list[Row] = []
            for line, template in zip(system.contents, system.templates, strict=True):
                parts = template.split("<*>")
                m = template_regex(template).fullmatch(line.strip()) if len(parts) > 1 else None
                params = list(m.groups()) if m is not None else []
                if m is None:
                    parts = [line]
                key = system.name + "\x00" + template
                for i, p in enumerate(params):
                    self.pools.setdefault((key, i), []).append(p)
                rows.append((parts, params, key))
                templates.add(key)
            self.per_system.append(rows)
        self.true_templates = len(templates)

    def lines(self, n: int, stream: str, seed: int = 7) -> Iterator[str]:
        """The first ``n`` lines of ``stream``, lazily: one system after another, cycling each."""
        rng = random.Random(seed)
        k = 0
        done = 0
        while True:
            for rows in self.per_system:
                if done >= n:
                    return
                parts, params, key = rows[k % len(rows)]
                if stream == "repeat" or not params:
                    yield _join(parts, params)
                else:
                    fresh = []
                    for i, p in enumerate(params):
                        if _DIGIT.search(p):
                            fresh.append(_DIGIT.sub(lambda _m: str(rng.randrange(10)), p))
                        else:
                            fresh.append(rng.choice(self.pools[(key, i)]))
                    yield _join(parts, fresh)
                done += 1
            k += 1


def _join(parts: list[str], params: list[str]) -> str:
    if not params:
        return parts[0]
    out = [parts[0]]
    for p, lit in zip(params, parts[1:], strict=True):
        out.append(p)
        out.append(lit)
    return "".join(out)


def _chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(islice(lines, size)):
        yield chunk


# --- worker ---------------------------------------------------------------------------------------


class _Engine:
    """One engine behind two entry points: ``feed`` (one line) and ``batch`` (a prepared chunk)."""

    def __init__(self, name: str, max_clusters: int | None) -> None:
        self.name = name
        self.n = 0
        if name == "triage":
            from triage.clustering import StreamingClusterer
            from triage.model import Event, Level

            self._event = Event
            self._info = Level.INFO
            self.impl: Any = (StreamingClusterer() if max_clusters is None
                              else StreamingClusterer(max_clusters=max_clusters))
        else:
            self.impl = drain3_miner()

    def prepare(self, lines: list[str]) -> list[Any]:
        """The engine's input for a chunk: ``Event``s for triage (the decoder's output), strings for Drain3."""
        if self.name != "triage":
            return lines
        n, ev, info = self.n, self._event, self._info
        return [ev(float(n + i), info, line, line, "bench", "bench", n + i, n + i + 1)
                for i, line in enumerate(lines)]

    def step(self) -> Callable[[Any], object]:
        return self.impl.add if self.name == "triage" else self.impl.add_log_message  # type: ignore[no-any-return]

    def clusters(self) -> int:
        return len(self.impl) if self.name == "triage" else len(self.impl.drain.clusters)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    source = StreamSource(args.data)
    result: dict[str, Any] = {"engine": args.engine, "stream": args.stream, "mode": args.mode,
                              "lines": args.lines, "true_templates": source.true_templates}
    if args.engine == "floor":
        return result | {"lps": _floor(source, args.lines)}
    cap = args.max_clusters or None
    warm = _Engine(args.engine, cap)  # warm-up: lazy imports, regex and module caches
    step = warm.step()
    for item in warm.prepare(list(source.lines(WARMUP, args.stream, seed=99))):
        step(item)
    del warm, step, item
    gc.collect()
    result["hwm_reset"] = reset_max_rss()
    base_rss = max_rss_mb() if result["hwm_reset"] else rss_mb()
    result["rss_base_mb"] = round(base_rss, 1)
    lines = source.lines(args.lines, args.stream)
    if args.mode == "memory":
        tracemalloc.start()
        engine = _Engine(args.engine, cap)
        step = engine.step()
        for line in lines:
            step(engine.prepare([line])[0])
            engine.n += 1
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result |= {"tracemalloc_peak_mb": round(peak / MB, 2), "tracemalloc_end_mb": round(current / MB, 2)}
    else:
        engine = _Engine(args.engine, cap)
        step = engine.step()
        secs = 0.0
        for chunk in _chunks(lines, CHUNK):
            items = engine.prepare(chunk)
            t0 = time.perf_counter()
            for item in items:
                step(item)
            secs += time.perf_counter() - t0
            engine.n += len(chunk)
            del items
        result["lps"] = engine.n / secs
        result["secs"] = round(secs, 2)
    result["rss_peak_mb"] = round(max_rss_mb() - base_rss, 1)
    result["clusters"] = engine.clusters()
    return result


def _floor(source: StreamSource, n: int) -> float:
    """Lines/s of reading ``n`` JSON records from a file and decoding them with ``orjson.loads``."""
    import orjson

    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as f:
        for i, line in enumerate(source.lines(n, "repeat")):
            f.write(orjson.dumps({"ts": i, "level": "info", "msg": line}) + b"\n")
        path = f.name
    try:
        t0 = time.perf_counter()
        with open(path, "rb") as fh:
            for raw in fh:
                orjson.loads(raw)
        return n / (time.perf_counter() - t0)
    finally:
        os.unlink(path)


# --- driver ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace, engine: str, stream: str, mode: str, lines: int,
        max_clusters: int = 0) -> dict[str, Any]:
    """Run one worker (a fresh interpreter) and return its JSON result."""
    cmd = [sys.executable, __file__, "--worker", "--engine", engine, "--stream", stream, "--mode", mode,
           "--lines", str(lines), "--data", str(args.data), "--max-clusters", str(max_clusters)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = dict(json.loads(out.strip().splitlines()[-1]))
    if args.verbose:
        print(f"  [{time.perf_counter() - t0:6.1f}s] {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def measure(args: argparse.Namespace, engine: str, stream: str, lines: int, max_clusters: int = 0
            ) -> dict[str, Any]:
    """Speed run and memory run of one (engine, stream), merged."""
    speed = run(args, engine, stream, "speed", lines, max_clusters)
    memory = run(args, engine, stream, "memory", lines, max_clusters)
    return speed | {"peak_mb": memory["tracemalloc_peak_mb"], "end_mb": memory["tracemalloc_end_mb"],
                    "memory_clusters": memory["clusters"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "loghub2k")
    ap.add_argument("--lines", type=int, default=1_000_000, help="lines per stream (default 1,000,000)")
    ap.add_argument("--drain3-changing-lines", type=int, default=200_000,
                    help="Drain3 on the changing stream: this prefix of it (0 = all --lines)")
    ap.add_argument("--cap-check", action="store_true",
                    help="instead of the engine table: triage's memory at two input sizes and two caps")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("-v", "--verbose", action="store_true", help="print every worker's result to stderr")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", default="triage", help=argparse.SUPPRESS)
    ap.add_argument("--stream", default="repeat", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="speed", help=argparse.SUPPRESS)
    ap.add_argument("--max-clusters", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    t_start = time.perf_counter()
    report = cap_check(args) if args.cap_check else compare(args)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    print(f"wall time: {report['wall_s']:.0f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """The issue's table: floor, then triage and Drain3 on both streams."""
    n = args.lines
    d3_changing = min(args.drain3_changing_lines or n, n)
    floor = run(args, "floor", "repeat", "speed", n)
    report: dict[str, Any] = {"lines": n, "floor_lps": round(floor["lps"])}
    print(f"lines per stream: {n:,}   floor (read + orjson.loads): {floor['lps']:,.0f} lines/s")
    print("peak MB = tracemalloc peak of the engine's allocations (separate run); rss MB = ru_maxrss growth"
          " over the pre-engine baseline (speed run)")
    print(f"{'stream':<9} {'triage l/s':>11} {'drain3 l/s':>11} {'ratio':>6} {'triage peak':>11}"
          f" {'drain3 peak':>11} {'triage rss':>10} {'drain3 rss':>10} {'clusters t/d/true':>18} {'drain3 lines':>12}")
    for stream in ("repeat", "changing"):
        d_lines = d3_changing if stream == "changing" else n
        t = measure(args, "triage", stream, n)
        d = measure(args, "drain3", stream, d_lines)
        entry: dict[str, Any] = {
            "triage_lps": round(t["lps"]), "drain3_lps": round(d["lps"]),
            "triage_peak_mb": t["peak_mb"], "drain3_peak_mb": d["peak_mb"],
            "triage_rss_peak_mb": t["rss_peak_mb"], "drain3_rss_peak_mb": d["rss_peak_mb"],
            "triage_lines": n, "drain3_lines": d_lines,
        }
        if stream == "changing":
            entry.update(triage_clusters=t["clusters"], drain3_clusters=d["clusters"],
                         true_templates=t["true_templates"])
        report[stream] = entry
        print(f"{stream:<9} {t['lps']:>11,.0f} {d['lps']:>11,.0f} {t['lps'] / d['lps']:>5.1f}x"
              f" {t['peak_mb']:>11.1f} {d['peak_mb']:>11.1f} {t['rss_peak_mb']:>10.1f} {d['rss_peak_mb']:>10.1f}"
              f" {t['clusters']:>6}/{d['clusters']}/{t['true_templates']:<5} {d_lines:>12,}")
    if d3_changing < n:
        same = run(args, "triage", "changing", "speed", d3_changing)
        report["changing"]["triage_lps_on_drain3_lines"] = round(same["lps"])
        print(f"note: Drain3 on the changing stream ran on its first {d3_changing:,} lines (its rate falls as"
              f" its clusters grow, so the prefix flatters it); triage ran all {n:,}.\n"
              f"      On the same {d3_changing:,}-line prefix triage runs {same['lps']:,.0f} lines/s,"
              f" {same['lps'] / report['changing']['drain3_lps']:.1f}x Drain3.")
    return report


def cap_check(args: argparse.Namespace) -> dict[str, Any]:
    """triage's memory on the changing stream at two input sizes, with a small and the default cap."""
    import inspect

    from triage.clustering import StreamingClusterer

    default_cap = inspect.signature(StreamingClusterer).parameters["max_clusters"].default
    sizes = sorted({min(CAP_LINES, args.lines), args.lines})
    print("cap check: triage on the changing stream (peak = tracemalloc peak MB; rss = ru_maxrss growth MB)")
    print(f"{'max_clusters':>12} {'lines':>10} {'peak MB':>8} {'end MB':>7} {'rss MB':>7} {'clusters':>9}"
          f" {'lines/s':>9}")
    out: dict[str, Any] = {"stream": "changing", "default_cap": default_cap, "small_cap": SMALL_CAP, "runs": []}
    for cap in (SMALL_CAP, default_cap):
        for lines in sizes:
            r = measure(args, "triage", "changing", lines, 0 if cap == default_cap else cap)
            row = {"max_clusters": cap, "lines": lines, "peak_mb": r["peak_mb"], "end_mb": r["end_mb"],
                   "rss_peak_mb": r["rss_peak_mb"], "clusters": r["clusters"], "lps": round(r["lps"])}
            out["runs"].append(row)
            print(f"{cap:>12,} {lines:>10,} {row['peak_mb']:>8.1f} {row['end_mb']:>7.1f} {row['rss_peak_mb']:>7.1f}"
                  f" {row['clusters']:>9,} {row['lps']:>9,}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
