"""The built-in dashboard: server-rendered HTML pages (Tornado templates beside this file in
``dashboard_assets/``, a little vanilla JavaScript, nothing from other hosts) to watch queues
and jobs and to retry, cancel and kick. ``geyser.web.make_app()`` mounts it at ``/``; mount
it in your own app with ``geyser.dashboard.routes(prefix)``.

    GET  /                      queues: ready / delayed / reserved / buried, a depth sparkline, kick;
                                the live workers
    GET  /queues.json           those counts, polled by the overview every 2 s
    POST /queues/<queue>/kick   kick up to KICK_BOUND buried (or delayed) entries
    GET  /jobs                  jobs by status / type / queue, newest first, keyset-paged by uuid
    GET  /jobs/<uuid>           one job: fields, events, errors, traceback, result, live progress
    GET  /jobs/<uuid>/events    server-sent events of the job's progress document
    POST /jobs/<uuid>/retry     retry a failed or cancelled job
    POST /jobs/<uuid>/cancel    request cancellation of a queued or running job
    GET  /login, POST /login, POST /logout   only when a token is set

Access: with a token (``GEYSER_API_TOKEN``) every route but the static files asks for it
once through the login form, which sets an HttpOnly, SameSite=Strict cookie holding an HMAC
of the token (never the token itself). Every POST must carry Tornado's XSRF token (double
submit: the ``_xsrf`` cookie and form field agree) and must not come from another site
(``Origin`` / ``Sec-Fetch-Site``); GETs change nothing. Touches jobs and queues only through
``geyser.config.client()``; never runs jobs.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

import tornado.web

from geyser import registry
from geyser.cli import STATUSES, age, last_event, when
from geyser.config import client
from geyser.errors import GeyserError, InvalidTransition, JobNotFound
from geyser.jobs import INTERNAL_FIELDS
from geyser.watch import TERMINAL_STATUSES
from geyser.web import EventsHandler, _queues

__all__ = [
    "ASSETS", "KICK_BOUND", "PAGE_SIZE", "SESSION_COOKIE", "DashboardHandler", "has_session", "routes", "session_value",
]

#: Templates (``templates/``) and the stylesheet and script (``static/``), shipped in the package.
ASSETS: Path = Path(__file__).resolve().parent / "dashboard_assets"
#: Jobs per page of the jobs list (``?limit=`` may ask for 1 to 500).
PAGE_SIZE: int = 50
MAX_PAGE_SIZE: int = 500
#: The jobs list's orders: descending uuid (new uuids are time-ordered), or ascending.
ORDERS: tuple[str, ...] = ("newest", "oldest")
#: Entries one press of a queue's kick button moves back to ready.
KICK_BOUND: int = 1000
#: The cookie the login form sets.
SESSION_COOKIE: str = "geyser_dashboard"
#: Statuses a job can be retried from, and cancelled in.
RETRYABLE: frozenset[str] = frozenset({"failed", "cancelled"})
CANCELLABLE: frozenset[str] = frozenset({"queued", "running"})
#: ``Sec-Fetch-Site`` values a state-changing request may carry (a browser's own page, or typed by hand).
SAME_SITE_FETCH: frozenset[str] = frozenset({"same-origin", "none"})
#: Sent with every page: only this server's own scripts, styles and images; no framing.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def session_value(token: str) -> str:
    """What the session cookie holds for ``token``: an HMAC of it, so the cookie is no bearer token."""
    return hmac.new(token.encode(), b"geyser dashboard session", hashlib.sha256).hexdigest()


def has_session(handler: tornado.web.RequestHandler, token: str) -> bool:
    """True when ``token`` is empty or ``handler``'s request carries the login's session cookie for it."""
    if not token:
        return True
    return hmac.compare_digest(handler.get_cookie(SESSION_COOKIE, "").encode(), session_value(token).encode())


class DashboardHandler(tornado.web.RequestHandler):
    """Base of the dashboard's pages: login, XSRF and same-site checks, templates, HTML errors.

    ``token``: when not empty, a request needs the session cookie of the login form.
    ``prefix``: where the dashboard is mounted ("" for the root).
    """

    def initialize(self, token: str = "", prefix: str = "") -> None:
        self.token = token
        self.prefix = prefix

    def get_template_path(self) -> str:
        return str(ASSETS / "templates")

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(prefix=self.prefix, login_required=bool(self.token), logged_in=self.logged_in(), when=when,
                         json=json)
        return namespace

    def logged_in(self) -> bool:
        """True when no token is set or the request carries the session cookie of the token."""
        return has_session(self, self.token)

    def prepare(self) -> None:
        if self.request.method not in ("GET", "HEAD"):
            self.check_same_site()
            self.check_xsrf_cookie()
        if not self.logged_in():
            self.refuse_anonymous()

    def refuse_anonymous(self) -> None:
        """A page asks for the login form (303 to it); anything else is 401."""
        if self.request.method in ("GET", "HEAD") and not self.request.path.endswith(".json"):
            target = urllib.parse.urlencode({"next": self.request.uri})
            self.redirect(f"{self.prefix}/login?{target}", status=303)
            raise tornado.web.Finish()
        raise tornado.web.HTTPError(401, "log in to the dashboard first")

    def check_same_site(self) -> None:
        """403 for a request a page of another site sent: a foreign ``Origin`` or a
        ``Sec-Fetch-Site`` other than same-origin / none."""
        fetch_site = self.request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site not in SAME_SITE_FETCH:
            raise tornado.web.HTTPError(403, "cross-site request refused (Sec-Fetch-Site: %s)", fetch_site)
        origin = self.request.headers.get("Origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc != self.request.host:
            raise tornado.web.HTTPError(403, "cross-site request refused (Origin %s is not this server)", origin)

    def safe_next(self, default: str) -> str:
        """The ``next`` argument when it is a path of this dashboard, else ``default``."""
        target = self.get_argument("next", "")
        inside = target.startswith(f"{self.prefix}/") and not target.startswith("//") and "\\" not in target
        return target if inside else default

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, tornado.web.HTTPError) and error.log_message:
            message = error.log_message % error.args if error.args else error.log_message
        elif isinstance(error, GeyserError):  # what handlers do not catch: the store or queue failed
            self.set_status(503)
            message = f"store or queue unavailable: {error}"
        elif status_code >= 500:
            message = "internal server error; see the server log"
        else:
            message = self._reason
        self.render("error.html", title=f"{self.get_status()} {self._reason}", message=message)

    async def blocking(self, call: Any, /, *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)`` on a thread, so a synchronous client call never blocks the IOLoop."""
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(call, *args, **kwargs))


