"""The worker engine with real worker processes: short TTR
with heartbeats, the supervisor, graceful shutdown, crash recovery, cancellation,
TIMEOUT and fencing. Each test runs on the queue backends its row of the issue names."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import geyser
from geyser.config import client
from conftest import Beanstalkd, job, run_worker, wait_for, worker_env

import engine_jobs  # noqa: F401  (registers the job classes in this process)


class Workers:
    """`python -m geyser.worker -m engine_jobs ARGS` in the background, its output in a file."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log_path = log
        self.log_file = log.open("w")
        cmd = [sys.executable, "-m", "geyser.worker", "-m", "engine_jobs", *args]
        self.proc = subprocess.Popen(cmd, env=worker_env(), stdout=self.log_file, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def children(self) -> list[int]:
        """PIDs of the worker processes the supervisor runs now."""
        try:
            return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except FileNotFoundError:
            return []

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.log_file.close()
        return code

    def kill_all(self) -> None:
        """kill -9 the supervisor and every worker process."""
        pids = self.children()
        self.proc.kill()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.proc.wait(5)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Workers]]:
    started: list[Workers] = []

    def start(*args: str) -> Workers:
        w = Workers(tmp_path / f"workers-{len(started)}.log", *args)
        started.append(w)
        return w

    yield start
    for w in started:
        for pid in w.children():
            os.kill(pid, signal.SIGCONT)
        if w.proc.poll() is None:
            w.kill_all()
        w.log_file.close()


def status_is(uuid: str, *statuses: str) -> Callable[[], bool]:
    return lambda: job(uuid).status in statuses


def enqueue(job_type: str, ttr: float | None = None, **values: object) -> str:
    return geyser.make_base_job(values, job_type).enqueue(ttr=ttr)


def test_default_ttr_is_short() -> None:
    assert geyser.BaseJob.TTR == 30


def test_job_running_five_times_its_ttr_on_three_processes_starts_once(backend: dict[str, str], workers) -> None:
    uuid = enqueue("engine_long", ttr=2, seconds=10)
    w = workers("-c", "3")
    wait_for("the job to succeed", status_is(uuid, "succeeded"), timeout=40)
    j = job(uuid)
    assert (j.attempts, j.runs, j.failures, j.errors) == (1, 1, 0, [])
    assert w.stop() == 0


def test_supervisor_restarts_a_worker_process_that_dies(embedded: str, workers) -> None:
    w = workers("-c", "2")
    wait_for("two worker processes", lambda: len(w.children()) == 2)
    victim = w.children()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for("a replacement", lambda: len(w.children()) == 2 and victim not in w.children())
    uuid = enqueue("engine_long", seconds=0.1)
    wait_for("the job to succeed", status_is(uuid, "succeeded"))
    assert w.stop() == 0


def test_sigterm_lets_a_running_job_finish(backend: dict[str, str], workers) -> None:
    uuid = enqueue("engine_long", seconds=3)
    w = workers("-c", "1")
    wait_for("the job to run", lambda: job(uuid).runs == 1)
    assert w.stop() == 0
    j = job(uuid)
    assert (j.status, j.attempts, j.runs) == ("succeeded", 1, 1)
    # The worker stopped right after the job: its queue entry was deleted on the way out.
    stats = client().stats_tube("engine_long")
    assert stats["ready"] == stats["reserved"] == 0, stats


def test_sigterm_past_the_grace_period_hands_the_job_back(backend: dict[str, str], workers) -> None:
    uuid = enqueue("engine_long", seconds=60)
    w = workers("-c", "1", "--grace", "1")
    wait_for("the job to run", lambda: job(uuid).runs == 1)
    start = time.time()
    assert w.stop() == 0
    assert time.time() - start < 15
    j = job(uuid)
    assert (j.status, j.attempts, j.failures, j.errors) == ("queued", 0, 0, [])
    assert run_worker("-m", "engine_jobs").returncode == 0
    j = job(uuid)
    assert (j.status, j.runs, j.attempts, j.failures) == ("succeeded", 2, 1, 0)


def kill_9_mid_job(workers: Callable[..., Workers], uuid: str, processes: int) -> Workers:
    """Start `processes` workers, kill -9 all of them once the job runs; returns a new worker."""
    first = workers("-c", str(processes))
    wait_for("the job to run", lambda: job(uuid).runs == 1)
    first.kill_all()
    return workers("-c", "1")


