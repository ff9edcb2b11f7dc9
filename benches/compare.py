"""Geyser against the plain-Python seed design and Huey, Dramatiq, RQ and Celery, in one command.

    pip install -e '.[bench]'   # huey, dramatiq[redis], rq, celery[redis], matplotlib, ...
    python benches/compare.py [--quick] [--jobs N] [--rounds R] [--systems a,b,...] [--only a,b] [--out PNG]

With the defaults (2000 jobs, 3 rounds) a run takes about 20 minutes on two busy cores, 40% of
it RQ's (a forked process per job); `--quick` about 2 minutes. Starts its own servers on
loopback, on free ports, for the run: redis-server (no persistence), beanstalkd (restarted for
every measurement) and a PostgreSQL 15 cluster made with initdb in a temp dir (or, with
`--postgres URL`, fresh schemas in that database); servers run on CPU 0 (taskset), this
process and every worker on CPU 1, when there are two CPUs. Stops them all at the end, on an
error or on Ctrl-C.

Systems (columns): Geyser on the embedded default (g:embedded) and on beanstalkd with the
SQLite, PostgreSQL and Redis stores (g:sqlite, g:postgres, g:redis); the plain-Python seed
design on the same servers (py:sqlite, py:postgres, py:redis: the producer saves a JSON
document and puts its uuid on beanstalkd with greenstalk; the worker reserves, loads the
document, runs the job, saves the finished document, deletes: `plain_stores.py`,
`plain_drain.serve`); Huey, Dramatiq, RQ and Celery on Redis, each with its defaults and one
job at a time per process (huey -k process, dramatiq -t 1, celery prefork, rq's forking worker).

Every system runs the same job, `compare_jobs.record`: one Redis RPUSH (to a db no system
uses) of the time it was enqueued and the time it ran. Figures (rows):
- enqueue, single: jobs/s enqueued one call each from one thread (the drains' enqueues);
- enqueue, bulk: the system's bulk call (`geyser.jobs.enqueue_many` when Geyser has one,
  rq `enqueue_many`, celery `group`), n/a where there is none (Huey, Dramatiq, the seed);
- drain, 1 / 2 processes: N jobs enqueued first, then the workers started; done when N runs
  are recorded (polled every 10 ms, with a deadline), rated from the run of the N/10th job to
  the last, so start-up (its own row) and workers starting at different times do not count;
- latency p50 / p95 / p99: one idle worker, jobs enqueued at `--rate` per second, enqueue
  call to job start (both the bench's clock and the job's, one machine);
- idle RSS / PSS: all processes of that worker, summed, after its first job and 2 s idle
  (RSS counts pages shared by forked processes once per process; PSS splits them);
- start-up: worker command started to its first job running (one job waiting).
`--only bulk,drain,worker` measures some groups of rows: bulk (enqueue, bulk), drain (enqueue,
single and both drains) and worker (latency, idle memory and start-up, one worker's run).
Every figure is the median of `--rounds` rounds (systems run in turn each round); a `*`
marks one whose rounds spread more than 25% of the median: the machine is shared and noisy.
The second table gives each Geyser backend's figure divided by the best peer's and by the
seed design's on the same store. Writes a bar chart of the figures to `--out` (matplotlib).
Touches only its temp dirs, its servers and the processes it starts (and, with
`--postgres`, schemas named geyser_compare_* in that database).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from common import HERE, Beanstalkd, free_port, pinned, print_table, use_backends, wait_for_port
from idle import tree

import geyser

SERVER_CPUS, CLIENT_CPUS = ("0", {1}) if (os.cpu_count() or 1) >= 2 else (None, None)
PG_BIN = Path("/usr/lib/postgresql/15/bin")
RECORD_DB, BROKER_DB, STORE_DB = 1, 0, 2
TUBE = "record"
GEYSER = ["g:embedded", "g:sqlite", "g:postgres", "g:redis"]
PLAIN = ["py:sqlite", "py:postgres", "py:redis"]
PEERS = ["huey", "dramatiq", "rq", "celery"]
STORE_OF = {"g:sqlite": "py:sqlite", "g:postgres": "py:postgres", "g:redis": "py:redis"}
FIGURES = [  # (row, higher is better)
    ("enqueue, single (jobs/s)", True),
    ("enqueue, bulk (jobs/s)", True),
    ("drain, 1 process (jobs/s)", True),
    ("drain, 2 processes (jobs/s)", True),
    ("latency p50 (ms)", False),
    ("latency p95 (ms)", False),
    ("latency p99 (ms)", False),
    ("idle RSS, all processes (MB)", False),
    ("idle PSS, all processes (MB)", False),
    ("start-up to first job (s)", False),
]
GROUPS = {  # --only: the rows each measurement gives
    "bulk": ["enqueue, bulk (jobs/s)"],
    "drain": ["enqueue, single (jobs/s)", "drain, 1 process (jobs/s)", "drain, 2 processes (jobs/s)"],
    "worker": [f for f, _ in FIGURES if f.startswith(("latency", "idle", "start-up"))],
}
IDLE_SETTLE = 2.0
NOISY = 0.25


class BenchError(Exception):
    """A measurement that could not be made (a worker died, jobs did not run in time)."""


class NotAvailable(Exception):
    """The system has no such operation (bulk enqueue)."""


def pin_this_process(cpus: set[int] | None) -> None:
    """Every thread of this process (and so every process it starts later) on `cpus`."""
    if cpus is None:
        return
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), cpus)


class Server:
    """A process started for the run; `stop()` ends it with `sig`, then kills it after 10 s."""

    def __init__(self, cmd: list[str], port: int, what: str, log: Path, user: str | None = None,
                 sig: int = signal.SIGTERM) -> None:
        self.port, self.sig, self.log = port, sig, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(pinned(cmd, SERVER_CPUS), stdout=out, stderr=subprocess.STDOUT, user=user,
                                         start_new_session=True)
        wait_for_port(port, what, within=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_redis(tmp: Path) -> Server:
    port = free_port()
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not installed: apt-get install -y redis-server")
    return Server([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(tmp)], port, "redis-server", tmp / "redis.log")


def start_postgres(tmp: Path) -> Server:
    """A fresh cluster in `tmp`/pg (as the postgres user when run as root: initdb refuses root)."""
    user = "postgres" if os.geteuid() == 0 else None
    data = tmp / "pg"
    data.mkdir()
    if user:
        shutil.chown(tmp, user)
        shutil.chown(data, user)
    subprocess.run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
                    "-E", "UTF8"], user=user, check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    return Server([str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data),
                   "-c", "listen_addresses=127.0.0.1"], port, "postgres", tmp / "postgres.log", user=user,
                  sig=signal.SIGINT)


class Env:
    """The servers of the run, and the fresh namespace of one measurement (`fresh()`)."""

    def __init__(self, stack: ExitStack, postgres: str | None) -> None:
        self.tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="geyser-compare-")))
        self.redis = start_redis(self.tmp)
        stack.callback(self.redis.stop)
        if postgres is None:
            pg_tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="geyser-compare-pg-")))
            pg = start_postgres(pg_tmp)
            stack.callback(pg.stop)
            postgres = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        self.postgres = postgres
        self.beanstalkd: Beanstalkd | None = None
        stack.callback(self._stop_beanstalkd)
        self.names = itertools.count()
        self.name = ""
        redis_base = f"redis://127.0.0.1:{self.redis.port}"
        self.record_url, self.broker_url, self.store_url = (f"{redis_base}/{db}" for db in
                                                           (RECORD_DB, BROKER_DB, STORE_DB))
        os.environ.update(BENCH_RECORD_URL=self.record_url, BENCH_RECORD_KEY="runs", BENCH_BROKER_URL=self.broker_url)
        import redis

        self.r = redis.Redis.from_url(self.record_url)

    def _stop_beanstalkd(self) -> None:
        if self.beanstalkd is not None:
            self.beanstalkd.stop()
            self.beanstalkd = None

    def fresh(self) -> None:
        """Empty Redis, a new beanstalkd, and a new schema / file name for the stores."""
        self._stop_beanstalkd()
        self.r.flushall()
        self.beanstalkd = Beanstalkd(SERVER_CPUS)
        self.name = f"geyser_compare_{os.getpid()}_{next(self.names)}"

    def drop_schema(self) -> None:
        import psycopg

        with psycopg.connect(self.postgres, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')

    @property
    def port(self) -> int:
        assert self.beanstalkd is not None
        return self.beanstalkd.port

    @property
    def worker_env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))

    def records(self, n: int, within: float, workers: Workers) -> list[tuple[float, float]]:
        """(sent, ran) of the first `n` recorded runs, once there are `n`; BenchError after `within` s."""
        deadline = time.monotonic() + within
        while (count := self.r.llen("runs")) < n:
            if time.monotonic() > deadline:
                raise BenchError(f"{count} of {n} jobs ran within {within:.0f} s")
            workers.check()
            time.sleep(0.01)
        return [tuple(map(float, raw.split())) for raw in self.r.lrange("runs", 0, n - 1)]  # type: ignore[misc]


class Workers:
    """Worker processes, each in a session of its own; `stop()` ends each whole group."""

    def __init__(self, cmds: list[list[str]], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.procs = [subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True) for cmd in cmds]

    def check(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise BenchError(f"worker {p.args} exited with {p.returncode}:\n{tail}")

    def memory_mb(self) -> tuple[float, float]:
        """Summed RSS and PSS of every process of the workers, in MB."""
        rss = pss = 0
        for p in self.procs:
            for pid in tree(p.pid):
                try:
                    rss += kb_field(Path(f"/proc/{pid}/status").read_text(), "VmRSS:")
                    pss += kb_field(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss:")
                except OSError:
                    continue
        return rss / 1024, pss / 1024

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # what is left of its group (forked children)
            except ProcessLookupError:
                pass
            p.wait()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kb_field(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    return 0


class System:
    """One column: how to enqueue the record job and how to start P worker processes."""

    name = ""

    def setup(self, env: Env) -> None:
        """Point at `env`'s fresh namespace (called after `env.fresh()`)."""

    def enqueue(self, sent: float) -> None:
        raise NotImplementedError

    def enqueue_bulk(self, sents: list[float]) -> None:
        raise NotAvailable

    def workers(self, env: Env, processes: int) -> list[list[str]]:
        raise NotImplementedError

    def teardown(self, env: Env) -> None:
        """Let go of the namespace."""


