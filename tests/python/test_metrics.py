"""Prometheus metrics (geyser.metrics) from real processes: a `-c 2` worker's --metrics-port
summing both children's counters, the API server's GET /metrics after enqueues, cancels and
retries through it, and a store URL with a password that never reaches a label or a log."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import geyser
import jobs_for_tests  # noqa: F401  (registers the job types)
from conftest import POSTGRES_URL, Beanstalkd, NetworkStore, free_port, job, run_worker, wait_for, worker_env
from jobs_for_tests import EchoJob, FailJob, SlowJob

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Process:
    """A background `python -m geyser.<module> ARGS`, its output in a file (a pipe could fill)."""

    def __init__(self, log: Path, module: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self.log_file = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", f"geyser.{module}", *args], env=worker_env(env),
                                     stdout=self.log_file, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(40)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self.log_file.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[Process]]:
    """Processes a test starts; stopped (SIGTERM, then SIGKILL) at its end."""
    started: list[Process] = []
    yield started
    for p in started:
        p.stop()


def start(started: list[Process], tmp_path: Path, module: str, *args: str,
          env: dict[str, str] | None = None) -> Process:
    p = Process(tmp_path / f"{module}-{len(started)}.log", module, *args, env=env)
    started.append(p)
    return p


def scrape(port: int, path: str = "/metrics") -> str:
    """The text at http://127.0.0.1:port/path; empty while nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain"), response.headers["Content-Type"]
            return response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return ""


def samples(text: str) -> Samples:
    """Every sample of the exposition text, by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the process never exported it (a counter never touched)."""
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def counts(found: Samples, name: str) -> dict[tuple[str, str], float]:
    """``name``'s nonzero values by (job_type, queue)."""
    result = {}
    for (sample, labels), v in found.items():
        if sample == name and v:
            d = dict(labels)
            result[(d["job_type"], d["queue"])] = v
    return result


# -- a worker's --metrics-port ----------------------------------------------------------------


def test_metrics_port_of_two_worker_processes_sums_both(backend: dict[str, str], tmp_path: Path,
                                                        processes: list[Process]) -> None:
    port = free_port()
    # The long job holds one child; every other job then runs in the other.
    long = SlowJob(seconds=60)
    long.enqueue()
    workers = start(processes, tmp_path, "worker", "-m", "jobs_for_tests", "-c", "2", "--metrics-port", str(port))
    wait_for("the long job to run", lambda: job(long.uuid).status == "running")
    echoes = [EchoJob(message=f"m{i}").enqueue() for i in range(3)]
    retried = FailJob(mode="continue", succeed_on=2).enqueue()  # fails once, then succeeds
    gave_up = FailJob(mode="crash").enqueue()  # MAX_RETRIES 2: three attempts, then failed and buried
    failed = FailJob(mode="finish").enqueue()  # fails for good at once
    for uuid in [*echoes, retried]:
        wait_for(f"job {uuid} to succeed", lambda u=uuid: job(u).status == "succeeded")
    for uuid in (gave_up, failed):
        wait_for(f"job {uuid} to fail", lambda u=uuid: job(u).status == "failed")
    long.cancel()
    wait_for("the long job to be cancelled", lambda: job(long.uuid).status == "cancelled")
    pids = {job(u).worker.rsplit(":", 1)[1] for u in [long.uuid, *echoes, retried, gave_up, failed]}
    assert len(pids) == 2, f"both worker processes ran jobs: {pids}"

    expected = {
        "geyser_jobs_started_total": {("echo", "echo"): 3, ("fail", "fail"): 2 + 3 + 1, ("slow", "slow"): 1},
        "geyser_jobs_succeeded_total": {("echo", "echo"): 3, ("fail", "fail"): 1},
        "geyser_jobs_retried_total": {("fail", "fail"): 1 + 2},
        "geyser_jobs_failed_total": {("fail", "fail"): 2},
        "geyser_jobs_cancelled_total": {("slow", "slow"): 1},
        "geyser_jobs_enqueued_total": {},
        "geyser_jobs_running": {},
    }

    def settled() -> Samples | None:
        found = samples(scrape(port))
        return found if all(counts(found, name) == want for name, want in expected.items()) else None

    found = wait_for("the worker metrics to count every attempt", settled, timeout=15)
    # Every attempt started is in the run-time histogram, under the outcome it ended with.
    observed: dict[str, float] = {}
    for (name, labels), v in found.items():
        if name == "geyser_job_run_seconds_count":
            outcome = dict(labels)["outcome"]
            observed[outcome] = observed.get(outcome, 0) + v
    assert observed == {"succeeded": 4, "continue": 4, "finish": 1, "cancelled": 1}, observed
    assert value(found, "geyser_queue_jobs", queue="fail", state="buried") == 1
    assert value(found, "geyser_queue_jobs", queue="echo", state="ready") == 0
    assert value(found, "geyser_heartbeat_failures_total") == 0
    assert ("geyser_heartbeat_failures_total", ()) in found
    # The worker's log has one line per transition, with uuid, type and attempt.
    log = workers.output
    assert f"job {long.uuid} (slow) attempt 1: cancelled after " in log
    assert f"job {gave_up} (fail) attempt 2: retrying after " in log
    assert f"job {gave_up} (fail) attempt 3: gave up after " in log
    assert f"job {failed} (fail) attempt 1: failed after " in log
    assert f"job {retried} (fail) attempt 2: started on queue fail" in log
    assert workers.stop() == 0, workers.output
    assert scrape(port) == "", "the metrics port closes with the supervisor"


