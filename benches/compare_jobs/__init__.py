"""The job `compare.py` runs on every system it compares: one Redis call that records the run.

`record(sent)` appends "SENT RUN" (the enqueue time it was given and the time it ran, epoch
seconds) to the list `BENCH_RECORD_KEY` in the Redis db `BENCH_RECORD_URL`; the bench counts
and reads that list. The modules beside this one wrap `record` as each system's job; they
read their broker from `BENCH_BROKER_URL`. Touches only that list.
"""

from __future__ import annotations

import os
import time

_conn: tuple[int, object] | None = None  # (pid, redis client): a forked child opens its own


def record(sent: float) -> None:
    """Note that a job enqueued at `sent` ran now."""
    global _conn
    import redis

    if _conn is None or _conn[0] != os.getpid():
        _conn = (os.getpid(), redis.Redis.from_url(os.environ["BENCH_RECORD_URL"]))
    _conn[1].rpush(os.environ["BENCH_RECORD_KEY"], f"{sent!r} {time.time()!r}")  # type: ignore[attr-defined]
