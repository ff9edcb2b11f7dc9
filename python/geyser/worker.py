"""``python -m geyser.worker``: import the job modules, reserve jobs from their
queues, and run them, in N processes under a supervisor (``geyser.supervisor``).

This module is one worker process: M runner threads, each with its own native
consumer (the first runs in the main thread so a stop signal can interrupt a
sleep), a watchdog thread that stops attempts which time out, are cancelled,
lose their fence, or outlive a shutdown's grace period, and a thread that runs the
maintenance sweep every ``--sweep-interval``. At its start it records on their jobs
the crashes of worker processes that died before it (``geyser.ledger``). The native
core reserves, heartbeats and applies outcomes; this module maps ``run()``'s result or
exception to an outcome. It touches the queue and store only through ``geyser._core``.

The command itself (no ``--child``) is the supervisor: it is handed over to
``geyser.supervisor`` before anything a worker process needs is imported, so that the
supervisor stays small.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--child" not in sys.argv[1:]:
    from geyser.supervisor import main as _supervise

    sys.exit(_supervise())

# What a worker process needs, imported only by one (see the hand-over above).
import argparse
import importlib
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from geyser import _core, logs, maintenance, metrics, registry
from geyser.config import client
from geyser.errors import (
    BackendError,
    ConfigError,
    ConflictError,
    GeyserError,
    InvalidDocument,
    JobCancelled,
    UnknownJobType,
    WFErrorContinue,
    WFErrorFinish,
)
from geyser.jobs import BaseJob
from geyser.ledger import Ledger, LedgerEntry, record_crashes
from geyser.worker_cli import EXIT_CONFIG, EXIT_RECYCLE, EXIT_REPLACE, build_parser, parse_args

__all__ = [
    "EXIT_CONFIG",
    "EXIT_RECYCLE",
    "EXIT_REPLACE",
    "WorkerProcess",
    "build_parser",
    "import_job_modules",
    "main",
    "parse_args",
    "run_attempt",
    "Runner",
]

log = logging.getLogger("geyser.worker")

#: How long one reserve call waits before the loop looks at signals again.
RESERVE_SLICE = 0.5
#: How long a runner waits before reserving again after the queue or store failed.
BACKEND_PAUSE = 1.0
#: How often the watchdog looks at the running attempts.
WATCH_EVERY = 0.1


class ConfigProblem(Exception):
    """The worker cannot start as configured; the message says what to fix."""


class _Stop(BaseException):
    """Raised inside ``run()`` by the watchdog: this attempt must end now.

    A ``BaseException`` so that a job's ``except Exception`` does not swallow it."""

    outcome = "hand_back"


class _HandBack(_Stop):
    """The worker is shutting down and the grace period is over."""


class _Cancel(_Stop):
    """``cancel()`` was requested and the job did not stop by itself."""

    outcome = "cancelled"


class _Timeout(_Stop):
    """The attempt ran longer than the job's ``TIMEOUT``."""

    outcome = "continue"


class _Lost(_Stop):
    """A newer attempt took the job over; this one's writes are refused."""

    outcome = "lost"


@dataclass
class Running:
    """One attempt a runner thread is executing, as the watchdog sees it."""

    attempt: _core.Attempt
    job: BaseJob
    thread_id: int
    started: float = field(default_factory=time.monotonic)
    #: True only while ``run()`` itself executes: stops are raised only then.
    in_run: bool = False
    #: The stop raised into ``run()``, and when (monotonic).
    stop: type[_Stop] | None = None
    stop_at: float = 0.0
    #: When the watchdog first saw the cancel request.
    cancel_seen: float | None = None

    @property
    def timeout(self) -> float | None:
        value = self.job.queueKwargs.get("timeout")
        return None if value is None else float(value)


def _finish(attempt: _core.Attempt, doc_json: str, outcome: str, **kw: Any) -> str | None:
    """Finish the attempt; returns the job's status as saved, None when a newer attempt owns it."""
    try:
        with metrics.counting_errors("finish"):
            return attempt.finish(doc_json, outcome, **kw)
    except ConflictError as e:
        log.warning("%s", e)
        return None


