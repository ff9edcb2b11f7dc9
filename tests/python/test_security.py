"""Security defaults, on real ``python -m geyser.server`` and worker processes: the server
listens on loopback only unless told otherwise; with ``GEYSER_API_TOKEN`` set every route
of ``make_app()`` (enumerated from its router, so routes added later are covered) needs the
token, only the dashboard's login page and its static assets being open; and no password
of a store URL reaches a log line, an error, an HTTP answer or a metric.
Touches only the processes, beanstalkd and PostgreSQL schema it starts or makes.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.routing
import tornado.web

import geyser
import geyser.web
from conftest import POSTGRES_URL, REDIS_URL, Beanstalkd, NetworkStore, free_port, wait_for, worker_env

TOKEN = "t0ken-for-the-security-test"
PASSWORD = "s3cret"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Server:
    """``python -m geyser.server ARGS`` on a free port, its output in a file."""

    def __init__(self, tmp: Path, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.out = tmp / f"server-{self.port}.log"
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "geyser.server", "--port", str(self.port),
                                          "-m", "jobs_for_tests", *args],
                                         env=worker_env(env), stdout=out, stderr=subprocess.STDOUT)

    def wait_listening(self) -> None:
        wait_for(f"the server on port {self.port}",
                 lambda: self.proc.poll() is None and _connects("127.0.0.1", self.port) or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.log()

    def log(self) -> str:
        return self.out.read_text(errors="replace")

    def fetch(self, method: str, path: str, body: bytes | None = None, token: str | None = None,
              ) -> tuple[int, dict[str, str], bytes]:
        """One request, redirects not followed; status, headers and body."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if body is None and method in ("POST", "PUT", "PATCH"):
            request.data = b"{}"
        try:
            with _NO_REDIRECTS.open(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        return self.log()


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_KeepRedirects)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers the test starts; each is stopped at the end."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


