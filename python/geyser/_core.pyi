"""Type stubs of the native module ``geyser._core`` (Rust, PyO3).

Documents cross the boundary as JSON text; the Python layer turns them into jobs.
"""

from collections.abc import Awaitable, Callable
from typing import Any

default_sqlite_path: str

class GeyserError(Exception): ...
class ConfigError(GeyserError): ...
class ConflictError(GeyserError): ...
class JobNotFound(GeyserError): ...
class BackendError(GeyserError): ...
class StoreUnavailable(BackendError): ...
class QueueUnavailable(BackendError): ...
class InvalidDocument(GeyserError): ...
class InvalidTransition(GeyserError): ...

class Client:
    def __init__(self, queue_url: str | None = None, store_url: str | None = None) -> None: ...
    def enqueue(self, doc_json: str, delay: float) -> str: ...
    def enqueue_async(self, doc_json: str, delay: float) -> Awaitable[str]: ...
    def enqueue_many(self, docs_json: list[str], delay: float) -> list[tuple[str | None, str | None]]: ...
    def enqueue_many_async(
        self, docs_json: list[str], delay: float
    ) -> Awaitable[list[tuple[str | None, str | None]]]: ...
    def get(self, uuid: str) -> str | None: ...
    def get_async(self, uuid: str) -> Awaitable[str | None]: ...
    def save(self, doc_json: str) -> str: ...
    def save_async(self, doc_json: str) -> Awaitable[str]: ...
    def cancel(self, uuid: str) -> str: ...
    def cancel_async(self, uuid: str) -> Awaitable[str]: ...
    def retry(self, uuid: str) -> str: ...
    def retry_async(self, uuid: str) -> Awaitable[str]: ...
    def delete(self, uuid: str) -> str: ...
    def delete_async(self, uuid: str) -> Awaitable[str]: ...
    def kick(self, queue: str, bound: int) -> int: ...
    def kick_async(self, queue: str, bound: int) -> Awaitable[int]: ...
    def wait(self, uuid: str, timeout: float, first_poll: float = 0.05) -> str | None: ...
    def wait_async(self, uuid: str, timeout: float, first_poll: float = 0.05) -> Awaitable[str | None]: ...
    def list(
        self,
        status: str | None = None,
        job_type: str | None = None,
        after: str | None = None,
        limit: int = 100,
        newest_first: bool = False,
        queue: str | None = None,
    ) -> list[str]:
        """Documents (JSON) in uuid order, descending with ``newest_first`` (new uuids are
        time-ordered, so that is newest first), ``limit`` after the uuid ``after``."""
    def workers(self) -> list[dict[str, Any]]:
        """The live workers by id, each ``{"id", "host", "pid", "queues", "started_at",
        "heartbeat_at", "job" (uuid or None), "expires_at"}``."""
    def workers_async(self) -> Awaitable[list[dict[str, Any]]]: ...
    def backlog(self, queues: list[str], job_types: list[str] | None = None) -> dict[str, int]: ...
    def pause(self, queue: str) -> None: ...
    def resume(self, queue: str) -> None: ...
    def stats_tube(self, tube: str) -> dict[str, Any]:
        """``name``, the counts ``ready``, ``delayed``, ``reserved``, ``buried``, ``total_jobs``,
        ``paused`` (bool), ``oldest_ready_age`` (seconds or None) and ``watching`` (int, or None
        where the queue cannot tell)."""
    def stats_tube_async(self, tube: str) -> Awaitable[dict[str, Any]]: ...

class Attempt:
    document: str
    job_type: str
    uuid: str
    @property
    def cancel_requested(self) -> bool: ...
    @property
    def lost(self) -> bool: ...
    def progress(self, doc_json: str) -> None: ...
    def finish(
        self,
        doc_json: str,
        outcome: str,
        at: float | None = None,
        code_json: str | None = None,
        msg: str | None = None,
        traceback: str | None = None,
    ) -> str:
        """Save the attempt's final document and settle its queue entry; returns the job's
        status as saved ("queued" when it runs again)."""

class Worker:
    def __init__(
        self,
        client: Client,
        queues: list[str],
        name: str,
        progress_interval: float = 1.0,
        hard_stop_after: float = 20.0,
        job_types: list[str] | None = None,
    ) -> None: ...
    def next(self, timeout: float) -> Attempt | None: ...
    def set_prefetch(self, on: bool) -> None:
        """Whether finishing a job also reserves and starts the next one (off at first)."""
    def close(self) -> None: ...
    def queues_idle(self, client: Client) -> bool: ...

def sweep(
    client: Client,
    holder: str,
    min_age: float = 60.0,
    lease_ttl: float = 600.0,
    force: bool = False,
    release: bool = False,
) -> dict[str, bool | int | str | list[str] | None]: ...
def release_maintenance_lease(client: Client, holder: str) -> bool: ...
def new_uuid() -> str:
    """A new job uuid: UUIDv7 (time-ordered), so uuid order is creation order."""
def pending() -> int:
    """Jobs this process enqueued (through any client) whose queue entries are not put yet."""
def unnoted() -> int:
    """Jobs this process put on their queues whose queue ids are not noted in their documents
    yet (a ``flush`` waits for those notes too)."""
def flush(timeout: float) -> int:
    """Wait until every job this process enqueued is on its queue, or ``timeout`` seconds
    have passed; returns how many are still not put (0: all delivered)."""
def flush_async(timeout: float) -> Awaitable[int]:
    """``flush`` as an awaitable."""
def record_crash(client: Client, uuid: str, fence: str, attempt: int, reason: str) -> str:
    """Record that job ``uuid``'s attempt ``attempt`` (fencing token ``fence``) died with its
    worker process, as ``reason`` says; returns "retrying", "failed", "amended",
    "unchanged" or "missing"."""

def copy_store(
    from_url: str,
    to_url: str,
    report: Callable[[dict[str, Any]], object],
    after: str | None = None,
    page_size: int = 500,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Copy every job document from the store at ``from_url`` to the store at ``to_url``,
    calling ``report`` with ``{"event": "page", read, copied, skipped, conflicting, unreadable,
    refused, last_uuid, elapsed, rate}`` after each page and ``{"event": "problem", uuid, kind,
    reason}`` for each document not copied. Returns the final counts, with ``error`` set when a
    store failed part-way; raises ``ConfigError`` for a bad URL, and whatever ``report`` raises
    (Ctrl-C included), stopping the copy."""

def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