def _outcome_args(stop: type[_Stop], running: Running) -> tuple[str, dict[str, Any]]:
    """The outcome (and its arguments) of an attempt ended by the watchdog."""
    if stop is _Timeout:
        msg = f"attempt {running.job.attempts} exceeded TIMEOUT of {running.timeout:g} s and was stopped"
        return "continue", {"code_json": json.dumps("timeout"), "msg": msg}
    return stop.outcome, {}


def run_attempt(attempt: _core.Attempt, runner: Runner | None = None) -> str:
    """Run one reserved job to its outcome; returns the outcome's name.

    With a ``runner``, the attempt is shown as its ``current`` so a watchdog can stop it,
    and noted in its process's ledger while it runs. Logs the start and the end (see
    ``_log_end``) and counts both in ``geyser.metrics``."""
    started = time.monotonic()
    doc = json.loads(attempt.document)
    fields = {"uuid": attempt.uuid, "job_type": attempt.job_type,
              "queue": str((doc.get("queueKwargs") or {}).get("queue", "")), "attempt": int(doc.get("attempts", 0))}
    if log.isEnabledFor(logging.INFO):  # what log.info would ask, before its arguments are built
        log.info("job %s (%s) attempt %d: started on queue %s", fields["uuid"], fields["job_type"], fields["attempt"],
                 fields["queue"], extra={**fields, "outcome": "started"})
    with metrics.attempt_running(fields["job_type"], fields["queue"]):
        outcome, status, kw = _attempt_outcome(attempt, doc, runner)
    seconds = time.monotonic() - started
    metrics.attempt_ended(fields["job_type"], fields["queue"], outcome, status, seconds)
    _log_end(fields, outcome, status, kw, seconds)
    return outcome


def _attempt_outcome(attempt: _core.Attempt, doc: dict[str, Any],
                     runner: Runner | None) -> tuple[str, str | None, dict[str, Any]]:
    """Run the attempt and save its outcome; returns the outcome, the job's status as
    saved (None: not saved) and the outcome's arguments."""
    try:
        cls = registry.job_class(attempt.job_type)
        job: BaseJob = cls.from_document(doc)
    except UnknownJobType as e:  # the native triage releases these; one arriving anyway is retried, then buried
        kw = {"code_json": json.dumps("unknown-job-type"), "msg": f"{e}; this worker cannot run it"}
        return "continue", _finish(attempt, attempt.document, "continue", **kw), kw
    except Exception as e:  # a document its schema no longer accepts
        kw = {"code_json": json.dumps("unrunnable"), "msg": str(e)}
        return "reject", _finish(attempt, attempt.document, "reject", **kw), kw
    running = Running(attempt, job, threading.get_ident())
    if runner is not None:
        runner.current = running
        runner.ledger.started(runner.slot, LedgerEntry(job.uuid, str(job.fence), int(job.attempts)))
    job._attempt = attempt
    try:
        outcome, kw = _run(job, running)
    finally:
        job._attempt = None
    return _save_outcome(attempt, job, outcome, kw)


def _run(job: BaseJob, running: Running) -> tuple[str, dict[str, Any]]:
    try:
        running.in_run = True
        try:
            result = job.run()
        finally:
            running.in_run = False
        at, requeue = _check_result(job, result)
        return ("requeue" if requeue else "succeeded"), {"at": at}
    except _Stop as stop:
        return _outcome_args(type(stop), running)
    except JobCancelled:
        return "cancelled", {}
    except WFErrorFinish as e:
        return "finish", {"code_json": json.dumps(e.code, default=str), "msg": e.msg}
    except WFErrorContinue as e:
        return "continue", {"code_json": json.dumps(e.code, default=str), "msg": e.msg}
    except (SystemExit, KeyboardInterrupt) as e:
        # The job's own doing (a stop signal to this process is handled without raising):
        # an error of this attempt, never the end of the worker process.
        what = f"called sys.exit({e.code!r})" if isinstance(e, SystemExit) else "raised KeyboardInterrupt"
        return "continue", {
            "code_json": json.dumps("exception"),
            "msg": f"{type(e).__name__}: run() {what}; the worker does not exit for a job",
            "traceback": traceback.format_exc(),
        }
    except Exception as e:
        return "continue", {
            "code_json": json.dumps("exception"),
            "msg": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }


def _check_result(job: BaseJob, result: Any) -> tuple[float, bool]:
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"{type(job).__name__}.run() must return (resume_at_epoch_seconds, requeue), got {result!r}")
    at, requeue = result
    return float(at), bool(requeue)


