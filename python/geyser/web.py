"""Tornado handlers for Geyser's HTTP API, to mount in your own app or serve with
``make_app()`` / ``python -m geyser.server``.

    POST   /jobs/<job_type>      validate the JSON body with the job's schema, enqueue → 201 {"uuid"}
    GET    /jobs/<uuid>          the job's public progress document
    GET    /jobs/<uuid>/events   server-sent events: the progress document on each change
    DELETE /jobs/<uuid>          request cancellation → 202
    GET    /healthz              store and queue reachable
    GET    /metrics              Prometheus gauges of the registered job classes' queues

Every error body is JSON: ``{"error": "<what was wrong>"}`` (plus ``"errors"``,
field → messages, for schema errors). Every store or queue round trip is awaited
on the native runtime, so no handler blocks the IOLoop. This module only reads
jobs, enqueues new ones and requests cancellation; it never runs jobs.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import uuid as uuid_module
from typing import Any

import tornado.iostream
import tornado.web
from marshmallow import ValidationError

from geyser import registry
from geyser.config import client
from geyser.errors import GeyserError, JobNotFound, UnknownJobType
from geyser.jobs import make_base_job
from geyser.watch import get_progress_async, public_document, watch_async

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "ApiError",
    "EnqueueAndJobHandler",
    "EventsHandler",
    "GeyserHandler",
    "HealthHandler",
    "MetricsHandler",
    "NotFoundHandler",
    "make_app",
    "routes",
]

log = logging.getLogger("geyser.web")

#: Largest accepted ``POST /jobs/<type>`` body, in bytes (1 MiB).
DEFAULT_MAX_BODY_SIZE: int = 1 << 20
#: Seconds a health check may wait for the store or the queue.
HEALTH_TIMEOUT: float = 5.0


class ApiError(tornado.web.HTTPError):
    """An error answer: ``status`` with the JSON body ``{"error": message, **extra}``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(status)
        self.message = message
        self.extra = extra


