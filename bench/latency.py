"""Latency from a new error line appended to a watched file to (a) the first summary token at the sink
and (b) the complete finding (the model's answer as a new version), p50/p95 over many new clusters.

Two model endpoints, each in the same run as the pipeline:
- an emulator (the in-process OpenAI-compatible server of the test suite, over real HTTP on 127.0.0.1)
  streaming at 2,000 tokens/s after a 150 ms time to first token, like a fast hosted endpoint;
- the real local model (``make model``), when installed: fewer clusters, it is slow on a CPU.

The pipeline's own overhead is the total time minus the model's time (request sent → answer done, as
measured by the client). Lines are JSON log lines: a plain line at ERROR is held up to the multi-line
quiet time (200 ms by default) in case a stack trace follows; that hold is reported separately.

Run: ``python bench/latency.py [--n 50] [--local-n 5] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.openai_server import FakeOpenAIServer, Script, tokenize
from triage.app import build
from triage.model import Finding
from triage.settings import load_settings

ANSWER = {
    "title": "Checkout cannot reach the database",
    "summary": (
        "Every checkout request fails since the deploy because the service cannot obtain a database "
        "connection; the pool is exhausted and requests time out after 30 seconds, so customers see "
        "errors at payment."
    ),
    "likely_cause": "The new release leaks connections on the payment path, exhausting the pool.",
    "fix_steps": ["Roll back to the previous release", "Raise the pool size temporarily",
                  "Find the unclosed connection in the payment path"],
    "severity": "high",
    "confidence": 0.6,
    "related_clusters": [],
}
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "jasper", "kelp", "lagoon", "meadow", "nickel", "onyx", "pebble", "quartz", "river", "summit", "timber", "umber", "violet", "willow", "yarrow", "zephyr"]


class TimingSink:
    """Records when each finding's first summary delta and final version arrive."""

    name = "timing"

    def __init__(self) -> None:
        self.first_delta: dict[str, float] = {}
        self.complete: dict[str, float] = {}
        self.by_message: dict[str, str] = {}
        self.done = anyio.Event()

    async def summary_delta(self, finding: Finding, text: str) -> None:
        self.first_delta.setdefault(finding.id, time.perf_counter())

    async def emit(self, finding: Finding) -> None:
        if finding.samples:
            self.by_message[finding.samples[0].message] = finding.id
        if finding.kind == "summary":
            self.complete[finding.id] = time.perf_counter()
            self.done.set()

    async def flush(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _messages(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.sample(WORDS, 7)
        out.append(f"{words[0]} {words[1]} {words[2]} failed while {words[3]} {words[4]} was {words[5]} "
                   f"{words[6]} (case {i})")
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def _measure(base_url: str, model: str, n: int, *, max_tokens: int, seed: int,
                   provider: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "app.log"
        log.write_bytes(b"")
        llm: dict[str, Any] = {"base_url": base_url, "model": model, "max_tokens": max_tokens,
                               "read_timeout_s": 120, "tokens_per_hour": 10_000_000}
        if provider:
            llm["provider"] = provider
        settings = load_settings(None, state_dir=Path(tmp) / "state", sinks=(), sources=(f"file:{log}",),
                                 llm=llm)
        app = build(settings, follow=True)
        sink = TimingSink()
        app.pipeline.sinks = [sink]  # type: ignore[list-item]
        first: list[float] = []
        complete: list[float] = []
        overhead: list[float] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(app.pipeline.run)
                with log.open("ab", buffering=0) as f:
                    for message in _messages(n, seed):
                        sink.done = anyio.Event()
                        line = orjson.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                             "level": "error", "service": "checkout", "msg": message})
                        t0 = time.perf_counter()
                        f.write(line + b"\n")
                        with anyio.fail_after(600):
                            await sink.done.wait()
                        cid = sink.by_message[message]
                        first.append(sink.first_delta[cid] - t0)
                        total = sink.complete[cid] - t0
                        complete.append(total)
                        assert app.llm is not None
                        overhead.append(total - app.llm.call_seconds[-1])
                app.pipeline.stop()
        finally:
            await app.aclose()
            app.store.close()
    return {
        "first_token_p50_s": round(_pct(first, 0.5), 4), "first_token_p95_s": round(_pct(first, 0.95), 4),
        "complete_p50_s": round(_pct(complete, 0.5), 4), "complete_p95_s": round(_pct(complete, 0.95), 4),
        "overhead_p95_s": round(_pct(overhead, 0.95), 4), "overhead_p50_s": round(_pct(overhead, 0.5), 4),
        "n": len(complete),
    }


async def _emulator(n: int) -> dict[str, Any]:
    content = json.dumps(ANSWER)
    server = FakeOpenAIServer(default=Script(content=content, ttft_s=0.150, tokens_per_s=2000.0))
    async with server.serve() as base_url:
        result = await _measure(base_url, "emulator", n, max_tokens=600, seed=1)
    tokens = len(tokenize(content))
    result["model_time_s"] = round(0.150 + tokens / 2000.0, 4)
    result["answer_tokens"] = tokens
    return result


async def _local(n: int, threads: int) -> dict[str, Any] | None:
    from triage.summarize import local_model

    reason = local_model.missing_reason()
    if reason is not None:
        print(f"local model: skipped ({reason})", file=sys.stderr)
        return None
    async with local_model.LocalModel(threads=threads) as model:
        return await _measure(model.base_url, "local", n, max_tokens=256, seed=2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=50, help="new clusters against the emulator")
    ap.add_argument("--local-n", type=int, default=3, help="new clusters against the local model (0: skip)")
    ap.add_argument("--threads", type=int, default=1, help="threads of the local model (1 on a busy machine)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict[str, Any] = {"emulator": anyio.run(_emulator, args.n)}
    print("emulator:", json.dumps(results["emulator"]), flush=True)
    if args.local_n:
        local = anyio.run(_local, args.local_n, args.threads)
        if local is not None:
            results["local_model"] = local
    print(f"{'endpoint':12} {'n':>4} {'first p50':>10} {'first p95':>10} {'done p50':>9} {'done p95':>9} "
          f"{'overhead p95':>13}")
    for name, r in results.items():
        print(f"{name:12} {r['n']:4d} {r['first_token_p50_s']:10.3f} {r['first_token_p95_s']:10.3f} "
              f"{r['complete_p50_s']:9.3f} {r['complete_p95_s']:9.3f} {r['overhead_p95_s']:13.3f}")
    e = results["emulator"]
    print(f"targets (emulator): first token p95 <= 1.0 s: {e['first_token_p95_s'] <= 1.0}; "
          f"complete p95 <= 2.0 s: {e['complete_p95_s'] <= 2.0}; overhead p95 <= 0.1 s: {e['overhead_p95_s'] <= 0.1}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
