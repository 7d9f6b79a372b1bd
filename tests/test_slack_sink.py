"""The Slack sink against a fake of Slack's Web API: one message per incident, edited in place, threads,
throttles, digests, restarts, and failures that neither block the pipeline nor lose a finding."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from connectors.sinks.slack import SlackSink
from tests.fakes.slack_server import TOKEN, WEBHOOK_PATH, Call, FakeSlack, VirtualClock, texts_of
from triage.model import Finding, FindingKind, SampleOut, Summary
from triage.settings import SlackRoute, SlackSettings
from triage.store import Store

T0 = 1_773_478_800.0


def finding(fid: str = "c1", version: int = 1, kind: FindingKind = "new", *, count: int = 3,
            service: str = "checkout", level: str = "ERROR", text: str = "Payments fail.", title: str = "",
            source: str = "model-free", sample: str = "ERROR payment declined for order 17",
            fix: Iterable[str] = ("Rotate the key",)) -> Finding:
    summary = Summary(source=source, title=title or f"{fid} fails", text=text,  # type: ignore[arg-type]
                      fix_steps=list(fix), model="fake" if source == "llm" else "")
    return Finding(id=fid, version=version, kind=kind, created_at=T0, template=f"{fid} <*> failed",
                   cluster_kind="template", level=level, service=service, services={service: count},
                   count=count, first_seen=T0, last_seen=T0 + version, summary=summary,
                   samples=[SampleOut(timestamp=T0, service=service, message=sample)])


def settings(**kw: Any) -> SlackSettings:
    base: dict[str, Any] = {"token": TOKEN, "api_url": "http://slack.test/api", "channel": "#alerts"}
    return SlackSettings(**{**base, **kw})


def make(fake: FakeSlack, clock: VirtualClock, store: Store | None = None, **kw: Any) -> SlackSink:
    extra = {k: kw.pop(k) for k in ("expect_model_summary",) if k in kw}
    client = httpx.AsyncClient(transport=fake.transport())
    return SlackSink(settings(**kw), store or Store.open(None), client=client, clock=clock, sleep=clock.sleep,
                     rng=random.Random(0),
                     **extra)


@asynccontextmanager
async def running(sink: SlackSink, clock: VirtualClock | None = None) -> AsyncIterator[SlackSink]:
    """The sender runs in a task group; leaving drains it through ``aclose`` (time then runs free)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.run)
        try:
            yield sink
        finally:
            if clock is not None:
                clock.run_free()
            await sink.aclose()


def text_of(body: dict[str, Any]) -> str:
    return "\n".join(texts_of(body))


def gaps(calls: list[Call], key: str) -> list[float]:
    """Time between consecutive successful calls that share ``body[key]`` (a channel, or a message ts)."""
    by: dict[str, list[float]] = {}
    for c in calls:
        if c.ok and key in c.body:
            by.setdefault(c.body[key], []).append(c.time)
    return [b - a for times in by.values() for a, b in pairwise(times)]