def _save_outcome(attempt: _core.Attempt, job: BaseJob, outcome: str,
                  kw: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    """Finish the attempt with the job's final document; returns the outcome saved, the
    job's status as saved (None: a newer attempt owns it) and the outcome's arguments.

    A document that cannot be saved (a value JSON cannot hold, NaN, a field the schema
    refuses) is an error of this attempt: the document as the attempt started is saved
    with an ``invalid-document`` error instead, and the retry policy applies."""
    try:
        doc_json = job._document_json()
    except Exception as e:  # anything the job's values make serialisation raise
        outcome, kw = _invalid_document(job, e, outcome, kw)
        doc_json = attempt.document
    try:
        with metrics.counting_errors("finish"):
            return outcome, attempt.finish(doc_json, "hand_back" if outcome == "lost" else outcome, **kw), kw
    except ConflictError as e:
        log.warning("%s", e)
        return outcome, None, kw
    except InvalidDocument as e:  # the engine refused it: NaN, infinity, a number it cannot hold
        if doc_json == attempt.document:
            raise
        outcome, kw = _invalid_document(job, e, outcome, kw)
    return outcome, _finish(attempt, attempt.document, "hand_back" if outcome == "lost" else outcome, **kw), kw


def _invalid_document(job: BaseJob, error: Exception, outcome: str, kw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The outcome of an attempt whose final document cannot be saved."""
    msg = f"the job's document cannot be saved: {_unsaveable_field(job, error)}"
    if outcome in ("hand_back", "lost", "cancelled"):  # nothing of this attempt's is kept anyway
        log.warning("job %s: %s; its changes are dropped", job.uuid, msg)
        return outcome, kw
    if kw.get("msg"):
        msg += f" (the attempt itself ended with {kw['msg']})"
    new_kw = {"code_json": json.dumps("invalid-document"), "msg": msg}
    if kw.get("traceback"):
        new_kw["traceback"] = kw["traceback"]
    return ("finish" if outcome == "finish" else "continue"), new_kw


def _unsaveable_field(job: BaseJob, error: Exception) -> str:
    """Which field of the job's document JSON cannot hold, and why; else the error itself."""
    try:
        doc = job.to_document()
    except Exception:  # the schema's own dump refused: its error names the field
        return f"{type(error).__name__}: {error}"
    for name, value in doc.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            return f"field {name!r}: {e}"
    return f"{type(error).__name__}: {error}"


#: The transitions an attempt ends with that are logged as warnings.
_TROUBLE = frozenset({"retrying", "failed", "gave_up", "lost"})


def _transition(outcome: str, status: str | None) -> str:
    """What an attempt's end did to its job: succeeded, retrying, requeued, failed (for good,
    by the job's own decision or a document it cannot run), gave_up (no retries left),
    cancelled, handed_back, or lost (a newer attempt owns the job; nothing was saved)."""
    if status is None or outcome == "lost":
        return "lost"
    if status == "failed":
        return "gave_up" if outcome == "continue" else "failed"
    if status == "queued":
        return {"continue": "retrying", "requeue": "requeued"}.get(outcome, "handed_back")
    return status


def _log_end(fields: dict[str, Any], outcome: str, status: str | None, kw: dict[str, Any], seconds: float) -> None:
    """One line per attempt's end: what became of the job, how long the attempt ran, and the
    error if there was one; the job fields also as the record's attributes (``geyser.logs``)."""
    transition = _transition(outcome, status)
    level = logging.WARNING if transition in _TROUBLE else logging.INFO
    traceback_text = kw.get("traceback")
    show_traceback = bool(traceback_text) and log.isEnabledFor(logging.DEBUG)
    if not (show_traceback or log.isEnabledFor(level)):  # nothing to log: build nothing (once per job)
        return
    detail = kw.get("msg") or ""
    if transition == "lost":
        detail = "lost the job to a newer attempt; abandoned"
    elif outcome == "requeue":
        detail = f"to run again at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(kw['at']))}"
    extra = {**fields, "duration_s": round(seconds, 6), "outcome": transition}
    log.log(level, "job %s (%s) attempt %d: %s after %.3f s%s", fields["uuid"], fields["job_type"], fields["attempt"],
            transition.replace("_", " "), seconds, f": {detail}" if detail else "", extra=extra)
    if show_traceback:
        log.debug("job %s attempt %d traceback:\n%s", fields["uuid"], fields["attempt"], traceback_text.rstrip(),
                  extra=extra)


class Runner:
    """One worker loop over one native consumer; reserves only when it can start the job."""

    def __init__(self, queues: list[str], burst: bool = False, progress_interval: float = 1.0, name: str = "",
                 stop_grace: float = 10.0, ledger: Ledger | None = None, slot: int = 0,
                 on_attempt_done: Callable[[], None] | None = None) -> None:
        self.queues = queues
        self.burst = burst
        self.stopping = False
        self.current: Running | None = None
        #: Where this runner notes the attempt it runs, for the supervisor should the process die.
        self.ledger = ledger or Ledger(None)
        self.slot = slot
        self.on_attempt_done = on_attempt_done
        name = name or f"{socket.gethostname()}:{os.getpid()}"
        # The native heartbeat ends the process of a job that holds the GIL past TIMEOUT,
        # after the watchdog here had its chance (a soft stop, then a hard one).
        self.worker = _core.Worker(client(), queues, name, progress_interval, hard_stop_after=2 * stop_grace,
                                   job_types=sorted(registry.job_classes()))
        # Finishing a job also starts the next ready one, both written in one store call
        # (docs/operating.md, "Where a drained job's time goes"); off once the loop is to stop.
        self.worker.set_prefetch(True)

    def stop(self, *_: Any) -> None:
        """Finish the running job, then leave the loop."""
        self.stopping = True
        self.worker.set_prefetch(False)

    def run(self) -> int:
        """Reserve and run jobs until stopped (or, with burst, until the queues are empty)."""
        try:
            return self._loop()
        finally:
            try:
                self.worker.close()
            except _core.GeyserError as e:
                log.warning("could not settle the last job's queue entry (whoever reserves it next will): %s", e)

    def _loop(self) -> int:
        done = 0
        while not self.stopping:
            try:
                attempt = self.worker.next(RESERVE_SLICE)
            except BackendError as e:
                metrics.note_backend_error(e, "reserve")
                log.warning("queue or store unavailable, trying again in %g s: %s", BACKEND_PAUSE, e)
                time.sleep(BACKEND_PAUSE)
                continue
            if attempt is None:
                if self.burst and self.worker.queues_idle(client()):
                    break
                continue
            if self.stopping:  # reserved while the stop came in: give it straight back
                _finish(attempt, attempt.document, "hand_back")
                break
            try:
                run_attempt(attempt, self)
            except _Stop:
                # Raised just after run() returned, before the watchdog saw it end.
                log.warning("job %s: stop arrived as the attempt ended", attempt.uuid)
            finally:
                self.current = None
                self.ledger.ended(self.slot)
            done += 1
            if self.on_attempt_done is not None:
                self.on_attempt_done()
        return done


def _raise_in_thread(thread_id: int, exc: type[BaseException]) -> None:
    """Raise ``exc`` in another thread at its next bytecode (not inside a C call)."""
    import ctypes  # here: only a stop of a job in another runner thread needs it

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))


