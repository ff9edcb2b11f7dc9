"""``geyser``: the operator's command line (console script and ``python -m geyser``).

Lists, shows, watches, retries, cancels and deletes jobs, shows, pauses, resumes and kicks queues, lists
live workers, and enqueues a job, through the native client of ``geyser.config.client()`` (so the same
``GEYSER_QUEUE_URL`` / ``GEYSER_STORE_URL`` as the worker); ``worker``, ``server`` and
``maintenance`` hand their arguments unchanged to those modules' ``main``. Every error
becomes one line on stderr and a non-zero exit. Touches the queue and store only through
``geyser._core``; reads job classes only from the ``-m`` modules.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, NoReturn

import click
from marshmallow import ValidationError
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Column, Table
from rich.text import Text

from geyser import registry
from geyser.config import client
from geyser.errors import (BackendError, ConfigError, GeyserError, InvalidDocument, InvalidTransition, JobNotFound,
                           UnknownJobType)
from geyser.jobs import INTERNAL_FIELDS, make_base_job
from geyser.watch import TERMINAL_STATUSES

__all__ = ["CliError", "import_modules", "main"]

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
#: Exit status of ``geyser jobs watch`` per terminal status.
WATCH_EXIT = {"succeeded": 0, "failed": 1, "cancelled": 2}
#: ``geyser jobs watch`` polls the store first after this many seconds, then less and less often.
WATCH_FIRST_POLL = 0.1
WATCH_MAX_POLL = 1.0
#: A page of ``geyser jobs retry --failed``.
RETRY_PAGE = 100
#: Line width when standard output is not a terminal: wide enough never to cut a row.
PIPE_WIDTH = 500
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
WHERE = "GEYSER_QUEUE_URL / GEYSER_STORE_URL"


class CliError(Exception):
    """An error the command reports as one line; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(f"{message}; {hint}" if hint else message)


def _console() -> Console:
    """Standard output: the terminal's width, or lines that never wrap into a pipe or file."""
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH, highlight=False)


def show(*renderables: RenderableType) -> None:
    """Print tables and plain text (never read as rich markup), without trailing blanks."""
    console = _console()
    with console.capture() as captured:
        for renderable in renderables:
            console.print(renderable, markup=False, soft_wrap=isinstance(renderable, str))
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _row(table: Table, *values: object) -> None:
    table.add_row(*(Text(str(v)) for v in values))


def _explain(e: Exception) -> str:
    """One line saying what went wrong and what to do."""
    if isinstance(e, JobNotFound):
        return f"{e}; `geyser jobs ls` lists the jobs of this store ({WHERE} choose it)"
    if isinstance(e, (BackendError, ConfigError)):
        return f"{e}; check that the queue and store are up and that {WHERE} point at them"
    if isinstance(e, UnknownJobType):
        return f"{e} (pass -m MODULE)"
    return str(e)


def _fail(message: str, status: int = 1) -> NoReturn:
    click.echo(f"geyser: error: {message}", err=True)
    sys.exit(status)


class _Root(click.Group):
    """The top group: turns every error of a command into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (GeyserError, CliError) as e:
            _fail(_explain(e))
        except KeyboardInterrupt:
            _fail("interrupted", 130)


class _DefaultCommandGroup(click.Group):
    """A group that runs ``default`` when the first argument names none of its commands."""

    default = "stats"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in CONTEXT["help_option_names"]):
            args = [self.default, *args]
        return super().parse_args(ctx, args)


def import_modules(modules: tuple[str, ...]) -> None:
    """Import the ``-m`` modules (and ``geyser.registry.JOB_MODULES``) as the worker does,
    with the current directory on ``sys.path``."""
    from geyser.worker import ConfigProblem, import_job_modules

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        import_job_modules(list(modules))
    except ConfigProblem as e:
        raise CliError(str(e), "check the -m module name and that it imports") from e


def with_modules(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds ``-m/--module`` to a command and imports those modules before it runs."""

    @click.option("-m", "--module", "modules", multiple=True, metavar="MOD",
                  help="import this job module first, like the worker (repeatable)")
    @functools.wraps(command)
    def run(modules: tuple[str, ...], **kwargs: Any) -> Any:
        import_modules(modules)
        return command(**kwargs)

    return run


