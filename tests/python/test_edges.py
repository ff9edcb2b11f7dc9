"""What a careless user or a broken input does: values a document cannot hold, forged
lifecycle fields, other applications' jobs on a shared queue, and the operations that bring
a failed job back (retry, kick, delete) or wait for one. Real worker processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

import beta_jobs  # noqa: F401  (registers "beta" in this producer process)
import edge_jobs
import jobs_for_tests  # noqa: F401  (registers "echo")
import geyser
from conftest import run_worker, wait_for, worker_env
from geyser.config import client

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def stored(uuid: str) -> dict[str, Any]:
    doc = client().get(uuid)
    assert doc is not None, f"job {uuid} is gone"
    return json.loads(doc)


# -- 1. what enqueue accepts, a worker can load ------------------------------------------------


def test_readme_skeleton_runs_with_no_values(embedded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import my_job

    uuid = my_job.make_my_job({}).enqueue()
    back = geyser.get_base_job(uuid)
    assert back is not None and back.fieldOne is None
    assert "fieldOne" not in stored(uuid)  # unset stays unset
    done = run_worker("-m", "my_job", env={"PYTHONPATH": str(EXAMPLES)})
    assert done.returncode == 0, done.stderr
    assert stored(uuid)["status"] == "succeeded", done.stderr


def test_a_null_stored_by_an_older_version_still_loads(embedded: str) -> None:
    job = geyser.make_base_job({}, "careless")
    job.enqueue()
    doc = stored(job.uuid)
    doc["label"] = None
    client().save(json.dumps(doc))
    assert stored(job.uuid)["label"] is None
    back = geyser.get_base_job(job.uuid)
    assert back is not None and back.label is None


def test_a_value_the_schema_would_refuse_is_refused_at_enqueue(embedded: str) -> None:
    job = geyser.make_base_job({"message": "x"}, "echo")
    job.count = "many"
    with pytest.raises(ValidationError) as err:
        job.enqueue()
    assert "count" in err.value.messages
    assert client().get(job.uuid) is None


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"payload": {1, 2}}, "payload"),
        ({"payload": float("nan")}, "payload"),
        ({"payload": [float("inf")]}, "payload"),
        ({"payload": 10**301}, "payload"),
        ({"label": "\ud800"}, "label"),
    ],
)
def test_values_a_document_cannot_hold_are_refused_naming_the_field(
    embedded: str, values: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        geyser.make_base_job(values, "careless")
    assert field in err.value.messages, err.value.messages


def test_progress_calls_refuse_what_a_document_cannot_hold_and_set_nothing(embedded: str) -> None:
    job = geyser.make_base_job({"label": "a"}, "careless")
    job.enqueue()
    with pytest.raises(ValidationError) as err:
        job.update_attrs(payload={1, 2})
    assert list(err.value.messages) == ["payload"]
    assert job.payload is None
    with pytest.raises(ValidationError) as err:
        job.record_result(object(), "x")
    assert "resultCode" in err.value.messages
    with pytest.raises(ValidationError) as err:
        job.record_error(float("nan"), "a NaN error code")
    assert "errors" in err.value.messages and job.errors == []
    assert json.loads(client().get(job.uuid) or "{}").get("resultCode") is None


@pytest.mark.parametrize("mistake", ["set", "object", "nan"])
def test_a_careless_run_is_that_attempts_error_and_the_worker_lives(embedded: str, mistake: str) -> None:
    bad = geyser.make_base_job({"mistake": mistake}, "careless").enqueue()
    good = geyser.make_base_job({"message": "after"}, "echo").enqueue()
    done = run_worker("-m", "edge_jobs")
    assert done.returncode == 0, done.stderr
    doc = stored(bad)
    assert doc["status"] == "failed", doc
    field = "resultCode" if mistake == "object" else "payload"
    assert field in doc["errors"][-1]["msg"], doc["errors"]
    assert stored(good)["status"] == "succeeded"


# -- 3. the engine owns the lifecycle ------------------------------------------------------------


def test_save_cannot_forge_the_lifecycle(embedded: str) -> None:
    uuid = geyser.make_base_job({"message": "real"}, "echo").enqueue()
    before = stored(uuid)
    job = geyser.get_base_job(uuid)
    assert job is not None
    job.status, job.attempts, job.fence, job.queueJobId = "succeeded", 7, "forged", "0:999"
    job.expiresAt, job.failures, job.completeness = time.time() + 60, 9, 0.25
    job.message = "mine"
    job.save()
    after = stored(uuid)
    for field in ["status", "attempts", "fence", "queueJobId", "expiresAt", "failures", "createdAt"]:
        assert after[field] == before[field], field
    assert (after["message"], after["completeness"]) == ("mine", 0.25)  # the job's own fields and progress
    assert (job.status, job.attempts, job.fence) == ("queued", 0, None)  # the object is set right too


def test_enqueue_sets_the_lifecycle_itself(embedded: str) -> None:
    job = geyser.make_base_job({"message": "x"}, "echo")
    job.status, job.attempts, job.fence, job.cancelRequested = "succeeded", 3, "forged", True
    doc = stored(job.enqueue())
    assert (doc["status"], doc["attempts"], doc["fence"], doc["cancelRequested"]) == ("queued", 0, None, False)


def test_history_can_only_grow(embedded: str) -> None:
    job = geyser.make_base_job({"message": "x"}, "echo")
    job.record_event("first")
    job.enqueue()
    job.events = []
    with pytest.raises(geyser.InvalidDocument, match="events"):
        job.save()
    assert [e["msg"] for e in stored(job.uuid)["events"]] == ["first"]


# -- 5. a worker never buries another application's job --------------------------------------------


def test_queue_name_defaults_to_the_job_type() -> None:
    assert edge_jobs.CarelessJob.QUEUE_NAME == "careless"
    assert edge_jobs.AlphaJob.QUEUE_NAME == "shared_queue"

    class Child(edge_jobs.AlphaJob):
        JOB_TYPE = "alpha_child_for_test"

    assert Child.QUEUE_NAME == "shared_queue"  # an explicit queue is inherited
    with pytest.raises(ValueError, match="not a valid queue name"):

        class Spaced(geyser.BaseJob):
            JOB_TYPE = "has space"


def test_a_worker_leaves_other_applications_jobs_alone(embedded: str) -> None:
    uuid = geyser.make_base_job({}, "beta").enqueue()
    cmd = [sys.executable, "-m", "geyser.worker", "-c", "1", "-m", "edge_jobs"]
    alpha_only = subprocess.Popen(cmd, env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the alpha-only worker to release the beta job",
             lambda: any(e["action"] == "unknown-type-released" for e in stored(uuid)["events"]))
    finally:
        alpha_only.terminate()
        _, err = alpha_only.communicate(timeout=30)
    doc = stored(uuid)
    assert (doc["status"], doc["attempts"], doc["errors"]) == ("queued", 0, []), err
    assert client().stats_tube("shared_queue")["buried"] == 0
    done = run_worker("-m", "beta_jobs")
    assert done.returncode == 0, done.stderr
    doc = stored(uuid)
    assert (doc["status"], doc["attempts"], doc["resultString"]) == ("succeeded", 1, "beta ran"), doc


# -- 6. the way back for a failed job: retry, kick, delete ---------------------------------------


def test_retry_brings_a_failed_job_back_with_its_history(backend: dict[str, str]) -> None:
    job = geyser.make_base_job({"failing": 1, "how": "finish"}, "fail_once")
    job.enqueue()
    assert run_worker("-m", "edge_jobs").returncode == 0
    job.reload()
    assert (job.status, job.attempts) == ("failed", 1)
    job.retry()
    assert (job.status, job.failures, job.attempts) == ("queued", 0, 1)
    assert job.events[-1]["action"] == "retry"
    done = run_worker("-m", "edge_jobs")
    assert done.returncode == 0, done.stderr
    doc = stored(job.uuid)
    assert (doc["status"], doc["attempts"], len(doc["errors"])) == ("succeeded", 2, 1), doc
    with pytest.raises(geyser.InvalidTransition, match="succeeded"):
        job.retry()


def test_kick_runs_a_buried_job_again(backend: dict[str, str]) -> None:
    uuid = geyser.make_base_job({"failing": 1, "how": "continue"}, "fail_once").enqueue()
    assert run_worker("-m", "edge_jobs").returncode == 0
    assert stored(uuid)["status"] == "failed"
    assert client().stats_tube("fail_once")["buried"] == 1
    assert geyser.kick("fail_once", 10) == 1
    done = run_worker("-m", "edge_jobs")
    assert done.returncode == 0, done.stderr
    doc = stored(uuid)
    assert (doc["status"], doc["attempts"], doc["failures"]) == ("succeeded", 2, 0), doc
    assert client().stats_tube("fail_once")["buried"] == 0


def test_delete_forgets_finished_jobs_only(backend: dict[str, str]) -> None:
    queued = geyser.make_base_job({"message": "x"}, "echo")
    queued.enqueue()
    with pytest.raises(geyser.InvalidTransition, match="queued"):
        queued.delete()
    queued.cancel()
    queued.delete()
    assert client().get(queued.uuid) is None
    buried = geyser.make_base_job({"failing": 1, "how": "continue"}, "fail_once")
    buried.enqueue()
    assert run_worker("-m", "edge_jobs").returncode == 0
    assert client().stats_tube("fail_once")["buried"] == 1
    buried.delete()
    assert client().get(buried.uuid) is None
    assert client().stats_tube("fail_once")["buried"] == 0
    with pytest.raises(geyser.JobNotFound):
        buried.delete()


# -- 7. waiting for a job from plain Python -------------------------------------------------------


def test_wait_returns_the_final_document(embedded: str) -> None:
    job = geyser.make_base_job({"seconds": 0.3}, "slow")
    job.enqueue()
    with pytest.raises(geyser.WaitTimeout, match="queued"):
        job.wait(timeout=0.2)
    worker = subprocess.Popen([sys.executable, "-m", "geyser.worker", "-c", "1", "--burst", "-m", "edge_jobs"],
                              env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        doc = job.wait(timeout=60)
    finally:
        worker.wait(timeout=60)
    assert doc["status"] == "succeeded" and job.status == "succeeded"


def test_wait_async(embedded: str) -> None:
    job = geyser.make_base_job({"message": "async"}, "echo")
    job.enqueue()

    async def main() -> dict[str, Any]:
        with pytest.raises(geyser.WaitTimeout):
            await job.wait_async(timeout=0.1)
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "geyser.worker", "-c", "1", "--burst", "-m", "jobs_for_tests", env=worker_env())
        try:
            return await job.wait_async(timeout=60)
        finally:
            await worker.wait()

    assert asyncio.run(main())["status"] == "succeeded"


# -- 13. one malformed document never wedges a worker ---------------------------------------------


def test_a_row_that_contradicts_its_json_is_buried_not_spun_on(embedded: str) -> None:
    import sqlite3

    bad = geyser.make_base_job({"message": "hand-edited"}, "echo").enqueue()
    good = geyser.make_base_job({"message": "fine"}, "echo").enqueue()
    with sqlite3.connect(embedded.removeprefix("sqlite://")) as conn:
        conn.execute("UPDATE geyser_documents SET job_type = 'migrated' WHERE uuid = ?", (bad,))
    done = run_worker(timeout=60)
    assert done.returncode == 0, done.stderr
    assert "inconsistent" in done.stderr and bad in done.stderr, done.stderr
    assert client().stats_tube("echo")["buried"] == 1
    assert stored(good)["status"] == "succeeded"


def test_an_entry_that_is_no_job_is_buried_and_quoted_short(beanstalkd: Any) -> None:
    import greenstalk

    with greenstalk.Client(("127.0.0.1", beanstalkd.port), use="echo") as raw:
        raw.put(b"not-a-uuid-" + b"x" * 50_000)
    kept = geyser.make_base_job({"message": "kept"}, "echo").enqueue()
    done = run_worker(timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "is not a job uuid" in line]
    assert len(lines) == 1 and len(lines[0]) < 500, lines
    assert "50011 bytes" in lines[0]
    assert client().stats_tube("echo")["buried"] == 1
    assert stored(kept)["status"] == "succeeded"


def test_the_new_operations_refuse_careless_input_clearly(embedded: str) -> None:
    ghost = geyser.make_base_job({"message": "never enqueued"}, "echo")
    for call in (ghost.retry, ghost.delete, lambda: ghost.wait(timeout=1)):
        with pytest.raises(geyser.JobNotFound, match=ghost.uuid):
            call()
    with pytest.raises(geyser.errors.InvalidDocument, match="bad tube name"):
        geyser.kick("no spaces allowed", 1)
    assert geyser.kick("a_queue_nobody_used", 5) == 0
    queued = geyser.make_base_job({"message": "x"}, "echo")
    queued.enqueue()
    with pytest.raises(geyser.WaitTimeout):
        queued.wait(timeout=0)
    with pytest.raises(geyser.WaitTimeout):
        queued.wait(timeout=-5)

    async def async_forms() -> None:
        with pytest.raises(geyser.JobNotFound):
            await ghost.retry_async()
        with pytest.raises(geyser.InvalidTransition, match="queued"):
            await queued.delete_async()
        with pytest.raises(geyser.WaitTimeout):
            await queued.wait_async(timeout=0)

    asyncio.run(async_forms())
