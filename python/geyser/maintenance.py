"""``python -m geyser.maintenance``: run the maintenance sweep once.

The sweep (Rust, ``geyser._core.sweep``) puts back on their queue documents left
``queued`` with no queue entry (a crash between save and put), and recovers
documents left ``running`` whose reservation is gone (the lost attempt is recorded
and the retry policy applies), and forgets documents past their ``LIFESPAN``. The
worker supervisor runs it periodically.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from geyser import _core
from geyser.config import client
from geyser.errors import GeyserError

__all__ = ["DEFAULT_MIN_AGE", "main", "sweep"]

log = logging.getLogger("geyser.maintenance")

#: Documents younger than this (seconds since their last write) may be mid-enqueue; left alone.
DEFAULT_MIN_AGE = 60.0


def sweep(min_age: float = DEFAULT_MIN_AGE) -> dict[str, int]:
    """Sweep the configured queue and store once; returns
    ``{"requeued": n, "recovered": m, "purged": k}``."""
    report = _core.sweep(client(), min_age)
    if any(report.values()):
        log.info("maintenance sweep: %(requeued)d re-put, %(recovered)d recovered, %(purged)d expired", report)
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m geyser.maintenance``."""
    p = argparse.ArgumentParser(prog="python -m geyser.maintenance", description=__doc__)
    p.add_argument("--min-age", type=float, default=DEFAULT_MIN_AGE, help="only documents untouched this many seconds")
    p.add_argument("--log-level", default=os.environ.get("GEYSER_LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = sweep(args.min_age)
    except GeyserError as e:
        log.error("sweep failed: %s", e)
        return 1
    print(f"requeued {report['requeued']}, recovered {report['recovered']}, purged {report['purged']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