# -- the server listens on loopback by default --------------------------------------------------


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine outside 127.0.0.0/8, or None (a UDP connect picks the
    address the route would use; it sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _listeners(port: int) -> list[str]:
    """The local addresses of the sockets listening on ``port`` (/proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def test_the_server_listens_on_loopback_only_by_default(servers: list[Server], tmp_path: Path, embedded: str) -> None:
    server = Server(tmp_path, {})
    servers.append(server)
    server.wait_listening()
    # 127.0.0.1 in /proc/net/tcp's little-endian hex; nothing on IPv6.
    assert _listeners(server.port) == ["0100007F"], _listeners(server.port)
    other = _non_loopback_address()
    if other is not None:
        assert not _connects(other, server.port), f"the server answers on {other}"
    assert f"http://127.0.0.1:{server.port}" in server.log()
    # Told otherwise, it listens where it is told.
    wide = Server(tmp_path, {}, "--address", "0.0.0.0")
    servers.append(wide)
    wide.wait_listening()
    assert _listeners(wide.port) == ["00000000"]
    if other is not None:
        assert _connects(other, wide.port)


def test_a_workers_metrics_port_listens_on_loopback_only_by_default(embedded: str) -> None:
    port = free_port()
    worker = subprocess.Popen([sys.executable, "-m", "geyser.worker", "-c", "1", "-m", "jobs_for_tests",
                               "--metrics-port", str(port)], env=worker_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(f"the metrics port {port}", lambda: _listeners(port) or worker.poll() is not None)
        assert _listeners(port) == ["0100007F"]
        other = _non_loopback_address()
        if other is not None:
            assert not _connects(other, port)
    finally:
        worker.terminate()
        worker.wait(30)


# -- with a token, every route needs it ---------------------------------------------------------


def every_route(router: tornado.routing.RuleRouter) -> Iterator[tuple[str, type]]:
    """(path pattern, handler class) of every rule under ``router``, nested routers included."""
    for rule in router.rules:
        if isinstance(rule.target, tornado.routing.RuleRouter):
            yield from every_route(rule.target)
        elif isinstance(rule.matcher, tornado.routing.PathMatches):
            yield rule.matcher.regex.pattern, rule.target


def sample_path(pattern: str, uuid: str) -> str:
    """A path the pattern matches, each group filled with ``uuid`` (or a static file name)."""
    static = "dashboard.css" if "static" in pattern else uuid
    path = re.sub(r"\([^)]*\)", static, pattern.rstrip("$")).replace("\\.", ".")
    assert re.fullmatch(pattern, path), (pattern, path)
    return path


#: What may answer without the token: the dashboard's login form and the assets it shows.
OPEN = re.compile(r"/dashboard/(login|static/.*)")


def test_with_a_token_every_route_needs_it(servers: list[Server], tmp_path: Path, embedded: str) -> None:
    server = Server(tmp_path, {"GEYSER_API_TOKEN": TOKEN})
    servers.append(server)
    server.wait_listening()
    status, _, body = server.fetch("POST", "/jobs/echo", b'{"message": "hi"}', token=TOKEN)
    assert status == 201, body
    uuid = json.loads(body)["uuid"]
    routes = list(every_route(geyser.web.make_app(token=TOKEN).default_router))
    assert len(routes) >= 10, routes
    paths = [sample_path(pattern, uuid) for pattern, _ in routes] + ["/no/such/route"]
    open_answers, checked = [], 0
    for path in paths:
        for method in METHODS:
            for token in (None, "wrong-" + TOKEN):
                status, headers, body = server.fetch(method, path, token=token)
                checked += 1
                assert status < 500, (method, path, status, body[:300])
                to_login = 300 <= status < 400 and OPEN.fullmatch(headers.get("Location", "").split("?")[0])
                to_route = 300 <= status < 400 and headers.get("Location", "").startswith("/")
                if status in (401, 403, 405) or to_login:
                    continue
                if to_route:  # a bare redirect (/ → /dashboard/): where it leads must need the token
                    status, headers, _ = server.fetch("GET", headers["Location"], token=token)
                    if status in (401, 403) or (300 <= status < 400 and "/login" in headers.get("Location", "")):
                        continue
                if not OPEN.fullmatch(path):
                    open_answers.append((method, path, status, body[:200]))
                assert not body or TOKEN.encode() not in body
    assert open_answers == [], open_answers
    # And the token opens them: the API answers it, and the dashboard takes it at the login form.
    for path in ("/healthz", "/metrics", "/openapi.json", f"/jobs/{uuid}", f"/jobs/{uuid}/events"):
        status, _, _ = server.fetch("HEAD" if path.endswith("/events") else "GET", path, token=TOKEN)
        assert status not in (401, 403), path
    print(f"\n{len(routes)} routes, {checked} requests without or with a wrong token")


# -- no password in logs, errors, HTTP answers or metrics ---------------------------------------


def with_password(url: str) -> str:
    """``url`` with the user ``postgres`` (PostgreSQL) or none (Redis) and the password."""
    scheme, _, rest = url.partition("://")
    host = rest.split("@", 1)[-1]
    user = "postgres" if scheme.startswith("postgres") else ""
    return f"{scheme}://{user}:{PASSWORD}@{host}"


def assert_no_password(where: str, text: str | bytes) -> None:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    assert PASSWORD not in text, f"{where} shows the password:\n{text[-3000:]}"


def test_a_working_store_url_with_a_password_never_shows_it(servers: list[Server], tmp_path: Path) -> None:
    """PostgreSQL with trust auth takes any password: the server and a worker run jobs on it
    at DEBUG level, and every log line, answer and metric is checked."""
    queue = Beanstalkd()
    store = NetworkStore("postgresql")
    try:
        env = {"GEYSER_QUEUE_URL": queue.url, "GEYSER_STORE_URL": with_password(store.url),
               "GEYSER_LOG_LEVEL": "DEBUG"}
        server = Server(tmp_path, env, "--log-level", "DEBUG")
        servers.append(server)
        server.wait_listening()
        answers = []
        requests = [("POST", "/jobs/echo", b'{"message": "hi"}'), ("POST", "/jobs/fail", b'{"mode": "x"}'),
                    ("POST", "/jobs/echo", b"{bad"), ("GET", "/jobs/nope", None), ("POST", "/jobs/nope/retry", None),
                    ("DELETE", "/jobs/nope", None), ("GET", "/healthz", None), ("GET", "/metrics", None),
                    ("GET", "/openapi.json", None), ("GET", "/dashboard/", None), ("GET", "/dashboard/jobs", None)]
        for method, path, body in requests:
            status, _, answer = server.fetch(method, path, body)
            assert status < 500, (path, answer[:300])
            answers.append(answer)
            assert_no_password(f"{method} {path}", answer)
        uuids = [json.loads(a)["uuid"] for a in answers[:2]]
        worker = subprocess.run([sys.executable, "-m", "geyser.worker", "--burst", "-c", "1", "-m", "jobs_for_tests",
                                 "-q", "echo,fail", "--log-level", "DEBUG"],
                                env=worker_env(env), capture_output=True, text=True, timeout=120)
        assert worker.returncode == 0, worker.stdout + worker.stderr
        assert_no_password("the worker's output", worker.stdout + worker.stderr)
        for uuid in uuids:
            status, _, answer = server.fetch("GET", f"/jobs/{uuid}")
            assert status == 200 and json.loads(answer)["status"] in ("succeeded", "failed"), answer
            assert_no_password("a job's document", answer)
        _, _, metrics = server.fetch("GET", "/metrics")
        assert_no_password("/metrics", metrics)
        assert_no_password("the server's log", server.stop())
    finally:
        queue.stop()
        store.drop()


def failing_urls() -> list[tuple[str, dict[str, str]]]:
    closed = free_port()
    return [
        ("PostgreSQL on a closed port",
         {"GEYSER_STORE_URL": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{closed}/test"}),
        ("Redis refusing AUTH", {"GEYSER_STORE_URL": with_password(REDIS_URL)}),
        ("Redis on a closed port", {"GEYSER_STORE_URL": f"redis://:{PASSWORD}@127.0.0.1:{closed}/0"}),
        ("PostgreSQL with a bad option", {"GEYSER_STORE_URL": f"{with_password(POSTGRES_URL)}?nonsense=1"}),
        ("a queue URL with a password", {"GEYSER_QUEUE_URL": f"beanstalkd://user:{PASSWORD}@127.0.0.1:{closed}"}),
    ]


@pytest.mark.parametrize(("name", "urls"), failing_urls(), ids=[name for name, _ in failing_urls()])
def test_a_failing_url_with_a_password_never_shows_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      name: str, urls: dict[str, str]) -> None:
    """Each process, and the library in this one, fails with an error that names the problem
    but not the password."""
    env = {"GEYSER_QUEUE_URL": f"sqlite://{tmp_path / 'q.db'}", "GEYSER_STORE_URL": f"sqlite://{tmp_path / 's.db'}"}
    env.update(urls)
    server = subprocess.run([sys.executable, "-m", "geyser.server", "--port", str(free_port()), "-m", "jobs_for_tests",
                             "--log-level", "DEBUG"], env=worker_env(env), capture_output=True, text=True, timeout=60)
    assert server.returncode != 0, server.stdout + server.stderr
    assert_no_password(f"the server's output ({name})", server.stdout + server.stderr)
    worker = subprocess.run([sys.executable, "-m", "geyser.worker", "--burst", "-c", "1", "-m", "jobs_for_tests",
                             "--log-level", "DEBUG"], env=worker_env(env), capture_output=True, text=True, timeout=60)
    assert worker.returncode != 0, worker.stdout + worker.stderr
    assert_no_password(f"the worker's output ({name})", worker.stdout + worker.stderr)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    geyser.configure()
    try:
        with pytest.raises(geyser.GeyserError) as raised:
            geyser.config.client().get("00000000-0000-4000-8000-000000000000")
        assert_no_password(f"the library's error ({name})", f"{raised.value!r} {raised.value}")
    finally:
        geyser.configure()
