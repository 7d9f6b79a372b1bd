"""The SQLite store: clusters, timeline, findings and checkpoints survive a reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from triage.errors import StoreError
from triage.model import Cluster, ExceptionInfo, Finding, Frame, Level, Sample
from triage.store import Store
from triage.store.sqlite import DB_NAME, MIGRATIONS


def _cluster(cid: str = "c1", count: int = 3) -> Cluster:
    return Cluster(
        id=cid, template="disk <*> full", kind="trace", level=Level.ERROR, count=count,
        first_seen=100.0, last_seen=160.0, services={"api": count},
        samples=[Sample(100.0, "api", "disk sda full", ("sda",))],
        exception=ExceptionInfo("IOError", "disk full", [Frame("write", "io.py", 3, True)], "python",
                                cause=ExceptionInfo("OSError", "28", [], "python")),
        warn_count=count,
    )


class TestStore:
    def test_wal_and_schema_version(self, tmp_path: Path) -> None:
        """The file is in WAL mode and migrated to the latest schema version."""
        Store.open(tmp_path).close()
        conn = sqlite3.connect(tmp_path / DB_NAME)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)

    def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A store written by a newer triage is refused with a clear error, not corrupted."""
        Store.open(tmp_path).close()
        conn = sqlite3.connect(tmp_path / DB_NAME)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        conn.close()
        with pytest.raises(StoreError, match="newer"):
            Store.open(tmp_path)

    def test_cluster_round_trip(self, tmp_path: Path) -> None:
        """A flushed cluster reads back equal, exception chain and samples included."""
        store = Store.open(tmp_path)
        store.touch(_cluster())
        store.close()
        again = Store.open(tmp_path)
        [loaded] = again.load_clusters()
        assert loaded == _cluster()
        assert again.get_cluster("c1") == _cluster()
        assert again.get_cluster("nope") is None

    def test_nothing_written_before_flush(self, tmp_path: Path) -> None:
        """Hot-path calls stay in memory until flush (one transaction per checkpoint)."""
        store = Store.open(tmp_path)
        store.touch(_cluster())
        other = Store.open(tmp_path)
        assert other.load_clusters() == []
        store.flush()
        assert len(other.load_clusters()) == 1

    def test_timeline_adds_up_across_flushes(self, tmp_path: Path) -> None:
        """Per-minute counts accumulate across flushes."""
        store = Store.open(tmp_path)
        store.count("c1", 60.0)
        store.count("c1", 119.9)
        store.count("c1", 120.0, n=5)
        store.flush()
        store.count("c1", 61.0)
        store.flush()
        assert store.timeline("c1") == [(1, 3), (2, 5)]

    def test_finding_versions(self, tmp_path: Path) -> None:
        """The latest version of each finding is known, pending ones included."""
        store = Store.open(tmp_path)
        base = Finding.of(_cluster(), version=1, kind="new", created_at=1.0)
        store.add_finding(base)
        store.flush()
        store.add_finding(base.model_copy(update={"version": 2, "kind": "spike"}))
        assert store.finding_versions() == {"c1": 2}
        store.flush()
        assert [f.version for f in store.findings()] == [1, 2]

    def test_checkpoints(self, tmp_path: Path) -> None:
        """Checkpoints are kept per source and stream, and replaced on save."""
        store = Store.open(tmp_path)
        store.save_checkpoints("a", {"1:2": '{"offset": 5}'})
        store.save_checkpoints("a", {"1:2": '{"offset": 9}', "1:3": "{}"})
        store.save_checkpoints("b", {"1:2": "{}"})
        store.close()
        again = Store.open(tmp_path)
        assert again.load_checkpoints("a") == {"1:2": '{"offset": 9}', "1:3": "{}"}
        again.delete_checkpoints("a", ["1:3"])
        assert again.load_checkpoints("a") == {"1:2": '{"offset": 9}'}


class TestMerges:
    def test_absorbed_cluster_moves_into_the_survivor(self, tmp_path: Path) -> None:
        """When the clusterer merges two clusters, the store keeps one row and one timeline."""
        store = Store.open(tmp_path)
        a, b = _cluster("ca", 3), _cluster("cb", 2)
        store.touch(a)
        store.touch(b)
        store.count("ca", 60.0)
        store.count("cb", 60.0, n=2)
        store.flush()
        store.count("cb", 120.0)
        a.count = 6
        store.merged("cb", a)
        store.flush()
        assert [c.id for c in store.load_clusters()] == ["ca"]
        assert store.load_clusters()[0].count == 6
        assert store.timeline("ca") == [(1, 3), (2, 1)]
        assert store.timeline("cb") == []
