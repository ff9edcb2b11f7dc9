"""Job classes for the edge-case tests (test_edges.py): careless values, failures to retry,
types that share a queue. Workers import it with `-m edge_jobs`."""

from __future__ import annotations

import time
from typing import Any

from marshmallow import fields

import geyser


class CarelessSchema(geyser.BaseJobSchema):
    #: Optional and not nullable: left unset, it must round-trip as unset.
    label = fields.String()
    payload = fields.Raw()
    #: What run() does wrong: "set" (a set in update_attrs), "object" (record_result of an
    #: object), "nan" (NaN in update_attrs), or "" (nothing).
    mistake = fields.String(load_default="")


class CarelessJob(geyser.BaseJob):
    """Writes values a JSON document cannot hold, as a careless job would."""

    JOB_TYPE = "careless"
    SCHEMA = CarelessSchema
    MAX_RETRIES = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = kwargs.get("label")
        self.payload = kwargs.get("payload")
        self.mistake = kwargs.get("mistake", "")

    def run(self) -> tuple[float, bool]:
        if self.mistake == "set":
            self.update_attrs(payload={1, 2})
        elif self.mistake == "object":
            self.record_result(object(), "x")
        elif self.mistake == "nan":
            self.update_attrs(payload=float("nan"))
        self.record_result(0, f"label={self.label!r}")
        return time.time(), False


class FailOnceSchema(geyser.BaseJobSchema):
    #: Attempts that fail before one succeeds.
    failing = fields.Integer(load_default=1)
    #: "finish" (WFErrorFinish: failed, entry deleted) or "continue" (retries, then buried).
    how = fields.String(load_default="finish")


class FailOnceJob(geyser.BaseJob):
    """Fails its first `failing` attempts, then succeeds."""

    JOB_TYPE = "fail_once"
    SCHEMA = FailOnceSchema
    MAX_RETRIES = 0
    RETRY_DELAY = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failing = kwargs.get("failing", 1)
        self.how = kwargs.get("how", "finish")

    def run(self) -> tuple[float, bool]:
        if self.attempts <= self.failing:
            error = geyser.WFErrorFinish if self.how == "finish" else geyser.WFErrorContinue
            raise error("boom", f"attempt {self.attempts} fails on purpose")
        return time.time(), False


class AlphaJob(geyser.BaseJob):
    """One application's job on a queue that another application's job shares."""

    JOB_TYPE = "alpha"
    QUEUE_NAME = "shared_queue"

    def run(self) -> tuple[float, bool]:
        return time.time(), False


class SlowSchema(geyser.BaseJobSchema):
    seconds = fields.Float(load_default=0.5)


class SlowJob(geyser.BaseJob):
    """Sleeps a while, so a waiter has something to wait for."""

    JOB_TYPE = "slow"
    SCHEMA = SlowSchema

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds = kwargs.get("seconds", 0.5)

    def run(self) -> tuple[float, bool]:
        time.sleep(self.seconds)
        return time.time(), False
