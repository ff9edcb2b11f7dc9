"""``python -m geyser.store copy`` as a user runs it: from the embedded file (jobs enqueued and
run by a real worker) to PostgreSQL (a schema of its own, dropped after), then reading the jobs
back through the Python API on PostgreSQL; a second run copies nothing; --after resumes, Ctrl-C
stops a copy and names where to resume; a conflict is reported; passwords are never printed;
--help shows an example and the defaults."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

import geyser
import jobs_for_tests  # noqa: F401  (registers the echo job)
from conftest import NetworkStore, run_worker, worker_env

pytestmark = pytest.mark.usefixtures("embedded")


@pytest.fixture
def postgres() -> Iterator[NetworkStore]:
    store = NetworkStore("postgresql")
    try:
        yield store
    finally:
        store.drop()


def store_cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "geyser.store", *args]
    return subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=120)


def with_password(url: str, password: str) -> str:
    """The URL with a password in it (trust auth ignores it); `url` is postgresql://user@..."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


def test_copy_from_the_embedded_file_to_postgresql(embedded: str, postgres: NetworkStore) -> None:
    jobs = [geyser.make_base_job({"message": f"job {i}"}, "echo") for i in range(5)]
    uuids = [job.enqueue() for job in jobs]
    done = run_worker()
    assert done.returncode == 0, done.stdout + done.stderr
    before = {u: geyser.get_base_job(u) for u in uuids}
    assert all(job is not None and job.status == "succeeded" for job in before.values()), before

    target = with_password(postgres.url, "s3cret-pw")
    first = store_cli("copy", embedded, target, "--page-size", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "s3cret-pw" not in first.stdout + first.stderr
    assert ":***@" in first.stdout, first.stdout
    assert "done: read 5, copied 5, skipped 0, conflicting 0, unreadable 0, refused 0" in first.stdout, first.stdout
    pages = [line for line in first.stdout.splitlines() if "done up to" in line]
    assert len(pages) == 3, first.stdout

    geyser.configure(queue=embedded, store=postgres.url)
    for uuid, job in before.items():
        assert job is not None
        copied = geyser.get_base_job(uuid)
        assert copied is not None, f"job {uuid} is not in PostgreSQL"
        assert copied.to_document() == job.to_document(), "the same document, version and timestamps included"
        assert (copied.message, copied.resultString) == (job.message, job.message.upper())

    again = store_cli("copy", embedded, postgres.url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "done: read 5, copied 0, skipped 5" in again.stdout, again.stdout


def test_a_conflict_and_a_resume_point_from_the_command_line(embedded: str, postgres: NetworkStore) -> None:
    uuids = sorted(geyser.make_base_job({"message": f"job {i}"}, "echo").enqueue() for i in range(3))
    resumed = store_cli("copy", embedded, postgres.url, "--after", uuids[0], "--quiet")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "done: read 2, copied 2" in resumed.stdout, resumed.stdout
    assert "done up to" not in resumed.stdout, "--quiet prints no progress lines"

    geyser.configure(queue=embedded, store=postgres.url)
    moved_on = geyser.get_base_job(uuids[1])
    assert moved_on is not None
    moved_on.message = "changed in PostgreSQL"
    moved_on.save()
    conflict = store_cli("copy", embedded, postgres.url)
    assert conflict.returncode == 1, conflict.stdout + conflict.stderr
    assert f"conflict {uuids[1]}: the target holds a different document at version" in conflict.stdout
    assert "done: read 3, copied 1, skipped 1, conflicting 1" in conflict.stdout, conflict.stdout
    kept = geyser.get_base_job(uuids[1])
    assert kept is not None and kept.message == "changed in PostgreSQL"


def test_bad_urls_and_help(embedded: str) -> None:
    bad = store_cli("copy", embedded, "nosuch://app:hunter2@host/x")
    assert bad.returncode == 3, bad.stdout + bad.stderr
    assert "unknown scheme" in bad.stderr and "hunter2" not in bad.stdout + bad.stderr, bad.stderr
    usage = store_cli("copy", "--help")
    assert usage.returncode == 0
    assert "example:" in usage.stdout and "(default: 500)" in usage.stdout, usage.stdout
    assert store_cli("copy", embedded, embedded, "--page-size", "0").returncode == 2


def test_ctrl_c_stops_the_copy_and_names_the_resume_point(embedded: str, postgres: NetworkStore) -> None:
    uuids = [geyser.make_base_job({"message": f"job {i}"}, "echo").enqueue() for i in range(2000)]
    cmd = [sys.executable, "-m", "geyser.store", "copy", embedded, postgres.url, "--page-size", "1"]
    copying = subprocess.Popen(cmd, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert copying.stdout is not None
        for line in copying.stdout:  # the first page is done: the copy is under way
            if "done up to" in line:
                break
        copying.send_signal(signal.SIGINT)
        out, err = copying.communicate(timeout=30)
    finally:
        copying.kill()
    assert copying.returncode == 130, out + err
    assert "interrupted; to carry on: --after " in err, err
    after = err.rsplit("--after ", 1)[1].split()[0]
    assert after in uuids
    done_before = sorted(uuids).index(after) + 1
    assert done_before < len(uuids), "stopped before the end"

    rest = store_cli("copy", embedded, postgres.url, "--after", after, "--quiet")
    assert rest.returncode == 0, rest.stdout + rest.stderr
    counts = re.search(r"done: read (\d+), copied (\d+), skipped (\d+), conflicting 0", rest.stdout)
    assert counts is not None, rest.stdout
    read, copied, skipped = map(int, counts.groups())
    assert read == len(uuids) - done_before, "only what comes after the resume point"
    # The page under way when the signal came may be in PostgreSQL already: found there unchanged.
    assert copied + skipped == read and skipped <= 1, rest.stdout
    count = postgres.psql(f"SELECT count(*) FROM {postgres.name}.geyser_documents").strip()
    assert count == str(len(uuids)), "every document once"
