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
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
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
    poll_interval_s: float = Field(0.05, gt=0, le=60, description="new lines are seen within this time")
    max_line_bytes: int = Field(65_536, ge=256, le=16 * 1024 * 1024)


class PipelineSettings(_Section):
    """Bounds and timings of the pipeline."""

    queue_batches: int = Field(16, ge=1, le=10_000, description="batches buffered between two stages")
    checkpoint_interval_s: float = Field(5.0, gt=0, le=3600)
    checkpoint_records: int = Field(50_000, ge=1)
    fast_lane: bool = Field(True, description="records of a known line shape skip decoding and mining "
                                               "(counted in bulk; see triage/fastlane/)")
    multiline_quiet_ms: int = Field(200, ge=1, le=60_000, description="flush a pending trace after this quiet time")
    max_event_lines: int = Field(500, ge=1, le=100_000)
    max_event_bytes: int = Field(256 * 1024, ge=1024)


class ClusteringSettings(_Section):
    max_clusters: int = Field(20_000, ge=10)
    max_samples: int = Field(5, ge=1, le=100)


class DetectSettings(_Section):
    """When a cluster becomes a finding, and when its incident is worth another word."""

    min_level: Literal["DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    min_count: int = Field(1, ge=1, description="events before a cluster is announced")
    group_wait_s: float = Field(0.0, ge=0, le=3600, description="wait before the first announcement (0: at once)")
    group_interval_s: float = Field(300.0, ge=0, description="at least this long between updates of one incident")
    repeat_interval_s: float = Field(3600.0, ge=0, description="remind that it still fires (0: never)")
    resolve_after_s: float = Field(180.0, gt=0, description="quiet this long: resolved")
    resolve_gaps: float = Field(3.0, ge=1, description="a sparse incident resolves after this many usual gaps")
    spike_factor: float = Field(5.0, gt=1, description="a minute this many times its baseline is a spike")
    spike_min_count: int = Field(20, ge=1, description="events in a minute before a spike is possible")
    baseline_alpha: float = Field(0.3, gt=0, lt=1, description="weight of the latest minute in the baseline")
    max_incidents: int = Field(10_000, ge=10, description="incidents tracked at once (oldest forgotten)")

    @field_validator("min_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class LLMSettings(_Section):
    """The summarizer's model endpoint (any OpenAI-compatible chat-completions server).

    Off unless ``provider`` or ``base_url`` is set. ``provider`` fills the base URL and the env var
    holding the API key (cerebras: CEREBRAS_API_KEY, openai: OPENAI_API_KEY); ``base_url``/``api_key``
    win over the preset. The model id is always configurable.
    """

    provider: Literal["cerebras", "openai", "vllm", "ollama", "llamacpp", "local"] | None = None
    base_url: str | None = None
    model: str = Field("", description="model id as the endpoint names it (e.g. qwen-3-coder-480b)")
    api_key: SecretStr | None = None
    response_format: Literal["auto", "json_object", "json_object_schema", "json_schema", "none"] = "auto"
    max_tokens: int = Field(600, ge=16, le=32_768, description="per call")
    temperature: float = Field(0.2, ge=0, le=2)
    concurrency: int = Field(4, ge=1, le=256, description="calls in flight at once")
    tokens_per_hour: int = Field(300_000, ge=0, description="beyond it, findings keep the model-free summary")
    max_pending: int = Field(64, ge=1, description="findings waiting for a call; beyond, model-free")
    connect_timeout_s: float = Field(5.0, gt=0, le=120)
    read_timeout_s: float = Field(30.0, gt=0, le=600)
    max_retries: int = Field(3, ge=0, le=10)
    breaker_failures: int = Field(5, ge=1)
    breaker_reset_s: float = Field(30.0, gt=0)
    prompt_max_chars: int = Field(12_000, ge=1_000, le=400_000, description="bound of one prompt")
    samples: int = Field(5, ge=0, le=50, description="samples per prompt")
    neighbour_lines: int = Field(6, ge=0, le=100, description="lines of the same service before the first occurrence")
    related_window_s: float = Field(300.0, ge=0, description="clusters started this close are offered as related")
    drain_timeout_s: float = Field(15.0, ge=0, description="on shutdown, how long calls in flight may finish")
    audit_log: Path | None = Field(None, description="append exactly what is sent to the model (JSONL)")

    @property
    def enabled(self) -> bool:
        return self.provider is not None or bool(self.base_url)


class RedactSettings(_Section):
    """Secrets are always removed before clustering; PII is replaced by placeholders in prompts."""

    pii: bool = True
    ips: bool = Field(False, description="also hide IP addresses from the model")
    extra_patterns: tuple[str, ...] = Field((), description="more regexes whose matches are secrets")


class SlackRoute(_Section):
    """One routing rule: findings of a service matching ``service`` (a glob) at ``min_level`` or above."""

    service: str = "*"
    min_level: Literal["DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"] = "DEBUG"
    channel: str = Field(min_length=1)

    @field_validator("min_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class SlackSettings(_Section):
    """The Slack sink (``--sink slack``): a bot token (Web API: post, edit in place, threads), or an
    incoming webhook (``webhook_url`` without a token: one post per finding, no edits)."""

    token: SecretStr | None = Field(None, description="bot token (xoxb-...)")
    channel: str = Field("#alerts", min_length=1, description="default channel (name or id)")
    api_url: str = "https://slack.com/api"
    webhook_url: SecretStr | None = Field(None, description="incoming webhook, used when no token is set")
    routes: tuple[SlackRoute, ...] = Field((), description="first match wins, else `channel`")
    edit_interval_s: float = Field(1.0, ge=0, le=600, description="at most one edit per message per interval")
    channel_interval_s: float = Field(1.0, ge=0, le=600, description="at most one call per channel per interval")
    max_roots_per_window: int = Field(10, ge=1, description="new root messages per channel per window")
    cap_window_s: float = Field(600.0, gt=0, description="beyond the cap, new findings go to one digest")
    max_outbox: int = Field(1_000, ge=1, description="beyond, updates of the same finding are coalesced")
    drain_timeout_s: float = Field(3.0, ge=0, le=600, description="on close, how long deliveries may finish")
    request_timeout_s: float = Field(10.0, gt=0, le=300)
    retry_max_s: float = Field(60.0, gt=0, le=3600, description="longest backoff between retries")
    webhook_wait_s: float = Field(30.0, ge=0, description="webhook mode: post without the model after this")


class KafkaSettings(_Section):
    """Kafka clients: the ``kafka://HOST:PORT/TOPIC`` source (consumer group) and sink (findings topic).

    The host in a ``kafka://`` URL overrides ``bootstrap_servers``; ``kafka:///TOPIC`` uses it.
    """

    bootstrap_servers: str = Field("localhost:9092", description="host:port[,host:port...]")
    client_id: str = "triage"
    group_id: str = Field("triage", min_length=1, description="consumer group: workers sharing it split partitions")
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    dead_letter_topic: str = Field("triage.dead-letter", description='"" = no dead letters (records are marked instead)')
    findings_topic: str = "triage.findings"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    session_timeout_ms: int = Field(10_000, ge=1_000, le=3_600_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100, le=600_000)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    request_timeout_ms: int = Field(30_000, ge=1_000)
    max_poll_records: int = Field(2_000, ge=1, le=100_000, description="records per batch (one getmany)")
    poll_timeout_ms: int = Field(200, ge=1, le=60_000, description="how long one empty poll waits")
    fetch_max_wait_ms: int = Field(200, ge=0, le=60_000)
    max_record_bytes: int = Field(1024 * 1024, ge=256, description="larger values go to the dead-letter topic")
    pause_uncommitted_records: int = Field(
        200_000, ge=1, description="pause a partition with more records read but not committed (resume at half)")
    revoke_timeout_s: float = Field(10.0, ge=0, le=600, description="how long a revocation waits for commits")
    commit_timeout_s: float = Field(30.0, gt=0, le=600)
    acks: Literal["all", "1", "0"] = "all"
    enable_idempotence: bool = Field(False, description="turn on against Apache Kafka/Redpanda")
    compression_type: Literal["none", "gzip"] = "none"
    linger_ms: int = Field(5, ge=0, le=10_000)
    max_pending_findings: int = Field(10_000, ge=1, description="unacknowledged findings before emit waits")
    event_source: str = Field("triage", min_length=1, description="the CloudEvents ce_source of findings")

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str) -> str:
        parts = [p.strip() for p in v.split(",") if p.strip()]
        if not parts or any(":" not in p for p in parts):
            raise ValueError("expected host:port[,host:port...]")
        return ",".join(parts)


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
    sinks: Annotated[tuple[str, ...], NoDecode] = Field(("terminal",), description='"terminal", "jsonl:PATH", "slack", "kafka://HOST:PORT/TOPIC"')
    file: FileSettings = FileSettings()
    pipeline: PipelineSettings = PipelineSettings()
    clustering: ClusteringSettings = ClusteringSettings()
    detect: DetectSettings = DetectSettings()
    kafka: KafkaSettings = KafkaSettings()
    slack: SlackSettings = SlackSettings()
    llm: LLMSettings = LLMSettings()
    redact: RedactSettings = RedactSettings()

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
        # command line > env > the TOML file named by load_settings (never one found implicitly) > defaults.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


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
            model_config = SettingsConfigDict(toml_file=toml_file)

        return _FromToml(**overrides)
    except ValidationError as e:
        raise ConfigError(_one_line(e)) from e
    except SettingsError as e:
        raise ConfigError(f"{e}: {e.__cause__}" if e.__cause__ else str(e)) from e


# Variables of triage that are not settings (read by tools that run before any Settings exist).
_NOT_SETTINGS = frozenset({"TRIAGE_MODEL_CACHE"})


def _check_env_keys() -> None:
    """Unknown ``TRIAGE_*`` variables are a typo, not something to ignore."""
    for name in os.environ:
        if name.upper().startswith("TRIAGE_") and name.upper() not in _NOT_SETTINGS:
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
