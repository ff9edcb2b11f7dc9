"""Tornado handlers for Geyser's HTTP API, to mount in your own app or serve with
``make_app()`` / ``python -m geyser.server``.

    POST   /jobs/<job_type>      validate the JSON body with the job's schema, enqueue → 201 {"uuid"}
    GET    /jobs/<uuid>          the job's public progress document
    GET    /jobs/<uuid>/events   server-sent events: the progress document on each change
    DELETE /jobs/<uuid>          request cancellation → 202 (409 once the job has finished)
    POST   /jobs/<uuid>/retry    queue a failed job again → 202 (409 when it is not failed)
    GET    /healthz              store and queue reachable
    GET    /openapi.json         the OpenAPI 3 description of these routes (geyser.openapi)
    GET    /metrics              Prometheus metrics of this process and the job classes' queue depths
    GET    /                     302 to /dashboard/, the HTML dashboard (geyser.dashboard; make_app only)

Every error body is JSON: ``{"error": "<what was wrong>"}`` (plus ``"errors"``,
field → messages, for schema errors and for values a job document cannot hold
exactly). 5xx answers mean the store or queue failed, never bad input. Every store
or queue round trip is awaited on the native runtime, so no handler blocks the
IOLoop. This module only reads jobs, enqueues new ones, requests cancellation and
retries; it never runs jobs.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import re
import uuid as uuid_module
from typing import Any

import tornado.httpserver
import tornado.iostream
import tornado.web
from marshmallow import ValidationError

from geyser import metrics, registry
from geyser.config import client
from geyser.errors import BackendError, GeyserError, InvalidDocument, InvalidTransition, JobNotFound, UnknownJobType
from geyser.jobs import make_base_job
from geyser.watch import TERMINAL_STATUSES, get_progress_async, public_document, watch_async

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_BODY_SIZE",
    "MAX_INTEGER",
    "MAX_NESTING",
    "MIN_INTEGER",
    "ApiError",
    "EnqueueAndJobHandler",
    "EventsHandler",
    "GeyserApplication",
    "GeyserHandler",
    "HealthHandler",
    "MetricsHandler",
    "NotFoundHandler",
    "RetryHandler",
    "make_app",
    "routes",
]

log = logging.getLogger("geyser.web")

#: Largest accepted ``POST /jobs/<type>`` body, in bytes (1 MiB).
DEFAULT_MAX_BODY_SIZE: int = 1 << 20
#: Seconds a client has to send a request's head (request line and headers) before its
#: connection is closed; an idle keep-alive connection is closed after as long.
DEFAULT_HEADER_TIMEOUT: float = 5.0
#: Seconds a health check may wait for the store or the queue.
HEALTH_TIMEOUT: float = 5.0
#: Objects and arrays a POST body may nest, the body object itself counted.
MAX_NESTING: int = 32
#: The integers a job document holds exactly: the signed 64-bit range.
MIN_INTEGER: int = -(1 << 63)
MAX_INTEGER: int = (1 << 63) - 1


class ApiError(tornado.web.HTTPError):
    """An error answer: ``status`` with the JSON body ``{"error": message, **extra}``."""

    def __init__(self, status: int, message: str, /, **extra: Any) -> None:
        super().__init__(status)
        self.message = message
        self.extra = extra


class GeyserHandler(tornado.web.RequestHandler):
    """Base of the handlers: bearer-token check and JSON error bodies.

    ``token``: when not empty, every request must carry ``Authorization: Bearer <token>``.
    """

    def initialize(self, token: str = "", **api_options: Any) -> None:
        # Not ``self.options``: that name is Tornado's handler of the OPTIONS method.
        self.token = token
        self.api_options = api_options

    def prepare(self) -> None:
        if not self.token:
            return
        scheme, _, given = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise ApiError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')")

    def _allowed_methods(self) -> list[str]:
        """The methods this handler class implements."""
        base = tornado.web.RequestHandler
        return [m for m in self.SUPPORTED_METHODS if getattr(type(self), m.lower()) is not getattr(base, m.lower())]

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
            allowed = ", ".join(self._allowed_methods())
            self.set_header("Allow", allowed)
            body = {"error": f"method {self.request.method} is not allowed on {self.request.path} (allowed: {allowed})"}
        elif isinstance(error, tornado.web.HTTPError) and status_code < 500:
            body = {"error": error.log_message or self._reason}
        elif isinstance(error, BackendError):
            status_code, body = 503, {"error": f"store or queue unavailable: {error}"}
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


# -- request bodies: JSON a job document can hold exactly ---------------------------------


class _Unstorable:
    """A JSON number or constant met while parsing that a job document cannot hold exactly."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _excerpt(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _parse_int(digits: str) -> int | _Unstorable:
    # Decided on the digits, so a 4,000-digit literal never reaches int() and its digit limit.
    if len(digits.lstrip("-")) <= 19 and MIN_INTEGER <= (value := int(digits)) <= MAX_INTEGER:
        return value
    return _Unstorable(f"integer {_excerpt(digits)} is outside the signed 64-bit range a job stores exactly")


