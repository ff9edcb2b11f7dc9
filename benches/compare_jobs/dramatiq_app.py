"""Dramatiq's job for `compare.py` (RedisBroker on `BENCH_BROKER_URL`): `dramatiq compare_jobs.dramatiq_app`."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from compare_jobs import record

dramatiq.set_broker(RedisBroker(url=os.environ["BENCH_BROKER_URL"]))
record_actor = dramatiq.actor(record, actor_name="record", max_retries=0)
