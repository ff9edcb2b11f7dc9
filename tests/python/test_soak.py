"""The quick fault soak (tests/soak/soak.py --quick) on each backend pair, so CI fails when a
job is lost, saved as succeeded twice, ends in the wrong state or disagrees with the run
ledger under kill -9, SIGSTOP past the TTR, queue, store and supervisor restarts. About a
minute per pair. The soak starts its own servers (beanstalkd with a binlog, a private
PostgreSQL cluster, a private Redis) on free ports and touches only its temp folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import HERE

SOAK = HERE.parent / "soak" / "soak.py"
PAIRS = ["embedded", "beanstalkd+sqlite", "beanstalkd+postgresql", "beanstalkd+redis"]


@pytest.mark.parametrize("pair", PAIRS)
def test_quick_soak(pair: str) -> None:
    done = subprocess.run([sys.executable, str(SOAK), "--quick", "--backend", pair], capture_output=True, text=True,
                          timeout=600)
    print(done.stdout)  # the soak's table, shown with -s or -rP
    assert done.returncode == 0, f"soak on {pair} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-5000:]}"
    assert f"soak passed on {pair}" in done.stdout
