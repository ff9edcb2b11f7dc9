"""Geyser: a job queue for long-running background jobs.

Define jobs as ``BaseJob`` subclasses with marshmallow schemas, ``enqueue()`` them,
and run ``python -m geyser.worker``. See the README for the whole story.

The names below are imported from their modules on first use (PEP 562), so that
``python -m geyser.worker``'s supervisor, which needs none of them, loads neither
marshmallow nor the native core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geyser import jobs, registry
    from geyser.config import configure
    from geyser.errors import (
        ConflictError,
        GeyserError,
        InvalidDocument,
        InvalidTransition,
        JobCancelled,
        JobNotFound,
        UnknownJobType,
        WaitTimeout,
        WFErrorContinue,
        WFErrorFinish,
    )
    from geyser.jobs import (
        BaseJob,
        BaseJobSchema,
        flush,
        flush_async,
        get_base_job,
        get_base_job_async,
        kick,
        kick_async,
        make_base_job,
        pause_queue,
        pending,
        resume_queue,
    )
    from geyser.watch import get_progress_async, watch_async

#: Each public name and the module that defines it.
_HOMES = {
    "configure": "geyser.config",
    **dict.fromkeys(
        ("ConflictError", "GeyserError", "InvalidDocument", "InvalidTransition", "JobCancelled", "JobNotFound",
         "UnknownJobType", "WaitTimeout", "WFErrorContinue", "WFErrorFinish"),
        "geyser.errors",
    ),
    **dict.fromkeys(
        ("BaseJob", "BaseJobSchema", "flush", "flush_async", "get_base_job", "get_base_job_async", "kick",
         "kick_async", "make_base_job", "pause_queue", "pending", "resume_queue"),
        "geyser.jobs",
    ),
    "get_progress_async": "geyser.watch",
    "watch_async": "geyser.watch",
}
#: Submodules offered as attributes (``geyser.jobs``, ``geyser.registry``).
_SUBMODULES = ("jobs", "registry")

__all__ = [
    "BaseJob",
    "BaseJobSchema",
    "ConflictError",
    "GeyserError",
    "InvalidDocument",
    "InvalidTransition",
    "JobCancelled",
    "JobNotFound",
    "UnknownJobType",
    "WaitTimeout",
    "WFErrorContinue",
    "WFErrorFinish",
    "configure",
    "flush",
    "flush_async",
    "get_base_job",
    "get_base_job_async",
    "get_progress_async",
    "jobs",
    "kick",
    "kick_async",
    "make_base_job",
    "pause_queue",
    "pending",
    "registry",
    "resume_queue",
    "watch_async",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on its first use, and keep the value here."""
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f"geyser.{name}")
    elif name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    else:
        raise AttributeError(f"module 'geyser' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
