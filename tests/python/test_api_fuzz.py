"""Fuzzing the HTTP API: schemathesis generates requests from the server's own
``GET /openapi.json`` (valid and invalid bodies, odd path parameters) against a real
``python -m geyser.server`` and a real worker (beanstalkd queue, SQLite store), then
hand-written hostile requests go over a raw socket. Every answer must be under 500 and JSON
(except the metrics text and event streams), nothing may be stored or queued for a request
that was refused, and the worker must still be alive and run a job at the end.

The tests share one server and run in file order; the last one checks the totals.
Time-boxed: ``MAX_EXAMPLES`` per operation (``GEYSER_FUZZ_EXAMPLES`` overrides it).
Touches only the beanstalkd, SQLite file and processes it starts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from marshmallow import fields, validate
from schemathesis import GenerationMode

import geyser
import jobs_for_tests  # noqa: F401  (registers the job types this process describes)
from conftest import Beanstalkd, free_port, wait_for, worker_env
from geyser.openapi import describe, schema_body
from geyser.web import DEFAULT_MAX_BODY_SIZE

# Its module-scoped fixture is set up once: under pytest-xdist (scripts/test.sh) the module's
# tests stay on one worker.
pytestmark = pytest.mark.xdist_group("test_api_fuzz")

MAX_EXAMPLES = int(os.environ.get("GEYSER_FUZZ_EXAMPLES", "100"))
#: Answers that are not JSON by design: the Prometheus text and server-sent events.
NOT_JSON = ("/metrics", "/events")


@dataclass
class Live:
    """The server and worker under test, and what the fuzzing saw."""

    base: str
    port: int
    server: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    log: Path
    accepted: set[str] = field(default_factory=set)
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def check(self, what: str, path: str, status: int, content_type: str, body: bytes) -> Any:
        """Checks one answer; returns its JSON (None for the text ones)."""
        self.requests += 1
        assert status < 500, f"{what}: {status} {body[:300]!r}"
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if any(path.split("?")[0].endswith(end) for end in NOT_JSON) and status == 200:
            return None
        assert content_type.startswith("application/json"), f"{what}: {status} {content_type} {body[:300]!r}"
        answer = json.loads(body)
        if status == 201:
            self.accepted.add(answer["uuid"])
        elif status >= 400:
            assert isinstance(answer.get("error"), str) and answer["error"], f"{what}: {answer}"
        return answer


def stored_uuids() -> set[str]:
    """Every job document in the store."""
    uuids: set[str] = set()
    after = None
    while page := geyser.config.client().list(after=after, limit=500):
        uuids.update(json.loads(doc)["uuid"] for doc in page)
        after = json.loads(page[-1])["uuid"]
    return uuids


def echo_puts() -> int:
    """Jobs ever put on the echo queue (beanstalkd's cumulative count: the worker taking
    them does not change it, and echo jobs are never put again)."""
    return int(geyser.config.client().stats_tube("echo")["total_jobs"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("fuzz")
    queue = Beanstalkd()
    urls = {"GEYSER_QUEUE_URL": queue.url, "GEYSER_STORE_URL": f"sqlite://{tmp / 'geyser.db'}"}
    env = worker_env(urls)
    port = free_port()
    log = tmp / "processes.log"
    with pytest.MonkeyPatch.context() as mp, open(log, "wb") as out:
        for k, v in urls.items():
            mp.setenv(k, v)
        geyser.configure()
        server = subprocess.Popen([sys.executable, "-m", "geyser.server", "--port", str(port), "-m", "jobs_for_tests"],
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
        # Not the slow and step queues: a generated `seconds` or `steps` could keep it busy for good.
        worker = subprocess.Popen([sys.executable, "-m", "geyser.worker", "-m", "jobs_for_tests", "-c", "1",
                                   "-q", "echo,fail"], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(f"the server on port {port}", lambda: server.poll() is None and _connects(port))
            yield Live(f"http://127.0.0.1:{port}", port, server, worker, log)
        finally:
            for proc in (server, worker):
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(30)
            geyser.configure()
            queue.stop()


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def raw(live: Live, method: str, path: bytes, body: bytes = b"", headers: bytes = b"") -> tuple[int, str, bytes]:
    """One request sent byte for byte as given (no client normalises the path or the body);
    returns status, Content-Type and body."""
    head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n" % (
        method.encode(), path, len(body), headers)
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as s:
        # A body over the server's limit is refused from its Content-Length alone, and the
        # connection closed: sending it would only meet a reset.
        s.sendall(head if len(body) > DEFAULT_MAX_BODY_SIZE else head + body)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    head_bytes, _, content = answer.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    content_type = next((v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
                         if k.lower() == "content-type"), "")
    return status, content_type, content


def test_the_description_follows_each_job_schema() -> None:
    class Inner(geyser.BaseJobSchema):
        name = fields.String(required=True, validate=validate.Length(min=1, max=5))

    class Outer(geyser.BaseJobSchema):
        level = fields.Integer(validate=validate.Range(min=0, max=9, max_inclusive=False))
        color = fields.String(validate=validate.OneOf(["red", "blue"]), allow_none=True)
        tags = fields.List(fields.String(), required=True)
        inner = fields.Nested(Inner, many=True)
        ratio = fields.Float(data_key="Ratio")
        stamp = fields.DateTime(dump_only=True)

    body = schema_body(Outer())
    assert body["required"] == ["tags"] and body["additionalProperties"] is False
    assert body["properties"]["level"] == {"type": "integer", "minimum": 0, "maximum": 9, "exclusiveMaximum": True}
    assert body["properties"]["color"] == {"type": "string", "enum": ["red", "blue"], "nullable": True}
    assert body["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    inner = body["properties"]["inner"]["items"]
    assert inner["properties"]["name"] == {"type": "string", "minLength": 1, "maxLength": 5}
    assert "Ratio" in body["properties"] and "stamp" not in body["properties"]
    described = describe("/api", token=True)
    assert described["paths"]["/api/jobs/echo"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "required"] == ["message"]
    assert described["security"] == [{"bearer": []}]
    assert set(described["paths"]) >= {"/api/jobs/{uuid}", "/api/jobs/{uuid}/retry", "/api/jobs/{uuid}/events",
                                       "/api/healthz", "/api/metrics", "/api/openapi.json"}


# -- schemathesis, from the server's own OpenAPI description -----------------------------------


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_generated_requests_get_json_answers_under_500(live: Live, mode: GenerationMode) -> None:
    """Every operation of the description, ``MAX_EXAMPLES`` requests each: bodies and path
    parameters that fit the schemas (valid) or break them (invalid)."""
    described = schemathesis.openapi.from_url(f"{live.base}/openapi.json")
    operations = [result.ok() for result in described.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    tried: dict[str, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            tried[operation.label] = tried.get(operation.label, 0) + 1
            response = case.call(base_url=live.base, timeout=30)
            content_type = response.headers.get("Content-Type") or response.headers.get("content-type") or [""]
            live.check(f"{case.method} {case.formatted_path}", case.formatted_path, response.status_code,
                       content_type[0] if isinstance(content_type, list) else content_type, response.content)

        try:
            call()
        except Unsatisfiable:  # nothing to break: no body, and path parameters that take any text
            assert mode is GenerationMode.NEGATIVE and not len(operation.body), operation.label
            continue
        tried[operation.label] = tried.get(operation.label, 0)
    print(f"\n{mode.value}: {tried}")


# -- hand-written hostile requests --------------------------------------------------------------

DEEP = 100_000
HOSTILE_BODIES: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b" \r\n\t ",
    "truncated object": b'{"message": "x"',
    "a lone brace": b"}",
    "trailing garbage": b'{"message": "x"} {}',
    "not JSON": b"message=x",
    "deeply nested arrays": b"[" * DEEP + b"]" * DEEP,
    "deeply nested field": b'{"message": "x", "count": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
    "unclosed nesting": b"{" * DEEP,
    "a 5000-digit integer": b'{"message": "x", "count": ' + b"9" * 5000 + b"}",
    "an integer past 64 bits": b'{"message": "x", "count": 18446744073709551616}',
    "a float past 64 bits": b'{"message": "x", "count": 1e400}',
    "NaN": b'{"message": "x", "count": NaN}',
    "Infinity": b'{"message": "x", "count": -Infinity}',
    "invalid UTF-8": b'{"message": "\xff\xfe"}',
    "UTF-8 of a surrogate": b'{"message": "\xed\xa0\x80"}',
    "an escaped lone surrogate": b'{"message": "\\ud800"}',
    "a lone surrogate in a key": b'{"message": "x", "\\udfff": 1}',
    "overlong UTF-8": b'{"message": "\xc0\xaf"}',
    "UTF-16": '{"message": "x"}'.encode("utf-16"),
    "a number, not an object": b"42",
    "an array, not an object": b'[{"message": "x"}]',
    "a string, not an object": b'"{\\"message\\": \\"x\\"}"',
    "null": b"null",
    "message of the wrong type": b'{"message": 5}',
    "message null": b'{"message": null}',
    "message an object": b'{"message": {"$ne": 1}}',
    "count a list": b'{"message": "x", "count": [1]}',
    "count an object": b'{"message": "x", "count": {"value": 1}}',
    "count a bool": b'{"message": "x", "count": true}',
    "an unknown field": b'{"message": "x", "bogus": 1}',
    "uuid set by the client": b'{"message": "x", "uuid": "00000000-0000-4000-8000-000000000000"}',
    "status set by the client": b'{"message": "x", "status": "succeeded"}',
    "jobType set by the client": b'{"message": "x", "jobType": "fail"}',
    "queueKwargs set by the client": b'{"message": "x", "queueKwargs": {"queue": "slow", "priority": 0, "ttr": 1}}',
    "version and fence set by the client": b'{"message": "x", "version": 7, "fence": "mine"}',
    "a duplicate key": b'{"message": "x", "message": 5}',
    "a 2 MB body": b'{"message": "' + b"x" * (2 << 20) + b'"}',
}


@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
def test_a_hostile_body_is_refused_with_json_and_stores_nothing(live: Live, name: str) -> None:
    before, puts = stored_uuids(), echo_puts()
    status, content_type, body = raw(live, "POST", b"/jobs/echo", HOSTILE_BODIES[name],
                                     b"Content-Type: application/json\r\n")
    answer = live.check(f"POST /jobs/echo with {name}", "/jobs/echo", status, content_type, body)
    assert status in (400, 413), (name, status, answer)
    assert stored_uuids() == before and echo_puts() == puts, name


HOSTILE_PATHS: list[tuple[str, bytes]] = [
    ("POST", b"/jobs/../healthz"),
    ("POST", b"/jobs/..%2fhealthz"),
    ("POST", b"/jobs/%2e%2e"),
    ("POST", b"/jobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
    ("POST", b"/jobs/..%5c..%5cwindows"),
    ("POST", b"/jobs/echo%00"),
    ("POST", b"/jobs/%00"),
    ("POST", b"/jobs/ech%c0%afo"),
    ("POST", b"/jobs/%ff%fe"),
    ("POST", b"/jobs/" + b"e" * 10_000),
    ("POST", b"/jobs/echo/"),
    ("POST", b"/jobs//echo"),
    ("POST", b"/jobs/base_job"),
    ("GET", b"/jobs/..%2f..%2fetc%2fpasswd"),
    ("GET", b"/jobs/%2e%2e"),
    ("GET", b"/jobs/%00"),
    ("GET", b"/jobs/%ff"),
    ("GET", b"/jobs/%ed%a0%80"),
    ("GET", b"/jobs/" + b"0" * 10_000),
    ("DELETE", b"/jobs/..%2f..%2fjobs%2fecho"),
    ("DELETE", b"/jobs/%00"),
    ("POST", b"/jobs/%2e%2e/retry"),
    ("POST", b"/jobs/%00/retry"),
    ("GET", b"/jobs/%2e%2e/events"),
    ("GET", b"/jobs/%00/events"),
    ("GET", b"/../../etc/passwd"),
    ("GET", b"/%2e%2e/%2e%2e/etc/passwd"),
    ("PUT", b"/jobs/echo"),
    ("PATCH", b"/jobs/echo"),
]


@pytest.mark.parametrize(("method", "path"), HOSTILE_PATHS, ids=[f"{m} {p[:40]!r}" for m, p in HOSTILE_PATHS])
def test_a_hostile_path_is_refused_with_json_and_stores_nothing(live: Live, method: str, path: bytes) -> None:
    before, puts = stored_uuids(), echo_puts()
    body = b'{"message": "x"}' if method == "POST" else b""
    status, content_type, answer = raw(live, method, path, body)
    live.check(f"{method} {path[:60]!r}", path.decode("latin-1"), status, content_type, answer)
    assert 400 <= status < 500, (method, path[:60], status, answer[:300])
    assert stored_uuids() == before and echo_puts() == puts


@pytest.mark.parametrize("path", [b"/jobs/echo?jobType=fail", b"/jobs/ech%6f", b"/jobs/echo?uuid=x&status=failed"])
def test_a_query_string_or_an_escaped_letter_still_makes_an_echo_job(live: Live, path: bytes) -> None:
    status, content_type, body = raw(live, "POST", path, b'{"message": "x"}')
    uuid = live.check(f"POST {path!r}", path.decode(), status, content_type, body)["uuid"]
    stored = json.loads(geyser.config.client().get(uuid) or "null")
    assert (stored["jobType"], stored["message"]) == ("echo", "x")
    assert "status" not in body.decode() and stored["uuid"] == uuid


MALFORMED_HTTP: dict[str, bytes] = {
    "a negative Content-Length": b"Content-Length: -1\r\n\r\n",
    "a Content-Length that is not a number": b"Content-Length: abc\r\n\r\n",
    "two Content-Lengths": b"Content-Length: 3\r\nContent-Length: 5\r\n\r\n{}abc",
    "chunked and a Content-Length": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "a chunk size that is not hex": b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "a 4 GB chunk": b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n{}\r\n0\r\n\r\n",
    "a 100 kB header": b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED_HTTP))
def test_malformed_http_is_refused_and_stores_nothing(live: Live, name: str) -> None:
    """Requests Tornado cannot frame never reach a handler: it answers a bare 400 (no JSON
    body: docs/web.md says so) or, for a head over its 64 kB limit, closes the connection."""
    before, puts = stored_uuids(), echo_puts()
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as s:
        s.sendall(b"POST /jobs/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n" + MALFORMED_HTTP[name])
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer in (b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"), answer[:300]
    assert stored_uuids() == before and echo_puts() == puts


def test_reads_cancels_and_retries_of_accepted_jobs_answer_json_under_500(live: Live) -> None:
    """What the fuzzing enqueued, read, cancelled, retried and followed by its event stream."""
    uuids = sorted(live.accepted)[:40]
    assert uuids, "the fuzzing enqueued nothing"
    for uuid in uuids:
        for method, path in [("GET", f"/jobs/{uuid}"), ("DELETE", f"/jobs/{uuid}"), ("POST", f"/jobs/{uuid}/retry"),
                             ("GET", f"/jobs/{uuid}"), ("DELETE", f"/jobs/{uuid}")]:
            status, content_type, body = raw(live, method, path.encode())
            answer = live.check(f"{method} {path}", path, status, content_type, body)
            assert status in (200, 202, 409), (method, path, answer)
        # Cancelled now (or finished): its event stream sends the document and ends.
        status, content_type, body = raw(live, "GET", f"/jobs/{uuid}/events".encode())
        assert status == 200 and content_type.startswith("text/event-stream"), (status, body[:300])
        events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]
        assert events and events[-1]["uuid"] == uuid


# -- last: the totals ---------------------------------------------------------------------------


def test_only_accepted_jobs_were_stored_and_the_worker_still_runs_jobs(live: Live) -> None:
    status, content_type, body = raw(live, "POST", b"/jobs/echo", b'{"message": "control"}')
    control = live.check("the control job", "/jobs/echo", status, content_type, body)["uuid"]
    wait_for("the control job to succeed",
             lambda: json.loads(geyser.config.client().get(control) or "{}").get("status") == "succeeded", timeout=60)
    assert live.worker.poll() is None and live.server.poll() is None, live.log.read_text()[-3000:]
    assert stored_uuids() == live.accepted
    print(f"\n{live.requests} requests; answers by status: {dict(sorted(live.statuses.items()))}; "
          f"{len(live.accepted)} accepted jobs stored")
    log = live.log.read_text()
    for sign in ("Uncaught exception", "exited with", "did not finish"):
        assert sign not in log, log[-3000:]
