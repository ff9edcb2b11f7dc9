"""The worker supervisor stays small and hands its store work to the worker processes:
it loads neither the native core nor OpenSSL (read from /proc/<pid>/maps) and its resident
memory, and that of `-c 1` as a whole, stays under stated bounds (docs/operating.md, "The
worker's processes"); the maintenance sweep runs in a worker process (the lease holder is one);
a crash handed over by the supervisor is recorded on the job once, by the next worker
process or by `python -m geyser.ledger` at the supervisor's exit, also when the command is
stopped right after the crash. Touches its own SQLite file and the processes it starts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import geyser
import jobs_for_tests
from conftest import job, wait_for, worker_env
from geyser import _core
from geyser.config import client
from geyser.ledger import LedgerEntry, hand_over_crash, record_crashes

import engine_jobs  # noqa: F401  (registers the job classes in this process)

#: The supervisor of an idle `-c 1` worker: at most this resident memory (measured 15.8 MB,
#: a bare `python -c pass` 13.3 MB, 13.2 MB after its hand-over to `python -I -S`; one that
#: imported the native core and marshmallow: 36 MB).
SUPERVISOR_RSS_MB = 25.0
#: Supervisor and worker process of an idle `-c 1` worker together (measured 42.4 MB).
WORKER_C1_RSS_MB = 60.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def mapped_files(pid: int) -> set[str]:
    """Names of the files process `pid` has mapped (shared libraries, extension modules)."""
    names = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            names.add(os.path.basename(fields[5]))
    return names


class Command:
    """`python -m geyser.worker -m MODULE ARGS` in the background, its output in a file."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "geyser.worker", *args], env=worker_env(),
                                         stdout=out, stderr=subprocess.STDOUT)

    def children(self) -> list[int]:
        try:
            return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except FileNotFoundError:
            return []

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture
def command(tmp_path: Path) -> Iterator[type[Command]]:
    started: list[Command] = []

    class Started(Command):
        def __init__(self, *args: str) -> None:
            super().__init__(tmp_path / f"worker-{len(started)}.log", *args)
            started.append(self)

    yield Started
    for c in started:
        if c.proc.poll() is None:
            for pid in c.children():
                os.kill(pid, signal.SIGKILL)
            c.proc.kill()
            c.proc.wait(10)


def test_the_supervisor_loads_no_native_core_and_stays_small(embedded: str, command: type[Command]) -> None:
    c = command("-m", "jobs_for_tests", "-c", "1")
    uuid = jobs_for_tests.EchoJob(message="hi").enqueue()
    wait_for("the job to succeed", lambda: job(uuid).status == "succeeded")
    (child,) = c.children()
    supervisor_maps, child_maps = mapped_files(c.proc.pid), mapped_files(child)
    assert any(name.startswith("_core") for name in child_maps), child_maps  # the check can see it
    heavy = {name for name in supervisor_maps if name.startswith(("_core", "libssl", "libcrypto", "_ssl", "_hashlib"))}
    assert not heavy, f"the supervisor loaded {heavy}"
    supervisor, total = rss_mb(c.proc.pid), rss_mb(c.proc.pid) + rss_mb(child)
    print(f"-c 1 after a job: supervisor {supervisor:.1f} MB, with its worker process {total:.1f} MB resident")
    assert supervisor < SUPERVISOR_RSS_MB, f"the supervisor uses {supervisor:.1f} MB resident"
    assert total < WORKER_C1_RSS_MB, f"-c 1 uses {total:.1f} MB resident"
    assert c.stop() == 0


def test_the_maintenance_sweep_runs_in_a_worker_process(embedded: str, command: type[Command]) -> None:
    c = command("-m", "jobs_for_tests", "-c", "2", "--sweep-interval", "0.2")

    def holder() -> str | None:
        done = subprocess.run([sys.executable, "-m", "geyser.maintenance"], env=worker_env(), capture_output=True,
                              text=True, timeout=30)
        found = re.match(r"skipped: (\S+) holds the maintenance lease", done.stdout)
        return found and found.group(1)

    held_by = wait_for("a worker process to hold the maintenance lease", holder)
    pid = int(held_by.split(":")[-2])
    assert pid in c.children() and pid != c.proc.pid, (held_by, c.proc.pid, c.children())
    assert c.stop() == 0
    assert "gave up the maintenance lease" in c.log.read_text()


