"""Prometheus metrics: the definition of every metric Geyser exports, the counting helpers
the worker, ``geyser.jobs`` and ``geyser.web`` call where a transition happens, the queue
depths read at scrape time, and the two ways they are served (the API's ``GET /metrics``,
``exposition_async``; a worker's ``--metrics-port``, ``serve_worker_metrics``).

Each process counts what it does itself: a worker process the attempts it starts and how
each ends; the process that enqueues, cancels or retries (the API server, a script) those.
Under ``python -m geyser.worker`` the supervisor gives its children a private
``PROMETHEUS_MULTIPROC_DIR`` (see ``geyser.supervisor``), so every child writes its values
to files there and the supervisor's port serves their sum.

Label values are job types, queue names and operation names only, never a URL (a queue or
store URL may hold a password). This module touches the queue only to read queue depths.

``prometheus_client`` (and asyncio) are imported on first use, not with this module: a
process that never counts or serves (the supervisor without ``--metrics-port``, a worker
process whose counts nobody serves, which calls ``disable()``) does not carry them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from geyser.config import client
from geyser.errors import BackendError, GeyserError, QueueUnavailable, StoreUnavailable

if TYPE_CHECKING:
    from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = [
    "CONTENT_TYPE",
    "QueueDepths",
    "attempt_ended",
    "attempt_running",
    "cancel_requested",
    "counting_errors",
    "disable",
    "enqueued",
    "exposition_async",
    "note_backend_error",
    "retried",
    "serve_worker_metrics",
    "worker_process_dead",
]

log = logging.getLogger("geyser.metrics")

#: The Content-Type of the text format served.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The Rust heartbeat's logger (its warnings are its failures: one per failed write, touch or check).
HEARTBEAT_LOGGER = "geyser.worker.heartbeat"

_JOB = ("job_type", "queue")
#: False once ``disable()`` was called: counting does nothing.
_counting = True


def disable() -> None:
    """This process's counts are never served (a worker process without ``--metrics-port``):
    from now on the counting helpers do nothing, and ``prometheus_client`` is not imported
    for them."""
    global _counting
    _counting = False


@functools.cache
def _metrics() -> SimpleNamespace:
    """Every metric this process counts, defined (and ``prometheus_client`` imported) on first use."""
    from prometheus_client import Counter, Gauge, Histogram

    return SimpleNamespace(
        JOBS_ENQUEUED=Counter("geyser_jobs_enqueued", "Jobs this process enqueued.", _JOB),
        JOBS_STARTED=Counter("geyser_jobs_started", "Attempts started.", _JOB),
        JOBS_SUCCEEDED=Counter("geyser_jobs_succeeded", "Attempts that ended with the job succeeded.", _JOB),
        JOBS_FAILED=Counter("geyser_jobs_failed", "Attempts that ended with the job failed for good "
                            "(WFErrorFinish, an unrunnable document, or no retries left).", _JOB),
        JOBS_RETRIED=Counter("geyser_jobs_retried", "Failed jobs queued again: an attempt that failed with "
                             "retries left (by a worker), or an operator's retry (by the process that asked).", _JOB),
        JOBS_REQUEUED=Counter("geyser_jobs_requeued", "Attempts whose run() asked to run again later.", _JOB),
        JOBS_CANCELLED=Counter("geyser_jobs_cancelled", "Jobs cancelled: a queued job by the process that asked, "
                               "a running one by the worker whose attempt stopped.", _JOB),
        JOBS_RUNNING=Gauge("geyser_jobs_running", "Attempts running now.", _JOB, multiprocess_mode="livesum"),
        RUN_SECONDS=Histogram("geyser_job_run_seconds", "How long attempts ran, by how they ended.",
                              (*_JOB, "outcome"), buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600,
                                                           4 * 3600, float("inf"))),
        HEARTBEAT_FAILURES=Counter("geyser_heartbeat_failures", "Failed heartbeat rounds of running jobs (a "
                                   "progress or heartbeatAt write, a queue touch, or an ownership check)."),
        STORE_ERRORS=Counter("geyser_store_errors", "Store calls that failed (store unreachable or failing).",
                             ("operation",)),
        QUEUE_ERRORS=Counter("geyser_queue_errors", "Queue calls that failed (queue unreachable or failing).",
                             ("operation",)),
    )


#: The queue-depth gauge (name kept from Geyser's first hand-written /metrics).
QUEUE_JOBS = "geyser_queue_jobs"
QUEUE_STATES = ("ready", "delayed", "reserved", "buried")


def _queue_of(doc: Mapping[str, Any]) -> str:
    return str((doc.get("queueKwargs") or {}).get("queue", ""))


def enqueued(job_type: str, queue: str, n: int = 1) -> None:
    """``n`` jobs were enqueued by this process."""
    if _counting:
        _metrics().JOBS_ENQUEUED.labels(job_type, queue).inc(n)


def cancel_requested(doc: Mapping[str, Any]) -> None:
    """``cancel`` answered with ``doc`` (the full stored document): count it when the job is
    cancelled now (it was queued); a running job is counted by the worker when it stops."""
    if _counting and doc.get("status") == "cancelled":
        _metrics().JOBS_CANCELLED.labels(str(doc.get("jobType", "")), _queue_of(doc)).inc()


def retried(doc: Mapping[str, Any]) -> None:
    """An operator's ``retry`` queued the job of ``doc`` (the full stored document) again."""
    if _counting:
        _metrics().JOBS_RETRIED.labels(str(doc.get("jobType", "")), _queue_of(doc)).inc()


