"""Cost per attempt of the worker's crash ledger (``geyser.ledger``): a worker process
notes each attempt's start and end in a file its supervisor reads if the process dies.

    python benches/ledger.py [--attempts N] [--rounds R]

Baseline, measured in the same run: the same calls on a ledger that writes nothing.
The table shows the median of R rounds in microseconds per attempt (start + end).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from common import print_table

from geyser.ledger import Ledger, LedgerEntry

ENTRY = LedgerEntry("0e7dd66c-d49e-4668-9767-a36880b8a41b", "1:" + "f" * 32, 1)


def per_attempt_us(ledger: Ledger, attempts: int) -> float:
    start = time.perf_counter()
    for _ in range(attempts):
        ledger.started(0, ENTRY)
        ledger.ended(0)
    return (time.perf_counter() - start) / attempts * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        base, real = Ledger(None), Ledger(d, 1)
        rounds = [(per_attempt_us(base, args.attempts), per_attempt_us(real, args.attempts))
                  for _ in range(args.rounds)]
    baseline = statistics.median(r[0] for r in rounds)
    ledger = statistics.median(r[1] for r in rounds)
    print_table(("ledger", "us/attempt", "added us"),
                [("no file (baseline)", baseline, 0.0), ("file, one pwrite per change", ledger, ledger - baseline)])


if __name__ == "__main__":
    main()
