"""Fixtures: a private embedded database per test, a real beanstalkd when asked for, a
private namespace on the shared PostgreSQL and Redis servers (a schema or a key prefix,
removed after the test; nothing else on those servers is touched), and a way to run real
worker processes against the same backends."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import pytest

import geyser

HERE = Path(__file__).resolve().parent


#: Ports for the servers tests start (beanstalkd, geyser.server, redis-server): each
#: pytest-xdist worker takes them from its own block below Linux's ephemeral range (32768 and
#: up), so a port chosen here cannot be handed to another test process by ``bind(0)``, or be
#: the source port of an outgoing connection, before the child binds it. (The Rust tests use
#: 10000-19999; the two suites never run at the same time.)
_FIRST_PORT, _BLOCK, _BLOCKS = 20000, 1000, 12
_next_port = itertools.count((os.getpid() * 7) % _BLOCK)


def free_port() -> int:
    """A loopback port no other test process picks, free right now."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...; unset without xdist
    block = (int(worker[2:]) + 1 if worker[2:].isdigit() else 0) % _BLOCKS
    base = _FIRST_PORT + block * _BLOCK
    for _ in range(_BLOCK):
        port = base + next(_next_port) % _BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free loopback port in {base}..{base + _BLOCK}")


class Beanstalkd:
    """A real beanstalkd on a free loopback port, stopped by PID."""

    def __init__(self, binlog: Path | None = None) -> None:
        exe = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
        if not os.path.exists(exe):
            pytest.fail("beanstalkd is not installed (apt-get install -y beanstalkd; .ci/run does this)")
        self.port = free_port()
        self.args = [exe, "-l", "127.0.0.1", "-p", str(self.port)]
        if binlog is not None:
            self.args += ["-b", str(binlog)]
        self.start()

    def start(self) -> None:
        """Start the server (again) on its port."""
        self.proc = subprocess.Popen(self.args)
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"beanstalkd did not start on port {self.port}")

    @property
    def url(self) -> str:
        return f"beanstalkd://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def beanstalkd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Beanstalkd]:
    """A beanstalkd queue (and a SQLite store) for tests that stop and start the server."""
    server = Beanstalkd()
    monkeypatch.setenv("GEYSER_QUEUE_URL", server.url)
    monkeypatch.setenv("GEYSER_STORE_URL", f"sqlite://{tmp_path / 'geyser.db'}")
    geyser.configure()
    yield server
    geyser.flush(10)  # what this test enqueued reaches the server before it goes
    geyser.configure()
    server.stop()


