"""The attempts a worker process is running, in a small file its supervisor reads.

A worker process writes ``<dir>/<pid>.json`` (in place, with one write call) when an
attempt starts and when it ends, and when it cannot start for a configuration reason.
When the process dies, the supervisor reads the file to learn which jobs died with it
(and records the cause on them) or why it would not start.
The directory is the supervisor's private temporary directory; nothing else touches it.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Ledger", "LedgerEntry", "LedgerState", "read_ledger"]


@dataclass(frozen=True)
class LedgerEntry:
    """One attempt a worker process is running."""

    uuid: str
    fence: str
    attempt: int


@dataclass
class LedgerState:
    """What a dead worker process's file said."""

    running: list[LedgerEntry] = field(default_factory=list)
    #: Why the process could not start, when it exited for a configuration reason.
    config_error: str | None = None


class Ledger:
    """The writer side, one per worker process; a ``None`` directory writes nothing."""

    def __init__(self, directory: str | None, pid: int | None = None) -> None:
        self.path = None if directory is None else Path(directory) / f"{pid or os.getpid()}.json"
        self._lock = threading.Lock()
        self._running: dict[int, LedgerEntry] = {}
        self._fd: int | None = None
        self._size = 0

    def started(self, slot: int, entry: LedgerEntry) -> None:
        """Runner ``slot`` started the attempt ``entry``."""
        with self._lock:
            self._running[slot] = entry
            self._write({"running": [vars(e) for e in self._running.values()]})

    def ended(self, slot: int) -> None:
        """Runner ``slot``'s attempt has its outcome saved (or handed back)."""
        with self._lock:
            if self._running.pop(slot, None) is not None:
                self._write({"running": [vars(e) for e in self._running.values()]})

    def config_error(self, message: str) -> None:
        """The process cannot start: ``message`` says why."""
        with self._lock:
            self._write({"running": [], "config_error": message})

    def _write(self, state: dict[str, Any]) -> None:
        """Overwrite the file in place with one ``pwrite``: a process killed at any moment
        leaves either the old state or the new one (padded with spaces, which JSON ignores),
        and it costs no file creation per attempt."""
        if self.path is None:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        data = json.dumps(state).encode()
        os.pwrite(self._fd, data.ljust(self._size), 0)
        self._size = max(self._size, len(data))


def read_ledger(directory: str, pid: int) -> LedgerState:
    """The last state worker process ``pid`` wrote, and forget its file (an empty state
    when it wrote none or the file cannot be read)."""
    path = Path(directory) / f"{pid}.json"
    try:
        raw = json.loads(path.read_text())
        running = [LedgerEntry(str(e["uuid"]), str(e["fence"]), int(e["attempt"])) for e in raw.get("running", [])]
        return LedgerState(running, raw.get("config_error"))
    except (OSError, ValueError, KeyError, TypeError):
        return LedgerState()
    finally:
        path.unlink(missing_ok=True)
