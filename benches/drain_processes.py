"""Drain rate of no-op jobs with `python -m geyser.worker -c 1` and `-c 2`, on beanstalkd
(SQLite store) and on the embedded default, and the heartbeat's cost per running job.

    python benches/drain_processes.py [--jobs N]

Each run starts from an empty store and queue, enqueues N jobs, runs a --burst worker
and rates it from the first job's start to the last job's finish, so process start-up
is not counted. Read the ratio column: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from common import Beanstalkd, geyser_drain, geyser_enqueue, print_table, use_backends


def drain(queue: str, store: str, processes: int, jobs: int) -> float:
    env = use_backends(queue, store)
    geyser_enqueue(jobs)
    return geyser_drain(env, jobs, "-c", str(processes), "--sweep-interval", "0")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--ttr", type=float, default=30.0, help="TTR for the heartbeat-cost line")
    args = p.parse_args()
    rows = []
    for name in ("beanstalkd", "embedded"):
        rates = []
        for processes in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                store = f"sqlite://{tmp}/geyser.db"
                if name == "beanstalkd":
                    server = Beanstalkd()
                    try:
                        rates.append(drain(f"beanstalkd://{server.addr}", store, processes, args.jobs))
                    finally:
                        server.stop()
                else:
                    rates.append(drain(store, store, processes, args.jobs))
        rows.append((f"{name} (jobs/s)", rates[0], rates[1], rates[1] / rates[0]))
    print(f"no-op jobs, {args.jobs} per run, {os.cpu_count()} CPUs")
    print_table(("drain", "-c 1", "-c 2", "ratio"), rows)
    touches = 60 / max(args.ttr / 3, 0.2)
    print(f"\nheartbeat per running job per minute at TTR {args.ttr:g} s: "
          f"{touches:.0f} queue touches (every TTR/3) + 60 store reads (document check every 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
