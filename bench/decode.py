"""Lines/s of the decoder alone and of decode + multi-line assembly, on two inputs.

Inputs: the demo sample (plain, JSON, logfmt and stack traces of four services) and the synthetic
Kafka lines of ``bench/kafka.py`` (mostly flat JSON and ISO-prefixed plain lines). Records are built
before timing, so only ``Decoder.__call__`` (and ``MultilineAssembler.push``) are measured; the best
of ``--repeat`` rounds is kept (a noisy machine only ever makes a round slower).

``--baseline FILE`` loads another copy of ``decode.py`` (e.g. the previous version) and times it in
the same run, round by round alternating with the current one, so the ratio holds under load.

Run: ``python bench/decode.py [--records N] [--repeat R] [--baseline OLD_decode.py]``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.kafka import _lines
from triage.accounting import Counters
from triage.demo import SAMPLE_DIR
from triage.model import Record
from triage.parsing import Decoder, MultilineAssembler


def _sample_records() -> list[Record]:
    now = time.time()
    out: list[Record] = []
    for gz in sorted(SAMPLE_DIR.glob("*.log.gz")):
        offset = 0
        for line in gzip.decompress(gz.read_bytes()).splitlines():
            end = offset + len(line) + 1
            out.append(Record(line, "bench", gz.name, offset, end, now, str(gz)))
            offset = end
    return out


def _kafka_records(n: int) -> list[Record]:
    now = time.time()
    return [Record(v, "k", f"t/{i % 4}", i, i + 1, now, "", {"key": k.decode(), "service": k.decode()})
            for i, (k, v) in enumerate(_lines(n))]


def _load(path: Path) -> type[Any]:
    spec = importlib.util.spec_from_file_location("bench_baseline_decode", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Decoder  # type: ignore[no-any-return]


def _run(decoder_cls: type[Any], records: list[Record], multiline: bool) -> float:
    counters = Counters()
    decode: Callable[[Record], Any] = decoder_cls(counters)
    if multiline:
        push = MultilineAssembler(counters).push
        t0 = time.perf_counter()
        for r in records:
            e = decode(r)
            if e is not None:
                push(e)
    else:
        t0 = time.perf_counter()
        for r in records:
            decode(r)
    return len(records) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000, help="synthetic Kafka lines")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; best of each kept")
    ap.add_argument("--baseline", type=Path, help="another decode.py to time in the same run")
    args = ap.parse_args()
    inputs = {"demo sample": _sample_records(), "kafka lines": _kafka_records(args.records)}
    decoders: dict[str, type[Any]] = {"current": Decoder}
    if args.baseline:
        decoders["baseline"] = _load(args.baseline)
    best: dict[tuple[str, str, bool], float] = {}
    for _ in range(args.repeat):
        for iname, records in inputs.items():
            for multiline in (False, True):
                for dname, cls in decoders.items():
                    key = (iname, dname, multiline)
                    best[key] = max(best.get(key, 0.0), _run(cls, records, multiline))
    print(f"{'input':14} {'stage':20} " + " ".join(f"{d:>12}" for d in decoders)
          + ("      ratio" if args.baseline else ""))
    for iname, records in inputs.items():
        for multiline in (False, True):
            stage = "decode + multiline" if multiline else "decode"
            figures = [best[(iname, d, multiline)] for d in decoders]
            line = f"{iname:14} {stage:20} " + " ".join(f"{f:12,.0f}" for f in figures)
            if args.baseline:
                line += f" {figures[0] / figures[1]:9.2f}x"
            print(line)
        print(f"{'':14} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
