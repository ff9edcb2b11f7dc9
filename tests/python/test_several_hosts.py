"""Several hosts for real: two worker groups that share nothing on disk (each its own HOME,
XDG_DATA_HOME, TMPDIR and working folder with its own copy of the job module) drain one
beanstalkd queue into one network store (PostgreSQL, then Redis); a producer in a third
process reads the progress one group writes; a group killed with kill -9 mid-job is
recovered by the other. And the README's several-machines setup runs as written. Touches
only its own beanstalkd, its temp folders and its own schema / key prefix / database on the
shared servers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid as uuids
from collections.abc import Iterator
from pathlib import Path

import greenstalk
import pytest

import geyser
from geyser.config import client
import hosts_jobs  # noqa: F401  (registers the job types this producer enqueues)
from conftest import HERE, POSTGRES_URL, Beanstalkd, NetworkStore, free_port, job, wait_for
from test_examples import ROOT, live_members, readme_block

GROUP_SIZE = 2
FINISHED = ("succeeded", "failed", "cancelled")

# The third process: reads the job's document over and over, prints each new view of it.
WATCHER = """
import json, sys, time
import geyser, hosts_jobs
uuid, deadline, last = sys.argv[1], time.monotonic() + float(sys.argv[2]), None
while time.monotonic() < deadline:
    job = geyser.get_base_job(uuid)
    view = {"status": job.status, "completeness": job.completeness, "worker": job.worker,
            "events": [e["msg"] for e in job.events]}
    if view != last:
        print(json.dumps(view), flush=True)
        last = view
    if job.status in ("succeeded", "failed", "cancelled"):
        sys.exit(0)
    time.sleep(0.05)
sys.exit("the job did not finish in time")
"""


class Host:
    """A machine of its own as far as disk goes: a home, a data folder, a temp folder and a
    working folder holding its copy of hosts_jobs.py; only the queue and store URLs are shared."""

    def __init__(self, root: Path, name: str, urls: dict[str, str]) -> None:
        self.name = name
        self.home, self.data, self.tmp, self.work = (root / name / d for d in ("home", "data", "tmp", "work"))
        for folder in (self.home, self.data, self.tmp, self.work):
            folder.mkdir(parents=True)
        shutil.copy(HERE / "hosts_jobs.py", self.work)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GEYSER_", "XDG_"))}
        self.env.update(urls)
        self.env.update(HOME=str(self.home), XDG_DATA_HOME=str(self.data), TMPDIR=str(self.tmp),
                        GEYSER_TEST_GROUP=name,
                        PYTHONPATH=os.pathsep.join([str(self.work), os.environ.get("PYTHONPATH", "")]))

    def popen(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        """Run `python ARGS` in this host's working folder, its output in `log` there."""
        with (self.work / log).open("w") as out:
            return subprocess.Popen([sys.executable, *args], cwd=self.work, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT)

    def output(self, log: str) -> str:
        return (self.work / log).read_text()


class Group(Host):
    """A host running `python -m geyser.worker -c 2 -m hosts_jobs`."""

    def __init__(self, root: Path, name: str, urls: dict[str, str]) -> None:
        super().__init__(root, name, urls)
        self.proc = self.popen("-m", "geyser.worker", "-c", str(GROUP_SIZE), "-m", "hosts_jobs",
                               "--progress-interval", "0.1", log="worker.log")

    def children(self) -> list[int]:
        """PIDs of the worker processes the supervisor runs now."""
        try:
            return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except FileNotFoundError:
            return []

    def kill_all(self) -> None:
        """kill -9 the supervisor and every worker process: the host dies."""
        pids = self.children()
        self.proc.kill()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def pid_of(j: geyser.BaseJob) -> int:
    assert j.worker is not None
    return int(j.worker.rsplit(":", 1)[1])


def watching(server: Beanstalkd, tube: str) -> int:
    """How many connections watch `tube` on the server now."""
    with greenstalk.Client(("127.0.0.1", server.port)) as raw:
        try:
            return int(raw.stats_tube(tube)["current-watching"])
        except greenstalk.NotFoundError:  # nobody watches it yet
            return 0


@pytest.fixture
def hosts(network_store: NetworkStore, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Group, Group, Host, Beanstalkd]]:
    """Two worker groups and a producer host on one beanstalkd and one network store, with
    both groups' workers watching the queues before the test starts."""
    server = Beanstalkd()
    urls = {"GEYSER_QUEUE_URL": server.url, "GEYSER_STORE_URL": network_store.url}
    for k, v in urls.items():
        monkeypatch.setenv(k, v)
    geyser.configure()
    a, b = Group(tmp_path, "A", urls), Group(tmp_path, "B", urls)
    producer = Host(tmp_path, "C", urls)
    try:
        for tube in ("hosts_count", "hosts_held"):
            wait_for(f"every worker process of both groups to watch {tube}",
                     lambda: watching(server, tube) >= 2 * GROUP_SIZE)
        yield a, b, producer, server
        for g in (a, b):
            assert not any(g.data.iterdir()), f"group {g.name} wrote into its data folder: {list(g.data.iterdir())}"
    finally:
        for g in (a, b):
            if g.proc.poll() is None:
                g.kill_all()
        geyser.configure()
        server.stop()


