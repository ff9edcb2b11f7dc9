"""Jobs as users write them: ``BaseJob`` subclasses with marshmallow schemas.

A job object mirrors its stored document: the lifecycle fields as attributes
(``uuid``, ``status``, ``attempts``, ...) and the schema's fields as the
subclass sets them. Storage and queueing go through the native client.
"""

from __future__ import annotations

import atexit
import json
import math
import operator
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import marshmallow
from marshmallow import Schema, ValidationError

from geyser import _core, metrics, registry
from geyser.config import client
from geyser.errors import BulkEnqueueError, InvalidDocument, JobCancelled, WaitTimeout
from geyser.watch import get_progress_async, watch_async

__all__ = [
    "BaseJob",
    "BaseJobSchema",
    "INTERNAL_FIELDS",
    "DEFAULT_FLUSH_TIMEOUT",
    "enqueue_many",
    "enqueue_many_async",
    "flush",
    "flush_async",
    "get_base_job",
    "get_base_job_async",
    "get_progress_async",
    "kick",
    "kick_async",
    "make_base_job",
    "pending",
    "watch_async",
]

#: Document fields the engine owns; job values can never set them.
INTERNAL_FIELDS: frozenset[str] = frozenset(
    """documentType jobType schemaVersion createdAt updatedAt uuid logId queueKwargs
    queueJobId events errors completeness resultCode resultString status attempts failures
    maxRetries startedAt heartbeatAt finishedAt nextRunAt worker version fence cancelRequested
    expiresAt""".split()
)

#: ``INTERNAL_FIELDS`` in its iteration order, and a getter of them all at once (one C call
#: instead of a ``getattr`` per field in ``to_document``, which a worker runs once per job).
_INTERNAL_NAMES: tuple[str, ...] = tuple(INTERNAL_FIELDS)
_internal_values = operator.attrgetter(*_INTERNAL_NAMES)

#: ``wait()`` asks the engine for at most this many seconds at a time, so Ctrl-C is seen.
_WAIT_SLICE = 1.0
_WAIT_FIRST_POLL = 0.05

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
    "heartbeatAt": None,
    "finishedAt": None,
    "nextRunAt": None,
    "worker": None,
    "version": 0,
    "fence": None,
    "cancelRequested": False,
    "expiresAt": None,
}


#: Integers the engine stores exactly (as 64-bit integers); others are refused, never rounded.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
#: A run of digits long enough that it may be an integer outside that range, found by
#: mapping every digit of the UTF-8 text to 0 (bytes.translate and `in` are both C loops,
#: about ten times faster than a regular expression over the same text).
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19
#: Characters that may start a valid queue (beanstalkd tube) name, and the rest.
_TUBE_NAME = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}")


def _json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored exactly as JSON in a job document, or None."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except RecursionError:
        return "nested too deeply to store"
    except ValueError as e:  # NaN or infinity
        return f"{e}; NaN and infinity cannot be stored in a job document"
    except TypeError as e:
        return f"{e}; a job document holds only JSON values (dict, list, str, int, float, bool, None)"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start : e.end].encode("unicode_escape").decode()
        return f"contains {bad}, a lone surrogate that is not valid text"
    if _LONG_DIGITS in data.translate(_DIGITS_TO_ZERO):
        return _int_problem(value)
    return None


