"""Drain rate of no-op jobs with `python -m geyser.worker -c 1` and `-c 2`, on beanstalkd
(SQLite store) and on the embedded default, and the heartbeat's cost per running job.

    python benches/drain_processes.py [--jobs N] [--rounds R]

Each run starts from an empty store and queue, enqueues N jobs, runs a --burst worker
and rates it from the first job's start to the last job's finish, so process start-up
is not counted. Each backend gets R rounds of a -c 1 run then a -c 2 run; the table
shows the median of each column and of the per-round ratios, and the spread of the
ratios. Read the ratio column: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

from common import Beanstalkd, geyser_drain, geyser_enqueue, print_table, use_backends


def drain(queue: str, store: str, processes: int, jobs: int) -> float:
    env = use_backends(queue, store)
    geyser_enqueue(jobs)
    return geyser_drain(env, jobs, "-c", str(processes), "--sweep-interval", "0")


def run(name: str, processes: int, jobs: int) -> float:
    """One drain rate of `name`'s backends, each run in a fresh temp dir (and beanstalkd)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite://{tmp}/geyser.db"
        if name == "embedded":
            return drain(store, store, processes, jobs)
        server = Beanstalkd()
        try:
            return drain(f"beanstalkd://{server.addr}", store, processes, jobs)
        finally:
            server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=3, help="-c 1 / -c 2 pairs per backend")
    p.add_argument("--ttr", type=float, default=30.0, help="TTR for the heartbeat-cost line")
    args = p.parse_args()
    rows = []
    for name in ("beanstalkd", "embedded"):
        pairs = [(run(name, 1, args.jobs), run(name, 2, args.jobs)) for _ in range(args.rounds)]
        ratios = [two / one for one, two in pairs]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        rows.append((f"{name} (jobs/s)", statistics.median(one for one, _ in pairs),
                     statistics.median(two for _, two in pairs), statistics.median(ratios), spread))
    print(f"no-op jobs, {args.jobs} per run, {args.rounds} rounds, {os.cpu_count()} CPUs; medians")
    print_table(("drain", "-c 1", "-c 2", "ratio", "ratio range"), rows)
    touches = 60 / max(args.ttr / 3, 0.2)
    print(f"\nheartbeat per running job per minute at TTR {args.ttr:g} s: "
          f"{touches:.0f} queue touches (every TTR/3) + 60 store reads (document check every 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