def reserve(queue: str, job_type: str) -> tuple[_core.Worker, LedgerEntry]:
    """Reserve the job waiting on `queue` as a worker process would; its ledger entry."""
    worker = _core.Worker(client(), [queue], "test-host:1", 1.0, hard_stop_after=20.0, job_types=[job_type])
    attempt = wait_for("the job to be reserved", lambda: worker.next(0.5))
    doc = json.loads(attempt.document)
    return worker, LedgerEntry(attempt.uuid, str(doc["fence"]), int(doc["attempts"]))


def test_a_crash_handed_over_is_recorded_once_by_the_ledger_command(embedded: str, tmp_path: Path) -> None:
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    uuid = geyser.make_base_job({"seconds": 30}, "engine_long").enqueue()
    worker, entry = reserve("engine_long", "engine_long")
    hand_over_crash(str(ledger_dir), 4242, "worker process 4242 died: killed by SIGKILL", [entry])
    done = subprocess.run([sys.executable, "-m", "geyser.ledger", str(ledger_dir)], env=worker_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    j = job(uuid)
    assert [e["errorCode"] for e in j.errors] == ["worker-crashed"], j.errors
    assert j.errors[0]["msg"] == "attempt 1 did not finish: worker process 4242 died: killed by SIGKILL"
    assert list(ledger_dir.iterdir()) == [], "the crash file is forgotten once recorded"
    assert record_crashes(str(ledger_dir)) == 0, "nothing is left to record twice"
    worker.close()


def test_a_crash_right_before_the_command_stops_is_still_recorded(embedded: str, command: type[Command]) -> None:
    uuid = geyser.make_base_job({"seconds": 60}, "engine_long").enqueue()
    c = command("-m", "engine_jobs", "-q", "engine_long", "-c", "1")
    wait_for("the job to run", lambda: job(uuid).runs == 1)
    (child,) = c.children()
    os.kill(child, signal.SIGKILL)
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(30) == 0, c.log.read_text()
    j = job(uuid)
    assert j.errors and j.errors[0]["errorCode"] == "worker-crashed", (j.errors, c.log.read_text())
    assert j.errors[0]["msg"] == f"attempt 1 did not finish: worker process {child} died: killed by SIGKILL"


def handed_over(pid: int) -> bool:
    """Process `pid` is the small supervisor (`python -I -S -c BOOT ...`, geyser.supervisor.become_small)."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return args[1:3] == [b"-I", b"-S"]


def test_the_small_supervisor_takes_over_the_running_workers(embedded: str, command: type[Command]) -> None:
    """The hand-over keeps the command's pid and its worker processes; the small supervisor
    restarts a worker that dies, records the crash of the job it ran, and stops on SIGTERM."""
    uuid = geyser.make_base_job({"seconds": 60}, "engine_long").enqueue()
    c = command("-m", "engine_jobs", "-q", "engine_long", "-c", "2")
    wait_for("the job to run", lambda: job(uuid).runs == 1)
    before = sorted(c.children())
    assert len(before) == 2, before
    wait_for("the hand-over to the small supervisor", lambda: handed_over(c.proc.pid))
    assert sorted(c.children()) == before, "the worker processes are taken over, not restarted"
    assert rss_mb(c.proc.pid) < SUPERVISOR_RSS_MB
    running = wait_for("the worker process running the job",
                       lambda: [p for p in before if any(ln.strip().startswith("{\"running\": [{")
                                                          for ln in ledger_files(p))])
    os.kill(running[0], signal.SIGKILL)
    wait_for("a new worker process", lambda: len(c.children()) == 2 and running[0] not in c.children())
    wait_for("the crash to be recorded", lambda: job(uuid).errors)
    assert job(uuid).errors[0]["msg"].endswith(f"worker process {running[0]} died: killed by SIGKILL")
    assert c.stop() == 0, c.log.read_text()


def ledger_files(pid: int) -> list[str]:
    """The ledger file worker process `pid` writes (its --ledger-dir from its command line)."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    try:
        return [Path(args[args.index("--ledger-dir") + 1], f"{pid}.json").read_text()]
    except (ValueError, OSError):
        return []


def test_help_is_answered_by_the_supervisor_alone() -> None:
    done = subprocess.run([sys.executable, "-m", "geyser.worker", "--help"], env=worker_env(), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and "--sweep-interval" in done.stdout, done.stderr
