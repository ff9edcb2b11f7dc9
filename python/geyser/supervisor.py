"""The supervisor of ``python -m geyser.worker``: the command's own process.

It starts N worker processes (``python -m geyser.worker --child ...``, each in its
own process group so a terminal's Ctrl-C reaches them only through here), restarts
a child that dies (with a growing delay while children keep dying young), passes
SIGTERM/SIGINT on to them, and runs the maintenance sweep periodically. It runs
no jobs and touches the store and queue only through the sweep.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

from geyser import maintenance
from geyser.errors import GeyserError
from geyser.worker import EXIT_REPLACE

__all__ = ["Supervisor"]

log = logging.getLogger("geyser.supervisor")

#: A child that dies sooner than this after its start counts towards the restart backoff.
YOUNG = 10.0
#: Restart delays: BACKOFF_BASE * 2^(deaths-1), at most BACKOFF_MAX seconds.
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
#: After a second signal, children still alive this long later are killed.
KILL_AFTER = 5.0
TICK = 0.1


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

    def __init__(self, args: argparse.Namespace, argv: list[str]) -> None:
        self.args = args
        self.child_cmd = [sys.executable, "-m", "geyser.worker", *argv, "--child"]
        self.slots = [Slot() for _ in range(args.concurrency)]
        self.signals = 0
        self.kill_at: float | None = None
        self.next_sweep = time.monotonic() + args.sweep_interval

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Pass the signal on as SIGTERM: the first means finish or hand back within
        the grace period, the second hand back now."""
        self.signals += 1
        log.info("supervisor %d: %s (%d), passing it to the workers", os.getpid(), signal.Signals(signum).name, self.signals)
        if self.signals >= 2:
            self.kill_at = time.monotonic() + KILL_AFTER
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)

    def start(self, slot: Slot) -> None:
        slot.proc = subprocess.Popen(self.child_cmd, process_group=0)
        slot.started = time.monotonic()
        log.debug("supervisor: started worker process %d", slot.proc.pid)

    def reap(self, slot: Slot, now: float) -> None:
        """Note a child that exited and plan its restart."""
        assert slot.proc is not None
        code = slot.proc.returncode
        pid, slot.proc = slot.proc.pid, None
        if self.signals:
            return
        if self.args.burst and code == 0:
            slot.done = True
            return
        if code == EXIT_REPLACE or now - slot.started >= YOUNG:
            slot.deaths = 0
        else:
            slot.deaths += 1
        delay = 0.0 if slot.deaths == 0 else min(BACKOFF_BASE * 2 ** (slot.deaths - 1), BACKOFF_MAX)
        slot.restart_at = now + delay
        log.warning("supervisor: worker process %d exited with %s; restarting in %.1f s", pid, code, delay)

    def sweep(self) -> None:
        """Run the maintenance sweep, logging (never raising) what goes wrong."""
        try:
            maintenance.sweep()
        except GeyserError as e:
            log.warning("supervisor: maintenance sweep failed: %s", e)

    def run(self) -> int:
        """Supervise until every child has exited after a signal (or, with --burst, is done)."""
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        log.info("supervisor %d: %d worker process(es)", os.getpid(), len(self.slots))
        while True:
            now = time.monotonic()
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is not None:
                    self.reap(slot, now)
                if slot.proc is None and not slot.done and not self.signals and now >= slot.restart_at:
                    self.start(slot)
            alive = [s.proc for s in self.slots if s.proc is not None]
            if not alive and (self.signals or all(s.done for s in self.slots)):
                return 0
            if self.kill_at is not None and now >= self.kill_at:
                for proc in alive:
                    log.warning("supervisor: worker process %d did not stop; killed", proc.pid)
                    proc.kill()
                self.kill_at = None
            if self.args.sweep_interval > 0 and now >= self.next_sweep and not self.signals:
                self.sweep()
                self.next_sweep = now + self.args.sweep_interval
            time.sleep(TICK)