def _int_problem(value: Any) -> str | None:
    """Why an integer inside ``value`` cannot be stored exactly, or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not _INT_MIN <= item <= _INT_MAX:
            return (
                f"integer with {len(str(abs(item)))} digits is out of range: a job document stores "
                "integers from -2**63 to 2**64-1 exactly (use a string for larger ones)"
            )
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return None


#: ``json.dumps(doc, allow_nan=False, ensure_ascii=False)`` without building an encoder per call
#: (``json.dumps`` builds one whenever it is given options; a worker dumps a document per job).
_DOCUMENT_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False)


def document_json(doc: dict[str, Any]) -> str:
    """``doc`` as JSON text, or ``ValidationError`` naming each field that cannot be stored
    exactly (not JSON, NaN or infinity, a lone surrogate, an integer out of range).
    One ``json.dumps``, one UTF-8 encoding (which a lone surrogate fails) and one scan of the
    bytes when all is well; the field-by-field search runs only for a document that has a
    problem."""
    try:
        text = _DOCUMENT_ENCODER.encode(doc)
        data = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    else:
        if _LONG_DIGITS not in data.translate(_DIGITS_TO_ZERO) or not _int_problem(doc):
            return text
    errors = {name: [why] for name, value in doc.items() if (why := _json_problem(value)) is not None}
    raise ValidationError(errors or {"_schema": [_json_problem(doc) or "cannot be stored as JSON"]})


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
    #: The queue (beanstalkd tube) of this job type; by default the class's ``JOB_TYPE``, so
    #: a worker watches only the queues of the types it knows.
    QUEUE_NAME: ClassVar[str] = "base_job"
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
    _own_fields_cache: ClassVar[dict[str, marshmallow.fields.Field] | None] = None
    #: Whether ``QUEUE_NAME`` is the default (follows ``JOB_TYPE``) rather than set by a class.
    _default_queue_name: ClassVar[bool] = True

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
        cls._own_fields_cache = None
        if "QUEUE_NAME" in cls.__dict__:
            cls._default_queue_name = False
        elif cls._default_queue_name:
            cls.QUEUE_NAME = cls.JOB_TYPE
        if not isinstance(cls.QUEUE_NAME, str) or not _TUBE_NAME.fullmatch(cls.QUEUE_NAME):
            where = "QUEUE_NAME" if not cls._default_queue_name else "JOB_TYPE (the default QUEUE_NAME)"
            raise ValueError(
                f"{cls.__qualname__}: {where} {cls.QUEUE_NAME!r} is not a valid queue name: 1 to 200 "
                "letters, digits and -+/;.$_() not starting with '-'"
            )
        if "JOB_TYPE" in cls.__dict__:
            registry.register(cls)

    def __init__(self, **kwargs: Any) -> None:
        now = time.time()
        for name, default in _DEFAULTS.items():
            setattr(self, name, kwargs.get(name, default))
        # Time-ordered (UUIDv7): uuid order is creation order, which `jobs ls` lists by.
        self.uuid = kwargs.get("uuid") or _core.new_uuid()
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

    @classmethod
    def _own_fields(cls) -> dict[str, marshmallow.fields.Field]:
        """The schema's fields by their key in the document (``data_key`` or name); cached."""
        if cls._own_fields_cache is None:
            fields = cls.schema().fields.items()
            cls._own_fields_cache = {f.data_key or name: f for name, f in fields if not f.load_only}
        return cls._own_fields_cache

    def _dump_own(self) -> dict[str, Any]:
        """The job's schema fields as stored. An unset field (None where the schema does not
        allow None) is left out, so it loads back as unset."""
        own = self._own_fields()
        schema = self.schema()
        try:
            dumped: dict[str, Any] = schema.dump(self)
        except Exception as e:  # a field's serializer refused the value (e.g. int("many"))
            errors: dict[str, list[str]] = {}
            for name, f in schema.fields.items():
                try:
                    f.serialize(name, self, accessor=schema.get_attribute)
                except Exception as field_error:
                    errors[f.data_key or name] = [f"cannot be stored: {field_error}"]
            raise ValidationError(errors or {"_schema": [f"cannot be stored: {e}"]}) from e
        return {k: v for k, v in dumped.items() if v is not None or (k in own and own[k].allow_none)}

    @classmethod
    def _load_own(cls, doc: dict[str, Any]) -> dict[str, Any]:
        """The job's schema fields loaded from a stored document (unset ones left out)."""
        own = cls._own_fields()
        values = {
            k: v for k, v in doc.items()
            if k in own and k not in INTERNAL_FIELDS and (v is not None or own[k].allow_none)
        }
        return cls.schema().load(values, partial=True)

    def _checked_document_json(self) -> str:
        """The document as JSON text, refusing (``ValidationError``, field → messages) schema
        fields that the job's schema would not load back or that cannot be stored exactly as
        JSON: what is saved, a worker can load."""
        doc = self.to_document()
        text = document_json(doc)
        own = self._own_fields()
        self.schema().load({k: v for k, v in doc.items() if k in own and k not in INTERNAL_FIELDS}, partial=True)
        return text

    def to_document(self) -> dict[str, Any]:
        """The job as its stored document: schema fields plus lifecycle fields."""
        doc = self._dump_own()
        doc.update(zip(_INTERNAL_NAMES, _internal_values(self)))
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> BaseJob:
        """Rebuild a job from its stored document (schema fields are loaded again)."""
        internal = {k: v for k, v in doc.items() if k in INTERNAL_FIELDS}
        return cls(**internal, **cls._load_own(doc))

    def _apply_document(self, doc_json: str) -> None:
        doc = json.loads(doc_json)
        for name in INTERNAL_FIELDS:
            if name in doc:
                setattr(self, name, doc[name])
        for name, value in self._load_own(doc).items():
            setattr(self, name, value)

    def _apply_lifecycle(self, doc_json: str) -> None:
        """Take the engine's fields from a saved document; the job's own fields are unchanged."""
        doc = json.loads(doc_json)
        for name in INTERNAL_FIELDS:
            if name in doc:
                setattr(self, name, doc[name])

    def _document_json(self) -> str:
        """The document as JSON text; ``ValidationError`` names a field that cannot be stored."""
        return document_json(self.to_document())

    # -- queueing ----------------------------------------------------------------

    def _prepare_enqueue(self, priority: int | None, ttr: float | None) -> str:
        self.queueKwargs = self._queue_kwargs(priority, ttr)
        self.maxRetries = self.MAX_RETRIES
        if self.LIFESPAN is not None:
            self.expiresAt = self.createdAt + float(self.LIFESPAN)
        return self._checked_document_json()

    def enqueue(self, delay: float = 0, priority: int | None = None, ttr: float | None = None) -> str:
        """Save the job for ``QUEUE_NAME``; returns its uuid. On the embedded file its queue
        entry is written with it; with a queue server, this process's relay puts the entry
        right after (``geyser.flush()`` waits for that; docs/lifecycle.md "Enqueue") and
        notes its id (a write that a ``save()`` of this job right after does not count
        as a conflict).

        ``delay`` in seconds; ``priority`` lower runs first; ``ttr`` seconds a
        reservation lasts without a heartbeat.
        """
        doc = self._prepare_enqueue(priority, ttr)
        with metrics.counting_errors("enqueue"):
            self._apply_lifecycle(client().enqueue(doc, float(delay)))
        metrics.enqueued(self.jobType, self.QUEUE_NAME)
        return self.uuid

    async def enqueue_async(self, delay: float = 0, priority: int | None = None, ttr: float | None = None) -> str:
        """``enqueue`` for asyncio/Tornado code: never blocks the event loop."""
        doc = self._prepare_enqueue(priority, ttr)
        with metrics.counting_errors("enqueue"):
            self._apply_lifecycle(await client().enqueue_async(doc, float(delay)))
        metrics.enqueued(self.jobType, self.QUEUE_NAME)
        return self.uuid

    def save(self) -> None:
        """Write the job's own fields and progress (never its status, attempts or other
        lifecycle fields: those change only through enqueue, cancel, retry... and the worker).
        Inside ``run()`` the write is coalesced with progress; elsewhere it is a
        compare-and-swap (``ConflictError`` if it changed: ``reload()``)."""
        text = self._checked_document_json()
        if self._attempt is not None:
            self._attempt.progress(text)
        else:
            self._apply_lifecycle(client().save(text))

    async def save_async(self) -> None:
        """``save`` for asyncio code."""
        text = self._checked_document_json()
        if self._attempt is not None:
            self._attempt.progress(text)
        else:
            self._apply_lifecycle(await client().save_async(text))

    def reload(self) -> None:
        """Read the stored document again."""
        doc = client().get(self.uuid)
        if doc is None:
            raise _core.JobNotFound(f"job {self.uuid} not found")
        self._apply_document(doc)

    def cancel(self) -> None:
        """Request cancellation: a queued job never starts; a running one is stopped."""
        with metrics.counting_errors("cancel"):
            doc = client().cancel(self.uuid)
        self._apply_document(doc)
        metrics.cancel_requested(json.loads(doc))

    async def cancel_async(self) -> None:
        """``cancel`` for asyncio code."""
        with metrics.counting_errors("cancel"):
            doc = await client().cancel_async(self.uuid)
        self._apply_document(doc)
        metrics.cancel_requested(json.loads(doc))

    def retry(self) -> None:
        """Queue a failed (or buried) or cancelled job again, with its retry budget renewed;
        its attempts, events and errors are kept. ``InvalidTransition`` for any other status."""
        with metrics.counting_errors("retry"):
            doc = client().retry(self.uuid)
        self._apply_document(doc)
        metrics.retried(json.loads(doc))

    async def retry_async(self) -> None:
        """``retry`` for asyncio code."""
        with metrics.counting_errors("retry"):
            doc = await client().retry_async(self.uuid)
        self._apply_document(doc)
        metrics.retried(json.loads(doc))

    def delete(self) -> None:
        """Forget a finished job (succeeded, failed or cancelled) and its queue entry.
        ``InvalidTransition`` for a queued or running job: ``cancel()`` it first."""
        self._apply_lifecycle(client().delete(self.uuid))

    async def delete_async(self) -> None:
        """``delete`` for asyncio code."""
        self._apply_lifecycle(await client().delete_async(self.uuid))

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job is finished (succeeded, failed or cancelled); returns its final
        document as a dict and updates this object. ``WaitTimeout`` after ``timeout`` seconds.

        Polls the store every 50 ms at first, slowing down to once a second; Ctrl-C
        interrupts it within a second."""
        deadline = None if timeout is None else time.monotonic() + timeout
        first_poll = _WAIT_FIRST_POLL
        while True:
            left = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            doc = client().wait(self.uuid, max(left, 0.0), first_poll)
            if doc is not None:
                self._apply_document(doc)
                return json.loads(doc)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {self.uuid} is still {self._status_now()} after {timeout:g} s")
            first_poll = min(first_poll * 4, 1.0)

    async def wait_async(self, timeout: float | None = None) -> dict[str, Any]:
        """``wait`` for asyncio code."""
        budget = float("inf") if timeout is None else timeout
        doc = await client().wait_async(self.uuid, min(budget, 1e9), _WAIT_FIRST_POLL)
        if doc is None:
            now = await client().get_async(self.uuid)
            status = "gone" if now is None else json.loads(now).get("status")
            raise WaitTimeout(f"job {self.uuid} is still {status} after {timeout:g} s")
        self._apply_document(doc)
        return json.loads(doc)

    def _status_now(self) -> str:
        doc = client().get(self.uuid)
        return "gone" if doc is None else str(json.loads(doc).get("status"))

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
        """Set schema fields (never internal ones) and save progress. Values that cannot be
        stored exactly as JSON are refused (``ValidationError`` naming the field) and nothing
        is set."""
        bad = sorted(set(kwargs) & INTERNAL_FIELDS)
        if bad:
            raise ValidationError({name: ["Internal field; it cannot be set."] for name in bad})
        document_json(kwargs)
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
        event = {"msg": str(msg), "action": str(action), "at": time.time()}
        document_json({"events": [event]})
        self.events.append(event)
        self._progress_changed()

    def record_error(self, code: Any, msg: str) -> None:
        """Append an error (``errorCode``, ``msg``) without failing the job."""
        error = {"errorCode": code, "msg": str(msg), "at": time.time(), "attempt": self.attempts}
        document_json({"errors": [error]})
        self.errors.append(error)
        self._progress_changed()

    def record_result(self, code: Any, string: str = "") -> None:
        """Set the job's result code and text."""
        document_json({"resultCode": code, "resultString": str(string)})
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
    if isinstance(values, dict):
        document_json(values)  # a value no document can hold is named now; the rest at enqueue
    return cls(**cls.schema().load(values))


