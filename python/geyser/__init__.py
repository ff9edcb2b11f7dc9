"""Geyser: a job queue for long-running background jobs.

Define jobs as ``BaseJob`` subclasses with marshmallow schemas, ``enqueue()`` them,
and run ``python -m geyser.worker``. See the README for the whole story.
"""

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

from geyser import jobs, registry  # noqa: E402  (geyser.jobs / geyser.registry as attributes)

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