def _parse_float(text: str) -> float | _Unstorable:
    value = float(text)
    if math.isfinite(value):
        return value
    return _Unstorable(f"number {_excerpt(text)} is too large for a 64-bit float")


def _parse_constant(name: str) -> _Unstorable:
    return _Unstorable(f"{name} is not a JSON number")


_SURROGATE = re.compile(r"[\ud800-\udfff]")
# A JSON string, or a character that opens or closes a container or follows a key.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]')


def _surrogate_problem(text: str) -> str | None:
    found = _SURROGATE.search(text)
    return None if found is None else f"has a lone surrogate U+{ord(found.group()):04X}; send valid Unicode"


def _value_problem(field: str, value: Any) -> str | None:
    """Why ``value`` (of top-level ``field``) cannot be stored exactly, or None.
    Breadth first, without recursion; the message names where inside the value."""
    pending: list[tuple[str, Any, int]] = [(field, value, 2)]
    for path, item, depth in pending:
        where = "" if path == field else f" at {path}"
        if isinstance(item, _Unstorable):
            return f"{item.reason}{where and f' ({where.strip()})'}"
        if isinstance(item, str) and (problem := _surrogate_problem(item)):
            return f"string{where} {problem}"
        if isinstance(item, (dict, list)) and depth > MAX_NESTING:
            return f"objects and arrays nest deeper than {MAX_NESTING} levels"
        if isinstance(item, dict):
            for key, inner in item.items():
                if problem := _surrogate_problem(key):
                    return f"a key{where} {problem}"
                pending.append((f"{path}.{key}", inner, depth + 1))
        elif isinstance(item, list):
            pending.extend((f"{path}[{i}]", inner, depth + 1) for i, inner in enumerate(item))
    return None


def _unstorable_values(values: dict[str, Any]) -> dict[str, list[str]]:
    """Field → messages for the values of a parsed body a job document cannot hold exactly:
    integers outside the signed 64-bit range, numbers past a 64-bit float, NaN and
    Infinity, lone surrogates in strings or keys, nesting deeper than ``MAX_NESTING``."""
    errors: dict[str, list[str]] = {}
    for field, value in values.items():
        if problem := _surrogate_problem(field):
            errors.setdefault("_schema", []).append(f"a field name {problem}")
        elif problem := _value_problem(field, value):
            errors[field] = [problem]
    return errors


def _too_deep_field(text: str) -> str | None:
    """The top-level field whose value nests deeper than ``MAX_NESTING`` in a JSON text too
    deep for the parser's recursion, or None when the body itself is what nests."""
    depth, key, last = 0, None, None
    for token in _TOKEN.finditer(text):
        mark = token.group()
        if mark in ("{", "["):
            depth += 1
            if depth > MAX_NESTING:
                return key
        elif mark in ("}", "]"):
            depth -= 1
        elif mark == ":":
            key = last if depth == 1 else key
        else:
            last = mark
    return None