def test_kill_9_of_every_worker_then_a_new_worker_finishes_the_job(backend: dict[str, str], workers) -> None:
    uuid = enqueue("engine_long", ttr=2, seconds=30)
    second = kill_9_mid_job(workers, uuid, processes=2)
    wait_for("the job to succeed", status_is(uuid, "succeeded"), timeout=30)
    j = job(uuid)
    assert (j.attempts, j.runs, j.failures) == (2, 2, 1)
    assert j.errors[0]["errorCode"] == "worker-lost" and j.errors[0]["attempt"] == 1
    assert j.resultString == "attempt 2"
    assert second.stop() == 0


def test_a_lost_attempt_with_no_retries_left_fails_the_job_and_buries_its_entry(backend: dict[str, str],
                                                                                 workers) -> None:
    uuid = enqueue("engine_long_once", ttr=2, seconds=30)
    second = kill_9_mid_job(workers, uuid, processes=1)
    wait_for("the job to fail", status_is(uuid, "failed"), timeout=30)
    j = job(uuid)
    assert (j.attempts, j.runs, j.failures) == (1, 1, 1)
    assert j.errors[0]["errorCode"] == "worker-lost"
    wait_for("the entry to be buried", lambda: client().stats_tube("engine_long_once")["buried"] == 1)
    assert second.stop() == 0


def test_a_give_up_whose_bury_is_lost_never_runs_the_job_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              workers) -> None:
    """The attempt's reservation ends while it runs (beanstalkd restarted, its binlog kept), so
    the entry comes back ready and the bury after the give-up finds nothing to bury. A failed
    document names its entry only once the bury is confirmed: the worker that reserves the
    entry deletes it as a stray instead of taking it for an operator's kick and running the
    job past its retries."""
    (tmp_path / "binlog").mkdir()
    server = Beanstalkd(binlog=tmp_path / "binlog")
    monkeypatch.setenv("GEYSER_QUEUE_URL", server.url)
    monkeypatch.setenv("GEYSER_STORE_URL", f"sqlite://{tmp_path / 'geyser.db'}")
    geyser.configure()
    try:
        gate = tmp_path / "gate"
        uuid = enqueue("engine_gated_fail", gate=str(gate))
        geyser.flush(10)
        w = workers("-c", "1")
        wait_for("the attempt to start", status_is(uuid, "running"))
        server.stop()
        server.start()  # the reservation is gone; the entry is ready again
        gate.touch()
        wait_for("the job to fail", status_is(uuid, "failed"))
        wait_for("the stray entry to be deleted",
                 lambda: client().stats_tube("engine_gated_fail")["ready"] + client().stats_tube(
                     "engine_gated_fail")["buried"] == 0 and "deleted" in w.output)
        j = job(uuid)
        assert (j.attempts, j.failures, len(j.errors), j.queueJobId) == (1, 1, 1, None), w.output
        assert not [e for e in j.events if e["action"] == "retry"], j.events
        assert "bury failed" in w.output, w.output  # the case this test is about happened
        assert "attempt 2" not in w.output, w.output
        assert w.stop() == 0
    finally:
        geyser.configure()
        server.stop()


def test_cancel_of_a_running_job_is_seen_and_raised_at_its_next_progress_call(backend: dict[str, str], workers) -> None:
    uuid = enqueue("engine_wait_cancel")
    w = workers("-c", "1")
    wait_for("the job to run", status_is(uuid, "running"))
    job(uuid).cancel()
    wait_for("the job to be cancelled", status_is(uuid, "cancelled"))
    j = job(uuid)
    assert [e["msg"] for e in j.events] == ["saw the cancel request"]
    assert j.errors == []
    stats = client().stats_tube("engine_cancel")
    assert stats["ready"] == stats["reserved"] == stats["buried"] == 0
    assert w.stop() == 0


def test_a_running_job_that_ignores_cancel_is_stopped_after_the_grace_period(embedded: str, workers) -> None:
    uuid = enqueue("engine_ignore_cancel")
    w = workers("-c", "1", "--stop-grace", "1")
    wait_for("the job to run", status_is(uuid, "running"))
    job(uuid).cancel()
    wait_for("the job to be cancelled", status_is(uuid, "cancelled"), timeout=15)
    assert w.stop() == 0


