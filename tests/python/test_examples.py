"""The examples are tests: the README's demo must run as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("embedded")
def test_demo_runs_every_job_to_success() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--jobs", "3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 of 3 jobs succeeded" in out.stdout
    assert "processed file-" in out.stdout