def script(name: str) -> str:
    """A console script installed beside this Python."""
    return str(Path(sys.executable).parent / name)


class GeyserSystem(System):
    def __init__(self, name: str) -> None:
        self.name = name
        self.backend = name.split(":")[1]

    def setup(self, env: Env) -> None:
        from compare_jobs.geyser_job import RecordJob

        self.job = RecordJob
        store = {"embedded": f"sqlite://{env.tmp}/{env.name}.db", "sqlite": f"sqlite://{env.tmp}/{env.name}.db",
                 "postgres": f"{env.postgres}?schema={env.name}",
                 "redis": f"{env.store_url}?prefix=geyser:"}[self.backend]
        queue = store if self.backend == "embedded" else f"beanstalkd://127.0.0.1:{env.port}"
        use_backends(queue, store)

    def enqueue(self, sent: float) -> None:
        self.job(sent=sent).enqueue()

    def enqueue_bulk(self, sents: list[float]) -> None:
        enqueue_many = getattr(geyser.jobs, "enqueue_many", None)
        if enqueue_many is None:
            raise NotAvailable
        enqueue_many([self.job(sent=s) for s in sents])

    def workers(self, env: Env, processes: int) -> list[list[str]]:
        return [[sys.executable, "-m", "geyser.worker", "-m", "compare_jobs.geyser_job", "-c", str(processes),
                 "--log-level", "WARNING"]]

    def teardown(self, env: Env) -> None:
        geyser.flush(60)  # the relay's last puts land in this namespace, not the next one's
        geyser.configure()  # let go of the store before its schema goes
        if self.backend == "postgres":
            env.drop_schema()


