"""Every row of the lifecycle table with real worker processes, on the
embedded queue and on beanstalkd with each store: SQLite, PostgreSQL and Redis."""

from __future__ import annotations

import time

import pytest

import geyser
from geyser.config import client
import jobs_for_tests  # noqa: F401  (registers the job types this producer enqueues)
from conftest import EVERY_BACKEND, job, run_worker, wait_for

pytestmark = pytest.mark.parametrize("backend", EVERY_BACKEND, indirect=True)


def enqueue(job_type: str, **values: object) -> str:
    return geyser.make_base_job(values, job_type).enqueue()


def test_success_records_progress_and_result(backend: dict[str, str]) -> None:
    uuid = enqueue("echo", message="hi")
    done = run_worker()
    assert done.returncode == 0, done.stderr
    j = job(uuid)
    assert (j.status, j.completeness, j.attempts) == ("succeeded", 1.0, 1)
    assert j.events[0]["msg"] == "attempt 1: hi"
    assert (j.resultCode, j.resultString) == (0, "HI")
    assert j.startedAt and j.finishedAt and j.finishedAt >= j.startedAt
    stats = client().stats_tube("echo")
    assert stats["ready"] == stats["reserved"] == stats["buried"] == 0


def test_requeue_runs_again_later_and_is_not_a_failure(backend: dict[str, str]) -> None:
    uuid = enqueue("step", steps=2, wait=1.0)
    assert run_worker().returncode == 0
    j = job(uuid)
    assert (j.status, j.steps_done, j.attempts, j.failures) == ("succeeded", 2, 2, 0)
    first, second = (float(e["msg"].split(" at ")[1]) for e in j.events)
    assert second - first >= 0.9, j.events


def test_wf_error_finish_fails_without_retry(backend: dict[str, str]) -> None:
    uuid = enqueue("fail", mode="finish")
    assert run_worker().returncode == 0
    j = job(uuid)
    assert (j.status, j.attempts) == ("failed", 1)
    assert j.errors[-1]["errorCode"] == 42 and j.errors[-1]["msg"] == "cannot go on"
    stats = client().stats_tube("fail")
    assert stats["buried"] == 0 and stats["ready"] == 0


def test_wf_error_continue_retries_then_buries(backend: dict[str, str]) -> None:
    uuid = enqueue("fail", mode="continue")
    assert run_worker().returncode == 0
    j = job(uuid)
    assert (j.status, j.attempts, j.tries) == ("failed", 3, 3)
    assert [e["errorCode"] for e in j.errors] == [7, 7, 7]
    assert [e["attempt"] for e in j.errors] == [1, 2, 3]
    assert client().stats_tube("fail")["buried"] == 1


def test_exception_records_traceback_and_retry_can_succeed(backend: dict[str, str]) -> None:
    uuid = enqueue("fail", mode="crash", succeed_on=2)
    assert run_worker().returncode == 0
    j = job(uuid)
    assert (j.status, j.attempts, j.tries) == ("succeeded", 2, 2)
    assert "ZeroDivisionError" in j.errors[0]["msg"]
    assert "Traceback" in j.errors[0]["traceback"] and "crashed on purpose" in j.errors[0]["traceback"]


def test_priority_and_delay(backend: dict[str, str]) -> None:
    """Of the jobs ready when a worker reserves, the lowest priority number starts first, then
    the one put first; a delayed job is not ready before its delay is over, and then keeps its
    place by put order (docs/lifecycle.md, "Which job starts next"). Which jobs are ready at
    a reserve must not hang on how soon the worker process comes up (it once took longer than
    a 1.5 s delay on a loaded machine): `late` is ready before the others are put, so the order
    of the three is certain; for `urgent`, delayed, only that it never starts early."""
    late = geyser.make_base_job({"message": "late"}, "echo")
    late.enqueue(delay=1.5)
    assert geyser.flush(30) == 0  # on its queue (a relay puts it, off the embedded file)
    wait_for("the delayed job to be ready", lambda: client().stats_tube("echo")["delayed"] == 0)
    urgent = geyser.make_base_job({"message": "urgent"}, "echo")
    urgent.enqueue(delay=1.5, priority=0)
    low = enqueue("echo", message="low")
    high = geyser.make_base_job({"message": "high"}, "echo")
    high.enqueue(priority=1)
    assert run_worker().returncode == 0
    j_late, j_low, j_high, j_urgent = job(late.uuid), job(low), job(high.uuid), job(urgent.uuid)
    # high, late and low were all ready at the worker's first reserve, whenever that came;
    # urgent starts before, between or after them, as its delay ends before or after their reserves.
    assert j_high.startedAt < j_late.startedAt < j_low.startedAt
    for delayed in (j_late, j_urgent):
        assert delayed.startedAt >= delayed.createdAt + 1.5


class OrphanJob(geyser.BaseJob):
    """Known to the tests, not to their workers: it shares the echo queue."""

    JOB_TYPE = "orphan"
    QUEUE_NAME = "echo"


def test_missing_document_is_buried_and_the_worker_goes_on(backend: dict[str, str], tmp_path) -> None:
    lost = enqueue("echo", message="lost")
    other_store = f"sqlite://{tmp_path / 'other.db'}"
    done = run_worker(env={"GEYSER_STORE_URL": other_store})
    assert done.returncode == 0, done.stderr
    assert f"job {lost} (queue job" in done.stderr and "no document" in done.stderr
    assert job(lost).status == "queued"
    assert client().stats_tube("echo")["buried"] == 1
    kept = enqueue("echo", message="kept")
    assert run_worker().returncode == 0
    assert job(kept).status == "succeeded"


def test_unknown_job_type_is_released_for_another_worker_not_buried(backend: dict[str, str]) -> None:
    orphan = OrphanJob().enqueue()
    kept = enqueue("echo", message="kept")
    done = run_worker()  # --burst: exits although the orphan waits on its queue
    assert done.returncode == 0, done.stderr
    j = job(orphan)
    assert (j.status, j.attempts, j.errors) == ("queued", 0, [])
    assert j.events[-1]["action"] == "unknown-type-released" and "orphan" in j.events[-1]["msg"]
    assert client().stats_tube("echo")["buried"] == 0
    assert job(kept).status == "succeeded"


def test_attempts_inside_run_is_one_based(backend: dict[str, str]) -> None:
    uuid = enqueue("echo", message="n")
    run_worker()
    assert job(uuid).events[0]["msg"].startswith("attempt 1:")


def test_burst_worker_with_nothing_to_do_exits(backend: dict[str, str]) -> None:
    start = time.time()
    assert run_worker().returncode == 0
    assert time.time() - start < 30
