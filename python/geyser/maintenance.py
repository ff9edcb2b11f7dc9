"""``python -m geyser.maintenance``: run the maintenance sweep once.

The sweep (Rust, ``geyser._core.sweep``) puts back on their queue documents left
``queued`` with no queue entry (a crash between save and put), recovers documents left
``running`` whose reservation is gone (the lost attempt is recorded and the retry policy
applies), and forgets documents past their ``LIFESPAN``. An unreadable document, or a
queue server that cannot be reached, is counted and skipped; the rest is still swept.

One process at a time sweeps: the one holding the store's ``maintenance`` lease. The
worker supervisor calls ``sweep()`` periodically and keeps the lease between sweeps
(renewing it each time) and gives it up when it stops; if it dies, the lease runs out
after ``LEASE_TTL`` seconds and another supervisor takes over. This command takes the
lease for one sweep and gives it up after, or does nothing if another process holds it
(``--force`` sweeps anyway).
Touches the queue and store only through ``geyser._core.sweep``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import secrets
import socket
import sys
from typing import TypedDict, cast

from geyser import _core
from geyser.config import client
from geyser.errors import GeyserError

__all__ = ["DEFAULT_MIN_AGE", "LEASE_TTL", "SweepReport", "lease_holder", "main", "release_lease", "sweep"]

log = logging.getLogger("geyser.maintenance")

#: Documents younger than this (seconds since their last write) may be mid-enqueue; left alone.
DEFAULT_MIN_AGE = 60.0
#: Seconds the maintenance lease lasts unless its holder sweeps (and so renews it) again.
#: Twice the supervisor's default ``--sweep-interval``; a supervisor sweeping less often
#: than this loses the lease between sweeps (harmless: still one sweeper at a time).
LEASE_TTL = 600.0


class SweepReport(TypedDict):
    """What one call of :func:`sweep` did."""

    #: This process held the lease and swept; False: ``holder`` leads and nothing was done.
    leader: bool
    #: Who holds the maintenance lease (None after a ``force`` sweep).
    holder: str | None
    #: The lease was lost during the sweep, which stopped early.
    lease_lost: bool
    requeued: int
    recovered: int
    purged: int
    #: Documents that cannot be read, skipped (each named in the log).
    unreadable: int
    #: Documents left because the queue server holding their entry is down.
    skipped: int
    #: Failures of single items (a document, a queue server), each skipped.
    errors: int
    #: The first problem lines of the sweep, as logged.
    problems: list[str]


@functools.cache
def _holder_for(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}"


def lease_holder() -> str:
    """This process's name as holder of the maintenance lease: the same on every call,
    different in a forked child."""
    return _holder_for(os.getpid())


def sweep(
    min_age: float = DEFAULT_MIN_AGE,
    *,
    force: bool = False,
    keep_lease: bool = True,
    lease_ttl: float = LEASE_TTL,
) -> SweepReport:
    """Sweep the configured queue and store once, if this process holds (or can take) the
    maintenance lease; ``force`` sweeps without it. The lease is kept for ``lease_ttl``
    seconds so that the same process leads the next periodic sweep, or given up at the
    end when ``keep_lease`` is false. Raises only if the lease cannot be read or taken
    (``GeyserError``), or ``ValueError`` if ``lease_ttl`` is not a positive number."""
    if not lease_ttl > 0 or lease_ttl == float("inf"):
        raise ValueError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
    raw = _core.sweep(client(), lease_holder(), min_age, lease_ttl, force, not keep_lease)
    report = cast(SweepReport, raw)
    if not report["leader"]:
        log.debug("maintenance sweep: skipped, the lease is held by %s", report["holder"])
    elif report["errors"] or report["unreadable"] or report["skipped"]:
        log.warning("maintenance sweep: %s", summary(report))
    elif report["requeued"] or report["recovered"] or report["purged"]:
        log.info("maintenance sweep: %s", summary(report))
    return report


def release_lease() -> bool:
    """Give up the maintenance lease if this process holds it, so another process may sweep
    at once instead of after ``LEASE_TTL``; True when it held it. A supervisor that stops
    calls this. Raises ``GeyserError`` when the store cannot be reached."""
    return _core.release_maintenance_lease(client(), lease_holder())


def summary(report: SweepReport) -> str:
    """The report's counts on one line."""
    keys = ("requeued", "recovered", "purged", "unreadable", "skipped", "errors")
    return ", ".join(f"{k} {report[k]}" for k in keys)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m geyser.maintenance``; exits 1 when the sweep failed or
    had errors."""
    p = argparse.ArgumentParser(prog="python -m geyser.maintenance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-age", type=float, default=DEFAULT_MIN_AGE,
                   help="only documents untouched this many seconds (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="sweep even if another process holds the maintenance lease")
    p.add_argument("--log-level", default=os.environ.get("GEYSER_LOG_LEVEL", "INFO"),
                   help="default: $GEYSER_LOG_LEVEL or INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = sweep(args.min_age, force=args.force, keep_lease=False)
    except GeyserError as e:
        log.error("sweep failed: %s", e)
        return 1
    if not report["leader"]:
        print(f"skipped: {report['holder']} holds the maintenance lease (--force sweeps anyway)")
        return 0
    print(summary(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