POSTGRES_URL = os.environ.get("GEYSER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GEYSER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_SERVICES = "bash scripts/services.sh starts them"


class NetworkStore:
    """A store URL on a shared server with a namespace of its own: a fresh PostgreSQL schema
    (``?schema=t_<hex>``, dropped by `drop`) or a fresh Redis key prefix (``?prefix=t_<hex>:``,
    its keys deleted by `drop` with SCAN + DEL; never FLUSHDB: other tests share the db)."""

    KINDS = ("postgresql", "redis")

    def __init__(self, kind: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"no network store {kind!r} (expected one of {self.KINDS})")
        self.kind, self.name = kind, f"t_{uuid.uuid4().hex}"
        if kind == "postgresql":
            self.psql("SELECT 1")  # fails the test, saying how to start the server, when it is down
            self.url = f"{POSTGRES_URL}?schema={self.name}"
        else:
            self.redis_cli("PING")
            self.prefix = f"{self.name}:"
            self.url = f"{REDIS_URL}?prefix={self.prefix}"

    def psql(self, sql: str) -> str:
        return self._run(["psql", POSTGRES_URL, "-X", "-q", "-w", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql])

    def redis_cli(self, *args: str) -> str:
        return self._run(["redis-cli", "-u", REDIS_URL, *args])

    def _run(self, cmd: list[str]) -> str:
        if shutil.which(cmd[0]) is None:
            pytest.fail(f"{cmd[0]} is not installed; {START_SERVICES} (and installs it)")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        # redis-cli exits 0 on an error reply: its output says so instead.
        if done.returncode != 0 or done.stdout.startswith(("ERR", "Could not connect")):
            pytest.fail(f"{' '.join(cmd[:2])} failed: {done.stdout}{done.stderr}; {START_SERVICES}")
        return done.stdout

    def keys(self) -> list[str]:
        """This store's keys on the Redis server (SCAN, so the server never blocks)."""
        return self.redis_cli("--scan", "--pattern", f"{self.prefix}*").split()

    def drop(self) -> None:
        """Removes everything the store wrote under its namespace."""
        if self.kind == "postgresql":
            self.psql(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
            return
        keys = self.keys()
        for at in range(0, len(keys), 500):
            self.redis_cli("DEL", *keys[at:at + 500])
        left = self.keys()
        assert left == [], f"keys left under {self.prefix}: {left[:5]}"


# The lifecycle suite runs on each of these (test_lifecycle.py); the other suites on the
# first two. "beanstalkd+postgresql" is beanstalkd for the queue and a PostgreSQL store.
EVERY_BACKEND = ["sqlite", "beanstalkd", "beanstalkd+postgresql", "beanstalkd+redis"]


@pytest.fixture(params=["sqlite", "beanstalkd"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Queue and store URLs for one test, exported to this process and its workers: the
    embedded file, or beanstalkd with a SQLite store; a test module may ask for any of
    `EVERY_BACKEND` (``pytest.mark.parametrize("backend", EVERY_BACKEND, indirect=True)``)."""
    db = f"sqlite://{tmp_path / 'geyser.db'}"
    queue, _, store_kind = request.param.partition("+")
    server = Beanstalkd() if queue == "beanstalkd" else None
    store = NetworkStore(store_kind) if store_kind else None
    urls = {"GEYSER_QUEUE_URL": server.url if server else db, "GEYSER_STORE_URL": store.url if store else db}
    for k, v in urls.items():
        monkeypatch.setenv(k, v)
    geyser.configure()
    try:
        yield urls
    finally:
        geyser.flush(10)  # what this test enqueued reaches the server before it goes
        geyser.configure()
        if server is not None:
            server.stop()
        if store is not None:
            store.drop()


@pytest.fixture(params=NetworkStore.KINDS)
def network_store(request: pytest.FixtureRequest) -> Iterator[NetworkStore]:
    """A fresh namespace on the shared PostgreSQL or Redis server, removed afterwards."""
    store = NetworkStore(request.param)
    try:
        yield store
    finally:
        store.drop()


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The embedded default only, on a private file."""
    db = f"sqlite://{tmp_path / 'geyser.db'}"
    monkeypatch.setenv("GEYSER_QUEUE_URL", db)
    monkeypatch.setenv("GEYSER_STORE_URL", db)
    geyser.configure()
    yield db
    geyser.configure()


def worker_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides or {})
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def run_worker(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m geyser.worker --burst -c 1 -m jobs_for_tests ARGS` to completion
    (one process unless ARGS says otherwise, so the order jobs start in is the queue's),
    once this process's enqueue relay has put what it holds: a burst worker stops at the
    first empty look at its queues."""
    geyser.flush(30)
    cmd = [sys.executable, "-m", "geyser.worker", "--burst", "-c", "1", "-m", "jobs_for_tests", *args]
    return subprocess.run(cmd, env=worker_env(env), capture_output=True, text=True, timeout=timeout)


def start_worker(*args: str) -> subprocess.Popen[str]:
    """Start `python -m geyser.worker -m jobs_for_tests ARGS` in the background."""
    cmd = [sys.executable, "-m", "geyser.worker", "-m", "jobs_for_tests", *args]
    return subprocess.Popen(cmd, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Call `pred` until it returns something truthy and return that; fail naming `what`
    after `timeout` seconds. The one way tests wait for something to happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def job(uuid: str) -> geyser.BaseJob:
    """The stored job `uuid`; fails the test when it is gone."""
    found = geyser.get_base_job(uuid)
    assert found is not None, f"job {uuid} is gone"
    return found
