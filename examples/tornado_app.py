"""The README's ``MyJobHandler``, rewritten for the non-blocking API, in a Tornado app
that also mounts Geyser's ready-made handlers under ``/api``.

    python examples/tornado_app.py [--port 8888]       (run from anywhere)
    curl -d '{"fieldOne": "report.csv"}' http://127.0.0.1:8888/my_job
    curl http://127.0.0.1:8888/api/jobs/<uuid>

``await job.enqueue_async()`` saves and queues the job on Geyser's native runtime,
so the IOLoop keeps serving other requests meanwhile. Start a worker beside it
(``python -m geyser.worker -m my_job`` from examples/) to run the jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import tornado.web
from marshmallow import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parent))

import geyser.web  # noqa: E402
from my_job import make_my_job  # noqa: E402


class MyJobHandler(tornado.web.RequestHandler):
    """POST a JSON object of MyJob's fields; answers 201 {"uuid": ...} or 400 with the errors."""

    async def post(self) -> None:
        try:
            values = json.loads(self.request.body or b"{}")
            job = make_my_job(values)
        except ValueError:
            self.set_status(400)
            self.finish({"error": "request body is not JSON"})
            return
        except ValidationError as e:
            self.set_status(400)
            self.finish({"error": "invalid values", "errors": e.messages})
            return
        uuid = await job.enqueue_async()  # the original called job.enqueue(), which blocked the IOLoop
        self.set_status(201)
        self.finish({"uuid": uuid})


def make_app() -> tornado.web.Application:
    """The user's own handler beside Geyser's API under /api."""
    return tornado.web.Application([(r"/my_job", MyJobHandler), *geyser.web.routes("/api")])


async def main(port: int) -> None:
    # Stalled clients are disconnected as in python -m geyser.server (docs/web.md, Slow clients).
    make_app().listen(port, "127.0.0.1", idle_connection_timeout=geyser.web.DEFAULT_HEADER_TIMEOUT)
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8888)
    asyncio.run(main(parser.parse_args().port))
