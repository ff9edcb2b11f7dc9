"""Benchmark: requests/s of ``POST /jobs/<type>`` (validate + save + put on beanstalkd)
against a JSON-echo handler in the same single-process Tornado server. The ratio is
the figure (target ≥ 0.5). Not a test; touches nothing outside its temp directory.

    apt-get install -y beanstalkd wrk
    python benches/web_enqueue.py [--seconds 10] [--connections 32] [--rounds 3]

Starts its own beanstalkd on a free port, a SQLite store in a temp directory, and
this file as the server (``--serve``); load comes from ``wrk`` in its own process.
Each round measures echo, then POST; the table shows each round and the median ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tornado.web

from common import Beanstalkd, free_port

import geyser
import geyser.web

BODY = json.dumps({"n": 3})  # a bench_jobs.NoopJob: only enqueued here, never run


class EchoHandler(tornado.web.RequestHandler):
    """The baseline: parse the JSON body and write it back."""

    def post(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(json.loads(self.request.body)))


async def serve(port: int) -> None:
    """The server under test: Geyser's routes and the echo handler in one process."""
    geyser.config.client()
    app = tornado.web.Application([*geyser.web.routes(token=""), (r"/echo", EchoHandler)])
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


def wait_for_port(port: int) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def wrk(url: str, seconds: int, connections: int, script: Path) -> dict[str, float]:
    """Run wrk against ``url``; requests/s, requests and non-2xx answers."""
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "-s", str(script),
                          "--latency", url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    return {"rate": rate, "total": total, "bad": int(bad.group(1)) if bad else 0,
            "p50": p50.group(1) if p50 else "?"}  # type: ignore[dict-item]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    parser.add_argument("--connections", type=int, default=32, help="concurrent wrk connections")
    parser.add_argument("--rounds", type=int, default=3, help="echo-then-POST measurements")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        beanstalkd = Beanstalkd()
        env = dict(os.environ, GEYSER_QUEUE_URL=f"beanstalkd://{beanstalkd.addr}",
                   GEYSER_STORE_URL=f"sqlite://{tmp}/store.db")
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
        try:
            wait_for_port(port)
            script = Path(tmp) / "post.lua"
            script.write_text('wrk.method = "POST"\n'
                              'wrk.headers["Content-Type"] = "application/json"\n'
                              f"wrk.body = {json.dumps(BODY)}\n")
            base = f"http://127.0.0.1:{port}"
            rounds = []
            for _ in range(args.rounds):
                rows = []
                for label, path in (("JSON echo", "/echo"), ("POST /jobs/noop", "/jobs/noop")):
                    wrk(base + path, 2, args.connections, script)  # warm-up
                    rows.append((label, wrk(base + path, args.seconds, args.connections, script)))
                rounds.append(rows)
        finally:
            server.terminate()
            server.wait(10)
            beanstalkd.stop()

    print(f"\none Tornado process, beanstalkd queue + SQLite store, wrk -t1 -c{args.connections} "
          f"-d{args.seconds}s, {os.cpu_count()} CPUs\n")
    print(f"{'round':<7}{'handler':<20}{'requests/s':>12}{'p50':>10}{'requests':>10}{'non-2xx':>9}")
    for i, rows in enumerate(rounds, 1):
        for label, r in rows:
            print(f"{i:<7}{label:<20}{r['rate']:>12.0f}{r['p50']:>10}{r['total']:>10.0f}{r['bad']:>9.0f}")
    ratios = [rows[1][1]["rate"] / rows[0][1]["rate"] for rows in rounds]
    print(f"\nenqueue / echo = {statistics.median(ratios):.2f} median of {len(ratios)} rounds "
          f"({min(ratios):.2f}-{max(ratios):.2f}; target >= 0.5)")
    rows = [row for rows in rounds for row in rows]
    return 0 if all(r["bad"] == 0 for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