def _prepare_batch(jobs: Sequence[BaseJob]) -> list[str]:
    """Every job's document, checked before anything is written: a careless item is named by
    its index (``TypeError``, ``ValueError``, ``InvalidDocument``, ``ValidationError``)."""
    docs = []
    seen: dict[int, int] = {}
    for i, job in enumerate(jobs):
        if not isinstance(job, BaseJob):
            raise TypeError(f"enqueue_many: jobs[{i}] is a {type(job).__name__}, not a BaseJob")
        if id(job) in seen:
            raise ValueError(
                f"enqueue_many: jobs[{i}] is the same job as jobs[{seen[id(job)]}]; each job is enqueued once"
            )
        seen[id(job)] = i
        if job.version:
            raise InvalidDocument(
                f"enqueue_many: jobs[{i}] (job {job.uuid}) is already enqueued (status {job.status}); "
                "enqueue_many takes new jobs"
            )
        try:
            docs.append(job._prepare_enqueue(None, None))
        except ValidationError as e:
            raise ValidationError({f"jobs[{i}]": e.messages}) from e
    return docs


def _finish_batch(jobs: Sequence[BaseJob], outcome: list[tuple[str | None, str | None]]) -> list[str]:
    uuids: list[str | None] = []
    errors: dict[int, str] = {}
    counts: dict[tuple[str, str], int] = {}
    for i, (job, (doc, error)) in enumerate(zip(jobs, outcome)):
        if doc is None:
            uuids.append(None)
            errors[i] = error or "not queued"
            continue
        job._apply_lifecycle(doc)
        kind = (job.jobType, job.QUEUE_NAME)
        counts[kind] = counts.get(kind, 0) + 1
        uuids.append(job.uuid)
    for (job_type, queue), n in counts.items():
        metrics.enqueued(job_type, queue, n)
    if errors:
        raise BulkEnqueueError(uuids, errors)
    return [uuid for uuid in uuids if uuid is not None]


