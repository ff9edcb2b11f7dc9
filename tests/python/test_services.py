"""scripts/services.sh, which CI runs before the tests: it starts a Redis that is down (tried
on a private port, so the servers other tests share are never stopped) and leaves servers that
are up alone. Touches only the Redis it starts (shut down at the end) and its temp folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services.sh"


def redis_cli(port: int, *args: str) -> str:
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                          capture_output=True, text=True, timeout=10)
    return (done.stdout + done.stderr).strip()


def test_a_redis_that_is_down_is_started_without_persistence(tmp_path: Path) -> None:
    port = free_port()
    assert redis_cli(port, "ping") != "PONG"
    env = dict(os.environ, GEYSER_REDIS_PORT=str(port), GEYSER_REDIS_DIR=str(tmp_path / "data"),
               GEYSER_REDIS_LOG=str(tmp_path / "log" / "ci.log"))
    try:
        done = subprocess.run(["bash", str(SCRIPT), "redis"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"starting Redis on 127.0.0.1:{port}" in done.stdout, done.stdout
        assert redis_cli(port, "ping") == "PONG"
        assert redis_cli(port, "config", "get", "appendonly").split() == ["appendonly", "no"]
        assert redis_cli(port, "config", "get", "dir").split() == ["dir", str(tmp_path / "data")]
        again = subprocess.run(["bash", str(SCRIPT), "redis"], env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "starting" not in again.stdout, again.stdout + again.stderr
    finally:
        redis_cli(port, "shutdown", "nosave")


def test_servers_that_are_up_are_left_alone() -> None:
    assert redis_cli(6379, "ping") == "PONG", "the shared Redis is down: bash scripts/services.sh starts it"
    ready = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True, timeout=10)
    assert ready.returncode == 0, "the shared PostgreSQL is down: bash scripts/services.sh starts it"
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["PostgreSQL: up on 127.0.0.1:5432, database test",
                                        "Redis: up on 127.0.0.1:6379"], done.stdout + done.stderr
