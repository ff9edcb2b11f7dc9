"""Benchmark of bulk enqueue: `job.enqueue()` per job against `geyser.jobs.enqueue_many`,
on the embedded file and on beanstalkd (started here) with a SQLite store.

    python benches/bulk_enqueue.py [--single N] [--bulk N] [--batch N]

For each backend, one table row: jobs/s of one `enqueue()` per job (the calls returning,
then until `geyser.flush()` says every entry is put: on beanstalkd the relay puts them
after the calls return), of `enqueue_many` in batches of `--batch` (Python's checks
included), and of the engine's part alone (`Client.enqueue_many` on documents already
checked), then the bulk/single ratio. Jobs are built before the clock starts; each backend
starts empty. Ratios are within one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import Beanstalkd, print_table, use_backends

import geyser
from geyser.config import client
from geyser.jobs import enqueue_many


def jobs(n: int) -> list[geyser.BaseJob]:
    return [geyser.make_base_job({"n": i}, "noop") for i in range(n)]


def delivered() -> None:
    """Wait until this process's relay has put every entry (nothing to wait for without one)."""
    flush = getattr(geyser, "flush", None)
    if flush is not None and flush(600) != 0:
        raise SystemExit("the relay did not put every entry within 600 s")


def single(n: int) -> tuple[float, float]:
    """(jobs/s of the calls, jobs/s until every entry is put)."""
    todo = jobs(n)
    start = time.perf_counter()
    for job in todo:
        job.enqueue()
    returned = time.perf_counter() - start
    delivered()
    return n / returned, n / (time.perf_counter() - start)


def bulk(n: int, batch: int) -> float:
    todo = jobs(n)
    start = time.perf_counter()
    for i in range(0, n, batch):
        enqueue_many(todo[i : i + batch])
    return n / (time.perf_counter() - start)


def engine_only(n: int, batch: int) -> float:
    docs = [job._prepare_enqueue(None, None) for job in jobs(n)]
    start = time.perf_counter()
    for i in range(0, n, batch):
        outcome = client().enqueue_many(docs[i : i + batch], 0.0)
        if any(doc is None for doc, _ in outcome):
            raise SystemExit(f"a job was not queued: {outcome}")
    return n / (time.perf_counter() - start)


def measure(args: argparse.Namespace) -> tuple[float, float, float, float]:
    one, one_delivered = single(args.single)
    many = bulk(args.bulk, args.batch)
    delivered()
    engine = engine_only(args.bulk, args.batch)
    delivered()
    ready = client().stats_tube("noop")["ready"]
    expected = args.single + 2 * args.bulk
    if ready != expected:
        raise SystemExit(f"{ready} jobs ready, expected {expected}")
    return one, one_delivered, many, engine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", type=int, default=5000, help="jobs enqueued one by one")
    parser.add_argument("--bulk", type=int, default=50000, help="jobs enqueued with enqueue_many")
    parser.add_argument("--batch", type=int, default=10000, help="jobs per enqueue_many call")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite://{tmp}/embedded.db"
        use_backends(db, db)
        rows.append(("embedded (SQLite file)", *measure(args)))
        server = Beanstalkd()
        try:
            use_backends(f"beanstalkd://{server.addr}", f"sqlite://{tmp}/store.db")
            rows.append(("beanstalkd + SQLite store", *measure(args)))
        finally:
            geyser.configure()
            server.stop()
    header = ("jobs/s", "enqueue()", "...+flush", "enqueue_many", "engine only", "bulk/single")
    print_table(header, [(*row, row[3] / row[1]) for row in rows], label=28)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
