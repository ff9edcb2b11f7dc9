"""A job class for the dashboard's tests (-m dashboard_jobs): it reports progress in steps,
each step waiting for a file the test creates, so a test decides when the bar moves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from marshmallow import fields

import geyser

#: Seconds a step waits for its file before the job fails (a test that never opens it).
GATE_TIMEOUT = 60.0


class GatedSchema(geyser.BaseJobSchema):
    gate = fields.String(required=True)
    steps = fields.Integer(load_default=3)


class GatedJob(geyser.BaseJob):
    """Step ``i`` (1-based) of ``steps`` waits for the file ``<gate>.<i>``, then reports
    completeness ``i / (steps + 1)`` and an event; the job succeeds after the last step.
    Stops with ``JobCancelled`` when cancelled while waiting."""

    JOB_TYPE = "gated"
    SCHEMA = GatedSchema
    QUEUE_NAME = "gated"
    MAX_RETRIES = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = kwargs.get("gate", "")
        self.steps = kwargs.get("steps", 3)

    def run(self) -> tuple[float, bool]:
        self.record_event("started, waiting for step 1")
        for step in range(1, self.steps + 1):
            opened = Path(f"{self.gate}.{step}")
            deadline = time.monotonic() + GATE_TIMEOUT
            while not opened.exists():
                if self.cancelled:
                    raise geyser.JobCancelled(f"job {self.uuid} was cancelled at step {step}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{opened} did not appear within {GATE_TIMEOUT} s")
                time.sleep(0.02)
            self.set_completeness(step / (self.steps + 1))
            self.record_event(f"step {step} of {self.steps} done")
        return time.time(), False


class GatedTwinJob(GatedJob):
    """A second job type on the same queue, so a queue filter spans two types."""

    JOB_TYPE = "gated-twin"
    QUEUE_NAME = "gated"