# -- login ---------------------------------------------------------------------------------


class LoginHandler(DashboardHandler):
    """``GET /login`` shows the form; ``POST /login`` checks the token and sets the cookie."""

    def prepare(self) -> None:
        if self.request.method not in ("GET", "HEAD"):
            self.check_same_site()
            self.check_xsrf_cookie()
        if not self.token:
            self.redirect(f"{self.prefix}/", status=303)
            raise tornado.web.Finish()

    def get(self) -> None:
        self.render("login.html", title="Log in", wrong=False, next=self.safe_next(f"{self.prefix}/"))

    def post(self) -> None:
        given = self.get_body_argument("token", "")
        target = self.safe_next(f"{self.prefix}/")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            self.set_status(401)
            self.render("login.html", title="Log in", wrong=True, next=target)
            return
        secure = self.request.protocol == "https"
        self.set_cookie(SESSION_COOKIE, session_value(self.token), path=f"{self.prefix}/", httponly=True,
                        samesite="Strict", secure=secure)
        self.redirect(target, status=303)


class LogoutHandler(DashboardHandler):
    """``POST /logout``: forget the session cookie."""

    def post(self) -> None:
        self.clear_cookie(SESSION_COOKIE, path=f"{self.prefix}/")
        self.redirect(f"{self.prefix}/login", status=303)


# -- queues --------------------------------------------------------------------------------


async def queue_counts() -> list[dict[str, Any]]:
    """Ready / delayed / reserved / buried, and whether it is paused, of each queue of the
    registered job classes."""
    queues = _queues()
    stats = await asyncio.gather(*(client().stats_tube_async(q) for q in queues))
    counts = ("ready", "delayed", "reserved", "buried")
    return [{"queue": q, "paused": bool(s.get("paused")), **{k: s[k] for k in counts}} for q, s in zip(queues, stats)]


