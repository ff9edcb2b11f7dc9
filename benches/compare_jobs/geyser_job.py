"""Geyser's job for `compare.py`: `record(sent)` on the queue "record"."""

from __future__ import annotations

import time
from typing import Any

from marshmallow import fields

import geyser
from compare_jobs import record


class RecordSchema(geyser.BaseJobSchema):
    sent = fields.Float()


class RecordJob(geyser.BaseJob):
    JOB_TYPE = "record"
    SCHEMA = RecordSchema
    QUEUE_NAME = "record"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent = kwargs.get("sent")

    def run(self) -> tuple[float, bool]:
        record(self.sent)
        return time.time(), False