class WorkerProcess:
    """Runner threads, signal handling and the watchdog of one worker process."""

    def __init__(self, args: argparse.Namespace, queues: list[str], ledger: Ledger | None = None) -> None:
        self.grace = args.grace
        self.stop_grace = args.stop_grace
        self.signals = 0
        self.shutdown_at: float | None = None
        self.parent = os.getppid()
        self.main_id = threading.main_thread().ident or 0
        self.pending: type[_Stop] | None = None
        #: Where the supervisor leaves the crashes of earlier worker processes to record.
        self.ledger_dir: str | None = args.ledger_dir
        self.sweeps = maintenance.PeriodicSweep(args.sweep_interval)
        self.max_jobs: int | None = args.max_jobs_per_child
        self.max_memory_mb: float | None = args.max_memory_per_child
        self.jobs_run = 0
        self._count_lock = threading.Lock()
        #: Why this process is to be replaced once its jobs are done (a limit it reached).
        self.recycle: str | None = None
        base = f"{socket.gethostname()}:{os.getpid()}"
        self.runners = [
            Runner(queues, args.burst, args.progress_interval, f"{base}/{i}" if args.threads > 1 else base,
                   args.stop_grace, ledger, i, self.attempt_done)
            for i in range(args.threads)
        ]

    # -- limits --------------------------------------------------------------------

    def attempt_done(self) -> None:
        """After each attempt: past --max-jobs-per-child or --max-memory-per-child, stop
        reserving; the process exits with EXIT_RECYCLE once its running jobs are done."""
        with self._count_lock:
            self.jobs_run += 1
            if self.recycle is not None:
                return
            if self.max_jobs is not None and self.jobs_run >= self.max_jobs:
                self.recycle = f"ran {self.jobs_run} job(s), the limit of --max-jobs-per-child"
            elif self.max_memory_mb is not None and (rss := resident_mb()) >= self.max_memory_mb:
                self.recycle = f"uses {rss:.0f} MB, over --max-memory-per-child {self.max_memory_mb:g} MB"
            else:
                return
        log.info("worker %d %s; finishing, to be replaced", os.getpid(), self.recycle)
        for r in self.runners:
            r.stop()

    # -- signals -----------------------------------------------------------------

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """First SIGTERM/SIGINT: stop reserving, let jobs finish within the grace period.
        The second: hand back what is running now."""
        self.signals += 1
        now = time.monotonic()
        if self.signals == 1:
            log.info("worker %d: %s, finishing running jobs (grace %g s)", os.getpid(), signal.Signals(signum).name, self.grace)
            self.shutdown_at = now + self.grace
        else:
            log.info("worker %d: second signal, handing back running jobs now", os.getpid())
            self.shutdown_at = now
        for r in self.runners:
            r.stop()

    def on_interrupt(self, _signum: int, _frame: FrameType | None) -> None:
        """SIGUSR1 from the watchdog: raise the pending stop in the main thread's job."""
        stop, self.pending = self.pending, None
        current = self.runners[0].current
        if stop is not None and current is not None and current.in_run:
            raise stop()

    # -- the watchdog --------------------------------------------------------------

    def interrupt(self, running: Running, stop: type[_Stop]) -> None:
        """Ask the attempt to stop: an exception raised inside its ``run()``."""
        if running.stop is not None or not running.in_run:
            return
        running.stop, running.stop_at = stop, time.monotonic()
        log.warning("job %s: stopping attempt %d (%s)", running.job.uuid, running.job.attempts, stop.__doc__)
        if running.thread_id == self.main_id:
            self.pending = stop
            signal.pthread_kill(self.main_id, signal.SIGUSR1)
        else:
            _raise_in_thread(running.thread_id, stop)

    def check(self, running: Running, now: float) -> None:
        """Decide whether one attempt must be stopped, softly first, then by ending the process."""
        if running.stop is not None:
            if now - running.stop_at >= self.stop_grace:
                self.hard_stop(running, running.stop)
            return
        try:
            lost, cancel = running.attempt.lost, running.attempt.cancel_requested
        except RuntimeError:  # finished between two looks
            return
        if lost:
            self.interrupt(running, _Lost)
        elif self.shutdown_at is not None and now >= self.shutdown_at:
            self.interrupt(running, _HandBack)
        elif running.timeout is not None and now - running.started >= running.timeout:
            self.interrupt(running, _Timeout)
        elif cancel:
            running.cancel_seen = running.cancel_seen or now
            if now - running.cancel_seen >= self.stop_grace:
                self.interrupt(running, _Cancel)

    def hard_stop(self, running: Running, stop: type[_Stop]) -> None:
        """The job ignored its stop: save its outcome from here, hand back the other
        runners' jobs, and end the process (the supervisor starts a new one)."""
        log.error("job %s did not stop within %g s; ending worker process %d", running.job.uuid, self.stop_grace, os.getpid())
        for r in self.runners:  # no finish below may start a next job for this dying process
            r.stop()
        outcome, kw = _outcome_args(stop, running)
        _finish_quietly(running, "hand_back" if outcome == "lost" else outcome, kw)
        for r in self.runners:
            other = r.current
            if other is not None and other is not running:
                _finish_quietly(other, "hand_back", {})
        self.sweeps.release_lease()
        logging.shutdown()
        os._exit(EXIT_REPLACE)

    def watch(self) -> None:
        """The watchdog thread's loop."""
        while True:
            time.sleep(WATCH_EVERY)
            if os.getppid() != self.parent and self.shutdown_at is None:
                log.warning("worker %d: supervisor is gone; shutting down", os.getpid())
                self.shutdown_at = time.monotonic() + self.grace
                for r in self.runners:
                    r.stop()
            now = time.monotonic()
            for r in self.runners:
                running = r.current
                if running is not None:
                    self.check(running, now)

    # -- running -------------------------------------------------------------------

    def run(self) -> int:
        """Run the runners until they stop; returns the process's exit status."""
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGUSR1, self.on_interrupt)
        if self.ledger_dir is not None:  # before reserving: a dead process's job may come back here
            record_crashes(self.ledger_dir)
        threading.Thread(target=self.watch, name="geyser-watchdog", daemon=True).start()
        self.sweeps.start()
        log.info("worker %d watching %s with %d thread(s)", os.getpid(), ", ".join(self.runners[0].queues), len(self.runners))
        threads = [threading.Thread(target=r.run, name=f"geyser-runner-{i}") for i, r in enumerate(self.runners[1:], 1)]
        for t in threads:
            t.start()
        self.runners[0].run()
        for t in threads:
            t.join()
        self.sweeps.stop()
        log.info("worker %d stopping after %d jobs", os.getpid(), self.jobs_run)
        return EXIT_RECYCLE if self.recycle is not None and not self.signals else 0