class PlainSystem(System):
    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = name.split(":")[1]

    def where(self, env: Env) -> tuple[str, str]:
        return {"sqlite": (f"{env.tmp}/{env.name}.db", env.name), "postgres": (env.postgres, env.name),
                "redis": (env.store_url, "plain:")}[self.kind]

    def setup(self, env: Env) -> None:
        import greenstalk

        from compare_jobs.geyser_job import RecordJob
        from plain_stores import open_plain

        self.store = open_plain(self.kind, *self.where(env))
        self.queue = greenstalk.Client(("127.0.0.1", env.port), use=TUBE)
        self.template = json.loads(RecordJob(sent=0.0)._prepare_enqueue(None, None))

    def enqueue(self, sent: float) -> None:
        """The seed design's enqueue: save the document, put its uuid (no queue id noted after)."""
        now = time.time()
        doc = {**self.template, "uuid": str(uuid.uuid4()), "sent": sent, "createdAt": now, "updatedAt": now,
               "version": 1}
        self.store.create(doc)
        self.queue.put(doc["uuid"].encode())

    def workers(self, env: Env, processes: int) -> list[list[str]]:
        return [[sys.executable, "-m", "compare_jobs.plain_worker", self.kind, *self.where(env), str(env.port), TUBE]
                for _ in range(processes)]

    def teardown(self, env: Env) -> None:
        self.queue.close()
        self.store.drop()