def _parse_body(text: str, job_type: str) -> dict[str, Any]:
    """The JSON object of a POST body for ``job_type``, every value one a job document can
    hold exactly; otherwise an ``ApiError`` (400) saying what is wrong, and in which field."""
    try:
        values = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except RecursionError:
        limit = f"objects and arrays nest deeper than {MAX_NESTING} levels"
        field = _too_deep_field(text)
        if field is None:
            raise ApiError(400, f"request body: {limit}") from None
        raise ApiError(400, f"invalid values for job type {job_type!r}", errors={json.loads(field): [limit]}) from None
    except ValueError as e:
        raise ApiError(400, f"request body is not JSON: {e}") from None
    if not isinstance(values, dict):
        raise ApiError(400, f"request body must be a JSON object, not {type(values).__name__}")
    errors = _unstorable_values(values)
    if errors:
        raise ApiError(400, f"invalid values for job type {job_type!r}", errors=errors)
    return values


def _invalid_values(job_type: str, error: ValidationError) -> ApiError:
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return ApiError(400, f"invalid values for job type {job_type!r}", errors=messages)


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
        limit = self.api_options["max_body_size"]
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}")

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self.api_options["max_body_size"]:
            self._chunks.append(chunk)
        else:
            self._chunks.clear()

    async def post(self, job_type: str) -> None:
        try:
            registry.job_class(job_type)
        except UnknownJobType as e:
            raise ApiError(404, str(e)) from None
        values = self._json_body(job_type)
        try:
            job = make_base_job(values, job_type)
            uuid = await job.enqueue_async()
        except ValidationError as e:  # the schema's, or a value the document refused
            raise _invalid_values(job_type, e) from None
        except InvalidDocument as e:
            raise ApiError(400, f"the job's document was refused: {e}") from None
        except GeyserError as e:
            log.warning("enqueue of a %s job failed: %s", job_type, e)
            raise ApiError(503, f"could not enqueue the job: {e}") from None
        self.set_header("Location", f"{self.request.path.rsplit('/', 1)[0]}/{uuid}")
        self.write_json(201, {"uuid": uuid})

    def _json_body(self, job_type: str) -> dict[str, Any]:
        limit = self.api_options["max_body_size"]
        if self._size > limit:
            raise ApiError(413, f"request body is over {limit} bytes")
        raw = b"".join(self._chunks)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ApiError(400, f"request body is not valid UTF-8 (byte {e.start})") from None
        if not text.strip():
            raise ApiError(400, "request body is empty; send a JSON object, e.g. {}")
        return _parse_body(text, job_type)

    async def get(self, uuid: str) -> None:
        doc = await get_progress_async(uuid)
        if doc is None:
            raise ApiError(404, f"job {uuid} not found")
        self.write_json(200, doc)

    async def delete(self, uuid: str) -> None:
        current = await get_progress_async(uuid)
        if current is None:
            raise ApiError(404, f"job {uuid} not found")
        if current["status"] in TERMINAL_STATUSES:
            raise _finished(uuid, current["status"])
        # The client call, not job.cancel_async(): it needs no job class in this process.
        try:
            with metrics.counting_errors("cancel"):
                stored = json.loads(await client().cancel_async(uuid))
        except JobNotFound:
            raise ApiError(404, f"job {uuid} not found") from None
        except InvalidTransition as e:  # it finished between the read and the cancel
            raise await _conflict(uuid, str(e)) from None
        metrics.cancel_requested(stored)
        doc = public_document(stored)
        if doc["status"] in TERMINAL_STATUSES - {"cancelled"}:  # likewise
            raise _finished(uuid, doc["status"])
        self.write_json(202, doc)


def _finished(uuid: str, status: str) -> ApiError:
    return ApiError(409, f"job {uuid} has already finished ({status}); there is nothing to cancel", status=status)


async def _conflict(uuid: str, message: str) -> ApiError:
    """409 for an operation the job's status does not allow, with that status as stored now."""
    doc = await get_progress_async(uuid)
    if doc is None:
        return ApiError(404, f"job {uuid} not found")
    return ApiError(409, message, status=doc["status"])


