"""Terminal sink: findings printed as they are produced, readable at a glance.

Log text is untrusted: control characters (ANSI escapes included) are replaced and rich markup is
never interpreted in it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TextIO

from rich.console import Console
from rich.text import Text

from triage.model import Finding

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")
_STYLE = {"CRITICAL": "bold white on red", "ERROR": "bold red", "WARNING": "bold yellow"}


def _quiet_since(f: Finding) -> str:
    return f"resolved: quiet since {datetime.fromtimestamp(f.last_seen, UTC):%H:%M:%S}"


_UPDATE = {
    "spike": lambda f: "spike: its rate jumped above its own baseline",
    "variant": lambda f: "new variant: " + clean(f.template)[:120],
    "repeat": lambda f: "still firing",
    "resolved": _quiet_since,
}


def clean(text: str) -> str:
    """Make untrusted text safe for a terminal (no escape sequences, no control characters)."""
    return _CONTROL.sub("\N{REPLACEMENT CHARACTER}", text)


class TerminalSink:
    """Prints each finding version to a console; a model's summary is shown live as it streams."""

    def __init__(self, *, file: TextIO | None = None, color: bool | None = None, width: int | None = None,
                 name: str = "terminal") -> None:
        self.name = name
        self.console = Console(file=file, highlight=False, soft_wrap=False, width=width,
                               force_terminal=color, no_color=color is False)
        self.printed = 0
        self._streaming: str | None = None  # the finding whose summary is being streamed
        self._streamed: set[str] = set()

    def _end_stream(self) -> None:
        if self._streaming is not None:
            self.console.print()
            self._streaming = None

    async def summary_delta(self, finding: Finding, text: str) -> None:
        c = self.console
        if self._streaming != finding.id:
            self._end_stream()
            c.print(Text(f"  ▸ {finding.id} ", style="dim"), end="")
            self._streaming = finding.id
            self._streamed.add(finding.id)
        c.print(Text(clean(text).replace("\n", " ")), end="", soft_wrap=True)
        c.file.flush()

    async def emit(self, finding: Finding) -> None:
        self._end_stream()
        c = self.console
        update = finding.kind not in ("new", "summary")
        when = datetime.fromtimestamp(finding.created_at if update else finding.first_seen, UTC)
        head = Text()
        head.append(f" {finding.kind.upper()} ", style="reverse")
        head.append(" ")
        head.append(finding.level, style=_STYLE.get(finding.level, "bold"))
        head.append(f"  {clean(finding.service)}", style="cyan")
        head.append(f"  {when:%H:%M:%S}  ×{finding.count}  ", style="dim")
        head.append(finding.id, style="dim")
        if update:  # a later word about a known incident: one line, not the whole summary again
            head.append("  " + _UPDATE[finding.kind](finding))
            c.print(head, soft_wrap=True)
            return
        c.print(head)
        s = finding.summary
        if s is None:
            c.print(Text("  " + clean(finding.template), style="bold"))
        else:
            label = f"  [{s.model}{', partial' if s.partial else ''}] " if s.source == "llm" else "  "
            c.print(Text(label + clean(s.title), style="bold"))
            if not (s.source == "llm" and finding.id in self._streamed):
                c.print(Text("  " + clean(s.text)), soft_wrap=True)
            if s.likely_cause:
                c.print(Text("  Likely cause: " + clean(s.likely_cause)), soft_wrap=True)
            for i, step in enumerate(s.fix_steps, 1):
                c.print(Text(f"    {i}. {clean(step)}"), soft_wrap=True)
        c.print()
        self._streamed.discard(finding.id)
        self.printed += 1

    async def flush(self) -> None:
        self.console.file.flush()

    async def aclose(self) -> None:
        self._end_stream()
        await self.flush()
