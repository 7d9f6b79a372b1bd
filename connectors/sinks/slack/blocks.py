"""Block Kit payloads for findings: escaped, mention-free, and within Slack's limits.

Everything shown comes from logs or from a model, so it is untrusted: it is redacted, escaped for
mrkdwn (``&``, ``<``, ``>``: which also disarms ``<!channel>``, ``<@U123>``, ``<#C1>`` and
``<!subteam^…>``), plain ``@channel``/``@here``/``@everyone`` get a zero-width space, and text inside a
code block cannot close it. Truncation never cuts an escape sequence and ends with ``…``.

Limits (Slack rejects beyond them with ``invalid_blocks`` or ``msg_too_long``): 50 blocks, 3,000
characters per section text, 2,000 per field, 150 per header; the whole payload is kept under
``MAX_PAYLOAD_CHARS``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from triage.model import Finding

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_FIELD = 2000
MAX_HEADER = 150
MAX_FALLBACK = 1000
MAX_PAYLOAD_CHARS = 16_000
ELLIPSIS = "…"
ZWSP = "\u200b"

Block = dict[str, Any]
Redact = Callable[[str], str]

_PLAIN_MENTION = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
_ANGLE_MENTION = re.compile(r"<([!@#])")
_FENCE = re.compile(r"`{3,}")
_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")
_LEVEL_EMOJI = {"CRITICAL": ":red_circle:", "ERROR": ":red_circle:", "WARNING": ":large_orange_circle:"}


def neutralise(text: str) -> str:
    """Break plain-text mentions (``@channel`` → ``@\u200bchannel``)."""
    return _PLAIN_MENTION.sub(lambda m: "@" + ZWSP + m.group(1), text)


def escape(text: str) -> str:
    """Escape for mrkdwn and neutralise mentions."""
    return neutralise(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def plain(text: str) -> str:
    """For ``plain_text`` objects (not parsed for markup): mentions neutralised all the same."""
    return neutralise(_ANGLE_MENTION.sub(lambda m: "<" + ZWSP + m.group(1), text))


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` (already escaped) to ``limit`` characters, ending with ``…``, never inside ``&amp;``."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 1)]
    m = _ENTITY_TAIL.search(cut)
    if m is not None:
        cut = cut[: m.start()]
    if cut.endswith(ZWSP):
        cut = cut[:-1]
    return cut + ELLIPSIS


def code_block(text: str, limit: int) -> str:
    """A code block holding ``text`` (escaped) that log text cannot close early, at most ``limit`` chars."""
    body = _FENCE.sub(lambda m: ZWSP.join(m.group()), escape(text))
    body = truncate(body, max(1, limit - 8))
    if body.startswith("`"):
        body = ZWSP + body
    if body.endswith("`"):
        body += ZWSP
    return f"```{body}```"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, MAX_SECTION)}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, MAX_SECTION)}]}


class Renderer:
    """Builds the payloads for one sink; ``redact`` runs on every piece of text first."""

    __slots__ = ("_redact",)

    def __init__(self, redact: Redact) -> None:
        self._redact = redact

    def _e(self, text: str) -> str:
        return escape(self._redact(text))

    def title(self, f: Finding) -> str:
        s = f.summary
        return s.title if s is not None and s.title else f.template

    def fallback(self, f: Finding, *, prefix: str = "") -> str:
        status = "RESOLVED" if f.kind == "resolved" else f.level
        return truncate(self._e(f"{prefix}[{status}] {f.service}: {self.title(f)} ({f.count} events)"),
                        MAX_FALLBACK)

    def root(self, f: Finding, *, live: str | None = None) -> dict[str, Any]:
        """The incident's root message: header, facts, summary (``live``: text still streaming), fix,
        sample, id. Optional blocks are dropped, last first, until the payload fits."""
        resolved = f.kind == "resolved"
        head = ":white_check_mark: RESOLVED" if resolved else f"{_LEVEL_EMOJI.get(f.level, ':white_circle:')} {f.level}"
        s = f.summary
        severity = f" ({s.severity})" if s is not None and s.severity and not resolved else ""
        header = truncate(plain(self._redact(f"{head}{severity} · {self.title(f)}")), MAX_HEADER)
        services = ", ".join(f"{self._e(k)} ({v})" for k, v in sorted(f.services.items(), key=lambda kv: -kv[1])[:5])
        fields = [
            f"*Service*\n{self._e(f.service) or '-'}",
            f"*Events*\n{f.count}",
            f"*First seen*\n{_when(f.first_seen)}",
            f"*Last seen*\n{_when(f.last_seen)}",
        ]
        if len(f.services) > 1:
            fields.append(f"*Services*\n{services}")
        blocks: list[Block] = [
            {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": truncate(x, MAX_FIELD)} for x in fields]},
        ]
        optional: list[Block] = []
        if live is not None:
            blocks.append(_section(f"*Summary* _(writing…)_\n{self._e(live)} ▍"))
        elif s is not None:
            label = f"_{self._e(s.model or 'model')}{', partial' if s.partial else ''}_" if s.source == "llm" \
                else "_model-free_"
            text = f"*Summary* {label}\n{self._e(s.text)}"
            if s.likely_cause:
                text += f"\n*Likely cause:* {self._e(s.likely_cause)}"
            blocks.append(_section(text))
        if s is not None and s.fix_steps:
            steps = "\n".join(f"{i}. {self._e(step)}" for i, step in enumerate(s.fix_steps[:20], 1))
            optional.append(_section(f"*Suggested fix*\n{steps}"))
        if f.samples:
            smp = f.samples[0]
            optional.append(_section("*Sample*\n" + code_block(smp.message, MAX_SECTION - 20)))
        kind = "" if f.kind in ("new", "summary") else f" · {f.kind}"
        tail = _context(f"cluster `{self._e(f.id)}` · v{f.version}{kind}")
        payload = {"text": self.fallback(f), "blocks": blocks + optional + [tail]}
        while optional and _size(payload) > MAX_PAYLOAD_CHARS:
            optional.pop()
            payload["blocks"] = blocks + optional + [tail]
        return payload

    def reply(self, f: Finding) -> dict[str, Any]:
        """A thread reply for a later event of the incident (spike, variant, repeat, resolved)."""
        if f.kind == "resolved":
            line = f":white_check_mark: *Resolved*: quiet since {_when(f.last_seen)} ({f.count} events in all)"
        elif f.kind == "spike":
            line = f":chart_with_upwards_trend: *Spike*: {f.count} events so far, last at {_when(f.last_seen)}"
        elif f.kind == "new":
            line = f":rotating_light: *Firing again*: {f.count} events in all, last at {_when(f.last_seen)}"
        elif f.kind == "variant":
            line = f":twisted_rightwards_arrows: *New variant* ({f.count} events in all)"
        else:
            line = f":repeat: *Still firing*: {f.count} events, last at {_when(f.last_seen)}"
        blocks: list[Block] = [_section(line)]
        if f.kind != "resolved" and f.samples:
            blocks.append(_section(code_block(f.samples[-1].message, MAX_SECTION)))
        return {"text": truncate(self._e(f"{f.kind}: {self.title(f)}"), MAX_FALLBACK), "blocks": blocks}

    def digest_entry(self, f: Finding) -> dict[str, Any]:
        """What a digest keeps of a finding (small, JSON): raw text, escaped when rendered."""
        return {"id": f.id, "level": f.level, "service": f.service, "title": self.title(f)[:300],
                "count": f.count, "resolved": f.kind == "resolved"}

    def digest(self, entries: Sequence[dict[str, Any]], *, window_start: float) -> dict[str, Any]:
        """One message standing for every finding beyond the channel's cap in this window."""
        lines = []
        for e in entries:
            mark = ":white_check_mark:" if e["resolved"] else _LEVEL_EMOJI.get(e["level"], ":white_circle:")
            lines.append(truncate(f"{mark} *{self._e(e['service'])}* · {self._e(e['title'])} · "
                                  f"{e['count']} events · `{self._e(e['id'])}`", 600))
        head = truncate(plain(f"Digest: {len(entries)} more findings since {_when(window_start)}"), MAX_HEADER)
        blocks: list[Block] = [{"type": "header", "text": {"type": "plain_text", "text": head}}]
        chunk: list[str] = []
        used = 0
        shown = 0
        for line in lines:
            if used + len(line) + 1 > MAX_SECTION:
                blocks.append(_section("\n".join(chunk)))
                chunk, used = [], 0
            if len(blocks) >= MAX_BLOCKS - 2 or _size({"blocks": blocks}) + used + len(line) > MAX_PAYLOAD_CHARS - 1500:
                break
            chunk.append(line)
            used += len(line) + 1
            shown += 1
        if chunk:
            blocks.append(_section("\n".join(chunk)))
        if shown < len(lines):
            blocks.append(_context(f"…and {len(lines) - shown} more"))
        return {"text": truncate(f"Digest: {len(entries)} more findings", MAX_FALLBACK), "blocks": blocks}

    def minimal(self, f: Finding) -> dict[str, Any]:
        """The last resort when Slack refuses the blocks: text only, short."""
        return {"text": self.fallback(f)}


def _size(payload: dict[str, Any]) -> int:
    return len(orjson.dumps(payload).decode())
