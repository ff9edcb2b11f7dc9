"""Reading a job's progress from asyncio code: the public progress document and a
subscription that yields it each time it changes.

Reads only (through the native client's awaitable ``get_async``); never writes a
job or touches a queue. Works for any stored job, whether or not its class is
imported in this process. asyncio is imported by the first ``watch_async`` (it brings
ssl with it, which a worker process that never watches need not load).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from geyser.config import client
from geyser.errors import JobNotFound

__all__ = ["PUBLIC_FIELDS", "TERMINAL_STATUSES", "get_progress_async", "public_document", "watch_async"]

#: The fields of a job document anyone watching a job may see, in this order.
PUBLIC_FIELDS: tuple[str, ...] = (
    "uuid",
    "jobType",
    "status",
    "completeness",
    "attempts",
    "events",
    "errors",
    "resultCode",
    "resultString",
    "createdAt",
    "updatedAt",
    "startedAt",
    "finishedAt",
    "nextRunAt",
)

#: Statuses a job never leaves.
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def public_document(doc: dict[str, Any]) -> dict[str, Any]:
    """The public progress document of a stored job document (missing fields are None)."""
    return {name: doc.get(name) for name in PUBLIC_FIELDS}


async def _stored(uuid: str) -> dict[str, Any] | None:
    raw = await client().get_async(uuid)
    return None if raw is None else json.loads(raw)


async def get_progress_async(uuid: str) -> dict[str, Any] | None:
    """The job's public progress document, or None if there is no such job."""
    doc = await _stored(uuid)
    return None if doc is None else public_document(doc)


async def watch_async(uuid: str, interval: float = 0.5) -> AsyncIterator[dict[str, Any]]:
    """Yield the job's public progress document now and each time its version changes.

    Polls the store every ``interval`` seconds without blocking the event loop and
    ends after yielding a terminal status (succeeded, failed, cancelled). Raises
    ``JobNotFound`` if the job does not exist or its document disappears (expiry).
    """
    import asyncio

    seen: int | None = None
    while True:
        doc = await _stored(uuid)
        if doc is None:
            raise JobNotFound(f"job {uuid} not found")
        if doc.get("version") != seen:
            seen = doc.get("version")
            yield public_document(doc)
            if doc.get("status") in TERMINAL_STATUSES:
                return
        await asyncio.sleep(interval)
