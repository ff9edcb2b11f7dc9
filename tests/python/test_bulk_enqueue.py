"""geyser.jobs.enqueue_many on the embedded file and on beanstalkd (+ SQLite store; the first
test with every store): a batch of mixed job types is drained by a real worker, each job
once; uuids come back in order; careless input is refused naming the item, with nothing
written; a queue server gone leaves every job saved and pending in this process's relay,
put once the server is back (docs/lifecycle.md "Bulk enqueue")."""

from __future__ import annotations

import asyncio

import pytest
from marshmallow import ValidationError

import geyser
from geyser.config import client
import jobs_for_tests  # noqa: F401  (registers the job types this producer enqueues)
from conftest import EVERY_BACKEND, Beanstalkd, job, run_worker
from geyser.jobs import enqueue_many, enqueue_many_async


def echoes(n: int) -> list[geyser.BaseJob]:
    return [geyser.make_base_job({"message": f"m{i}"}, "echo") for i in range(n)]


def stored_count() -> int:
    return len(client().list(limit=1000))


@pytest.mark.parametrize("backend", EVERY_BACKEND, indirect=True)
def test_a_mixed_batch_is_drained_once_in_order(backend: dict[str, str]) -> None:
    jobs = echoes(150) + [geyser.make_base_job({"steps": 1}, "step") for _ in range(10)]
    uuids = enqueue_many(jobs)
    assert uuids == [j.uuid for j in jobs]
    assert len(set(uuids)) == len(jobs)
    assert all(j.status == "queued" and j.version >= 1 for j in jobs)
    assert geyser.flush(30) == 0, "every entry put"
    assert all(job(u).queueJobId for u in uuids), "every document names its entry"
    done = run_worker()
    assert done.returncode == 0, done.stderr
    ran = [job(u) for u in uuids]
    assert [(j.status, j.attempts) for j in ran] == [("succeeded", 1)] * len(jobs)
    started = [j.startedAt for j in ran[:150]]
    assert started == sorted(started), "one worker takes one queue's jobs in the order enqueued"
    assert ran[0].resultString == "M0"


def test_the_async_form_queues_the_same_way(backend: dict[str, str]) -> None:
    jobs = echoes(40)
    uuids = asyncio.run(enqueue_many_async(jobs, delay=0))
    assert uuids == [j.uuid for j in jobs]
    done = run_worker()
    assert done.returncode == 0, done.stderr
    assert {job(u).status for u in uuids} == {"succeeded"}


def test_careless_input_is_named_and_writes_nothing(backend: dict[str, str]) -> None:
    assert enqueue_many([]) == []
    jobs = echoes(3)
    with pytest.raises(TypeError, match=r"jobs\[1\] is a dict, not a BaseJob"):
        enqueue_many([jobs[0], {"message": "x"}, jobs[2]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"jobs\[2\] is the same job as jobs\[0\]"):
        enqueue_many([jobs[0], jobs[1], jobs[0]])
    jobs[2].count = "many"  # the schema refuses it on load
    with pytest.raises(ValidationError) as refused:
        enqueue_many(jobs)
    assert "count" in refused.value.messages["jobs[2]"], refused.value.messages
    assert stored_count() == 0, "a refused batch writes nothing"

    done = echoes(1)[0]
    done.enqueue()
    with pytest.raises(geyser.InvalidDocument, match=r"jobs\[1\] .* is already enqueued"):
        enqueue_many([echoes(1)[0], done])
    assert stored_count() == 1, "only the single enqueue's job is stored"


def test_a_queue_server_gone_leaves_the_batch_saved_and_pending(beanstalkd: Beanstalkd) -> None:
    assert stored_count() == 0  # the client is open while the server is up
    beanstalkd.stop()
    jobs = echoes(5)
    uuids = enqueue_many(jobs)
    assert uuids == [j.uuid for j in jobs] and stored_count() == 5
    assert geyser.flush(0.5) == 5, "the relay holds every put"
    beanstalkd.start()
    assert geyser.flush(30) == 0
    assert client().stats_tube("echo")["ready"] == 5
    done = run_worker()
    assert done.returncode == 0, done.stderr
    assert [(job(u).status, job(u).attempts) for u in uuids] == [("succeeded", 1)] * 5
