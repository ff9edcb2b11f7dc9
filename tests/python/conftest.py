"""Fixtures: a private embedded database per test, a real beanstalkd when asked for,
and a way to run real worker processes against the same backends."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import geyser

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    geyser.configure()
    server.stop()


@pytest.fixture(params=["sqlite", "beanstalkd"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Queue and store URLs for one test, exported to this process and its workers."""
    db = f"sqlite://{tmp_path / 'geyser.db'}"
    server = None
    if request.param == "beanstalkd":
        server = Beanstalkd()
        urls = {"GEYSER_QUEUE_URL": server.url, "GEYSER_STORE_URL": db}
    else:
        urls = {"GEYSER_QUEUE_URL": db, "GEYSER_STORE_URL": db}
    for k, v in urls.items():
        monkeypatch.setenv(k, v)
    geyser.configure()
    yield urls
    geyser.configure()
    if server is not None:
        server.stop()


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
    (one process unless ARGS says otherwise, so the order jobs start in is the queue's)."""
    cmd = [sys.executable, "-m", "geyser.worker", "--burst", "-c", "1", "-m", "jobs_for_tests", *args]
    return subprocess.run(cmd, env=worker_env(env), capture_output=True, text=True, timeout=timeout)


def start_worker(*args: str) -> subprocess.Popen[str]:
    """Start `python -m geyser.worker -m jobs_for_tests ARGS` in the background."""
    cmd = [sys.executable, "-m", "geyser.worker", "-m", "jobs_for_tests", *args]
    return subprocess.Popen(cmd, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
