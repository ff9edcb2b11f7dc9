"""Benchmark of a worker process's memory over many jobs: does its resident size level off?

    python benches/worker_rss.py [--jobs N] [--queue embedded|beanstalkd]

Enqueues N no-op jobs (default 100,000) into a private embedded file (or a private
beanstalkd with that file as the store), starts `python -m geyser.worker -c 1`, and reads
the worker process's VmRSS from /proc/<pid>/status as the jobs are done; prints RSS after
each tenth of them, and the growth from the first tenth to the end (the baseline: the
same process once warm). Touches only a temp folder, a private beanstalkd on loopback,
and the processes it starts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Beanstalkd, geyser_enqueue, print_table, use_backends

from geyser.config import client


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def worker_child(supervisor: int) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == supervisor:
                    return int(entry)
            except OSError:
                continue
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--queue", choices=["embedded", "beanstalkd"], default="embedded")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="geyser-rss-"))
    db = f"sqlite://{folder / 'geyser.db'}"
    server = Beanstalkd() if args.queue == "beanstalkd" else None
    env = use_backends(f"beanstalkd://{server.addr}" if server else db, db)
    try:
        rate = geyser_enqueue(args.jobs)
        print(f"enqueued {args.jobs:,} no-op jobs at {rate:,.0f}/s")
        cmd = [sys.executable, "-m", "geyser.worker", "-m", "bench_jobs", "-c", "1", "--log-level", "WARNING"]
        sup = subprocess.Popen(cmd, env=env)
        try:
            rows = []
            marks = [args.jobs * i // 10 for i in range(1, 11)]
            start = time.monotonic()
            child = None
            while marks:
                time.sleep(0.5)
                child = child or worker_child(sup.pid)
                b = client().backlog(["noop"])
                done = args.jobs - int(b["waiting"] + b["reserved"])
                if child is not None and done >= marks[0]:
                    rows.append((f"after {done:,} jobs", rss_mb(child), time.monotonic() - start))
                    while marks and done >= marks[0]:
                        marks.pop(0)
        finally:
            sup.terminate()
            sup.wait(60)
        print_table(("worker process", "RSS MB", "seconds"), rows)
        first, last = rows[0][1], rows[-1][1]
        print(f"growth from the first tenth to the end: {last - first:+.1f} MB ({last / first:.2f}x)")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