@pytest.mark.anyio
class TestRootMessage:
    async def test_one_root_per_cluster_then_edited_with_the_answer(self) -> None:
        """Each cluster gets one root message; the model's answer edits that same message."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        fake.clock = clock
        async with running(make(fake, clock)) as sink:
            for fid in ("a", "b", "c"):
                await sink.emit(finding(fid))
            for fid in ("a", "b", "c"):
                await sink.emit(finding(fid, 2, "summary", source="llm", title=f"{fid}: pool exhausted"))
        assert len(fake.roots()) == 3 and len(fake.ok_calls("chat.postMessage")) == 3
        for m in fake.roots():
            fid = text_of(m.versions[0][1]).split("cluster `", 1)[1][0]
            assert f"{fid}: pool exhausted" in m.body["blocks"][0]["text"]["text"]
            assert "Rotate the key" in text_of(m.body) and "```ERROR payment declined" in text_of(m.body)

    async def test_replayed_version_is_not_posted_twice(self) -> None:
        """A version already queued (a replay after a crash) is ignored."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        async with running(make(fake, clock)) as sink:
            await sink.emit(finding("a"))
            await sink.emit(finding("a"))
        assert len(fake.calls) == 1

    async def test_restart_edits_the_same_message(self) -> None:
        """After a restart (new sink, same store), updates edit the message posted before."""
        clock, fake = VirtualClock(autojump=True), FakeSlack(clock=None)
        store = Store.open(None)
        async with running(make(fake, clock, store)) as sink:
            await sink.emit(finding("a"))
        async with running(make(fake, clock, store)) as sink:
            await sink.emit(finding("a", 2, "summary", source="llm", title="answer"))
        [root] = fake.roots()
        assert len(fake.ok_calls("chat.postMessage")) == 1 and len(root.versions) == 2
        assert "answer" in text_of(root.body)

    async def test_outbox_survives_a_restart(self) -> None:
        """What could not be sent before closing is sent by the next instance, once."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        store = Store.open(None)
        fake.error = "internal_error"
        sink = make(fake, clock, store, drain_timeout_s=0)
        await sink.emit(finding("a"))
        await sink.emit(finding("a", 2, "summary", source="llm", title="answer"))
        await sink.flush()
        await sink.aclose()
        assert store.outbox_count("slack") == 2 and not fake.roots()
        fake.error = None
        async with running(make(fake, clock, store)):
            pass
        [root] = fake.roots()
        assert "answer" in text_of(root.body) and store.outbox_count("slack") == 0


@pytest.mark.anyio
class TestStreaming:
    async def test_streamed_summary_edits_are_throttled_and_coalesced(self) -> None:
        """Deltas every 0.1 s become at most one edit per second per message and per channel; the last
        edit is the complete answer."""
        clock = VirtualClock()
        fake = FakeSlack(clock=clock)
        tokens = [f"word{i} " for i in range(60)]
        async with running(make(fake, clock), clock) as sink:
            first = finding("a")
            await sink.emit(first)
            await sink.emit(finding("b", service="orders"))
            await anyio.wait_all_tasks_blocked()
            for i, tok in enumerate(tokens, 1):
                clock.advance(0.1)
                await sink.summary_delta(first, tok)
                if i % 5 == 0:  # let the sender catch up every half second
                    await anyio.wait_all_tasks_blocked()
            await sink.emit(finding("a", 2, "summary", source="llm", text="".join(tokens), title="final"))
            for _ in range(5):
                clock.advance(1.0)
                await anyio.wait_all_tasks_blocked()
        updates = fake.ok_calls("chat.update")
        assert 4 <= len(updates) <= 8  # ~6 s of streaming, not 60 edits
        assert min(gaps(fake.calls, "ts")) >= 1.0
        assert min(gaps(fake.calls, "channel")) >= 1.0
        assert any("writing…" in text_of(u.body) for u in updates)
        root = next(m for m in fake.roots() if "cluster `a`" in text_of(m.body))
        assert "final" in text_of(root.body) and "writing…" not in text_of(root.body)
        assert "word59" in text_of(root.body)


@pytest.mark.anyio
class TestThreads:
    async def test_later_events_reply_in_the_thread_and_resolve_edits_the_root(self) -> None:
        """spike/variant/repeat/resolved are thread replies of the root; the root shows counts, then RESOLVED."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        async with running(make(fake, clock)) as sink:
            for f in (finding("a", count=3), finding("a", 2, "summary", source="llm", title="llm title", count=3),
                      finding("a", 3, "spike", count=40), finding("a", 4, "variant", count=41),
                      finding("a", 5, "repeat", count=90), finding("a", 6, "resolved", count=95)):
                await sink.emit(f)
                await anyio.wait_all_tasks_blocked()  # each delivered before the next (else coalesced)
        [root] = fake.roots()
        replies = [text_of(m.body) for m in fake.replies(root.ts)]
        assert len(replies) == 4
        assert ["Spike" in replies[0], "variant" in replies[1], "Still firing" in replies[2],
                "Resolved" in replies[3]] == [True] * 4
        header = root.body["blocks"][0]["text"]["text"]
        assert header.startswith(":white_check_mark: RESOLVED") and "llm title" in header
        assert "*Events*\n95" in text_of(root.body)
        assert any("*Events*\n40" in text_of(b) for _, b in root.versions)


