"""The supervisor of ``python -m geyser.worker``: the command's own process.

It starts N worker processes (``python -m geyser.worker --child ...``, each in its
own process group so a terminal's Ctrl-C reaches them only through here), giving
each the command's arguments, the modules of ``geyser.registry.JOB_MODULES`` (when a
launcher script set them) and its ``sys.path``. It restarts a child that dies (with a
growing delay while children keep dying young, unless a job it ran was the cause),
hands on how a child died to be recorded on the jobs it was running (read from the
child's ledger; the next child records it before it reserves, see ``geyser.ledger``),
stops with the message when a child cannot start as configured (or, with ``--burst``,
cannot reach its servers), passes SIGTERM/SIGINT on to the children, and exits once
they have all exited (with ``--burst``: once each found the queues drained).

It stays small: it imports neither the job modules nor the native core, and runs no
jobs and no maintenance sweep (each worker process runs the sweep). Only with
``--metrics-port`` does it import the job modules (for the queues whose depths it
serves) and ``prometheus_client``: it gives the children a private
``PROMETHEUS_MULTIPROC_DIR`` and serves the sum of their metrics (``geyser.metrics``).
It touches the queue and store only through those queue depths.
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
from pathlib import Path

from geyser import logs
from geyser.ledger import hand_over_crash, read_ledger
from geyser.worker_cli import EXIT_CONFIG, EXIT_RECYCLE, EXIT_REPLACE, parse_args

__all__ = ["Supervisor", "describe_exit", "main", "supervise"]

log = logging.getLogger("geyser.supervisor")

#: A child that dies sooner than this after its start counts towards the restart backoff.
YOUNG = 10.0
#: Restart delays: BACKOFF_BASE * 2^(deaths-1), at most BACKOFF_MAX seconds.
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
#: After a second signal, children still alive this long later are killed.
KILL_AFTER = 5.0
TICK = 0.1
#: How long the recording of crashes left at exit may take (``python -m geyser.ledger``).
RECORD_AT_EXIT_TIMEOUT = 60.0


def describe_exit(pid: int, code: int) -> str:
    """How worker process ``pid`` ended, as recorded on the job it was running."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process {pid} died: killed by {name}"
    return f"worker process {pid} died: exited with status {code}"


class Slot:
    """One of the N places for a worker process."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        #: Young deaths in a row, for the backoff.
        self.deaths = 0
        #: When a dead child may be started again (monotonic).
        self.restart_at = 0.0
        #: Burst mode: the child found the queues drained and exited 0.
        self.done = False


class Supervisor:
    """Keeps ``args.concurrency`` worker processes running until told to stop."""

    def __init__(self, args: argparse.Namespace, argv: list[str], modules: list[str], queues: list[str]) -> None:
        """``modules``: job modules the children import besides the ``-m`` ones; ``queues``:
        those whose depths ``--metrics-port`` serves."""
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
        #: Why the supervisor stops on its own (a child that cannot start as configured), and
        #: the exit status it then has.
        self.fatal: str | None = None
        self.fatal_status = EXIT_CONFIG

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
        """Note a child that exited: hand on how it died for the jobs it was running (to be
        recorded by the next child), and plan its restart (or the supervisor's stop)."""
        assert slot.proc is not None
        code = slot.proc.returncode
        pid, slot.proc = slot.proc.pid, None
        state = read_ledger(self.ledger_dir, pid)
        if self.metrics_dir is not None:
            from geyser import metrics

            metrics.worker_process_dead(pid, self.metrics_dir)
        if code == EXIT_CONFIG:
            self.stop_for(state.config_error or f"worker process {pid} cannot start as configured (see its log above)")
            return
        if self.args.burst and state.start_error:
            # A --burst run has nothing to drain without its servers; a service's workers keep trying.
            self.stop_for(state.start_error, status=1)
            return
        # A process that ended itself to stop a stuck job (EXIT_REPLACE) saved its jobs' outcomes.
        crashed = state.running if code != EXIT_REPLACE else []
        if crashed:
            hand_over_crash(self.ledger_dir, pid, describe_exit(pid, code), crashed)
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

    def stop_for(self, message: str, status: int = EXIT_CONFIG) -> None:
        """Stop every child and exit with ``status``: restarting would not help."""
        if self.fatal is None:
            self.fatal, self.fatal_status = message, status
            log.error("supervisor: a worker process cannot start: %s; stopping", message)
            self.terminate_children()

    def record_crashes_left(self) -> None:
        """On the way out: crashes handed over that no worker process will start to record
        are recorded by a short-lived ``python -m geyser.ledger``."""
        if not any(Path(self.ledger_dir).glob("crashed-*.json")):
            return
        cmd = [sys.executable, "-m", "geyser.ledger", self.ledger_dir, "--log-level", self.args.log_level,
               "--log-format", self.args.log_format]
        try:
            subprocess.run(cmd, env=self.child_env, timeout=RECORD_AT_EXIT_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            log.error("supervisor: recording the crashes of worker processes took over %g s; left to the "
                      "maintenance sweep", RECORD_AT_EXIT_TIMEOUT)

    def run(self) -> int:
        """Supervise until every child has exited after a signal (or, with --burst, each
        found the queues drained); EXIT_CONFIG when a child cannot start as configured."""
        stop_metrics = None
        try:
            if self.metrics_dir is not None:
                from geyser import metrics

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
            self.record_crashes_left()
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
                    return self.fatal_status
                if self.signals or all(s.done for s in self.slots):
                    return 0
            if self.kill_at is not None and now >= self.kill_at:
                for proc in alive:
                    log.warning("supervisor: worker process %d did not stop; killed", proc.pid)
                    proc.kill()
                self.kill_at = None
            time.sleep(TICK)


def supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the supervisor of the command line ``argv`` (parsed: ``args``) until it stops;
    returns its exit status."""
    logs.configure(args.log_level, args.log_format)
    sys.path.insert(0, os.getcwd())
    # Modules a launcher script registered; the -m modules may add more, which each child reads.
    registry = sys.modules.get("geyser.registry")
    modules: list[str] = list(getattr(registry, "JOB_MODULES", []))
    queues: list[str] = []
    if args.metrics_port is not None:  # the depths it serves are those of the queues the children watch
        from geyser.errors import ConfigError, GeyserError
        from geyser.worker import ConfigProblem, _configure

        try:
            modules, queues = _configure(args)
        except (ConfigProblem, ConfigError) as e:
            log.error("cannot start: %s", e)
            return EXIT_CONFIG
        except GeyserError as e:
            log.error("cannot start: %s", e)
            return 1
    return Supervisor(args, argv, modules, queues).run()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m geyser.worker`` without ``--child`` (see ``geyser.worker``)."""
    return supervise(parse_args(argv), list(argv if argv is not None else sys.argv[1:]))
