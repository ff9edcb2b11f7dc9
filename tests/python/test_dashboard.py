"""geyser.dashboard over real HTTP against a real worker and store (the embedded default
and beanstalkd): the pages show real jobs, the jobs list's filters and keyset pages, retry /
cancel / kick, XSRF and cross-site refusals, the token login, and escaped job text."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.parse
import zipfile
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse

import dashboard_jobs  # noqa: F401  (registers the gated job types)
import geyser
import geyser.web
import jobs_for_tests  # noqa: F401  (registers the job types)
from conftest import free_port, job, run_worker, start_worker, wait_for
from geyser.dashboard import ASSETS, SESSION_COOKIE
from test_web import Api

TOKEN = "dashboard-s3cret"
HOSTILE = "<script>alert('owned')</script>"


class Browser:
    """A client of one dashboard that keeps its cookies and never follows redirects."""

    def __init__(self, api: Api, token: str) -> None:
        self.api, self.token = api, token
        self.cookies: dict[str, str] = {}

    async def get(self, path: str, **kw: Any) -> HTTPResponse:
        return await self.fetch("GET", path, **kw)

    async def post(self, path: str, form: dict[str, str] | None = None, *, xsrf: bool = True,
                   headers: dict[str, str] | None = None) -> HTTPResponse:
        """POST a form; with ``xsrf`` the ``_xsrf`` field repeats the cookie, as the pages' forms do."""
        if xsrf and "_xsrf" not in self.cookies:
            await self.get("/dashboard/login" if self.token else "/dashboard/")
        fields = {**({"_xsrf": self.cookies["_xsrf"]} if xsrf else {}), **(form or {})}
        return await self.fetch("POST", path, body=urllib.parse.urlencode(fields), headers=headers)

    async def fetch(self, method: str, path: str, body: str | None = None,
                    headers: dict[str, str] | None = None) -> HTTPResponse:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self.api.fetch(method, path, body, headers=sent, follow_redirects=False)
        for line in response.headers.get_list("Set-Cookie"):
            for name, morsel in SimpleCookie(line).items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return response


def text(response: HTTPResponse) -> str:
    assert response.headers["Content-Type"].startswith("text/html"), response.headers
    return response.body.decode()


def listed(page: str) -> list[str]:
    """The uuids of a jobs page's rows, in order."""
    return re.findall(r'<tr data-uuid="([0-9a-f-]+)"', page)