def test_a_cancelled_queued_job_never_starts(backend: dict[str, str]) -> None:
    uuid = enqueue("engine_long", seconds=0.1)
    job(uuid).cancel()
    assert run_worker("-m", "engine_jobs").returncode == 0
    j = job(uuid)
    assert (j.status, j.attempts, j.runs) == ("cancelled", 0, 0)


@pytest.mark.parametrize("job_type", ["engine_sleepy", "engine_busy"])
def test_timeout_stops_the_job_and_the_retry_policy_applies(embedded: str, job_type: str) -> None:
    uuid = enqueue(job_type)
    done = run_worker("-m", "engine_jobs", "--stop-grace", "5", timeout=60)
    assert done.returncode == 0, done.stderr
    j = job(uuid)
    assert (j.status, j.attempts, j.failures) == ("failed", 2, 2)
    assert [e["errorCode"] for e in j.errors] == ["timeout", "timeout"]
    assert "TIMEOUT of 1 s" in j.errors[0]["msg"]
    assert "did not stop within" not in done.stderr, "the cooperative stop should have been enough"


def test_timeout_replaces_the_process_of_a_job_that_will_not_stop(embedded: str) -> None:
    uuid = enqueue("engine_stubborn")
    done = run_worker("-m", "engine_jobs", "--stop-grace", "1", timeout=60)
    assert done.returncode == 0, done.stderr
    j = job(uuid)
    assert (j.status, j.attempts) == ("failed", 1)
    assert [e["errorCode"] for e in j.errors] == ["timeout"]
    assert "did not stop within" in done.stderr and "exited with 75" in done.stderr


def test_timeout_ends_the_process_of_a_job_stuck_in_c_holding_the_gil(embedded: str) -> None:
    uuid = enqueue("engine_gil_hog")
    done = run_worker("-m", "engine_jobs", "--stop-grace", "1", timeout=60)
    assert done.returncode == 0, done.stderr
    j = job(uuid)
    assert (j.status, j.attempts) == ("failed", 1)
    assert [e["errorCode"] for e in j.errors] == ["timeout"]
    assert "stopped by ending its worker process" in j.errors[0]["msg"]
    assert "cannot be interrupted" in done.stderr and "exited with 75" in done.stderr


def test_a_paused_workers_late_writes_are_refused(embedded: str, workers) -> None:
    uuid = enqueue("engine_long", ttr=1, seconds=4)
    paused = workers("-c", "1")
    wait_for("the job to run", lambda: job(uuid).runs == 1)
    (child,) = paused.children()
    os.kill(child, signal.SIGSTOP)
    taker = workers("-c", "1")
    wait_for("a second attempt to take over", lambda: job(uuid).attempts == 2, timeout=20)
    os.kill(child, signal.SIGCONT)
    wait_for("the second attempt to succeed", status_is(uuid, "succeeded"))
    # The outcome line is the paused attempt's last act: any late write it tried came before.
    ended = f"job {uuid} (engine_long) attempt 1: lost after "
    wait_for("the paused attempt to end", lambda: ended in paused.output, timeout=15)
    assert "lost the job" in paused.output
    j = job(uuid)
    assert (j.status, j.attempts, j.resultString) == ("succeeded", 2, "attempt 2")
    assert j.worker.endswith(f":{taker.children()[0]}")
    assert paused.stop() == 0 and taker.stop() == 0


def test_enqueue_while_beanstalkd_is_down_succeeds_and_runs_once_it_is_back(beanstalkd, workers) -> None:
    """The document is committed and this process's relay holds the put (docs/lifecycle.md
    "Enqueue"): the backlog is counted, and the job runs once the server returns."""
    client()  # opened while the server is up
    beanstalkd.stop()
    uuid = enqueue("engine_noop")
    assert job(uuid).status == "queued"
    assert geyser.pending() == 1 and geyser.flush(0.5) == 1
    beanstalkd.start()  # no binlog: only the relay's put brings the job back
    assert geyser.flush(30) == 0
    w = workers("-c", "1")
    wait_for("the job enqueued while the server was down", status_is(uuid, "succeeded"))
    assert job(uuid).attempts == 1
    assert w.stop() == 0


