"""Job classes of the several-hosts test (test_several_hosts.py). Each worker group imports a
copy from its own folder (-m hosts_jobs) and names itself in GEYSER_TEST_GROUP; the jobs
write that name into their documents, so the test can tell which group ran what."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from marshmallow import fields

import geyser

HOLD_LIMIT = 60.0  # seconds a held job waits for its release file before it gives up


def group() -> str:
    """The worker group this process belongs to."""
    return os.environ.get("GEYSER_TEST_GROUP", "unnamed")


class CountJob(geyser.BaseJob):
    """A short piece of work (0.1 s) that records which group ran it."""

    JOB_TYPE = "hosts_count"
    QUEUE_NAME = "hosts_count"
    RETRY_DELAY = 0

    def run(self) -> tuple[float, bool]:
        self.record_event(f"ran on {group()}", action="ran")
        time.sleep(0.1)  # the work itself
        self.record_result(0, group())
        return time.time(), False


class HeldSchema(geyser.BaseJobSchema):
    runs = fields.Integer(load_default=0)


class HeldJob(geyser.BaseJob):
    """Counts its runs, reports half its progress, and on its first attempt holds there until
    a file `release-<uuid>` appears in its worker's working folder (at most HOLD_LIMIT
    seconds, then the attempt fails). Later attempts go straight through."""

    JOB_TYPE = "hosts_held"
    SCHEMA = HeldSchema
    QUEUE_NAME = "hosts_held"
    RETRY_DELAY = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs = kwargs.get("runs", 0)

    def run(self) -> tuple[float, bool]:
        self.update_attrs(runs=self.runs + 1)
        self.set_completeness(0.5)
        self.record_event(f"half way on {group()}", action="half")
        if self.attempts == 1:
            release, deadline = Path(f"release-{self.uuid}"), time.monotonic() + HOLD_LIMIT
            while not release.exists():
                if time.monotonic() > deadline:
                    raise geyser.WFErrorFinish("not-released", f"no {release} in {Path.cwd()} within {HOLD_LIMIT} s")
                time.sleep(0.05)
        self.record_result(0, f"attempt {self.attempts} on {group()}")
        return time.time(), False