class RetryHandler(GeyserHandler):
    """``POST /jobs/<uuid>/retry``: queue a failed (or buried) or cancelled job again, its
    retry budget renewed and its history kept → 202 with the progress document; 409 with
    ``"status"`` for a job in any other status."""

    async def post(self, uuid: str) -> None:
        try:
            with metrics.counting_errors("retry"):
                stored = json.loads(await client().retry_async(uuid))
        except JobNotFound:
            raise ApiError(404, f"job {uuid} not found") from None
        except InvalidTransition as e:
            raise await _conflict(uuid, str(e)) from None
        metrics.retried(stored)
        self.write_json(202, public_document(stored))


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
        updates = watch_async(uuid, self.api_options["watch_interval"])
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


class MetricsHandler(GeyserHandler):
    """``GET /metrics``: Prometheus text format (``geyser.metrics``): this process's counters
    (jobs enqueued, cancelled and retried through it, store and queue errors) and the
    ``geyser_queue_jobs{queue, state}`` gauges of the registered job classes' queues; a
    queue that does not answer is left out of the gauges."""

    async def get(self) -> None:
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.finish(await metrics.exposition_async(_queues()))


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
    from geyser.openapi import OpenApiHandler  # it imports this module

    p = prefix.rstrip("/")
    return [
        tornado.web.url(rf"{p}/jobs/([^/]+)/events", EventsHandler, opts),
        tornado.web.url(rf"{p}/jobs/([^/]+)/retry", RetryHandler, opts),
        tornado.web.url(rf"{p}/jobs/([^/]+)", EnqueueAndJobHandler, opts),
        tornado.web.url(rf"{p}/healthz", HealthHandler, opts),
        tornado.web.url(rf"{p}/metrics", MetricsHandler, opts),
        tornado.web.url(rf"{p}/openapi.json", OpenApiHandler, dict(opts, prefix=p)),
    ]


class GeyserApplication(tornado.web.Application):
    """A Tornado Application whose ``listen`` closes a connection that takes longer than
    ``header_timeout`` seconds to send a request's head, or stays idle that long."""

    def __init__(self, handlers: list[Any], header_timeout: float = DEFAULT_HEADER_TIMEOUT, **settings: Any) -> None:
        super().__init__(handlers, **settings)
        self.header_timeout = float(header_timeout)

    def listen(self, port: int, address: str | None = None, **kwargs: Any) -> tornado.httpserver.HTTPServer:
        """``Application.listen``; ``idle_connection_timeout`` defaults to ``header_timeout``.
        Tornado's HTTPServer applies it to the wait for each request's head."""
        kwargs.setdefault("idle_connection_timeout", self.header_timeout)
        return super().listen(port, address, **kwargs)


def make_app(
    *,
    token: str | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    watch_interval: float = 0.5,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    dashboard: bool = True,
    **settings: Any,
) -> GeyserApplication:
    """A Tornado Application serving ``routes()`` at the root, with JSON 404s elsewhere.

    Arguments as for ``routes``; ``header_timeout``: seconds a client may take to send
    a request's head before ``app.listen(...)``'s server closes its connection (a server
    you build yourself takes it as ``HTTPServer(app, idle_connection_timeout=...)``).
    ``dashboard``: also serve the HTML dashboard (``geyser.dashboard``) under ``/dashboard``,
    with ``/`` redirecting there. ``settings`` go to ``tornado.web.Application``.
    """
    handlers = routes(token=token, max_body_size=max_body_size, watch_interval=watch_interval)
    if dashboard:
        from geyser.dashboard import routes as dashboard_routes  # it imports this module

        handlers += [tornado.web.url("/", tornado.web.RedirectHandler, {"url": "/dashboard/", "permanent": False}),
                     *dashboard_routes("/dashboard", token=token, watch_interval=watch_interval)]
    settings.setdefault("default_handler_class", NotFoundHandler)
    settings.setdefault("default_handler_args", dict(handlers[0].kwargs))
    return GeyserApplication(handlers, header_timeout=header_timeout, **settings)
