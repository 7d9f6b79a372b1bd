"""Terminal and JSONL sinks."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from connectors.sinks.jsonl import JsonlSink
from connectors.sinks.terminal import TerminalSink
from triage.errors import SinkError
from triage.model import Cluster, Finding, Level, Sample
from triage.summarize.fallback import ModelFreeSummarizer


def _finding(message: str = "disk sda full", version: int = 1) -> Finding:
    cluster = Cluster(id="c0123456789abcde", template="disk <*> full", kind="template", level=Level.ERROR,
                      count=4, first_seen=1_773_478_800.0, last_seen=1_773_478_900.0,
                      services={"api": 3, "worker": 1}, samples=[Sample(1_773_478_800.0, "api", message, ("sda",))])
    f = Finding.of(cluster, version=version, kind="new", created_at=1.0)
    return f.model_copy(update={"summary": ModelFreeSummarizer()(f)})


@pytest.mark.anyio
class TestJsonl:
    async def test_one_line_per_version_with_the_required_fields(self, tmp_path: Path) -> None:
        """Each emitted version is one JSON line carrying id, template, level, service, counts, samples, summary."""
        sink = JsonlSink(tmp_path / "out" / "f.jsonl")
        await sink.emit(_finding())
        await sink.emit(_finding(version=2))
        await sink.aclose()
        rows = [orjson.loads(line) for line in (tmp_path / "out" / "f.jsonl").read_bytes().splitlines()]
        assert [r["version"] for r in rows] == [1, 2]
        for key in ("id", "template", "level", "service", "count", "first_seen", "last_seen", "samples", "summary"):
            assert key in rows[0]
        assert rows[0]["service"] == "api" and rows[0]["summary"]["source"] == "model-free"

    async def test_appends_across_opens(self, tmp_path: Path) -> None:
        """A restarted sink appends; it never truncates what was written."""
        for _ in range(2):
            sink = JsonlSink(tmp_path / "f.jsonl")
            await sink.emit(_finding())
            await sink.aclose()
        assert len((tmp_path / "f.jsonl").read_bytes().splitlines()) == 2

    async def test_unwritable_path_is_a_sink_error(self, tmp_path: Path) -> None:
        """A path that cannot be opened raises SinkError naming it."""
        (tmp_path / "dir").mkdir()
        sink = JsonlSink(tmp_path / "dir")
        with pytest.raises(SinkError, match="dir"):
            await sink.emit(_finding())


@pytest.mark.anyio
class TestTerminal:
    async def test_prints_header_summary_and_sample(self) -> None:
        """A finding shows its level, service, count, id and the labelled summary."""
        out = io.StringIO()
        sink = TerminalSink(file=out, color=False, width=120)
        await sink.emit(_finding())
        text = out.getvalue()
        assert "ERROR" in text and "api" in text and "×4" in text and "c0123456789abcde" in text
        assert "model-free summary" in text

    async def test_escape_sequences_in_logs_are_neutralised(self) -> None:
        """ANSI escapes and rich markup inside log text are printed inert."""
        out = io.StringIO()
        sink = TerminalSink(file=out, color=False, width=200)
        await sink.emit(_finding("evil \x1b[2J\x1b]0;pwned\x07 [bold red]x[/]"))
        text = out.getvalue()
        assert "\x1b" not in text and "\x07" not in text
        assert "[bold red]x[/]" in text

    async def test_updates_are_one_line(self) -> None:
        """A resolve (or spike, repeat, variant) is one line about the incident, not its summary again."""
        out = io.StringIO()
        sink = TerminalSink(file=out, color=False, width=200)
        await sink.emit(_finding().model_copy(update={"kind": "resolved", "version": 3}))
        lines = out.getvalue().splitlines()
        assert len(lines) == 1
        assert "RESOLVED" in lines[0] and "resolved: quiet since" in lines[0] and "model-free" not in lines[0]
