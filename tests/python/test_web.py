"""geyser.web and python -m geyser.server over real HTTP, on the embedded default and
beanstalkd: every route and error case, bearer tokens, an IOLoop that stays
responsive under 1,000 enqueues, and server-sent events from a real worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.httpserver
import tornado.testing
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

import geyser
import geyser.web
import jobs_for_tests  # noqa: F401  (registers the job types)
from conftest import HERE, free_port, run_worker, start_worker, worker_env
from geyser.watch import PUBLIC_FIELDS

ROOT = HERE.parents[1]
TOKEN = "s3cret-token"


class Api:
    """An HTTP server for one Tornado app on a free port of this test's loop, and a client."""

    def __init__(self, app: tornado.web.Application) -> None:
        sock, self.port = tornado.testing.bind_unused_port()
        self.server = tornado.httpserver.HTTPServer(app)
        self.server.add_sockets([sock])
        self.http = AsyncHTTPClient()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def fetch(self, method: str, path: str, body: bytes | str | None = None, **kw: Any) -> HTTPResponse:
        if method == "POST" and body is None and "body_producer" not in kw:
            body = b""
        return await self.http.fetch(self.url(path), method=method, body=body, raise_error=False, **kw)

    async def close(self) -> None:
        self.server.stop()
        await self.server.close_all_connections()


def body(response: HTTPResponse) -> Any:
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    return json.loads(response.body)


@pytest.fixture
async def api(backend: dict[str, str]) -> AsyncIterator[Api]:
    server = Api(geyser.web.make_app(token="", watch_interval=0.05))
    yield server
    await server.close()


@pytest.fixture
async def small_api(embedded: str) -> AsyncIterator[Api]:
    server = Api(geyser.web.make_app(token="", max_body_size=100))
    yield server
    await server.close()


async def enqueue(api: Api, job_type: str, values: dict[str, Any]) -> str:
    response = await api.fetch("POST", f"/jobs/{job_type}", json.dumps(values))
    assert response.code == 201, response.body
    return body(response)["uuid"]


# -- POST /jobs/<type> ----------------------------------------------------------------------


async def test_post_validates_enqueues_and_answers_201_with_the_uuid(api: Api) -> None:
    response = await api.fetch("POST", "/jobs/echo", json.dumps({"message": "hi", "count": 2}))
    assert response.code == 201
    uuid = body(response)["uuid"]
    assert response.headers["Location"] == f"/jobs/{uuid}"
    job = await geyser.get_base_job_async(uuid)
    assert job is not None and (job.message, job.count, job.status) == ("hi", 2, "queued")
    stats = await geyser.config.client().stats_tube_async("echo")
    assert stats["ready"] == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"message": "\xff\xfe"}', "UTF-8"),
    ],
)
async def test_post_of_a_body_that_is_not_a_json_object_is_400(api: Api, raw: bytes, message: str) -> None:
    response = await api.fetch("POST", "/jobs/echo", raw)
    assert response.code == 400
    assert message in body(response)["error"]


async def test_post_with_schema_errors_is_400_with_field_messages(api: Api) -> None:
    response = await api.fetch("POST", "/jobs/echo", json.dumps({"count": "many", "bogus": 1}))
    assert response.code == 400
    answer = body(response)
    assert "echo" in answer["error"]
    assert set(answer["errors"]) == {"message", "count", "bogus"}
    assert all(isinstance(m, list) and m for m in answer["errors"].values())


@pytest.mark.parametrize("field", ["uuid", "status", "version", "completeness", "attempts", "resultCode"])
async def test_post_refuses_internal_fields(api: Api, field: str) -> None:
    response = await api.fetch("POST", "/jobs/echo", json.dumps({"message": "x", field: 1}))
    assert response.code == 400
    assert field in body(response)["errors"]