class HueySystem(System):
    name = "huey"

    def setup(self, env: Env) -> None:
        from compare_jobs.huey_app import record_task

        self.task = record_task

    def enqueue(self, sent: float) -> None:
        self.task(sent)

    def workers(self, env: Env, processes: int) -> list[list[str]]:
        return [[script("huey_consumer"), "compare_jobs.huey_app.huey", "-k", "process", "-w", str(processes), "-q"]]


class DramatiqSystem(System):
    name = "dramatiq"

    def setup(self, env: Env) -> None:
        from compare_jobs.dramatiq_app import record_actor

        self.actor = record_actor

    def enqueue(self, sent: float) -> None:
        self.actor.send(sent)

    def workers(self, env: Env, processes: int) -> list[list[str]]:
        return [[script("dramatiq"), "compare_jobs.dramatiq_app", "-p", str(processes), "-t", "1"]]


class RqSystem(System):
    name = "rq"

    def setup(self, env: Env) -> None:
        import redis
        from rq import Queue

        from compare_jobs import record

        self.record = record
        self.queue = Queue("bench", connection=redis.Redis.from_url(env.broker_url))

    def enqueue(self, sent: float) -> None:
        self.queue.enqueue(self.record, sent)

    def enqueue_bulk(self, sents: list[float]) -> None:
        from rq import Queue

        self.queue.enqueue_many([Queue.prepare_data(self.record, (s,)) for s in sents])

    def workers(self, env: Env, processes: int) -> list[list[str]]:
        return [[script("rq"), "worker", "-u", env.broker_url, "-q", "bench"] for _ in range(processes)]

    def teardown(self, env: Env) -> None:
        self.queue.connection.close()


class CelerySystem(System):
    name = "celery"

    def setup(self, env: Env) -> None:
        from compare_jobs.celery_app import record_task

        self.task = record_task

    def enqueue(self, sent: float) -> None:
        self.task.delay(sent)

    def enqueue_bulk(self, sents: list[float]) -> None:
        from celery import group

        group(self.task.s(s) for s in sents).apply_async()

    def workers(self, env: Env, processes: int) -> list[list[str]]:
        return [[script("celery"), "-A", "compare_jobs.celery_app", "worker", "-P", "prefork", "-c", str(processes),
                 "--loglevel", "WARNING"]]


