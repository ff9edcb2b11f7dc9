"""The supervisor of ``python -m geyser.worker``: the command's own process.

It starts N worker processes (``python -m geyser.worker --child ...``, each in its
own process group so a terminal's Ctrl-C reaches them only through here), giving
each the job modules it imported (``-m`` and ``geyser.registry.JOB_MODULES``) and its
``sys.path``. It restarts a child that dies (with a growing delay while children keep
dying young, unless a job it ran was the cause), records on the job a child died
running how it died (``geyser._core.record_crash``, from the child's ledger, see
``geyser.ledger``), stops with the message when a child cannot start as configured,
passes SIGTERM/SIGINT on to the children, and runs the maintenance sweep periodically.
With ``--metrics-port`` it gives the children a private ``PROMETHEUS_MULTIPROC_DIR`` and
serves the sum of their metrics (``geyser.metrics``). It runs no jobs; it touches the
store and queue only through the sweep, crash records and queue statistics (``--burst``,
the metrics' queue depths).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from geyser import _core, maintenance, metrics, registry
from geyser.config import client
from geyser.errors import BackendError, ConfigError, GeyserError
from geyser.ledger import LedgerEntry, read_ledger
from geyser.worker import EXIT_CONFIG, EXIT_RECYCLE, EXIT_REPLACE

__all__ = ["Supervisor", "describe_exit"]

log = logging.getLogger("geyser.supervisor")

#: A child that dies sooner than this after its start counts towards the restart backoff.
YOUNG = 10.0
#: Restart delays: BACKOFF_BASE * 2^(deaths-1), at most BACKOFF_MAX seconds.
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
#: After a second signal, children still alive this long later are killed.
KILL_AFTER = 5.0
TICK = 0.1
#: --burst: how often an idle supervisor looks whether reserved jobs came back or finished.
BURST_POLL = 0.5


def describe_exit(pid: int, code: int) -> str:
    """How worker process ``pid`` ended, as recorded on the job it was running."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process {pid} died: killed by {name}"
    return f"worker process {pid} died: exited with status {code}"


@dataclass
class Slot:
    """One of the N places for a worker process."""

    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    #: Young deaths in a row, for the backoff.
    deaths: int = 0
    #: When a dead child may be started again (monotonic).
    restart_at: float = 0.0
    #: Burst mode: the child found the queues empty and exited 0.
    done: bool = False


