"""The embedded store: SQLite in WAL mode, in the state directory.

Writes are batched: the pipeline records into memory on the hot path (``touch``, ``count``) and
``flush()`` writes one transaction at each checkpoint. Values are plain JSON (orjson), never pickles.
``synchronous=NORMAL`` in WAL mode survives a process crash (what checkpoints promise); a power
loss may lose the last transaction, which the sources then replay.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from triage.detect.silences import Silence
from triage.errors import StoreError
from triage.model import Cluster, ExceptionInfo, Finding, Frame, Level, Sample, Summary

DB_NAME = "triage.db"

# Each entry moves the schema one version up; never edit a released entry, append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE clusters (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        template TEXT NOT NULL,
        level INTEGER NOT NULL,
        count INTEGER NOT NULL,
        warn_count INTEGER NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        services TEXT NOT NULL,
        samples TEXT NOT NULL,
        exception TEXT
    );
    CREATE TABLE cluster_minutes (
        cluster_id TEXT NOT NULL,
        minute INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (cluster_id, minute)
    ) WITHOUT ROWID;
    CREATE TABLE findings (
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        kind TEXT NOT NULL,
        created_at REAL NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (id, version)
    );
    CREATE TABLE checkpoints (
        source TEXT NOT NULL,
        stream TEXT NOT NULL,
        state TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (source, stream)
    );
    """,
    """
    CREATE TABLE summaries (
        cluster_id TEXT NOT NULL,
        template_hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (cluster_id, template_hash)
    );
    """,
    """
    CREATE TABLE sink_state (
        sink TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (sink, key)
    );
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sink TEXT NOT NULL,
        key TEXT NOT NULL,
        payload TEXT NOT NULL,
        created REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_by_sink ON outbox (sink, seq);
    """,
    """
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        cluster_id TEXT NOT NULL,
        pattern TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        comment TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE variants (
        cluster_id TEXT PRIMARY KEY,
        incident_id TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
)


class Store:
    """Clusters, per-minute counts, findings and source checkpoints in one SQLite file."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None) -> None:
        self._conn = conn
        self.path = path
        self._dirty: dict[str, Cluster] = {}
        self._minutes: defaultdict[tuple[str, int], int] = defaultdict(int)  # missing keys in C
        self._findings: list[Finding] = []
        self._merges: list[tuple[str, str]] = []  # (absorbed id, surviving id)

    @classmethod
    def open(cls, state_dir: Path | None) -> Store:
        """Open (creating and migrating) the store in ``state_dir``; ``None`` keeps it in memory."""
        try:
            if state_dir is None:
                conn = sqlite3.connect(":memory:", isolation_level=None)
                path = None
            else:
                state_dir.mkdir(parents=True, exist_ok=True)
                path = state_dir / DB_NAME
                conn = sqlite3.connect(path, isolation_level=None, timeout=10)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            _migrate(conn)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open the store in {state_dir}: {e}") from e
        return cls(conn, path)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conn.close()

    # --- hot path: memory only ------------------------------------------------------------------

    def touch(self, cluster: Cluster) -> None:
        """Mark ``cluster`` as changed; it is written at the next flush."""
        self._dirty[cluster.id] = cluster

    def count(self, cluster_id: str, timestamp: float, n: int = 1) -> None:
        """Add ``n`` events to the cluster's per-minute timeline."""
        self._minutes[(cluster_id, int(timestamp // 60))] += n

    def count_minutes(self, cluster_id: str, minutes: Mapping[int, int]) -> None:
        """Add events to the cluster's per-minute timeline: ``{minute (epoch // 60): events}``."""
        counts = self._minutes
        for minute, n in minutes.items():
            counts[(cluster_id, minute)] += n

    def merged(self, absorbed_id: str, survivor: Cluster) -> None:
        """The clusterer folded ``absorbed_id`` into ``survivor``: its row and timeline move over."""
        self._dirty.pop(absorbed_id, None)
        for (cid, minute), n in list(self._minutes.items()):
            if cid == absorbed_id:
                del self._minutes[(cid, minute)]
                self._minutes[(survivor.id, minute)] += n
        self._merges.append((absorbed_id, survivor.id))
        self.touch(survivor)

    def add_finding(self, finding: Finding) -> None:
        self._findings.append(finding)

    # --- checkpoint ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything recorded since the last flush in one transaction."""
        if not (self._dirty or self._minutes or self._findings or self._merges):
            return
        try:
            with self._tx() as c:
                for absorbed, survivor in self._merges:
                    c.execute("INSERT INTO cluster_minutes SELECT ?, minute, n FROM cluster_minutes "
                              "WHERE cluster_id = ? AND true ON CONFLICT(cluster_id, minute) "
                              "DO UPDATE SET n = n + excluded.n", (survivor, absorbed))
                    c.execute("DELETE FROM cluster_minutes WHERE cluster_id = ?", (absorbed,))
                    c.execute("DELETE FROM clusters WHERE id = ?", (absorbed,))
                c.executemany(
                    "INSERT INTO clusters VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                    "kind=excluded.kind, template=excluded.template, level=excluded.level, "
                    "count=excluded.count, warn_count=excluded.warn_count, first_seen=excluded.first_seen, "
                    "last_seen=excluded.last_seen, services=excluded.services, samples=excluded.samples, "
                    "exception=excluded.exception",
                    [_cluster_row(cl) for cl in self._dirty.values()],
                )
                c.executemany(
                    "INSERT INTO cluster_minutes VALUES (?,?,?) ON CONFLICT(cluster_id, minute) "
                    "DO UPDATE SET n = n + excluded.n",
                    [(cid, minute, n) for (cid, minute), n in self._minutes.items()],
                )
                c.executemany(
                    "INSERT OR REPLACE INTO findings VALUES (?,?,?,?,?)",
                    [(f.id, f.version, f.kind, f.created_at, f.model_dump_json()) for f in self._findings],
                )
        except sqlite3.Error as e:
            raise StoreError(f"store flush failed: {e}") from e
        self._dirty.clear()
        self._minutes.clear()
        self._findings.clear()
        self._merges.clear()

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn)

    # --- checkpoints (connectors.sources.base.CheckpointStore) ---------------------------------

    def load_checkpoints(self, source: str) -> dict[str, str]:
        rows = self._conn.execute("SELECT stream, state FROM checkpoints WHERE source = ?", (source,))
        return {stream: state for stream, state in rows}

    def save_checkpoints(self, source: str, states: Mapping[str, str]) -> None:
        now = time.time()
        try:
            with self._tx() as c:
                c.executemany(
                    "INSERT INTO checkpoints VALUES (?,?,?,?) ON CONFLICT(source, stream) "
                    "DO UPDATE SET state=excluded.state, updated=excluded.updated",
                    [(source, stream, state, now) for stream, state in states.items()],
                )
        except sqlite3.Error as e:
            raise StoreError(f"cannot save checkpoints of {source}: {e}") from e

    def delete_checkpoints(self, source: str, streams: list[str]) -> None:
        with self._tx() as c:
            c.executemany("DELETE FROM checkpoints WHERE source = ? AND stream = ?",
                          [(source, s) for s in streams])

    # --- summary cache (triage.summarize.summarizer.SummaryCache) ----------------------------------

    def get_summary(self, cluster_id: str, template_hash: str) -> Summary | None:
        row = self._conn.execute("SELECT body FROM summaries WHERE cluster_id = ? AND template_hash = ?",
                                 (cluster_id, template_hash)).fetchone()
        return Summary.model_validate_json(row[0]) if row else None

    def put_summary(self, cluster_id: str, template_hash: str, summary: Summary) -> None:
        try:
            with self._tx() as c:
                c.execute("INSERT OR REPLACE INTO summaries VALUES (?,?,?,?)",
                          (cluster_id, template_hash, time.time(), summary.model_dump_json()))
        except sqlite3.Error as e:
            raise StoreError(f"cannot cache a summary: {e}") from e

    # --- sink state and outbox (durable delivery for sinks such as Slack) --------------------------

    def get_sink_state(self, sink: str, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM sink_state WHERE sink = ? AND key = ?", (sink, key)).fetchone()
        return row[0] if row else None

    def put_sink_state(self, sink: str, key: str, value: str) -> None:
        self._write("INSERT INTO sink_state VALUES (?,?,?,?) ON CONFLICT(sink, key) DO UPDATE SET "
                    "value=excluded.value, updated=excluded.updated", (sink, key, value, time.time()))

    def outbox_add(self, sink: str, key: str, payload: str) -> int:
        """Queue a delivery durably; returns its sequence number (deliveries keep this order)."""
        try:
            with self._tx() as c:
                cur = c.execute("INSERT INTO outbox (sink, key, payload, created) VALUES (?,?,?,?)",
                                (sink, key, payload, time.time()))
                return int(cur.lastrowid or 0)
        except sqlite3.Error as e:
            raise StoreError(f"cannot queue a delivery for {sink}: {e}") from e

    def outbox_pending(self, sink: str, limit: int = 100) -> list[tuple[int, str, str, int, float]]:
        """(seq, key, payload, attempts, next_at) of undelivered items, oldest first."""
        rows = self._conn.execute(
            "SELECT seq, key, payload, attempts, next_at FROM outbox WHERE sink = ? ORDER BY seq LIMIT ?",
            (sink, limit))
        return [(seq, key, payload, attempts, next_at) for seq, key, payload, attempts, next_at in rows]

    def outbox_count(self, sink: str) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM outbox WHERE sink = ?", (sink,)).fetchone()[0])

    def outbox_done(self, seq: int) -> None:
        self._write("DELETE FROM outbox WHERE seq = ?", (seq,))

    def outbox_retry(self, seq: int, next_at: float) -> None:
        self._write("UPDATE outbox SET attempts = attempts + 1, next_at = ? WHERE seq = ?", (next_at, seq))

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            with self._tx() as c:
                c.execute(sql, params)
        except sqlite3.Error as e:
            raise StoreError(f"store write failed: {e}") from e

    # --- silences ----------------------------------------------------------------------------------

    def add_silence(self, *, cluster_id: str = "", pattern: str = "", expires_at: float, comment: str = "") -> int:
        if not (cluster_id or pattern):
            raise StoreError("a silence needs a cluster id or a template pattern")
        try:
            with self._tx() as c:
                cur = c.execute("INSERT INTO silences (cluster_id, pattern, created_at, expires_at, comment) "
                                "VALUES (?,?,?,?,?)", (cluster_id, pattern, time.time(), expires_at, comment))
                return int(cur.lastrowid or 0)
        except sqlite3.Error as e:
            raise StoreError(f"cannot add a silence: {e}") from e

    def silences(self) -> list[Silence]:
        rows = self._conn.execute("SELECT id, cluster_id, pattern, expires_at, comment FROM silences ORDER BY id")
        return [Silence(i, c, p, e, m) for i, c, p, e, m in rows]

    def active_silences(self, now: float) -> list[Silence]:
        rows = self._conn.execute("SELECT id, cluster_id, pattern, expires_at, comment FROM silences "
                                  "WHERE expires_at > ? ORDER BY id", (now,))
        return [Silence(i, c, p, e, m) for i, c, p, e, m in rows]

    def expire_silence(self, silence_id: int, now: float) -> bool:
        """End a silence now; False when there is no such active silence."""
        try:
            with self._tx() as c:
                cur = c.execute("UPDATE silences SET expires_at = ? WHERE id = ? AND expires_at > ?",
                                (now, silence_id, now))
                return cur.rowcount > 0
        except sqlite3.Error as e:
            raise StoreError(f"cannot expire silence {silence_id}: {e}") from e

    # --- reads -----------------------------------------------------------------------------------

    def load_clusters(self, limit: int | None = None) -> list[Cluster]:
        """Clusters, most recently seen first (``limit`` bounds how many are loaded)."""
        sql = "SELECT * FROM clusters ORDER BY last_seen DESC"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        return [_cluster_from_row(r) for r in self._conn.execute(sql, params)]

    def get_cluster(self, cluster_id: str) -> Cluster | None:
        pending = self._dirty.get(cluster_id)
        if pending is not None:
            return pending
        row = self._conn.execute("SELECT * FROM clusters WHERE id = ?", (cluster_id,)).fetchone()
        return _cluster_from_row(row) if row else None

    def finding_versions(self) -> dict[str, int]:
        """The latest version of every finding (detection resumes from it after a restart)."""
        rows = self._conn.execute("SELECT id, MAX(version) FROM findings GROUP BY id")
        versions = {fid: v for fid, v in rows}
        for f in self._findings:
            versions[f.id] = max(versions.get(f.id, 0), f.version)
        return versions

    def add_variant(self, cluster_id: str, incident_id: str) -> None:
        """``cluster_id`` is a variant of the incident ``incident_id`` (kept across restarts)."""
        self._write("INSERT OR REPLACE INTO variants VALUES (?, ?)", (cluster_id, incident_id))

    def variants(self) -> dict[str, str]:
        return {c: i for c, i in self._conn.execute("SELECT cluster_id, incident_id FROM variants")}

    def firing_incidents(self, limit: int) -> list[Cluster]:
        """Clusters of incidents whose latest lifecycle finding is not "resolved", most recent first."""
        rows = self._conn.execute(
            "SELECT id FROM (SELECT id, kind, ROW_NUMBER() OVER (PARTITION BY id ORDER BY version DESC) AS n "
            "FROM findings WHERE kind != 'summary') WHERE n = 1 AND kind != 'resolved'")
        clusters = [c for (cid,) in rows if (c := self.get_cluster(cid)) is not None]
        clusters.sort(key=lambda c: c.last_seen, reverse=True)
        return clusters[:limit]

    def resolved_incidents(self) -> set[str]:
        """Ids whose latest lifecycle finding (model answers aside) is "resolved": a restart reopens them."""
        rows = self._conn.execute(
            "SELECT id, kind FROM (SELECT id, kind, ROW_NUMBER() OVER (PARTITION BY id ORDER BY version DESC) AS n "
            "FROM findings WHERE kind != 'summary') WHERE n = 1")
        latest = dict(rows)
        for f in sorted(self._findings, key=lambda f: f.version):
            if f.kind != "summary":
                latest[f.id] = f.kind
        return {fid for fid, kind in latest.items() if kind == "resolved"}

    def findings(self) -> list[Finding]:
        rows = self._conn.execute("SELECT body FROM findings ORDER BY created_at, id, version")
        return [Finding.model_validate_json(body) for (body,) in rows]

    def timeline(self, cluster_id: str) -> list[tuple[int, int]]:
        """(minute since epoch, events) of one cluster, in time order."""
        rows = self._conn.execute(
            "SELECT minute, n FROM cluster_minutes WHERE cluster_id = ? ORDER BY minute", (cluster_id,))
        return [(m, n) for m, n in rows]


class _Transaction:
    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(f"the store has schema version {version}, newer than this triage "
                         f"({len(MIGRATIONS)}): upgrade triage or use another --state-dir")
    for i, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {i}; COMMIT;")


# --- JSON mapping (plain data, never pickles) -------------------------------------------------------


def _exc_to_obj(exc: ExceptionInfo | None) -> dict[str, Any] | None:
    if exc is None:
        return None
    return {
        "type": exc.type,
        "message": exc.message,
        "language": exc.language,
        "frames": [[f.function, f.module, f.lineno, f.in_app] for f in exc.frames],
        "cause": _exc_to_obj(exc.cause),
    }


def _exc_from_obj(obj: dict[str, Any] | None) -> ExceptionInfo | None:
    if obj is None:
        return None
    return ExceptionInfo(
        type=obj["type"],
        message=obj["message"],
        language=obj["language"],
        frames=[Frame(function=f, module=m, lineno=ln, in_app=ia) for f, m, ln, ia in obj["frames"]],
        cause=_exc_from_obj(obj["cause"]),
    )


def _cluster_row(cl: Cluster) -> tuple[Any, ...]:
    exc = _exc_to_obj(cl.exception)
    return (
        cl.id, cl.kind, cl.template, int(cl.level), cl.count, cl.warn_count, cl.first_seen, cl.last_seen,
        orjson.dumps(cl.services).decode(),
        orjson.dumps([[s.timestamp, s.service, s.message, list(s.params), s.attributes] for s in cl.samples],
                     default=str).decode(),
        orjson.dumps(exc).decode() if exc else None,
    )


def _cluster_from_row(row: tuple[Any, ...]) -> Cluster:
    cid, kind, template, level, count, warn_count, first, last, services, samples, exc = row
    return Cluster(
        id=cid, template=template, kind=kind, level=Level(level), count=count, first_seen=first,
        last_seen=last, services=orjson.loads(services),
        samples=[Sample(row[0], row[1], row[2], tuple(row[3]), row[4] if len(row) > 4 else None)
                 for row in orjson.loads(samples)],
        exception=_exc_from_obj(orjson.loads(exc)) if exc else None,
        warn_count=warn_count,
    )

