"""Benchmark of the beanstalkd backend, against a private beanstalkd started here.

    python benches/beanstalkd.py [--ops N] [--jobs N]

Prints one table: our Rust client's raw ops/s (sequential put, pipelined put,
reserve+delete; `examples/beanstalkd_ops.rs`, built with --release) beside Python's
greenstalk doing the same against the same server, then geyser's enqueue and drain
rates with beanstalkd as the queue and SQLite as the store. Ratios are within one run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

from common import ROOT, Beanstalkd, geyser_drain, geyser_enqueue, print_table, use_backends

BODY = b'{"uuid": "00000000-0000-0000-0000-000000000000"}'


def rust_client(addr: str, n: int) -> dict[str, float]:
    subprocess.run(["cargo", "build", "-q", "--release", "--example", "beanstalkd_ops"], cwd=ROOT, check=True)
    out = subprocess.run(["cargo", "run", "-q", "--release", "--example", "beanstalkd_ops", "--", addr, str(n), "rust"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\S+)\s+n=\d+\s+\S+ s\s+(\d+) ops/s", out, re.M)}


def greenstalk_client(port: int, n: int) -> dict[str, float]:
    import greenstalk

    with greenstalk.Client(("127.0.0.1", port), use="green", watch="green") as c:
        start = time.perf_counter()
        for _ in range(n):
            c.put(BODY)
        put = n / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(n):
            c.delete(c.reserve(timeout=0))
        rd = n / (time.perf_counter() - start)
    return {"put": put, "reserve+delete": rd}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=5000)
    args = parser.parse_args()
    server = Beanstalkd()
    try:
        rust = rust_client(server.addr, args.ops)
        green = greenstalk_client(server.port, args.ops)
        with tempfile.TemporaryDirectory() as tmp:
            env = use_backends(f"beanstalkd://{server.addr}", f"sqlite://{tmp}/store.db")
            g_enqueue = geyser_enqueue(args.jobs)
            g_drain = geyser_drain(env, args.jobs, "-c", "1")
    finally:
        server.stop()
    print_table(("beanstalkd", "geyser (rust)", "greenstalk", "ratio"), [
        ("client put (ops/s, sequential)", rust["put"], green["put"], rust["put"] / green["put"]),
        ("client put (ops/s, pipelined x100)", rust["put-pipelined"], "", ""),
        ("client reserve+delete (ops/s)", rust["reserve+delete"], green["reserve+delete"],
         rust["reserve+delete"] / green["reserve+delete"]),
        ("geyser enqueue (jobs/s, 1 thread)", g_enqueue, "", ""),
        ("geyser drain no-op (jobs/s, 1 proc)", g_drain, "", ""),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
