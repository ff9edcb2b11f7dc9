"""The `geyser` command, run for real as a subprocess (`python -m geyser ...` and the installed
`geyser` script) against real worker processes and a real store, on the embedded queue and on
beanstalkd: every command, and the errors an operator meets (one line on stderr, non-zero exit)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import geyser
import jobs_for_tests  # noqa: F401  (registers the job types)
from conftest import EVERY_BACKEND, free_port, run_worker, start_worker, wait_for, worker_env
from geyser.config import client

MODULE = ["-m", "jobs_for_tests"]


def _argv(args: tuple[str, ...], script: bool) -> list[str]:
    if not script:
        return [sys.executable, "-m", "geyser", *args]
    exe = shutil.which("geyser")
    if exe is None:
        pytest.fail("the geyser script is not installed: run `pip install -e .`")
    return [exe, *args]


def geyser_cmd(*args: str, script: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m geyser ARGS` (or the installed script) to completion."""
    return subprocess.run(_argv(args, script), env=worker_env(env), capture_output=True, text=True, timeout=60)


def ok(*args: str, script: bool = False) -> str:
    """Run the command; it must succeed; its standard output."""
    done = geyser_cmd(*args, script=script)
    assert done.returncode == 0, f"geyser {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def refused(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the command; it must exit 1 with one line on stderr and no traceback; that line."""
    done = geyser_cmd(*args, env=env)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geyser: error: "), done.stderr
    return lines[0]


def doc(uuid: str) -> dict[str, Any]:
    raw = client().get(uuid)
    assert raw is not None, f"job {uuid} is gone"
    return json.loads(raw)


def failed_job(**values: object) -> str:
    """A FailJob that crashed on each of its 3 attempts (a worker ran it)."""
    uuid = geyser.make_base_job({"mode": "crash", **values}, "fail").enqueue()
    assert run_worker().returncode == 0
    assert doc(uuid)["status"] == "failed"
    return uuid


def test_enqueue_then_ls_and_show_after_a_worker_ran_it(backend: dict[str, str]) -> None:
    uuid = ok("enqueue", *MODULE, "echo", '{"message": "hi"}', script=True).strip()
    assert doc(uuid)["status"] == "queued" and doc(uuid)["message"] == "hi"
    assert run_worker().returncode == 0

    table = ok("jobs", "ls", script=True)
    row = next(line for line in table.splitlines() if uuid in line)
    assert row.split()[1:5] == ["echo", "succeeded", "100%", "1"] and "attempt 1: hi" in row, table

    listed = json.loads(ok("jobs", "ls", "--json"))
    assert [d["uuid"] for d in listed] == [uuid] and listed[0]["resultString"] == "HI"

    shown = ok("jobs", "show", uuid)
    for expected in (f"uuid:          {uuid}", "status:        succeeded", "code 0 HI", "attempt 1: hi",
                     '"message": "hi"'):
        assert expected in shown, shown
    assert json.loads(ok("jobs", "show", uuid, "--json")) == doc(uuid)


def test_enqueue_with_delay_and_priority(backend: dict[str, str]) -> None:
    uuid = ok("enqueue", *MODULE, "echo", '{"message": "later"}', "--delay", "300", "--priority", "7").strip()
    assert doc(uuid)["queueKwargs"]["priority"] == 7
    stats = json.loads(ok("queues", "echo", "--json"))
    assert [(s["name"], s["ready"], s["delayed"]) for s in stats] == [("echo", 0, 1)]


def test_ls_pages_newest_first_with_filters(backend: dict[str, str]) -> None:
    created = [geyser.make_base_job({"message": str(i)}, "echo").enqueue() for i in range(5)]
    assert sorted(created) == created, "new uuids are time-ordered (UUIDv7)"
    echoes = created[::-1]
    step = geyser.make_base_job({}, "step").enqueue()
    seen: list[str] = []
    command = ["jobs", "ls", "--type", "echo", "--limit", "2"]
    for _ in range(4):
        lines = ok(*command).splitlines()
        seen += [line.split()[0] for line in lines[1:] if not line.startswith("next page")]
        hint = [line for line in lines if line.startswith("next page: geyser ")]
        if not hint:
            break
        command = hint[0].removeprefix("next page: geyser ").split()
    assert seen == echoes, "newest first, page after page"
    assert [d["uuid"] for d in json.loads(ok("jobs", "ls", "--status", "queued", "--type", "step", "--json"))] == [step]
    assert json.loads(ok("jobs", "ls", "--status", "succeeded", "--json")) == []
    # --queue: the queue each document names (EchoJob's QUEUE_NAME is "echo", StepJob's "steps").
    assert [d["uuid"] for d in json.loads(ok("jobs", "ls", "--queue", "steps", "--json"))] == [step]
    assert [d["uuid"] for d in json.loads(ok("jobs", "ls", "--queue", "echo", "--json"))] == echoes
    oldest = ok("jobs", "ls", "--queue", "echo", "--oldest-first", "--limit", "2").splitlines()
    assert [line.split()[0] for line in oldest[1:3]] == created[:2]
    assert oldest[-1].startswith("next page: ") and "--queue echo --oldest-first" in oldest[-1], oldest


