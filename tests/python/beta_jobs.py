"""Another application's job type on the queue that edge_jobs.AlphaJob uses: a worker
that imports only edge_jobs must leave it for a worker that imports this module."""

from __future__ import annotations

import time

import geyser


class BetaJob(geyser.BaseJob):
    JOB_TYPE = "beta"
    QUEUE_NAME = "shared_queue"

    def run(self) -> tuple[float, bool]:
        self.record_result(0, "beta ran")
        return time.time(), False
