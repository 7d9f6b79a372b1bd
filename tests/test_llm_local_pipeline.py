"""End to end: a real cluster of the demo incident, summarized by the real local model through the pipeline."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.support.fakes import ListSource, records
from tests.test_summarize import StreamingRecorder
from triage.app import build
from triage.demo import SAMPLE_DIR
from triage.settings import load_settings
from triage.summarize.local_model import LocalModel, missing_reason

REASON = missing_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REASON is not None, reason=f"local model unavailable: {REASON}"),
]


def _first_keyerror_trace() -> list[str]:
    """The first 'KeyError: customer_tier' event of the demo's orders service, all of its lines."""
    lines = gzip.decompress((SAMPLE_DIR / "orders.log.gz").read_bytes()).decode().splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("KeyError: 'customer_tier'"))
    start = max(i for i in range(end) if "ERROR" in lines[i] and "Failed to build order summary" in lines[i])
    return lines[start : end + 1]


@pytest.mark.anyio
async def test_demo_cluster_gets_a_streamed_model_summary(tmp_path: Path) -> None:
    """The KeyError cluster is announced, its summary streams from the local model, version 2 carries it."""
    trace = _first_keyerror_trace()
    assert len(trace) > 5
    async with LocalModel(threads=1, n_ctx=2048, start_timeout=120) as model:
        settings = load_settings(
            None, state_dir=tmp_path / "state", sinks=(),
            llm={"provider": "local", "base_url": model.base_url, "max_tokens": 64, "read_timeout_s": 300,
                 "samples": 1, "neighbour_lines": 0, "prompt_max_chars": 2400, "max_retries": 0,
                 "drain_timeout_s": 300},
        )
        app = build(settings, follow=False)
        rec = StreamingRecorder()
        app.pipeline.sinks = [rec]  # type: ignore[list-item]
        source = ListSource([records(trace, path="orders.log")])
        app.pipeline.sources = [source]
        app.pipeline._by_name = {source.name: source}
        try:
            counters = await app.pipeline.run()
        finally:
            await app.aclose()
            app.store.close()
    # Strict: one event from the whole trace, announced once, then the model's version of it.
    assert counters.read == len(trace) and counters.clustered == 1 and counters.balanced()
    assert [f.version for f in rec.findings] == [1, 2]
    first, second = rec.findings
    assert first.exception is not None and first.exception.type == "KeyError"
    assert first.summary is not None and first.summary.source == "model-free"
    assert second.kind == "summary" and second.summary is not None
    assert second.summary.source == "llm" and second.summary.model == "local"
    assert rec.deltas and all(fid == first.id for fid, _ in rec.deltas)
    # Loose: the model said something, and what streamed is what the final summary holds.
    streamed = "".join(text for _, text in rec.deltas)
    assert streamed.strip()
    assert second.summary.text.startswith(streamed.strip()[:20])
