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
jobs and no maintenance sweep (each worker process runs the sweep). ``python -m
geyser.worker`` (``main``) makes it smaller still: ``HANDOVER_AFTER`` seconds after it
started the worker processes (their own start is then over, so the two do not compete for
a CPU), the command's process replaces itself (``os.execve``) with a bare interpreter
(``python -I -S``: no site-packages scan, no ``.pth`` hooks, no user environment) that
finds ``geyser`` from this file's path, imports only the standard modules the supervisor
uses and takes the worker processes over (``become_small``, ``resume``). A launcher script
that calls ``geyser.worker.main()`` keeps its process (``supervise``). Only with ``--metrics-port``
does it import the job modules (for the queues whose depths it serves) and
``prometheus_client``, and stay as it was started: it gives the children a private
``PROMETHEUS_MULTIPROC_DIR`` and serves the sum of their metrics (``geyser.metrics``).
It touches the queue and store only through those queue depths.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from geyser import logs
from geyser.ledger import hand_over_crash, read_ledger
from geyser.worker_cli import EXIT_CONFIG, EXIT_RECYCLE, EXIT_REPLACE, parse_args

if TYPE_CHECKING:
    import argparse

__all__ = ["Child", "Supervisor", "describe_exit", "main", "resume", "supervise"]

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
#: Seconds after the start of ``python -m geyser.worker`` when its process becomes the
#: small supervisor (``Supervisor.become_small``): the worker processes have started by then.
HANDOVER_AFTER = 1.0
#: The environment variable that hands the supervisor's state to the small supervisor.
STATE_VAR = "GEYSER_SUPERVISOR_STATE"
#: The program the small supervisor runs: ``python -I -S -c BOOT GEYSER_DIR ARGS...``.
BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from geyser.supervisor import resume; sys.exit(resume())"
#: The signals the supervisor passes on: blocked across the hand-over until the new
#: program's handlers are set (a signal mask and pending signals survive ``execve``), so
#: none is lost or ends the command with its children left.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def describe_exit(pid: int, code: int) -> str:
    """How worker process ``pid`` ended, as recorded on the job it was running."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process {pid} died: killed by {name}"
    return f"worker process {pid} died: exited with status {code}"


class Child:
    """A worker process this process started (the part of ``subprocess.Popen`` the
    supervisor uses, without importing ``subprocess``; it also stands for a process
    started before the hand-over, known by its pid)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    @classmethod
    def spawn(cls, cmd: list[str], env: dict[str, str]) -> Child:
        """Start ``cmd`` in a process group of its own, no signal blocked, SIGPIPE and
        SIGXFSZ at their defaults and no file descriptor but 0-2 (``fds_not_inherited``)."""
        return cls(os.posix_spawn(cmd[0], cmd, env, setpgroup=0, setsigmask=(),
                                  setsigdef=(signal.SIGPIPE, signal.SIGXFSZ)))

    def poll(self) -> int | None:
        """The exit status (negative: the signal that ended it), or None while it runs."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost
                self.returncode = 255
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fds_not_inherited() -> None:
    """Mark every file descriptor above 2 close-on-exec, as ``subprocess``'s ``close_fds``
    would for each child: the worker processes and the small supervisor get 0-2 only."""
    for name in os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:  # the directory's own descriptor, closed by now
                pass


class Slot:
    """One of the N places for a worker process."""

    def __init__(self) -> None:
        self.proc: Child | None = None
        self.started = 0.0
        #: Young deaths in a row, for the backoff.
        self.deaths = 0
        #: When a dead child may be started again (monotonic).
        self.restart_at = 0.0
        #: Burst mode: the child found the queues drained and exited 0.
        self.done = False


class Supervisor:
    """Keeps ``args.concurrency`` worker processes running until told to stop."""

    def __init__(self, args: argparse.Namespace, child_cmd: list[str], pythonpath: str, ledger_dir: str,
                 queues: list[str], metrics_dir: str | None = None) -> None:
        """``child_cmd``: a worker process's command line; ``pythonpath``: where it imports
        from; ``queues``: those whose depths ``--metrics-port`` serves (its children write
        their metrics to ``metrics_dir``)."""
        self.args = args
        self.queues = queues
        self.ledger_dir = ledger_dir
        self.child_cmd = child_cmd
        self.pythonpath = pythonpath
        self.child_env = {**os.environ, "PYTHONPATH": pythonpath}
        #: Where the children write their metrics (--metrics-port), removed at exit.
        self.metrics_dir = metrics_dir
        if metrics_dir is not None:
            self.child_env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        self.slots = [Slot() for _ in range(args.concurrency)]
        #: The command line, for ``become_small``; when to call it (monotonic; None: never).
        self.argv: list[str] = []
        self.handover_at: float | None = None
        #: This is the small supervisor, which took the worker processes over (``resume``).
        self.resumed = False
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
        slot.proc = Child.spawn(self.child_cmd, self.child_env)
        slot.started = time.monotonic()
        log.debug("supervisor: started worker process %d", slot.proc.pid)

    def become_small(self) -> None:
        """Replace this process with ``python -I -S`` (``BOOT``), which takes the worker
        processes and the slots' state over (``resume``); on failure, this process goes on
        supervising. ``-B`` and ``-O`` are passed on as set here."""
        self.handover_at = None
        geyser_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not (sys.executable and os.path.isfile(__file__)):  # no interpreter to start, or geyser in a zip
            return
        state = {"child_cmd": self.child_cmd, "pythonpath": self.pythonpath, "ledger_dir": self.ledger_dir,
                 "slots": [[None if s.proc is None else s.proc.pid, s.started, s.deaths, s.restart_at, s.done]
                           for s in self.slots]}
        flags = ["-I", "-S", *(["-B"] if sys.dont_write_bytecode else []), *(["-O"] * sys.flags.optimize)]
        cmd = [sys.executable, *flags, "-c", BOOT, geyser_dir, *self.argv]
        sys.stdout.flush()
        sys.stderr.flush()
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            os.execve(sys.executable, cmd, {**os.environ, STATE_VAR: json.dumps(state)})
        except OSError as e:
            log.warning("supervisor: cannot start a smaller interpreter (%s); supervising from this one", e)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

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
        if not any(name.startswith("crashed-") and name.endswith(".json") for name in os.listdir(self.ledger_dir)):
            return
        import subprocess  # here: a rare path

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
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one held across the hand-over arrives now
            if not self.resumed:
                log.info("supervisor %d: %d worker process(es)", os.getpid(), len(self.slots))
            return self._loop()
        finally:
            self.record_crashes_left()
            if stop_metrics is not None:
                stop_metrics()
            import shutil  # here: needed once, on the way out

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
            if self.handover_at is not None and now >= self.handover_at and not (self.signals or self.fatal):
                self.become_small()
            time.sleep(TICK)


def prepare(args: argparse.Namespace, argv: list[str]) -> Supervisor | int:
    """The supervisor of the command line ``argv`` (parsed: ``args``), its worker processes
    not yet started; or the exit status when it cannot start."""
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
    import tempfile  # here: the small supervisor never needs it

    ledger_dir = tempfile.mkdtemp(prefix="geyser-supervisor-")
    given = set(args.module)
    extra_modules = [arg for m in modules if m not in given for arg in ("-m", m)]
    child_cmd = [sys.executable, "-m", "geyser.worker", *argv, *extra_modules, "--child", "--ledger-dir", ledger_dir]
    # The children import the job modules from where this process found them
    # (a launcher script's directory, paths it added).
    pythonpath = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    metrics_dir = None if args.metrics_port is None else tempfile.mkdtemp(prefix="geyser-metrics-")
    fds_not_inherited()
    return Supervisor(args, child_cmd, pythonpath, ledger_dir, queues, metrics_dir)


def supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the supervisor of the command line ``argv`` (parsed: ``args``) in this process
    until it stops; returns its exit status."""
    supervisor = prepare(args, argv)
    return supervisor if isinstance(supervisor, int) else supervisor.run()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m geyser.worker`` without ``--child`` (see ``geyser.worker``):
    as ``supervise``, but without ``--metrics-port`` the command's process becomes a small
    interpreter ``HANDOVER_AFTER`` seconds in (``Supervisor.become_small``)."""
    argv = list(argv if argv is not None else sys.argv[1:])
    args = parse_args(argv)
    supervisor = prepare(args, argv)
    if isinstance(supervisor, int):
        return supervisor
    if args.metrics_port is None:
        supervisor.argv, supervisor.handover_at = argv, time.monotonic() + HANDOVER_AFTER
    return supervisor.run()


def resume() -> int:
    """The small supervisor (``BOOT``, the command line in ``sys.argv``, the state in
    ``STATE_VAR``): take over the worker processes and the slots' state, and supervise."""
    state = json.loads(os.environ.pop(STATE_VAR))
    args = parse_args(sys.argv[1:])
    logs.configure(args.log_level, args.log_format)
    supervisor = Supervisor(args, state["child_cmd"], state["pythonpath"], state["ledger_dir"], [])
    supervisor.resumed = True
    for slot, (pid, started, deaths, restart_at, done) in zip(supervisor.slots, state["slots"]):
        slot.proc = None if pid is None else Child(pid)
        slot.started, slot.deaths, slot.restart_at, slot.done = started, deaths, restart_at, done
    return supervisor.run()