def test_heartbeat_failures_are_counted(beanstalkd: Beanstalkd, tmp_path: Path, processes: list[Process]) -> None:
    port = free_port()
    long = SlowJob(seconds=60)
    long.enqueue(ttr=3)  # a queue touch every second
    start(processes, tmp_path, "worker", "-m", "jobs_for_tests", "-c", "1", "--grace", "1", "--metrics-port", str(port))
    wait_for("the job to run", lambda: job(long.uuid).status == "running")
    assert value(samples(scrape(port)), "geyser_heartbeat_failures_total") == 0
    beanstalkd.stop()  # the heartbeat's touches now fail
    wait_for("a heartbeat failure to be counted",
             lambda: value(samples(scrape(port)), "geyser_heartbeat_failures_total") >= 1)


def test_metrics_port_already_taken_is_a_clear_error(embedded: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_worker("-c", "1", "--metrics-port", str(port), timeout=30)
    assert done.returncode == 78, done.stderr
    assert f"--metrics-port {port} on 127.0.0.1" in done.stderr, done.stderr


@pytest.mark.parametrize("port", ["0", "70000"])
def test_metrics_port_out_of_range_is_refused(embedded: str, port: str) -> None:
    done = run_worker("--metrics-port", port, timeout=30)
    assert done.returncode == 2 and "--metrics-port must be a TCP port from 1 to 65535" in done.stderr, done.stderr


# -- the API server's /metrics ----------------------------------------------------------------


def api(port: int, method: str, path: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_server_metrics_count_what_went_through_the_api(backend: dict[str, str], tmp_path: Path,
                                                       processes: list[Process]) -> None:
    port = free_port()
    server = start(processes, tmp_path, "server", "--port", str(port), "-m", "jobs_for_tests")
    wait_for("the server to answer", lambda: scrape(port))
    uuids = [api(port, "POST", "/jobs/echo", {"message": m})[1]["uuid"] for m in ("a", "b", "c")]
    to_fail = api(port, "POST", "/jobs/fail", {"mode": "finish"})[1]["uuid"]
    assert api(port, "DELETE", f"/jobs/{uuids[2]}")[0] == 202  # a queued job: cancelled at once
    assert run_worker("-q", "fail").returncode == 0
    assert job(to_fail).status == "failed"
    assert api(port, "POST", f"/jobs/{to_fail}/retry")[0] == 202
    assert api(port, "POST", f"/jobs/{to_fail}/retry")[0] == 409  # not counted: nothing was retried
    found = samples(scrape(port))
    assert counts(found, "geyser_jobs_enqueued_total") == {("echo", "echo"): 3, ("fail", "fail"): 1}
    assert counts(found, "geyser_jobs_cancelled_total") == {("echo", "echo"): 1}
    assert counts(found, "geyser_jobs_retried_total") == {("fail", "fail"): 1}
    assert counts(found, "geyser_jobs_started_total") == {}, "the server runs no jobs"
    assert value(found, "geyser_queue_jobs", queue="echo", state="ready") == 2
    assert value(found, "geyser_queue_jobs", queue="fail", state="ready") == 1
    for queue in ("echo", "fail", "slow", "steps"):
        for state in ("ready", "delayed", "reserved", "buried"):
            assert ("geyser_queue_jobs", (("queue", queue), ("state", state))) in found
    assert any(name.startswith("process_") for name, _ in found), "the library's process metrics are there"
    assert server.stop() == 0, server.output


def test_server_metrics_leave_out_a_queue_that_does_not_answer(beanstalkd: Beanstalkd, tmp_path: Path,
                                                             processes: list[Process]) -> None:
    port = free_port()
    server = start(processes, tmp_path, "server", "--port", str(port), "-m", "jobs_for_tests")
    wait_for("the server to answer", lambda: scrape(port))
    beanstalkd.stop()
    found = samples(scrape(port))
    assert not [k for k in found if k[0] == "geyser_queue_jobs"], found
    assert value(found, "geyser_queue_errors_total", operation="stats") == 4, found
    assert server.stop() == 0
    assert "no depth of queue 'echo'" in server.output, server.output


# -- no password in a label or a log line ---------------------------------------------------------


def test_a_store_password_never_reaches_metrics_or_logs(tmp_path: Path, processes: list[Process],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    password = "s3cret"
    queue = Beanstalkd()
    store = NetworkStore("postgresql")  # the shared server trusts local connections: any password works
    try:
        assert POSTGRES_URL.startswith("postgresql://postgres@"), POSTGRES_URL
        url = store.url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
        env = {"GEYSER_QUEUE_URL": queue.url, "GEYSER_STORE_URL": url}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        geyser.configure()
        uuids = [EchoJob(message="hi").enqueue(), FailJob(mode="crash").enqueue()]
        worker_port, server_port = free_port(), free_port()
        workers = start(processes, tmp_path, "worker", "-m", "jobs_for_tests", "-c", "2", "--log-level", "DEBUG",
                        "--metrics-port", str(worker_port), env=env)
        server = start(processes, tmp_path, "server", "--port", str(server_port), "-m", "jobs_for_tests",
                       "--log-level", "DEBUG", "--log-format", "json", env=env)
        wait_for("the server to answer", lambda: scrape(server_port))
        uuids.append(api(server_port, "POST", "/jobs/echo", {"message": "via the api"})[1]["uuid"])
        for uuid in uuids:
            wait_for(f"job {uuid} to finish", lambda u=uuid: job(u).status in ("succeeded", "failed"))
        started = {("echo", "echo"): 2, ("fail", "fail"): 3}
        worker_text = wait_for("the worker metrics to count every attempt", lambda: (
            text if counts(samples(text := scrape(worker_port)), "geyser_jobs_started_total") == started else ""))
        server_text = scrape(server_port)
        assert counts(samples(server_text), "geyser_jobs_enqueued_total") == {("echo", "echo"): 1}
        assert workers.stop() == 0 and server.stop() == 0
        for what, text in (("worker metrics", worker_text), ("server metrics", server_text),
                           ("worker log", workers.output), ("server log", server.output)):
            assert text, f"{what} is empty"
            assert password not in text, f"the store password is in the {what}"
        assert "geyser.worker" in workers.output and "geyser server on" in server.output
    finally:
        geyser.configure()
        queue.stop()
        store.drop()