def enqueue_many(jobs: Sequence[BaseJob], delay: float = 0) -> list[str]:
    """Enqueue new jobs (of any types and queues) in as few round trips as the backends
    allow; returns their uuids in the order given.

    Every job is checked first: a bad one raises, naming its index, and nothing is written.
    When some jobs are saved and others are not (a store failing mid-batch), raises
    ``BulkEnqueueError`` saying which (docs/lifecycle.md "Bulk enqueue"). With a queue
    server, the entries are put by this process's relay, as for ``enqueue``.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    docs = _prepare_batch(jobs)
    with metrics.counting_errors("enqueue"):
        outcome = client().enqueue_many(docs, float(delay))
    return _finish_batch(jobs, outcome)


async def enqueue_many_async(jobs: Sequence[BaseJob], delay: float = 0) -> list[str]:
    """``enqueue_many`` for asyncio/Tornado code: never blocks the event loop while waiting."""
    jobs = list(jobs)
    if not jobs:
        return []
    docs = _prepare_batch(jobs)
    with metrics.counting_errors("enqueue"):
        outcome = await client().enqueue_many_async(docs, float(delay))
    return _finish_batch(jobs, outcome)


#: Seconds ``flush()`` waits when given no timeout, and the flush at interpreter exit at most;
#: ``GEYSER_FLUSH_TIMEOUT`` overrides it.
DEFAULT_FLUSH_TIMEOUT = 10.0


def _flush_timeout(timeout: float | None) -> float:
    """``timeout``, else ``GEYSER_FLUSH_TIMEOUT``, else the default; ``ValueError`` names a bad one."""
    where = "flush(timeout=...)"
    if timeout is None:
        raw = os.environ.get("GEYSER_FLUSH_TIMEOUT", "")
        if not raw:
            return DEFAULT_FLUSH_TIMEOUT
        where = "GEYSER_FLUSH_TIMEOUT"
        try:
            timeout = float(raw)
        except ValueError:
            raise ValueError(f"{where}={raw!r}: expected seconds, a number >= 0") from None
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{where}={timeout!r}: expected seconds, a number >= 0")
    return value


def pending() -> int:
    """Jobs this process enqueued whose queue entries are not put yet (always 0 on the
    embedded file, where the entry is written with the document). They are saved, queued
    documents; this process's relay puts them (docs/lifecycle.md "Enqueue")."""
    return _core.pending()


