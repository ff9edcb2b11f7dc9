"""The examples are tests: the README's demo and its HTTP walkthrough must run as written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_block(heading: str) -> str:
    """The first ```sh block after ``heading`` in the README."""
    text = (ROOT / "README.md").read_text()
    found = re.search(re.escape(heading) + r".*?```sh\n(.*?)```", text, re.S)
    assert found, f"no sh block under {heading!r} in README.md"
    return found.group(1)


@pytest.mark.usefixtures("embedded")
def test_demo_runs_every_job_to_success() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--jobs", "3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 of 3 jobs succeeded" in out.stdout
    assert "processed file-" in out.stdout


def live_members(group: int) -> list[str]:
    """Command names of the processes of process group ``group`` that have not exited
    (zombies left for a parent to reap do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, fields = stat.read_text().rsplit(")", 1)
        except OSError:  # gone meanwhile
            continue
        state, _parent, pgrp = fields.split()[:3]
        if int(pgrp) == group and state != "Z":
            alive.append(name.split("(", 1)[1])
    return alive


@pytest.mark.usefixtures("embedded")
def test_readme_http_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """The README's server + worker + curl block, run by bash from the repository root.
    Only the port changes (the default 8000 to a free one). The block's last line stops
    its background processes; anything it leaves running is a failure (and is stopped)."""
    from conftest import free_port

    port, script = free_port(), readme_block("## HTTP API")
    server = "python -m geyser.server -m my_job &"
    assert server in script and ":8000/" in script, script
    script = script.replace(server, server.replace(" &", f" --port {port} &")).replace(":8000/", f":{port}/")
    out_file, err_file = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_file.open("w") as out, err_file.open("w") as err:
        shell = subprocess.Popen(["bash", "-c", script], cwd=ROOT, stdout=out, stderr=err, start_new_session=True)
        try:
            shell.wait(timeout=90)
            deadline = time.monotonic() + 30
            while (left := live_members(shell.pid)) and time.monotonic() < deadline:
                time.sleep(0.1)  # poll: the worker finishes its running job before it exits
        finally:
            with contextlib.suppress(ProcessLookupError):  # nothing left to stop
                os.killpg(shell.pid, signal.SIGKILL)
    out, err = out_file.read_text(), err_file.read_text()
    assert shell.returncode == 0, out + err
    assert left == [], f"the walkthrough left {left} running\n{out}{err}"
    answers, events, rest = split_curl_output(out)
    assert len(answers) >= 2 and len(answers[0]["uuid"]) == 36, out + err
    assert answers[1]["jobType"] == "my_job_type" and answers[1]["status"] in ("queued", "running"), out
    assert len(events) >= 2 and events[-1]["status"] == "succeeded", out + err
    assert [e["completeness"] for e in events] == sorted(e["completeness"] for e in events), out
    assert answers[2]["status"] == "succeeded" and "finished" in answers[2]["error"], out  # DELETE: 409
    assert answers[3]["status"] == "succeeded", out  # retry of a job that did not fail: 409
    assert answers[4]["status"] == "ok", out  # healthz
    assert "geyser_queue_jobs" in rest, out  # metrics


def split_curl_output(out: str) -> tuple[list[dict], list[dict], str]:
    """curl prints JSON answers with no newline between them; SSE events are
    ``data: {...}`` lines. Returns the answers, the events, and the text after the last
    JSON answer (the metrics)."""
    decoder, answers, events, at = json.JSONDecoder(), [], [], 0
    while at < len(out):
        while at < len(out) and out[at].isspace():
            at += 1
        if out.startswith("data: ", at):
            end = out.find("\n", at)
            events.append(json.loads(out[at + len("data: "):end]))
            at = end + 1
            continue
        try:
            answer, at = decoder.raw_decode(out, at)
        except ValueError:
            break
        answers.append(answer)
    return answers, events, out[at:]