class _AttemptRunning:
    """``attempt_running``'s block (a class, not a generator: it is entered once per job)."""

    __slots__ = ("_gauge",)

    def __init__(self, job_type: str, queue: str) -> None:
        m = _metrics()
        m.JOBS_STARTED.labels(job_type, queue).inc()
        self._gauge = m.JOBS_RUNNING.labels(job_type, queue)

    def __enter__(self) -> None:
        self._gauge.inc()

    def __exit__(self, *_: object) -> None:
        self._gauge.dec()


#: What ``attempt_running`` returns when counting is off.
_NOTHING = nullcontext()


def attempt_running(job_type: str, queue: str) -> AbstractContextManager[None]:
    """A worker runs an attempt for the duration of the block: counted as started, and as
    running until the block ends (however it ends)."""
    return _AttemptRunning(job_type, queue) if _counting else _NOTHING


def attempt_ended(job_type: str, queue: str, outcome: str, status: str | None, seconds: float) -> None:
    """An attempt ended with ``outcome`` (the worker's), leaving the job in ``status`` as
    saved (None: not saved, e.g. a newer attempt took it over)."""
    if not _counting:
        return
    m = _metrics()
    m.RUN_SECONDS.labels(job_type, queue, outcome).observe(seconds)
    counter = {"succeeded": m.JOBS_SUCCEEDED, "failed": m.JOBS_FAILED, "cancelled": m.JOBS_CANCELLED}.get(status or "")
    if counter is None and status == "queued":
        counter = {"continue": m.JOBS_RETRIED, "requeue": m.JOBS_REQUEUED}.get(outcome)
    if counter is not None:
        counter.labels(job_type, queue).inc()


def note_backend_error(error: BaseException, operation: str) -> None:
    """Count ``error`` as a store or queue error of ``operation`` when it is one."""
    if not _counting:
        return
    if isinstance(error, StoreUnavailable):
        _metrics().STORE_ERRORS.labels(operation).inc()
    elif isinstance(error, QueueUnavailable):
        _metrics().QUEUE_ERRORS.labels(operation).inc()


class counting_errors:  # noqa: N801 (used as a function: ``with counting_errors("op"):``)
    """Count a store or queue error raised inside the block as one of ``operation``; re-raise it.

    A class rather than a generator context manager: the worker enters it once per job."""

    __slots__ = ("operation",)

    def __init__(self, operation: str) -> None:
        self.operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> bool:
        if error is not None and isinstance(error, BackendError):
            note_backend_error(error, self.operation)
        return False  # re-raise whatever was raised


class _HeartbeatFailures(logging.Handler):
    """Counts the warnings of the Rust heartbeat (its failures); prints nothing."""

    def emit(self, record: logging.LogRecord) -> None:
        _metrics().HEARTBEAT_FAILURES.inc()


def count_heartbeat_failures() -> None:
    """In a worker process whose counts are served: count every warning the heartbeat logs,
    whatever ``--log-level`` is."""
    _metrics()
    logger = logging.getLogger(HEARTBEAT_LOGGER)
    logger.setLevel(logging.WARNING)
    logger.addHandler(_HeartbeatFailures(logging.WARNING))


# -- queue depths and exposition ---------------------------------------------------------


def _depth_family(stats: Mapping[str, Mapping[str, Any]]) -> GaugeMetricFamily:
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(QUEUE_JOBS, "Jobs in a queue, by state.", labels=("queue", "state"))
    for queue, counts in stats.items():
        for state in QUEUE_STATES:
            family.add_metric((queue, state), float(counts[state]))
    return family


def _depth_failed(queue: str, error: GeyserError) -> None:
    note_backend_error(error, "stats")
    log.warning("metrics: no depth of queue %r: %s", queue, error)


class QueueDepths:
    """A ``prometheus_client`` collector: ``geyser_queue_jobs{queue, state}`` of the queues
    ``queues()`` names, read at each scrape; a queue that does not answer is left out (and
    counted as a queue error)."""

    def __init__(self, queues: Callable[[], Iterable[str]]) -> None:
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        stats: dict[str, Mapping[str, Any]] = {}
        for queue in self.queues():
            try:
                stats[queue] = client().stats_tube(queue)
            except GeyserError as e:
                _depth_failed(queue, e)
        yield _depth_family(stats)


class _Families:
    """A collector of metric families already read."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


async def exposition_async(queues: Iterable[str]) -> bytes:
    """This process's metrics and the depths of ``queues`` in the text format, the queues
    asked without blocking the event loop (the API's ``GET /metrics``)."""
    import asyncio

    from prometheus_client import REGISTRY, generate_latest

    if _counting:
        _metrics()  # every metric shows, at zero before its first count
    names = list(queues)
    answers = await asyncio.gather(*(client().stats_tube_async(q) for q in names), return_exceptions=True)
    stats: dict[str, Mapping[str, Any]] = {}
    for queue, answer in zip(names, answers):
        if isinstance(answer, GeyserError):
            _depth_failed(queue, answer)
        elif isinstance(answer, BaseException):
            raise answer
        else:
            stats[queue] = answer
    return generate_latest(REGISTRY) + generate_latest(_Families([_depth_family(stats)]))


def serve_worker_metrics(address: str, port: int, multiproc_dir: str, queues: list[str]) -> Callable[[], None]:
    """Serve the sum of the metrics the worker processes write to ``multiproc_dir``, and the
    depths of ``queues``, on ``http://address:port/metrics`` from a thread of this process;
    returns the function that stops serving. ``OSError`` when the port cannot be bound."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiproc_dir)
    registry.register(QueueDepths(lambda: queues))
    server, thread = start_http_server(port, address, registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop


def worker_process_dead(pid: int, multiproc_dir: str) -> None:
    """Worker process ``pid`` exited: its running-jobs gauge no longer counts (its counters
    stay in the sum)."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, multiproc_dir)