async def test_options_on_every_route_is_405_naming_the_allowed_methods(api: Api) -> None:
    uuid = await enqueue(api, "echo", {"message": "hi"})
    routes = {"/jobs/echo": "GET, POST, DELETE", f"/jobs/{uuid}": "GET, POST, DELETE",
              f"/jobs/{uuid}/events": "GET", "/healthz": "GET", "/metrics": "GET"}
    for path, allowed in routes.items():
        response = await api.fetch("OPTIONS", path)
        assert response.code == 405, (path, response.body)
        assert response.headers["Allow"] == allowed, path
        assert "OPTIONS" in body(response)["error"] and allowed in body(response)["error"]
    response = await api.fetch("OPTIONS", "/nowhere")
    assert response.code == 404 and "/nowhere" in body(response)["error"]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [40, 100_000])
async def test_post_of_deeply_nested_values_is_400_naming_the_field(api: Api, depth: int) -> None:
    # 40 levels parse but go past the documented limit; 100,000 go past the parser's recursion.
    response = await api.fetch("POST", "/jobs/echo", f'{{"message": "x", "count": {nested(depth)}}}')
    assert response.code == 400, response.body
    assert body(response)["errors"] == {"count": [f"objects and arrays nest deeper than {geyser.web.MAX_NESTING} levels"]}
    response = await api.fetch("POST", "/jobs/echo", nested(depth))  # not an object, whatever its depth
    assert response.code == 400, response.body
    too_deep = f"request body: objects and arrays nest deeper than {geyser.web.MAX_NESTING} levels"
    assert body(response)["error"] == (too_deep if depth > 1000 else "request body must be a JSON object, not list")


BIG = "9" * 4000
UNSTORABLE = {
    "lone surrogate": ('{"message": "a\\ud800b"}', "message", "lone surrogate U+D800"),
    "lone low surrogate in a list": ('{"message": ["ok", "\\udfff"]}', "message", "string at message[1] has a lone surrogate U+DFFF"),
    "surrogate key": ('{"message": {"\\ud800": 1}}', "message", "a key has a lone surrogate"),
    "4,000 digits": (f'{{"message": "x", "count": {BIG}}}', "count", "outside the signed 64-bit range"),
    "5,000 digits": (f'{{"message": "x", "count": -{BIG}{BIG[:1000]}}}', "count", "(5001 characters)"),
    "301 digits": (f'{{"message": "x", "count": 1{"0" * 300}}}', "count", "outside the signed 64-bit range"),
    "2**63": (f'{{"message": "x", "count": {2**63}}}', "count", "outside the signed 64-bit range"),
    "past a double": ('{"message": "x", "count": 1e400}', "count", "too large for a 64-bit float"),
    "NaN": ('{"seconds": NaN}', "seconds", "NaN is not a JSON number"),
    "-Infinity": ('{"seconds": -Infinity}', "seconds", "-Infinity is not a JSON number"),
}


@pytest.mark.parametrize("case", UNSTORABLE, ids=list(UNSTORABLE))
async def test_post_of_a_value_a_document_cannot_hold_exactly_is_400_naming_the_field(api: Api, case: str) -> None:
    raw, field, message = UNSTORABLE[case]
    job_type = "slow" if field == "seconds" else "echo"
    response = await api.fetch("POST", f"/jobs/{job_type}", raw)
    assert response.code == 400, response.body
    answer = body(response)
    assert answer["error"] == f"invalid values for job type {job_type!r}"
    assert list(answer["errors"]) == [field] and message in answer["errors"][field][0], answer
    assert len(response.body) < 1000  # a huge value is quoted, not echoed
    stats = await geyser.config.client().stats_tube_async(geyser.registry.job_class(job_type).QUEUE_NAME)
    assert stats["ready"] == 0


async def test_post_stores_the_extremes_it_accepts_exactly(api: Api) -> None:
    for count in (2**63 - 1, -(2**63)):
        uuid = await enqueue(api, "echo", {"message": "\U0001F600 \u00e9", "count": count})
        job = await geyser.get_base_job_async(uuid)
        assert job is not None and (job.count, job.message) == (count, "\U0001F600 \u00e9")
    for seconds in (1.7976931348623157e308, 5e-324, 0.1 + 0.2):
        job = await geyser.get_base_job_async(await enqueue(api, "slow", {"seconds": seconds}))
        assert job is not None and job.seconds == seconds


async def test_post_of_an_unknown_job_type_is_404(api: Api) -> None:
    response = await api.fetch("POST", "/jobs/no_such_type", "{}")
    assert response.code == 404
    assert "no_such_type" in body(response)["error"]


