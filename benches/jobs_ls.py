"""Benchmark: `geyser jobs ls` (the real console command, newest first) on a SQLite store of
100,000 documents (and with ``--postgres``, a PostgreSQL one), against the same commands on
a store of 1,000 (the baseline, same run).

    python benches/jobs_ls.py [--documents 100000] [--baseline 1000] [--runs 7] [--postgres [URL]]

Each store is written with geyser's own schema (opened through geyser) and rows copied from a
real job document, with time-ordered uuids made by geyser (`_core.new_uuid`, UUIDv7) in
creation order, so that newest first is descending uuid order, as in a real store. Then each
command runs `--runs` times as a subprocess (the installed `geyser` script: Python start-up
and imports included) and the median wall time is printed, with the ratio to the baseline
store: a page is read by keyset paging on an index, so the ratio should stay near 1. Most of
a command's time is Python starting and importing; the second table times the same pages in
this process (`Client.list`, the store's share alone). Also prints SQLite's plan for the
pages' queries. Touches only its temp directory (and on PostgreSQL, a schema of its own).
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
import uuid as uuid_module
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


def rows(store_url: str, queue_url: str, documents: int) -> list[tuple[Any, ...]]:
    """``documents`` rows of geyser_documents, oldest first, copied from a real job document
    enqueued through geyser (which also creates the store's schema)."""
    use_backends(queue_url, store_url)
    template = json.loads(client().get(geyser.make_base_job({"n": 1}, "noop").enqueue()))
    rng = random.Random(7)
    start = time.time() - documents
    out = []
    for i in range(documents):
        status = rng.choice(STATUSES)
        queue = "rare" if i % RARE_EVERY == 0 else ("noop" if i % 2 else "other")
        uuid = _core.new_uuid()
        at = start + i
        doc = {**template, "uuid": uuid, "status": status, "createdAt": at, "updatedAt": at, "version": 3,
               "queueKwargs": {**template["queueKwargs"], "queue": queue},
               "events": [{"msg": f"event of job {i}", "action": "", "at": at}]}
        out.append((uuid, 3, status, "noop", at, None, json.dumps(doc)))
    return out


def psql(url: str, sql: str, stdin: str | None = None) -> str:
    """Run SQL with psql (no Python driver needed); its output."""
    done = subprocess.run(["psql", url, "-X", "-q", "-w", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql], input=stdin,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"psql failed: {done.stderr}")
    return done.stdout


class SqliteStore:
    """A store file in the temp directory."""

    name = "SQLite"

    def __init__(self, folder: Path, size: int) -> None:
        self.path = folder / f"store-{size}.db"
        self.url = f"sqlite://{self.path}"
        self.queue_url = self.url

    def fill(self, documents: int) -> str:
        """Writes the documents; returns the uuid a third of the way up from the oldest."""
        made = rows(self.url, self.queue_url, documents)
        with sqlite3.connect(self.path, isolation_level=None) as conn:
            conn.execute("BEGIN")
            conn.execute("DELETE FROM geyser_documents")
            conn.executemany("INSERT INTO geyser_documents (uuid, version, status, job_type, updated_at, expires_at,"
                             " doc) VALUES (?, ?, ?, ?, ?, ?, ?)", made)
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
        return made[documents // 3][0]

    def plans(self) -> None:
        """SQLite's plan for the SQL the store sends for these pages (see `page_sql` in
        src/store/sqlite.rs, whose unit test checks the same plans)."""
        head = "SELECT uuid, CAST(doc AS BLOB) FROM geyser_documents"
        with sqlite3.connect(self.path) as conn:
            for name, where in PLANNED.items():
                sql = f"{head} {where.replace('QUEUE', SQLITE_QUEUE)} ORDER BY uuid DESC LIMIT 51"
                print(f"  {name:<16} " + "; ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")))

    def drop(self) -> None:
        """Nothing to do: the temp directory goes."""


