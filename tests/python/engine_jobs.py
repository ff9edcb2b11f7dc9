"""Job classes of the worker-engine tests (test_engine*.py); workers import them with -m engine_jobs."""

from __future__ import annotations

import time
from typing import Any

from marshmallow import fields

import geyser


class LongSchema(geyser.BaseJobSchema):
    seconds = fields.Float(load_default=1.0)
    runs = fields.Integer(load_default=0)


class LongJob(geyser.BaseJob):
    """Sleeps `seconds` in small steps on its first run, 0.2 s on later ones; counts its runs
    in a schema field (saved at once as progress, so a handed-back or crashed run is seen)."""

    JOB_TYPE = "engine_long"
    SCHEMA = LongSchema
    QUEUE_NAME = "engine_long"
    RETRY_DELAY = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds = kwargs.get("seconds", 1.0)
        self.runs = kwargs.get("runs", 0)

    def run(self) -> tuple[float, bool]:
        self.update_attrs(runs=self.runs + 1)
        end = time.time() + (self.seconds if self.runs == 1 else 0.2)
        while time.time() < end:
            time.sleep(0.05)
        self.record_result(0, f"attempt {self.attempts}")
        return time.time(), False


class LongOnceJob(LongJob):
    """`LongJob` with no retries: an attempt lost with its worker fails the job."""

    JOB_TYPE = "engine_long_once"
    QUEUE_NAME = "engine_long_once"
    MAX_RETRIES = 0


class WaitCancelJob(geyser.BaseJob):
    """Waits until it sees `self.cancelled`, then reports progress (which raises JobCancelled)."""

    JOB_TYPE = "engine_wait_cancel"
    QUEUE_NAME = "engine_cancel"

    def run(self) -> tuple[float, bool]:
        deadline = time.time() + 60
        while not self.cancelled and time.time() < deadline:
            time.sleep(0.05)
        self.record_event("saw the cancel request")
        return time.time(), False


class IgnoreCancelJob(geyser.BaseJob):
    """Sleeps for a minute without a single progress call."""

    JOB_TYPE = "engine_ignore_cancel"
    QUEUE_NAME = "engine_cancel"

    def run(self) -> tuple[float, bool]:
        for _ in range(600):
            time.sleep(0.1)
        return time.time(), False


class SleepyJob(geyser.BaseJob):
    """Exceeds its TIMEOUT sleeping in a loop."""

    JOB_TYPE = "engine_sleepy"
    QUEUE_NAME = "engine_timeout"
    TIMEOUT = 1.0
    MAX_RETRIES = 1
    RETRY_DELAY = 0

    def run(self) -> tuple[float, bool]:
        while True:
            time.sleep(0.1)


class BusyJob(geyser.BaseJob):
    """Exceeds its TIMEOUT in a busy loop."""

    JOB_TYPE = "engine_busy"
    QUEUE_NAME = "engine_timeout"
    TIMEOUT = 1.0
    MAX_RETRIES = 1
    RETRY_DELAY = 0

    def run(self) -> tuple[float, bool]:
        n = 0
        while True:
            n += 1


class StubbornJob(geyser.BaseJob):
    """Exceeds its TIMEOUT and swallows every attempt to stop it cooperatively."""

    JOB_TYPE = "engine_stubborn"
    QUEUE_NAME = "engine_timeout"
    TIMEOUT = 1.0
    MAX_RETRIES = 0

    def run(self) -> tuple[float, bool]:
        while True:
            try:
                time.sleep(0.1)
            except BaseException:  # noqa: BLE001 - ignoring the stop is the point
                pass


class GilHogJob(geyser.BaseJob):
    """Exceeds its TIMEOUT inside one C call that never lets go of the GIL."""

    JOB_TYPE = "engine_gil_hog"
    QUEUE_NAME = "engine_timeout"
    TIMEOUT = 1.0
    MAX_RETRIES = 0

    def run(self) -> tuple[float, bool]:
        sum(range(10**15))  # builtin sum over a range: no bytecode runs, so no signal or async exception lands
        return time.time(), False


class NoopJob(geyser.BaseJob):
    """Does nothing: for drain-rate measurements."""

    JOB_TYPE = "engine_noop"
    QUEUE_NAME = "engine_noop"

    def run(self) -> tuple[float, bool]:
        return time.time(), False