# -- formatting ------------------------------------------------------------------------


def when(at: float | None) -> str:
    """A local time with seconds, or "-"."""
    return "-" if at is None else datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def span(seconds: float | None) -> str:
    """A length of time in its largest whole unit (s, m, h, d), or "-"."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def age(at: float | None, now: float) -> str:
    """How long ago ``at`` was, in the largest whole unit (s, m, h, d)."""
    return span(None if at is None else now - at)


def last_event(doc: dict[str, Any]) -> str:
    """The newest event or error message of a job, or ""."""
    entries = [(e.get("at") or 0, e.get("msg", "")) for e in doc.get("events") or []]
    entries += [(e.get("at") or 0, f"error: {e.get('msg', '')}") for e in doc.get("errors") or []]
    return max(entries, key=lambda entry: entry[0])[1] if entries else ""


def _load_document(uuid: str) -> dict[str, Any]:
    raw = client().get(uuid)
    if raw is None:
        raise JobNotFound(f"job {uuid} not found")
    return json.loads(raw)


# -- the commands ----------------------------------------------------------------------


@click.group(cls=_Root, context_settings=CONTEXT)
def main() -> None:
    """Operate Geyser: jobs, queues, workers, the HTTP server.

    The queue and store are those of GEYSER_QUEUE_URL and GEYSER_STORE_URL (default: the
    embedded SQLite file), as for the worker.

    \b
    example:
      geyser jobs ls --status failed
      geyser enqueue -m myapp.jobs echo '{"message": "hi"}'
    """


def _pass_through(name: str, target: Callable[[list[str]], int], example: str) -> None:
    """Adds command ``name``, which runs ``target(argv)`` with its arguments unchanged."""

    @main.command(name, context_settings={"ignore_unknown_options": True, "help_option_names": []},
                  add_help_option=False, help=f"python -m geyser.{name}, arguments unchanged (--help: its options).\n\n"
                  f"\b\nexample:\n  {example}")
    @click.argument("argv", nargs=-1, type=click.UNPROCESSED)
    def run(argv: tuple[str, ...]) -> None:
        sys.exit(target(list(argv)))


def _worker_main(argv: list[str]) -> int:
    from geyser.worker import main as worker_main

    return worker_main(argv)


def _server_main(argv: list[str]) -> int:
    from geyser.server import main as server_main

    return server_main(argv)


def _maintenance_main(argv: list[str]) -> int:
    from geyser.maintenance import main as maintenance_main

    return maintenance_main(argv)


_pass_through("worker", _worker_main, "geyser worker -m myapp.jobs -c 4")
_pass_through("server", _server_main, "geyser server -m myapp.jobs --port 8888")
_pass_through("maintenance", _maintenance_main, "geyser maintenance --min-age 3600")


@main.group(context_settings=CONTEXT)
def jobs() -> None:
    """List, show, watch, retry, cancel and delete jobs.

    \b
    example:
      geyser jobs ls --status failed --type resize
    """


def _job_row(doc: dict[str, Any], now: float) -> list[object]:
    return [doc["uuid"], doc.get("jobType", ""), doc.get("status", ""), f"{(doc.get('completeness') or 0):.0%}",
            str(doc.get("attempts", 0)), age(doc.get("createdAt"), now), last_event(doc)]


def _next_page_command(status: str | None, job_type: str | None, queue: str | None, oldest_first: bool, limit: int,
                       after: str) -> str:
    parts = ["geyser jobs ls"]
    parts += [f"--status {status}"] if status else []
    parts += [f"--type {job_type}"] if job_type else []
    parts += [f"--queue {queue}"] if queue else []
    parts += ["--oldest-first"] if oldest_first else []
    return " ".join([*parts, f"--limit {limit}", f"--after {after}"])


@jobs.command("ls")
@click.option("--status", type=click.Choice(STATUSES), help="only jobs with this status")
@click.option("--type", "job_type", metavar="T", help="only jobs of this JOB_TYPE")
@click.option("--queue", metavar="Q", help="only jobs put on queue Q (as their documents say)")
@click.option("--oldest-first", is_flag=True, help="oldest first (default: newest first)")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="jobs per page")
@click.option("--after", metavar="UUID", help="the page after this uuid (printed under the previous page)")
@click.option("--json", "as_json", is_flag=True, help="the whole documents as one JSON array")
@with_modules
def jobs_ls(status: str | None, job_type: str | None, queue: str | None, oldest_first: bool, limit: int,
            after: str | None, as_json: bool) -> None:
    """List jobs, a page at a time, newest first.

    Jobs are listed in uuid order, descending: a job's uuid is time-ordered (UUIDv7), so that
    is creation order. Jobs stored with random uuids by an older Geyser come after them, in
    uuid order.

    \b
    example:
      geyser jobs ls --status failed --queue images --limit 20
      geyser jobs ls --status failed --limit 20 --after 019a...   (the next page)
    """
    docs = [json.loads(raw) for raw in client().list(status=status, job_type=job_type, after=after, limit=limit + 1,
                                                      newest_first=not oldest_first, queue=queue)]
    page, more = docs[:limit], len(docs) > limit
    hint = ""
    if more:
        hint = f"next page: {_next_page_command(status, job_type, queue, oldest_first, limit, page[-1]['uuid'])}"
    if as_json:
        click.echo(json.dumps(page, indent=2))
        if hint:
            click.echo(hint, err=True)
        return
    table = Table(Column("uuid", no_wrap=True, min_width=36), "type", "status", "done", "attempts", "age",
                  "last event", box=None, pad_edge=False)
    now = time.time()
    for doc in page:
        _row(table, *_job_row(doc, now))
    show(table if page else "no jobs", *([hint] if hint else []))


def _own_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The job's own (schema) fields of a document."""
    return {k: v for k, v in doc.items() if k not in INTERNAL_FIELDS and k != "version"}


