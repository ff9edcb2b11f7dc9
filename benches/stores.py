"""Geyser's stores (PostgreSQL, Redis, SQLite) against the same work in plain Python with each
server's standard client (psycopg 3, redis-py, sqlite3; `plain_stores.py`), in one run.

    pip install -e '.[bench]'   # psycopg[binary], redis, greenstalk
    python benches/stores.py [--ops N] [--jobs N] [--rounds R] [--stores postgres,redis,sqlite] [--no-drain | --no-ops]

Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust, database test) and Redis at
127.0.0.1:6379; starts its own beanstalkd. Every run uses a fresh schema / key prefix / temp
file and removes it afterwards; nothing is written into the repository.

Store ops, from one Python thread, through the native client `geyser.config.client()` (what
`BaseJob.enqueue`, `get_base_job` and `job.save` call, without the marshmallow model):
- create: `client.enqueue(json.dumps(doc), 0)` on beanstalkd: the document is saved, its
  uuid put on the queue, and the queue id noted in the document. The baseline does the
  same three steps: INSERT / SET NX, a greenstalk put, a compare-and-swap. Geyser's relay
  puts and notes in the background, so the timing ends with `geyser.flush()`: every entry
  put and noted, as the baseline's are, and none of that work left to run during `get`.
- get: `client.get(uuid)` (JSON text); baseline: one SELECT / GET returning the text.
- CAS update: `client.save(json.dumps(doc))` of a document read at its version (the job's
  progress changed); baseline: one compare-and-swap on the version (UPDATE ... WHERE
  version = $v / a Lua script / UPDATE ... WHERE version = ?) writing the whole document.
Both sides serialise the document with json.dumps inside the timed loop. Redis indexes:
the document's status, type and update time sorted sets change with it in one script.

Drain: N no-op jobs (`bench_jobs.NoopJob`) on beanstalkd drained by `python -m
geyser.worker --burst -c C` vs C processes of `plain_drain.py` (greenstalk reserve, get,
run, CAS update, delete). The jobs wait in a paused tube until every worker process watches
it; both are rated from the first job's start to the last job's finish as their documents
record them. Geyser's worker writes the
document twice per job (running, then succeeded); the plain worker once.

Each round runs every measurement once, Geyser and baseline back to back (which goes first
alternates by round); the table shows medians of R rounds and the median of the per-round
ratios. Read the ratios: the machine may be shared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from typing import Callable, TypeVar

import greenstalk

from common import HERE, Beanstalkd, all_noop_docs, geyser_enqueue, use_backends
from plain_stores import PlainPostgres, PlainRedis, open_plain, plain_enqueue

import geyser  # noqa: E402
from geyser.config import client  # noqa: E402

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"
TARGETS = {"create": 1.2, "get": 1.2, "CAS update": 1.2}
DRAIN_TARGET = 1.5  # -c 2, network stores
# Drain runs enqueue into a paused tube and un-pause it once every worker watches it (at most this long, s).
HOLD = 60

_names = itertools.count()
T = TypeVar("T")


class Namespace:
    """A fresh schema / key prefix / file for one side of one measurement; `drop()` removes it."""

    def __init__(self, kind: str, tmp: str) -> None:
        self.kind = kind
        self.name = f"geyser_bench_{os.getpid()}_{next(_names)}"
        self.tmp = tmp

    @property
    def geyser_url(self) -> str:
        if self.kind == "postgres":
            return f"{POSTGRES}?schema={self.name}"
        if self.kind == "redis":
            return f"{REDIS}?prefix={self.name}:"
        return f"sqlite://{self.tmp}/{self.name}.db"

    @property
    def plain_where(self) -> str:
        return {"postgres": POSTGRES, "redis": REDIS}.get(self.kind, f"{self.tmp}/{self.name}.db")

    @property
    def plain_namespace(self) -> str:
        return f"{self.name}:" if self.kind == "redis" else self.name

    def drop(self) -> None:
        geyser.configure()  # let go of the client that uses it
        if self.kind == "postgres":
            PlainPostgres(POSTGRES, self.name).drop()
        elif self.kind == "redis":
            PlainRedis(REDIS, f"{self.name}:").drop()


def new_docs(n: int) -> list[dict]:
    """n new no-op job documents as `BaseJob.enqueue` would send them, each its own uuid."""
    job = geyser.make_base_job({"n": 0}, "noop")
    template = json.loads(job._prepare_enqueue(None, None))
    return [{**template, "uuid": str(uuid.uuid4()), "n": i} for i in range(n)]


def rate(n: int, run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return n / (time.perf_counter() - start)


def flushed(timeout: float) -> None:
    """Wait until the relay has put (and noted) every entry enqueued; exit if it has not within `timeout` s."""
    if geyser.flush(timeout):
        sys.exit(f"the enqueue relay did not put every entry within {timeout:g} s")


def geyser_ops(kind: str, tmp: str, queue_url: str, n: int) -> dict[str, float]:
    ns = Namespace(kind, tmp)
    try:
        geyser.configure(queue=queue_url, store=ns.geyser_url)
        c = client()
        docs = new_docs(n)
        uuids = [d["uuid"] for d in docs]
        out = {"create": rate(n, lambda: ([c.enqueue(json.dumps(d), 0.0) for d in docs], flushed(60)))}
        got: list = []
        out["get"] = rate(n, lambda: got.extend(c.get(u) for u in uuids))
        edits = [{**json.loads(g), "completeness": 0.5} for g in got]
        out["CAS update"] = rate(n, lambda: [c.save(json.dumps(d)) for d in edits])
        return out
    finally:
        ns.drop()


def plain_ops(kind: str, tmp: str, port: int, n: int) -> dict[str, float]:
    ns = Namespace(kind, tmp)
    store = open_plain(kind, ns.plain_where, ns.plain_namespace)
    try:
        with greenstalk.Client(("127.0.0.1", port), use="plain-ops") as queue:
            docs = new_docs(n)
            uuids = [d["uuid"] for d in docs]
            out = {"create": rate(n, lambda: [plain_enqueue(store, queue, d) for d in docs])}
            got: list = []
            out["get"] = rate(n, lambda: got.extend(store.get(u) for u in uuids))
            edits = [{**json.loads(g), "completeness": 0.5} for g in got]
            out["CAS update"] = rate(n, lambda: [store.cas({**d, "version": d["version"] + 1}, d["version"])
                                                 for d in edits])
            return out
    finally:
        store.drop()


def done_rate(docs: list[dict], n: int) -> float:
    done = [d for d in docs if d["status"] == "succeeded"]
    if len(done) < n:
        sys.exit(f"only {len(done)} of {n} jobs succeeded")
    return len(done) / (max(d["finishedAt"] for d in done) - min(d["startedAt"] for d in done))


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def release_when_watched(control: greenstalk.Client, processes: int) -> None:
    """Un-pause the `noop` tube once `processes` connections watch it: every worker has
    started, so start-up does not spread the first jobs out."""
    deadline = time.monotonic() + HOLD
    while control.stats_tube("noop")["current-watching"] < processes:
        if time.monotonic() > deadline:
            sys.exit(f"workers did not start within {HOLD} s")
        time.sleep(0.01)
    control.pause_tube("noop", 0)


def geyser_drain_rate(kind: str, tmp: str, processes: int, jobs: int) -> tuple[float, float]:
    """Jobs/s, and CPU microseconds the worker processes spent per job."""
    ns, server = Namespace(kind, tmp), Beanstalkd()
    try:
        env = use_backends(f"beanstalkd://{server.addr}", ns.geyser_url)
        with greenstalk.Client(("127.0.0.1", server.port), use="noop") as control:
            control.pause_tube("noop", HOLD)
            geyser_enqueue(jobs)
            cmd = [sys.executable, "-m", "geyser.worker", "-m", "bench_jobs", "--burst", "--log-level", "WARNING",
                   "-c", str(processes), "--sweep-interval", "0"]
            before = children_cpu()
            worker = subprocess.Popen(cmd, env=env)
            release_when_watched(control, processes)
            if worker.wait() != 0:
                sys.exit("the geyser worker failed")
            cpu = children_cpu() - before
        return done_rate(all_noop_docs(), jobs), cpu / jobs * 1e6
    finally:
        server.stop()
        ns.drop()


def plain_drain_rate(kind: str, tmp: str, processes: int, jobs: int) -> tuple[float, float]:
    """Jobs/s, and CPU microseconds the worker processes spent per job."""
    ns, server = Namespace(kind, tmp), Beanstalkd()
    store = open_plain(kind, ns.plain_where, ns.plain_namespace)
    try:
        with greenstalk.Client(("127.0.0.1", server.port), use="noop") as queue:
            queue.pause_tube("noop", HOLD)
            for doc in new_docs(jobs):
                plain_enqueue(store, queue, doc)
            cmd = [sys.executable, str(HERE / "plain_drain.py"), kind, ns.plain_where, ns.plain_namespace,
                   str(server.port), "noop"]
            before = children_cpu()
            workers = [subprocess.Popen(cmd) for _ in range(processes)]
            release_when_watched(queue, processes)
            if any(w.wait() != 0 for w in workers):
                sys.exit("a plain drain worker failed")
            cpu = children_cpu() - before
        return done_rate(store.all_docs(), jobs), cpu / jobs * 1e6
    finally:
        store.drop()
        server.stop()


def both(geyser_side: Callable[[], T], plain_side: Callable[[], T], geyser_first: bool) -> tuple[T, T]:
    """Both measurements, back to back in the given order; returned as (geyser, plain)."""
    if geyser_first:
        g = geyser_side()
        return g, plain_side()
    pl = plain_side()
    return geyser_side(), pl


def median_row(label: str, pairs: list[tuple[float, float]], target: float | None) -> tuple:
    ratios = [g / p for g, p in pairs]
    ratio = statistics.median(ratios)
    verdict = "" if target is None else f"{target:.1f}x {'met' if ratio >= target else 'MISSED'}"
    return (label, statistics.median(g for g, _ in pairs), statistics.median(p for _, p in pairs), ratio,
            f"{min(ratios):.2f}-{max(ratios):.2f}", verdict)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", type=int, default=2000, help="operations of each kind per run")
    p.add_argument("--jobs", type=int, default=2000, help="jobs per drain run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--stores", default="postgres,redis,sqlite")
    p.add_argument("--no-drain", action="store_true", help="measure the store ops only, not the drain")
    p.add_argument("--no-ops", action="store_true", help="measure the drain only, not the store ops")
    args = p.parse_args()
    if args.no_drain and args.no_ops:
        p.error("--no-drain and --no-ops leave nothing to measure")
    ops = () if args.no_ops else tuple(TARGETS)
    kinds = args.stores.split(",")
    pairs: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    cpu: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    server = Beanstalkd()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for rnd in range(args.rounds):
                geyser_first = rnd % 2 == 0
                for kind in kinds:
                    if ops:
                        g, pl = both(lambda: geyser_ops(kind, tmp, f"beanstalkd://{server.addr}", args.ops),
                                     lambda: plain_ops(kind, tmp, server.port, args.ops), geyser_first)
                        for op in ops:
                            pairs[(kind, op)].append((g[op], pl[op]))
                    for c in () if args.no_drain else (1, 2):
                        g, pl = both(lambda: geyser_drain_rate(kind, tmp, c, args.jobs),
                                     lambda: plain_drain_rate(kind, tmp, c, args.jobs), geyser_first)
                        pairs[(kind, f"drain -c {c}")].append((g[0], pl[0]))
                        cpu[(kind, c)].append((g[1], pl[1]))
    finally:
        server.stop()
    rows = []
    for kind in kinds:
        for op in ops:
            rows.append(median_row(f"{kind} {op} (ops/s)", pairs[(kind, op)], TARGETS[op]))
        for c in () if args.no_drain else (1, 2):
            target = DRAIN_TARGET if c == 2 and kind != "sqlite" else None
            rows.append(median_row(f"{kind} drain -c {c} (jobs/s)", pairs[(kind, f"drain -c {c}")], target))
    print(f"{args.ops} ops / {args.jobs} no-op jobs per run, {args.rounds} rounds, {os.cpu_count()} CPUs; "
          "medians; ratio = geyser / plain Python")
    header = ("store op", "geyser", "plain Python", "ratio", "ratio range", "target")
    print(f"{header[0]:<30}" + "".join(f"{h:>14}" for h in header[1:]))
    for label, g, pl, ratio, spread, verdict in rows:
        print(f"{label:<30}{g:>14,.0f}{pl:>14,.0f}{ratio:>14.2f}{spread:>14}{verdict:>14}")
    if args.no_drain:
        return 0
    print("\nworker CPU per drained job (us: user+system of the worker processes, start-up included; medians)")
    for kind in kinds:
        for c in (1, 2):
            g, pl = (statistics.median(side) for side in zip(*cpu[(kind, c)]))
            print(f"{kind + ' -c ' + str(c):<30}{g:>14,.0f}{pl:>14,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