SYSTEMS: dict[str, Callable[[], System]] = {
    **{n: (lambda n=n: GeyserSystem(n)) for n in GEYSER},
    **{n: (lambda n=n: PlainSystem(n)) for n in PLAIN},
    "huey": HueySystem, "dramatiq": DramatiqSystem, "rq": RqSystem, "celery": CelerySystem,
}
NEEDS = {"huey": "huey", "dramatiq": "dramatiq", "rq": "rq", "celery": "celery", "py:postgres": "psycopg",
         "g:postgres": "psycopg", "py:redis": "redis", "py:sqlite": "greenstalk"}


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))]


class Measure:
    """One round of every figure for one system, each in a fresh namespace."""

    def __init__(self, env: Env, system: System, args: argparse.Namespace) -> None:
        self.env, self.system, self.args = env, system, args
        self.log = env.tmp / f"{system.name.replace(':', '_')}.log"

    def namespace(self) -> ExitStack:
        self.env.fresh()
        self.system.setup(self.env)
        stack = ExitStack()
        stack.callback(self.system.teardown, self.env)
        return stack

    def workers(self, processes: int) -> Workers:
        return Workers(self.system.workers(self.env, processes), self.env.worker_env, self.log)

    def bulk(self) -> float:
        n = self.args.jobs
        with self.namespace():
            sents = [time.time()] * n
            start = time.perf_counter()
            self.system.enqueue_bulk(sents)
            return n / (time.perf_counter() - start)

    def drain(self, processes: int) -> tuple[float, float]:
        """(enqueue rate, drain rate) of N jobs."""
        n = self.args.jobs
        with self.namespace():
            start = time.perf_counter()
            for _ in range(n):
                self.system.enqueue(time.time())
            enqueue = n / (time.perf_counter() - start)
            with self.workers(processes) as w:
                runs = sorted(ran for _, ran in self.env.records(n, 60 + n / 20, w))
            k = n // 10
            return enqueue, (n - 1 - k) / max(runs[-1] - runs[k], 1e-9)

    def idle_worker(self) -> dict[str, float]:
        """Start-up, idle memory and latency of one worker."""
        out: dict[str, float] = {}
        with self.namespace():
            self.system.enqueue(time.time())
            started = time.time()
            with self.workers(1) as w:
                (_, ran), = self.env.records(1, 120, w)
                out["start-up to first job (s)"] = ran - started
                time.sleep(IDLE_SETTLE)
                w.check()
                out["idle RSS, all processes (MB)"], out["idle PSS, all processes (MB)"] = w.memory_mb()
                m, rate = self.args.latency_jobs, self.args.rate
                t0 = time.monotonic()
                for i in range(m):
                    time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                    self.system.enqueue(time.time())
                lat = sorted((ran - sent) * 1000 for sent, ran in self.env.records(m + 1, 60 + m / 20, w)[1:])
        for q, row in ((0.50, "latency p50 (ms)"), (0.95, "latency p95 (ms)"), (0.99, "latency p99 (ms)")):
            out[row] = pct(lat, q)
        return out

    def round(self) -> dict[str, float | str]:
        """Every figure: a number, "n/a", or "err" (the error printed to stderr)."""
        out: dict[str, float | str] = {}

        def attempt(rows: list[str], run: Callable[[], object]) -> None:
            try:
                got = run()
            except NotAvailable:
                out.update({r: "n/a" for r in rows})
                return
            except Exception as e:  # one figure of one system lost, not the run: said on stderr
                print(f"{self.system.name}: {', '.join(rows)}: {type(e).__name__}: {e}", file=sys.stderr)
                out.update({r: "err" for r in rows})
                return
            if isinstance(got, dict):
                out.update(got)
            elif isinstance(got, tuple):
                out.update(zip(rows, got))
            else:
                out[rows[0]] = got  # type: ignore[assignment]

        if "bulk" in self.args.only:
            attempt(GROUPS["bulk"], self.bulk)
        if "drain" in self.args.only:
            attempt(["enqueue, single (jobs/s)", "drain, 1 process (jobs/s)"], lambda: self.drain(1))
            single = out.get("enqueue, single (jobs/s)")
            attempt(["enqueue, single (jobs/s)", "drain, 2 processes (jobs/s)"], lambda: self.drain(2))
            if isinstance(single, float) and isinstance(out["enqueue, single (jobs/s)"], float):
                out["enqueue, single (jobs/s)"] = (single + out["enqueue, single (jobs/s)"]) / 2  # type: ignore[operator]
        if "worker" in self.args.only:
            attempt(GROUPS["worker"], self.idle_worker)
        return out


