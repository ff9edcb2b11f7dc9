"""``python -m geyser.worker``: import the job modules, reserve jobs from their
queues, and run them, in N processes under a supervisor (``geyser.supervisor``).

This module is one worker process: M runner threads, each with its own native
consumer (the first runs in the main thread so a stop signal can interrupt a
sleep), and a watchdog thread that stops attempts which time out, are cancelled,
lose their fence, or outlive a shutdown's grace period. The native core reserves,
heartbeats and applies outcomes; this module maps ``run()``'s result or exception
to an outcome. It touches the queue and store only through ``geyser._core``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from geyser import _core, registry
from geyser.config import client
from geyser.errors import GeyserError, JobCancelled, WFErrorContinue, WFErrorFinish
from geyser.jobs import BaseJob

__all__ = ["EXIT_REPLACE", "WorkerProcess", "main", "parse_args", "run_attempt", "Runner"]

log = logging.getLogger("geyser.worker")

#: How long one reserve call waits before the loop looks at signals again.
RESERVE_SLICE = 0.5
#: How long a runner waits before reserving again after the queue or store failed.
BACKEND_PAUSE = 1.0
#: How often the watchdog looks at the running attempts.
WATCH_EVERY = 0.1
#: Exit status of a process that stopped a stuck job by ending itself: replace it at once.
EXIT_REPLACE = 75


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


def _finish(attempt: _core.Attempt, doc_json: str, outcome: str, **kw: Any) -> None:
    try:
        attempt.finish(doc_json, outcome, **kw)
    except _core.ConflictError as e:
        log.warning("%s", e)


def _outcome_args(stop: type[_Stop], running: Running) -> tuple[str, dict[str, Any]]:
    """The outcome (and its arguments) of an attempt ended by the watchdog."""
    if stop is _Timeout:
        msg = f"attempt {running.job.attempts} exceeded TIMEOUT of {running.timeout:g} s and was stopped"
        return "continue", {"code_json": json.dumps("timeout"), "msg": msg}
    return stop.outcome, {}


def run_attempt(attempt: _core.Attempt, runner: Runner | None = None) -> str:
    """Run one reserved job to its outcome; returns the outcome's name.

    With a ``runner``, the attempt is shown as its ``current`` so a watchdog can stop it."""
    try:
        cls = registry.job_class(attempt.job_type)
        job: BaseJob = cls.from_document(json.loads(attempt.document))
    except Exception as e:  # unknown type, or a document its schema no longer accepts
        log.error("job %s cannot run here: %s", attempt.uuid, e)
        _finish(attempt, attempt.document, "reject", code_json=json.dumps("unrunnable"), msg=str(e))
        return "reject"
    running = Running(attempt, job, threading.get_ident())
    if runner is not None:
        runner.current = running
    job._attempt = attempt
    try:
        outcome, kw = _run(job, running)
    finally:
        job._attempt = None
    log.info("job %s (%s) attempt %d: %s", job.uuid, job.jobType, job.attempts, outcome)
    if outcome == "lost":
        log.warning("job %s: attempt %d lost the job to a newer attempt; abandoned", job.uuid, job.attempts)
    _finish(attempt, job._document_json(), "hand_back" if outcome == "lost" else outcome, **kw)
    return outcome


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


class Runner:
    """One worker loop over one native consumer; reserves only when it can start the job."""

    def __init__(self, queues: list[str], burst: bool = False, progress_interval: float = 1.0, name: str = "",
                 stop_grace: float = 10.0) -> None:
        self.queues = queues
        self.burst = burst
        self.stopping = False
        self.current: Running | None = None
        name = name or f"{socket.gethostname()}:{os.getpid()}"
        # The native heartbeat ends the process of a job that holds the GIL past TIMEOUT,
        # after the watchdog here had its chance (a soft stop, then a hard one).
        self.worker = _core.Worker(client(), queues, name, progress_interval, hard_stop_after=2 * stop_grace)

    def stop(self, *_: Any) -> None:
        """Finish the running job, then leave the loop."""
        self.stopping = True

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
            except _core.BackendError as e:
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
            done += 1
        return done


def _raise_in_thread(thread_id: int, exc: type[BaseException]) -> None:
    """Raise ``exc`` in another thread at its next bytecode (not inside a C call)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))


