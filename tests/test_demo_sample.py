"""The bundled sample incident: reproducible, described truthfully by its manifest, and a sound story."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from triage.demo import generate as gen

FILES = tuple(gen.file_name(s) for s in gen.SERVICES)

_NGINX = re.compile(r"^(\d{4})/(\d\d)/(\d\d) (\d\d:\d\d:\d\d) \[")
_SPRING = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)\.(\d{3}) ")
_PYTHON = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d),(\d{3}) ")
_LOGFMT = re.compile(r"^ts=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")
_ERROR = re.compile(r'"level":"error"|^\S+ \S+ \[error\]|^\S+ \S+ ERROR |^\S+ \S+ +ERROR 1 ---|level=error ')


def timestamp(line: str) -> str | None:
    """The line's own time as ``YYYY-MM-DDTHH:MM:SS.mmm`` (comparable as text), or None for a continuation."""
    if line.startswith("{"):
        obj = json.loads(line)
        return str(obj.get("time") or obj["timestamp"])[:23]
    if m := _NGINX.match(line):
        return f"{m[1]}-{m[2]}-{m[3]}T{m[4]}.000"
    if m := _SPRING.match(line) or _PYTHON.match(line):
        return f"{m[1]}T{m[2]}.{m[3]}"
    if m := _LOGFMT.match(line):
        return m[1]
    return None


def timed_lines(text: str) -> Iterator[tuple[str, str, bool]]:
    """(line, time of its event, whether the line is the head of the event) for every physical line."""
    current = ""
    for line in text.splitlines():
        ts = timestamp(line)
        if ts is not None:
            current = ts
        yield line, current, ts is not None


def split_events(text: str) -> list[list[str]]:
    """Group physical lines into events: a timestamped line or a Go ``panic:`` line starts one."""
    events: list[list[str]] = []
    for line in text.splitlines():
        if timestamp(line) is not None or line.startswith("panic: ") or not events:
            events.append([line])
        else:
            events[-1].append(line)
    return events


def read_texts(directory: Path) -> dict[str, str]:
    return {name: gzip.decompress((directory / name).read_bytes()).decode("utf-8") for name in FILES}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    gen.generate(out)
    return out


@pytest.fixture(scope="module")
def texts(out_dir: Path) -> dict[str, str]:
    return read_texts(out_dir)


@pytest.fixture(scope="module")
def manifest(out_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out_dir / gen.MANIFEST_NAME).read_text())
    return loaded


def window(manifest: dict[str, Any]) -> tuple[str, str]:
    return manifest["start"][:23], manifest["end"][:23]


class TestDeterminism:
    def test_two_runs_write_identical_bytes(self, out_dir: Path, tmp_path: Path) -> None:
        """Generating again writes byte-identical gzip files and manifest."""
        gen.generate(tmp_path)
        for name in (*FILES, gen.MANIFEST_NAME):
            assert (tmp_path / name).read_bytes() == (out_dir / name).read_bytes(), name

    def test_independent_of_hash_seed_locale_and_timezone(self, out_dir: Path, tmp_path: Path) -> None:
        """The CLI in a process with another hash seed, locale and time zone writes the same content."""
        env = {**os.environ, "PYTHONHASHSEED": "4242", "TZ": "Asia/Kolkata", "LC_ALL": "C"}
        subprocess.run([sys.executable, "-m", "triage.demo.generate", "--out", str(tmp_path)],
                       check=True, env=env, capture_output=True)
        assert read_texts(tmp_path) == read_texts(out_dir)
        assert (tmp_path / gen.MANIFEST_NAME).read_bytes() == (out_dir / gen.MANIFEST_NAME).read_bytes()

    def test_bundled_sample_matches_the_generator(self, out_dir: Path) -> None:
        """The sample shipped in the package is exactly what the script produces (it never drifts)."""
        assert read_texts(gen.SAMPLE_DIR) == read_texts(out_dir)
        assert (gen.SAMPLE_DIR / gen.MANIFEST_NAME).read_bytes() == (out_dir / gen.MANIFEST_NAME).read_bytes()

    def test_bundled_directory_holds_only_the_sample(self) -> None:
        """No plain-text copies or stray files sit next to the bundled sample."""
        assert sorted(p.name for p in gen.SAMPLE_DIR.iterdir()) == sorted((*FILES, gen.MANIFEST_NAME))

    def test_gzip_headers_carry_no_time_or_name(self, out_dir: Path) -> None:
        """Each gzip header has mtime 0 and no file name, so bytes do not depend on when or where."""
        for name in FILES:
            head = (out_dir / name).read_bytes()[:10]
            assert head[:3] == b"\x1f\x8b\x08"
            assert head[3] & 0x08 == 0  # FNAME flag
            assert head[4:8] == b"\x00\x00\x00\x00"

    def test_sample_stays_small(self, out_dir: Path) -> None:
        """The compressed sample stays under 3 MB."""
        assert sum((out_dir / name).stat().st_size for name in FILES) < 3_000_000