def _show_document(doc: dict[str, Any]) -> None:
    summary = Table.grid(padding=(0, 2))
    queue = (doc.get("queueKwargs") or {}).get("queue", "")
    for name, value in (
        ("uuid", doc["uuid"]), ("type", doc.get("jobType")), ("queue", queue), ("status", doc.get("status")),
        ("completeness", f"{(doc.get('completeness') or 0):.0%}"),
        ("attempts", f"{doc.get('attempts', 0)} (failures {doc.get('failures', 0)}, "
                     f"max retries {doc.get('maxRetries')})"),
        ("created", when(doc.get("createdAt"))), ("started", when(doc.get("startedAt"))),
        ("finished", when(doc.get("finishedAt"))), ("next run", when(doc.get("nextRunAt"))),
        ("updated", when(doc.get("updatedAt"))), ("worker", doc.get("worker") or "-"),
        ("result", f"code {json.dumps(doc.get('resultCode'))} {doc.get('resultString') or ''}".rstrip()),
        ("fields", json.dumps(_own_fields(doc))),
    ):
        _row(summary, f"{name}:", value)
    parts: list[RenderableType] = [summary]
    events, errors = doc.get("events") or [], doc.get("errors") or []
    if events:
        table = Table("time", "action", "event", title="events", title_justify="left", box=None, pad_edge=False)
        for e in events:
            _row(table, when(e.get("at")), e.get("action") or "", e.get("msg", ""))
        parts.append(table)
    if errors:
        table = Table("time", "attempt", "code", "error", title="errors", title_justify="left", box=None, pad_edge=False)
        for e in errors:
            _row(table, when(e.get("at")), e.get("attempt", ""), json.dumps(e.get("errorCode")), e.get("msg", ""))
        parts.append(table)
        traceback = errors[-1].get("traceback")
        if traceback:
            parts += ["last error's traceback:", traceback.rstrip()]
    show(*parts)