def test_a_worker_rides_out_a_beanstalkd_restart(beanstalkd, workers) -> None:
    w = workers("-c", "1")
    first = enqueue("engine_noop")
    wait_for("the first job", status_is(first, "succeeded"))
    beanstalkd.stop()
    wait_for("the worker to find the server gone twice", lambda: w.output.count("queue or store unavailable") >= 2)
    beanstalkd.start()
    second = enqueue("engine_noop")
    wait_for("the job put after the restart", status_is(second, "succeeded"))
    assert w.proc.poll() is None
    assert "restarting" not in w.output, w.output


def test_a_worker_started_while_beanstalkd_is_down_waits_for_it(beanstalkd, workers) -> None:
    """A server that does not answer yet is not a configuration mistake: the supervisor
    stays up, its worker processes retry with back-off, and jobs run once the server is up."""
    beanstalkd.stop()
    w = workers("-c", "1")
    wait_for("two failed starts", lambda: w.output.count("restarting in") >= 2)
    assert w.proc.poll() is None, w.output
    assert "unreachable" in w.output and "cannot start as configured" not in w.output, w.output
    beanstalkd.start()
    uuid = enqueue("engine_noop")
    wait_for("the job put once the server is up", status_is(uuid, "succeeded"))
    assert w.stop() == 0, w.output


def test_a_burst_worker_facing_a_server_that_is_down_exits_non_zero_but_not_as_misconfigured(beanstalkd) -> None:
    beanstalkd.stop()
    done = run_worker("-m", "engine_jobs", "-q", "engine_noop", timeout=30)
    assert done.returncode == 1, done.stderr
    assert f"127.0.0.1:{beanstalkd.port}" in done.stderr and "unreachable" in done.stderr, done.stderr


def test_the_sweep_puts_back_jobs_a_beanstalkd_without_binlog_lost(beanstalkd) -> None:
    uuids = [enqueue("engine_noop") for _ in range(3)]
    assert geyser.flush(30) == 0  # the entries are on the server when it dies
    beanstalkd.stop()
    beanstalkd.start()  # no binlog: the queue comes back empty, the documents are still queued
    assert client().stats_tube("engine_noop")["ready"] == 0
    swept = subprocess.run([sys.executable, "-m", "geyser.maintenance", "--min-age", "0"], env=worker_env(),
                           capture_output=True, text=True, timeout=60)
    assert swept.returncode == 0, swept.stderr
    assert "requeued 3" in swept.stdout
    assert client().stats_tube("engine_noop")["ready"] == 3
    done = run_worker("-m", "engine_jobs", "-q", "engine_noop")
    assert done.returncode == 0, done.stderr
    assert [job(u).status for u in uuids] == ["succeeded"] * 3


class ShortLivedJob(geyser.BaseJob):
    """Its finished document may be forgotten a moment after it was created."""

    JOB_TYPE = "engine_short_lived"
    QUEUE_NAME = "engine_short_lived"
    LIFESPAN = 0.5


def test_the_sweep_forgets_finished_documents_past_their_lifespan(embedded: str) -> None:
    short, waiting = ShortLivedJob(), ShortLivedJob()
    short.enqueue()
    short.cancel()
    waiting.enqueue()
    kept = enqueue("engine_noop")
    wait_for("the short-lived job's lifespan to pass", lambda: time.time() > short.expiresAt, timeout=5)
    swept = subprocess.run([sys.executable, "-m", "geyser.maintenance"], env=worker_env(),
                           capture_output=True, text=True, timeout=60)
    assert swept.returncode == 0, swept.stderr
    assert "purged 1" in swept.stdout
    assert geyser.get_base_job(short.uuid) is None
    assert geyser.get_base_job(waiting.uuid) is not None, "a queued job is never forgotten"
    assert geyser.get_base_job(kept) is not None


# -- the worker's console, its command line and its configuration (issue 10, items 4, 8, 12) --


