"""Benchmark: `geyser jobs ls` (the real console command, newest first) on a SQLite store of
100,000 documents, against the same commands on a store of 1,000 (the baseline, same run).

    python benches/jobs_ls.py [--documents 100000] [--baseline 1000] [--runs 7]

Each store is written with geyser's own schema (opened through geyser) and rows copied from a
real job document, with time-ordered uuids made by geyser (`_core.new_uuid`, UUIDv7) in
creation order, so that newest first is descending uuid order, as in a real store. Then each
command runs `--runs` times as a subprocess (the installed `geyser` script: Python start-up
and imports included) and the median wall time is printed, with the ratio to the baseline
store: a page is read by keyset paging on an index, so the ratio should stay near 1. Most of
a command's time is Python starting and importing; the second table times the same pages in
this process (`Client.list`, the store's share alone). Also prints SQLite's plan for the
pages' queries. Touches only its temp directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import print_table, use_backends

import geyser
from geyser import _core
from geyser.config import client

#: Of every 100 documents: 70 succeeded, 20 failed, 8 queued, 2 cancelled.
STATUSES = ["succeeded"] * 70 + ["failed"] * 20 + ["queued"] * 8 + ["cancelled"] * 2
#: One document in 1,000 is on the queue "rare" (the others on "noop" or "other").
RARE_EVERY = 1000


def fill(path: Path, documents: int) -> str:
    """A store at ``path`` with ``documents`` job documents; returns the uuid two thirds of
    the way down from the newest (for a deep ``--after`` page)."""
    url = f"sqlite://{path}"
    use_backends(url, url)
    template = json.loads(client().get(geyser.make_base_job({"n": 1}, "noop").enqueue()))
    rng = random.Random(7)
    start = time.time() - documents
    rows = []
    for i in range(documents):
        status = rng.choice(STATUSES)
        queue = "rare" if i % RARE_EVERY == 0 else ("noop" if i % 2 else "other")
        uuid = _core.new_uuid()
        at = start + i
        doc = {**template, "uuid": uuid, "status": status, "createdAt": at, "updatedAt": at, "version": 3,
               "queueKwargs": {**template["queueKwargs"], "queue": queue},
               "events": [{"msg": f"event of job {i}", "action": "", "at": at}]}
        rows.append((uuid, 3, status, "noop", at, None, json.dumps(doc)))
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("BEGIN")
        conn.execute("DELETE FROM geyser_documents")
        conn.executemany("INSERT INTO geyser_documents (uuid, version, status, job_type, updated_at, expires_at, doc)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    return rows[documents // 3][0]


def median_ms(args: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time of `geyser ARGS` over `runs` runs; each must succeed and list jobs."""
    exe = shutil.which("geyser")
    if exe is None:
        sys.exit("the geyser script is not installed: pip install -e .")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([exe, *args], env=env, capture_output=True, text=True)
        times.append((time.perf_counter() - start) * 1000)
        assert done.returncode == 0 and done.stdout.startswith("uuid"), (args, done.stdout[:200], done.stderr)
    return statistics.median(times)


def list_ms(kwargs: dict[str, Any], runs: int) -> float:
    """Median time of the page's `Client.list` call in this process (the store's share)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        page = client().list(limit=51, newest_first=True, **kwargs)
        times.append((time.perf_counter() - start) * 1000)
        assert page, kwargs
    return statistics.median(times)


def plans(path: Path) -> None:
    """SQLite's plan for the SQL the store sends for these pages (see `page_sql` in
    src/store/sqlite.rs, whose unit test checks the same plans)."""
    head = "SELECT uuid, CAST(doc AS BLOB) FROM geyser_documents"
    queries = {
        "first page": f"{head} ORDER BY uuid DESC LIMIT 51",
        "--status failed": f"{head} WHERE status = 'failed' ORDER BY uuid DESC LIMIT 51",
        "--after U": f"{head} WHERE uuid < 'x' ORDER BY uuid DESC LIMIT 51",
        "--queue Q": f"{head} WHERE json_extract(doc, '$.queueKwargs.queue') = 'rare' ORDER BY uuid DESC LIMIT 51",
    }
    with sqlite3.connect(path) as conn:
        for name, sql in queries.items():
            plan = "; ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            print(f"  {name:<16} {plan}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--documents", type=int, default=100_000)
    p.add_argument("--baseline", type=int, default=1_000)
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    results: dict[int, dict[str, float]] = {}
    in_process: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in (args.baseline, args.documents):
            path = Path(tmp) / f"store-{size}.db"
            start = time.perf_counter()
            deep = fill(path, size)
            print(f"filled {size:,} documents in {time.perf_counter() - start:.1f} s")
            env = {**os.environ, "GEYSER_QUEUE_URL": f"sqlite://{path}", "GEYSER_STORE_URL": f"sqlite://{path}"}
            commands: dict[str, tuple[list[str], dict[str, Any]]] = {
                "jobs ls (first page, 50)": (["jobs", "ls"], {}),
                "jobs ls --status failed": (["jobs", "ls", "--status", "failed"], {"status": "failed"}),
                "jobs ls --status queued": (["jobs", "ls", "--status", "queued"], {"status": "queued"}),
                "jobs ls --after U (2/3 deep)": (["jobs", "ls", "--after", deep], {"after": deep}),
                "jobs ls --queue other": (["jobs", "ls", "--queue", "other"], {"queue": "other"}),
                "jobs ls --queue rare (1 in 1000)": (["jobs", "ls", "--queue", "rare"], {"queue": "rare"}),
            }
            results[size] = {name: median_ms(argv, env, args.runs) for name, (argv, _) in commands.items()}
            in_process[size] = {name: list_ms(kwargs, args.runs) for name, (_, kwargs) in commands.items()}
            if size == args.documents:
                print(f"SQLite query plans on {size:,} documents:")
                plans(path)
    for title, table in (("geyser ... (median ms)", results), ("Client.list in process (ms)", in_process)):
        print()
        print_table((title, f"{args.baseline:,} docs", f"{args.documents:,} docs", "ratio"), [
            (name, table[args.baseline][name], table[args.documents][name],
             table[args.documents][name] / table[args.baseline][name])
            for name in table[args.baseline]
        ])


if __name__ == "__main__":
    main()
