"""The Python API (jobs, schemas, enqueue, save, cancel), against the embedded default (no worker needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from marshmallow import ValidationError

import geyser
import geyser.jobs
import geyser.registry
from jobs_for_tests import EchoJob

pytestmark = pytest.mark.usefixtures("embedded")


def test_make_base_job_validates_with_the_schema() -> None:
    job = geyser.jobs.make_base_job({"message": "hi", "count": 3}, "echo")
    assert isinstance(job, EchoJob)
    assert (job.message, job.count) == ("hi", 3)
    with pytest.raises(ValidationError) as err:
        geyser.jobs.make_base_job({"count": "many"}, "echo")
    assert set(err.value.messages) == {"message", "count"}


def test_unknown_fields_and_internal_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as err:
        geyser.jobs.make_base_job({"message": "x", "bogus": 1}, "echo")
    assert "bogus" in err.value.messages
    for internal in ["uuid", "status", "version", "completeness", "attempts", "errors", "events", "resultCode"]:
        with pytest.raises(ValidationError) as err:
            geyser.jobs.make_base_job({"message": "x", internal: 1}, "echo")
        assert internal in err.value.messages


def test_unknown_job_type_is_named() -> None:
    with pytest.raises(geyser.UnknownJobType) as err:
        geyser.jobs.make_base_job({}, "no_such_type")
    assert "no_such_type" in str(err.value)


def test_enqueue_saves_then_reads_back() -> None:
    job = geyser.make_base_job({"message": "hello"}, "echo")
    uuid = job.enqueue(priority=5, ttr=30)
    assert uuid == job.uuid
    assert job.status == "queued" and job.version >= 1
    assert job.queueJobId
    back = geyser.get_base_job(uuid)
    assert isinstance(back, EchoJob)
    assert (back.message, back.count, back.status, back.attempts) == ("hello", 1, "queued", 0)
    assert back.queueKwargs["priority"] == 5 and back.queueKwargs["ttr"] == 30
    assert back.queueKwargs["queue"] == "echo"
    assert back.maxRetries == EchoJob.MAX_RETRIES
    for name in ["createdAt", "updatedAt", "jobType", "completeness", "events", "errors", "resultCode"]:
        assert hasattr(back, name), name
    assert geyser.get_base_job("00000000-0000-0000-0000-000000000000") is None


def test_progress_methods_save_a_stored_job() -> None:
    job = geyser.make_base_job({"message": "p"}, "echo")
    job.enqueue()
    job.set_completeness(0.25)
    job.record_event("started", action="go")
    job.record_error(3, "minor")
    job.record_result(0, "fine")
    back = geyser.get_base_job(job.uuid)
    assert back is not None
    progress = back.progress()
    assert progress["completeness"] == 0.25
    assert progress["status"] == "queued"
    assert progress["events"][0]["msg"] == "started" and progress["events"][0]["action"] == "go"
    assert progress["errors"][0]["errorCode"] == 3 and progress["errors"][0]["msg"] == "minor"
    assert progress["result"] == {"code": 0, "string": "fine"}
    with pytest.raises(ValueError):
        job.set_completeness(1.5)


def test_update_attrs_saves_fields_and_refuses_internal_ones() -> None:
    job = geyser.make_base_job({"message": "a"}, "echo")
    job.enqueue()
    job.update_attrs(message="b")
    back = geyser.get_base_job(job.uuid)
    assert back is not None and back.message == "b"
    with pytest.raises(ValidationError):
        job.update_attrs(status="succeeded")


def test_save_is_compare_and_swap() -> None:
    job = geyser.make_base_job({"message": "a"}, "echo")
    job.enqueue()
    one, two = geyser.get_base_job(job.uuid), geyser.get_base_job(job.uuid)
    assert one is not None and two is not None
    one.message = "one"
    one.save()
    two.message = "two"
    with pytest.raises(geyser.ConflictError):
        two.save()
    two.reload()
    assert two.message == "one"
    two.message = "two"
    two.save()
    assert geyser.get_base_job(job.uuid).message == "two"  # type: ignore[union-attr]


def test_save_leaves_the_fields_fixed_at_enqueue_alone() -> None:
    job = geyser.make_base_job({"message": "a"}, "echo")
    job.enqueue()
    job.expiresAt = time.time() + 60
    job.message = "b"
    job.save()
    assert job.expiresAt is None  # the engine's value, back on the object
    job.reload()
    assert job.expiresAt is None and job.message == "b"


def test_cancel_of_a_queued_job() -> None:
    job = geyser.make_base_job({"message": "c"}, "echo")
    job.enqueue()
    job.cancel()
    assert job.status == "cancelled"
    assert geyser.get_base_job(job.uuid).status == "cancelled"  # type: ignore[union-attr]


def test_job_modules_is_read_when_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "late_jobs.py").write_text(textwrap.dedent("""
        import geyser
        class LateJob(geyser.BaseJob):
            JOB_TYPE = "late_job"
            QUEUE_NAME = "late"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(geyser.registry, "JOB_MODULES", geyser.registry.JOB_MODULES + ["late_jobs"])
    geyser.registry.import_job_modules()
    assert geyser.registry.job_class("late_job").__name__ == "LateJob"


def test_bad_urls_are_named() -> None:
    geyser.configure(queue="rabbit://nowhere")
    try:
        with pytest.raises(geyser.errors.ConfigError) as err:
            geyser.make_base_job({"message": "x"}, "echo").enqueue()
        assert "rabbit://nowhere" in str(err.value)
    finally:
        geyser.configure()


def test_default_location_follows_xdg(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEYSER_")}
    env["XDG_DATA_HOME"] = str(tmp_path)
    env["PYTHONPATH"] = str(Path(__file__).parent)
    code = "import jobs_for_tests, geyser; print(geyser.make_base_job({'message': 'x'}, 'echo').enqueue())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert (tmp_path / "geyser" / "geyser.db").exists(), out.stderr
    assert len(out.stdout.strip()) == 36


def test_document_is_json_with_original_field_names() -> None:
    job = geyser.make_base_job({"message": "doc"}, "echo")
    job.enqueue()
    raw = json.loads(geyser.config.client().get(job.uuid))
    for name in ["documentType", "jobType", "schemaVersion", "createdAt", "updatedAt", "uuid", "logId",
                 "queueKwargs", "queueJobId", "events", "errors", "completeness", "resultCode",
                 "resultString", "status", "attempts", "maxRetries", "startedAt", "finishedAt",
                 "nextRunAt", "worker", "version", "message"]:
        assert name in raw, name