def resident_mb() -> float:
    """This process's resident memory in MB (its peak where the current size is unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _finish_quietly(running: Running, outcome: str, kw: dict[str, Any]) -> None:
    try:
        _finish(running.attempt, running.job._document_json(), outcome, **kw)
    except (GeyserError, RuntimeError) as e:  # already finished, or the store is away
        log.warning("job %s: could not save %s: %s", running.job.uuid, outcome, e)


def _queues_of_registered_jobs() -> list[str]:
    return sorted({cls.QUEUE_NAME for cls in registry.job_classes().values()})


def import_job_modules(extra: list[str]) -> list[str]:
    """Import the ``-m`` modules, then those in ``geyser.registry.JOB_MODULES`` as it is
    then; returns every module imported, in order (the list a child process is given).
    A module that does not import is a ``ConfigProblem`` naming it and the error."""
    imported: list[str] = []

    def load(names: list[str]) -> None:
        for name in names:
            if name in imported:
                continue
            try:
                importlib.import_module(name)
            except Exception as e:  # anything the module raises on import: the user's to fix
                log.debug("importing job module %r", name, exc_info=True)
                raise ConfigProblem(f"cannot import job module {name!r}: {type(e).__name__}: {e}") from e
            imported.append(name)

    load(list(extra))
    load(list(registry.JOB_MODULES))  # read after the -m modules, which may extend it
    return imported


def _configure(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Import the job modules and choose the queues; returns both."""
    modules = import_job_modules(args.module)
    queues = [q for arg in args.queues for q in arg.split(",") if q] or _queues_of_registered_jobs()
    if not queues:
        raise ConfigProblem("no queues to watch: no job classes registered (use -m MODULE or "
                            "geyser.registry.JOB_MODULES) and no --queues")
    return modules, queues


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m geyser.worker``: the supervisor (``geyser.supervisor``), or
    (``--child``) one worker process.

    Exits with EXIT_CONFIG (78) when the worker cannot start as configured."""
    args = parse_args(argv)
    if not args.child:
        from geyser.supervisor import supervise

        return supervise(args, list(argv if argv is not None else sys.argv[1:]))
    logs.configure(args.log_level, args.log_format)
    sys.path.insert(0, os.getcwd())
    ledger = Ledger(args.ledger_dir)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics.count_heartbeat_failures()
    else:  # nobody serves this process's counts
        metrics.disable()
    try:
        _, queues = _configure(args)
        process = WorkerProcess(args, queues, ledger)
    except (ConfigProblem, ConfigError) as e:
        log.error("cannot start: %s", e)
        ledger.config_error(str(e))
        return EXIT_CONFIG
    except GeyserError as e:
        log.error("cannot start: %s", e)
        ledger.start_error(str(e))
        return 1
    return process.run()


if __name__ == "__main__":
    sys.exit(main())