class Supervisor:
    """Keeps ``args.concurrency`` worker processes running until told to stop."""

    def __init__(self, args: argparse.Namespace, argv: list[str], modules: list[str], queues: list[str]) -> None:
        self.args = args
        self.queues = queues
        self.ledger_dir = tempfile.mkdtemp(prefix="geyser-supervisor-")
        given = set(args.module)
        extra_modules = [arg for m in modules if m not in given for arg in ("-m", m)]
        self.child_cmd = [sys.executable, "-m", "geyser.worker", *argv, *extra_modules, "--child",
                          "--ledger-dir", self.ledger_dir]
        # The children import the job modules from where this process found them
        # (a launcher script's directory, paths it added).
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        self.child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        #: Where the children write their metrics (--metrics-port), removed at exit.
        self.metrics_dir: str | None = None
        if args.metrics_port is not None:
            self.metrics_dir = tempfile.mkdtemp(prefix="geyser-metrics-")
            self.child_env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        self.slots = [Slot() for _ in range(args.concurrency)]
        self.signals = 0
        self.kill_at: float | None = None
        #: Why the supervisor stops on its own (a child that cannot start as configured).
        self.fatal: str | None = None
        self.next_sweep = time.monotonic() + args.sweep_interval
        #: Some sweep of this supervisor's took the maintenance lease (given up at exit).
        self.led_maintenance = False
        self.next_burst_check = 0.0

    def on_signal(self, signum: int, _frame: object) -> None:
        """Pass the signal on as SIGTERM: the first means finish or hand back within
        the grace period, the second hand back now."""
        self.signals += 1
        log.info("supervisor %d: %s (%d), passing it to the workers", os.getpid(), signal.Signals(signum).name, self.signals)
        if self.signals >= 2:
            self.kill_at = time.monotonic() + KILL_AFTER
        self.terminate_children()

    def terminate_children(self) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)

    def start(self, slot: Slot) -> None:
        slot.proc = subprocess.Popen(self.child_cmd, process_group=0, env=self.child_env)
        slot.started = time.monotonic()
        log.debug("supervisor: started worker process %d", slot.proc.pid)

    def reap(self, slot: Slot, now: float) -> None:
        """Note a child that exited: record a crash on the jobs it was running, and plan
        its restart (or the supervisor's stop)."""
        assert slot.proc is not None
        code = slot.proc.returncode
        pid, slot.proc = slot.proc.pid, None
        state = read_ledger(self.ledger_dir, pid)
        if self.metrics_dir is not None:
            metrics.worker_process_dead(pid, self.metrics_dir)
        if code == EXIT_CONFIG:
            self.stop_for(state.config_error or f"worker process {pid} cannot start as configured (see its log above)")
            return
        # A process that ended itself to stop a stuck job (EXIT_REPLACE) saved its jobs' outcomes.
        crashed = state.running if code != EXIT_REPLACE else []
        for entry in crashed:
            self.record_crash(entry, describe_exit(pid, code))
        if self.signals or self.fatal:
            return
        if self.args.burst and code == 0:
            slot.done = True
            return
        if code == EXIT_RECYCLE:
            log.info("supervisor: worker process %d reached its limit; replacing it", pid)
            slot.deaths, slot.restart_at = 0, now
            return
        # A death a job caused does not slow the restarts: the job's retry budget bounds it.
        if crashed or code == EXIT_REPLACE or now - slot.started >= YOUNG:
            slot.deaths = 0
        else:
            slot.deaths += 1
        delay = 0.0 if slot.deaths == 0 else min(BACKOFF_BASE * 2 ** (slot.deaths - 1), BACKOFF_MAX)
        slot.restart_at = now + delay
        log.warning("supervisor: worker process %d exited with %s; restarting in %.1f s", pid, code, delay)

    def record_crash(self, entry: LedgerEntry, reason: str) -> None:
        """Record on the job that its attempt died with its process (the retry policy applies)."""
        try:
            done = _core.record_crash(client(), entry.uuid, entry.fence, entry.attempt, reason)
        except GeyserError as e:
            log.error("supervisor: job %s attempt %d: could not record that %s: %s", entry.uuid, entry.attempt,
                      reason, e)
            return
        log.warning("supervisor: job %s attempt %d did not finish: %s (job %s)", entry.uuid, entry.attempt, reason,
                    done)

    def stop_for(self, message: str) -> None:
        """Stop every child and exit with EXIT_CONFIG: restarting would not help."""
        if self.fatal is None:
            self.fatal = message
            log.error("supervisor: a worker process cannot start: %s; stopping", message)
            self.terminate_children()

    def sweep(self) -> None:
        """Run the maintenance sweep, logging (never raising) what goes wrong."""
        try:
            self.led_maintenance |= maintenance.sweep()["leader"]
        except GeyserError as e:
            log.warning("supervisor: maintenance sweep failed: %s", e)

    def release_maintenance(self) -> None:
        """On the way out: give up the maintenance lease this supervisor took, so another
        host's supervisor sweeps at once rather than after the lease runs out."""
        if not self.led_maintenance:
            return
        try:
            if maintenance.release_lease():
                log.info("supervisor: gave up the maintenance lease")
        except GeyserError as e:
            log.warning("supervisor: could not give up the maintenance lease (it runs out by itself): %s", e)

    def queues_drained(self) -> bool | None:
        """--burst, every child done: True when the queues hold no ready, delayed or
        reserved job; False when jobs are ready or delayed again (children are needed);
        None while jobs are only reserved (by a process that may yet die) or the queue
        cannot be asked."""
        try:
            # Entries of job types no class here knows are left for other workers.
            backlog = client().backlog(self.queues, sorted(registry.job_classes()))
        except GeyserError as e:
            log.warning("supervisor: cannot read queue statistics: %s", e)
            return None
        waiting = backlog["waiting"] - backlog["foreign"]
        reserved = backlog["reserved"]
        if waiting:
            return False
        return True if reserved == 0 else None

    def burst_finished(self, now: float) -> bool:
        """--burst with every child done: exit, or start them again for jobs that came back."""
        if now < self.next_burst_check:
            return False
        self.next_burst_check = now + BURST_POLL
        drained = self.queues_drained()
        if drained is False:
            log.info("supervisor: jobs came back to the queues; starting the workers again")
            for slot in self.slots:
                slot.done, slot.restart_at = False, now
        return drained is True

    def run(self) -> int:
        """Supervise until every child has exited after a signal (or, with --burst, the
        queues are empty); EXIT_CONFIG when a child cannot start as configured."""
        stop_metrics = None
        try:
            try:
                client()
            except ConfigError as e:
                log.error("cannot start: %s", e)
                return EXIT_CONFIG
            except BackendError as e:
                # A server that does not answer yet: a service's workers keep trying (their
                # restarts back off); a --burst run has nothing to drain and says so.
                if self.args.burst:
                    log.error("cannot start: %s", e)
                    return 1
                log.warning("supervisor: %s; the worker processes will keep trying", e)
            if self.metrics_dir is not None:
                address, port = self.args.metrics_address, self.args.metrics_port
                try:
                    stop_metrics = metrics.serve_worker_metrics(address, port, self.metrics_dir, self.queues)
                except OSError as e:
                    log.error("cannot start: --metrics-port %d on %s: %s", port, address, e)
                    return EXIT_CONFIG
                log.info("supervisor %d: metrics on http://%s:%d/metrics", os.getpid(), address, port)
            signal.signal(signal.SIGTERM, self.on_signal)
            signal.signal(signal.SIGINT, self.on_signal)
            log.info("supervisor %d: %d worker process(es)", os.getpid(), len(self.slots))
            return self._loop()
        finally:
            self.release_maintenance()
            if stop_metrics is not None:
                stop_metrics()
            shutil.rmtree(self.ledger_dir, ignore_errors=True)
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _loop(self) -> int:
        while True:
            now = time.monotonic()
            stopping = bool(self.signals or self.fatal)
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is not None:
                    self.reap(slot, now)
                    stopping = bool(self.signals or self.fatal)
                if slot.proc is None and not slot.done and not stopping and now >= slot.restart_at:
                    self.start(slot)
            alive = [s.proc for s in self.slots if s.proc is not None]
            if not alive:
                if self.fatal:
                    return EXIT_CONFIG
                if self.signals or (all(s.done for s in self.slots) and self.burst_finished(now)):
                    return 0
            if self.kill_at is not None and now >= self.kill_at:
                for proc in alive:
                    log.warning("supervisor: worker process %d did not stop; killed", proc.pid)
                    proc.kill()
                self.kill_at = None
            if self.args.sweep_interval > 0 and now >= self.next_sweep and not stopping:
                self.sweep()
                self.next_sweep = now + self.args.sweep_interval
            time.sleep(TICK)
