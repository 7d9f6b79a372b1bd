"""One frozen ``Settings``, built once at the edge (the CLI) and passed down.

Sources of values, highest precedence first: keyword arguments (command-line options), ``TRIAGE_*``
environment variables (nested with ``__``: ``TRIAGE_LLM__BASE_URL``), the TOML file given with
``--config``, then the defaults written here. No file is read implicitly from the working directory.
A wrong key or value fails with one line naming the key and what was expected (``ConfigError``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from triage.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileSettings(_Section):
    """How file sources read (``file:GLOB`` in ``sources``)."""

    start_at: Literal["beginning", "end"] = "beginning"
    poll_interval_s: float = Field(0.25, gt=0, le=60)
    max_line_bytes: int = Field(65_536, ge=256, le=16 * 1024 * 1024)


class PipelineSettings(_Section):
    """Bounds and timings of the pipeline."""

    queue_batches: int = Field(16, ge=1, le=10_000, description="batches buffered between two stages")
    checkpoint_interval_s: float = Field(5.0, gt=0, le=3600)
    checkpoint_records: int = Field(50_000, ge=1)
    multiline_quiet_ms: int = Field(200, ge=1, le=60_000, description="flush a pending trace after this quiet time")
    max_event_lines: int = Field(500, ge=1, le=100_000)
    max_event_bytes: int = Field(256 * 1024, ge=1024)


class ClusteringSettings(_Section):
    max_clusters: int = Field(20_000, ge=10)
    max_samples: int = Field(5, ge=1, le=100)


class DetectSettings(_Section):
    min_level: Literal["DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"] = "WARNING"

    @field_validator("min_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class Settings(BaseSettings):
    """All of triage's settings. See ``config/triage.example.toml`` for every key."""

    model_config = SettingsConfigDict(
        env_prefix="TRIAGE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    state_dir: Path = Field(Path(".triage"), description="where the SQLite store lives")
    sources: Annotated[tuple[str, ...], NoDecode] = Field((), description='"file:GLOB", "stdin"')
    sinks: Annotated[tuple[str, ...], NoDecode] = Field(("terminal",), description='"terminal", "jsonl:PATH"')
    file: FileSettings = FileSettings()
    pipeline: PipelineSettings = PipelineSettings()
    clustering: ClusteringSettings = ClusteringSettings()
    detect: DetectSettings = DetectSettings()

    @field_validator("sources", "sinks", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        # TRIAGE_SOURCES="file:/var/log/*.log,stdin" is accepted as well as a JSON list.
        if isinstance(v, str):
            if v.lstrip().startswith("["):
                try:
                    return tuple(orjson.loads(v))
                except orjson.JSONDecodeError as e:
                    raise ValueError(f"not a JSON list: {e}") from e
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (command line) > env > defaults; no dotenv, no file read implicitly.
        return (init_settings, env_settings)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the one Settings: ``overrides`` (command line) > ``TRIAGE_*`` env > ``config`` TOML > defaults.

    Raises ``ConfigError`` with one line naming the key and what was expected.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    _check_env_keys()
    try:
        if config is None:
            return Settings(**overrides)
        _check_readable(config)
        toml_file = Path(config)

        class _FromToml(Settings):
            @classmethod
            def settings_customise_sources(
                cls,
                settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file))

        return Settings.model_validate(_FromToml(**overrides).model_dump())
    except ValidationError as e:
        raise ConfigError(_one_line(e)) from e
    except SettingsError as e:
        raise ConfigError(f"{e}: {e.__cause__}" if e.__cause__ else str(e)) from e


def _check_env_keys() -> None:
    """Unknown ``TRIAGE_*`` variables are a typo, not something to ignore."""
    for name in os.environ:
        if name.upper().startswith("TRIAGE_"):
            head = name[len("TRIAGE_"):].split("__", 1)[0].lower()
            if head not in Settings.model_fields:
                raise ConfigError(f"unknown environment variable {name!r}: no setting {head!r}")


def _check_readable(config: Path) -> None:
    try:
        tomllib.loads(Path(config).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"--config: file not found: {config}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {config}: invalid TOML: {e}") from e
    except OSError as e:
        raise ConfigError(f"--config {config}: cannot read: {e.strerror}") from e


def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "settings"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown setting {key!r} (env TRIAGE_{key.upper().replace('.', '__')}); see config/triage.example.toml"
    got = err.get("input")
    got_s = "" if isinstance(got, dict) else f" (got {got!r})"
    more = f"; and {len(e.errors()) - 1} more" if len(e.errors()) > 1 else ""
    return f"setting {key!r}: {err['msg'][:1].lower()}{err['msg'][1:]}{got_s}{more}"
