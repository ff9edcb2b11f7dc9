"""Geyser's demo: enqueue a few jobs, start a worker process, watch them finish.

    python examples/demo.py [--jobs N]

Runs on the embedded default (a SQLite file under ~/.local/share/geyser/) unless
GEYSER_QUEUE_URL / GEYSER_STORE_URL say otherwise. Exits 0 when every job succeeded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import geyser  # noqa: E402
from my_job import make_my_job  # noqa: E402


def bar(fraction: float, width: int = 20) -> str:
    filled = int(round(fraction * width))
    return "#" * filled + "." * (width - filled)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()

    uuids = [make_my_job({"fieldOne": f"file-{i}.csv"}).enqueue() for i in range(args.jobs)]
    print(f"enqueued {len(uuids)} jobs on queue 'my_job'; starting a worker")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    worker = subprocess.Popen(
        [sys.executable, "-m", "geyser.worker", "-m", "my_job", "--burst", "--progress-interval", "0.2",
         "--log-level", "WARNING"],
        env=env,
    )
    deadline = time.time() + 120
    jobs = []
    while time.time() < deadline:
        jobs = [geyser.get_base_job(u) for u in uuids]
        lines = [f"  {j.uuid[:8]} {j.status:<9} [{bar(j.completeness)}] {j.completeness:4.0%}" for j in jobs if j]
        print("\n".join(lines), flush=True)
        if all(j and j.status in ("succeeded", "failed", "cancelled") for j in jobs):
            break
        time.sleep(0.5)
        print(f"\x1b[{len(lines)}A", end="")
    worker.wait(timeout=30)
    done = sum(1 for j in jobs if j and j.status == "succeeded")
    print(f"{done} of {len(uuids)} jobs succeeded")
    for j in jobs[:1]:
        if j:
            print(f"last events of {j.uuid[:8]}: {[e['msg'] for e in j.events[-2:]]}; result: {j.resultString!r}")
    return 0 if done == len(uuids) else 1


if __name__ == "__main__":
    sys.exit(main())
