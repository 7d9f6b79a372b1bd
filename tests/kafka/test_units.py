"""Broker-free parts of the Kafka adapters: the findings schema file, URLs, binary detection, headers."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.kafka_common import parse_kafka_url
from connectors.sinks.kafka import SCHEMA_VERSION, cloudevent_headers, finding_value
from connectors.sources.kafka import _attributes, looks_binary
from triage.errors import ConfigError
from triage.model import Cluster, Finding, Level
from triage.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]


def _finding(kind: str = "spike", version: int = 3) -> Finding:
    cluster = Cluster(id="c0ffee", template="db timeout after <*> ms", kind="template", level=Level.ERROR,
                      count=7, first_seen=1.0, last_seen=2.0, services={"orders": 7})
    return Finding.of(cluster, version=version, kind=kind, created_at=1_773_478_800.5)  # type: ignore[arg-type]


class TestFindingSchema:
    def test_schema_file_is_up_to_date(self) -> None:
        """docs/finding.schema.json is what scripts/gen_schema.py generates from the model today."""
        spec = importlib.util.spec_from_file_location("gen_schema", ROOT / "scripts" / "gen_schema.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        assert (ROOT / "docs" / "finding.schema.json").read_text(encoding="utf-8") == mod.render()

    def test_value_carries_the_schema_version_and_every_required_field(self) -> None:
        """A message value has schema_version and every field the schema requires."""
        schema = orjson.loads((ROOT / "docs" / "finding.schema.json").read_bytes())
        value = orjson.loads(finding_value(_finding()))
        assert value["schema_version"] == SCHEMA_VERSION
        assert set(schema["required"]) <= set(value)


class TestCloudEventHeaders:
    def test_binary_mode_attributes(self) -> None:
        """Headers carry the CloudEvents attributes: id is cluster:version, type follows the kind."""
        h = dict(cloudevent_headers(_finding("resolved", 4), source="triage/eu-1"))
        assert h["ce_specversion"] == b"1.0" and h["ce_id"] == b"c0ffee:4"
        assert h["ce_type"] == b"dev.triage.finding.resolved" and h["ce_source"] == b"triage/eu-1"
        assert h["ce_time"] == b"2026-03-14T09:00:00.500000Z" and h["content-type"] == b"application/json"


class TestKafkaUrl:
    def test_host_and_topic(self) -> None:
        """kafka://HOST:PORT/TOPIC gives the servers and the topic; an empty host takes the setting."""
        s = KafkaSettings(bootstrap_servers="k1:9092,k2:9092")
        assert parse_kafka_url("kafka://b:9093/logs", s) == ("b:9093", "logs")
        assert parse_kafka_url("kafka:///logs", s) == ("k1:9092,k2:9092", "logs")
        assert parse_kafka_url("kafka://b:9093", s, default_topic="f") == ("b:9093", "f")

    @pytest.mark.parametrize("spec", ["kafka://b:9093/", "kafka://b/logs", "kafka://b:1/a/b", "http://b:1/x"])
    def test_bad_urls_name_the_spec(self, spec: str) -> None:
        """A malformed URL is a ConfigError naming it."""
        with pytest.raises(ConfigError, match="kafka://"):
            parse_kafka_url(spec, KafkaSettings())


class TestLooksBinary:
    @settings(max_examples=200, deadline=None)
    @given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=300))
    def test_text_is_never_binary(self, text: str) -> None:
        """Any UTF-8 text without control characters is a log line, not a dead letter."""
        assert not looks_binary(text.encode())

    def test_framed_and_compressed_values_are_binary(self) -> None:
        """Confluent-framed Avro and gzip bytes are binary; a latin-1 line with one accent is text."""
        assert looks_binary(b"\x00\x00\x00\x00\x07\x02\x00\x1e\x04\xc8\x01")
        assert looks_binary(gzip.compress(b"ERROR something failed " * 20))
        assert not looks_binary("ERROR café closed unexpectedly".encode("latin-1"))


class TestAttributes:
    def test_key_and_headers_bounded_with_service(self) -> None:
        """Key and headers become bounded text attributes; service comes from a header, else the key."""
        attrs = _attributes(b"orders", [("service.name", b"billing"), ("x" * 100, b"v" * 1000)])
        assert attrs["service"] == "billing" and attrs["key"] == "orders"
        assert len(attrs["x" * 64]) == 256
        assert _attributes(b"orders", [])["service"] == "orders"
        assert "service" not in _attributes(b"a key with spaces", [])
