"""Job classes the tests enqueue and their worker processes import (-m jobs_for_tests)."""

from __future__ import annotations

import time
from typing import Any

from marshmallow import fields

import geyser


class EchoSchema(geyser.BaseJobSchema):
    message = fields.String(required=True)
    count = fields.Integer(load_default=1)


class EchoJob(geyser.BaseJob):
    """Succeeds, reporting progress on the way."""

    JOB_TYPE = "echo"
    SCHEMA = EchoSchema
    QUEUE_NAME = "echo"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = kwargs.get("message")
        self.count = kwargs.get("count", 1)

    def run(self) -> tuple[float, bool]:
        self.set_completeness(0.5)
        self.record_event(f"attempt {self.attempts}: {self.message}", action="echo")
        self.record_result(0, self.message.upper())
        return time.time(), False


class StepSchema(geyser.BaseJobSchema):
    steps_done = fields.Integer(load_default=0)
    steps = fields.Integer(load_default=2)
    wait = fields.Float(load_default=1.0)


class StepJob(geyser.BaseJob):
    """Requeues itself until `steps` runs are done; state lives in a schema field."""

    JOB_TYPE = "step"
    SCHEMA = StepSchema
    QUEUE_NAME = "steps"
    MAX_RETRIES = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps_done = kwargs.get("steps_done", 0)
        self.steps = kwargs.get("steps", 2)
        self.wait = kwargs.get("wait", 1.0)

    def run(self) -> tuple[float, bool]:
        self.steps_done += 1
        self.record_event(f"step {self.steps_done} at {time.time():.3f}")
        if self.steps_done < self.steps:
            return time.time() + self.wait, True
        return time.time(), False


class FailSchema(geyser.BaseJobSchema):
    mode = fields.String(required=True)
    succeed_on = fields.Integer(load_default=0)
    tries = fields.Integer(load_default=0)


class FailJob(geyser.BaseJob):
    """Fails in the way `mode` says: finish, continue, or crash (unexpected exception)."""

    JOB_TYPE = "fail"
    SCHEMA = FailSchema
    QUEUE_NAME = "fail"
    MAX_RETRIES = 2
    RETRY_DELAY = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = kwargs.get("mode")
        self.succeed_on = kwargs.get("succeed_on", 0)
        self.tries = kwargs.get("tries", 0)

    def run(self) -> tuple[float, bool]:
        self.tries += 1
        self.update_attrs(tries=self.tries)
        if self.succeed_on and self.attempts >= self.succeed_on:
            return time.time(), False
        if self.mode == "finish":
            raise geyser.WFErrorFinish(42, "cannot go on")
        if self.mode == "continue":
            raise geyser.WFErrorContinue(7, "try again")
        raise ZeroDivisionError("crashed on purpose")


class SlowSchema(geyser.BaseJobSchema):
    seconds = fields.Float(load_default=1.0)


class SlowJob(geyser.BaseJob):
    """Sleeps in small steps, reporting completeness."""

    JOB_TYPE = "slow"
    SCHEMA = SlowSchema
    QUEUE_NAME = "slow"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds = kwargs.get("seconds", 1.0)

    def run(self) -> tuple[float, bool]:
        start = time.time()
        while (elapsed := time.time() - start) < self.seconds:
            self.set_completeness(min(elapsed / self.seconds, 1.0))
            time.sleep(0.05)
        return time.time(), False