@pytest.mark.anyio
class TestRoutingAndDigest:
    async def test_routes_first_match_wins_else_default(self) -> None:
        """Routes match service globs and a minimum level, first match wins; else the default channel."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        routes = (SlackRoute(service="checkout*", min_level="ERROR", channel="#checkout"),
                  SlackRoute(service="*", min_level="critical", channel="#pager"))
        async with running(make(fake, clock, routes=routes)) as sink:
            await sink.emit(finding("a", service="checkout-api", level="ERROR"))
            await sink.emit(finding("b", service="checkout-api", level="WARNING"))
            await sink.emit(finding("c", service="orders", level="CRITICAL"))
        posted = {c.body["blocks"][-1]["elements"][0]["text"][9]: c.body["channel"]
                  for c in fake.ok_calls("chat.postMessage")}
        assert posted == {"a": "#checkout", "b": "#alerts", "c": "#pager"}

    async def test_beyond_the_cap_new_findings_go_to_one_digest(self) -> None:
        """Past max_roots_per_window roots in a channel, new findings are lines of one digest, edited in place;
        the next window gets roots again."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        async with running(make(fake, clock, max_roots_per_window=2, cap_window_s=300)) as sink:
            for i in range(6):
                await sink.emit(finding(f"f{i}"))
            await sink.emit(finding("f4", 2, "resolved"))
            await anyio.wait_all_tasks_blocked()
            clock.advance(301)
            await sink.emit(finding("late"))
        roots = fake.roots()
        digests = [m for m in roots if "Digest" in m.body["text"]]
        assert len(roots) == 4 and len(digests) == 1
        body = text_of(digests[0].body)
        assert all(f"`f{i}`" in body for i in (2, 3, 4, 5)) and "Digest: 4 more" in body
        assert ":white_check_mark: *checkout* · f4 fails" in body
        assert len(digests[0].versions) >= 4  # posted once, then edited per finding
        assert any("cluster `late`" in text_of(m.body) for m in roots)


