"""Pieces the benchmark scripts share: a beanstalkd to measure against, and
geyser's enqueue and drain measurements on whatever backends the environment names."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import geyser  # noqa: E402
from geyser.config import client  # noqa: E402

import bench_jobs  # noqa: E402,F401  (registers the no-op job)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, what: str, within: float = 5.0) -> None:
    """Return once 127.0.0.1:`port` accepts connections; exits naming `what` after `within` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"{what} did not start on port {port} within {within:g} s")
            time.sleep(0.02)


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    """`cmd` run on the CPUs `cpus` (taskset's list, e.g. "0"), or as is when None."""
    return ["taskset", "-c", cpus, *cmd] if cpus is not None else cmd


class Beanstalkd:
    """A private beanstalkd on a free loopback port (on the CPUs `cpus` if given); `stop()` kills it."""

    def __init__(self, cpus: str | None = None) -> None:
        exe = shutil.which("beanstalkd")
        if exe is None:
            sys.exit("beanstalkd is not installed: apt-get install -y beanstalkd")
        self.port = free_port()
        self.proc = subprocess.Popen(pinned([exe, "-l", "127.0.0.1", "-p", str(self.port)], cpus))
        wait_for_port(self.port, "beanstalkd")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def use_backends(queue: str, store: str) -> dict[str, str]:
    """Point this process (and the workers it starts) at these URLs."""
    os.environ.update(GEYSER_QUEUE_URL=queue, GEYSER_STORE_URL=store)
    geyser.configure()
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


def geyser_enqueue(n: int) -> float:
    """Jobs/s of `make_base_job(...).enqueue()` from one Python thread."""
    start = time.perf_counter()
    for i in range(n):
        geyser.make_base_job({"n": i}, "noop").enqueue()
    return n / (time.perf_counter() - start)


def all_noop_docs() -> list[dict]:
    out: list[dict] = []
    after = None
    while page := client().list(job_type="noop", after=after, limit=1000):
        out += [json.loads(d) for d in page]
        after = out[-1]["uuid"]
    return out


def geyser_drain(env: dict[str, str], n: int, *worker_args: str) -> float:
    """Jobs/s of worker processes, from the first start to the last finish (no start-up)."""
    cmd = [sys.executable, "-m", "geyser.worker", "-m", "bench_jobs", "--burst", "--log-level", "WARNING", *worker_args]
    if geyser.flush(600):  # a burst worker stops at its first empty look: every entry must be put
        sys.exit("the enqueue relay did not put every entry within 600 s")
    subprocess.run(cmd, env=env, check=True)
    docs = all_noop_docs()
    done = [d for d in docs if d["status"] == "succeeded"]
    if len(done) < n:
        sys.exit(f"only {len(done)} of {n} jobs succeeded")
    first = min(d["startedAt"] for d in done)
    last = max(d["finishedAt"] for d in done)
    return len(done) / (last - first)


def print_table(header: tuple[str, ...], rows: list[tuple], label: int = 36, width: int = 14) -> None:
    """Rows under `header`: the first column left in `label` characters, the others right in `width`."""
    print(f"{header[0]:<{label}}" + "".join(f"{h:>{width}}" for h in header[1:]))
    for row in rows:
        cells = [f"{c:>{width},.0f}" if isinstance(c, float) and c >= 10 else f"{c:>{width}.2f}"
                 if isinstance(c, float) else f"{c:>{width}}" for c in row[1:]]
        print(f"{row[0]:<{label}}" + "".join(cells))
