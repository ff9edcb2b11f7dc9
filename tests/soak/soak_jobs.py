"""Job classes of the fault soak (tests/soak/soak.py); its worker processes import them with
``-m soak_jobs``. Five kinds on five queues: instant, progress (sleeps in steps, reporting
completeness), flaky (fails its first attempts, then succeeds), doomed (always fails) and
exits (calls ``sys.exit`` on its first attempt); and the partition drill's job. Every run
appends a ``start`` line to the ledger file named by ``$SOAK_LEDGER``, then ``ok`` when it
returns success or ``fail`` when it raises (one ``write`` on a file opened ``O_APPEND``:
lines of concurrent processes never mix), so the soak can count runs. A run that returns
success also notes its attempt in the schema field ``won_by`` without a progress call: only
the final write stores it, so a document whose ``won_by`` is not exactly ``[attempts]`` had
more than one success, or a stale one, saved. Touches only the ledger file and the jobs' own
documents."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from marshmallow import fields

import geyser

#: Retries of the jobs expected to succeed: far more than the faults one job can meet.
GENEROUS_RETRIES = 12
#: Retries of the doomed jobs: they fail for good after this many more attempts.
DOOMED_RETRIES = 2


def ledger(event: str, job: geyser.BaseJob) -> None:
    """Append ``<event> <uuid> <attempt> <unix time> <pid> <group>`` to the soak's ledger
    (the group: ``$SOAK_GROUP``, the partition drill's name for a set of workers)."""
    path = os.environ.get("SOAK_LEDGER")
    if not path:
        raise RuntimeError("SOAK_LEDGER is not set: soak jobs run only under tests/soak/soak.py")
    group = os.environ.get("SOAK_GROUP", "-")
    line = f"{event} {job.uuid} {job.attempts} {time.time():.6f} {os.getpid()} {group}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class SoakSchema(geyser.BaseJobSchema):
    seconds = fields.Float(load_default=0.0)
    fail_times = fields.Integer(load_default=0)
    won_by = fields.List(fields.Integer(), load_default=list)


class SoakJob(geyser.BaseJob):
    """Base of the soak's kinds: ledger lines around ``work()``; success notes ``won_by``."""

    SCHEMA = SoakSchema
    MAX_RETRIES = GENEROUS_RETRIES
    RETRY_DELAY = 0
    #: What the soak expects the job to end as.
    EXPECTED = "succeeded"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds = kwargs.get("seconds", 0.0)
        self.fail_times = kwargs.get("fail_times", 0)
        self.won_by = list(kwargs.get("won_by") or [])

    def run(self) -> tuple[float, bool]:
        ledger("start", self)
        try:
            self.work()
        except BaseException:
            ledger("fail", self)
            raise
        self.won_by = [*self.won_by, self.attempts]
        ledger("ok", self)
        return time.time(), False

    def work(self) -> None:
        """The kind's own work; raising fails the attempt."""


class InstantJob(SoakJob):
    JOB_TYPE = "soak_instant"
    QUEUE_NAME = "soak_instant"


class ProgressJob(SoakJob):
    """Sleeps ``seconds`` in ten steps, reporting completeness after each."""

    JOB_TYPE = "soak_progress"
    QUEUE_NAME = "soak_progress"

    def work(self) -> None:
        for step in range(1, 11):
            time.sleep(self.seconds / 10)
            self.set_completeness(step / 10)


class FlakyJob(SoakJob):
    """Fails its first ``fail_times`` attempts, then succeeds."""

    JOB_TYPE = "soak_flaky"
    QUEUE_NAME = "soak_flaky"

    def work(self) -> None:
        if self.attempts <= self.fail_times:
            raise geyser.WFErrorContinue("flaky", f"attempt {self.attempts} fails on purpose")


class DoomedJob(SoakJob):
    """Always fails: ends ``failed`` once its retries are spent."""

    JOB_TYPE = "soak_doomed"
    QUEUE_NAME = "soak_doomed"
    MAX_RETRIES = DOOMED_RETRIES
    EXPECTED = "failed"

    def work(self) -> None:
        raise geyser.WFErrorContinue("doomed", f"attempt {self.attempts} always fails")


class PartitionJob(SoakJob):
    """The partition drill's job: its first attempt takes ``seconds`` (a progress write every
    0.5 s), later ones a second; the group that ran it is in the ledger."""

    JOB_TYPE = "soak_partition"
    QUEUE_NAME = "soak_partition"

    def work(self) -> None:
        seconds = self.seconds if self.attempts <= 1 else 1.0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            time.sleep(min(0.5, seconds - elapsed))
            self.set_completeness(min(1.0, (time.monotonic() - start) / seconds))


class ExitsJob(SoakJob):
    """Calls ``sys.exit(3)`` on its first attempt (an error of the attempt, not the worker's
    end), then succeeds."""

    JOB_TYPE = "soak_exits"
    QUEUE_NAME = "soak_exits"

    def work(self) -> None:
        if self.attempts <= 1:
            sys.exit(3)


KINDS: dict[str, type[SoakJob]] = {
    "instant": InstantJob,
    "progress": ProgressJob,
    "flaky": FlakyJob,
    "doomed": DoomedJob,
    "exits": ExitsJob,
}
