"""The job the benchmarks run: does nothing, so the queue's own cost is what is measured."""

from __future__ import annotations

import time
from typing import Any

from marshmallow import fields

import geyser


class NoopSchema(geyser.BaseJobSchema):
    n = fields.Integer()


class NoopJob(geyser.BaseJob):
    JOB_TYPE = "noop"
    SCHEMA = NoopSchema
    QUEUE_NAME = "noop"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = kwargs.get("n")

    def run(self) -> tuple[float, bool]:
        return time.time(), False
