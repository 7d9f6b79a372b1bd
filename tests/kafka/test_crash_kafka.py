"""A worker killed with SIGKILL mid-stream and started again loses nothing; duplicates stay in one window."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.kafka.conftest import committed_offsets, create_topic, produce, unique
from tests.kafka.test_pipeline_kafka import log_stream
from tests.support.broker import Broker
from triage.store import Store

pytestmark = pytest.mark.anyio

N = 4000
CHUNK = 100
WINDOW = 200  # checkpoint_records + max_poll_records: what one checkpoint covers at most


def _env(group: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TRIAGE_")}
    env.update({
        "TRIAGE_KAFKA__GROUP_ID": group, "TRIAGE_KAFKA__SESSION_TIMEOUT_MS": "2000",
        "TRIAGE_KAFKA__HEARTBEAT_INTERVAL_MS": "300", "TRIAGE_KAFKA__FETCH_MAX_WAIT_MS": "50",
        "TRIAGE_KAFKA__POLL_TIMEOUT_MS": "100", "TRIAGE_KAFKA__MAX_POLL_RECORDS": "100",
        "TRIAGE_PIPELINE__CHECKPOINT_RECORDS": "100", "TRIAGE_PIPELINE__CHECKPOINT_INTERVAL_S": "0.2",
    })
    return env


def _stored_events(state_dir: Path) -> int:
    store = Store.open(state_dir)
    try:
        return sum(c.count for c in store.load_clusters())
    finally:
        store.close()


class TestCrashRecovery:
    async def test_sigkill_mid_stream_then_restart_accounts_for_every_record(
            self, broker: Broker, tmp_path: Path) -> None:
        """After SIGKILL the restarted worker reads exactly what was not committed; duplicates < one window."""
        logs, group = unique("logs"), unique("g")
        await create_topic(broker, logs, 3)
        state, out = tmp_path / "state", tmp_path / "findings.jsonl"
        argv = [sys.executable, "-m", "triage.cli", "run", "--source", broker.url(logs), "--quiet",
                "--state-dir", str(state), "--sink", f"jsonl:{out}"]
        stream = log_stream(N)
        worker = subprocess.Popen(argv,  # noqa: ASYNC220 - a handle to SIGKILL, not awaited
                                  env=_env(group), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            produced = 0
            with anyio.fail_after(30):
                # Produce in chunks while the worker reads; kill it once it has committed a good part.
                committed = 0
                while committed < N // 4:
                    if produced == 0 or (committed and produced < N):  # more once the worker is up
                        await produce(broker, logs, stream[produced:produced + CHUNK])
                        produced += CHUNK
                    else:
                        await anyio.sleep(0.05)  # waiting on another process: nothing to await
                    committed = sum((await committed_offsets(broker, group, logs)).values())
                    assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
                worker.send_signal(signal.SIGKILL)
                assert worker.wait() == -signal.SIGKILL
                assert produced < N, "the worker must be killed mid-stream"
                await produce(broker, logs, stream[produced:])
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            if worker.stderr is not None:
                worker.stderr.close()
        committed_at_kill = sum((await committed_offsets(broker, group, logs)).values())
        stored_at_kill = _stored_events(state)
        assert N // 4 <= committed_at_kill < N
        assert committed_at_kill <= stored_at_kill <= committed_at_kill + WINDOW  # flushed before committed

        with anyio.fail_after(30):
            again = await anyio.run_process([*argv[:4], "--once", *argv[4:]], env=_env(group), check=False)
        err = again.stderr.decode()
        assert again.returncode == 0, err
        read = int(re.search(r"read=(\d+) ", err).group(1))  # type: ignore[union-attr]
        assert "balanced" in err
        assert read == N - committed_at_kill  # none lost: the restart starts at the commit
        assert sum((await committed_offsets(broker, group, logs)).values()) == N
        duplicates = _stored_events(state) - N
        assert duplicates == stored_at_kill - committed_at_kill  # only the uncommitted window, counted
        assert 0 <= duplicates <= WINDOW
