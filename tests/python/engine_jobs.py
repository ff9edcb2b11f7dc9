"""Job classes of the worker-engine tests (test_engine*.py); workers import them with -m engine_jobs."""

from __future__ import annotations

import os
import signal
import sys
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


class DivideJob(geyser.BaseJob):
    """Divides by zero: a failure the worker's console must show."""

    JOB_TYPE = "engine_divide"
    QUEUE_NAME = "engine_divide"
    MAX_RETRIES = 0

    def run(self) -> tuple[float, bool]:
        return 1 / 0, False


class MisbehaveSchema(geyser.BaseJobSchema):
    how = fields.String(required=True)
    payload = fields.Raw(allow_none=True, load_default=None)


class MisbehaveJob(geyser.BaseJob):
    """Ends its attempt in a way that once ended the worker process, as `how` says."""

    JOB_TYPE = "engine_misbehave"
    SCHEMA = MisbehaveSchema
    QUEUE_NAME = "engine_misbehave"
    MAX_RETRIES = 1
    RETRY_DELAY = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.how = kwargs.get("how", "")
        self.payload = kwargs.get("payload")

    def run(self) -> tuple[float, bool]:
        if self.how == "exit3":
            sys.exit(3)
        if self.how == "exit0":
            sys.exit(0)
        if self.how == "interrupt":
            raise KeyboardInterrupt
        if self.how == "set":
            self.update_attrs(payload={1, 2})
        elif self.how == "object":
            self.record_result(object(), "x")
        elif self.how == "nan":
            self.record_result(float("nan"), "x")
        elif self.how == "assign":  # no progress call: only the final document holds it
            self.payload = {1, 2}
        elif self.how == "assign_nan":
            self.payload = [float("nan")]
        return time.time(), False


class GateSchema(geyser.BaseJobSchema):
    gate = fields.String(required=True)


class GatedFailJob(geyser.BaseJob):
    """Waits (at most 60 s) until the file `gate` exists, then fails; no retries, so the job
    gives up and its entry is to be buried."""

    JOB_TYPE = "engine_gated_fail"
    SCHEMA = GateSchema
    QUEUE_NAME = "engine_gated_fail"
    MAX_RETRIES = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate: str = kwargs["gate"]

    def run(self) -> tuple[float, bool]:
        deadline = time.time() + 60
        while not os.path.exists(self.gate) and time.time() < deadline:
            time.sleep(0.05)
        raise RuntimeError(f"attempt {self.attempts} fails")


class CrashJob(geyser.BaseJob):
    """Kills its own worker process (as the OOM killer would) on every attempt."""

    JOB_TYPE = "engine_crash"
    QUEUE_NAME = "engine_crash"
    MAX_RETRIES = 1
    RETRY_DELAY = 0

    def run(self) -> tuple[float, bool]:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # the signal lands first
        return time.time(), False


class CrashOnceJob(geyser.BaseJob):
    """Kills its worker process on its first attempt, succeeds on the next."""

    JOB_TYPE = "engine_crash_once"
    QUEUE_NAME = "engine_crash"
    MAX_RETRIES = 1
    RETRY_DELAY = 0

    def run(self) -> tuple[float, bool]:
        if self.attempts == 1:
            os._exit(7)
        return time.time(), False


#: What MemoryHogJob keeps alive, as a leaking job would.
_kept: list[bytes] = []


class MemoryHogJob(geyser.BaseJob):
    """Allocates 200 MB and keeps it."""

    JOB_TYPE = "engine_memory_hog"
    QUEUE_NAME = "engine_limits"

    def run(self) -> tuple[float, bool]:
        _kept.append(b"x" * (200 << 20))
        return time.time(), False


class LimitsNoopJob(geyser.BaseJob):
    """Does nothing, on the queue of the per-process limit tests."""

    JOB_TYPE = "engine_limits_noop"
    QUEUE_NAME = "engine_limits"

    def run(self) -> tuple[float, bool]:
        return time.time(), False
