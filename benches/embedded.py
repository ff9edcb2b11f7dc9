"""Benchmark of the embedded default (SQLite queue + store), beside Huey on SQLite.

    python benches/embedded.py [--jobs N]

Prints one table: enqueue rate (one Python thread), drain rate of no-op jobs with
one worker process, and enqueue→start latency. Huey (SqliteHuey, `pip install huey`)
runs the same work in the same command as the baseline, so read the ratio column:
the machine is shared and noisy, absolute figures move from run to run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from common import geyser_drain, geyser_enqueue, print_table, use_backends

import geyser


def geyser_latency(env: dict[str, str], n: int) -> tuple[float, float]:
    """Enqueue→start latency (ms, p50 and p99) with one idle worker waiting."""
    worker = subprocess.Popen([sys.executable, "-m", "geyser.worker", "-m", "bench_jobs", "-c", "1", "--log-level", "WARNING"],
                              env=env)
    try:
        time.sleep(1.5)  # let the worker start and go idle
        uuids = []
        for i in range(n):
            uuids.append(geyser.make_base_job({"n": i}, "noop").enqueue())
            time.sleep(0.01)
        deadline = time.time() + 30
        while time.time() < deadline:
            jobs = [geyser.get_base_job(u) for u in uuids]
            if all(j and j.status == "succeeded" for j in jobs):
                break
            time.sleep(0.2)
        lat = sorted((j.startedAt - j.createdAt) * 1000 for j in jobs if j and j.startedAt)
        return statistics.median(lat), lat[max(int(len(lat) * 0.99) - 1, 0)]
    finally:
        worker.terminate()
        worker.wait(10)


def huey_rates(path: str, n: int) -> tuple[float, float]:
    """Huey on SQLite: enqueue from one thread, then dequeue+execute in one loop."""
    from huey import SqliteHuey

    huey = SqliteHuey(filename=path)

    @huey.task()
    def noop(i: int) -> None:
        return None

    start = time.perf_counter()
    for i in range(n):
        noop(i)
    enqueue = n / (time.perf_counter() - start)
    start = time.perf_counter()
    done = 0
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
        done += 1
    return enqueue, done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = use_backends(f"sqlite://{tmp}/geyser.db", f"sqlite://{tmp}/geyser.db")
        g_enqueue = geyser_enqueue(args.jobs)
        g_drain = geyser_drain(env, args.jobs, "-c", "1")
        env = use_backends(f"sqlite://{tmp}/latency.db", f"sqlite://{tmp}/latency.db")
        p50, p99 = geyser_latency(env, args.latency_jobs)
        h_enqueue, h_drain = huey_rates(f"{tmp}/huey.db", args.jobs)

    print_table(("embedded default", "geyser", "huey (sqlite)", "ratio"), [
        ("enqueue (jobs/s, 1 thread)", g_enqueue, h_enqueue, g_enqueue / h_enqueue),
        ("drain no-op (jobs/s, 1 process)", g_drain, h_drain, g_drain / h_drain),
        ("enqueue→start latency p50 (ms)", p50, "", ""),
        ("enqueue→start latency p99 (ms)", p99, "", ""),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
