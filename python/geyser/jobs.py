"""Jobs as users write them: ``BaseJob`` subclasses with marshmallow schemas.

A job object mirrors its stored document: the lifecycle fields as attributes
(``uuid``, ``status``, ``attempts``, ...) and the schema's fields as the
subclass sets them. Storage and queueing go through the native client.
"""

from __future__ import annotations

import json
import time
import uuid as uuid_module
from typing import Any, ClassVar

import marshmallow
from marshmallow import Schema, ValidationError

from geyser import _core, registry
from geyser.config import client
from geyser.errors import JobCancelled
from geyser.watch import get_progress_async, watch_async

__all__ = [
    "BaseJob",
    "BaseJobSchema",
    "INTERNAL_FIELDS",
    "get_base_job",
    "get_base_job_async",
    "get_progress_async",
    "make_base_job",
    "watch_async",
]

#: Document fields the engine owns; job values can never set them.
INTERNAL_FIELDS: frozenset[str] = frozenset(
    """documentType jobType schemaVersion createdAt updatedAt uuid logId queueKwargs
    queueJobId events errors completeness resultCode resultString status attempts failures
    maxRetries startedAt finishedAt nextRunAt worker version fence cancelRequested
    expiresAt""".split()
)

_DEFAULTS: dict[str, Any] = {
    "documentType": "job",
    "schemaVersion": 1,
    "logId": None,
    "queueJobId": None,
    "completeness": 0.0,
    "resultCode": None,
    "resultString": "",
    "status": "queued",
    "attempts": 0,
    "failures": 0,
    "startedAt": None,
    "finishedAt": None,
    "nextRunAt": None,
    "worker": None,
    "version": 0,
    "fence": None,
    "cancelRequested": False,
    "expiresAt": None,
}


class BaseJobSchema(Schema):
    """Base of every job schema: declare the job's own fields on a subclass."""

    class Meta:
        unknown = marshmallow.RAISE


