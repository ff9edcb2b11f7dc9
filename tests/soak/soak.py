"""The fault soak: N jobs of mixed kinds (tests/soak/soak_jobs.py) run by a real supervisor
(``python -m geyser.worker -c 3``; ``-c 32`` in full mode) while a chaos loop kills (-9) worker processes, stops one
(SIGSTOP) past its TTR and lets it go on, restarts beanstalkd (binlog kept) and the store
server, and restarts the supervisor. Then one maintenance sweep, and every job is checked:
the state it should end in, exactly one success saved (``won_by == [attempts]``), the
ledger's runs against the document's attempts and errors, nothing left queued or running.

    python tests/soak/soak.py --quick                      # CI: ~2,000 jobs per backend pair
    python tests/soak/soak.py --backend beanstalkd+redis   # full: 100,000 jobs, 1-5 s progress jobs
    python tests/soak/soak.py --quick --backend all        # every pair, one after the other

Prints a table per backend pair and exits 1 when a job was lost, had two successes saved,
ended in the wrong state or disagrees with the ledger. The queue and store servers are its
own (tests/soak/servers.py: beanstalkd with a binlog, a private PostgreSQL cluster, a Redis
server with appendonly), on free loopback ports; the machine's shared servers are never
touched. Touches only a temp folder (kept, and named, when the soak fails) and the
processes it starts, each stopped by PID."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import geyser  # noqa: E402
from geyser.config import client  # noqa: E402
import soak_jobs  # noqa: E402
from servers import STORE_SERVERS, Beanstalkd, Server  # noqa: E402

BACKENDS = ["embedded", "beanstalkd+sqlite", "beanstalkd+postgresql", "beanstalkd+redis"]
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Mode:
    """How big and how long one soak is."""

    jobs: int
    #: Range of a progress job's run time, seconds.
    progress_seconds: tuple[float, float]
    #: The reservation's TTR, seconds (whole: beanstalkd counts whole seconds).
    ttr: int
    #: Seconds between two faults.
    chaos_gap: tuple[float, float]
    #: Seconds a store or queue server stays down.
    down: tuple[float, float]
    #: Seconds the chaos may last at most (it ends earlier when the jobs are done).
    chaos_limit: float
    #: Seconds the jobs get to finish after the chaos, before and after the sweep.
    settle: float
    #: The supervisor's worker processes (``-c``).
    workers: int


QUICK = Mode(jobs=2000, progress_seconds=(0.05, 0.3), ttr=3, chaos_gap=(0.5, 2.0), down=(0.3, 1.5),
             chaos_limit=150, settle=60, workers=3)
#: 100,000 jobs, a fifth of them 1-5 s progress jobs: 60,000 job-seconds of sleeping, which
#: 3 processes would need 5.5 hours for; 32 processes (they mostly wait) take under one.
FULL = Mode(jobs=100_000, progress_seconds=(1.0, 5.0), ttr=5, chaos_gap=(2.0, 8.0), down=(0.5, 5.0),
            chaos_limit=3 * 3600, settle=120, workers=32)

#: Share of each kind among the jobs.
MIX = {"instant": 0.5, "progress": 0.2, "flaky": 0.15, "doomed": 0.1, "exits": 0.05}
FAULTS = ("kill", "stop", "queue_restart", "store_restart", "supervisor_restart")


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Ledger:
    """The jobs' ledger file, read as it grows: who runs what now, and every run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""
        #: pid -> (uuid, attempt) of the run it is in, or None between runs.
        self.current: dict[int, tuple[str, int] | None] = {}
        self.starts: dict[str, list[tuple[int, float, int]]] = defaultdict(list)
        self.oks: dict[str, list[int]] = defaultdict(list)

    def read(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            event, uuid, attempt, at, pid, _group = line.decode().split()
            a, p = int(attempt), int(pid)
            if event == "start":
                self.starts[uuid].append((a, float(at), p))
                self.current[p] = (uuid, a)
            else:
                if event == "ok":
                    self.oks[uuid].append(a)
                self.current[p] = None


@dataclass
class Fault:
    kind: str
    at: float
    #: The job the stopped or killed process was running, if any.
    job: str | None = None


@dataclass
class Soak:
    backend: str
    mode: Mode
    seed: int
    folder: Path
    queue_server: Beanstalkd | None = None
    store_server: Server | None = None
    supervisor: subprocess.Popen[bytes] | None = None
    faults: list[Fault] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)  # uuid -> kind
    env: dict[str, str] = field(default_factory=dict)
    #: Why the supervisor stopped by itself, each time it did.
    gave_up: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.ledger = Ledger(self.folder / "ledger")
        self.worker_log = (self.folder / "worker.log").open("ab")

    # -- servers and urls ----------------------------------------------------------

    def start_servers(self) -> None:
        queue, _, store = self.backend.partition("+")
        db = f"sqlite://{self.folder / 'geyser.db'}"
        queue_url = store_url = db
        if queue == "beanstalkd":
            self.queue_server = Beanstalkd(self.folder)
            self.queue_server.start()
            queue_url = self.queue_server.url
        if store in STORE_SERVERS:
            self.store_server = STORE_SERVERS[store](self.folder)
            self.store_server.start()
            store_url = self.store_server.url  # type: ignore[attr-defined]
        elif store not in ("", "sqlite"):
            raise SystemExit(f"unknown backend {self.backend!r}; expected one of {BACKENDS}")
        self.env = {**os.environ, "GEYSER_QUEUE_URL": queue_url, "GEYSER_STORE_URL": store_url,
                    "SOAK_LEDGER": str(self.ledger.path),
                    "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        geyser.configure(queue_url, store_url)

    def stop_servers(self) -> None:
        for server in (self.queue_server, self.store_server):
            if server is not None:
                server.stop()

    # -- jobs ------------------------------------------------------------------------

    def enqueue(self) -> float:
        """Enqueue the jobs (kinds and parameters drawn from the seed); returns the seconds it took."""
        started = time.monotonic()
        kinds = list(MIX)
        for _ in range(self.mode.jobs):
            kind = self.rng.choices(kinds, weights=[MIX[k] for k in kinds])[0]
            kw: dict[str, Any] = {}
            if kind == "progress":
                kw["seconds"] = round(self.rng.uniform(*self.mode.progress_seconds), 3)
            elif kind == "flaky":
                kw["fail_times"] = self.rng.randint(1, 2)
            uuid = soak_jobs.KINDS[kind](**kw).enqueue(ttr=self.mode.ttr)
            self.jobs[uuid] = kind
        return time.monotonic() - started

    def remaining(self) -> int | None:
        """Entries waiting or reserved on the soak's queues (None when the queue cannot be asked)."""
        try:
            b = client().backlog([cls.QUEUE_NAME for cls in soak_jobs.KINDS.values()])
        except geyser.GeyserError:
            return None
        return int(b["waiting"] + b["reserved"])

    # -- the supervisor ----------------------------------------------------------------

    def start_supervisor(self) -> None:
        cmd = [sys.executable, "-m", "geyser.worker", "-c", str(self.mode.workers), "-m", "soak_jobs",
               "--grace", "3", "--stop-grace", "3", "--log-level", "INFO"]
        self.supervisor = subprocess.Popen(cmd, env=self.env, cwd=self.folder, stdout=self.worker_log,
                                           stderr=subprocess.STDOUT, start_new_session=True)

    def stop_supervisor(self, timeout: float = 30.0) -> None:
        """SIGTERM, then a second SIGTERM after ``timeout``; kill what is left by PID."""
        sup = self.supervisor
        if sup is None or sup.poll() is not None:
            return
        children = self.children()
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"supervisor {sup.pid} still running {timeout:g} s after SIGTERM; a second SIGTERM")
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(15)
            except subprocess.TimeoutExpired:
                sup.kill()
                sup.wait(10)
        for pid in children:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def children(self) -> list[int]:
        """The supervisor's worker processes, found by their parent PID."""
        if self.supervisor is None:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.supervisor.pid:
                found.append(int(entry))
        return found

    def busy_child(self) -> tuple[int, str | None] | None:
        """A worker process, preferably one in the middle of a job, and that job."""
        self.ledger.read()
        kids = self.children()
        if not kids:
            return None
        busy = [(pid, run[0]) for pid in kids if (run := self.ledger.current.get(pid))]
        if busy:
            return self.rng.choice(busy)
        return self.rng.choice(kids), None

    # -- chaos -----------------------------------------------------------------------------

    def available_faults(self) -> list[str]:
        faults = ["kill", "stop", "supervisor_restart"]
        if self.queue_server is not None:
            faults.append("queue_restart")
        if self.store_server is not None:
            faults.append("store_restart")
        return faults

    def fault(self, kind: str) -> None:
        now = time.time()
        if kind in ("kill", "stop"):
            target = self.busy_child()
            if target is None:
                return
            pid, job = target
            if kind == "kill":
                os.kill(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGSTOP)
                try:
                    time.sleep(self.mode.ttr + 2)
                finally:
                    os.kill(pid, signal.SIGCONT)
            self.faults.append(Fault(kind, now, job))
        elif kind in ("queue_restart", "store_restart"):
            server = self.queue_server if kind == "queue_restart" else self.store_server
            assert server is not None
            server.crash()
            time.sleep(self.rng.uniform(*self.mode.down))
            server.start()
            self.faults.append(Fault(kind, now))
        elif kind == "supervisor_restart":
            self.stop_supervisor()
            self.start_supervisor()
            self.faults.append(Fault(kind, now))

    def chaos(self) -> None:
        """Faults at random until the queues are drained or the chaos time is up."""
        deadline = time.monotonic() + self.mode.chaos_limit
        faults = self.available_faults()
        last_report = 0.0
        while time.monotonic() < deadline:
            time.sleep(self.rng.uniform(*self.mode.chaos_gap))
            left = self.remaining()
            if left == 0:
                return
            if time.monotonic() - last_report > 10:
                log(f"{left} entries left; {len(self.faults)} faults so far")
                last_report = time.monotonic()
            self.restart_stopped_supervisor()
            self.fault(self.rng.choice(faults))
        log(f"chaos stopped at its time limit ({self.mode.chaos_limit:g} s) with jobs left")

    def restart_stopped_supervisor(self) -> None:
        """A supervisor that stopped by itself is noted (with the reason it logged) and
        started again, as a service manager would. A server that is down as a worker starts
        no longer stops it; a store restarted in the middle of a worker's schema check still
        can (that is a configuration error, exit 78), so it is reported, not failed."""
        if self.supervisor is None or self.supervisor.poll() is None:
            return
        errors = [line for line in (self.folder / "worker.log").read_text(errors="replace").splitlines()
                  if " ERROR geyser.supervisor" in line]
        self.gave_up.append(f"exit {self.supervisor.returncode}: {errors[-1] if errors else 'no ERROR line'}")
        log(f"the supervisor stopped by itself ({self.gave_up[-1]}); starting it again")
        self.start_supervisor()

    def settle(self, timeout: float) -> bool:
        """Wait (bounded) until the queues hold nothing ready, delayed or reserved."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.restart_stopped_supervisor()
            if self.remaining() == 0:
                return True
            time.sleep(0.5)
        return False

    def sweep(self) -> str:
        """One ``python -m geyser.maintenance`` (``--min-age 0``: nothing is mid-enqueue now;
        ``--force``: a supervisor killed earlier may still hold the lease); its output."""
        done = subprocess.run([sys.executable, "-m", "geyser.maintenance", "--min-age", "0", "--force"],
                              env=self.env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"the maintenance sweep failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done.stdout.strip()

    # -- the verdict -------------------------------------------------------------------------

    def check(self) -> dict[str, Any]:
        """Every job against what it should be; the counts of the table and the problems."""
        self.ledger.read()
        problems: list[str] = []
        counts: Counter[str] = Counter()
        for uuid, kind in self.jobs.items():
            raw = read(uuid)
            if raw is None:
                counts["lost"] += 1
                problems.append(f"{uuid} ({kind}): the document is gone")
                continue
            doc = soak_jobs.KINDS[kind].from_document(json.loads(raw))
            expected = soak_jobs.KINDS[kind].EXPECTED
            status, attempts = doc.status, int(doc.attempts)
            oks = self.ledger.oks.get(uuid, [])
            started = {a for a, _, _ in self.ledger.starts.get(uuid, [])}
            if status not in TERMINAL:
                counts["lost"] += 1
                problems.append(f"{uuid} ({kind}): left {status} (attempt {attempts}, queue id "
                                f"{getattr(doc, 'queueJobId', None)}) after the sweep")
                continue
            if status != expected:
                counts["wrong_state"] += 1
                last = doc.errors[-1]["msg"] if doc.errors else ""
                problems.append(f"{uuid} ({kind}): {status}, expected {expected}; last error: {last}")
            won_by = list(getattr(doc, "won_by", []))
            if status == "succeeded":
                if len(won_by) > 1 or won_by != [attempts]:
                    counts["double_success"] += 1
                    problems.append(f"{uuid} ({kind}): successes saved by attempts {won_by}; the document "
                                    f"says attempt {attempts}")
                if attempts not in oks:
                    counts["inconsistent"] += 1
                    problems.append(f"{uuid} ({kind}): succeeded at attempt {attempts} but no run of that "
                                    f"attempt returned success (ledger: {sorted(oks)})")
                if doc.completeness != 1:
                    counts["inconsistent"] += 1
                    problems.append(f"{uuid} ({kind}): succeeded with completeness {doc.completeness}")
            elif kind == "doomed" and len(doc.errors) < soak_jobs.DOOMED_RETRIES + 1:
                counts["inconsistent"] += 1
                problems.append(f"{uuid} ({kind}): failed after {len(doc.errors)} errors")
            if started and (max(started) > attempts or min(started) < 1):
                counts["inconsistent"] += 1
                problems.append(f"{uuid} ({kind}): runs of attempts {sorted(started)} but attempts is {attempts}")
            bad = [e.get("attempt") for e in doc.errors if not 1 <= int(e.get("attempt") or 0) <= attempts]
            if bad:
                counts["inconsistent"] += 1
                problems.append(f"{uuid} ({kind}): errors stamped with attempts {bad}, attempts is {attempts}")
            if len(oks) > 1:
                counts["rerun"] += 1
            counts["attempts"] += attempts
        return {"counts": counts, "problems": problems}

    def recovery_times(self, kind: str) -> list[float]:
        """For each fault of ``kind`` that hit a running job: seconds until that job's next
        attempt started (in any process)."""
        times = []
        for f in self.faults:
            if f.kind != kind or f.job is None:
                continue
            later = [at for _, at, _ in self.ledger.starts.get(f.job, []) if at > f.at]
            if later:
                times.append(min(later) - f.at)
        return times


def read(uuid: str) -> str | None:
    """The stored document; a call that fails is tried again (bounded): the first call on a
    connection the store server closed when it restarted fails once."""
    tries = 10
    for left in range(tries - 1, -1, -1):
        try:
            return client().get(uuid)
        except geyser.GeyserError:
            if not left:
                raise
            time.sleep(0.5)
    raise AssertionError("not reached")


def percentile(values: list[float], q: float) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f} s"
    return f"{statistics.quantiles(values, n=100, method='inclusive')[int(q) - 1]:.2f} s"


def run_one(backend: str, mode: Mode, seed: int, keep: bool) -> bool:
    """One soak on one backend pair; prints its table; True when nothing was violated."""
    folder = Path(tempfile.mkdtemp(prefix=f"geyser-soak-{backend.replace('+', '-')}-"))
    os.chmod(folder, 0o755)  # the private PostgreSQL runs as the postgres user
    soak = Soak(backend, mode, seed, folder)
    started = time.monotonic()
    ok = False
    try:
        soak.start_servers()
        log(f"{backend}: enqueueing {mode.jobs} jobs (seed {seed}, folder {folder})")
        enqueue_s = soak.enqueue()
        soak.start_supervisor()
        chaos_start = time.monotonic()
        soak.chaos()
        chaos_s = time.monotonic() - chaos_start
        settled = soak.settle(mode.settle)
        sweep = soak.sweep()
        settled_after = soak.settle(mode.settle)
        soak.stop_supervisor()
        verdict = soak.check()
        counts, problems = verdict["counts"], verdict["problems"]
        total = time.monotonic() - started
        faults = Counter(f.kind for f in soak.faults)
        kills = soak.recovery_times("kill")
        stops = soak.recovery_times("stop")
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(Counter(soak.jobs.values()).items()))
        rows = [
            ("backend", backend),
            ("jobs", f"{len(soak.jobs)} ({kinds})"),
            ("faults", f"{len(soak.faults)} (" + ", ".join(f"{k} {faults[k]}" for k in FAULTS if faults[k]) + ")"),
            ("supervisor stopped by itself", len(soak.gave_up)),
            ("lost", counts["lost"]),
            ("double successes saved", counts["double_success"]),
            ("wrong final state", counts["wrong_state"]),
            ("inconsistent with the ledger", counts["inconsistent"]),
            ("runs executed more than once", f"{counts['rerun']} (at-least-once)"),
            ("attempts in all", counts["attempts"]),
            ("recovery after kill -9, p50 / p99",
             f"{percentile(kills, 50)} / {percentile(kills, 99)} ({len(kills)} jobs)"),
            ("takeover after SIGSTOP > TTR, p50 / p99",
             f"{percentile(stops, 50)} / {percentile(stops, 99)} ({len(stops)} jobs)"),
            ("drained before the sweep", "yes" if settled else "no"),
            ("sweep", sweep),
            ("drained after the sweep", "yes" if settled_after else "no"),
            ("seconds: enqueue / chaos / total", f"{enqueue_s:.0f} / {chaos_s:.0f} / {total:.0f}"),
        ]
        width = max(len(k) for k, _ in rows)
        print(f"\n{'-' * 72}")
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
        print(f"{'-' * 72}", flush=True)
        for why in soak.gave_up:
            print(f"NOTE the supervisor stopped by itself: {why}")
        for p in problems[:30]:
            print(f"PROBLEM {p}")
        if len(problems) > 30:
            print(f"... and {len(problems) - 30} more problems")
        ok = not (counts["lost"] or counts["double_success"] or counts["wrong_state"] or counts["inconsistent"])
        return ok
    finally:
        soak.stop_supervisor(timeout=10)
        soak.stop_servers()
        soak.worker_log.close()
        geyser.configure()
        if ok and not keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            log(f"{backend}: logs and data kept in {folder} (worker.log, ledger)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="CI size: ~2,000 jobs, short jobs and faults")
    size.add_argument("--full", action="store_true",
                      help="the default: 100,000 jobs, 1-5 s progress jobs, 32 worker processes")
    p.add_argument("--backend", default="all", choices=[*BACKENDS, "all"], help="default: every pair in turn")
    p.add_argument("--jobs", type=int, default=None, help="number of jobs (default: 2,000 quick, 100,000 full)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: 3 quick, 32 full)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock, printed)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder even when the soak passes")
    args = p.parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.jobs is not None:
        if args.jobs < 1:
            p.error("--jobs must be at least 1")
        # The chaos may last as much longer as there are more jobs.
        limit = max(mode.chaos_limit, mode.chaos_limit * args.jobs / mode.jobs)
        mode = Mode(**{**mode.__dict__, "jobs": args.jobs, "chaos_limit": limit})
    if args.workers is not None:
        if args.workers < 1:
            p.error("--workers must be at least 1")
        mode = Mode(**{**mode.__dict__, "workers": args.workers})
    seed = args.seed if args.seed is not None else int(time.time())
    backends = BACKENDS if args.backend == "all" else [args.backend]
    failed = [b for b in backends if not run_one(b, mode, seed, args.keep)]
    if failed:
        print(f"SOAK FAILED on {', '.join(failed)} (seed {seed})", file=sys.stderr)
        return 1
    print(f"soak passed on {', '.join(backends)} (seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
