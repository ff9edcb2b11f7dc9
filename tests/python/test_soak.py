"""The quick fault soak (tests/soak/soak.py --quick) on each backend pair, so CI fails when a
job is lost, saved as succeeded twice, ends in the wrong state or disagrees with the run
ledger under kill -9, SIGSTOP past the TTR, queue, store and supervisor restarts. About a
minute per pair; the four pairs run at once (a soak mostly waits: about a fifth of a core
each), and each pair's test waits for its own. The soak starts its own servers (beanstalkd
with a binlog, a private PostgreSQL cluster, a private Redis) on free ports and touches
only its temp folder."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import HERE

# Its module-scoped fixture is set up once: under pytest-xdist (scripts/test.sh) the module's
# tests stay on one worker.
pytestmark = pytest.mark.xdist_group("test_soak")

SOAK = HERE.parent / "soak" / "soak.py"
PAIRS = ["embedded", "beanstalkd+sqlite", "beanstalkd+postgresql", "beanstalkd+redis"]


@pytest.fixture(scope="module")
def soaks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[subprocess.Popen[str], Path]]]:
    """Every pair's soak, started together; its output goes to a file (no pipe to fill)."""
    folder = tmp_path_factory.mktemp("soak")
    started: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    for pair in PAIRS:
        out = folder / f"{pair}.log"
        with out.open("w") as sink:
            proc = subprocess.Popen([sys.executable, str(SOAK), "--quick", "--backend", pair], stdout=sink,
                                    stderr=subprocess.STDOUT, text=True)
        started[pair] = (proc, out)
    yield started
    for proc, _ in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("pair", PAIRS)
def test_quick_soak(pair: str, soaks: dict[str, tuple[subprocess.Popen[str], Path]]) -> None:
    proc, out = soaks[pair]
    code = proc.wait(timeout=600)
    output = out.read_text(errors="replace")
    print(output)  # the soak's table, shown with -s or -rP
    assert code == 0, f"soak on {pair} failed ({code}):\n{output[-8000:]}"
    assert f"soak passed on {pair}" in output