def flush(timeout: float | None = None) -> int:
    """Wait until every job this process enqueued is on its queue with its queue id noted in
    its document, or ``timeout`` seconds have passed (None: ``GEYSER_FLUSH_TIMEOUT``, else
    10 s). Returns how many are still not put: 0 means all delivered. Runs by itself at
    interpreter exit."""
    deadline = time.monotonic() + _flush_timeout(timeout)
    while True:  # slices of at most _WAIT_SLICE, so that Ctrl-C is seen
        left = _core.flush(min(_WAIT_SLICE, max(0.0, deadline - time.monotonic())))
        # Done once every job is put and its queue id noted: a slice can end between the two.
        if (left == 0 and _core.unnoted() == 0) or time.monotonic() >= deadline:
            return left


async def flush_async(timeout: float | None = None) -> int:
    """``flush`` for asyncio/Tornado code: never blocks the event loop."""
    return await _core.flush_async(_flush_timeout(timeout))


def _flush_at_exit() -> None:
    """Give this process's relay a bounded time to put what it holds; say what it left."""
    if _core.pending() == 0:
        return
    try:
        limit = _flush_timeout(None)
    except ValueError as e:
        print(f"geyser: {e}; waiting {DEFAULT_FLUSH_TIMEOUT:g} s instead", file=sys.stderr)
        limit = DEFAULT_FLUSH_TIMEOUT
    left = flush(limit)
    if left:
        print(f"geyser: {left} enqueued job(s) not on their queue at exit (it did not answer within {limit:g} s); "
              "they are saved as queued and the maintenance sweep puts them", file=sys.stderr, flush=True)


atexit.register(_flush_at_exit)


def kick(queue: str, bound: int = 1) -> int:
    """Move up to ``bound`` buried entries of ``queue`` (or, when none is buried, delayed ones)
    back to ready; a kicked failed job runs again with its retry budget renewed. Returns how many."""
    return client().kick(queue, int(bound))


async def kick_async(queue: str, bound: int = 1) -> int:
    """``kick`` for asyncio code."""
    return await client().kick_async(queue, int(bound))


def pause_queue(queue: str) -> None:
    """Stop every worker from taking jobs of ``queue`` until ``resume_queue``: its jobs wait,
    new ones are queued as usual, and jobs already running go on. On beanstalkd a queue that
    holds no job and that no worker watches is unknown to the server and cannot be paused
    (``GeyserError``); see docs/lifecycle.md "Pausing a queue"."""
    client().pause(queue)


def resume_queue(queue: str) -> None:
    """Let workers take the jobs of ``queue`` again; waiting workers get them at once."""
    client().resume(queue)


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
