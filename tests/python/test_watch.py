"""geyser.watch: the public progress document and the watch_async subscription,
on the embedded default and beanstalkd (changes made here, no worker needed)."""

from __future__ import annotations

import asyncio

import pytest

import geyser
import jobs_for_tests  # noqa: F401  (registers the job types)
from geyser.watch import PUBLIC_FIELDS, get_progress_async, watch_async


async def test_progress_document_has_exactly_the_public_fields(backend: dict[str, str]) -> None:
    job = geyser.make_base_job({"message": "hi"}, "echo")
    uuid = await job.enqueue_async()
    doc = await get_progress_async(uuid)
    assert doc is not None
    assert tuple(doc) == PUBLIC_FIELDS
    assert (doc["uuid"], doc["jobType"], doc["status"], doc["attempts"]) == (uuid, "echo", "queued", 0)
    assert "message" not in doc and "version" not in doc and "fence" not in doc
    assert await get_progress_async("no-such-job") is None


async def test_watch_yields_each_change_in_order_and_ends_at_a_terminal_status(backend: dict[str, str]) -> None:
    job = geyser.make_base_job({"message": "hi"}, "echo")
    await job.enqueue_async()
    seen: list[tuple[str, float]] = []

    async def follow() -> None:
        async for doc in geyser.jobs.watch_async(job.uuid, interval=0.02):
            seen.append((doc["status"], doc["completeness"]))

    follower = asyncio.create_task(follow())
    for completeness in (0.25, 0.5, 0.75):
        await asyncio.sleep(0.15)
        job.completeness = completeness
        await job.save_async()
    await asyncio.sleep(0.15)
    await job.cancel_async()
    await asyncio.wait_for(follower, 5)
    assert seen == [("queued", 0.0), ("queued", 0.25), ("queued", 0.5), ("queued", 0.75), ("cancelled", 0.75)]


async def test_watch_of_a_finished_job_yields_once(backend: dict[str, str]) -> None:
    job = geyser.make_base_job({"message": "hi"}, "echo")
    await job.enqueue_async()
    await job.cancel_async()
    docs = [doc async for doc in watch_async(job.uuid, interval=0.02)]
    assert [d["status"] for d in docs] == ["cancelled"]


async def test_watch_of_an_unknown_job_raises(backend: dict[str, str]) -> None:
    with pytest.raises(geyser.JobNotFound):
        async for _ in watch_async("no-such-job"):
            pass
