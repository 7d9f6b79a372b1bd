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


def clean(text: str) -> str:
    """Make untrusted text safe for a terminal (no escape sequences, no control characters)."""
    return _CONTROL.sub("\N{REPLACEMENT CHARACTER}", text)


class TerminalSink:
    """Prints each finding version to a console."""

    def __init__(self, *, file: TextIO | None = None, color: bool | None = None, width: int | None = None,
                 name: str = "terminal") -> None:
        self.name = name
        self.console = Console(file=file, highlight=False, soft_wrap=False, width=width,
                               force_terminal=color, no_color=color is False)
        self.printed = 0

    async def emit(self, finding: Finding) -> None:
        c = self.console
        when = datetime.fromtimestamp(finding.first_seen, UTC).strftime("%H:%M:%S")
        head = Text()
        head.append(f" {finding.kind.upper()} ", style="reverse")
        head.append(" ")
        head.append(finding.level, style=_STYLE.get(finding.level, "bold"))
        head.append(f"  {clean(finding.service)}", style="cyan")
        head.append(f"  {when}  ×{finding.count}  ", style="dim")
        head.append(finding.id, style="dim")
        c.print(head)
        if finding.summary is not None:
            s = finding.summary
            c.print(Text("  " + clean(s.title), style="bold"))
            c.print(Text("  " + clean(s.text)), soft_wrap=True)
            for i, step in enumerate(s.fix_steps, 1):
                c.print(Text(f"    {i}. {clean(step)}"))
        else:
            c.print(Text("  " + clean(finding.template), style="bold"))
        c.print()
        self.printed += 1

    async def flush(self) -> None:
        self.console.file.flush()

    async def aclose(self) -> None:
        await self.flush()