def summarise(samples: list[float | str]) -> tuple[float | str, bool]:
    """(median, noisy) of one figure's rounds; "err"/"n/a" when a round has no number."""
    nums = [s for s in samples if isinstance(s, float)]
    if len(nums) < len(samples):
        return ("err" if "err" in samples else "n/a"), False
    med = statistics.median(nums)
    return med, len(nums) > 1 and med > 0 and (max(nums) - min(nums)) / med > NOISY


def cell(value: float | str, noisy: bool = False) -> str:
    if isinstance(value, str):
        return value
    text = f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return text + ("*" if noisy else " ")


def ratio_columns(names: list[str]) -> list[tuple[str, str, list[str]]]:
    """(header, geyser column, baseline columns) of the second table."""
    cols = []
    peers = [p for p in PEERS if p in names]
    for g in (n for n in GEYSER if n in names):
        short = g.split(":")[1]
        if peers:
            cols.append((f"{short}/peer", g, peers))
        if STORE_OF.get(g) in names:
            cols.append((f"{short}/py", g, [STORE_OF[g]]))
    return cols


def ratio(medians: dict[str, dict[str, float | str]], figure: str, higher: bool, g: str, base: list[str]) -> str:
    ours = medians[g][figure]
    theirs = [v for b in base if isinstance(v := medians[b][figure], float)]
    if not isinstance(ours, float) or not theirs:
        return "n/a"
    best = max(theirs) if higher else min(theirs)
    return f"{ours / best:.2f}" if best > 0 else "n/a"