class PostgresStore:
    """A schema of its own on the server, dropped afterwards."""

    name = "PostgreSQL"

    def __init__(self, server: str, folder: Path, size: int) -> None:
        self.server = server
        self.schema = f"bench_jobs_ls_{uuid_module.uuid4().hex[:12]}"
        self.url = f"{server}?schema={self.schema}"
        self.queue_url = f"sqlite://{folder / f'queue-{size}.db'}"

    def fill(self, documents: int) -> str:
        """Writes the documents with COPY; returns the uuid a third of the way up from the oldest."""
        made = rows(self.url, self.queue_url, documents)

        def text(value: Any) -> str:
            return "\\N" if value is None else str(value).replace("\\", "\\\\")

        data = "".join("\t".join(text(v) for v in row) + "\n" for row in made)
        table = f"{self.schema}.geyser_documents"
        psql(self.server, f"DELETE FROM {table}")
        psql(self.server, f"COPY {table} (uuid, version, status, job_type, updated_at, expires_at, doc) FROM STDIN",
             stdin=data)
        psql(self.server, f"VACUUM ANALYZE {table}")
        return made[documents // 3][0]

    def plans(self) -> None:
        """PostgreSQL's plan for the SQL the store sends for these pages (`list_sql` in
        src/store/postgres.rs)."""
        head = f"SELECT uuid, doc FROM {self.schema}.geyser_documents"
        for name, where in PLANNED.items():
            sql = f"{head} {where.replace('QUEUE', POSTGRES_QUEUE)} ORDER BY uuid DESC LIMIT 51"
            plan = psql(self.server, f"EXPLAIN {sql}").splitlines()
            print(f"  {name:<16} " + " / ".join(line.strip() for line in plan[1:3]))

    def drop(self) -> None:
        psql(self.server, f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")


#: The WHERE clause of each planned page, QUEUE standing for the store's queue expression.
PLANNED = {
    "first page": "",
    "--status failed": "WHERE status = 'failed'",
    "--after U": "WHERE uuid < 'x'",
    "--queue Q": "WHERE QUEUE = 'rare'",
}
SQLITE_QUEUE = "json_extract(doc, '$.queueKwargs.queue')"
POSTGRES_QUEUE = "doc->'queueKwargs'->>'queue'"


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--documents", type=int, default=100_000)
    p.add_argument("--baseline", type=int, default=1_000)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--postgres", metavar="URL", nargs="?", const="postgresql://postgres@127.0.0.1:5432/test",
                   help="also on PostgreSQL at URL (a schema of its own, dropped afterwards)")
    args = p.parse_args()
    stores: list[type] = [SqliteStore] + ([PostgresStore] if args.postgres else [])
    with tempfile.TemporaryDirectory() as tmp:
        for kind in stores:
            measure(kind, Path(tmp), args)


def measure(kind: type, folder: Path, args: argparse.Namespace) -> None:
    """Fill a store of each size, time the commands, print the plans and the tables."""
    results: dict[int, dict[str, float]] = {}
    in_process: dict[int, dict[str, float]] = {}
    for size in (args.baseline, args.documents):
        store = kind(args.postgres, folder, size) if kind is PostgresStore else kind(folder, size)
        try:
            start = time.perf_counter()
            deep = store.fill(size)
            print(f"{store.name}: filled {size:,} documents in {time.perf_counter() - start:.1f} s")
            env = {**os.environ, "GEYSER_QUEUE_URL": store.queue_url, "GEYSER_STORE_URL": store.url}
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
                print(f"{store.name} query plans on {size:,} documents:")
                store.plans()
        finally:
            store.drop()
    for title, table in ((f"{kind.name}: geyser ... (median ms)", results),
                         (f"{kind.name}: Client.list (ms)", in_process)):
        print()
        print_table((title, f"{args.baseline:,} docs", f"{args.documents:,} docs", "ratio"), [
            (name, table[args.baseline][name], table[args.documents][name],
             table[args.documents][name] / table[args.baseline][name])
            for name in table[args.baseline]
        ])
    print()

if __name__ == "__main__":
    main()