@jobs.command("show")
@click.argument("uuid")
@click.option("--json", "as_json", is_flag=True, help="the stored document as JSON")
@with_modules
def jobs_show(uuid: str, as_json: bool) -> None:
    """Show one job: status, times, fields, events, errors (with the last traceback), result.

    \b
    example:
      geyser jobs show 0b6f1c2e-0d5f-4a57-9a55-61f1d0a3c2b4
    """
    doc = _load_document(uuid)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    _show_document(doc)


def _poll(uuid: str) -> Iterator[dict[str, Any]]:
    """The job's document now and after growing pauses, until its status is terminal."""
    pause = WATCH_FIRST_POLL
    while True:
        doc = _load_document(uuid)
        yield doc
        if doc.get("status") in TERMINAL_STATUSES:
            return
        time.sleep(pause)
        pause = min(pause * 1.5, WATCH_MAX_POLL)


@jobs.command("watch")
@click.argument("uuid")
@with_modules
def jobs_watch(uuid: str) -> None:
    """Follow a job with a progress bar and its latest event until it finishes.

    Exits 0 when the job succeeds, 1 when it fails, 2 when it is cancelled.

    \b
    example:
      geyser jobs watch 0b6f1c2e-0d5f-4a57-9a55-61f1d0a3c2b4 && echo done
    """
    console = _console()
    columns = (TextColumn("{task.fields[status]:<9}", markup=False), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[event]}", markup=False))
    doc: dict[str, Any] = {}
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(uuid, total=1.0, status="", event="")
        for doc in _poll(uuid):
            progress.update(task, completed=doc.get("completeness") or 0, status=doc.get("status", ""),
                            event=last_event(doc))
    status = doc.get("status", "")
    show(f"job {uuid} {status}: {last_event(doc) or '-'}")
    sys.exit(WATCH_EXIT[status])


def _status_line(doc_json: str) -> str:
    """What a retry, cancel or delete left: the job's uuid, status and attempts."""
    doc = json.loads(doc_json)
    return f"{doc['uuid']}: {doc.get('status')} (attempts {doc.get('attempts', 0)})"


def _retry_one(uuid: str) -> str:
    try:
        return _status_line(client().retry(uuid))
    except InvalidTransition as e:
        raise CliError(str(e), "only a failed or buried job can be retried") from e


def _failed_jobs(job_type: str | None) -> Iterator[str]:
    """The uuids of every failed job (of ``job_type``), a page at a time."""
    after: str | None = None
    while True:
        page = [json.loads(raw)["uuid"] for raw in client().list(status="failed", job_type=job_type, after=after,
                                                                  limit=RETRY_PAGE)]
        yield from page
        if len(page) < RETRY_PAGE:
            return
        after = page[-1]


@jobs.command("retry")
@click.argument("uuid", required=False)
@click.option("--failed", "every_failed", is_flag=True, help="retry every failed job instead of one")
@click.option("--type", "job_type", metavar="T", help="with --failed: only jobs of this JOB_TYPE")
@with_modules
def jobs_retry(uuid: str | None, every_failed: bool, job_type: str | None) -> None:
    """Queue a failed or buried job again (its attempts stay in the history; the retry
    budget is renewed).

    \b
    example:
      geyser jobs retry 0b6f1c2e-0d5f-4a57-9a55-61f1d0a3c2b4
      geyser jobs retry --failed --type resize
    """
    if every_failed == (uuid is not None):
        raise CliError("give either a UUID or --failed", "see geyser jobs retry --help")
    if job_type and not every_failed:
        raise CliError("--type goes with --failed", "see geyser jobs retry --help")
    if uuid is not None:
        click.echo(_retry_one(uuid))
        return
    retried, skipped = 0, 0
    for failed in _failed_jobs(job_type):
        try:
            click.echo(_status_line(client().retry(failed)))
            retried += 1
        except (InvalidTransition, JobNotFound) as e:  # changed since it was listed
            click.echo(f"{failed}: skipped: {e}", err=True)
            skipped += 1
    click.echo(f"retried {retried} job(s)" + (f", skipped {skipped}" if skipped else ""))


