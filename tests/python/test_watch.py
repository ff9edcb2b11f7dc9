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
    await geyser.flush_async(30)  # with a queue server, the relay's queue-id note is a write too
    job.reload()
    seen: list[tuple[str, float]] = []
    changed = asyncio.Event()

    async def follow() -> None:
        async for doc in geyser.jobs.watch_async(job.uuid, interval=0.02):
            seen.append((doc["status"], doc["completeness"]))
            changed.set()

    async def until_seen(count: int) -> None:
        """Wait (5 s at most) until the follower has yielded ``count`` documents."""
        async with asyncio.timeout(5):
            while len(seen) < count:
                changed.clear()
                await changed.wait()

    follower = asyncio.create_task(follow())
    # Each change is made once the follower has yielded the one before, so none can be
    # skipped by a poll that reads two changes at once.
    for n, completeness in enumerate((0.25, 0.5, 0.75), start=1):
        await until_seen(n)
        job.completeness = completeness
        await job.save_async()
    await until_seen(4)
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
