"""Drain rate of no-op jobs with `python -m geyser.worker -c 1` and `-c 2` on a fresh
beanstalkd (SQLite store), and the heartbeat's cost per running job. Not a test.

    PYTHONPATH=python python3 benches/drain_processes.py [--jobs 2000]

Prints a table and the 2-process/1-process ratio. Each run enqueues --jobs NoopJobs,
then times a --burst worker from its start until every document is `succeeded`
(process start-up included, so use enough jobs for it not to dominate).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_beanstalkd() -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
    port = free_port()
    proc = subprocess.Popen([exe, "-l", "127.0.0.1", "-p", str(port)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"beanstalkd://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("beanstalkd did not start")


def drain(processes: int, jobs: int) -> float:
    """Jobs per second for one worker command with `processes` processes."""
    server, queue_url = start_beanstalkd()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GEYSER_QUEUE_URL=queue_url, GEYSER_STORE_URL=f"sqlite://{tmp}/geyser.db")
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
        subprocess.run([sys.executable, "-c", ENQUEUE, str(jobs)], env=env, check=True)
        cmd = [sys.executable, "-m", "geyser.worker", "--burst", "-c", str(processes), "-m", "engine_jobs",
               "--queues", "engine_noop", "--sweep-interval", "0", "--log-level", "WARNING"]
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True)
        elapsed = time.perf_counter() - start
        left = subprocess.run([sys.executable, "-c", COUNT], env=env, check=True, capture_output=True, text=True)
        if int(left.stdout) != jobs:
            raise SystemExit(f"only {left.stdout.strip()} of {jobs} jobs succeeded")
    server.kill()
    server.wait()
    return jobs / elapsed


ENQUEUE = """
import sys, geyser, engine_jobs
for _ in range(int(sys.argv[1])):
    geyser.make_base_job({}, "engine_noop").enqueue()
"""

COUNT = """
from geyser.config import client
n, after = 0, None
while page := client().list(status="succeeded", after=after, limit=1000):
    n += len(page)
    import json; after = json.loads(page[-1])["uuid"]
print(n)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--ttr", type=float, default=30.0, help="TTR for the heartbeat-cost line")
    args = p.parse_args()
    one = drain(1, args.jobs)
    two = drain(2, args.jobs)
    print(f"\nno-op jobs drained from beanstalkd (SQLite store), {args.jobs} jobs, {os.cpu_count()} CPUs")
    print(f"{'processes':>9} | {'jobs/s':>8}")
    print(f"{1:>9} | {one:8.1f}")
    print(f"{2:>9} | {two:8.1f}")
    print(f"ratio -c 2 / -c 1: {two / one:.2f}")
    touches = 60 / max(args.ttr / 3, 0.2)
    print(f"\nheartbeat per running job per minute at TTR {args.ttr:g} s: "
          f"{touches:.0f} queue touches (every TTR/3) + 60 store reads (document check every 1 s)")


if __name__ == "__main__":
    main()