class OverviewHandler(DashboardHandler):
    """``GET /``: each queue's counts, a sparkline of its depth, a kick button; the live
    workers (host, pid, queues, running job, last heartbeat)."""

    async def get(self) -> None:
        listing = client().workers_async()  # first: a client that cannot open raises before any coroutine exists
        queues, workers = await asyncio.gather(queue_counts(), listing)
        now = time.time()
        rows = [{**w, "heartbeat": age(w.get("heartbeat_at"), now)}
                for w in sorted(workers, key=lambda w: (w.get("host", ""), w.get("pid", 0)))]
        self.render("overview.html", title="Queues", queues=queues, workers=rows)


class QueuesJsonHandler(DashboardHandler):
    """``GET /queues.json``: ``{"at": seconds, "queues": [{queue, ready, delayed, reserved, buried}]}``."""

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.finish({"at": time.time(), "queues": await queue_counts()})


class KickHandler(DashboardHandler):
    """``POST /queues/<queue>/kick``: up to ``KICK_BOUND`` buried (or else delayed) entries back to ready."""

    async def post(self, queue: str) -> None:
        if queue not in _queues():
            raise tornado.web.HTTPError(404, "no queue %s among the registered job classes", queue)
        await client().kick_async(queue, KICK_BOUND)
        self.redirect(self.safe_next(f"{self.prefix}/"), status=303)


# -- jobs ----------------------------------------------------------------------------------


def _types_of_queue(queue: str) -> list[str]:
    return sorted(t for t, cls in registry.job_classes().items() if cls.QUEUE_NAME == queue)


class JobsHandler(DashboardHandler):
    """``GET /jobs?status=&type=&queue=&order=&after=&limit=``: one page of jobs, newest
    first (descending uuid order; new uuids are time-ordered), or oldest first with
    ``order=oldest``.

    Each page is one indexed range read per job type (status and type are indexed by
    uuid in every store): a queue filter reads each of that queue's job types and merges
    them; ``after`` is the last uuid of the previous page."""

    async def get(self) -> None:
        status = self.get_argument("status", "") or None
        job_type = self.get_argument("type", "") or None
        queue = self.get_argument("queue", "") or None
        after = self.get_argument("after", "") or None
        order = self.get_argument("order", "") or "newest"
        if order not in ORDERS:
            raise tornado.web.HTTPError(400, "order must be one of %s", ", ".join(ORDERS))
        try:
            limit = int(self.get_argument("limit", str(PAGE_SIZE)))
        except ValueError:
            raise tornado.web.HTTPError(400, "limit must be a whole number of jobs per page") from None
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise tornado.web.HTTPError(400, "limit must be between 1 and %d", MAX_PAGE_SIZE)
        if status is not None and status not in STATUSES:
            raise tornado.web.HTTPError(400, "status must be one of %s", ", ".join(STATUSES))
        types: list[str | None] = [job_type]
        queue_types = _types_of_queue(queue) if queue is not None else []
        if queue is not None:
            types = [t for t in queue_types if job_type in (None, t)]
        newest = order == "newest"
        pages = await asyncio.gather(*(self.blocking(client().list, status=status, job_type=t, after=after,
                                                     limit=limit + 1, newest_first=newest) for t in types))
        docs = sorted((json.loads(raw) for page in pages for raw in page), key=lambda d: d["uuid"], reverse=newest)
        page, more = docs[:limit], len(docs) > limit
        filters = {"status": status or "", "type": job_type or "", "queue": queue or "", "order": order,
                   "limit": limit}
        defaults = {"order": "newest", "limit": PAGE_SIZE}
        query = {k: v for k, v in filters.items() if v and v != defaults.get(k)}
        next_url = f"{self.prefix}/jobs?{urllib.parse.urlencode({**query, 'after': page[-1]['uuid']})}" if more else ""
        first_url = f"{self.prefix}/jobs?{urllib.parse.urlencode(query)}" if after else ""
        now = time.time()
        rows = [{"uuid": d["uuid"], "type": d.get("jobType", ""), "status": d.get("status", ""),
                 "completeness": d.get("completeness") or 0, "attempts": d.get("attempts", 0),
                 "age": age(d.get("createdAt"), now), "last_event": last_event(d)} for d in page]
        self.render("jobs.html", title="Jobs", rows=rows, filters=filters, statuses=STATUSES, orders=ORDERS,
                    job_types=sorted(registry.job_classes()), queues=_queues(), next_url=next_url,
                    first_url=first_url, empty_queue=queue is not None and not queue_types)