@pytest.mark.anyio
class TestFailures:
    async def test_ratelimit_storm_loses_nothing_and_keeps_order(self) -> None:
        """With 30% of calls answered 429, every finding arrives, each message's versions in order."""
        clock = VirtualClock(autojump=True)
        fake = FakeSlack(clock=clock, ratelimit_ratio=0.3, seed=7)
        n = 12
        async with running(make(fake, clock, max_roots_per_window=100)) as sink:
            for i in range(n):
                await sink.emit(finding(f"f{i}"))
            for i in range(n):
                await sink.emit(finding(f"f{i}", 2, "summary", source="llm", title=f"answer {i}"))
                await sink.emit(finding(f"f{i}", 3, "spike", count=50))
                await sink.emit(finding(f"f{i}", 4, "resolved", count=60))
        assert fake.counts()["429"] > 10 and sink.stats["ratelimited"] == fake.counts()["429"]
        roots = fake.roots()
        assert len(roots) == n
        for m in roots:
            versions = [int(text_of(b).split(" · v", 1)[1][0]) for _, b in m.versions]
            assert versions == sorted(versions) and versions[-1] == 4
            assert [("Spike" in text_of(r.body), "Resolved" in text_of(r.body)) for r in fake.replies(m.ts)] \
                == [(True, False), (False, True)]
        assert min(gaps(fake.calls, "channel")) >= 1.0
        retried = [c for c in fake.calls if c.status == 429]
        after = {c.time for c in fake.calls}
        assert all(any(t >= r.time + 1 for t in after) for r in retried)

    async def test_invalid_auth_is_reported_once_and_nothing_is_lost(self) -> None:
        """A refused token is logged once, stops sending, and keeps the findings in the outbox."""
        clock, fake = VirtualClock(autojump=True), FakeSlack(token="xoxb-other")
        store = Store.open(None)
        with capture_logs() as logs:
            async with running(make(fake, clock, store)) as sink:
                for i in range(5):
                    await sink.emit(finding(f"f{i}"))
                await anyio.wait_all_tasks_blocked()
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1 and errors[0]["error"] == "invalid_auth"
        assert sink.failed == "invalid_auth" and len(fake.calls) == 1
        assert store.outbox_count("slack") == 5

    async def test_unknown_channel_is_reported_once_and_counted(self) -> None:
        """channel_not_found is not retried forever: reported once, the deliveries dropped and counted."""
        clock, fake = VirtualClock(autojump=True), FakeSlack(unknown_channels=frozenset({"#gone"}))
        with capture_logs() as logs:
            async with running(make(fake, clock, channel="#gone")) as sink:
                for i in range(3):
                    await sink.emit(finding(f"f{i}"))
        assert len([e for e in logs if e["log_level"] == "error"]) == 1
        assert sink.stats["dropped"] == 3 and len(fake.calls) == 3 and sink.pending == 0

    async def test_5xx_and_a_hung_request_are_retried(self) -> None:
        """A 500 and a request that never answers (timeout) are retried with backoff; the post arrives once."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        fake.script.extend(["500", "hang", "500"])
        async with running(make(fake, clock, request_timeout_s=0.2)) as sink:
            await sink.emit(finding("a"))
        assert [c.error for c in fake.calls] == ["http_500", "hang", "http_500", None]
        assert len(fake.roots()) == 1 and sink.stats["retries"] == 3

    async def test_refused_blocks_fall_back_to_text(self) -> None:
        """invalid_blocks once: the message goes again as text only instead of being retried as is."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        fake.script.append("invalid_blocks")
        async with running(make(fake, clock)) as sink:
            await sink.emit(finding("a"))
        [root] = fake.roots()
        assert "blocks" not in root.body and "[ERROR] checkout" in root.body["text"]

    async def test_slack_down_never_blocks_emit_and_the_outbox_stays_bounded(self) -> None:
        """With Slack hanging, emit and flush return at once; updates of one finding are coalesced
        beyond max_outbox, while its root post and its resolve are kept."""
        clock, fake = VirtualClock(autojump=True), FakeSlack(error="internal_error")
        store = Store.open(None)
        sink = make(fake, clock, store, max_outbox=5, drain_timeout_s=0)
        with anyio.fail_after(5):
            await sink.emit(finding("a"))
            for v in range(2, 40):
                await sink.emit(finding("a", v, "spike", count=v))
            await sink.emit(finding("a", 40, "resolved"))
            await sink.flush()
        await sink.aclose()
        kinds = [(op, f.kind) for op, f in ((i.op, i.finding) for i in sink._items.values())]
        assert kinds[0] == ("root", "new") and ("reply", "resolved") in kinds
        assert store.outbox_count("slack") <= 6 and sink.stats["coalesced"] > 30


