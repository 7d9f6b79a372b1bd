"""The Slack sink: one root message per incident, edited in place, later events in its thread.

::

    emit(finding) ──▶ outbox (in the store, committed) ──wake──▶ run(): the sender
    summary_delta ──▶ live text (memory, coalesced) ────────────▶   posts / edits / replies, throttled

``emit`` only writes the intent to the durable outbox and wakes the sender, so a slow or failing
Slack never blocks the pipeline, and ``flush`` has nothing left to do: what was emitted is already
committed. The sender delivers in outbox order per finding, throttled per channel
(``channel_interval_s``) and per message (``edit_interval_s``); it honours ``Retry-After`` on 429,
backs off with jitter on 5xx/timeouts, and reports permanent refusals once. ``(channel, ts)`` of each
root is kept in the sink state, so after a restart the same message is edited.

What a finding becomes (bot token)::

    new                      → root message (or a line of the channel's digest beyond the cap)
    summary                  → edit of the root
    spike, variant, repeat   → thread reply + edit of the root (counts)
    resolved                 → thread reply + edit of the root (RESOLVED)

Webhook mode (no token): one post per finding once complete (see ``SlackSink``); no edits, no threads.
The outbox stays bounded in practice: pending root edits of a finding are always coalesced (only the
latest matters), thread replies of a finding too once it holds more than ``max_outbox`` items; root
posts and resolves are never dropped.
"""

from __future__ import annotations

import fnmatch
import hashlib
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import httpx
import orjson
import structlog

from connectors.sinks.slack.api import SlackAPI, SlackRefused, SlackRetry
from connectors.sinks.slack.blocks import Renderer
from triage.errors import ConfigError
from triage.model import Finding, Level
from triage.redact import Redactor
from triage.settings import SlackSettings

log = structlog.get_logger("triage.slack")

LIVE_CAP = 6000  # characters of streamed text kept per finding (the message shows at most 3,000)
_BACKOFF_BASE_S = 1.0
_VERSIONS_KEPT = 64  # versions remembered per finding, to ignore replays


class SlackStore(Protocol):
    """What the sink needs of the store (``triage.store.Store`` has it; tests may use it in memory)."""

    def get_sink_state(self, sink: str, key: str) -> str | None: ...

    def put_sink_state(self, sink: str, key: str, value: str) -> None: ...

    def outbox_add(self, sink: str, key: str, payload: str) -> int: ...

    def outbox_pending(self, sink: str, limit: int = ...) -> list[tuple[int, str, str, int, float]]: ...

    def outbox_done(self, seq: int) -> None: ...

    def outbox_retry(self, seq: int, next_at: float) -> None: ...


@dataclass(slots=True)
class _Item:
    """One pending delivery (a row of the outbox)."""

    seq: int
    key: str  # the finding id
    op: str  # root | edit | reply | hook
    finding: Finding
    hold_until: float = 0.0
    next_at: float = 0.0
    attempts: int = 0
    minimal: bool = False  # Slack refused the blocks once: send text only


@dataclass(slots=True)
class _Msg:
    """Where a finding's root lives: its own message, or a line of a digest message."""

    channel: str  # the channel id Slack answered with
    ts: str
    digest: bool = False

    def dump(self) -> str:
        return orjson.dumps({"channel": self.channel, "ts": self.ts, "digest": self.digest}).decode()


