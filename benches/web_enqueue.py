"""Benchmark: requests/s of ``POST /jobs/<type>`` (validate + save + put on beanstalkd)
against a JSON-echo handler in the same single-process Tornado server. The ratio is
the figure (target ≥ 0.5). Not a test; touches nothing outside its temp directory.

    apt-get install -y beanstalkd wrk
    python benches/web_enqueue.py [--seconds 10] [--connections 32]

Starts its own beanstalkd on a free port, a SQLite store in a temp directory, and
this file as the server (``--serve``); load comes from ``wrk`` in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tornado.web
from marshmallow import fields

import geyser
import geyser.web

BODY = json.dumps({"name": "bench", "size": 3})


class BenchSchema(geyser.BaseJobSchema):
    name = fields.String(required=True)
    size = fields.Integer(load_default=1)


class BenchJob(geyser.BaseJob):
    """Only enqueued here, never run."""

    JOB_TYPE = "bench"
    SCHEMA = BenchSchema
    QUEUE_NAME = "bench"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = kwargs.get("name")
        self.size = kwargs.get("size", 1)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    for tool in ("wrk", "beanstalkd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install -y {tool}")

    with tempfile.TemporaryDirectory() as tmp:
        bport, port = free_port(), free_port()
        beanstalkd = subprocess.Popen(["beanstalkd", "-l", "127.0.0.1", "-p", str(bport)])
        env = dict(os.environ, GEYSER_QUEUE_URL=f"beanstalkd://127.0.0.1:{bport}",
                   GEYSER_STORE_URL=f"sqlite://{tmp}/store.db")
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
        try:
            wait_for_port(bport)
            wait_for_port(port)
            script = Path(tmp) / "post.lua"
            script.write_text('wrk.method = "POST"\n'
                              'wrk.headers["Content-Type"] = "application/json"\n'
                              f"wrk.body = {json.dumps(BODY)}\n")
            base = f"http://127.0.0.1:{port}"
            rows = []
            for label, path in (("JSON echo", "/echo"), ("POST /jobs/bench", "/jobs/bench")):
                wrk(base + path, 2, args.connections, script)  # warm-up
                rows.append((label, wrk(base + path, args.seconds, args.connections, script)))
        finally:
            server.terminate()
            server.wait(10)
            beanstalkd.terminate()
            beanstalkd.wait(10)

    print(f"\none Tornado process, beanstalkd queue + SQLite store, wrk -t1 -c{args.connections} "
          f"-d{args.seconds}s, {os.cpu_count()} CPUs\n")
    print(f"{'handler':<20}{'requests/s':>12}{'p50':>10}{'requests':>10}{'non-2xx':>9}")
    for label, r in rows:
        print(f"{label:<20}{r['rate']:>12.0f}{r['p50']:>10}{r['total']:>10.0f}{r['bad']:>9.0f}")
    ratio = rows[1][1]["rate"] / rows[0][1]["rate"]
    print(f"\nenqueue / echo = {ratio:.2f} (target >= 0.5)")
    return 0 if all(r["bad"] == 0 for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
