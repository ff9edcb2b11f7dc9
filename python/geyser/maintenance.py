"""``python -m geyser.maintenance``: run the maintenance sweep once.

The sweep (Rust, ``geyser._core.sweep``) puts back on their queue documents left
``queued`` with no queue entry (a crash between save and put), recovers documents left
``running`` whose reservation is gone (the lost attempt is recorded and the retry policy
applies), and forgets documents past their ``LIFESPAN``. An unreadable document, or a
queue server that cannot be reached, is counted and skipped; the rest is still swept.

One process at a time sweeps: the one holding the store's ``maintenance`` lease. Each
worker process (``geyser.worker``) calls ``sweep()`` periodically (``PeriodicSweep``);
the one that holds the lease keeps it between sweeps (renewing it each time) and gives it
up when it stops; if it dies, the lease runs out after ``LEASE_TTL`` seconds and another
worker process takes over. This command takes the lease for one sweep and gives it up
after, or does nothing if another process holds it (``--force`` sweeps anyway).
Touches the queue and store only through ``geyser._core.sweep``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import sys
import threading
from typing import TypedDict, cast

from geyser import _core
from geyser.config import client
from geyser.errors import GeyserError

__all__ = ["DEFAULT_MIN_AGE", "LEASE_TTL", "PeriodicSweep", "SweepReport", "lease_holder", "main", "release_lease",
           "sweep"]

log = logging.getLogger("geyser.maintenance")

#: Documents younger than this (seconds since their last write) may be mid-enqueue; left alone.
DEFAULT_MIN_AGE = 60.0
#: Seconds the maintenance lease lasts unless its holder sweeps (and so renews it) again.
#: Twice the worker's default ``--sweep-interval``; a worker sweeping less often than this
#: loses the lease between sweeps (harmless: still one sweeper at a time).
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
    return f"{socket.gethostname()}:{pid}:{os.urandom(4).hex()}"  # not secrets: it loads OpenSSL


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
    at once instead of after ``LEASE_TTL``; True when it held it. A worker process that
    stops calls this (``PeriodicSweep.stop``). Raises ``GeyserError`` when the store cannot be reached."""
    return _core.release_maintenance_lease(client(), lease_holder())


class PeriodicSweep:
    """``sweep()`` every ``interval`` seconds (none when 0) on a thread of this process,
    the first one ``interval`` seconds after ``start()``; a failed sweep is logged and the
    next one tried on time. ``stop()`` ends the thread and gives the lease up if a sweep of
    this process took it."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        #: Some sweep of this process's took the maintenance lease.
        self.led = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sweeping (nothing when the interval is 0)."""
        if self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name="geyser-sweep", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.led |= sweep()["leader"]
            except GeyserError as e:
                log.warning("maintenance sweep failed: %s", e)

    def stop(self) -> None:
        """Stop sweeping (a sweep under way finishes first), then give up the lease if held."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self.release_lease()

    def release_lease(self) -> None:
        """Give up the maintenance lease if a sweep of this process took it, so that another
        process sweeps at once rather than after the lease runs out; logs what goes wrong."""
        if not self.led:
            return
        try:
            if release_lease():
                log.info("gave up the maintenance lease")
        except GeyserError as e:
            log.warning("could not give up the maintenance lease (it runs out by itself): %s", e)


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
