"""Benchmark: how long the dashboard's jobs page takes on a SQLite store of 100,000
documents, against the same pages on a store of 1,000 (the baseline, same run). The page is
keyset-paged over the store's (status, uuid) and (job_type, uuid) indexes, so the ratio
column should stay near 1 however many documents there are.

    python benches/dashboard_jobs.py [--documents 100000] [--baseline 1000] [--requests 30]

Writes each store with geyser's own schema (opened through geyser) and rows copied from a
real job document (uuid, status, type and times changed; columns agree with the JSON),
serves ``geyser.web.make_app()`` in this process on a free loopback port, and times GETs
with Tornado's HTTP client (median of ``--requests``). Touches only its temp directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
import uuid as uuid_module
from pathlib import Path

import tornado.httpserver
import tornado.testing
from tornado.httpclient import AsyncHTTPClient

from common import print_table, use_backends

import geyser
import geyser.web
from geyser.config import client

#: Of every 100 documents: 70 succeeded, 20 failed, 8 queued, 2 cancelled; half noop, half
#: "other" (its own queue), so each filter matches a real share of the store.
STATUSES = ["succeeded"] * 70 + ["failed"] * 20 + ["queued"] * 8 + ["cancelled"] * 2


class OtherJob(geyser.BaseJob):
    """A second job type on its own queue, for the queue filter."""

    JOB_TYPE = "other"
    QUEUE_NAME = "other"

    def run(self) -> tuple[float, bool]:
        return time.time(), False


def fill(path: Path, documents: int) -> str:
    """A store at ``path`` with ``documents`` job documents; returns a uuid a third of the way in."""
    url = f"sqlite://{path}"
    use_backends(url, url)
    template = json.loads(client().get(geyser.make_base_job({"n": 1}, "noop").enqueue()))
    rng = random.Random(7)
    now = time.time()
    rows = []
    for i in range(documents):
        status, job_type = rng.choice(STATUSES), "noop" if i % 2 else "other"
        uuid = str(uuid_module.UUID(int=rng.getrandbits(128), version=4))
        at = now - rng.uniform(0, 86400)
        doc = {**template, "uuid": uuid, "status": status, "jobType": job_type, "createdAt": at, "updatedAt": at,
               "version": 3, "events": [{"msg": f"event of job {i}", "action": "", "at": at}]}
        rows.append((uuid, 3, status, job_type, at, None, json.dumps(doc)))
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("BEGIN")
        conn.execute("DELETE FROM geyser_documents")
        conn.executemany("INSERT INTO geyser_documents (uuid, version, status, job_type, updated_at, expires_at, doc)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    return sorted(r[0] for r in rows)[documents // 3]


async def median_ms(port: int, path: str, requests: int) -> float:
    http = AsyncHTTPClient()
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        response = await http.fetch(f"http://127.0.0.1:{port}{path}")
        times.append((time.perf_counter() - start) * 1000)
        assert response.code == 200 and b'<tr data-uuid="' in response.body, (path, response.code)
    return statistics.median(times)


async def measure(pages: dict[str, str], requests: int) -> dict[str, float]:
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(geyser.web.make_app(token=""))
    server.add_sockets([sock])
    try:
        return {name: await median_ms(port, path, requests) for name, path in pages.items()}
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--documents", type=int, default=100_000)
    p.add_argument("--baseline", type=int, default=1_000)
    p.add_argument("--requests", type=int, default=30)
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in (args.baseline, args.documents):
            start = time.perf_counter()
            middle = fill(Path(tmp) / f"store-{size}.db", size)
            print(f"filled {size:,} documents in {time.perf_counter() - start:.1f} s")
            pages = {
                "first page (50 jobs, no filter)": "/dashboard/jobs",
                "status=failed": "/dashboard/jobs?status=failed",
                "type=noop&status=queued": "/dashboard/jobs?type=noop&status=queued",
                "queue=other": "/dashboard/jobs?queue=other",
                "a page a third of the way in": f"/dashboard/jobs?after={middle}",
            }
            results[size] = asyncio.run(measure(pages, args.requests))
    print()
    print_table(("GET (median ms)", f"{args.baseline:,} docs", f"{args.documents:,} docs", "ratio"), [
        (name, results[args.baseline][name], results[args.documents][name],
         results[args.documents][name] / results[args.baseline][name])
        for name in results[args.baseline]
    ])


if __name__ == "__main__":
    main()
