"""Benchmark of the embedded default (SQLite queue + store), beside Huey on SQLite.

    python benches/embedded.py [--jobs N]

Prints one table: enqueue rate (one Python thread), drain rate of no-op jobs with
one worker process, and enqueue→start latency. Huey (SqliteHuey) runs the same
work in the same command as the baseline, so read the ratio column: the machine
is shared and noisy, absolute figures move from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import geyser  # noqa: E402
from geyser.config import client  # noqa: E402

import bench_jobs  # noqa: E402,F401  (registers the no-op job)


def worker_env(db: str) -> dict[str, str]:
    return dict(os.environ, GEYSER_QUEUE_URL=db, GEYSER_STORE_URL=db,
                PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


def geyser_enqueue(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        geyser.make_base_job({"n": i}, "noop").enqueue()
    return n / (time.perf_counter() - start)


def geyser_drain(db: str, n: int) -> float:
    """Jobs/s of one worker process, from the first start to the last finish (no start-up)."""
    subprocess.run([sys.executable, "-m", "geyser.worker", "-m", "bench_jobs", "--burst", "--log-level", "WARNING"],
                   env=worker_env(db), check=True)
    docs = [json.loads(d) for d in _all_docs()]
    assert len(docs) >= n and all(d["status"] == "succeeded" for d in docs), "not every job succeeded"
    first = min(d["startedAt"] for d in docs)
    last = max(d["finishedAt"] for d in docs)
    return len(docs) / (last - first)


def _all_docs() -> list[str]:
    out: list[str] = []
    after = None
    while True:
        page = client().list(job_type="noop", after=after, limit=1000)
        if not page:
            return out
        out += page
        after = json.loads(page[-1])["uuid"]


def geyser_latency(db: str, n: int) -> tuple[float, float]:
    worker = subprocess.Popen([sys.executable, "-m", "geyser.worker", "-m", "bench_jobs", "--log-level", "WARNING"],
                              env=worker_env(db))
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
        lat = sorted((j.startedAt - j.createdAt) * 1000 for j in jobs if j)
        return statistics.median(lat), lat[int(len(lat) * 0.99) - 1]
    finally:
        worker.terminate()
        worker.wait(10)


def huey_rates(path: str, n: int) -> tuple[float, float]:
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
    drain = done / (time.perf_counter() - start)
    return enqueue, drain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite://{tmp}/geyser.db"
        os.environ.update(GEYSER_QUEUE_URL=db, GEYSER_STORE_URL=db)
        geyser.configure()
        g_enqueue = geyser_enqueue(args.jobs)
        g_drain = geyser_drain(db, args.jobs)
        db2 = f"sqlite://{tmp}/latency.db"
        os.environ.update(GEYSER_QUEUE_URL=db2, GEYSER_STORE_URL=db2)
        geyser.configure()
        p50, p99 = geyser_latency(db2, args.latency_jobs)
        h_enqueue, h_drain = huey_rates(f"{tmp}/huey.db", args.jobs)

    rows = [
        ("enqueue (jobs/s, 1 thread)", g_enqueue, h_enqueue),
        ("drain no-op (jobs/s, 1 process)", g_drain, h_drain),
    ]
    print(f"{'measure':<34}{'geyser':>12}{'huey':>12}{'ratio':>8}")
    for name, g, h in rows:
        print(f"{name:<34}{g:>12,.0f}{h:>12,.0f}{g / h:>8.2f}")
    print(f"{'enqueue→start latency p50 (ms)':<34}{p50:>12.2f}")
    print(f"{'enqueue→start latency p99 (ms)':<34}{p99:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