class WorkerProcess:
    """Runner threads, signal handling and the watchdog of one worker process."""

    def __init__(self, args: argparse.Namespace, queues: list[str]) -> None:
        self.grace = args.grace
        self.stop_grace = args.stop_grace
        self.signals = 0
        self.shutdown_at: float | None = None
        self.parent = os.getppid()
        self.main_id = threading.main_thread().ident or 0
        self.pending: type[_Stop] | None = None
        base = f"{socket.gethostname()}:{os.getpid()}"
        self.runners = [
            Runner(queues, args.burst, args.progress_interval, f"{base}/{i}" if args.threads > 1 else base,
                   args.stop_grace)
            for i in range(args.threads)
        ]

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
        outcome, kw = _outcome_args(stop, running)
        _finish_quietly(running, "hand_back" if outcome == "lost" else outcome, kw)
        for r in self.runners:
            other = r.current
            if other is not None and other is not running:
                _finish_quietly(other, "hand_back", {})
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
        threading.Thread(target=self.watch, name="geyser-watchdog", daemon=True).start()
        log.info("worker %d watching %s with %d thread(s)", os.getpid(), ", ".join(self.runners[0].queues), len(self.runners))
        threads = [threading.Thread(target=r.run, name=f"geyser-runner-{i}") for i, r in enumerate(self.runners[1:], 1)]
        for t in threads:
            t.start()
        done = self.runners[0].run()
        for t in threads:
            t.join()
        log.info("worker %d stopping after %d jobs", os.getpid(), done)
        return 0


def _finish_quietly(running: Running, outcome: str, kw: dict[str, Any]) -> None:
    try:
        _finish(running.attempt, running.job._document_json(), outcome, **kw)
    except (GeyserError, RuntimeError) as e:  # already finished, or the store is away
        log.warning("job %s: could not save %s: %s", running.job.uuid, outcome, e)


def _queues_of_registered_jobs() -> list[str]:
    return sorted({cls.QUEUE_NAME for cls in registry.job_classes().values()})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``python -m geyser.worker`` (supervisor and worker processes alike)."""
    p = argparse.ArgumentParser(prog="python -m geyser.worker", description=__doc__)
    p.add_argument("-m", "--module", action="append", default=[], help="import this job module first (repeatable)")
    p.add_argument("-q", "--queues", action="append", default=[], help="queues to watch (comma-separated or repeated); default: those of the registered jobs")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("-c", "--concurrency", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPU count)")
    p.add_argument("--threads", type=int, default=1, help="runner threads per process, each with its own consumer")
    p.add_argument("--grace", type=float, default=30.0, help="seconds running jobs get to finish after SIGTERM before they are handed back")
    p.add_argument("--stop-grace", type=float, default=10.0, help="seconds a timed-out or cancelled job gets to stop before its process is replaced")
    p.add_argument("--sweep-interval", type=float, default=300.0, help="seconds between maintenance sweeps run by the supervisor; 0: none")
    p.add_argument("--progress-interval", type=float, default=1.0, help="seconds between progress writes of one job")
    p.add_argument("--log-level", default=os.environ.get("GEYSER_LOG_LEVEL", "INFO"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.concurrency < 1 or args.threads < 1:
        p.error("--concurrency and --threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m geyser.worker``: the supervisor, or (``--child``) one worker process."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, os.getcwd())
    registry.import_job_modules(args.module)
    queues = [q for arg in args.queues for q in arg.split(",") if q] or _queues_of_registered_jobs()
    if not queues:
        log.error("no queues to watch: no job classes registered (use -m MODULE or JOB_MODULES) and no --queues")
        return 2
    if not args.child:
        from geyser.supervisor import Supervisor

        return Supervisor(args, list(argv if argv is not None else sys.argv[1:])).run()
    try:
        process = WorkerProcess(args, queues)
    except GeyserError as e:
        log.error("cannot start: %s", e)
        return 1
    return process.run()


if __name__ == "__main__":
    sys.exit(main())
