"""Log lines of real worker and server processes (geyser.logs): one line per job transition
with uuid, type, queue, attempt and duration; --log-format json (one JSON object per line,
job fields as keys, tracebacks as a string), passed from the supervisor to its children and
through the geyser command; the default text format."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import jobs_for_tests  # noqa: F401  (registers the job types)
from conftest import free_port, run_worker, wait_for, worker_env
from jobs_for_tests import EchoJob, FailJob, StepJob

JOB_FIELDS = {"uuid", "job_type", "queue", "attempt", "outcome"}


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as JSON; fails naming the first line that is not a JSON object."""
    lines = []
    for line in text.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(parsed, dict), line
        assert {"ts", "level", "logger", "message"} <= parsed.keys(), line
        lines.append(parsed)
    return lines


def transitions(lines: list[dict[str, Any]], uuid: str) -> list[tuple[int, str]]:
    """(attempt, outcome) of every transition line of job ``uuid``, by attempt, each attempt's
    start first. Two worker processes share one stderr: the next attempt may start (and say
    so) in the other process before the line that the last one ended reaches the pipe."""
    found = [(line["attempt"], line["outcome"]) for line in lines if line.get("uuid") == uuid]
    return sorted(found, key=lambda t: (t[0], t[1] != "started"))


def test_json_lines_of_a_two_process_worker_carry_every_transition(embedded: str) -> None:
    ok = EchoJob(message="hi").enqueue()
    retried = FailJob(mode="continue", succeed_on=2).enqueue()
    gave_up = FailJob(mode="crash").enqueue()
    failed = FailJob(mode="finish").enqueue()
    requeued = StepJob(steps=2, wait=0).enqueue()
    done = run_worker("-c", "2", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stderr)
    assert {line["logger"] for line in lines} >= {"geyser.supervisor", "geyser.worker"}
    assert len({line["message"].split()[1] for line in lines if line["message"].startswith("worker ")}) >= 2
    assert transitions(lines, ok) == [(1, "started"), (1, "succeeded")]
    assert transitions(lines, retried) == [(1, "started"), (1, "retrying"), (2, "started"), (2, "succeeded")]
    assert transitions(lines, gave_up) == [(1, "started"), (1, "retrying"), (2, "started"), (2, "retrying"),
                                           (3, "started"), (3, "gave_up")]
    assert transitions(lines, failed) == [(1, "started"), (1, "failed")]
    assert transitions(lines, requeued) == [(1, "started"), (1, "requeued"), (2, "started"), (2, "succeeded")]
    for line in lines:
        if "uuid" not in line:
            continue
        assert JOB_FIELDS <= line.keys(), line
        assert (line["job_type"], line["queue"]) in {("echo", "echo"), ("fail", "fail"), ("step", "steps")}, line
        assert line["uuid"] in line["message"] and f"attempt {line['attempt']}" in line["message"], line
        if line["outcome"] == "started":
            assert "duration_s" not in line and line["level"] == "INFO", line
        else:
            assert isinstance(line["duration_s"], float) and 0 <= line["duration_s"] < 30, line
    (end,) = [line for line in lines if line.get("uuid") == gave_up and line["outcome"] == "gave_up"]
    assert end["level"] == "WARNING" and end["message"].endswith("ZeroDivisionError: crashed on purpose"), end


def test_json_traceback_is_a_string_field(embedded: str) -> None:
    done = run_worker("-m", "no_such_module_here", "--log-format", "json", "--log-level", "DEBUG")
    assert done.returncode == 78, done.stderr
    lines = json_lines(done.stderr)
    (debug,) = [line for line in lines if "traceback" in line]
    assert debug["message"] == "importing job module 'no_such_module_here'", debug
    assert isinstance(debug["traceback"], str) and debug["traceback"].startswith("Traceback"), debug
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in debug["traceback"], debug
    assert any("cannot import job module 'no_such_module_here'" in line["message"] for line in lines), lines


def test_text_lines_carry_uuid_type_queue_and_attempt(embedded: str) -> None:
    uuid = FailJob(mode="continue", succeed_on=2).enqueue()
    done = run_worker()
    assert done.returncode == 0, done.stderr
    mine = [line for line in done.stderr.splitlines() if uuid in line]
    assert len(mine) == 4, mine
    assert mine[0].endswith(f"INFO geyser.worker: job {uuid} (fail) attempt 1: started on queue fail"), mine[0]
    assert f"WARNING geyser.worker: job {uuid} (fail) attempt 1: retrying after " in mine[1], mine[1]
    assert mine[1].endswith(" s: try again"), mine[1]
    assert f"INFO geyser.worker: job {uuid} (fail) attempt 2: succeeded after " in mine[3], mine[3]
    with pytest.raises(ValueError):
        json.loads(mine[0])


def test_an_unknown_log_format_is_refused(embedded: str) -> None:
    done = run_worker("--log-format", "xml")
    assert done.returncode == 2, done.stderr
    assert "--log-format: invalid choice: 'xml'" in done.stderr, done.stderr


def test_server_json_lines_through_the_geyser_command(embedded: str, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "geyser", "server", "--port", str(port), "-m", "jobs_for_tests",
                                 "--log-format", "json"], env=worker_env(), stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_for("the server to log that it listens", lambda: "geyser server on" in log_path.read_text())
            done = subprocess.run(["curl", "-s", "-d", '{"message": "hi"}', f"http://127.0.0.1:{port}/jobs/echo"],
                                  capture_output=True, text=True, timeout=10)
            assert "uuid" in json.loads(done.stdout), done.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
    assert code == 0, log_path.read_text()
    lines = json_lines(log_path.read_text())
    assert any(line["logger"] == "geyser.server" and "geyser server on" in line["message"] for line in lines), lines
    assert any(line["logger"] == "tornado.access" and "POST /jobs/echo" in line["message"] for line in lines), lines
