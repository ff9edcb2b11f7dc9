"""The outbox enqueue of a queue server with a separate store (docs/lifecycle.md "Enqueue"),
with a real beanstalkd, SQLite stores and real worker and producer processes: ``flush``
and ``pending``; the flush at interpreter exit; a producer killed before its relay put
leaves a document the sweep puts; a job put by both the relay and the sweep runs once."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import geyser
import geyser.maintenance
from geyser import _core
from geyser.config import client
from conftest import Beanstalkd, job, run_worker, worker_env

import jobs_for_tests  # noqa: F401  (registers the job types this producer enqueues)

#: A producer: opens its client while the server is up, says so, waits for a line on stdin,
#: enqueues one echo job, prints its uuid, then exits or (argv[1] == "kill") is killed -9.
PRODUCER = """
import os, signal, sys
import geyser, jobs_for_tests
from geyser.config import client
client()
print("open", flush=True)
sys.stdin.readline()
job = geyser.make_base_job({"message": "from the producer"}, "echo")
job.enqueue()
print(job.uuid, flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


class Producer:
    """`PRODUCER` in a process of its own, with this test's backends."""

    def __init__(self, how: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", PRODUCER, how], env=worker_env(env), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "open", self.proc.stderr.read() if self.proc.stderr else ""

    def enqueue_and_end(self) -> tuple[str, int, str]:
        """(the job's uuid, exit status, stderr)."""
        out, err = self.proc.communicate("go\n", timeout=60)
        return out.strip(), self.proc.returncode, err


class Gate:
    """A loopback forwarder to beanstalkd that can be shut: while shut, it closes every
    connection (the server looks down to whoever talks through it)."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.is_open = True
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"beanstalkd://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if not self.is_open:
                    conn.close()
                    continue
                upstream = socket.create_connection(self.target)
                self.conns += [conn, upstream]
            threading.Thread(target=self._pump, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def shut(self) -> None:
        with self.lock:
            self.is_open = False
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def open(self) -> None:
        with self.lock:
            self.is_open = True

    def close(self) -> None:
        self.shut()
        self.listener.close()


@pytest.fixture
def gate(beanstalkd: Beanstalkd) -> Iterator[Gate]:
    g = Gate(beanstalkd.port)
    yield g
    geyser.configure()
    g.close()


def echo() -> str:
    return geyser.make_base_job({"message": "m"}, "echo").enqueue()


def ready(queue: str) -> int:
    return client().stats_tube(queue)["ready"]


def test_flush_says_0_once_delivered(backend: dict[str, str]) -> None:
    uuids = [echo() for _ in range(20)]
    assert geyser.flush(30) == 0 and geyser.pending() == 0
    assert ready("echo") == 20
    assert all(job(u).queueJobId for u in uuids), "every document names its entry"


def test_a_job_saved_right_after_enqueue_keeps_its_change_and_its_queue_id(beanstalkd: Beanstalkd) -> None:
    """The relay's queue-id note is the one write since enqueue: no ConflictError."""
    j = geyser.make_base_job({"message": "before"}, "echo")
    j.enqueue()
    assert geyser.flush(30) == 0, "the note is written before the save"
    j.message = "after"
    j.save()
    stored = job(j.uuid)
    assert (stored.message, stored.status) == ("after", "queued")
    assert stored.queueJobId, "the save kept the id the relay noted"


def test_flush_async_waits_the_same_way(beanstalkd: Beanstalkd) -> None:
    import asyncio

    async def enqueue_then_flush() -> int:
        await geyser.make_base_job({"message": "m"}, "echo").enqueue_async()
        return await geyser.flush_async(30)

    assert asyncio.run(enqueue_then_flush()) == 0
    assert ready("echo") == 1


def test_a_bad_flush_timeout_is_named(beanstalkd: Beanstalkd, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"flush\(timeout=...\)=-1"):
        geyser.flush(-1)
    monkeypatch.setenv("GEYSER_FLUSH_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="GEYSER_FLUSH_TIMEOUT='soon'"):
        geyser.flush()


def test_a_short_script_s_jobs_reach_the_queue_at_exit(beanstalkd: Beanstalkd) -> None:
    uuid, code, err = Producer("exit").enqueue_and_end()
    assert code == 0, err
    assert ready("echo") == 1, "the flush at exit put the job"
    assert job(uuid).queueJobId, "and noted its entry"
    assert "geyser:" not in err, err


def test_at_exit_a_server_that_stays_down_is_waited_for_a_bounded_time(beanstalkd: Beanstalkd) -> None:
    producer = Producer("exit", {"GEYSER_FLUSH_TIMEOUT": "0.5"})
    client()  # this process reads the store while the server is down
    beanstalkd.stop()
    uuid, code, err = producer.enqueue_and_end()
    assert code == 0, err
    assert "geyser: 1 enqueued job(s) not on their queue at exit" in err and "sweep puts them" in err, err
    assert job(uuid).status == "queued" and job(uuid).queueJobId is None


def test_a_producer_killed_before_its_put_leaves_a_job_the_sweep_puts(beanstalkd: Beanstalkd) -> None:
    producer = Producer("kill")
    beanstalkd.stop()  # its relay cannot put before it dies
    uuid, code, _ = producer.enqueue_and_end()
    assert code == -9 and uuid
    beanstalkd.start()
    assert job(uuid).status == "queued" and job(uuid).queueJobId is None
    assert ready("echo") == 0
    report = geyser.maintenance.sweep(0, force=True)
    assert report["requeued"] == 1, report
    done = run_worker()
    assert done.returncode == 0, done.stderr
    assert (job(uuid).status, job(uuid).attempts) == ("succeeded", 1)


def test_a_job_put_by_both_the_relay_and_the_sweep_runs_once(beanstalkd: Beanstalkd, gate: Gate,
                                                              tmp_path: Path) -> None:
    geyser.configure(queue=gate.url)  # this process reaches the server through the gate
    client()
    gate.shut()
    uuid = echo()
    assert geyser.flush(0.3) == 1
    direct = _core.Client(beanstalkd.url, f"sqlite://{tmp_path / 'geyser.db'}")
    report = _core.sweep(direct, "test", 0.0, 60.0, True, True)
    assert report["requeued"] == 1, report
    gate.open()
    assert geyser.flush(30) == 0
    assert direct.stats_tube("echo")["ready"] == 2, "one entry from the sweep, one from the relay"
    done = run_worker()
    assert done.returncode == 0, done.stderr
    assert (job(uuid).status, job(uuid).attempts) == ("succeeded", 1)
    assert direct.stats_tube("echo")["ready"] == 0, "the duplicate entry was deleted"