def test_a_failed_attempt_is_logged_with_its_error(embedded: str) -> None:
    uuid = enqueue("engine_divide")
    done = run_worker("-m", "engine_jobs", "-q", "engine_divide")
    assert done.returncode == 0, done.stderr
    assert job(uuid).status == "failed"
    (line,) = [ln for ln in done.stderr.splitlines() if f"job {uuid}" in ln and "attempt 1: gave up after" in ln]
    assert "WARNING" in line, line
    assert line.endswith("ZeroDivisionError: division by zero"), line
    assert "Traceback" not in done.stderr, "the traceback is for --log-level DEBUG"
    assert "Traceback" in job(uuid).errors[0]["traceback"]
    enqueue("engine_divide")
    debug = run_worker("-m", "engine_jobs", "-q", "engine_divide", "--log-level", "DEBUG")
    assert debug.returncode == 0
    assert "traceback:\nTraceback (most recent call last):" in debug.stderr


def test_an_unknown_job_module_is_one_clear_error_and_a_non_zero_exit(embedded: str) -> None:
    done = run_worker("-m", "no_such_jobs_module", timeout=30)
    assert done.returncode == 78, done.stderr
    assert "cannot import job module 'no_such_jobs_module': ModuleNotFoundError: " in done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_a_bad_queue_url_stops_the_worker_with_the_reason(embedded: str) -> None:
    done = run_worker("-m", "engine_jobs", timeout=30, env={"GEYSER_QUEUE_URL": "nonsense://nowhere"})
    assert done.returncode == 78, done.stderr
    assert "nonsense://nowhere" in done.stderr
    assert "restarting" not in done.stderr