def test_two_groups_drain_one_queue_each_job_succeeding_once(hosts) -> None:
    a, b, _, _ = hosts
    uuids = [geyser.make_base_job({}, "hosts_count").enqueue() for _ in range(24)]
    wait_for("every job to finish", lambda: all(job(u).status in FINISHED for u in uuids), timeout=60)
    ran_on = []
    for u in uuids:
        j = job(u)
        ran = [e["msg"] for e in j.events if e["action"] == "ran"]
        assert (j.status, j.attempts, j.failures, j.errors) == ("succeeded", 1, 0, []), j.to_document()
        assert len(ran) == 1 and ran[0] == f"ran on {j.resultString}", j.events
        ran_on.append(j.resultString)
    assert set(ran_on) == {"A", "B"}, f"one group did every job: {ran_on}"
    stats = client().stats_tube("hosts_count")
    assert stats["ready"] == stats["reserved"] == stats["buried"] == stats["delayed"] == 0, stats
    assert (a.stop(), b.stop()) == (0, 0), a.output("worker.log") + b.output("worker.log")


def test_a_producer_in_a_third_process_reads_the_progress_a_group_writes(hosts) -> None:
    a, b, producer, _ = hosts
    uuid = geyser.make_base_job({}, "hosts_held").enqueue()
    watcher = producer.popen("-c", WATCHER, uuid, "60", log="watcher.log")
    try:
        def views() -> list[dict]:
            return [json.loads(line) for line in producer.output("watcher.log").splitlines() if line.startswith("{")]

        def half_way() -> bool:
            return any(v["status"] == "running" and v["completeness"] == 0.5 and v["events"] for v in views())

        wait_for("the producer to see the job half way", half_way)
        seen = next(v for v in views() if v["status"] == "running" and v["events"])
        runner = a if seen["events"] == ["half way on A"] else b
        assert seen["events"] == [f"half way on {runner.name}"], seen
        assert pid_of(job(uuid)) in runner.children(), (seen, runner.children())
        (runner.work / f"release-{uuid}").touch()
        wait_for("the producer to see the job finish", lambda: watcher.poll() is not None)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(5)
    assert watcher.returncode == 0, producer.output("watcher.log")
    last = views()[-1]
    assert (last["status"], last["completeness"]) == ("succeeded", 1.0), last
    j = job(uuid)
    assert (j.attempts, j.runs, j.errors, j.resultString) == (1, 1, [], f"attempt 1 on {runner.name}")


def test_a_group_killed_mid_job_is_recovered_by_the_other(hosts) -> None:
    a, b, _, _ = hosts
    # A short TTR: the survivor takes the attempt for lost once its heartbeat is older than that.
    uuid = geyser.make_base_job({}, "hosts_held").enqueue(ttr=2)
    wait_for("the job to run", lambda: job(uuid).runs == 1 and job(uuid).status == "running")
    victim = a if pid_of(job(uuid)) in a.children() else b
    survivor = b if victim is a else a
    assert pid_of(job(uuid)) in victim.children()
    victim.kill_all()
    wait_for("the other group to finish the job", lambda: job(uuid).status in FINISHED, timeout=60)
    j = job(uuid)
    assert (j.status, j.attempts, j.runs, j.failures) == ("succeeded", 2, 2, 1), j.to_document()
    assert j.errors[0]["errorCode"] in ("worker-lost", "worker-crashed") and j.errors[0]["attempt"] == 1, j.errors
    assert j.resultString == f"attempt 2 on {survivor.name}"
    assert pid_of(j) in survivor.children()
    assert survivor.stop() == 0, survivor.output("worker.log")


def test_readme_several_machines_setup_runs_as_written(tmp_path: Path) -> None:
    """The README's PostgreSQL + beanstalkd block, run by bash from the repository root with
    only names changed: a free port for beanstalkd's 11300, a temp folder for its binlog and a
    fresh database for `jobs` (dropped at the end). Its last line stops what it started;
    anything left running is a failure (and is stopped)."""
    script, port, database = readme_block("## Running on several machines"), free_port(), f"t_{uuids.uuid4().hex}"
    names = {"11300": str(port), "~/beanstalkd-binlog": str(tmp_path / "binlog"),
             "-U postgres jobs": f"-U postgres {database}", ":5432/jobs?": f":5432/{database}?"}
    for written, used in names.items():
        assert written in script, f"{written!r} not in the README block:\n{script}"
        script = script.replace(written, used)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEYSER_")}
    out_file = tmp_path / "out.txt"
    try:
        with out_file.open("w") as out:
            shell = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            try:
                shell.wait(timeout=120)
                wait_for("the block's workers and beanstalkd to exit", lambda: not live_members(shell.pid))
            finally:
                try:
                    os.killpg(shell.pid, signal.SIGKILL)
                except ProcessLookupError:  # nothing left to stop
                    pass
        out = out_file.read_text()
        assert shell.returncode == 0, out
        printed = [line.split() for line in out.splitlines() if line.startswith(("succeeded ", "failed "))]
        assert sorted(words[:3] for words in printed) == [["succeeded", "processed", f"part-{n}.csv"]
                                                          for n in range(4)], out
        assert all(len(words) == 4 and re.fullmatch(r".+:\d+", words[3]) for words in printed), out  # host:pid
        assert any((tmp_path / "binlog").iterdir()), "beanstalkd wrote no binlog"
        stored = psql(database, "SELECT count(*) FROM geyser.geyser_documents WHERE status = 'succeeded'")
        assert stored == "4", out
    finally:
        psql("test", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def psql(database: str, sql: str) -> str:
    """One statement on the test server's `database` (POSTGRES_URL's server)."""
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}"
    done = subprocess.run(["psql", url, "-X", "-q", "-w", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