def _workers() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(ok("workers", "--json"))
    return records


@pytest.mark.parametrize("backend", EVERY_BACKEND, indirect=True)
def test_workers_lists_live_worker_processes_and_their_running_job(backend: dict[str, str]) -> None:
    assert ok("workers").strip() == "no live workers"
    worker = subprocess.Popen(_argv(("worker", "-c", "2", *MODULE), False), env=worker_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        listed = wait_for("two worker processes listed", lambda: w if len(w := _workers()) == 2 else None)
        pids = {w["pid"] for w in listed}
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        assert pids == {int(p) for p in children}, ("the supervisor's two worker processes", listed, children)
        for w in listed:
            assert w["host"] == socket.gethostname() and w["id"] == f"{w['host']}:{w['pid']}", w
            assert "slow" in w["queues"] and "echo" in w["queues"], w
            assert w["job"] is None and w["heartbeat_at"] >= w["started_at"], w

        uuid = geyser.make_base_job({"seconds": 30}, "slow").enqueue()
        running = wait_for("the job shown on its worker", lambda: [w for w in _workers() if w["job"] == uuid])
        assert running[0]["pid"] in pids
        table = ok("workers")
        row = next(line for line in table.splitlines() if uuid in line)
        assert str(running[0]["pid"]) in row.split() and socket.gethostname() in row, table

        assert "cancel requested" in ok("jobs", "cancel", uuid)
        wait_for("the job gone from the list once cancelled", lambda: all(w["job"] is None for w in _workers()))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.kill()
    assert _workers() == [], "a worker that stopped removes its registration"
    assert ok("workers").strip() == "no live workers"


def test_show_a_failed_job_lists_its_errors_and_the_last_traceback(backend: dict[str, str]) -> None:
    uuid = failed_job()
    shown = ok("jobs", "show", uuid)
    assert "status:        failed" in shown
    errors = [line for line in shown.splitlines() if '"exception"  ZeroDivisionError' in line]
    assert [line.split()[2] for line in errors] == ["1", "2", "3"], shown
    assert "last error's traceback:" in shown and "Traceback (most recent call last):" in shown
    assert 'raise ZeroDivisionError("crashed on purpose")' in shown


@pytest.mark.parametrize(("job", "values", "status", "code"), [
    ("slow", {"seconds": 1.0}, "succeeded", 0),
    ("fail", {"mode": "finish"}, "failed", 1),
])
def test_watch_follows_a_job_until_it_ends(backend: dict[str, str], job: str, values: dict[str, Any], status: str,
                                           code: int) -> None:
    uuid = geyser.make_base_job(values, job).enqueue()
    watcher = subprocess.Popen(_argv(("jobs", "watch", uuid), False), env=worker_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert run_worker().returncode == 0
        out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == code, (out, err)
    assert f"job {uuid} {status}" in out


def test_watch_a_cancelled_job_exits_2_and_an_unknown_one_1(backend: dict[str, str]) -> None:
    uuid = geyser.make_base_job({"message": "x"}, "echo").enqueue()
    assert ok("jobs", "cancel", uuid).strip() == f"{uuid}: cancelled"
    done = geyser_cmd("jobs", "watch", uuid)
    assert done.returncode == 2 and f"job {uuid} cancelled" in done.stdout
    assert "job no-such-uuid not found" in refused("jobs", "watch", "no-such-uuid")


def test_cancel_a_running_job_asks_its_worker(backend: dict[str, str]) -> None:
    uuid = geyser.make_base_job({"seconds": 30}, "slow").enqueue()
    worker = subprocess.Popen(_argv(("worker", "--burst", "-c", "1", *MODULE), False), env=worker_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while doc(uuid)["status"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        assert "cancel requested" in ok("jobs", "cancel", uuid)
        assert worker.wait(30) == 0
    finally:
        worker.kill()
    assert doc(uuid)["status"] == "cancelled"
    assert ok("jobs", "cancel", uuid).strip() == f"{uuid}: cancelled"


def test_retry_one_then_every_failed_of_a_type(backend: dict[str, str]) -> None:
    first, second = failed_job(succeed_on=4), failed_job(succeed_on=4)
    assert ok("jobs", "retry", first).strip() == f"{first}: queued (attempts 3)"
    out = ok("jobs", "retry", "--failed", "--type", "fail", script=True)
    assert out.splitlines() == [f"{second}: queued (attempts 3)", "retried 1 job(s)"]
    assert run_worker().returncode == 0
    for uuid in (first, second):
        assert (doc(uuid)["status"], doc(uuid)["attempts"]) == ("succeeded", 4)
    assert "is succeeded" in refused("jobs", "retry", first)
    assert "give either a UUID or --failed" in refused("jobs", "retry")


def test_delete_only_a_finished_job(backend: dict[str, str]) -> None:
    uuid = geyser.make_base_job({"message": "x"}, "echo").enqueue()
    line = refused("jobs", "delete", uuid)
    assert "queued" in line and "geyser jobs cancel UUID" in line
    assert run_worker().returncode == 0
    assert "is succeeded: only a queued or running job can be cancelled" in refused("jobs", "cancel", uuid)
    assert ok("jobs", "delete", uuid).strip() == f"{uuid}: deleted"
    assert client().get(uuid) is None
    assert f"job {uuid} not found" in refused("jobs", "show", uuid)


def test_queues_counts_and_kick(backend: dict[str, str]) -> None:
    uuid = failed_job(succeed_on=4)
    geyser.make_base_job({"message": "x"}, "echo").enqueue()
    table = ok("queues", *MODULE)
    assert table.splitlines()[0].split() == ["queue", "ready", "delayed", "reserved", "buried", "paused", "oldest",
                                             "workers"]
    rows = {line.split()[0]: line.split()[1:5] for line in table.splitlines()[1:]}
    assert rows == {"echo": ["1", "0", "0", "0"], "fail": ["0", "0", "0", "1"], "slow": ["0"] * 4,
                    "steps": ["0"] * 4}, table
    assert ok("queues", "kick", "fail", "5").strip() == "kicked 1 job(s) in fail"
    assert json.loads(ok("queues", "stats", "fail", "--json"))[0]["ready"] == 1
    assert run_worker().returncode == 0
    assert doc(uuid)["status"] == "succeeded"
    assert "no queues to show" in refused("queues")


def test_worker_server_and_maintenance_take_their_own_arguments(backend: dict[str, str]) -> None:
    uuid = geyser.make_base_job({"message": "x"}, "echo").enqueue()
    ok("worker", "--burst", "-c", "1", *MODULE, script=True)
    assert doc(uuid)["status"] == "succeeded"
    assert "python -m geyser.server" in ok("server", "--help")
    assert "python -m geyser.maintenance" in ok("maintenance", "--help")
    assert ok("maintenance", "--min-age", "0").startswith("requeued 0, recovered 0, purged 0")


@pytest.mark.parametrize("command", [
    [], ["jobs"], ["jobs", "ls"], ["jobs", "show"], ["jobs", "watch"], ["jobs", "retry"], ["jobs", "cancel"],
    ["jobs", "delete"], ["queues"], ["queues", "stats"], ["queues", "kick"], ["queues", "pause"],
    ["queues", "resume"], ["enqueue"], ["worker"], ["workers"],
])
def test_every_help_shows_an_example(embedded: str, command: list[str]) -> None:
    out = ok(*command, "--help")
    assert re.search(r"example:\n +(geyser|python -m geyser\.)\S* ", out), out


def test_errors_are_one_line_that_says_what_to_do(backend: dict[str, str]) -> None:
    assert "`geyser jobs ls` lists" in refused("jobs", "show", "0b6f1c2e-0d5f-4a57-9a55-61f1d0a3c2b4")
    assert "JSON is not valid" in refused("enqueue", *MODULE, "echo", '{"message": ')
    assert "JSON must be an object" in refused("enqueue", *MODULE, "echo", "[1]")
    schema = refused("enqueue", *MODULE, "echo", '{"count": "many"}')
    assert "message: Missing data for required field." in schema and "count: Not a valid integer." in schema
    unknown = refused("enqueue", "echo", "{}")
    assert "unknown job type 'echo'" in unknown and "-m MODULE" in unknown
    assert "cannot import job module 'no_such_module'" in refused("jobs", "ls", "-m", "no_such_module")
    store_down = f"postgresql://127.0.0.1:{free_port()}/geyser"
    assert "check that the queue and store are up" in refused("jobs", "ls", env={"GEYSER_STORE_URL": store_down})
    queue_down = f"beanstalkd://127.0.0.1:{free_port()}"
    assert "queue server" in refused("queues", "echo", env={"GEYSER_QUEUE_URL": queue_down})


def _queue_rows(*args: str) -> dict[str, list[str]]:
    """`geyser queues ARGS` as {queue: [ready, delayed, reserved, buried, paused, oldest, workers]}."""
    return {line.split()[0]: line.split()[1:] for line in ok("queues", *args).splitlines()[1:]}


def test_a_paused_queue_waits_while_a_live_worker_runs_the_others(backend: dict[str, str]) -> None:
    before = geyser.make_base_job({"message": "before"}, "echo").enqueue()
    assert ok("queues", "pause", "echo").strip() == "echo: paused; its jobs wait until `geyser queues resume echo`"
    after = geyser.make_base_job({"message": "after"}, "echo").enqueue()
    worker = start_worker("-c", "1", "--log-level", "WARNING")
    try:
        # The worker is alive and watches both queues: a job on the other one runs ...
        control = geyser.make_base_job({"steps": 1}, "step").enqueue()
        wait_for("the control job to run", lambda: doc(control)["status"] == "succeeded")
        # ... while the paused queue's jobs, put before and during the pause, stay queued.
        assert [doc(uuid)["status"] for uuid in (before, after)] == ["queued", "queued"]
        rows = wait_for("a ready job to have waited a second", lambda: (r := _queue_rows("echo", "steps"))
                        and r["echo"][5] != "0s" and r["echo"][6] == "1" and r)
        assert rows["echo"][:5] == ["2", "0", "0", "0", "yes"] and rows["echo"][5].endswith("s"), rows
        assert rows["steps"] == ["0", "0", "0", "0", "no", "-", "1"], rows
        stats = json.loads(ok("queues", "echo", "--json"))[0]
        assert stats["paused"] is True and stats["oldest_ready_age"] >= 1 and stats["workers"] == 1, stats

        assert ok("queues", "resume", "echo").strip() == "echo: resumed"
        wait_for("the paused jobs to run once resumed",
                 lambda: [doc(uuid)["status"] for uuid in (before, after)] == ["succeeded", "succeeded"])
        assert _queue_rows("echo")["echo"][:6] == ["0", "0", "0", "0", "no", "-"]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)


def test_pause_and_resume_refuse_a_bad_or_unknown_queue(backend: dict[str, str]) -> None:
    assert 'bad tube name "has space"' in refused("queues", "pause", "has space")
    line = refused("queues", "pause", *MODULE, "ecko")
    assert "no job class of the imported modules uses queue 'ecko'" in line and "echo, fail, slow, steps" in line
    assert "no job class" in refused("queues", "resume", *MODULE, "ecko")
    if backend["GEYSER_QUEUE_URL"].startswith("beanstalkd://"):
        # beanstalkd knows a queue only while it holds jobs or a worker watches it.
        assert 'queue "ecko" not found' in refused("queues", "pause", "ecko")
    else:
        # The embedded queue keeps a pause of any queue, empty or not, in its file.
        ok("queues", "pause", "ecko")
        assert _queue_rows("ecko")["ecko"][4] == "yes"
        ok("queues", "resume", "ecko")
        assert _queue_rows("ecko")["ecko"][4] == "no"


def test_a_burst_worker_does_not_wait_for_a_paused_queue(backend: dict[str, str]) -> None:
    paused = geyser.make_base_job({"message": "held"}, "echo").enqueue()
    other = geyser.make_base_job({"steps": 1}, "step").enqueue()
    ok("queues", "pause", "echo")
    assert run_worker().returncode == 0, "a --burst worker exits with the paused queue's job left"
    assert (doc(paused)["status"], doc(other)["status"]) == ("queued", "succeeded")
    ok("queues", "resume", "echo")
    assert run_worker().returncode == 0
    assert doc(paused)["status"] == "succeeded"