class JobHandler(DashboardHandler):
    """``GET /jobs/<uuid>``: the whole document, readable, with a live progress bar."""

    async def get(self, uuid: str) -> None:
        raw = await client().get_async(uuid)
        if raw is None:
            raise tornado.web.HTTPError(404, "job %s not found", uuid)
        doc = json.loads(raw)
        errors = doc.get("errors") or []
        fields = {k: v for k, v in doc.items() if k not in INTERNAL_FIELDS and k != "version"}
        cls = registry.job_classes().get(doc.get("jobType", ""))
        queue = (doc.get("queueKwargs") or {}).get("queue") or (cls.QUEUE_NAME if cls else "")
        self.render("job.html", title=f"Job {uuid}", doc=doc, fields=fields, events=doc.get("events") or [],
                    errors=errors, traceback=(errors[-1].get("traceback") or "") if errors else "",
                    queue=queue, can_retry=doc.get("status") in RETRYABLE,
                    can_cancel=doc.get("status") in CANCELLABLE, terminal=doc.get("status") in TERMINAL_STATUSES,
                    can_kick=queue in _queues())


class JobActionHandler(DashboardHandler):
    """``POST /jobs/<uuid>/<action>``: the client operation ``action`` on one job, then back
    to the job's page; 404 for an unknown uuid, 409 when the job's status forbids it."""

    ACTION = ""

    async def post(self, uuid: str) -> None:
        try:
            await getattr(client(), f"{self.ACTION}_async")(uuid)
        except JobNotFound:
            raise tornado.web.HTTPError(404, "job %s not found", uuid) from None
        except InvalidTransition as e:
            raise tornado.web.HTTPError(409, "%s", str(e)) from None
        self.redirect(f"{self.prefix}/jobs/{uuid}", status=303)


class RetryHandler(JobActionHandler):
    """``POST /jobs/<uuid>/retry``: queue a failed or cancelled job again."""

    ACTION = "retry"


class CancelHandler(JobActionHandler):
    """``POST /jobs/<uuid>/cancel``: request cancellation of a queued or running job."""

    ACTION = "cancel"


class JobEventsHandler(EventsHandler):
    """``GET /jobs/<uuid>/events``: the API's event stream behind the dashboard's login
    (a browser's EventSource sends cookies, not an Authorization header)."""

    def initialize(self, token: str = "", watch_interval: float = 0.5) -> None:
        super().initialize(token="", watch_interval=watch_interval)  # no bearer token: the cookie instead
        self.session_token = token

    def prepare(self) -> None:
        if not has_session(self, self.session_token):
            raise tornado.web.HTTPError(401, "log in to the dashboard first")
        super().prepare()


def routes(
    prefix: str = "/dashboard", *, token: str | None = None, watch_interval: float = 0.5
) -> list[tornado.web.URLSpec]:
    """The dashboard's routes under ``prefix`` (e.g. ``"/dashboard"``), to add to your own Application.

    ``token``: what the login form asks for; None reads ``GEYSER_API_TOKEN``, "" leaves the
    dashboard open. ``watch_interval``: seconds between store reads of a job page's live stream.
    """
    if token is None:
        token = os.environ.get("GEYSER_API_TOKEN", "")
    p = prefix.rstrip("/")
    opts = {"token": token, "prefix": p}
    stream = {"token": token, "watch_interval": float(watch_interval)}
    job = r"([0-9A-Za-z-]+)"
    bare = [tornado.web.url(p, tornado.web.RedirectHandler, {"url": f"{p}/", "permanent": False})] if p else []
    return [
        *bare,
        tornado.web.url(rf"{p}/", OverviewHandler, opts),
        tornado.web.url(rf"{p}/queues\.json", QueuesJsonHandler, opts),
        tornado.web.url(rf"{p}/queues/([^/]+)/kick", KickHandler, opts),
        tornado.web.url(rf"{p}/jobs", JobsHandler, opts),
        tornado.web.url(rf"{p}/jobs/{job}", JobHandler, opts),
        tornado.web.url(rf"{p}/jobs/{job}/events", JobEventsHandler, stream),
        tornado.web.url(rf"{p}/jobs/{job}/retry", RetryHandler, opts),
        tornado.web.url(rf"{p}/jobs/{job}/cancel", CancelHandler, opts),
        tornado.web.url(rf"{p}/login", LoginHandler, opts),
        tornado.web.url(rf"{p}/logout", LogoutHandler, opts),
        tornado.web.url(rf"{p}/static/(.*)", tornado.web.StaticFileHandler, {"path": str(ASSETS / "static")}),
    ]
