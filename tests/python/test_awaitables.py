"""The native awaitables (`*_async`) on plain asyncio: results reach the loop that awaits
them, with several loops at once, a loop after another closed, cancelled awaitables
among live ones, and a loop that cannot watch the completion socket."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import jobs_for_tests  # noqa: F401  (registers the job types)

import geyser


async def enqueue_and_read_back(count: int, tag: str) -> list[tuple[str, str, str]]:
    """Enqueue ``count`` jobs at once, then read them all back at once (30 s at most)."""
    return await asyncio.wait_for(_enqueue_and_read_back(count, tag), 30)


async def _enqueue_and_read_back(count: int, tag: str) -> list[tuple[str, str, str]]:
    jobs = [geyser.make_base_job({"message": f"{tag}-{i}"}, "echo") for i in range(count)]
    uuids = await asyncio.gather(*(job.enqueue_async() for job in jobs))
    assert uuids == [job.uuid for job in jobs]
    read = await asyncio.gather(*(geyser.get_base_job_async(uuid) for uuid in uuids))
    return [(job.uuid, job.message, job.status) for job in read if job is not None]


def test_several_loops_in_threads_each_get_their_own_results(backend: dict[str, str]) -> None:
    results: dict[str, Any] = {}

    def run(tag: str) -> None:
        try:
            results[tag] = asyncio.run(enqueue_and_read_back(150, tag))
        except BaseException as e:  # reported by the assertion below
            results[tag] = e

    threads = [threading.Thread(target=run, args=(tag,)) for tag in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for tag in ("a", "b", "c"):
        rows = results[tag]
        assert isinstance(rows, list), rows
        assert [message for _, message, _ in rows] == [f"{tag}-{i}" for i in range(150)]
        assert {status for _, _, status in rows} == {"queued"}


def test_a_new_loop_after_the_first_closed_still_gets_results(embedded: str) -> None:
    first = asyncio.run(enqueue_and_read_back(20, "first"))
    second = asyncio.run(enqueue_and_read_back(20, "second"))
    assert len(first) == len(second) == 20


def test_cancelled_awaitables_leave_the_others_and_the_loop_working(embedded: str) -> None:
    async def main() -> list[str]:
        tasks = [asyncio.ensure_future(geyser.make_base_job({"message": str(i)}, "echo").enqueue_async())
                 for i in range(100)]
        for task in tasks[::2]:
            task.cancel()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        assert all(isinstance(r, asyncio.CancelledError) for r in done[::2])
        kept = done[1::2]
        assert all(isinstance(r, str) and len(r) == 36 for r in kept), kept
        return [job.uuid for job in await asyncio.gather(*(geyser.get_base_job_async(u) for u in kept)) if job]

    assert len(asyncio.run(main())) == 50


class LoopWithoutReaders(asyncio.SelectorEventLoop):
    """A loop that cannot watch file descriptors (like Windows' proactor loop)."""

    def add_reader(self, *args: Any) -> None:
        raise NotImplementedError("no readers on this loop")


def test_a_loop_that_cannot_watch_sockets_still_gets_results(embedded: str) -> None:
    with asyncio.Runner(loop_factory=LoopWithoutReaders) as runner:
        rows = runner.run(enqueue_and_read_back(30, "plain"))
    assert [message for _, message, _ in rows] == [f"plain-{i}" for i in range(30)]
