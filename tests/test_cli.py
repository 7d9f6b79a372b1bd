"""The command line: run, replay, demo, configuration errors and signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import anyio
import orjson
import pytest
from anyio import wait_all_tasks_blocked

from triage import cli
from triage.demo import SAMPLE_DIR

LOG = [
    "2026-03-14T09:00:00Z INFO request served in 12 ms",
    "2026-03-14T09:00:01Z ERROR payment declined for order 17",
    "2026-03-14T09:00:02Z INFO request served in 15 ms",
    "2026-03-14T09:00:03Z ERROR payment declined for order 18",
]


def _texts(obj: object) -> str:
    """Every string inside a JSON value, joined (to search findings without JSON escaping)."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return "\n".join(_texts(v) for v in obj.values())
    if isinstance(obj, list):
        return "\n".join(_texts(v) for v in obj)
    return ""


def _jsonl(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


class TestRunOnce:
    def test_replay_writes_findings_and_accounts(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`run --once` reads the files to their end, writes findings to JSONL and prints balanced counters."""
        (tmp_path / "app.log").write_text("\n".join(LOG) + "\n")
        out = tmp_path / "f.jsonl"
        code = cli.main(["run", "--once", "--source", f"file:{tmp_path}/*.log", "--sink", f"jsonl:{out}",
                         "--state-dir", str(tmp_path / "state")])
        assert code == 0
        rows = _jsonl(out)
        assert len(rows) == 1 and rows[0]["service"] == "app" and rows[0]["level"] == "ERROR"
        err = capsys.readouterr().err
        assert "read=4 " in err and "balanced" in err
        assert "fast_lane=0" in err  # a shape is learned at its second record: none of four took the lane

    def test_second_replay_resumes_from_checkpoint(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A second run on the same state dir reads only what was appended and announces nothing again."""
        log = tmp_path / "app.log"
        log.write_text("\n".join(LOG) + "\n")
        out = tmp_path / "f.jsonl"
        argv = ["run", "--once", "--source", f"file:{log}", "--sink", f"jsonl:{out}",
                "--state-dir", str(tmp_path / "state")]
        assert cli.main(argv) == 0
        with log.open("a") as f:
            f.write("2026-03-14T09:00:09Z ERROR payment declined for order 19\n")
        capsys.readouterr()
        assert cli.main(argv) == 0
        assert "read=1 " in capsys.readouterr().err
        assert len(_jsonl(out)) == 1


class TestErrors:
    @pytest.mark.parametrize(
        ("argv", "needle"),
        [
            (["run", "--once", "--source", "ftp://x"], "source 'ftp://x'"),
            (["run", "--once", "--source", "stdin", "--sink", "pager"], "sink 'pager'"),
            (["run", "--once"], "no sources"),
        ],
    )
    def test_bad_arguments_fail_with_one_line(self, argv: list[str], needle: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
        """A wrong source or sink exits 2 with one line naming it."""
        assert cli.main([*argv, "--state-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err

    def test_replay_of_nothing_is_an_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`--once` on a glob that matches no file says so and exits non-zero."""
        code = cli.main(["run", "--once", "--source", f"file:{tmp_path}/none-*.log", "--state-dir", str(tmp_path)])
        assert code == 1
        assert "no file matches" in capsys.readouterr().err


@pytest.mark.slow
class TestDemo:
    def test_demo_finds_each_planted_root_cause_once(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The demo replays the sample: every root cause of the manifest is announced exactly once."""
        out = tmp_path / "f.jsonl"
        code = cli.main(["demo", "--sink", f"jsonl:{out}", "--state-dir", str(tmp_path / "s")])
        assert code == 0
        manifest = json.loads((SAMPLE_DIR / "incident.json").read_text())
        findings = _jsonl(out)
        for cause in manifest["root_causes"]:
            hits = [f for f in findings if cause["match"] in _texts(f)]
            announced = [f for f in hits if f["kind"] == "new"]
            assert len({f["id"] for f in hits}) == 1, (cause["name"], [h["template"] for h in hits])
            assert len(announced) == 1, (cause["name"], [h["kind"] for h in hits])
        printed = capsys.readouterr().out
        assert "balanced" in printed and f"read={manifest['total_lines']} " in printed
        assert "clusters (" in printed
        lane = re.search(r"fast_lane=(\d+)", printed)
        assert lane is not None and int(lane.group(1)) > manifest["total_lines"] // 5  # repeated shapes


class TestSignals:
    def test_second_signal_exits_at_once(self) -> None:
        """First SIGINT asks the pipeline to drain; a second one exits with 130 without waiting."""
        stopped = []

        class HungPipeline:
            def stop(self) -> None:
                stopped.append(True)

            async def run(self) -> None:
                await wait_all_tasks_blocked()
                os.kill(os.getpid(), signal.SIGINT)
                while not stopped:
                    await wait_all_tasks_blocked()
                os.kill(os.getpid(), signal.SIGINT)
                await anyio.Event().wait()  # a drain that never ends

        app = SimpleNamespace(pipeline=HungPipeline())
        assert cli._run_until_signalled(app) == cli.EXIT_INTERRUPTED
        assert stopped == [True]

    def test_sigint_drains_and_checkpoints_a_following_run(self, tmp_path: Path) -> None:
        """A following `triage run` stops on SIGINT with exit 0, counters balanced and offsets committed."""
        log = tmp_path / "app.log"
        log.write_text("\n".join(LOG) + "\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "triage.cli", "run", "--source", f"file:{log}", "--no-color",
             "--state-dir", str(tmp_path / "state")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # the finding is printed once the line was processed
                if "payment declined" in line:
                    break
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        assert "read=4 " in err and "balanced" in err
        from triage.store import Store

        [state] = Store.open(tmp_path / "state").load_checkpoints(f"file:{log}").values()
        assert json.loads(state)["offset"] == log.stat().st_size


class TestSilenceCommand:
    def test_add_list_expire(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`triage silence add|list|expire` manage silences in the store a running triage reads."""
        state = ["--state-dir", str(tmp_path)]
        assert cli.main(["silence", "add", "--match", "*declined*", "--for", "30m", "--comment", "known", *state]) == 0
        assert cli.main(["silence", "list", *state]) == 0
        out = capsys.readouterr().out
        assert "silence 1 until" in out and "active" in out and "'*declined*'" in out and "known" in out
        assert cli.main(["silence", "expire", "1", *state]) == 0
        assert cli.main(["silence", "expire", "1", *state]) == 1
        capsys.readouterr()
        assert cli.main(["silence", "list", *state]) == 0
        assert "no active silences" in capsys.readouterr().out

    def test_silenced_template_is_not_announced(self, tmp_path: Path) -> None:
        """A replay with a silence on a template announces the other clusters only."""
        (tmp_path / "app.log").write_text("\n".join([*LOG, "2026-03-14T09:00:05Z ERROR disk full on sda"]) + "\n")
        out = tmp_path / "f.jsonl"
        state = ["--state-dir", str(tmp_path / "state")]
        assert cli.main(["silence", "add", "--match", "payment declined*", *state]) == 0
        assert cli.main(["run", "--once", "--source", f"file:{tmp_path}/*.log", "--sink", f"jsonl:{out}", *state]) == 0
        assert [r["template"] for r in _jsonl(out)] == ["disk full on sda"]

    @pytest.mark.parametrize("text", ["3w", "soon", "-5m", "0"])
    def test_bad_duration(self, text: str, tmp_path: Path) -> None:
        """A duration that is not 30m/2h/1d-like is refused with exit 2."""
        assert cli.main(["silence", "add", "--cluster", "c1", f"--for={text}", "--state-dir", str(tmp_path)]) == 2


class TestWiring:
    def test_slack_sink_from_settings(self, tmp_path: Path) -> None:
        """`--sink slack` builds the Slack sink from slack.* settings; without a token or webhook it is refused."""
        from connectors.sinks.slack import SlackSink
        from triage.app import build
        from triage.errors import ConfigError
        from triage.settings import load_settings

        settings = load_settings(None, sinks=("slack",), state_dir=tmp_path, slack={"token": "xoxb-test"})
        app = build(settings, follow=False)
        try:
            assert [type(s) for s in app.pipeline.sinks] == [SlackSink]
        finally:
            app.store.close()
        with pytest.raises(ConfigError):
            build(load_settings(None, sinks=("slack",), state_dir=tmp_path), follow=False)

    def test_bad_redaction_pattern_is_a_config_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A redact.extra_patterns entry that is not a regex stops triage with one line naming the setting."""
        (tmp_path / "t.toml").write_text('[redact]\nextra_patterns = ["token=(unclosed"]\n')
        code = cli.main(["run", "--once", "--config", str(tmp_path / "t.toml"), "--source", "stdin",
                         "--state-dir", str(tmp_path)])
        assert code == 2
        assert "redact.extra_patterns" in capsys.readouterr().err
