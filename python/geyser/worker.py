"""``python -m geyser.worker``: import the job modules, reserve jobs from their
queues, and run them. The native core reserves, heartbeats and applies outcomes;
this module maps ``run()``'s result or exception to an outcome.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import traceback
from typing import Any

from geyser import _core, registry
from geyser.config import client
from geyser.errors import GeyserError, JobCancelled, WFErrorContinue, WFErrorFinish
from geyser.jobs import BaseJob

__all__ = ["main", "run_attempt", "Runner"]

log = logging.getLogger("geyser.worker")

#: How long one reserve call waits before the loop looks at signals again.
RESERVE_SLICE = 0.5


def _finish(attempt: _core.Attempt, doc_json: str, outcome: str, **kw: Any) -> None:
    try:
        attempt.finish(doc_json, outcome, **kw)
    except _core.ConflictError as e:
        log.warning("%s", e)


def run_attempt(attempt: _core.Attempt) -> str:
    """Run one reserved job to its outcome; returns the outcome's name."""
    try:
        cls = registry.job_class(attempt.job_type)
        job: BaseJob = cls.from_document(json.loads(attempt.document))
    except Exception as e:  # unknown type, or a document its schema no longer accepts
        log.error("job %s cannot run here: %s", attempt.uuid, e)
        _finish(attempt, attempt.document, "reject", code_json=json.dumps("unrunnable"), msg=str(e))
        return "reject"
    job._attempt = attempt
    try:
        outcome, kw = _run(job)
    finally:
        job._attempt = None
    log.info("job %s (%s) attempt %d: %s", job.uuid, job.jobType, job.attempts, outcome)
    _finish(attempt, job._document_json(), outcome, **kw)
    return outcome


def _run(job: BaseJob) -> tuple[str, dict[str, Any]]:
    try:
        result = job.run()
        at, requeue = _check_result(job, result)
        return ("requeue" if requeue else "succeeded"), {"at": at}
    except JobCancelled:
        return "cancelled", {}
    except WFErrorFinish as e:
        return "finish", {"code_json": json.dumps(e.code, default=str), "msg": e.msg}
    except WFErrorContinue as e:
        return "continue", {"code_json": json.dumps(e.code, default=str), "msg": e.msg}
    except KeyboardInterrupt:
        return "hand_back", {}
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
    """One worker loop over one native consumer."""

    def __init__(self, queues: list[str], burst: bool = False, progress_interval: float = 1.0) -> None:
        self.queues = queues
        self.burst = burst
        self.stopping = False
        name = f"{socket.gethostname()}:{os.getpid()}"
        self.worker = _core.Worker(client(), queues, name, progress_interval)

    def stop(self, *_: Any) -> None:
        """Finish the running job, then leave the loop."""
        self.stopping = True

    def run(self) -> int:
        """Reserve and run jobs until stopped (or, with burst, until the queues are empty)."""
        log.info("worker %s watching %s", os.getpid(), ", ".join(self.queues))
        done = 0
        while not self.stopping:
            attempt = self.worker.next(RESERVE_SLICE)
            if attempt is None:
                if self.burst and self.worker.queues_idle(client()):
                    break
                continue
            if run_attempt(attempt) == "hand_back":
                break
            done += 1
        log.info("worker %s stopping after %d jobs", os.getpid(), done)
        return done


def _queues_of_registered_jobs() -> list[str]:
    return sorted({cls.QUEUE_NAME for cls in registry.job_classes().values()})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m geyser.worker", description=__doc__)
    p.add_argument("-m", "--module", action="append", default=[], help="import this job module first (repeatable)")
    p.add_argument("-q", "--queues", action="append", default=[], help="queues to watch (comma-separated or repeated); default: those of the registered jobs")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("-c", "--concurrency", type=int, default=1, help="worker processes (this version runs 1)")
    p.add_argument("--progress-interval", type=float, default=1.0, help="seconds between progress writes of one job")
    p.add_argument("--log-level", default=os.environ.get("GEYSER_LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m geyser.worker``."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, os.getcwd())
    registry.import_job_modules(args.module)
    queues = [q for arg in args.queues for q in arg.split(",") if q] or _queues_of_registered_jobs()
    if not queues:
        log.error("no queues to watch: no job classes registered (use -m MODULE or JOB_MODULES) and no --queues")
        return 2
    try:
        runner = Runner(queues, burst=args.burst, progress_interval=args.progress_interval)
    except GeyserError as e:
        log.error("cannot start: %s", e)
        return 1
    signal.signal(signal.SIGTERM, lambda _s, _f: runner.stop())
    try:
        runner.run()
    except KeyboardInterrupt:
        log.info("interrupted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
