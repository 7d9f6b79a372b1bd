"""The model-free summary: deterministic, always available, clearly labelled as such.

It says what (the template or exception), where (services, top frame), how often and since when, and
shows one sample. It is what goes out when no model is configured, when the token budget is spent,
or while the model endpoint is failing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from triage.model import Finding, Summary

LABEL = "model-free summary"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class ModelFreeSummarizer:
    """Builds a ``Summary`` from a finding alone."""

    __slots__ = ("_sample_chars",)

    def __init__(self, *, sample_chars: int = 300) -> None:
        self._sample_chars = sample_chars

    def __call__(self, finding: Finding) -> Summary:
        exc = finding.exception
        where = finding.service or "unknown service"
        if exc is not None:
            what = f"{exc.type}: {_clip(exc.message, 120)}" if exc.message else exc.type
            title = f"{exc.type} in {where}"
        else:
            what = _clip(finding.template, 160)
            title = f"{finding.level.capitalize()} in {where}: {_clip(finding.template, 80)}"
        parts = [f"[{LABEL}] New {finding.level} cluster in {where}: {what}."]
        root = exc
        while root is not None and root.cause is not None:
            root = root.cause
        if root is not None and root is not exc:
            parts.append(f"Root cause: {root.type}: {_clip(root.message, 160)}.")
        if exc is not None and exc.frames:
            top = next((f for f in exc.frames if f.in_app), exc.frames[0])
            at = f"{top.module}.{top.function}" if top.module else top.function
            parts.append(f"Top frame: {at}.")
        times = "time" if finding.count == 1 else "times"
        parts.append(f"Seen {finding.count} {times} since {_when(finding.first_seen)} "
                     f"(last {_when(finding.last_seen)}).")
        if len(finding.services) > 1:
            parts.append("Services: " + ", ".join(
                f"{s} ({n})" for s, n in sorted(finding.services.items(), key=lambda kv: -kv[1])) + ".")
        if finding.samples:
            parts.append(f"Sample: {_clip(finding.samples[0].message, self._sample_chars)}")
        return Summary(source="model-free", title=_clip(title, 140), text=" ".join(parts),
                       severity=finding.level.lower())