def test_help_describes_the_command_with_an_example_and_every_default() -> None:
    done = subprocess.run([sys.executable, "-m", "geyser.worker", "--help"], env=worker_env(), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "This module is one worker process" not in done.stdout, "an internal docstring"
    assert "example:\n  python -m geyser.worker -m " in done.stdout
    options = done.stdout.split("options:\n", 1)[1].split("\n\n", 1)[0]
    blocks = [" ".join(b.split()) for b in re.split(r"\n  (?=-)", options) if b.strip()]
    assert len(blocks) >= 12, blocks
    for block in blocks:
        if not block.startswith("-h"):
            assert "(default: " in block, block


def write_app(root: Path, launcher: str) -> Path:
    """An application outside the tests' path: `app/jobs/alpha.py` and the launcher `app/launch.py`."""
    (root / "app" / "jobs").mkdir(parents=True)
    (root / "app" / "jobs" / "__init__.py").write_text("")
    (root / "app" / "jobs" / "alpha.py").write_text(
        "import time\nimport geyser\n\n\n"
        "class AlphaJob(geyser.BaseJob):\n"
        "    JOB_TYPE = 'app_alpha'\n    QUEUE_NAME = 'app_alpha'\n\n"
        "    def run(self):\n        self.record_result(0, 'alpha ran')\n        return time.time(), False\n"
    )
    (root / "app" / "launch.py").write_text(launcher)
    return root / "app" / "launch.py"


LAUNCHER = """\
import sys
import geyser
import geyser.registry
import geyser.worker

geyser.registry.JOB_MODULES += ["jobs.alpha"]
import jobs.alpha
print(geyser.make_base_job({}, "app_alpha").enqueue(), flush=True)
sys.exit(geyser.worker.main(["--burst", "-c", "2"]))
"""


def test_job_modules_registered_by_a_launcher_reach_every_worker_process(embedded: str, tmp_path: Path) -> None:
    launcher = write_app(tmp_path, LAUNCHER)
    done = subprocess.run([sys.executable, str(launcher)], cwd=tmp_path, env=worker_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = json.loads(client().get(done.stdout.strip()) or "{}")
    assert (doc["status"], doc["resultString"]) == ("succeeded", "alpha ran")
    assert "restarting" not in done.stderr, done.stderr


def test_a_worker_process_that_cannot_start_stops_the_supervisor_with_its_reason(embedded: str,
                                                                                 tmp_path: Path) -> None:
    (tmp_path / "child_broken.py").write_text(
        "import sys\n"
        "if '--child' in sys.argv:\n"
        "    raise ImportError('this module refuses worker processes')\n"
    )
    done = run_worker("-m", "engine_jobs", "-m", "child_broken", "-c", "2", timeout=30,
                      env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 78, done.stderr
    assert "stopping" in done.stderr and "this module refuses worker processes" in done.stderr
    assert "restarting" not in done.stderr, done.stderr


# -- what a job does to its worker process (issue 10, items 2, 15, 16) --


@pytest.mark.parametrize("how, code, words", [
    ("exit3", "exception", "sys.exit(3)"),
    ("exit0", "exception", "sys.exit(0)"),
    ("interrupt", "exception", "KeyboardInterrupt"),
    ("set", "exception", "'payload'"),
    ("object", "exception", "'resultCode'"),
    ("nan", "exception", "'resultCode'"),
    ("assign", "invalid-document", "'payload'"),
    ("assign_nan", "invalid-document", "'payload'"),
])
def test_a_job_cannot_end_its_worker_process(embedded: str, how: str, code: str, words: str) -> None:
    uuid = enqueue("engine_misbehave", ttr=2, how=how)
    done = run_worker("-m", "engine_jobs", "-q", "engine_misbehave", timeout=60)
    assert done.returncode == 0, done.stderr
    j = job(uuid)
    assert (j.status, j.attempts, j.failures) == ("failed", 2, 2), j.errors
    assert [e["errorCode"] for e in j.errors] == [code, code]
    assert words in j.errors[-1]["msg"], j.errors[-1]["msg"]
    assert "exited with" not in done.stderr and "restarting" not in done.stderr, done.stderr


def restart_delays(output: str) -> list[float]:
    return [float(d) for d in re.findall(r"restarting in ([0-9.]+) s", output)]


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_job_that_kills_its_process_is_recorded_with_the_signal_and_fails_after_its_retries(
        backend: dict[str, str], processes: str) -> None:
    uuid = enqueue("engine_crash", ttr=2)
    done = run_worker("-m", "engine_jobs", "-q", "engine_crash", "-c", processes, timeout=90)
    assert done.returncode == 0, done.stderr
    j = job(uuid)
    assert (j.status, j.attempts, j.failures) == ("failed", 2, 2), j.errors
    assert [e["errorCode"] for e in j.errors] == ["worker-crashed", "worker-crashed"], j.errors
    assert client().stats_tube("engine_crash")["buried"] == 1  # kept for an operator to kick
    for e in j.errors:
        assert re.fullmatch(r"attempt [12] did not finish: worker process \d+ died: killed by SIGKILL", e["msg"]), e
    assert restart_delays(done.stderr) and set(restart_delays(done.stderr)) == {0.0}, \
        "a death the job caused must not slow the restarts"


def test_burst_waits_for_a_job_reserved_by_a_dead_process(embedded: str) -> None:
    uuid = enqueue("engine_crash_once", ttr=2)
    done = run_worker("-m", "engine_jobs", "-q", "engine_crash", "-c", "2", timeout=60)
    assert done.returncode == 0, done.stderr
    j = job(uuid)
    assert (j.status, j.attempts) == ("succeeded", 2), j.errors
    assert j.errors[0]["errorCode"] == "worker-crashed"
    assert j.errors[0]["msg"].endswith("exited with status 7")


def pid_of(uuid: str) -> int:
    worker = job(uuid).worker
    assert worker is not None
    return int(worker.rsplit(":", 1)[1])


def test_max_jobs_per_child_replaces_the_process_after_its_jobs(embedded: str) -> None:
    uuids = [enqueue("engine_limits_noop") for _ in range(3)]
    done = run_worker("-m", "engine_jobs", "-q", "engine_limits", "--max-jobs-per-child", "2")
    assert done.returncode == 0, done.stderr
    assert [job(u).status for u in uuids] == ["succeeded"] * 3
    first, second, third = map(pid_of, uuids)
    assert first == second != third
    assert "reached its limit; replacing it" in done.stderr
    assert "exited with" not in done.stderr, "a replacement is not a death"


def test_max_memory_per_child_replaces_a_process_that_kept_memory(embedded: str) -> None:
    hog = enqueue("engine_memory_hog")
    after = enqueue("engine_limits_noop")
    done = run_worker("-m", "engine_jobs", "-q", "engine_limits", "--max-memory-per-child", "150")
    assert done.returncode == 0, done.stderr
    assert (job(hog).status, job(after).status) == ("succeeded", "succeeded")
    assert pid_of(hog) != pid_of(after)
    assert "over --max-memory-per-child 150 MB" in done.stderr