class BaseJob:
    """Base of every job. Subclasses set ``JOB_TYPE`` and ``SCHEMA`` and implement ``run()``.

    ``run()`` returns ``(resume_at_epoch_seconds, requeue)``: ``requeue=False`` means
    done; ``True`` runs it again at that time (not a failure). Raise
    ``WFErrorFinish`` to fail for good, ``WFErrorContinue`` (or anything) to retry.
    """

    JOB_TYPE: ClassVar[str] = "base_job"
    SCHEMA: ClassVar[type[Schema]] = BaseJobSchema
    QUEUE_NAME: ClassVar[str] = "geyser"
    #: Re-runs allowed after the first attempt fails.
    MAX_RETRIES: ClassVar[int] = 3
    #: Seconds; base of the exponential retry backoff (with jitter). 0 retries at once.
    RETRY_DELAY: ClassVar[float] = 10.0
    #: Seconds a reservation lasts without a heartbeat. Short: the worker touches it every
    #: TTR/3 while the job runs, and a dead worker's job comes back after at most this long.
    TTR: ClassVar[float] = 30.0
    #: Hard limit on one attempt in seconds; None means none.
    TIMEOUT: ClassVar[float | None] = None
    #: Lower runs first, as in beanstalkd.
    PRIORITY: ClassVar[int] = 1024
    #: Seconds the document is kept after creation; None keeps it for good.
    LIFESPAN: ClassVar[float | None] = None

    _schema_instance: ClassVar[Schema | None] = None

    # Lifecycle attributes, mirrored from the document.
    uuid: str
    jobType: str
    status: str
    attempts: int
    events: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    completeness: float

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._schema_instance = None
        if "JOB_TYPE" in cls.__dict__:
            registry.register(cls)

    def __init__(self, **kwargs: Any) -> None:
        now = time.time()
        for name, default in _DEFAULTS.items():
            setattr(self, name, kwargs.get(name, default))
        self.uuid = kwargs.get("uuid") or str(uuid_module.uuid4())
        self.jobType = self.JOB_TYPE
        self.createdAt = kwargs.get("createdAt", now)
        self.updatedAt = kwargs.get("updatedAt", now)
        self.queueKwargs = kwargs.get("queueKwargs") or self._queue_kwargs()
        self.maxRetries = kwargs.get("maxRetries", self.MAX_RETRIES)
        self.events = list(kwargs.get("events") or [])
        self.errors = list(kwargs.get("errors") or [])
        self._attempt: _core.Attempt | None = None
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was requested for this running job (seen within a second).

        A job may check it to stop early; its next progress call raises ``JobCancelled``."""
        if not self._cancelled and self._attempt is not None:
            try:
                self._cancelled = self._attempt.cancel_requested
            except RuntimeError:  # the attempt already ended
                pass
        return self._cancelled

    @cancelled.setter
    def cancelled(self, value: bool) -> None:
        self._cancelled = bool(value)

    def run(self) -> tuple[float, bool]:
        """Do the work. Return ``(resume_at, requeue)``."""
        raise NotImplementedError(f"{type(self).__name__}.run() is not implemented")

    # -- documents -------------------------------------------------------------

    @classmethod
    def schema(cls) -> Schema:
        """The (cached) instance of ``SCHEMA``."""
        if cls._schema_instance is None:
            cls._schema_instance = cls.SCHEMA()
        return cls._schema_instance

    @classmethod
    def _queue_kwargs(cls, priority: int | None = None, ttr: float | None = None) -> dict[str, Any]:
        return {
            "queue": cls.QUEUE_NAME,
            "priority": cls.PRIORITY if priority is None else int(priority),
            "ttr": float(cls.TTR if ttr is None else ttr),
            "retryDelay": float(cls.RETRY_DELAY),
            "timeout": None if cls.TIMEOUT is None else float(cls.TIMEOUT),
        }

    def to_document(self) -> dict[str, Any]:
        """The job as its stored document: schema fields plus lifecycle fields."""
        doc: dict[str, Any] = self.schema().dump(self)
        for name in INTERNAL_FIELDS:
            doc[name] = getattr(self, name)
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> BaseJob:
        """Rebuild a job from its stored document (schema fields are loaded again)."""
        schema = cls.schema()
        own = {k: v for k, v in doc.items() if k in schema.fields and k not in INTERNAL_FIELDS}
        values = schema.load(own, partial=True)
        internal = {k: v for k, v in doc.items() if k in INTERNAL_FIELDS}
        return cls(**internal, **values)

    def _apply_document(self, doc_json: str) -> None:
        doc = json.loads(doc_json)
        for name in INTERNAL_FIELDS:
            if name in doc:
                setattr(self, name, doc[name])
        schema = self.schema()
        own = {k: v for k, v in doc.items() if k in schema.fields and k not in INTERNAL_FIELDS}
        for name, value in schema.load(own, partial=True).items():
            setattr(self, name, value)

    def _apply_lifecycle(self, doc_json: str) -> None:
        """Take the engine's fields from a saved document; the job's own fields are unchanged."""
        doc = json.loads(doc_json)
        for name in INTERNAL_FIELDS:
            if name in doc:
                setattr(self, name, doc[name])

    def _document_json(self) -> str:
        return json.dumps(self.to_document())

    # -- queueing ----------------------------------------------------------------

    def _prepare_enqueue(self, priority: int | None, ttr: float | None) -> str:
        self.queueKwargs = self._queue_kwargs(priority, ttr)
        self.maxRetries = self.MAX_RETRIES
        if self.LIFESPAN is not None:
            self.expiresAt = self.createdAt + float(self.LIFESPAN)
        return self._document_json()

    def enqueue(self, delay: float = 0, priority: int | None = None, ttr: float | None = None) -> str:
        """Save the job, then put it on ``QUEUE_NAME``; returns its uuid.

        ``delay`` in seconds; ``priority`` lower runs first; ``ttr`` seconds a
        reservation lasts without a heartbeat.
        """
        doc = self._prepare_enqueue(priority, ttr)
        self._apply_lifecycle(client().enqueue(doc, float(delay)))
        return self.uuid

    async def enqueue_async(self, delay: float = 0, priority: int | None = None, ttr: float | None = None) -> str:
        """``enqueue`` for asyncio/Tornado code: never blocks the event loop."""
        doc = self._prepare_enqueue(priority, ttr)
        self._apply_lifecycle(await client().enqueue_async(doc, float(delay)))
        return self.uuid

    def save(self) -> None:
        """Write the job's document. Inside ``run()`` the write is coalesced with progress;
        elsewhere it is a compare-and-swap (``ConflictError`` if it changed: ``reload()``)."""
        if self._attempt is not None:
            self._attempt.progress(self._document_json())
        else:
            self._apply_lifecycle(client().save(self._document_json()))

    async def save_async(self) -> None:
        """``save`` for asyncio code."""
        if self._attempt is not None:
            self._attempt.progress(self._document_json())
        else:
            self._apply_lifecycle(await client().save_async(self._document_json()))

    def reload(self) -> None:
        """Read the stored document again."""
        doc = client().get(self.uuid)
        if doc is None:
            raise _core.JobNotFound(f"job {self.uuid} not found")
        self._apply_document(doc)

    def cancel(self) -> None:
        """Request cancellation: a queued job never starts; a running one is stopped."""
        self._apply_document(client().cancel(self.uuid))

    async def cancel_async(self) -> None:
        """``cancel`` for asyncio code."""
        self._apply_document(await client().cancel_async(self.uuid))

    # -- progress ----------------------------------------------------------------

    def _progress_changed(self) -> None:
        """Persist progress: coalesced inside a worker, saved at once for a stored job."""
        if self._attempt is not None:
            if self._attempt.cancel_requested:
                self.cancelled = True
                raise JobCancelled(f"job {self.uuid} was cancelled")
            self._attempt.progress(self._document_json())
        elif self.version:
            self.save()

    def update_attrs(self, **kwargs: Any) -> None:
        """Set schema fields (never internal ones) and save progress."""
        bad = sorted(set(kwargs) & INTERNAL_FIELDS)
        if bad:
            raise ValidationError({name: ["Internal field; it cannot be set."] for name in bad})
        for name, value in kwargs.items():
            setattr(self, name, value)
        self._progress_changed()

    def set_completeness(self, completeness: float) -> None:
        """Set how far along the job is, from 0 to 1."""
        value = float(completeness)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"completeness must be between 0 and 1, got {completeness!r}")
        self.completeness = value
        self._progress_changed()

    def record_event(self, msg: str, action: str = "") -> None:
        """Append an event (``msg``, ``action``) to the job's log."""
        self.events.append({"msg": str(msg), "action": str(action), "at": time.time()})
        self._progress_changed()

    def record_error(self, code: Any, msg: str) -> None:
        """Append an error (``errorCode``, ``msg``) without failing the job."""
        self.errors.append({"errorCode": code, "msg": str(msg), "at": time.time(), "attempt": self.attempts})
        self._progress_changed()

    def record_result(self, code: Any, string: str = "") -> None:
        """Set the job's result code and text."""
        self.resultCode = code
        self.resultString = str(string)
        self._progress_changed()

    def progress(self) -> dict[str, Any]:
        """Status, completeness, result, events and errors, as a dict."""
        return {
            "uuid": self.uuid,
            "status": self.status,
            "completeness": self.completeness,
            "result": {"code": self.resultCode, "string": self.resultString},
            "events": list(self.events),
            "errors": list(self.errors),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uuid} {self.status} {self.completeness:.0%}>"


def make_base_job(values: dict[str, Any] | None = None, job_type: str = "") -> BaseJob:
    """Validate ``values`` with the job type's ``SCHEMA`` and build a new (unsaved) job.

    Raises ``marshmallow.ValidationError`` (field → messages) for invalid values or
    internal fields, and ``UnknownJobType`` for a type no class registered.
    """
    cls = registry.job_class(job_type)
    values = {} if values is None else values
    if isinstance(values, dict):
        bad = sorted(set(values) & INTERNAL_FIELDS)
        if bad:
            raise ValidationError({name: ["Internal field; it cannot be set."] for name in bad})
    return cls(**cls.schema().load(values))


def _job_from_json(doc_json: str | None) -> BaseJob | None:
    if doc_json is None:
        return None
    doc = json.loads(doc_json)
    return registry.job_class(doc["jobType"]).from_document(doc)


def get_base_job(uuid: str) -> BaseJob | None:
    """The job with this uuid, rebuilt from its stored document, or None."""
    return _job_from_json(client().get(uuid))


async def get_base_job_async(uuid: str) -> BaseJob | None:
    """``get_base_job`` for asyncio/Tornado code."""
    return _job_from_json(await client().get_async(uuid))