class TestManifest:
    def test_line_counts_match_the_files(self, manifest: dict[str, Any], texts: dict[str, str]) -> None:
        """Per-file and total physical line counts in the manifest are the files' own."""
        assert manifest["lines"] == {name: len(text.splitlines()) for name, text in texts.items()}
        assert manifest["total_lines"] == sum(manifest["lines"].values())

    def test_total_lines_in_range(self, manifest: dict[str, Any]) -> None:
        """The sample is sized for a demo: 45k to 60k lines."""
        assert 45_000 <= manifest["total_lines"] <= 60_000

    def test_root_causes_are_described(self, manifest: dict[str, Any]) -> None:
        """At least three distinct root causes, each with a service, match string and exception type."""
        causes = manifest["root_causes"]
        assert len(causes) >= 3
        assert len({c["name"] for c in causes}) == len(causes)
        assert len({c["match"] for c in causes}) == len(causes)
        for cause in causes:
            assert cause["service"] in gen.SERVICES
            assert cause["exception_type"] in cause["exception_chain"]
        assert {"db-pool-exhaustion", "checkout-npe", "orders-keyerror"} <= {c["name"] for c in causes}

    def test_repeated_causes_happen_many_times(self, manifest: dict[str, Any]) -> None:
        """Every cause but the single panic recurs dozens of times, so it forms a cluster worth finding."""
        for cause in manifest["root_causes"]:
            assert cause["events"] >= (1 if cause["name"] == "inventory-panic" else 50), cause["name"]

    def test_event_counts_match_the_files(self, manifest: dict[str, Any], texts: dict[str, str]) -> None:
        """``events`` per file counts the timestamped head lines plus the one untimestamped panic."""
        for name, text in texts.items():
            heads = sum(1 for _line, _ts, head in timed_lines(text) if head)
            panics = sum(1 for line in text.splitlines() if line.startswith("panic: "))
            assert manifest["events"][name] == heads + panics, name


class TestPlantedCauses:
    @pytest.mark.parametrize("kind", ["root_causes", "symptoms"])
    def test_match_only_in_own_service_inside_window(self, kind: str, manifest: dict[str, Any],
                                                     texts: dict[str, str]) -> None:
        """Each match string occurs only in its service's file, only between the incident start and end."""
        start, end = window(manifest)
        for entry in manifest[kind]:
            own = gen.file_name(entry["service"])
            for name, text in texts.items():
                hits = [ts for line, ts, _head in timed_lines(text) if entry["match"] in line]
                if name != own:
                    assert hits == [], (entry["name"], name)
                    continue
                assert len(hits) >= entry["events"], entry["name"]
                assert all(start <= ts <= end for ts in hits), entry["name"]

    def test_each_cause_has_one_shape_of_trace(self, texts: dict[str, str], manifest: dict[str, Any]) -> None:
        """All occurrences of a traced cause share the same frames, so a fingerprint groups them once."""
        for cause in manifest["root_causes"]:
            shapes = {
                tuple(line for line in event if line.startswith(("\tat ", "  File ", "\t/")))
                for event in split_events(texts[gen.file_name(cause["service"])])
                if any(cause["match"] in line for line in event)
            }
            assert len(shapes) == 1, cause["name"]
            assert len(next(iter(shapes))) >= 3, cause["name"]

    def test_errors_only_during_incident(self, manifest: dict[str, Any], texts: dict[str, str]) -> None:
        """Healthy and recovered periods log no ERROR lines; the incident logs many."""
        start, end = window(manifest)
        inside = 0
        for name, text in texts.items():
            for line, ts, head in timed_lines(text):
                if head and _ERROR.search(line):
                    assert start <= ts <= end, (name, line)
                    inside += 1
        assert inside > 500

    def test_warnings_are_rare_when_healthy(self, manifest: dict[str, Any], texts: dict[str, str]) -> None:
        """Before the deploy, WARN lines are a small share (under 3%) of all events."""
        deploy = manifest["deploy"]["at"][:23]
        warn = re.compile(r'"level":"warn"|\[warn\]| WARN 1 ---| WARNING |level=warn ')
        total = warned = 0
        for text in texts.values():
            for line, ts, head in timed_lines(text):
                if head and ts < deploy:
                    total += 1
                    warned += bool(warn.search(line))
        assert 0 < warned < 0.03 * total


class TestTimeline:
    def test_timestamps_never_go_back(self, texts: dict[str, str]) -> None:
        """Within each file, head-line timestamps are non-decreasing."""
        for name, text in texts.items():
            previous = ""
            for line, ts, head in timed_lines(text):
                if head:
                    assert ts >= previous, (name, line)
                    previous = ts

    def test_files_overlap_the_whole_half_hour(self, manifest: dict[str, Any], texts: dict[str, str]) -> None:
        """Every service logs in the first and the last minute of the sample."""
        for name, text in texts.items():
            times = [ts for _line, ts, head in timed_lines(text) if head]
            assert times[0] < "2026-03-14T09:01:00", name
            assert times[-1] >= "2026-03-14T09:29:00", name
            assert manifest["log_start"][:23] <= times[0] and times[-1] < manifest["log_end"][:23]

    def test_gateway_lines_all_carry_a_time(self, texts: dict[str, str]) -> None:
        """The gateway has no traces: every line is a timestamped JSON or nginx line."""
        assert all(head for _line, _ts, head in timed_lines(texts[gen.file_name(gen.GATEWAY)]))

    def test_deploy_precedes_incident_and_rollback_ends_it(self, manifest: dict[str, Any],
                                                           texts: dict[str, str]) -> None:
        """The deploy and migration lines come before the incident, the rollback line near its end."""
        deploy = manifest["deploy"]
        start, end = window(manifest)
        orders = list(timed_lines(texts[gen.file_name(gen.ORDERS)]))

        def first(match: str) -> str:
            return next(ts for line, ts, _head in orders if match in line)

        assert deploy["at"][:23] <= first(deploy["match"]) < start
        assert first(deploy["migration"]["match"]) < start
        assert deploy["rollback"]["at"][:23] <= first(deploy["rollback"]["match"]) <= end
