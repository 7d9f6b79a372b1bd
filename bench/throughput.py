"""Throughput and peak memory of triage's clusterer against Drain3, next to the JSON-decoding floor.

    python bench/throughput.py [--data ../shared/loghub2k] [--lines 300000] [--json OUT]

The default of 300,000 lines per stream keeps the run near 3 minutes on 2 cores (Drain3 slows down on
the changing stream as its clusters fragment); ``--lines 1000000`` is the issue's 1M-line run.

Streams (generated from the Loghub-2k systems, read in place, never copied):
- ``repeat``: the concrete Content lines of all systems, interleaved, cycled up to ``--lines``;
- ``changing``: the same lines rebuilt from their ground-truth template with every parameter re-drawn
  (each digit replaced by a random digit, parameters without digits swapped for another value seen at
  that wildcard of that template), so almost every line is new text.

Each (engine, stream) runs in its own subprocess; the stream is generated in chunks of 10,000 lines
outside the timed loop. Reported: lines/s of the engine loop, and peak memory as the largest growth of
the process's resident set (sampled after every chunk) over its size before the first line. triage runs the
full ``StreamingClusterer.add`` on one ``Event`` per line (Events are built in chunks of 10,000 outside
the timed loop: building them is the decoder's work, and Drain3 is given the bare strings);
Drain3 runs ``add_log_message`` with its default configuration. The floor is ``orjson.loads`` of the
same number of JSON records read from a file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import drain3_miner, systems  # noqa: E402

_DIGIT = re.compile(r"\d")


def build_lines(data: Path, n: int, stream: str, seed: int = 7) -> tuple[list[str], int]:
    """The generated stream and its number of true templates."""
    chunks, true_templates = stream_chunks(data, n, stream, seed, chunk=n)
    return [line for c in chunks for line in c], true_templates


def stream_chunks(data: Path, n: int, stream: str, seed: int = 7, chunk: int = 10_000
                  ) -> tuple[Iterator[list[str]], int]:
    """The generated stream in chunks (so its own size does not count as engine memory)."""
    from triage.clustering import template_regex

    rng = random.Random(seed)
    per_system: list[list[tuple[list[str], list[str], str]]] = []  # (template parts, params, line)
    pools: dict[tuple[str, int], list[str]] = {}
    templates: set[str] = set()
    for system in systems(data):
        rows = []
        for line, template in zip(system.contents, system.templates, strict=True):
            parts = template.split("<*>")
            m = template_regex(template).fullmatch(line.strip()) if len(parts) > 1 else None
            params = list(m.groups()) if m is not None else []
            if m is None:
                parts = [line]
            for i, p in enumerate(params):
                pools.setdefault((system.name + template, i), []).append(p)
            rows.append((parts, params, system.name + template))
            templates.add(system.name + "\x00" + template)
        per_system.append(rows)
    return _generate(per_system, pools, n, stream, rng, chunk), len(templates)


def _generate(per_system: list[list[tuple[list[str], list[str], str]]], pools: dict[tuple[str, int], list[str]],
              n: int, stream: str, rng: random.Random, chunk: int) -> Iterator[list[str]]:
    out: list[str] = []
    k = 0
    done = 0
    while done < n:
        for rows in per_system:
            parts, params, key = rows[k % len(rows)]
            if stream == "repeat" or not params:
                out.append(_join(parts, params))
            else:
                fresh = []
                for i, p in enumerate(params):
                    if _DIGIT.search(p):
                        fresh.append(_DIGIT.sub(lambda _m: str(rng.randrange(10)), p))
                    else:
                        fresh.append(rng.choice(pools[(key, i)]))
                out.append(_join(parts, fresh))
            if len(out) >= chunk or done + len(out) >= n:
                out = out[: n - done]
                done += len(out)
                yield out
                out = []
                if done >= n:
                    return
        k += 1


def _join(parts: list[str], params: list[str]) -> str:
    if not params:
        return parts[0]
    out = [parts[0]]
    for p, lit in zip(params, parts[1:], strict=True):
        out.append(p)
        out.append(lit)
    return "".join(out)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(args: argparse.Namespace) -> None:
    """Run one engine on one stream and print a JSON line."""
    chunks, true_templates = stream_chunks(args.data, args.lines, args.stream)
    result: dict[str, Any] = {"true_templates": true_templates}
    secs = 0.0
    n = 0
    peak = 0.0
    base = _rss_mb()
    if args.engine == "triage":
        from triage.clustering import StreamingClusterer
        from triage.model import Event, Level

        clusterer = StreamingClusterer()
        add = clusterer.add
        info = Level.INFO
        for lines in chunks:  # Events are the decoder's output: built outside the timed loop
            events = [Event(float(n + i), info, line, line, "bench", "bench", n + i, n + i + 1)
                      for i, line in enumerate(lines)]
            t0 = time.perf_counter()
            for event in events:
                add(event)
            secs += time.perf_counter() - t0
            n += len(lines)
            del events
            peak = max(peak, _rss_mb() - base)
        result["clusters"] = len(clusterer)
    elif args.engine == "drain3":
        miner: Any = drain3_miner()
        for lines in chunks:
            t0 = time.perf_counter()
            for line in lines:
                miner.add_log_message(line)
            secs += time.perf_counter() - t0
            n += len(lines)
            peak = max(peak, _rss_mb() - base)
        result["clusters"] = len(miner.drain.clusters)
    else:  # floor: read JSON records from a file and decode them
        import orjson

        with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as f:
            for lines in chunks:
                for i, line in enumerate(lines):
                    f.write(orjson.dumps({"ts": n + i, "level": "info", "msg": line}) + b"\n")
                n += len(lines)
            path = f.name
        try:
            t0 = time.perf_counter()
            with open(path, "rb") as fh:
                for raw in fh:
                    orjson.loads(raw)
            secs = time.perf_counter() - t0
        finally:
            os.unlink(path)
    result["lps"] = n / secs
    result["peak_mb"] = peak
    print(json.dumps(result))


def run(engine: str, stream: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--engine", engine, "--stream", stream,
           "--lines", str(args.lines), "--data", str(args.data)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "loghub2k")
    ap.add_argument("--lines", type=int, default=300_000, help="lines per stream (the issue run: 1000000)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", default="triage", help=argparse.SUPPRESS)
    ap.add_argument("--stream", default="repeat", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    floor = run("floor", "repeat", args)
    report: dict[str, Any] = {"floor_lps": round(floor["lps"])}
    print(f"lines per stream: {args.lines:,}   floor (read + orjson.loads): {floor['lps']:,.0f} lines/s")
    print(f"{'stream':<9} {'triage l/s':>12} {'drain3 l/s':>12} {'ratio':>6} {'triage MB':>10} {'drain3 MB':>10}"
          f" {'clusters t/d/true':>18}")
    for stream in ("repeat", "changing"):
        t = run("triage", stream, args)
        d = run("drain3", stream, args)
        entry: dict[str, Any] = {
            "triage_lps": round(t["lps"]), "drain3_lps": round(d["lps"]),
            "triage_peak_mb": round(t["peak_mb"], 1), "drain3_peak_mb": round(d["peak_mb"], 1),
        }
        if stream == "changing":
            entry.update(triage_clusters=t["clusters"], drain3_clusters=d["clusters"],
                         true_templates=t["true_templates"])
        report[stream] = entry
        print(f"{stream:<9} {t['lps']:>12,.0f} {d['lps']:>12,.0f} {t['lps'] / d['lps']:>5.1f}x"
              f" {t['peak_mb']:>10.1f} {d['peak_mb']:>10.1f}"
              f" {t['clusters']:>6}/{d['clusters']}/{t['true_templates']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
