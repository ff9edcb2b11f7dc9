"""Benchmark: what the maintenance sweep's stale-document index costs a job's store writes.

    python benches/stale_index.py [--jobs N] [--backlog N]

The SQLite store keeps a partial index of queued documents by write time
(`geyser_documents_queued_since`) so that the sweep reads only stale rows. This
script creates a store file with geyser's own schema, then times a job's three store
writes (insert queued, compare-and-swap to running, then to succeeded; each its own
transaction, as the store makes them) on that file with the index, and, as the
baseline in the same run, on a copy without it. Read the ratio column; the machine
is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from common import print_table, use_backends

from geyser.config import client

INDEX = "geyser_documents_queued_since"
CAS = ("UPDATE geyser_documents SET version = ?, status = ?, updated_at = ?, doc = ?"
       " WHERE uuid = ? AND version = ? AND job_type = 'bench' AND expires_at IS ?")


def store_file(folder: Path) -> Path:
    """A store file with geyser's schema (created by opening it through geyser)."""
    path = folder / "store.db"
    use_backends(f"sqlite://{path}", f"sqlite://{path}")
    client()
    return path


def job_writes(path: Path, jobs: int, backlog: int) -> float:
    """µs per job for `jobs` jobs' three writes, over `backlog` finished documents."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    body = json.dumps({"payload": "x" * 800})
    insert = ("INSERT INTO geyser_documents (uuid, version, status, job_type, updated_at, expires_at, doc)"
              " VALUES (?, ?, ?, 'bench', ?, NULL, ?)")
    conn.execute("BEGIN")
    conn.executemany(insert, [(str(uuid.uuid4()), 3, "succeeded", time.time(), body) for _ in range(backlog)])
    conn.execute("COMMIT")
    start = time.perf_counter()
    for _ in range(jobs):
        u = str(uuid.uuid4())
        conn.execute(insert, (u, 1, "queued", time.time(), body))
        conn.execute(CAS, (2, "running", time.time(), body, u, 1, None))
        conn.execute(CAS, (3, "succeeded", time.time(), body, u, 2, None))
    conn.close()
    return (time.perf_counter() - start) / jobs * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--backlog", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        template = sqlite3.connect(store_file(Path(tmp)))
        best = {"with": float("inf"), "without": float("inf")}
        for r in range(args.rounds):
            for variant in ("without", "with"):
                path = Path(tmp) / f"{variant}-{r}.db"
                with sqlite3.connect(path, isolation_level=None) as copy:
                    template.backup(copy)
                    copy.execute("PRAGMA journal_mode=WAL")
                    if variant == "without":
                        copy.execute(f"DROP INDEX {INDEX}")
                best[variant] = min(best[variant], job_writes(path, args.jobs, args.backlog))
    print_table(("store writes of one job (best of rounds)", "µs/job", "ratio"), [
        ("without the stale index (baseline)", best["without"], 1.0),
        ("with the stale index", best["with"], best["with"] / best["without"]),
    ])


if __name__ == "__main__":
    main()