def chart(medians: dict[str, dict[str, float | str]], names: list[str], figures: list[tuple[str, bool]], title: str,
          out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {**{n: "tab:blue" for n in GEYSER}, **{n: "tab:gray" for n in PLAIN},
              **{n: "tab:orange" for n in PEERS}}
    fig, axes = plt.subplots(2, 5, figsize=(22, 9))
    for ax in axes.flat[len(figures):]:
        ax.set_visible(False)
    for ax, (figure, higher) in zip(axes.flat, figures):
        vals = [medians[n][figure] for n in names]
        nums = [v if isinstance(v, float) else float("nan") for v in vals]
        bars = ax.bar(range(len(names)), nums, color=[colors[n] for n in names])
        if figure.startswith("latency"):
            ax.set_yscale("log")  # from below a millisecond to about a second
        for bar, v in zip(bars, vals):
            if not isinstance(v, float):
                ax.annotate(v, (bar.get_x() + bar.get_width() / 2, 0.02), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=7)
        log = ", log scale" if figure.startswith("latency") else ""
        ax.set_title(f"{figure}, {'higher' if higher else 'lower'} is better{log}", fontsize=9)
        ax.set_xticks(range(len(names)), names, rotation=60, fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: 200 jobs, 50 latency jobs, 1 round")
    p.add_argument("--jobs", type=int, default=None, help="jobs per drain and per enqueue (default 2000)")
    p.add_argument("--latency-jobs", type=int, default=None, help="jobs in the latency run (default 300)")
    p.add_argument("--rate", type=float, default=100.0, help="jobs per second in the latency run")
    p.add_argument("--rounds", type=int, default=None, help="rounds, the median is shown (default 3)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"columns, of: {','.join(SYSTEMS)}")
    p.add_argument("--only", default=",".join(GROUPS),
                   help=f"groups of rows to measure, of: {','.join(GROUPS)} (default all)")
    p.add_argument("--postgres", default=None, metavar="URL",
                   help="use schemas in this database instead of a private cluster")
    p.add_argument("--out", default=str(HERE / "compare.png"), help="the chart (PNG); '' for none")
    args = p.parse_args()
    args.jobs = args.jobs or (200 if args.quick else 2000)
    args.latency_jobs = args.latency_jobs or (50 if args.quick else 300)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.only = [g.strip() for g in args.only.split(",") if g.strip()]
    if not args.only or any(g not in GROUPS for g in args.only):
        p.error(f"--only: expected some of {','.join(GROUPS)}, got {','.join(args.only) or 'none'}")
    figures = [(f, higher) for f, higher in FIGURES if any(f in GROUPS[g] for g in args.only)]
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        p.error(f"--systems: unknown {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    missing = []
    for n in names:
        try:
            __import__(NEEDS.get(n, "redis"))
        except ImportError:
            missing.append(n)
    if missing:
        print(f"skipped (pip install -e '.[bench]'): {', '.join(missing)}", file=sys.stderr)
        names = [n for n in names if n not in missing]
    systems = [SYSTEMS[n]() for n in names]

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    pin_this_process(CLIENT_CPUS)
    load_before = os.getloadavg()[0]
    samples: dict[str, dict[str, list[float | str]]] = {n: {f: [] for f, _ in FIGURES} for n in names}
    started = time.monotonic()
    with ExitStack() as stack:
        env = Env(stack, args.postgres)
        if args.postgres is not None:
            print(f"PostgreSQL: schemas in {args.postgres}", file=sys.stderr)
        for r in range(args.rounds):
            for system in systems:
                t = time.monotonic()
                got = Measure(env, system, args).round()
                for f, _ in figures:
                    samples[system.name][f].append(got.get(f, "err"))
                print(f"round {r + 1}/{args.rounds}: {system.name} in {time.monotonic() - t:.0f} s", file=sys.stderr)
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()[0]

    medians: dict[str, dict[str, float | str]] = {n: {} for n in names}
    noisy: dict[str, dict[str, bool]] = {n: {} for n in names}
    for n in names:
        for f, _ in figures:
            medians[n][f], noisy[n][f] = summarise(samples[n][f])
    pin = "servers on CPU 0, clients on CPU 1" if SERVER_CPUS else "not pinned (one CPU)"
    title = (f"{'quick smoke run, ' if args.quick else ''}{args.jobs} jobs per drain, latency {args.latency_jobs} "
             f"jobs at {args.rate:g}/s, median of {args.rounds} round(s), {pin}, "
             f"load average {load_before:.1f} before / {load_after:.1f} after, {elapsed:.0f} s")
    print(title)
    print_table(("figure", *names), [(f, *(cell(medians[n][f], noisy[n][f]) for n in names)) for f, _ in figures],
                label=30, width=12)
    cols = ratio_columns(names)
    if cols:
        print("\nGeyser / baseline (peer: the best of Huey, Dramatiq, RQ, Celery; py: the seed design on the same"
              " store). Above 1 is better for rates, worse for latency, memory and start-up.")
        print_table(("figure", *(h for h, _, _ in cols)),
                    [(f, *(ratio(medians, f, higher, g, base) for _, g, base in cols)) for f, higher in figures],
                    label=30, width=14)
    if any(noisy[n][f] for n in names for f, _ in figures):
        print(f"* rounds spread more than {NOISY:.0%} of the median: noisy (the machine is shared).")
    if args.out:
        chart(medians, names, figures, title, Path(args.out))
        print(f"chart: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