async def test_post_over_the_default_size_limit_is_413_without_reading_it(api: Api) -> None:
    # Declared length over 1 MiB, announced with Expect: 100-continue as curl does:
    # the answer comes before any of the body is sent.
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    size = geyser.web.DEFAULT_MAX_BODY_SIZE + 1
    writer.write(f"POST /jobs/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {size}\r\nExpect: 100-continue\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert json.loads(rest)["error"] == f"request body is {size} bytes; the limit is {size - 1}"


async def test_post_over_a_configured_limit_is_413_declared_or_chunked(small_api: Api) -> None:
    big = json.dumps({"message": "x" * 200})
    response = await small_api.fetch("POST", "/jobs/echo", big)
    assert response.code == 413 and "limit is 100" in body(response)["error"]

    async def chunks(write: Any) -> None:
        for _ in range(4):
            await write(b" " * 60)
        await write(b"{}")

    response = await small_api.fetch("POST", "/jobs/echo", body_producer=chunks)
    assert response.code == 413 and "over 100 bytes" in body(response)["error"]
    response = await small_api.fetch("POST", "/jobs/echo", json.dumps({"message": "ok"}))
    assert response.code == 201


# -- GET and DELETE /jobs/<uuid> ------------------------------------------------------------


async def test_get_answers_the_public_progress_document(api: Api) -> None:
    uuid = await enqueue(api, "echo", {"message": "hi"})
    response = await api.fetch("GET", f"/jobs/{uuid}")
    assert response.code == 200
    doc = body(response)
    assert tuple(doc) == PUBLIC_FIELDS
    assert (doc["uuid"], doc["jobType"], doc["status"], doc["completeness"]) == (uuid, "echo", "queued", 0.0)
    assert doc["createdAt"] and doc["updatedAt"] and doc["startedAt"] is None


async def test_get_and_delete_of_an_unknown_job_are_404(api: Api) -> None:
    for method in ("GET", "DELETE"):
        response = await api.fetch(method, "/jobs/00000000-0000-0000-0000-000000000000")
        assert response.code == 404, method
        assert "not found" in body(response)["error"]
    response = await api.fetch("GET", "/jobs/00000000-0000-0000-0000-000000000000/events")
    assert response.code == 404 and "not found" in body(response)["error"]


async def test_delete_requests_cancellation_and_answers_202(api: Api) -> None:
    uuid = await enqueue(api, "echo", {"message": "hi"})
    response = await api.fetch("DELETE", f"/jobs/{uuid}")
    assert response.code == 202
    assert body(response)["status"] == "cancelled"
    assert body(await api.fetch("GET", f"/jobs/{uuid}"))["status"] == "cancelled"


async def test_delete_of_a_finished_job_is_409_with_its_status(api: Api) -> None:
    cancelled = await enqueue(api, "echo", {"message": "hi"})
    assert (await api.fetch("DELETE", f"/jobs/{cancelled}")).code == 202
    succeeded = await enqueue(api, "echo", {"message": "hi"})
    failed = await enqueue(api, "fail", {"mode": "finish"})
    done = await asyncio.to_thread(run_worker)
    assert done.returncode == 0, done.stdout + done.stderr
    for uuid, status in ((cancelled, "cancelled"), (succeeded, "succeeded"), (failed, "failed")):
        response = await api.fetch("DELETE", f"/jobs/{uuid}")
        assert response.code == 409, (status, response.body)
        answer = body(response)
        assert answer["status"] == status and status in answer["error"], answer
        assert body(await api.fetch("GET", f"/jobs/{uuid}"))["status"] == status


async def test_retry_queues_a_failed_or_buried_job_again_with_its_history(api: Api) -> None:
    finished = await enqueue(api, "fail", {"mode": "finish", "succeed_on": 2})  # failed at once
    buried = await enqueue(api, "fail", {"mode": "crash", "succeed_on": 4})  # failed after 1 + 2 retries
    done = await asyncio.to_thread(run_worker)
    assert done.returncode == 0, done.stdout + done.stderr
    before = {uuid: body(await api.fetch("GET", f"/jobs/{uuid}")) for uuid in (finished, buried)}
    assert [(d["status"], d["attempts"]) for d in before.values()] == [("failed", 1), ("failed", 3)]
    for uuid in (finished, buried):
        response = await api.fetch("POST", f"/jobs/{uuid}/retry")
        assert response.code == 202, response.body
        doc = body(response)
        assert tuple(doc) == PUBLIC_FIELDS
        assert (doc["status"], doc["attempts"], doc["errors"]) == ("queued", before[uuid]["attempts"],
                                                                  before[uuid]["errors"])
    done = await asyncio.to_thread(run_worker)
    assert done.returncode == 0, done.stdout + done.stderr
    after = [body(await api.fetch("GET", f"/jobs/{uuid}")) for uuid in (finished, buried)]
    assert [(d["status"], d["attempts"]) for d in after] == [("succeeded", 2), ("succeeded", 4)]


async def test_retry_of_a_job_that_has_not_failed_is_409_with_its_status(api: Api) -> None:
    queued = await enqueue(api, "echo", {"message": "hi"})
    response = await api.fetch("POST", f"/jobs/{queued}/retry")
    assert response.code == 409, response.body
    assert body(response)["status"] == "queued" and "queued" in body(response)["error"]
    done = await asyncio.to_thread(run_worker)
    assert done.returncode == 0, done.stdout + done.stderr
    response = await api.fetch("POST", f"/jobs/{queued}/retry")
    assert response.code == 409 and body(response)["status"] == "succeeded", response.body
    response = await api.fetch("POST", "/jobs/00000000-0000-0000-0000-000000000000/retry")
    assert response.code == 404 and "not found" in body(response)["error"]


async def test_retry_queues_a_cancelled_job_again(api: Api) -> None:
    uuid = await enqueue(api, "echo", {"message": "hi"})
    assert (await api.fetch("DELETE", f"/jobs/{uuid}")).code == 202
    response = await api.fetch("POST", f"/jobs/{uuid}/retry")
    assert response.code == 202 and body(response)["status"] == "queued", response.body
    done = await asyncio.to_thread(run_worker)
    assert done.returncode == 0, done.stdout + done.stderr
    assert body(await api.fetch("GET", f"/jobs/{uuid}"))["status"] == "succeeded"


async def test_unknown_routes_and_methods_answer_json_errors(api: Api) -> None:
    response = await api.fetch("GET", "/nowhere")
    assert response.code == 404 and "/nowhere" in body(response)["error"]
    response = await api.fetch("PUT", "/jobs/echo", "{}")
    assert response.code == 405 and "PUT" in body(response)["error"]


# -- health and metrics ---------------------------------------------------------------------


async def test_healthz_and_metrics(api: Api) -> None:
    response = await api.fetch("GET", "/healthz")
    assert response.code == 200 and body(response) == {"status": "ok"}
    await enqueue(api, "echo", {"message": "a"})
    await enqueue(api, "echo", {"message": "b"})
    response = await api.fetch("GET", "/metrics")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = response.body.decode().splitlines()
    assert "# TYPE geyser_queue_jobs gauge" in lines
    assert 'geyser_queue_jobs{queue="echo",state="ready"} 2.0' in lines
    for queue in ("echo", "slow", "steps", "fail"):
        for state in ("ready", "delayed", "reserved", "buried"):
            assert any(line.startswith(f'geyser_queue_jobs{{queue="{queue}",state="{state}"}} ') for line in lines)


async def test_healthz_is_503_when_the_queue_is_gone(embedded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEYSER_QUEUE_URL", f"beanstalkd://127.0.0.1:{free_port()}")
    geyser.configure()
    server = Api(geyser.web.make_app(token=""))
    try:
        response = await server.fetch("GET", "/healthz", request_timeout=30)
        assert response.code == 503
        assert "unreachable" in body(response)["error"]
    finally:
        await server.close()


# -- slow clients ---------------------------------------------------------------------------


async def closed_after(port: int, head: bytes, limit: float = 10) -> float:
    """Connect, send ``head`` (an unfinished request) and wait: the seconds until the server
    closes the connection, failing if it is still open after ``limit`` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    try:
        writer.write(head)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), limit)
    except asyncio.TimeoutError:
        pytest.fail(f"the server kept a connection open {limit} s with only {head!r} sent")
    finally:
        writer.close()
    assert answer == b"", answer  # closed without an answer: there is no request to answer
    return time.monotonic() - start


async def test_a_client_slower_than_the_header_timeout_is_disconnected(embedded: str) -> None:
    app = geyser.web.make_app(token="", header_timeout=0.5)
    port = free_port()
    server = app.listen(port, "127.0.0.1")
    try:
        assert 0.4 < await closed_after(port, b"GET /hea") < 5
        assert 0.4 < await closed_after(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") < 5
        # A client that sends its request in time is answered as usual.
        response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/healthz", raise_error=False)
        assert response.code == 200
    finally:
        server.stop()
        await server.close_all_connections()


# -- bearer token ---------------------------------------------------------------------------


async def test_every_route_requires_the_token_when_one_is_set(embedded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEYSER_API_TOKEN", TOKEN)
    server = Api(geyser.web.make_app())  # token=None reads GEYSER_API_TOKEN
    good = {"Authorization": f"Bearer {TOKEN}"}
    try:
        uuid = geyser.make_base_job({"message": "x"}, "echo").enqueue()
        calls = [("POST", "/jobs/echo", '{"message": "x"}'), ("GET", f"/jobs/{uuid}", None),
                 ("GET", f"/jobs/{uuid}/events", None), ("DELETE", f"/jobs/{uuid}", None),
                 ("POST", f"/jobs/{uuid}/retry", ""),
                 ("GET", "/healthz", None), ("GET", "/metrics", None), ("GET", "/nowhere", None)]
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            for method, path, data in calls:
                response = await server.fetch(method, path, data, headers=headers)
                assert response.code == 401, (method, path, headers)
                assert "bearer token" in body(response)["error"]
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await server.fetch("POST", "/jobs/echo", '{"message": "x"}', headers=good)).code == 201
        assert (await server.fetch("GET", f"/jobs/{uuid}", headers=good)).code == 200
        assert (await server.fetch("GET", "/metrics", headers=good)).code == 200
    finally:
        await server.close()


# -- the IOLoop stays responsive --------------------------------------------------------------


class Ping(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("pong")


async def test_the_loop_answers_while_an_enqueue_waits_for_the_store(backend: dict[str, str]) -> None:
    # The API mounted under a prefix in the user's own app, beside the user's own handler.
    app = tornado.web.Application([*geyser.web.routes("/api", token=""), (r"/ping", Ping)])
    server = Api(app)
    # Another process holds the store's write lock (another process: POSIX file locks do not
    # separate two connections of one process): the enqueue must wait for it without holding
    # up the event loop, which keeps answering the user's own handler meanwhile.
    assert await geyser.config.client().get_async("no-such-job") is None  # the file exists, in WAL mode
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCK_HOLDER, backend["GEYSER_STORE_URL"].removeprefix("sqlite://"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"locked\n"
        post = asyncio.ensure_future(server.fetch("POST", "/api/jobs/echo", json.dumps({"message": "waits"})))
        for _ in range(3):
            ping = await server.fetch("GET", "/ping")
            assert ping.code == 200
            assert not post.done(), f"the enqueue finished while the store was locked: {post.result().code}"
        holder.stdin.close()  # the holder commits and exits
        assert await asyncio.wait_for(holder.wait(), 30) == 0
        response = await asyncio.wait_for(post, 30)
        assert response.code == 201, response.body
        stats = await geyser.config.client().stats_tube_async("echo")
        assert stats["ready"] == 1
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await server.close()


#: Takes the write lock of the SQLite file argv[1], says so, and holds it until stdin closes.
LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""


# -- server-sent events from a real worker ------------------------------------------------------


async def test_events_stream_the_progress_of_a_running_job_in_order_and_end(api: Api) -> None:
    uuid = await enqueue(api, "slow", {"seconds": 1.5})
    received = bytearray()
    stream = asyncio.ensure_future(api.http.fetch(
        api.url(f"/jobs/{uuid}/events"), streaming_callback=received.extend, request_timeout=60,
    ))
    worker = start_worker("--progress-interval", "0.1", "--log-level", "WARNING")
    try:
        response = await asyncio.wait_for(stream, 60)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = received.decode().split("\n\n")
    assert events[-1] == ""
    docs = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(e.startswith("data: ") and "\n" not in e for e in events[:-1])
    statuses = [d["status"] for d in docs]
    completeness = [d["completeness"] for d in docs]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded"
    assert statuses == sorted(statuses, key=["queued", "running", "succeeded"].index)
    assert completeness == sorted(completeness) and completeness[-1] == 1.0
    assert sum(1 for d in docs if d["status"] == "running" and 0 < d["completeness"] < 1) >= 3
    updated = [d["updatedAt"] for d in docs]
    assert updated == sorted(updated) and len(set(updated)) == len(updated)


async def test_events_of_a_finished_job_send_its_state_once_and_end(api: Api) -> None:
    uuid = await enqueue(api, "echo", {"message": "x"})
    await api.fetch("DELETE", f"/jobs/{uuid}")
    response = await api.fetch("GET", f"/jobs/{uuid}/events", request_timeout=10)
    assert response.code == 200
    events = response.body.decode().split("\n\n")
    assert len(events) == 2 and json.loads(events[0].removeprefix("data: "))["status"] == "cancelled"


async def test_events_stop_polling_when_the_client_goes_away(api: Api) -> None:
    uuid = await enqueue(api, "echo", {"message": "x"})
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(f"GET /jobs/{uuid}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    assert b"data: " in await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
    writer.close()
    await writer.wait_closed()

    def leftovers() -> list[asyncio.Task[Any]]:
        names = ("_execute", "Event.wait", "anext")
        return [t for t in asyncio.all_tasks() if any(name in repr(t) for name in names)]

    deadline = time.monotonic() + 5
    while leftovers() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # poll: the handler sees the close on a later loop turn
    assert leftovers() == []


# -- python -m geyser.server and the Tornado example -------------------------------------------


def wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on port {port}")


def test_server_module_serves_with_a_token_and_stops_on_sigterm(backend: dict[str, str]) -> None:
    port = free_port()
    env = worker_env({"GEYSER_API_TOKEN": TOKEN})
    proc = subprocess.Popen([sys.executable, "-m", "geyser.server", "--port", str(port), "-m", "jobs_for_tests"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, proc)
        base = f"http://127.0.0.1:{port}"
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/healthz"],
                             capture_output=True, text=True, timeout=10)
        assert out.stdout == "401"
        out = subprocess.run(["curl", "-s", "-H", f"Authorization: Bearer {TOKEN}", "-d", '{"message": "hi"}',
                              f"{base}/jobs/echo"], capture_output=True, text=True, timeout=10)
        uuid = json.loads(out.stdout)["uuid"]
        assert geyser.get_base_job(uuid) is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, log
    assert "job types: echo, fail, slow, step" in log


def test_server_module_closes_a_client_slower_than_header_timeout(embedded: str) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "geyser.server", "--port", str(port), "--header-timeout", "0.5"],
                            env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, proc)
        assert 0.4 < asyncio.run(closed_after(port, b"POST /jobs/echo HT")) < 5
    finally:
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, log


def test_tornado_example_enqueues_without_blocking(embedded: str) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "tornado_app.py"), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, proc)
        out = subprocess.run(["curl", "-s", "-d", '{"fieldOne": "report.csv"}', f"http://127.0.0.1:{port}/my_job"],
                             capture_output=True, text=True, timeout=10)
        uuid = json.loads(out.stdout)["uuid"]
        stored = json.loads(geyser.config.client().get(uuid) or "null")
        assert (stored["jobType"], stored["fieldOne"], stored["status"]) == ("my_job_type", "report.csv", "queued")
        out = subprocess.run(["curl", "-s", "-d", '{"fieldOne": 5}', f"http://127.0.0.1:{port}/my_job"],
                             capture_output=True, text=True, timeout=10)
        assert "fieldOne" in json.loads(out.stdout)["errors"]
        out = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/api/jobs/{uuid}"],
                             capture_output=True, text=True, timeout=10)
        assert json.loads(out.stdout)["status"] == "queued"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)

