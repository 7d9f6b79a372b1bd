"""Lines/s of decode, decode+cluster and the whole pipeline on the demo sample, next to the floor.

The floor is a plain read of the same (decompressed) file, in the same run, so the ratios hold on a
noisy machine. Run: ``python bench/pipeline.py [--repeat N] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import anyio

from triage.accounting import Counters
from triage.app import build
from triage.clustering import StreamingClusterer
from triage.demo import SAMPLE_DIR
from triage.model import Record
from triage.parsing import Decoder, MultilineAssembler
from triage.settings import load_settings


def _concat_sample(out: Path, repeat: int) -> int:
    """Decompress the demo sample into one plain file (``repeat`` copies); return its line count."""
    lines = 0
    with out.open("wb") as f:
        for _ in range(repeat):
            for gz in sorted(SAMPLE_DIR.glob("*.log.gz")):
                data = gzip.decompress(gz.read_bytes())
                f.write(data if data.endswith(b"\n") else data + b"\n")
                lines += data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    return lines


def _floor(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        for _line in f:
            n += 1
    return n


def _decode(path: Path, cluster: bool) -> int:
    counters = Counters()
    decoder = Decoder(counters)
    assembler = MultilineAssembler(counters)
    clusterer = StreamingClusterer() if cluster else None
    now = time.time()
    offset = 0
    events = 0
    with path.open("rb") as f:
        for line in f:
            end = offset + len(line)
            record = Record(line.rstrip(b"\n"), "bench", "s", offset, end, now, str(path))
            offset = end
            event = decoder(record)
            if event is None:
                continue
            for done in assembler.push(event):
                events += 1
                if clusterer is not None:
                    clusterer.add(done)
    for done in assembler.flush_all():
        events += 1
        if clusterer is not None:
            clusterer.add(done)
    return events


def _pipeline(path: Path) -> int:
    with tempfile.TemporaryDirectory() as state:
        settings = load_settings(None, sources=(f"file:{path}",), sinks=(), state_dir=Path(state))
        app = build(settings, follow=False)
        try:
            counters = anyio.run(app.pipeline.run)
        finally:
            app.store.close()
        assert counters.balanced(), counters.as_dict()
        return counters.read


def _time(fn: object, *args: object) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn(*args)  # type: ignore[operator]
    return time.perf_counter() - t0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=1, help="copies of the sample to feed")
    ap.add_argument("--json", type=Path, help="write the figures as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sample.log"
        lines = _concat_sample(path, args.repeat)
        results = {}
        for name, fn, fargs in (
            ("floor (plain read)", _floor, (path,)),
            ("decode + multiline", _decode, (path, False)),
            ("decode + multiline + cluster", _decode, (path, True)),
            ("whole pipeline (file source → store)", _pipeline, (path,)),
        ):
            secs, _ = _time(fn, *fargs)
            results[name] = lines / secs
    floor = results["floor (plain read)"]
    print(f"demo sample: {lines} lines ({args.repeat}×)")
    print(f"{'stage':40} {'lines/s':>12} {'vs floor':>9}")
    for name, lps in results.items():
        print(f"{name:40} {lps:12,.0f} {lps / floor:9.3f}")
    if args.json:
        args.json.write_text(json.dumps({"lines": lines, "lines_per_s": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
