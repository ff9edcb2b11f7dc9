"""Resource bounds of a real worker (``python -m geyser.worker -c 1``), read from /proc: an idle
worker's CPU and resident memory over 10 s; its file descriptors across 100+ reconnects to a
beanstalkd restarted over and over; its CPU and log lines while the queue stays down for
20 s, and that it resumes by itself. The bounds, with today's measured values, are in
docs/reliability.md; they are several times what was measured (CPU shares measured on a
busy shared machine vary by several times), so only a leak or a busy loop crosses them. Touches its own beanstalkd and SQLite file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import geyser
import jobs_for_tests
from conftest import Beanstalkd, wait_for, worker_env

#: An idle worker (supervisor and one worker process): at most this share of one core.
IDLE_CPU_SHARE = 0.05
#: An idle worker process: at most this resident memory.
IDLE_RSS_MB = 100.0
#: File descriptors a worker process may gain across all the reconnects.
FD_SLACK = 3
#: While the queue is down: at most this share of one core, and this many log lines a minute.
DOWN_CPU_SHARE = 0.10
DOWN_LOG_LINES_PER_MINUTE = 120
RECONNECTS = 100
THREADS = 4


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds these processes used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


class Worker:
    """``python -m geyser.worker -c 1 -m jobs_for_tests ARGS``, its output in a file."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "geyser.worker", "-c", "1", "-m", "jobs_for_tests",
                                          *args], env=worker_env(), stdout=out, stderr=subprocess.STDOUT)
        self.child = wait_for("the worker process to start watching",
                              lambda: "watching" in log.read_text() and (children(self.proc.pid) or [0])[0])

    def lines(self) -> int:
        return len(self.log.read_text().splitlines())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def beanstalkd_connections(server: Beanstalkd) -> int:
    """``current-connections`` of the server, less the one asking."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"stats\r\n")
        data = b""
        while b"\n---" not in data or not data.endswith(b"\r\n"):
            data += s.recv(65536)
    for line in data.decode().splitlines():
        if line.startswith("current-connections:"):
            return int(line.split(":")[1]) - 1
    raise AssertionError(f"no current-connections in beanstalkd stats: {data[:200]!r}")


@pytest.fixture
def done_job() -> Callable[[], None]:
    """Enqueue one job and wait until a worker ran it."""

    def run_one() -> None:
        uuid = jobs_for_tests.EchoJob(message="hi").enqueue()
        wait_for("the job to succeed", lambda: geyser.get_base_job(uuid).status == "succeeded", 30)

    return run_one


def test_an_idle_worker_uses_little_cpu_and_memory(backend: dict[str, str], tmp_path: Path,
                                                   done_job: Callable[[], None]) -> None:
    worker = Worker(tmp_path / "worker.log")
    try:
        done_job()  # the worker has run a job: its memory includes what running one takes
        pids = [worker.proc.pid, worker.child]
        before, start = cpu_seconds(pids), time.monotonic()
        time.sleep(10)  # the measurement window itself
        share = (cpu_seconds(pids) - before) / (time.monotonic() - start)
        rss = rss_mb(worker.child)
        print(f"idle worker: {100 * share:.2f}% of a core (supervisor and worker process), "
              f"worker RSS {rss:.1f} MB, supervisor RSS {rss_mb(worker.proc.pid):.1f} MB")
        assert share < IDLE_CPU_SHARE, f"an idle worker used {100 * share:.2f}% of a core over 10 s"
        assert rss < IDLE_RSS_MB, f"an idle worker process uses {rss:.1f} MB resident"
    finally:
        worker.stop()


def test_file_descriptors_stay_flat_across_reconnects(beanstalkd: Beanstalkd, tmp_path: Path,
                                                      done_job: Callable[[], None]) -> None:
    worker = Worker(tmp_path / "worker.log", "--threads", str(THREADS))
    try:
        done_job()
        wait_for("the worker's consumers to connect", lambda: beanstalkd_connections(beanstalkd) >= THREADS)
        baseline = fd_count(worker.child)
        reconnects = restarts = 0
        while reconnects < RECONNECTS:
            beanstalkd.stop()
            beanstalkd.start()
            restarts += 1
            reconnects += wait_for("the worker to reconnect", lambda: (n := beanstalkd_connections(beanstalkd))
                                   >= THREADS and n, 30)
        done_job()  # it still works
        after = fd_count(worker.child)
        print(f"worker process fds: {baseline} before, {after} after {reconnects} reconnects "
              f"({restarts} beanstalkd restarts)")
        assert after <= baseline + FD_SLACK, f"fds grew from {baseline} to {after} across {reconnects} reconnects"
    finally:
        worker.stop()


def test_a_queue_down_for_20_s_costs_bounded_cpu_and_log_lines(beanstalkd: Beanstalkd, tmp_path: Path,
                                                               done_job: Callable[[], None]) -> None:
    worker = Worker(tmp_path / "worker.log")
    try:
        done_job()
        pids = [worker.proc.pid, worker.child]
        beanstalkd.stop()
        lines, before, start = worker.lines(), cpu_seconds(pids), time.monotonic()
        time.sleep(20)  # the outage itself
        seconds = time.monotonic() - start
        share = (cpu_seconds(pids) - before) / seconds
        per_minute = (worker.lines() - lines) * 60 / seconds
        beanstalkd.start()
        done_job()  # it resumed by itself
        print(f"queue down {seconds:.0f} s: {100 * share:.2f}% of a core, {per_minute:.0f} log lines a minute")
        assert share < DOWN_CPU_SHARE, f"{100 * share:.2f}% of a core while the queue was down"
        assert per_minute <= DOWN_LOG_LINES_PER_MINUTE, f"{per_minute:.0f} log lines a minute while the queue was down"
    finally:
        worker.stop()
