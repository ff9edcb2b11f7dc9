"""The command line of ``python -m geyser.worker``: its options and its exit statuses.

Read by the supervisor (``geyser.supervisor``, the command's own process) and by each
worker process (``geyser.worker``), so it imports nothing a supervisor does not need.
Touches no queue or store.
"""

from __future__ import annotations

import argparse
import os

from geyser import logs

__all__ = ["EXIT_CONFIG", "EXIT_RECYCLE", "EXIT_REPLACE", "build_parser", "parse_args"]

#: Exit status of a process that stopped a stuck job by ending itself: replace it at once.
EXIT_REPLACE = 75
#: Exit status of a process that reached --max-jobs-per-child or --max-memory-per-child
#: after finishing its jobs: replace it at once; not a death.
EXIT_RECYCLE = 76
#: Exit status of a process that cannot start for a configuration reason (no job classes,
#: a job module that does not import, a bad URL): restarting it would not help.
EXIT_CONFIG = 78


DESCRIPTION = """\
Run Geyser jobs: a supervisor starts -c worker processes, each reserving jobs from the
queues of the registered job classes and running them (restarting a process that dies).
SIGTERM or Ctrl-C lets running jobs finish within --grace; a second signal hands them back.
"""

EPILOG = """\
example:
  python -m geyser.worker -m myapp.jobs -c 4 --max-jobs-per-child 1000

Job classes are found by importing the -m modules and geyser.registry.JOB_MODULES
(a launcher script may extend it before calling geyser.worker.main()); every worker
process imports the same modules. Queue and store: GEYSER_QUEUE_URL, GEYSER_STORE_URL
(default: the embedded SQLite file).
"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults on every option, and the description and example as written."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m geyser.worker`` (supervisor and worker processes alike)."""
    p = argparse.ArgumentParser(prog="python -m geyser.worker", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=_HelpFormatter)
    p.add_argument("-m", "--module", action="append", default=[], metavar="MODULE",
                   help="import this job module (repeatable); then geyser.registry.JOB_MODULES is read")
    p.add_argument("-q", "--queues", action="append", default=[], metavar="QUEUES",
                   help="queues to watch (comma-separated or repeated); none given: those of the registered jobs")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("-c", "--concurrency", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes (the default is this machine's CPU count)")
    p.add_argument("--threads", type=int, default=1, metavar="M",
                   help="runner threads per process, each with its own consumer")
    p.add_argument("--grace", type=float, default=30.0, metavar="S",
                   help="seconds running jobs get to finish after SIGTERM before they are handed back")
    p.add_argument("--stop-grace", type=float, default=10.0, metavar="S",
                   help="seconds a timed-out or cancelled job gets to stop before its process is replaced")
    p.add_argument("--max-jobs-per-child", type=int, default=None, metavar="N",
                   help="replace a worker process after it ran N jobs (None: never)")
    p.add_argument("--max-memory-per-child", type=float, default=None, metavar="MB",
                   help="replace a worker process after a job that leaves it using more than MB megabytes "
                        "of resident memory (None: never)")
    p.add_argument("--sweep-interval", type=float, default=300.0, metavar="S",
                   help="seconds between maintenance sweeps (each worker process tries; the holder of the "
                        "store's maintenance lease sweeps); 0: none")
    p.add_argument("--progress-interval", type=float, default=1.0, metavar="S",
                   help="seconds between progress writes of one job")
    p.add_argument("--log-level", default=os.environ.get("GEYSER_LOG_LEVEL", "INFO"),
                   help="Python logging level (DEBUG shows the traceback of every failed attempt)")
    p.add_argument("--log-format", choices=logs.FORMATS, default="text",
                   help="log lines as text, or as one JSON object each (fields: docs/operating.md)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve the Prometheus metrics of every worker process on http://ADDRESS:PORT/metrics "
                        "(None: not served)")
    p.add_argument("--metrics-address", default="127.0.0.1", metavar="ADDRESS",
                   help="address --metrics-port listens on")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ledger-dir", default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line of ``python -m geyser.worker``."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.concurrency < 1 or args.threads < 1:
        p.error("--concurrency and --threads must be at least 1")
    if args.max_jobs_per_child is not None and args.max_jobs_per_child < 1:
        p.error("--max-jobs-per-child must be at least 1")
    if args.max_memory_per_child is not None and args.max_memory_per_child <= 0:
        p.error("--max-memory-per-child must be more than 0")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        p.error(f"--metrics-port must be a TCP port from 1 to 65535, not {args.metrics_port}")
    return args