def next_page(page: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" id="next-page"', page)
    return None if found is None else found.group(1).replace("&amp;", "&")


def count_in_row(page: str, queue: str, state: str) -> int:
    row = re.search(rf'<tr data-queue="{queue}">(.*?)</tr>', page, re.S)
    assert row is not None, f"no row for queue {queue}"
    cell = re.search(rf'data-count="{state}">(\d+)<', row.group(1))
    assert cell is not None, row.group(1)
    return int(cell.group(1))


def enqueue(job_type: str, **values: Any) -> str:
    return geyser.make_base_job(values, job_type).enqueue()


def failed_job(**values: Any) -> str:
    """A FailJob that crashed on each of its attempts (a worker ran it)."""
    uuid = enqueue("fail", mode="crash", **values)
    assert run_worker().returncode == 0
    assert job(uuid).status == "failed"
    return uuid


async def open_dashboard(token: str) -> Browser:
    return Browser(Api(geyser.web.make_app(token=token, watch_interval=0.05)), token)


@pytest.fixture
async def browser(backend: dict[str, str]) -> AsyncIterator[Browser]:
    b = await open_dashboard("")
    yield b
    await b.api.close()


@pytest.fixture
async def guarded(embedded: str) -> AsyncIterator[Browser]:
    b = await open_dashboard(TOKEN)
    yield b
    await b.api.close()


# -- pages ----------------------------------------------------------------------------------


async def test_pages_show_the_queues_and_real_jobs(browser: Browser) -> None:
    done = enqueue("echo", message="hello dashboard")
    assert run_worker().returncode == 0
    failed = failed_job()
    waiting = enqueue("echo", message="still waiting")

    root = await browser.get("/")
    assert root.code == 302 and root.headers["Location"] == "/dashboard/"
    overview = text(await browser.get("/dashboard/"))
    assert count_in_row(overview, "echo", "ready") == 1
    assert count_in_row(overview, "fail", "buried") == 1
    assert count_in_row(overview, "steps", "ready") == 0
    assert "paused" not in overview
    geyser.pause_queue("echo")  # it holds a job: beanstalkd knows only such queues
    paused = re.findall(r'<tr data-queue="([^"]+)">\s*<td>[^\n]*paused</span>', text(await browser.get("/dashboard/")))
    assert paused == ["echo"]
    geyser.resume_queue("echo")
    counts = json.loads((await browser.get("/dashboard/queues.json")).body)
    fail = next(q for q in counts["queues"] if q["queue"] == "fail")
    assert (fail["ready"], fail["delayed"], fail["reserved"], fail["buried"]) == (0, 0, 0, 1)

    jobs = text(await browser.get("/dashboard/jobs"))
    assert set(listed(jobs)) == {done, failed, waiting}
    assert re.search(rf'data-uuid="{done}" data-status="succeeded"', jobs)
    assert re.search(rf'data-uuid="{failed}" data-status="failed"', jobs)
    assert "attempt 1: hello dashboard" in jobs

    page = text(await browser.get(f"/dashboard/jobs/{done}"))
    assert "attempt 1: hello dashboard" in page and "HELLO DASHBOARD" in page
    assert 'id="status" data-status="succeeded"' in page and 'id="retry"' not in page
    page = text(await browser.get(f"/dashboard/jobs/{failed}"))
    assert 'id="traceback"' in page and "ZeroDivisionError: crashed on purpose" in page
    assert 'id="retry"' in page and 'id="cancel"' not in page and 'id="kick"' in page
    page = text(await browser.get(f"/dashboard/jobs/{waiting}"))
    assert 'id="cancel"' in page and 'id="retry"' not in page
    assert f'data-events="/dashboard/jobs/{waiting}/events"' in page

    missing = await browser.get("/dashboard/jobs/00000000-0000-0000-0000-000000000000")
    assert missing.code == 404 and "not found" in text(missing)


async def test_the_jobs_list_filters_by_status_type_and_queue(browser: Browser) -> None:
    failed = [failed_job() for _ in range(2)]
    succeeded = enqueue("echo", message="a")
    assert run_worker().returncode == 0
    queued = [enqueue("echo", message="b"), enqueue("step")]

    async def uuids(query: str) -> set[str]:
        response = await browser.get(f"/dashboard/jobs?{query}")
        assert response.code == 200, response.body
        return set(listed(text(response)))

    assert await uuids("status=failed") == set(failed)
    assert await uuids("type=echo") == {succeeded, queued[0]}
    assert await uuids("queue=fail") == set(failed)
    assert await uuids("queue=steps&status=queued") == {queued[1]}
    assert await uuids("status=queued&type=echo") == {queued[0]}
    assert await uuids("queue=slow") == set()
    assert await uuids("queue=no-such-queue") == set()
    assert "No registered job type uses queue" in text(await browser.get("/dashboard/jobs?queue=no-such-queue"))
    bad = await browser.get("/dashboard/jobs?status=lost")
    assert bad.code == 400 and "status must be one of" in text(bad)
    assert (await browser.get("/dashboard/jobs?limit=0")).code == 400
    assert (await browser.get("/dashboard/jobs?order=random")).code == 400


async def test_keyset_pages_cover_every_job_once_newest_or_oldest_first(browser: Browser) -> None:
    # Two job types on one queue: the queue filter merges two indexed range reads per page.
    gate = "/nonexistent/gate"
    made = sorted([enqueue("gated", gate=gate) for _ in range(4)] +
                  [enqueue("gated-twin", gate=gate) for _ in range(3)])
    for query in ("queue=gated&limit=2", "limit=3", "status=queued&queue=gated&limit=1",
                  "queue=gated&order=oldest&limit=2", "order=oldest&limit=3"):
        seen: list[str] = []
        url: str | None = f"/dashboard/jobs?{query}"
        while url is not None:
            page = text(await browser.get(url))
            rows = listed(page)
            assert 0 < len(rows) <= int(query.rsplit("=", 1)[1]), (query, rows)
            seen += rows
            url = next_page(page)
        assert seen == (made if "order=oldest" in query else made[::-1]), query


async def test_the_overview_lists_the_running_workers_and_their_jobs(browser: Browser, tmp_path: Path) -> None:
    assert "No worker is running" in text(await browser.get("/dashboard/"))
    gate = tmp_path / "gate"
    uuid = enqueue("gated", gate=str(gate), steps=1)
    worker = start_worker("-m", "dashboard_jobs", "-c", "1")
    try:
        record = wait_for("the worker to list itself with its job", lambda: next(
            (w for w in geyser.config.client().workers() if w.get("job") == uuid), None))
        page = text(await browser.get("/dashboard/"))
        row = re.search(rf'<tr data-worker="{re.escape(record["id"])}">(.*?)</tr>', page, re.S)
        assert row is not None, page
        assert record["host"] in row.group(1) and f">{record['pid']}<" in row.group(1)
        assert "gated" in row.group(1) and f'href="/dashboard/jobs/{uuid}"' in row.group(1)
        Path(f"{gate}.1").touch()
        wait_for("the gated job to succeed", lambda: job(uuid).status == "succeeded")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    assert worker.returncode == 0
    assert "No worker is running" in text(await browser.get("/dashboard/"))


# -- actions --------------------------------------------------------------------------------


async def test_cancel_retry_and_kick_change_the_document(browser: Browser) -> None:
    uuid = enqueue("echo", message="x")
    response = await browser.post(f"/dashboard/jobs/{uuid}/cancel")
    assert response.code == 303 and response.headers["Location"] == f"/dashboard/jobs/{uuid}"
    assert job(uuid).status == "cancelled"
    assert (await browser.post(f"/dashboard/jobs/{uuid}/retry")).code == 303
    assert job(uuid).status == "queued"
    again = await browser.post(f"/dashboard/jobs/{uuid}/retry")
    assert again.code == 409 and "retry needs a job that is failed or cancelled" in text(again)
    assert job(uuid).status == "queued"

    failed = failed_job(succeed_on=4)
    kicked = await browser.post("/dashboard/queues/fail/kick", {"next": f"/dashboard/jobs/{failed}"})
    assert kicked.code == 303 and kicked.headers["Location"] == f"/dashboard/jobs/{failed}"
    stats = await geyser.config.client().stats_tube_async("fail")
    assert (stats["ready"], stats["buried"]) == (1, 0)
    assert run_worker().returncode == 0
    assert job(failed).status == "succeeded"

    elsewhere = await browser.post("/dashboard/queues/fail/kick", {"next": "//evil.example/x"})
    assert elsewhere.code == 303 and elsewhere.headers["Location"] == "/dashboard/"
    assert (await browser.post("/dashboard/queues/nope/kick")).code == 404
    assert (await browser.post("/dashboard/jobs/00000000-0000-0000-0000-000000000000/cancel")).code == 404


async def test_posts_without_the_xsrf_token_or_from_another_site_are_refused(browser: Browser) -> None:
    uuid = enqueue("echo", message="x")
    assert geyser.flush(30) == 0  # with a queue server, the relay's queue-id note is a write too
    before = job(uuid).version
    await browser.get("/dashboard/")  # a page sets the _xsrf cookie
    refusals = [
        await browser.post(f"/dashboard/jobs/{uuid}/cancel", xsrf=False),
        await browser.post(f"/dashboard/jobs/{uuid}/cancel", {"_xsrf": "forged"}),
        await browser.post(f"/dashboard/jobs/{uuid}/cancel", headers={"Origin": "http://evil.example"}),
        await browser.post(f"/dashboard/jobs/{uuid}/cancel", headers={"Sec-Fetch-Site": "cross-site"}),
        await browser.post("/dashboard/queues/echo/kick", xsrf=False),
    ]
    assert [r.code for r in refusals] == [403] * 5
    assert "_xsrf" in text(refusals[0]) and "cross-site request refused" in text(refusals[2])
    assert (job(uuid).status, job(uuid).version) == ("queued", before)
    assert (await browser.get(f"/dashboard/jobs/{uuid}/cancel")).code == 405  # a GET never changes state
    assert job(uuid).version == before
    same = await browser.post(f"/dashboard/jobs/{uuid}/cancel", headers={"Sec-Fetch-Site": "same-origin",
                                                                         "Origin": browser.api.url("")})
    assert same.code == 303 and job(uuid).status == "cancelled"


# -- the token ------------------------------------------------------------------------------


async def test_with_a_token_every_route_asks_for_the_login(guarded: Browser) -> None:
    uuid = enqueue("echo", message="x")
    for path in ("/dashboard/", "/dashboard/jobs?status=queued", f"/dashboard/jobs/{uuid}"):
        response = await guarded.get(path)
        assert response.code == 303, path
        assert response.headers["Location"] == f"/dashboard/login?{urllib.parse.urlencode({'next': path})}"
    assert (await guarded.get("/dashboard/queues.json")).code == 401
    assert (await guarded.get(f"/dashboard/jobs/{uuid}/events")).code == 401
    assert (await guarded.post(f"/dashboard/jobs/{uuid}/cancel")).code == 401
    assert job(uuid).status == "queued"

    wrong = await guarded.post("/dashboard/login", {"token": "guess", "next": "/dashboard/jobs"})
    assert wrong.code == 401 and "Wrong token" in text(wrong) and SESSION_COOKIE not in guarded.cookies
    guarded.cookies[SESSION_COOKIE] = TOKEN  # the raw token is not the session value
    assert (await guarded.get("/dashboard/")).code == 303
    del guarded.cookies[SESSION_COOKIE]
    login = await guarded.post("/dashboard/login", {"token": TOKEN, "next": "/dashboard/jobs"})
    assert login.code == 303 and login.headers["Location"] == "/dashboard/jobs"
    cookie = next(c for c in login.headers.get_list("Set-Cookie") if c.startswith(f"{SESSION_COOKIE}="))
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower() and TOKEN not in cookie

    assert listed(text(await guarded.get("/dashboard/jobs"))) == [uuid]
    assert (await guarded.get("/dashboard/queues.json")).code == 200
    assert (await guarded.post(f"/dashboard/jobs/{uuid}/cancel")).code == 303
    events = await guarded.get(f"/dashboard/jobs/{uuid}/events")
    assert events.code == 200 and json.loads(events.body.decode().split("data: ", 1)[1])["status"] == "cancelled"
    assert (await guarded.get(f"/jobs/{uuid}")).code == 401  # the JSON API still wants its bearer token

    offsite = await guarded.post("/dashboard/login", {"token": TOKEN, "next": "https://evil.example/"})
    assert offsite.headers["Location"] == "/dashboard/"
    assert (await guarded.post("/dashboard/logout")).code == 303
    assert (await guarded.get("/dashboard/")).code == 303


async def test_without_a_token_there_is_no_login(browser: Browser) -> None:
    response = await browser.get("/dashboard/login")
    assert response.code == 303 and response.headers["Location"] == "/dashboard/"


# -- job text -------------------------------------------------------------------------------


async def test_hostile_job_text_is_escaped_everywhere(browser: Browser) -> None:
    uuid = enqueue("echo", message=HOSTILE)
    assert run_worker().returncode == 0
    for path in (f"/dashboard/jobs/{uuid}", "/dashboard/jobs", "/dashboard/jobs?type=echo"):
        page = text(await browser.get(path))
        assert "<script>alert" not in page, path
        assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in page, path
    page = text(await browser.get(f"/dashboard/jobs/{uuid}"))
    assert "&lt;SCRIPT&gt;ALERT" in page  # the result string too
    response = await browser.get(f"/dashboard/jobs/{uuid}")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


async def test_a_queue_that_does_not_answer_is_a_503_page(embedded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEYSER_QUEUE_URL", f"beanstalkd://127.0.0.1:{free_port()}")
    geyser.configure()
    b = await open_dashboard("")
    try:
        response = await b.api.fetch("GET", "/dashboard/", request_timeout=60)
        assert response.code == 503 and "store or queue unavailable" in text(response)
    finally:
        await b.api.close()


# -- packaging ------------------------------------------------------------------------------


def test_the_wheel_ships_every_template_and_static_file() -> None:
    wheel = os.environ.get("GEYSER_TEST_WHEEL")
    if not wheel:
        pytest.skip("set GEYSER_TEST_WHEEL to a built wheel to check what it ships")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assets = {f"geyser/dashboard_assets/{p.relative_to(ASSETS).as_posix()}" for p in ASSETS.rglob("*") if p.is_file()}
    assert {"geyser/dashboard_assets/templates/job.html", "geyser/dashboard_assets/static/dashboard.js"} <= assets
    assert assets - shipped == set()