class GeyserHandler(tornado.web.RequestHandler):
    """Base of the handlers: bearer-token check and JSON error bodies.

    ``token``: when not empty, every request must carry ``Authorization: Bearer <token>``.
    """

    def initialize(self, token: str = "", **options: Any) -> None:
        self.token = token
        self.options = options

    def prepare(self) -> None:
        if not self.token:
            return
        scheme, _, given = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise ApiError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')")

    def write_json(self, status: int, body: dict[str, Any]) -> None:
        """Finish with ``body`` as JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ApiError):
            body = {"error": error.message, **error.extra}
        elif status_code == 405:
            body = {"error": f"method {self.request.method} is not allowed on {self.request.path}"}
        elif isinstance(error, tornado.web.HTTPError) and status_code < 500:
            body = {"error": error.log_message or self._reason}
        else:
            body = {"error": "internal server error; see the server log"}
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="geyser"')
        elif status_code == 413:
            self.set_header("Connection", "close")
        self.write_json(status_code, body)


class NotFoundHandler(GeyserHandler):
    """Any path no route matches: a JSON 404."""

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"no such route: {self.request.method} {self.request.path}")


@tornado.web.stream_request_body
class EnqueueAndJobHandler(GeyserHandler):
    """``POST /jobs/<job_type>`` enqueues; ``GET`` and ``DELETE /jobs/<uuid>`` read and cancel.

    One path pattern serves both, told apart by method. The POST body is streamed
    so one over ``max_body_size`` is refused (413) without being held in memory.
    """

    def prepare(self) -> None:
        super().prepare()
        self._chunks: list[bytes] = []
        self._size = 0
        limit = self.options["max_body_size"]
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}")

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self.options["max_body_size"]:
            self._chunks.append(chunk)
        else:
            self._chunks.clear()

    async def post(self, job_type: str) -> None:
        try:
            registry.job_class(job_type)
        except UnknownJobType as e:
            raise ApiError(404, str(e)) from None
        values = self._json_body()
        try:
            job = make_base_job(values, job_type)
        except ValidationError as e:
            messages = e.messages if isinstance(e.messages, dict) else {"_schema": e.messages}
            raise ApiError(400, f"invalid values for job type {job_type!r}", errors=messages) from None
        try:
            uuid = await job.enqueue_async()
        except GeyserError as e:
            log.warning("enqueue of a %s job failed: %s", job_type, e)
            raise ApiError(503, f"could not enqueue the job: {e}") from None
        self.set_header("Location", f"{self.request.path.rsplit('/', 1)[0]}/{uuid}")
        self.write_json(201, {"uuid": uuid})

    def _json_body(self) -> dict[str, Any]:
        limit = self.options["max_body_size"]
        if self._size > limit:
            raise ApiError(413, f"request body is over {limit} bytes")
        raw = b"".join(self._chunks)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ApiError(400, f"request body is not valid UTF-8 (byte {e.start})") from None
        if not text.strip():
            raise ApiError(400, "request body is empty; send a JSON object, e.g. {}")
        try:
            values = json.loads(text)
        except ValueError as e:
            raise ApiError(400, f"request body is not JSON: {e}") from None
        if not isinstance(values, dict):
            raise ApiError(400, f"request body must be a JSON object, not {type(values).__name__}")
        return values

    async def get(self, uuid: str) -> None:
        doc = await get_progress_async(uuid)
        if doc is None:
            raise ApiError(404, f"job {uuid} not found")
        self.write_json(200, doc)

    async def delete(self, uuid: str) -> None:
        # The client call, not job.cancel_async(): it needs no job class in this process.
        try:
            doc = await client().cancel_async(uuid)
        except JobNotFound:
            raise ApiError(404, f"job {uuid} not found") from None
        self.write_json(202, public_document(json.loads(doc)))


class EventsHandler(GeyserHandler):
    """``GET /jobs/<uuid>/events``: server-sent events, one ``data:`` line of the progress
    document per change (the current state first); the stream ends after a terminal status."""

    def prepare(self) -> None:
        super().prepare()
        self._gone = asyncio.Event()

    def on_connection_close(self) -> None:
        self._gone.set()

    async def get(self, uuid: str) -> None:
        if await get_progress_async(uuid) is None:
            raise ApiError(404, f"job {uuid} not found")
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        updates = watch_async(uuid, self.options["watch_interval"])
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            while True:
                following = asyncio.ensure_future(anext(updates))
                await asyncio.wait({following, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                    return
                try:
                    doc = following.result()
                except (StopAsyncIteration, JobNotFound):
                    break
                self.write(f"data: {json.dumps(doc)}\n\n")
                await self.flush()
        except tornado.iostream.StreamClosedError:
            return
        finally:
            gone.cancel()
            await updates.aclose()
        self.finish()


class HealthHandler(GeyserHandler):
    """``GET /healthz``: 200 when a store read and a queue stats call both answer."""

    async def get(self) -> None:
        queues = _queues()
        checks = {
            "store": lambda: client().get_async(str(uuid_module.uuid4())),
            "queue": lambda: client().stats_tube_async(queues[0] if queues else "geyser"),
        }
        for name, call in checks.items():
            try:
                await asyncio.wait_for(call(), HEALTH_TIMEOUT)
            except (GeyserError, asyncio.TimeoutError) as e:
                raise ApiError(503, f"{name} unreachable: {e or 'no answer in time'}") from None
        self.write_json(200, {"status": "ok"})


def _queues() -> list[str]:
    return sorted({cls.QUEUE_NAME for cls in registry.job_classes().values()})


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsHandler(GeyserHandler):
    """``GET /metrics``: Prometheus text format, ``geyser_queue_jobs{queue, state}`` gauges
    (ready, delayed, reserved, buried) for the queues of the registered job classes."""

    STATES = ("ready", "delayed", "reserved", "buried")

    async def get(self) -> None:
        queues = _queues()
        try:
            stats = await asyncio.gather(*(client().stats_tube_async(q) for q in queues))
        except GeyserError as e:
            raise ApiError(503, f"queue unreachable: {e}") from None
        lines = [
            "# HELP geyser_queue_jobs Jobs in a queue, by state.",
            "# TYPE geyser_queue_jobs gauge",
        ]
        for queue, counts in zip(queues, stats):
            for state in self.STATES:
                lines.append(f'geyser_queue_jobs{{queue="{_label(queue)}",state="{state}"}} {counts[state]}')
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish("\n".join(lines) + "\n")


def routes(
    prefix: str = "",
    *,
    token: str | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    watch_interval: float = 0.5,
) -> list[tornado.web.URLSpec]:
    """The API's routes under ``prefix`` (e.g. ``"/api"``), to add to your own Application.

    ``token``: bearer token required on every route; None reads ``GEYSER_API_TOKEN``,
    "" turns the check off. ``max_body_size``: bytes a POST body may have.
    ``watch_interval``: seconds between store reads of an event stream.
    """
    if token is None:
        token = os.environ.get("GEYSER_API_TOKEN", "")
    opts = {"token": token, "max_body_size": int(max_body_size), "watch_interval": float(watch_interval)}
    p = prefix.rstrip("/")
    return [
        tornado.web.url(rf"{p}/jobs/([^/]+)/events", EventsHandler, opts),
        tornado.web.url(rf"{p}/jobs/([^/]+)", EnqueueAndJobHandler, opts),
        tornado.web.url(rf"{p}/healthz", HealthHandler, opts),
        tornado.web.url(rf"{p}/metrics", MetricsHandler, opts),
    ]


def make_app(
    *,
    token: str | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    watch_interval: float = 0.5,
    **settings: Any,
) -> tornado.web.Application:
    """A Tornado Application serving ``routes()`` at the root, with JSON 404s elsewhere.

    Arguments as for ``routes``; ``settings`` go to ``tornado.web.Application``.
    """
    handlers = routes(token=token, max_body_size=max_body_size, watch_interval=watch_interval)
    settings.setdefault("default_handler_class", NotFoundHandler)
    settings.setdefault("default_handler_args", dict(handlers[0].kwargs))
    return tornado.web.Application(handlers, **settings)