@jobs.command("cancel")
@click.argument("uuid")
@with_modules
def jobs_cancel(uuid: str) -> None:
    """Cancel a job: a queued one at once, a running one when its worker sees the request.

    \b
    example:
      geyser jobs cancel 0b6f1c2e-0d5f-4a57-9a55-61f1d0a3c2b4
    """
    try:
        doc = json.loads(client().cancel(uuid))
    except InvalidTransition as e:
        raise CliError(str(e), "a finished job cannot be cancelled") from e
    status = doc.get("status")
    if status == "cancelled":
        click.echo(f"{uuid}: cancelled")
    elif status in TERMINAL_STATUSES:
        raise CliError(f"job {uuid} is {status}: only a queued or running job can be cancelled",
                       "geyser jobs delete UUID removes a finished job")
    else:
        click.echo(f"{uuid}: cancel requested; the {status} job stops when its worker sees it "
                   "(geyser jobs watch UUID follows it)")


@jobs.command("delete")
@click.argument("uuid")
@with_modules
def jobs_delete(uuid: str) -> None:
    """Delete a finished (succeeded, failed or cancelled) job's document.

    \b
    example:
      geyser jobs delete 0b6f1c2e-0d5f-4a57-9a55-61f1d0a3c2b4
    """
    try:
        client().delete(uuid)
        click.echo(f"{uuid}: deleted")
    except InvalidTransition as e:
        raise CliError(str(e), "cancel it first (geyser jobs cancel UUID) or wait for it to finish") from e


@main.group(cls=_DefaultCommandGroup, context_settings=CONTEXT)
def queues() -> None:
    """Queue counts (the default command, `stats`), pausing and resuming a queue, and
    kicking buried jobs.

    \b
    example:
      geyser queues -m myapp.jobs
      geyser queues pause resize
      geyser queues kick resize 10
    """


def _registered_queues() -> list[str]:
    return sorted({cls.QUEUE_NAME for cls in registry.job_classes().values()})


def _workers_by_queue() -> dict[str, int]:
    """How many live workers (as they register in the store) watch each queue."""
    counts: dict[str, int] = {}
    for record in client().workers():
        for queue in set(record["queues"]):
            counts[queue] = counts.get(queue, 0) + 1
    return counts


@queues.command("stats")
@click.argument("names", nargs=-1, metavar="[QUEUE]...")
@click.option("--json", "as_json", is_flag=True, help="the counts as JSON")
@with_modules
def queues_stats(names: tuple[str, ...], as_json: bool) -> None:
    """Per queue (the QUEUEs named, or those of the job classes of the -m modules): ready,
    delayed, reserved (running) and buried jobs; whether it is paused; how long the oldest
    ready job has waited (on beanstalkd: the job a worker takes next, the most urgent); and
    the live workers that watch it.

    \b
    example:
      geyser queues resize thumbnails
      geyser queues -m myapp.jobs --json
    """
    wanted = list(names) or _registered_queues()
    if not wanted:
        raise CliError("no queues to show", "name them (geyser queues QUEUE...) or pass -m MODULE with job classes")
    stats = [client().stats_tube(name) for name in wanted]
    workers = _workers_by_queue()
    for s in stats:
        s["workers"] = workers.get(s["name"], 0)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    table = Table("queue", "ready", "delayed", "reserved", "buried", "paused", "oldest", "workers", box=None,
                  pad_edge=False)
    for s in stats:
        _row(table, s["name"], *(s[k] for k in ("ready", "delayed", "reserved", "buried")),
             "yes" if s["paused"] else "no", span(s["oldest_ready_age"]), s["workers"])
    show(table)


def _known_queue(queue: str) -> str:
    """``queue``, refused when -m modules (or JOB_MODULES) register job classes and none of
    them uses it: most likely a typing error."""
    registered = _registered_queues()
    if registered and queue not in registered:
        raise CliError(f"no job class of the imported modules uses queue {queue!r}",
                       f"their queues are {', '.join(registered)}")
    return queue