class SlackSink:
    """Sink + StreamingSink for Slack; start ``run()`` in a task group, stop it with ``aclose()``.

    ``expect_model_summary`` (webhook mode): False when no model answer will follow a ``new`` finding,
    so it is posted at once; else it waits up to ``webhook_wait_s`` for the ``summary`` version.
    ``clock``/``sleep`` are injectable (tests run in virtual time); ``redact`` runs on every text posted.
    """

    def __init__(
        self,
        settings: SlackSettings,
        state: SlackStore,
        *,
        client: httpx.AsyncClient | None = None,
        expect_model_summary: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        redact: Callable[[str], str] | None = None,
        rng: random.Random | None = None,
        name: str = "slack",
    ) -> None:
        token = settings.token.get_secret_value() if settings.token is not None else None
        if token is None and settings.webhook_url is None:
            raise ConfigError("setting 'slack.token' or 'slack.webhook_url': one is required for the slack sink")
        self.name = name
        self.settings = settings
        self.webhook = token is None
        self._state = state
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=settings.request_timeout_s)
        self._api = SlackAPI(self._client, api_url=settings.api_url, token=token,
                             timeout_s=settings.request_timeout_s)
        self._expect_summary = expect_model_summary
        self._clock = clock
        self._sleep = sleep
        self._render = Renderer(redact or Redactor().redact)
        self._rng = rng or random.Random()
        self.stats: Counter[str] = Counter()  # posts, updates, replies, webhooks, retries, ratelimited...
        self.errors: Counter[str] = Counter()  # Slack error codes seen
        self.failed: str | None = None  # a refusal of the token: nothing is sent until a restart
        self._items: dict[int, _Item] = {}
        self._latest: dict[str, Finding] = {}
        self._versions: dict[str, list[int]] = {}
        self._live: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._msgs: dict[str, _Msg | None] = {}
        self._chan_ids: dict[str, str] = {}
        self._chan_next: dict[str, float] = {}
        self._msg_next: dict[str, float] = {}
        self._rendered: dict[str, bytes] = {}
        self._roots: dict[str, deque[float]] = {}
        self._paused_until = 0.0
        self._reported: set[str] = set()
        self._inflight: int | None = None
        self._wake = anyio.Event()
        self._closing = False
        self._running = False
        self._started = False
        self._stopped = anyio.Event()
        self._scope: anyio.CancelScope | None = None  # made in run(): it needs a running event loop
        self._cancelled = False
        self._load()

    # --- the Sink seam -----------------------------------------------------------------------------

    async def emit(self, finding: Finding) -> None:
        """Record what ``finding`` asks for in the outbox (durable at return) and wake the sender."""
        seen = self._versions.get(finding.id)
        if seen is None:
            raw = self._state.get_sink_state(self.name, "ver:" + finding.id)
            seen = self._versions[finding.id] = list(orjson.loads(raw)) if raw else []
        if finding.version in seen:
            return  # a replay after a crash: already queued
        # Versions may arrive out of order (the model's answer after a spike): the root shows the
        # newest facts with the best summary known.
        self._latest[finding.id] = self._merge(finding)
        f = finding if finding.summary is not None else self._latest[finding.id]
        if f.kind == "summary":
            self._live.pop(f.id, None)
            self._dirty.discard(f.id)
        for op, hold in self._ops(f):
            self._add(op, f, hold)
        seen.append(f.version)
        del seen[:-_VERSIONS_KEPT]
        self._state.put_sink_state(self.name, "ver:" + f.id, orjson.dumps(seen).decode())
        self._wake.set()

    async def summary_delta(self, finding: Finding, text: str) -> None:
        """Keep the streamed text; the sender shows the latest of it, at most once per edit interval."""
        if self.webhook:
            return
        latest = self._latest.get(finding.id)
        if latest is not None and latest.kind == "summary" and latest.version > finding.version:
            return  # the complete answer is already there
        if latest is None:
            self._latest[finding.id] = finding
        current = self._live.get(finding.id, "")
        if len(current) < LIVE_CAP:
            self._live[finding.id] = (current + text)[:LIVE_CAP]
        self._dirty.add(finding.id)
        self._wake.set()

    async def flush(self) -> None:
        """Nothing to do: every ``emit`` committed its outbox row before returning."""

    async def aclose(self) -> None:
        """Let the sender drain for at most ``drain_timeout_s``; what is left stays in the outbox."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        try:
            with anyio.move_on_after(self.settings.drain_timeout_s):
                if self._running:
                    await self._stopped.wait()
                else:
                    await self.run()
            self._cancelled = True
            if self._scope is not None:
                self._scope.cancel()
            if self._running:
                await self._stopped.wait()
        finally:
            if self._items:
                log.warning("slack: deliveries left in the store, sent after a restart", pending=len(self._items))
            if self._own_client:
                await self._client.aclose()

    @property
    def pending(self) -> int:
        """Deliveries in the outbox."""
        return len(self._items)

    # --- intent -------------------------------------------------------------------------------------

    def _ops(self, f: Finding) -> list[tuple[str, float]]:
        if self.webhook:
            if f.kind == "summary":
                return [("hook", 0.0)]
            if f.kind == "new":
                return [("hook", self._clock() + self.settings.webhook_wait_s if self._expect_summary else 0.0)]
            return []
        if f.kind == "new":  # a version > 1: firing again after it was resolved
            return [("root", 0.0)] if f.version == 1 else [("reply", 0.0), ("edit", 0.0)]
        if f.kind == "summary":
            return [("edit", 0.0)]
        return [("reply", 0.0), ("edit", 0.0)]

    def _merge(self, f: Finding) -> Finding:
        """Later findings may come without the model's answer: keep showing the best summary known."""
        prev = self._latest.get(f.id)
        if prev is None:
            return f
        newer, older = (f, prev) if f.version >= prev.version else (prev, f)
        best = older.summary
        if best is not None and (newer.summary is None or (newer.summary.source != "llm" and best.source == "llm")):
            return newer.model_copy(update={"summary": best})
        return newer

    def _add(self, op: str, f: Finding, hold: float) -> None:
        payload = orjson.dumps({"op": op, "hold": hold, "finding": f.model_dump(mode="json")}).decode()
        seq = self._state.outbox_add(self.name, f.id, payload)
        self._items[seq] = _Item(seq, f.id, op, f, hold_until=hold)
        over = len(self._items) > self.settings.max_outbox
        for other in [i for i in self._items.values() if i.key == f.id and i.seq != seq and i.op == op]:
            if other.seq == self._inflight:
                continue
            if op == "hook" and other.finding.kind == "new" and f.kind == "new":
                continue
            superseded = op in ("edit", "hook") or (
                over and op == "reply" and "resolved" not in (f.kind, other.finding.kind))
            if superseded:
                self._done(other)
                self.stats["coalesced"] += 1

    def _done(self, item: _Item) -> None:
        self._state.outbox_done(item.seq)
        self._items.pop(item.seq, None)

    def _load(self) -> None:
        """Pending deliveries of an earlier run (the outbox survives restarts)."""
        for seq, key, payload, attempts, _next_at in self._state.outbox_pending(self.name, 1 << 30):
            obj = orjson.loads(payload)
            f = Finding.model_validate(obj["finding"])
            self._items[seq] = _Item(seq, key, obj["op"], f, hold_until=float(obj.get("hold", 0.0)),
                                     attempts=attempts)
            if f.id not in self._latest or self._latest[f.id].version < f.version:
                self._latest[f.id] = f

    # --- routing and state -------------------------------------------------------------------------

    def route(self, f: Finding) -> str:
        """The channel of a new root: the first matching route, else the default channel."""
        level = Level.__members__.get(f.level, Level.UNKNOWN)
        for r in self.settings.routes:
            if fnmatch.fnmatchcase(f.service, r.service) and level >= Level[r.min_level]:
                return r.channel
        return self.settings.channel

    def _chan_key(self, channel: str) -> str:
        """Throttles are per channel id; a name maps to its id once Slack told us."""
        cid = self._chan_ids.get(channel)
        if cid is None:
            cid = self._state.get_sink_state(self.name, "chan:" + channel) or channel
            self._chan_ids[channel] = cid
        return cid

    def _learn_channel(self, name: str, cid: str) -> None:
        if self._chan_ids.get(name) != cid:
            self._chan_ids[name] = cid
            self._state.put_sink_state(self.name, "chan:" + name, cid)
        if name in self._chan_next:
            self._chan_next[cid] = max(self._chan_next.get(cid, 0.0), self._chan_next[name])

    def _msg(self, finding_id: str) -> _Msg | None:
        if finding_id not in self._msgs:
            raw = self._state.get_sink_state(self.name, "msg:" + finding_id)
            obj = orjson.loads(raw) if raw else None
            self._msgs[finding_id] = _Msg(obj["channel"], obj["ts"], bool(obj.get("digest"))) if obj else None
        return self._msgs[finding_id]

    def _set_msg(self, finding_id: str, msg: _Msg | None) -> None:
        self._msgs[finding_id] = msg
        self._state.put_sink_state(self.name, "msg:" + finding_id, msg.dump() if msg else "")

    def _capped(self, chan: str, now: float) -> bool:
        roots = self._roots.setdefault(chan, deque())
        while roots and roots[0] <= now - self.settings.cap_window_s:
            roots.popleft()
        return len(roots) >= self.settings.max_roots_per_window

    def _digest_ts(self, chan: str, now: float) -> str | None:
        """The channel's digest message of the current window, if any."""
        raw = self._state.get_sink_state(self.name, "digest_of:" + chan)
        if not raw:
            return None
        obj = orjson.loads(raw)
        return str(obj["ts"]) if obj["start"] > now - self.settings.cap_window_s else None

    # --- the sender --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver the outbox until ``aclose``; returns once closed (drained or out of time)."""
        if self._started:
            return  # run once: after aclose (which may have drained inline) there is nothing to do
        self._started = True
        self._running = True
        self._scope = anyio.CancelScope()
        if self._cancelled:
            self._scope.cancel()
        try:
            with self._scope:
                while True:
                    self._wake = anyio.Event()
                    now = self._clock()
                    work, wake_at = self._next(now)
                    if work is None:
                        if self._closing and (self.failed is not None or not self._items):
                            break
                        await self._wait(None if wake_at is None else wake_at - now)
                    elif isinstance(work, _Item):
                        await self._send(work)
                    else:
                        await self._send_live(work)
        finally:
            self._running = False
            self._stopped.set()

    async def _wait(self, delay: float | None) -> None:
        """Until woken (emit, delta, close) or ``delay`` seconds of the injected clock passed."""
        if delay is None:
            await self._wake.wait()
            return
        if delay <= 0:
            await anyio.lowlevel.checkpoint()
            return
        wake = self._wake
        async with anyio.create_task_group() as tg:

            async def sleeper() -> None:
                await self._sleep(delay)
                tg.cancel_scope.cancel()

            tg.start_soon(sleeper)
            await wake.wait()
            tg.cancel_scope.cancel()

    def _next(self, now: float) -> tuple[_Item | str | None, float | None]:
        """The next delivery that may go now, or when one may (None: only when woken)."""
        if self.failed is not None:
            return None, None
        if now < self._paused_until:
            return None, self._paused_until
        wake: float | None = None
        blocked: set[str] = set()
        for item in self._items.values():
            if item.key in blocked:
                continue
            ready = max(item.next_at, 0.0 if self._closing else item.hold_until, self._throttle(item, now))
            if ready <= now:
                return item, None
            blocked.add(item.key)
            wake = ready if wake is None else min(wake, ready)
        if self._closing:
            return None, wake
        for fid in sorted(self._dirty):
            msg = self._msg(fid)
            if fid in blocked or msg is None or msg.digest:
                continue
            ready = max(self._chan_next.get(msg.channel, 0.0), self._msg_next.get(msg.ts, 0.0))
            if ready <= now:
                return fid, None
            wake = ready if wake is None else min(wake, ready)
        return None, wake

    def _throttle(self, item: _Item, now: float) -> float:
        if self.webhook:
            return self._chan_next.get("", 0.0)
        msg = self._msg(item.key)
        if msg is not None:
            ready = self._chan_next.get(msg.channel, 0.0)
            if item.op != "reply" or msg.digest:
                ready = max(ready, self._msg_next.get(msg.ts, 0.0))
            return ready
        chan = self._chan_key(self.route(item.finding))
        ready = self._chan_next.get(chan, 0.0)
        if self._capped(chan, now):
            ts = self._digest_ts(chan, now)
            if ts is not None:
                ready = max(ready, self._msg_next.get(ts, 0.0))
        return ready

    async def _send(self, item: _Item) -> None:
        self._inflight = item.seq
        try:
            complete = await self._deliver(item)
        except SlackRetry as e:
            self._retry(item, e)
        except SlackRefused as e:
            self._refused(item, e)
        else:
            if complete:
                self._done(item)
        finally:
            self._inflight = None

    async def _send_live(self, fid: str) -> None:
        msg, f = self._msg(fid), self._latest.get(fid)
        text = self._live.get(fid)
        self._dirty.discard(fid)
        if msg is None or f is None or text is None:
            return
        try:
            await self._update(msg, self._render.root(f, live=text))
        except SlackRetry as e:
            self._dirty.add(fid)
            self._retry(None, e)
        except SlackRefused as e:
            self._live.pop(fid, None)
            if e.scope == "gone":
                self._set_msg(fid, None)
            self._refused(None, e)

    def _retry(self, item: _Item | None, e: SlackRetry) -> None:
        self.stats["retries"] += 1
        self.errors[e.error] += 1
        attempts = item.attempts if item is not None else 0
        if e.retry_after is not None:
            self.stats["ratelimited"] += 1
            delay = e.retry_after
        else:
            delay = min(self.settings.retry_max_s, _BACKOFF_BASE_S * 2 ** min(attempts, 16))
            delay *= 0.5 + self._rng.random() / 2
        now = self._clock()
        # Slack limits per method and workspace: a pause holds every delivery, in order.
        self._paused_until = max(self._paused_until, now + delay)
        if item is not None:
            item.attempts += 1
            self._state.outbox_retry(item.seq, now + delay)
        log.debug("slack: retrying", error=e.error, delay_s=round(delay, 2), attempts=attempts + 1)

    def _refused(self, item: _Item | None, e: SlackRefused) -> None:
        self.errors[e.error] += 1
        scope = "auth" if self.webhook and e.scope == "channel" else e.scope
        if scope == "auth":
            self.failed = e.error
            if "auth" not in self._reported:
                self._reported.add("auth")
                log.error("slack refuses the credentials: nothing is posted until the settings are fixed and "
                          "triage restarted; deliveries stay in the store", error=e.error, pending=len(self._items))
            return
        if item is None:
            return
        if scope == "gone":  # the message was deleted, or is too old to edit: start a new root
            self._set_msg(item.key, None)
            item.attempts += 1
            if item.attempts <= 3:
                return
        elif scope == "message" and not item.minimal:
            item.minimal = True  # once more, as text only
            if f"message:{e.error}" not in self._reported:
                self._reported.add(f"message:{e.error}")
                log.error("slack refused a message; sending it as text only", error=e.error, finding=item.key)
            return
        key = f"{scope}:{e.error}"
        if key not in self._reported:
            self._reported.add(key)
            log.error("slack refused a delivery; dropped (counted)", error=e.error, finding=item.key)
        self.stats["dropped"] += 1
        self._done(item)

    # --- calls ---------------------------------------------------------------------------------------

    async def _deliver(self, item: _Item) -> bool:
        """Make one call for ``item``; True when it is complete."""
        f = item.finding
        if self.webhook:
            await self._hook(item)
            return True
        latest = self._latest.get(f.id, f)
        msg = self._msg(f.id)
        if msg is None:
            await self._post_root(latest, item.minimal)
            return item.op != "reply"  # a reply goes next round, after the channel's interval
        if msg.digest:
            await self._digest_update(msg, latest if item.op != "reply" else f)
        elif item.op == "reply":
            payload = self._render.minimal(f) if item.minimal else self._render.reply(f)
            await self._call("chat.postMessage", {"channel": msg.channel, "thread_ts": msg.ts, **payload},
                             msg.channel)
            self.stats["replies"] += 1
        else:
            await self._update(msg, self._render.minimal(latest) if item.minimal else self._render.root(latest))
        return True

    async def _post_root(self, f: Finding, minimal: bool) -> None:
        name = self.route(f)
        chan = self._chan_key(name)
        now = self._clock()
        if self._capped(chan, now):
            await self._digest_add(name, chan, f, now)
            return
        live = self._live.get(f.id) if f.kind != "summary" else None
        payload = self._render.minimal(f) if minimal else self._render.root(f, live=live)
        data = await self._call("chat.postMessage", {"channel": name, **payload}, chan)
        cid, ts = str(data.get("channel") or chan), str(data["ts"])
        self._learn_channel(name, cid)
        self._set_msg(f.id, _Msg(cid, ts))
        self._rendered[ts] = _digest_of(payload)
        self._msg_next[ts] = now + self.settings.edit_interval_s
        self._roots.setdefault(cid, deque()).append(now)
        self.stats["posts"] += 1

    async def _update(self, msg: _Msg, payload: dict[str, Any]) -> None:
        if self._rendered.get(msg.ts) == _digest_of(payload):
            self.stats["unchanged"] += 1
            return
        await self._call("chat.update", {"channel": msg.channel, "ts": msg.ts, **payload}, msg.channel, msg.ts)
        self._rendered[msg.ts] = _digest_of(payload)
        self.stats["updates"] += 1

    async def _digest_add(self, name: str, chan: str, f: Finding, now: float) -> None:
        ts = self._digest_ts(chan, now)
        if ts is None:
            entries = {f.id: self._render.digest_entry(f)}
            payload = self._render.digest(list(entries.values()), window_start=now)
            data = await self._call("chat.postMessage", {"channel": name, **payload}, chan)
            cid, ts = str(data.get("channel") or chan), str(data["ts"])
            self._learn_channel(name, cid)
            self._rendered[ts] = _digest_of(payload)
            self._put_digest(ts, cid, now, entries)
            self._state.put_sink_state(self.name, "digest_of:" + cid,
                                       orjson.dumps({"ts": ts, "start": now}).decode())
            if cid != chan:
                self._state.put_sink_state(self.name, "digest_of:" + chan,
                                           orjson.dumps({"ts": ts, "start": now}).decode())
            self.stats["digests"] += 1
            self._set_msg(f.id, _Msg(cid, ts, digest=True))
            return
        msg = _Msg(self._get_digest(ts)["channel"], ts, digest=True)
        await self._digest_update(msg, f)
        self._set_msg(f.id, msg)

    async def _digest_update(self, msg: _Msg, f: Finding) -> None:
        d = self._get_digest(msg.ts)
        d["entries"][f.id] = self._render.digest_entry(f)
        payload = self._render.digest(list(d["entries"].values()), window_start=d["start"])
        await self._update(msg, payload)
        self._put_digest(msg.ts, d["channel"], d["start"], d["entries"])

    def _get_digest(self, ts: str) -> dict[str, Any]:
        raw = self._state.get_sink_state(self.name, "digest:" + ts)
        if not raw:
            raise SlackRefused("message_not_found", "slack: digest state lost", "gone")
        obj: dict[str, Any] = orjson.loads(raw)
        return obj

    def _put_digest(self, ts: str, channel: str, start: float, entries: dict[str, Any]) -> None:
        self._state.put_sink_state(self.name, "digest:" + ts, orjson.dumps(
            {"channel": channel, "start": start, "entries": entries}).decode())

    async def _hook(self, item: _Item) -> None:
        if self._state.get_sink_state(self.name, "hook:" + item.key):
            return  # posted already (one post per finding)
        f = self._latest.get(item.key, item.finding)
        payload = self._render.minimal(f) if item.minimal else self._render.root(f)
        assert self.settings.webhook_url is not None
        self._chan_next[""] = self._clock() + self.settings.channel_interval_s
        await self._api.webhook(self.settings.webhook_url.get_secret_value(), payload)
        self._state.put_sink_state(self.name, "hook:" + item.key, "1")
        self.stats["webhooks"] += 1

    async def _call(self, method: str, body: dict[str, Any], chan: str, ts: str | None = None) -> dict[str, Any]:
        now = self._clock()
        self._chan_next[chan] = now + self.settings.channel_interval_s
        if ts is not None:
            self._msg_next[ts] = now + self.settings.edit_interval_s
        body.setdefault("unfurl_links", False)
        body.setdefault("unfurl_media", False)
        if method == "chat.update":
            body.pop("unfurl_links")
            body.pop("unfurl_media")
        return await self._api.call(method, body)


def _digest_of(payload: dict[str, Any]) -> bytes:
    return hashlib.blake2b(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