@pytest.mark.anyio
class TestSafety:
    async def test_mentions_never_pass_through(self) -> None:
        """<!channel>, <!here>, <@U…>, <!subteam^…>, <#C…> and plain @channel/@here/@everyone are neutralised."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        evil = "hey <!channel> <!here> <@U123> <!subteam^S1|ops> <#C999> @channel @here @everyone & done"
        async with running(make(fake, clock)) as sink:
            await sink.emit(finding("a", title=evil, text=evil, sample=evil, fix=[evil], service="svc@here"))
            await sink.emit(finding("a", 2, "spike", title=evil, sample=evil))
        assert [c.ok for c in fake.calls] == [True, True] and fake.pings == []  # root, thread reply
        body = text_of(fake.roots()[0].body)
        assert "&lt;!channel&gt;" in body and "@\u200bhere" in body and "&amp; done" in body

    async def test_log_text_cannot_close_the_code_block(self) -> None:
        """A sample containing ``` stays inside one code block."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        async with running(make(fake, clock)) as sink:
            await sink.emit(finding("a", sample="x ``` *bold* ```` <!here> `"))
        [sample] = [b["text"]["text"] for b in fake.roots()[0].body["blocks"]
                    if b.get("text", {}).get("text", "").startswith("*Sample*")]
        assert sample.count("```") == 2 and sample.endswith("```")

    async def test_huge_inputs_respect_block_kit_limits(self) -> None:
        """Megabyte-sized titles, texts, fixes and samples are truncated to Slack's limits and accepted."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        big = "&<>" * 200_000
        services = {f"svc{i}": i for i in range(2_000)}
        f = finding("a", title=big, text=big, sample=big, fix=[big] * 200).model_copy(update={"services": services})
        async with running(make(fake, clock)) as sink:
            await sink.emit(f)
            await sink.emit(finding("a", 2, "spike", sample=big, title=big))
        assert [c.ok for c in fake.calls] == [True, True]  # root, thread reply
        body = fake.roots()[0].body
        assert len(body["blocks"]) <= 50 and len(body["blocks"][0]["text"]["text"]) <= 150
        assert body["blocks"][0]["text"]["text"].endswith("…")


@pytest.mark.anyio
class TestWebhook:
    def _sink(self, fake: FakeSlack, clock: VirtualClock, *, expect: bool) -> SlackSink:
        s = SlackSettings(webhook_url=f"http://hooks.test{WEBHOOK_PATH}", webhook_wait_s=30)
        return SlackSink(s, Store.open(None), client=httpx.AsyncClient(transport=fake.transport()),
                         clock=clock, sleep=clock.sleep, expect_model_summary=expect)

    async def test_one_post_per_finding_once_complete(self) -> None:
        """With a model: the summary version is posted (not the model-free one); without an answer within
        webhook_wait_s the new finding goes alone; later versions never post again."""
        clock, fake = VirtualClock(), FakeSlack()
        async with running(self._sink(fake, clock, expect=True), clock) as sink:
            await sink.emit(finding("a"))
            await sink.emit(finding("b"))
            await anyio.wait_all_tasks_blocked()
            assert fake.calls == []
            await sink.emit(finding("a", 2, "summary", source="llm", title="answer a"))
            await anyio.wait_all_tasks_blocked()
            clock.advance(31)
            await anyio.wait_all_tasks_blocked()
            await sink.emit(finding("b", 2, "summary", source="llm", title="late answer"))
            await sink.emit(finding("a", 3, "spike"))
            await sink.emit(finding("a", 4, "resolved"))
        posts = [c for c in fake.calls if c.ok]
        assert [c.body["text"].split("] ", 1)[1].split(" (", 1)[0] for c in posts] == \
            ["checkout: answer a", "checkout: b fails"]
        assert all(c.method == "webhook" for c in fake.calls)

    async def test_without_a_model_new_findings_post_at_once(self) -> None:
        """expect_model_summary=False: a new finding is posted immediately, once."""
        clock, fake = VirtualClock(), FakeSlack()
        async with running(self._sink(fake, clock, expect=False), clock) as sink:
            await sink.emit(finding("a"))
            await anyio.wait_all_tasks_blocked()
            assert len(fake.calls) == 1
            await sink.emit(finding("a", 2, "spike"))


@pytest.mark.anyio
class TestOverRealHTTP:
    async def test_post_and_edit_over_a_socket(self) -> None:
        """The sink speaks real HTTP/1.1 to the fake server: bearer token, JSON, post then edit."""
        clock, fake = VirtualClock(autojump=True), FakeSlack()
        async with fake.serve() as api_url:
            s = settings(api_url=api_url)
            async with httpx.AsyncClient() as client:
                store = Store.open(None)
                async with running(SlackSink(s, store, client=client, clock=clock, sleep=clock.sleep)) as sink:
                    await sink.emit(finding("a"))
                async with running(SlackSink(s, store, client=client, clock=clock, sleep=clock.sleep)) as sink:
                    await sink.emit(finding("a", 2, "summary", source="llm", title="answer"))
        [root] = fake.roots()
        assert [c.method for c in fake.calls] == ["chat.postMessage", "chat.update"]
        assert "answer" in text_of(root.body)
