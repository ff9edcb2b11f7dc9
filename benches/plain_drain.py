"""The plain-Python drain `stores.py` compares Geyser's worker with: one process that reserves
with greenstalk, reads the job's document with the store's standard client, runs the no-op,
writes the finished document with a compare-and-swap on its version, and deletes the entry,
until the queue is empty (`serve`, also the plain worker of `compare.py`). Touches only the
queue, schema, prefix or file it is given.

    python benches/plain_drain.py KIND WHERE NAMESPACE BEANSTALKD_PORT TUBE
"""

from __future__ import annotations

import json
import sys
import time
from typing import Callable

import greenstalk

from plain_stores import PlainStore, open_plain

# Seconds the first reserve waits for the bench to un-pause the tube.
FIRST_WAIT = 60


def run_noop(doc: dict) -> float:
    """The job: nothing (as bench_jobs.NoopJob.run); returns its result code."""
    return time.time()


def serve(store: PlainStore, queue: greenstalk.Client, run: Callable[[dict], float], first_wait: float | None) -> int:
    """Reserve, load the document, `run` it, save the finished document with a compare-and-swap,
    delete; until the queue is empty once `first_wait` s passed, or (None) until killed."""
    wait = first_wait if first_wait is not None else 1
    while True:
        try:
            entry = queue.reserve(timeout=wait)
            if first_wait is not None:
                wait = 0
        except greenstalk.TimedOutError:
            if first_wait is None:
                continue
            return 0
        raw = store.get(entry.body)
        if raw is None:
            queue.bury(entry)
            continue
        doc = json.loads(raw)
        started = time.time()
        result = run(doc)
        finished = time.time()
        done = {**doc, "status": "succeeded", "startedAt": started, "finishedAt": finished,
                "updatedAt": finished, "attempts": doc["attempts"] + 1, "resultCode": result,
                "version": doc["version"] + 1}
        if not store.cas(done, doc["version"]):
            queue.release(entry, delay=1)
            continue
        queue.delete(entry)


def main(kind: str, where: str, namespace: str, port: str, tube: str) -> int:
    store = open_plain(kind, where, namespace)
    with greenstalk.Client(("127.0.0.1", int(port)), use=tube, watch=tube) as queue:
        return serve(store, queue, run_noop, FIRST_WAIT)  # the tube is paused until every worker watches it


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
