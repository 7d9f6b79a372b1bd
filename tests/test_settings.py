"""Settings: TOML file + TRIAGE_* env + command line, frozen, one clear line on error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from triage.errors import ConfigError
from triage.settings import Settings, load_settings

EXAMPLE = Path(__file__).parent.parent / "config" / "triage.example.toml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("TRIAGE_"):
            monkeypatch.delenv(name)


class TestSources:
    def test_defaults_without_any_file(self) -> None:
        """With no file and no env, the embedded defaults apply (no file is read implicitly)."""
        s = load_settings()
        assert s.state_dir == Path(".triage")
        assert s.sinks == ("terminal",)
        assert s.pipeline.multiline_quiet_ms == 200

    def test_example_file_loads(self) -> None:
        """The shipped example config is valid and names every section."""
        s = load_settings(EXAMPLE)
        assert s.sources == ("file:/var/log/app/*.log",)
        assert s.detect.min_level == "WARNING"

    def test_env_beats_file_and_cli_beats_env(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Precedence: command line > env > TOML > defaults, nested keys with __."""
        cfg = tmp_path / "t.toml"
        cfg.write_text("state_dir = 'from-file'\n[pipeline]\ncheckpoint_interval_s = 1.0\nqueue_batches = 3\n")
        monkeypatch.setenv("TRIAGE_PIPELINE__CHECKPOINT_INTERVAL_S", "2.5")
        monkeypatch.setenv("TRIAGE_STATE_DIR", "from-env")
        s = load_settings(cfg, state_dir=Path("from-cli"))
        assert s.pipeline.checkpoint_interval_s == 2.5
        assert s.pipeline.queue_batches == 3
        assert s.state_dir == Path("from-cli")

    def test_list_from_env_comma_or_json(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Lists come from env as comma-separated text or a JSON list."""
        monkeypatch.setenv("TRIAGE_SOURCES", "file:/a/*.log, stdin")
        monkeypatch.setenv("TRIAGE_SINKS", '["terminal", "jsonl:/tmp/f.jsonl"]')
        s = load_settings()
        assert s.sources == ("file:/a/*.log", "stdin")
        assert s.sinks == ("terminal", "jsonl:/tmp/f.jsonl")

    def test_frozen(self) -> None:
        """Settings cannot be changed once built."""
        s = load_settings()
        with pytest.raises(ValidationError):
            s.state_dir = Path("x")  # type: ignore[misc]
        assert isinstance(s, Settings)


class TestErrors:
    @pytest.mark.parametrize(
        ("toml", "needle"),
        [
            ("[pipeline]\nbogus = 1\n", "unknown setting 'pipeline.bogus'"),
            ("[pipeline]\ncheckpoint_interval_s = 'soon'\n", "setting 'pipeline.checkpoint_interval_s'"),
            ("[file]\nstart_at = 'middle'\n", "setting 'file.start_at'"),
            ("[detect]\nmin_level = 'loud'\n", "setting 'detect.min_level'"),
            ("sinks = 'x' = 1\n", "invalid TOML"),
        ],
    )
    def test_bad_file_is_one_clear_line(self, tmp_path: Path, toml: str, needle: str) -> None:
        """A wrong key or value fails with one line naming the key."""
        cfg = tmp_path / "bad.toml"
        cfg.write_text(toml)
        with pytest.raises(ConfigError) as e:
            load_settings(cfg)
        assert needle in str(e.value)
        assert "\n" not in str(e.value)

    def test_unknown_env_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A TRIAGE_ variable that names no setting is a typo, reported by name."""
        monkeypatch.setenv("TRIAGE_STAT_DIR", "/x")
        with pytest.raises(ConfigError, match="TRIAGE_STAT_DIR"):
            load_settings()

    def test_bad_env_value(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bad value from env names the nested key."""
        monkeypatch.setenv("TRIAGE_PIPELINE__QUEUE_BATCHES", "0")
        with pytest.raises(ConfigError, match=r"pipeline\.queue_batches"):
            load_settings()

    def test_missing_file(self, tmp_path: Path) -> None:
        """A --config that does not exist is named."""
        with pytest.raises(ConfigError, match="file not found"):
            load_settings(tmp_path / "nope.toml")
