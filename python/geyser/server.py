"""``python -m geyser.server``: serve ``geyser.web.make_app()`` on one Tornado process.

    python -m geyser.server [--port 8000] [--address 127.0.0.1] [-m jobs.my_job ...]
                            [--max-body-size BYTES] [--header-timeout SECONDS]
                            [--log-level LEVEL] [--log-format text|json]

Imports the ``-m/--module`` job modules and then ``geyser.registry.JOB_MODULES`` so
POST knows the job types. ``GEYSER_API_TOKEN``, when set, is the bearer token
every request must carry. Backends come from ``GEYSER_QUEUE_URL`` /
``GEYSER_STORE_URL`` or the embedded default. Runs no jobs: start a worker beside it.
The HTML dashboard is at ``/`` (``geyser.dashboard``; with the token, behind a login form).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from geyser import logs, registry
from geyser.config import client
from geyser.web import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_BODY_SIZE, make_app

__all__ = ["main", "serve"]

log = logging.getLogger("geyser.server")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m geyser.server``."""
    p = argparse.ArgumentParser(prog="python -m geyser.server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("-m", "--module", action="append", default=[], help="import this job module first (repeatable)")
    p.add_argument("--max-body-size", type=int, default=DEFAULT_MAX_BODY_SIZE,
                   help=f"largest POST body in bytes (default {DEFAULT_MAX_BODY_SIZE})")
    p.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT,
                   help="seconds a client may take to send a request's line and headers, and a "
                        f"keep-alive connection may stay idle, before it is closed (default {DEFAULT_HEADER_TIMEOUT:g})")
    p.add_argument("--log-level", default=os.environ.get("GEYSER_LOG_LEVEL", "INFO"))
    p.add_argument("--log-format", choices=logs.FORMATS, default="text",
                   help="log lines as text, or as one JSON object each (default text)")
    args = p.parse_args(argv)
    if not args.header_timeout > 0:
        p.error(f"--header-timeout must be a positive number of seconds, not {args.header_timeout}")
    return args


async def serve(
    address: str,
    port: int,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
) -> None:
    """Listen on ``address:port`` until SIGINT or SIGTERM, then close the listener."""
    client()  # open the backends now: a bad URL fails at start, not on the first request
    app = make_app(max_body_size=max_body_size, header_timeout=header_timeout)
    server = app.listen(port, address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    auth = "bearer token required" if os.environ.get("GEYSER_API_TOKEN") else "no token"
    jobs = ", ".join(sorted(registry.job_classes())) or "none"
    log.info("geyser server on http://%s:%d (%s; job types: %s)", address, port, auth, jobs)
    await stop.wait()
    server.stop()
    await server.close_all_connections()


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, import job modules, serve."""
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    registry.import_job_modules(args.module)
    asyncio.run(serve(args.address, args.port, args.max_body_size, args.header_timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
