"""The job skeleton from Geyser's README: a schema, a job class, a factory.

Workers import it with `python -m geyser.worker -m my_job` (run from this folder)
or by adding "my_job" to geyser.registry.JOB_MODULES.
"""

from __future__ import annotations

import time
from typing import Any

from marshmallow import fields

import geyser.jobs
import geyser.registry


class MyJobSchema(geyser.jobs.BaseJobSchema):
    fieldOne = fields.String()
    steps = fields.Integer(load_default=5)


class MyJob(geyser.jobs.BaseJob):
    JOB_TYPE = "my_job_type"
    SCHEMA = MyJobSchema
    QUEUE_NAME = "my_job"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fieldOne = kwargs.get("fieldOne")
        self.steps = kwargs.get("steps", 5)

    def run(self) -> tuple[float, bool]:
        for step in range(1, self.steps + 1):
            time.sleep(0.2)  # the real work goes here
            self.set_completeness(step / self.steps)
            self.record_event(f"step {step} of {self.steps} done for {self.fieldOne}")
        self.record_result(0, f"processed {self.fieldOne}")
        return time.time(), False  # (resume-at epoch seconds, requeue?)


def make_my_job(values: dict[str, Any] | None = None) -> MyJob:
    """Validate `values` with MyJobSchema and build an unsaved job."""
    job = geyser.jobs.make_base_job(values or {}, "my_job_type")
    assert isinstance(job, MyJob)
    return job


geyser.registry.JOB_MODULES = geyser.registry.JOB_MODULES + ["my_job"]
