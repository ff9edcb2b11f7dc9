"""Exceptions of Geyser's Python API.

Jobs raise ``WFErrorFinish`` (stop for good) or ``WFErrorContinue`` (retry while
retries remain); the engine raises the ``GeyserError`` family.
"""

from __future__ import annotations

from typing import Any

from geyser._core import (
    BackendError,
    ConfigError,
    ConflictError,
    GeyserError,
    InvalidDocument,
    InvalidTransition,
    JobNotFound,
    QueueUnavailable,
    StoreUnavailable,
)

__all__ = [
    "BackendError",
    "BulkEnqueueError",
    "ConfigError",
    "ConflictError",
    "GeyserError",
    "InvalidDocument",
    "InvalidTransition",
    "JobCancelled",
    "JobNotFound",
    "QueueUnavailable",
    "StoreUnavailable",
    "UnknownJobType",
    "WaitTimeout",
    "WFError",
    "WFErrorContinue",
    "WFErrorFinish",
]


class WFError(Exception):
    """A job's own error: ``WFError(msg)`` or ``WFError(code, msg)``."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        if len(args) >= 2:
            self.code: Any = args[0]
            self.msg: str = str(args[1])
        else:
            self.code = None
            self.msg = str(args[0]) if args else type(self).__name__


class WFErrorFinish(WFError):
    """Raised by ``run()``: record the error and fail the job; no retry."""


class WFErrorContinue(WFError):
    """Raised by ``run()``: record the error and retry while retries remain."""


class JobCancelled(GeyserError):
    """Raised inside ``run()`` at the next progress call after ``cancel()`` was requested."""


class WaitTimeout(GeyserError, TimeoutError):
    """``job.wait(timeout)`` ran out of time before the job finished."""


class UnknownJobType(GeyserError, KeyError):
    """No registered job class has this ``JOB_TYPE``."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown job type"


class BulkEnqueueError(GeyserError):
    """``enqueue_many`` queued some jobs of the batch but not all.

    ``uuids[i]`` is job i's uuid when it was queued, else None; ``errors[i]`` says why job i
    was not queued. A job that was not queued left no document behind, unless its error
    says the maintenance sweep will queue it (docs/lifecycle.md "Bulk enqueue").
    """

    def __init__(self, uuids: list[str | None], errors: dict[int, str]) -> None:
        self.uuids = uuids
        self.errors = errors
        first = min(errors)
        super().__init__(
            f"{len(errors)} of {len(uuids)} jobs were not queued (the others were); "
            f"first, job {first}: {errors[first]}"
        )

    @property
    def queued(self) -> list[int]:
        """Indexes of the jobs that were queued."""
        return [i for i, uuid in enumerate(self.uuids) if uuid is not None]
