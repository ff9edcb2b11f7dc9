"""The wheel users install without Rust: one abi3, manylinux wheel, installed into a fresh
virtualenv whose PATH has no cargo or rustc (pip may take binaries only, so nothing
compiles), runs the README's demo. The wheel is the one scripts/test.sh built
(GEYSER_TEST_WHEEL names it); without that variable this test builds one with maturin
(minutes when the crate is not compiled yet). Touches: a temporary directory (the
virtualenv, a copy of examples/, a private embedded database), target/ when it builds, and
PyPI (the dependencies, as wheels)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Its module-scoped fixture is set up once: under pytest-xdist (scripts/test.sh) the module's
# tests stay on one worker.
pytestmark = pytest.mark.xdist_group("test_wheel")

ROOT = Path(__file__).resolve().parents[2]
# What Cargo.toml (pyo3's `abi3-py311`) and pyproject.toml (`compatibility`) promise: one
# wheel for every CPython from 3.11 on, on any Linux with glibc 2.34 or newer.
WHEEL_NAME = re.compile(r"geyser-[^-]+-cp311-abi3-manylinux_2_34_x86_64\.whl")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel under test: $GEYSER_TEST_WHEEL, else one built here."""
    named = os.environ.get("GEYSER_TEST_WHEEL")
    if named:
        path = Path(named)
        assert path.is_file(), f"GEYSER_TEST_WHEEL={named} is not a file"
        return path
    if importlib.util.find_spec("maturin") is None:
        pytest.fail("maturin is not installed: pip install maturin, or set GEYSER_TEST_WHEEL to a built wheel")
    out = tmp_path_factory.mktemp("wheels")
    built = subprocess.run(
        [sys.executable, "-m", "maturin", "build", "--release", "--out", str(out), "--interpreter", sys.executable],
        cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, f"maturin build failed:\n{built.stdout}\n{built.stderr}"
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, f"maturin built {wheels}, expected one wheel"
    return wheels[0]


def test_wheel_is_abi3_and_manylinux(wheel: Path) -> None:
    assert WHEEL_NAME.fullmatch(wheel.name), f"{wheel.name} is not a cp311-abi3 manylinux_2_34 wheel"


@pytest.mark.usefixtures("embedded")
def test_wheel_installs_without_rust_and_runs_the_demo(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    path = os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"])
    for tool in ("cargo", "rustc", "maturin"):
        assert shutil.which(tool, path=path) is None, f"{tool} is on the test's PATH {path}"
    # No variable of this test run may lead the venv's Python back to the repository.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = path
    env["CARGO_HOME"] = env["RUSTUP_HOME"] = str(tmp_path / "no-rust")

    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--only-binary", ":all:", str(wheel)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, f"pip install {wheel.name} failed:\n{install.stdout}\n{install.stderr}"

    examples = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", examples)
    where = subprocess.run(
        [str(python), "-c", "import geyser, geyser._core as c; print(geyser.__file__); print(c.__file__)"],
        env=env, cwd=examples, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    package, native = (Path(line) for line in where.stdout.split())
    assert package.is_relative_to(venv), f"geyser was imported from {package}, not from the virtualenv"
    assert native.name == "_core.abi3.so", f"the native module is {native.name}, not the stable-ABI build"
    for shipped in ("py.typed", "_core.pyi"):
        assert (package.parent / shipped).is_file(), f"the wheel does not install geyser/{shipped}"

    demo = subprocess.run([str(python), str(examples / "demo.py"), "--jobs", "3"],
                          env=env, cwd=examples, capture_output=True, text=True, timeout=180)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "3 of 3 jobs succeeded" in demo.stdout, demo.stdout
    assert "processed file-" in demo.stdout, demo.stdout
