"""The bundled demo incident replayed through the real pipeline into Slack (a fake answering 429 to 30% of
calls): one root message per root-cause cluster, at most one edit per second per message, nothing lost."""

from __future__ import annotations

import json
import random
from collections import Counter
from itertools import pairwise
from pathlib import Path

import anyio
import httpx
import pytest

from connectors.sinks.slack import SlackSink
from tests.fakes.openai_server import FakeOpenAIServer, Script
from tests.fakes.slack_server import TOKEN, FakeSlack, VirtualClock
from triage.app import build
from triage.settings import SlackSettings, load_settings

SAMPLE = Path(__file__).resolve().parent.parent / "triage" / "demo" / "sample"
ANSWER = {"title": "Checkout fails", "summary": "Requests fail since the v2.14.0 deploy " * 4,
          "likely_cause": "the deploy", "fix_steps": ["Roll back v2.14.0"], "severity": "high",
          "confidence": 0.6, "related_clusters": []}


@pytest.mark.anyio
class TestDemoIncidentInSlack:
    async def test_one_root_per_root_cause_throttled_edits_nothing_lost(self, tmp_path: Path) -> None:
        """Every finding of the demo reaches Slack through a 30% 429 storm, one root per cluster, edits ≤ 1/s."""
        manifest = json.loads((SAMPLE / "incident.json").read_text())
        clock = VirtualClock(autojump=True)
        fake = FakeSlack(clock=clock, ratelimit_ratio=0.3, seed=5)
        model = FakeOpenAIServer(default=Script(content=json.dumps(ANSWER)))
        settings = load_settings(None, sources=(f"file:{SAMPLE}/*.log.gz",), sinks=(), state_dir=tmp_path / "state",
                                 llm={"base_url": "http://model.test/v1", "model": "fake", "max_retries": 1})
        app = build(settings, follow=False, transport=model.transport())
        slack = SlackSettings(token=TOKEN, api_url="http://slack.test/api", channel="#incident",
                              max_roots_per_window=1000, drain_timeout_s=4.5)
        sink = SlackSink(slack, app.store, client=httpx.AsyncClient(transport=fake.transport()), clock=clock,
                         sleep=clock.sleep, rng=random.Random(1))
        app.pipeline.sinks = [sink]
        try:
            with anyio.fail_after(60):
                await app.pipeline.run()  # runs sink.run() in its task group; aclose drains the sender
        finally:
            await app.aclose()
            findings = app.store.findings()
            clusters = app.store.load_clusters()
            app.store.close()

        # Every finding delivered: nothing left in the outbox, and every cluster's root shows its last version.
        assert sink.pending == 0 and sink.failed is None
        latest: dict[str, int] = {}
        for f in findings:
            latest[f.id] = max(latest.get(f.id, 0), f.version)
        roots = fake.roots()
        by_id = Counter(m.body["blocks"][-1]["elements"][0]["text"].split("`")[1] for m in roots)
        assert set(by_id) == set(latest) and set(by_id.values()) == {1}
        for m in roots:
            tail = m.body["blocks"][-1]["elements"][0]["text"]
            assert f" · v{latest[tail.split('`')[1]]}" in tail
        # Exactly one root message per root-cause cluster.
        for cause in manifest["root_causes"]:
            ids = {c.id for c in clusters if c.id in latest and (
                cause["match"] in c.template or any(cause["match"] in s.message for s in c.samples))}
            assert len(ids) >= 1, cause["name"]
            assert all(by_id[i] == 1 for i in ids)
        # Throttles, measured on the server's clock: ≤ 1 edit/s per message, ≤ 1 call/s per channel.
        edits: dict[str, list[float]] = {}
        for c in fake.ok_calls("chat.update"):
            edits.setdefault(c.body["ts"], []).append(c.time)
        assert all(b - a >= 1.0 for times in edits.values() for a, b in pairwise(times))
        ok = [c.time for c in fake.calls if c.ok]
        assert all(b - a >= 1.0 for a, b in pairwise(ok))  # one channel here
        counts = fake.counts()
        assert counts["429"] >= 0.2 * counts["calls"]
        kinds = Counter(f.kind for f in findings)
        refired = sum(1 for f in findings if f.kind == "new" and f.version > 1)  # a note in the thread each
        assert counts["replies"] == sum(n for k, n in kinds.items() if k not in ("new", "summary")) + refired
        print(f"\nslack demo: findings={len(findings)} {dict(kinds)} clusters_announced={len(latest)} {counts} "
              f"sink={dict(sink.stats)}")
