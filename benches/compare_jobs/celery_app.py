"""Celery's job for `compare.py` (Redis broker `BENCH_BROKER_URL`, no result backend):
`celery -A compare_jobs.celery_app worker`."""

from __future__ import annotations

import os

from celery import Celery

from compare_jobs import record

app = Celery("bench", broker=os.environ["BENCH_BROKER_URL"])
record_task = app.task(name="record", ignore_result=True)(record)
