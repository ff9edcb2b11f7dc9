"""Benchmark of an idle worker: what waiting for jobs costs, and how fast a job is noticed.

    python benches/idle.py [--seconds S] [--latency-jobs N] [--rate R]

Starts `python -m geyser.worker --threads 4 -c 1` (supervisor and its worker process)
on the embedded queue with one job waiting, notes how long the command took to start that
job, lets it go idle, reads the resident memory (VmRSS) of every process of the command
summed, and the CPU time of the whole process tree from /proc/<pid>/stat (utime + stime)
over S seconds; then enqueues N no-op jobs at R per second and reports enqueue→start
latency (the job's startedAt - createdAt). Baselines measured in the same run: the same
worker with beanstalkd as the queue (its consumers block on a socket), and, for CPU and
memory, a bare `python -c 'import time; time.sleep(60)'`.
Touches only temp files, a private beanstalkd on loopback, and the processes it starts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Beanstalkd, print_table, use_backends

import geyser

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
WORKER = [sys.executable, "-m", "geyser.worker", "-m", "bench_jobs", "--threads", "4", "-c", "1",
          "--log-level", "WARNING"]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process (its threads included), in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def rss_mb(pids: list[int]) -> float:
    """Summed VmRSS of these processes, in MB (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def cpu_percent(pid: int, seconds: float) -> float:
    """Share of one core the process tree under `pid` used over `seconds`."""
    pids = tree(pid)
    before = sum(cpu_ticks(p) for p in pids)
    start = time.monotonic()
    time.sleep(seconds)
    used = sum(cpu_ticks(p) for p in pids) - before
    return 100.0 * used / TICKS_PER_SECOND / (time.monotonic() - start)


def wait_until_done(uuids: list[str], within: float) -> list:
    """The jobs' documents once every one has succeeded; exits if that takes longer than `within`."""
    deadline = time.monotonic() + within
    while True:
        jobs = [geyser.get_base_job(u) for u in uuids]
        if all(j is not None and j.status == "succeeded" for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            sys.exit(f"jobs not done after {within} s: {[j and j.status for j in jobs]}")
        time.sleep(0.05)


def latencies_ms(n: int, rate: float) -> tuple[float, float]:
    """Enqueue→start latency (ms, p50 and p99) of `n` jobs enqueued `rate` per second."""
    uuids = []
    for i in range(n):
        uuids.append(geyser.make_base_job({"n": i}, "noop").enqueue())
        time.sleep(1 / rate)
    lat = sorted((j.startedAt - j.createdAt) * 1000 for j in wait_until_done(uuids, 30))
    return statistics.median(lat), lat[max(int(len(lat) * 0.99) - 1, 0)]


def measure_worker(env: dict[str, str], args: argparse.Namespace) -> tuple[float, float, float, float, float]:
    """(start-up s, idle RSS MB, idle CPU %, latency p50 ms, latency p99 ms) of one worker
    started on `env`'s backends with one job waiting."""
    first = geyser.make_base_job({"n": -1}, "noop").enqueue()
    started = time.time()
    worker = subprocess.Popen(WORKER, env=env)
    try:
        (job,) = wait_until_done([first], 60)  # started and serving
        startup = job.startedAt - started
        time.sleep(1)  # the first job's after-effects (progress flush, heartbeat) are over
        rss = rss_mb(tree(worker.pid))
        cpu = cpu_percent(worker.pid, args.seconds)
        p50, p99 = latencies_ms(args.latency_jobs, args.rate)
        return startup, rss, cpu, p50, p99
    finally:
        worker.terminate()
        worker.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="idle CPU measured over this long")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="jobs enqueued per second for the latency")
    args = parser.parse_args()

    sleeper = subprocess.Popen(SLEEPER)
    try:
        time.sleep(0.5)  # past the interpreter's start-up
        bare_rss = rss_mb([sleeper.pid])
        bare_cpu = cpu_percent(sleeper.pid, args.seconds)
    finally:
        sleeper.kill()
        sleeper.wait()
    with tempfile.TemporaryDirectory() as tmp:
        server = Beanstalkd()
        try:
            env = use_backends(f"beanstalkd://{server.addr}", f"sqlite://{tmp}/store.db")
            b_start, b_rss, b_cpu, b_p50, b_p99 = measure_worker(env, args)
        finally:
            server.stop()
        env = use_backends(f"sqlite://{tmp}/geyser.db", f"sqlite://{tmp}/geyser.db")
        e_start, e_rss, e_cpu, e_p50, e_p99 = measure_worker(env, args)

    print_table(("idle worker (--threads 4 -c 1)", "embedded", "beanstalkd", "bare sleep"), [
        ("start-up to first job (s)", e_start, b_start, ""),
        ("idle RSS, all processes (MB)", e_rss, b_rss, bare_rss),
        (f"idle CPU (% of a core, {args.seconds:g} s)", e_cpu, b_cpu, bare_cpu),
        (f"enqueue→start p50 (ms, {args.rate:g}/s)", e_p50, b_p50, ""),
        (f"enqueue→start p99 (ms, {args.rate:g}/s)", e_p99, b_p99, ""),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