def _pause_or_resume(queue: str, paused: bool) -> None:
    from geyser.jobs import pause_queue, resume_queue

    try:
        (pause_queue if paused else resume_queue)(_known_queue(queue))
    except InvalidDocument as e:
        raise CliError(str(e), "queue names are those of the job classes' QUEUE_NAME") from e


@queues.command("pause")
@click.argument("queue")
@with_modules
def queues_pause(queue: str) -> None:
    """Pause QUEUE: no worker takes its jobs until `geyser queues resume QUEUE`. Its jobs
    wait (new ones are queued as usual); jobs already running go on. With -m, QUEUE must be
    the queue of one of the modules' job classes.

    On beanstalkd the server keeps the pause only while the queue holds jobs or a worker
    watches it, and refuses to pause a queue it does not know.

    \b
    example:
      geyser queues pause resize
      geyser queues pause -m myapp.jobs resize
    """
    _pause_or_resume(queue, paused=True)
    click.echo(f"{queue}: paused; its jobs wait until `geyser queues resume {queue}`")


@queues.command("resume")
@click.argument("queue")
@with_modules
def queues_resume(queue: str) -> None:
    """Resume a paused QUEUE: workers take its jobs again at once.

    \b
    example:
      geyser queues resume resize
    """
    _pause_or_resume(queue, paused=False)
    click.echo(f"{queue}: resumed")


@queues.command("kick")
@click.argument("queue")
@click.argument("bound", type=click.IntRange(1), default=1, metavar="[N]")
@with_modules
def queues_kick(queue: str, bound: int) -> None:
    """Move up to N (default 1) buried jobs of QUEUE (or, when none is buried, delayed ones)
    back to ready; a kicked failed job runs again with its retry budget renewed.

    \b
    example:
      geyser queues kick resize 100
    """
    from geyser.jobs import kick

    click.echo(f"kicked {kick(queue, bound)} job(s) in {queue}")


def _values(text: str) -> dict[str, Any]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"JSON is not valid: {e}", """quote it for the shell, e.g. '{"message": "hi"}'""") from e
    if not isinstance(values, dict):
        raise CliError(f"JSON must be an object of field values, not {type(values).__name__}",
                       """e.g. '{"message": "hi"}'""")
    return values


def _field_messages(messages: Any) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{field}: {_field_messages(m)}" for field, m in messages.items())
    if isinstance(messages, list):
        return " ".join(str(m) for m in messages)
    return str(messages)


@main.command("enqueue", context_settings=CONTEXT)
@click.argument("job_type", metavar="TYPE")
@click.argument("values", metavar="JSON")
@click.option("--delay", type=click.FloatRange(0), default=0.0, metavar="S", help="run no sooner than S seconds from now")
@click.option("--priority", type=click.IntRange(0), default=None, metavar="P",
              help="queue priority (lower runs first; default: the class's)")
@with_modules
def enqueue(job_type: str, values: str, delay: float, priority: int | None) -> None:
    """Validate JSON with the TYPE's schema, enqueue the job and print its uuid (needs -m).

    \b
    example:
      geyser enqueue -m myapp.jobs echo '{"message": "hi"}' --delay 60
    """
    fields = _values(values)
    try:
        job = make_base_job(fields, job_type)
    except ValidationError as e:
        raise CliError(f"invalid values for job type {job_type!r}: {_field_messages(e.messages)}",
                       "fix them and enqueue again") from e
    click.echo(job.enqueue(delay=delay, priority=priority))


@main.command("workers", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="the records as one JSON array")
def workers(as_json: bool) -> None:
    """List the live workers: each registers itself in the store and writes that record again
    every few seconds; one that stopped is gone at once, one that died within 15 s.

    \b
    example:
      geyser workers
      geyser workers --json
    """
    records = client().workers()
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    table = Table("worker", "host", "pid", "queues", Column("running job", no_wrap=True), "started",
                  "last heartbeat", box=None, pad_edge=False)
    now = time.time()
    for w in records:
        _row(table, w["id"], w["host"], w["pid"], ",".join(w["queues"]), w["job"] or "-", when(w["started_at"]),
             f"{age(w['heartbeat_at'], now)} ago")
    show(table if records else "no live workers")
