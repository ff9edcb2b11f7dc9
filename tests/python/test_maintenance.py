"""The maintenance sweep from Python: one process at a time sweeps (the holder of the
store's maintenance lease, as the supervisor is once it has swept), the command-line
sweep gives way to it unless forced, and an unreadable document is reported, not fatal."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import wait_for, worker_env

import geyser
from geyser import maintenance
from geyser.config import client


def run_sweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "geyser.maintenance", "--min-age", "0", *args],
                          env=worker_env(), capture_output=True, text=True, timeout=60)


class LostJob(geyser.BaseJob):
    """A job whose queue entry a beanstalkd restart without binlog will lose."""

    JOB_TYPE = "maintenance_lost"
    QUEUE_NAME = "maintenance_lost"


def test_the_lease_holder_sweeps_and_the_command_gives_way_unless_forced(beanstalkd) -> None:
    first = maintenance.sweep(min_age=0)
    assert first["leader"] and first["holder"] == maintenance.lease_holder(), first
    jobs = [LostJob() for _ in range(3)]
    for job in jobs:
        job.enqueue()
    assert geyser.flush(30) == 0  # the entries are on the server when it dies
    beanstalkd.stop()
    beanstalkd.start()  # no binlog: the entries are gone, the documents still say queued

    follower = run_sweep()
    assert follower.returncode == 0, follower.stderr
    assert f"skipped: {maintenance.lease_holder()} holds the maintenance lease" in follower.stdout
    assert client().stats_tube("maintenance_lost")["ready"] == 0, "the follower put nothing"

    forced = run_sweep("--force")
    assert forced.returncode == 0, forced.stderr
    assert "requeued 3," in forced.stdout
    assert client().stats_tube("maintenance_lost")["ready"] == 3

    again = maintenance.sweep(min_age=0)
    assert again["leader"] and again["requeued"] == 0, again


def test_an_unreadable_document_is_reported_and_the_sweep_goes_on(embedded: str) -> None:
    kept = LostJob()
    kept.enqueue()
    bad = str(uuid.uuid4())
    db = Path(embedded.removeprefix("sqlite://"))
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO geyser_documents (uuid, version, status, job_type, updated_at, expires_at, doc)"
                     " VALUES (?, 1, 'queued', 'maintenance_lost', 1.0, NULL, '{\"jobType\": 5')", (bad,))
    swept = run_sweep()
    assert swept.returncode == 0, swept.stderr
    assert "requeued 0, recovered 0, purged 0, unreadable 1, skipped 0, errors 0" in swept.stdout
    assert bad in swept.stderr, "the log names the unreadable document"
    assert geyser.get_base_job(kept.uuid) is not None


def test_a_supervisor_that_stops_gives_up_the_lease(embedded: str, tmp_path: Path) -> None:
    """Another host's supervisor (here: the command) sweeps as soon as the leader stops,
    not after the lease's ten minutes."""
    log = (tmp_path / "worker.log").open("w")
    supervisor = subprocess.Popen([sys.executable, "-m", "geyser.worker", "-m", "jobs_for_tests", "-c", "1",
                                   "--sweep-interval", "0.2"], env=worker_env(), stdout=log, stderr=log)
    try:
        wait_for("the supervisor to hold the lease", lambda: "skipped:" in run_sweep().stdout)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        log.close()
    assert "gave up the maintenance lease" in (tmp_path / "worker.log").read_text()
    after = run_sweep()
    assert after.returncode == 0, after.stderr
    assert after.stdout.startswith("requeued 0,"), after.stdout
