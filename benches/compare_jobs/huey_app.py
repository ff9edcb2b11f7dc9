"""Huey's job for `compare.py` (RedisHuey on `BENCH_BROKER_URL`): `huey_consumer compare_jobs.huey_app.huey`."""

from __future__ import annotations

import os

from huey import RedisHuey

from compare_jobs import record

huey = RedisHuey("bench", url=os.environ["BENCH_BROKER_URL"])
record_task = huey.task()(record)
