"""Benchmark of how fast an idle worker on beanstalkd picks up a new job.

    python benches/reserve_latency.py [--jobs N] [--rate R]

Against one private beanstalkd on loopback, enqueues N jobs at R per second and prints
enqueue→start latency (p50, p99, max, in ms) for:
- geyser: `python -m geyser.worker --threads 4 -c 1` with SQLite as the store (the job's
  startedAt - createdAt, as benches/idle.py measures it);
- baseline, same run and server: a plain greenstalk consumer process blocking in
  `reserve(timeout=1)`, timing each job from the put (a timestamp in its body) to its
  reservation. No store, so it is the floor the queue itself allows.
Touches only temp files, the private beanstalkd and the processes it starts.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from common import Beanstalkd, print_table, use_backends
from idle import WORKER, wait_until_done

import geyser

GREENSTALK_CONSUMER = """
import sys, time, greenstalk
n, port = int(sys.argv[1]), int(sys.argv[2])
with greenstalk.Client(("127.0.0.1", port), watch="lat") as c:
    print("ready", flush=True)
    got = 0
    while got < n:
        try:
            job = c.reserve(timeout=1)
        except greenstalk.TimedOutError:
            continue
        print((time.time() - float(job.body)) * 1000, flush=True)
        c.delete(job)
        got += 1
"""


def percentiles(lat: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max of latencies in ms."""
    lat = sorted(lat)
    return statistics.median(lat), lat[max(int(len(lat) * 0.99) - 1, 0)], lat[-1]


def greenstalk_latencies(port: int, n: int, rate: float) -> tuple[float, float, float]:
    """put→reserve latency of a plain greenstalk consumer blocking on the server."""
    import greenstalk

    consumer = subprocess.Popen([sys.executable, "-c", GREENSTALK_CONSUMER, str(n), str(port)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout is not None
        if consumer.stdout.readline().strip() != "ready":
            sys.exit("greenstalk consumer did not start")
        time.sleep(0.5)  # blocked in reserve
        with greenstalk.Client(("127.0.0.1", port), use="lat") as c:
            for _ in range(n):
                c.put(repr(time.time()))
                time.sleep(1 / rate)
        out, _ = consumer.communicate(timeout=30)
    finally:
        consumer.kill()
    return percentiles([float(line) for line in out.split()])


def geyser_latencies(env: dict[str, str], n: int, rate: float) -> tuple[float, float, float]:
    """enqueue→start latency of an idle geyser worker process."""
    worker = subprocess.Popen(WORKER, env=env)
    try:
        wait_until_done([geyser.make_base_job({"n": -1}, "noop").enqueue()], 60)  # started and serving
        time.sleep(1)
        uuids = []
        for i in range(n):
            uuids.append(geyser.make_base_job({"n": i}, "noop").enqueue())
            time.sleep(1 / rate)
        return percentiles([(j.startedAt - j.createdAt) * 1000 for j in wait_until_done(uuids, 60)])
    finally:
        worker.terminate()
        worker.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0, help="jobs enqueued per second")
    args = parser.parse_args()
    server = Beanstalkd()
    try:
        green = greenstalk_latencies(server.port, args.jobs, args.rate)
        with tempfile.TemporaryDirectory() as tmp:
            env = use_backends(f"beanstalkd://{server.addr}", f"sqlite://{tmp}/store.db")
            ours = geyser_latencies(env, args.jobs, args.rate)
    finally:
        server.stop()
    print_table((f"latency, {args.jobs} jobs at {args.rate:g}/s (ms)", "geyser worker", "greenstalk"), [
        ("p50", ours[0], green[0]),
        ("p99", ours[1], green[1]),
        ("max", ours[2], green[2]),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
