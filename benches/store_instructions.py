"""Instructions per store op from one Python thread, Geyser beside plain Python (psycopg 3,
redis-py, sqlite3; `plain_stores.py`), counted by callgrind: repeatable where the ops/s of
`stores.py` are not on a shared machine. Counts the client process only (all its threads),
not the servers, and no time spent waiting; `stores.py` times the same ops.

    python benches/store_instructions.py [--ops N] [--stores sqlite,redis,postgres]

Each figure is the difference between two runs of the same script under
`valgrind --tool=callgrind` that repeat the ops' loop a different number of times, divided
by the ops: what start-up and creating the documents cost cancels out. get: `client.get(uuid)`
against one SELECT / GET; save: `client.save(json.dumps(doc))` of a document read at its
version against one compare-and-swap (the read of each round and the Python that builds
the edited documents are counted on both sides, then the get's count is taken off). Needs
valgrind; writes nothing into the repository (callgrind's output goes to a temp dir).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile

from common import Beanstalkd
from plain_stores import open_plain, plain_enqueue
from stores import Namespace, new_docs

import geyser  # noqa: E402
from geyser.config import client  # noqa: E402


def loop(kind: str, side: str, op: str, n: int, rounds: int) -> None:
    """Create n documents, then run `op` over all of them `rounds` times (the measured process)."""
    import greenstalk

    server = Beanstalkd()
    ns = Namespace(kind, tempfile.mkdtemp())
    try:
        docs = new_docs(n)
        uuids = [d["uuid"] for d in docs]
        if side == "geyser":
            geyser.configure(queue=f"beanstalkd://{server.addr}", store=ns.geyser_url)
            c = client()
            for d in docs:
                c.enqueue(json.dumps(d), 0.0)
            if geyser.flush(60):
                sys.exit("the enqueue relay did not put every entry within 60 s")
            for _ in range(rounds):
                got = [c.get(u) for u in uuids]
                if op == "save":
                    for d in [{**json.loads(g), "completeness": 0.5} for g in got]:
                        c.save(json.dumps(d))
        else:
            store = open_plain(kind, ns.plain_where, ns.plain_namespace)
            with greenstalk.Client(("127.0.0.1", server.port), use="plain-ops") as queue:
                for d in docs:
                    plain_enqueue(store, queue, d)
            for _ in range(rounds):
                got = [store.get(u) for u in uuids]
                if op == "save":
                    for d in [{**json.loads(g), "completeness": 0.5} for g in got]:
                        store.cas({**d, "version": d["version"] + 1}, d["version"])
            store.drop()
    finally:
        if side == "geyser":
            ns.drop()
        server.stop()


def instructions(kind: str, side: str, op: str, n: int, rounds: int, out_dir: str) -> int:
    """Instructions callgrind counts for one run of `loop`."""
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/callgrind.%p",
           sys.executable, __file__, "--loop", kind, side, op, str(n), str(rounds)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
    if run.returncode != 0 or found is None:
        sys.exit(f"callgrind of {kind} {side} {op} failed:\n{run.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_op(kind: str, side: str, n: int, out_dir: str) -> dict[str, float]:
    """get and save instructions per op: the difference of loops run once and 3 (get) or 2 (get + save) times."""
    get = (instructions(kind, side, "get", n, 3, out_dir) - instructions(kind, side, "get", n, 1, out_dir)) / (2 * n)
    both = (instructions(kind, side, "save", n, 2, out_dir) - instructions(kind, side, "save", n, 1, out_dir)) / n
    return {"get": get, "save": both - get}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", type=int, default=500, help="documents, and ops of each kind per loop")
    p.add_argument("--stores", default="sqlite")
    p.add_argument("--loop", nargs=5, metavar=("KIND", "SIDE", "OP", "N", "ROUNDS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loop:
        kind, side, op, n, rounds = args.loop
        loop(kind, side, op, int(n), int(rounds))
        return 0
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install -y valgrind")
    rows = []
    with tempfile.TemporaryDirectory() as out_dir:
        for kind in args.stores.split(","):
            g, pl = per_op(kind, "geyser", args.ops, out_dir), per_op(kind, "plain", args.ops, out_dir)
            rows += [(f"{kind} {op}", g[op], pl[op]) for op in ("get", "save")]
    print(f"{args.ops} ops per loop; instructions per op of the client process; ratio = plain / geyser "
          "(above 1: Geyser runs fewer)")
    print(f"{'store op':<20}{'geyser':>12}{'plain Python':>14}{'ratio':>8}")
    for label, g, pl in rows:
        print(f"{label:<20}{g:>12,.0f}{pl:>14,.0f}{pl / g:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
