"""The attempts a worker process is running, in a small file its supervisor reads, and
the crashes the supervisor hands on for recording.

A worker process writes ``<dir>/<pid>.json`` (in place, with one write call) when an
attempt starts and when it ends, and when it cannot start (for a configuration reason,
or another). When the process dies, the supervisor reads the file to learn which jobs
died with it or why it would not start. The supervisor imports neither the native core
nor a store client, so it does not record a crash itself: it writes
``<dir>/crashed-<pid>.json`` (``hand_over_crash``: the attempts and how the process
died), and the next worker process to start records it on the jobs before it reserves
(``record_crashes``); crashes left when no process starts any more (the command is
stopping) are recorded by ``python -m geyser.ledger DIR``, which the supervisor runs on
its way out. The directory is the supervisor's private temporary directory; nothing
else touches it. Only ``record_crashes`` touches the store (``geyser._core.record_crash``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any, NamedTuple

__all__ = ["Ledger", "LedgerEntry", "LedgerState", "hand_over_crash", "main", "read_ledger", "record_crashes"]

log = logging.getLogger("geyser.ledger")


#: A string as ``json.dumps`` writes it (ASCII, escaped).
_json_str = json.encoder.encode_basestring_ascii
#: The state with no attempt running, as ``_write`` would encode it.
_NONE_RUNNING = json.dumps({"running": []}).encode()


class LedgerEntry(NamedTuple):
    """One attempt a worker process is running (a NamedTuple: no dataclasses in the supervisor)."""

    uuid: str
    fence: str
    attempt: int


class LedgerState(NamedTuple):
    """What a dead worker process's file said."""

    running: list[LedgerEntry]
    #: Why the process could not start, when it exited for a configuration reason.
    config_error: str | None = None
    #: Why the process could not start otherwise (a queue or store that does not answer).
    start_error: str | None = None


class Ledger:
    """The writer side, one per worker process; a ``None`` directory writes nothing."""

    def __init__(self, directory: str | None, pid: int | None = None) -> None:
        self.path = None if directory is None else os.path.join(directory, f"{pid or os.getpid()}.json")
        self._lock = threading.Lock()
        self._running: dict[int, LedgerEntry] = {}
        self._fd: int | None = None
        self._size = 0

    def started(self, slot: int, entry: LedgerEntry) -> None:
        """Runner ``slot`` started the attempt ``entry``."""
        with self._lock:
            self._running[slot] = entry
            self._write_running()

    def ended(self, slot: int) -> None:
        """Runner ``slot``'s attempt has its outcome saved (or handed back)."""
        with self._lock:
            if self._running.pop(slot, None) is not None:
                self._write_running()

    def _write_running(self) -> None:
        """Write the running attempts: the text ``json.dumps({"running": [entry._asdict(), ...]})``
        gives, put together directly (twice per job; ``json.dumps`` of the dicts cost several
        times the write itself)."""
        if self.path is None:
            return
        if not self._running:
            self._write_bytes(_NONE_RUNNING)
            return
        entries = ", ".join(
            f'{{"uuid": {_json_str(e.uuid)}, "fence": {_json_str(e.fence)}, "attempt": {int(e.attempt)!r}}}'
            for e in self._running.values()
        )
        self._write_bytes(f'{{"running": [{entries}]}}'.encode())

    def config_error(self, message: str) -> None:
        """The process cannot start as configured: ``message`` says why."""
        with self._lock:
            self._write({"running": [], "config_error": message})

    def start_error(self, message: str) -> None:
        """The process cannot start for a reason that may pass (a server that does not answer)."""
        with self._lock:
            self._write({"running": [], "start_error": message})

    def _write(self, state: dict[str, Any]) -> None:
        """Overwrite the file in place with one ``pwrite``: a process killed at any moment
        leaves either the old state or the new one (padded with spaces, which JSON ignores),
        and it costs no file creation per attempt."""
        self._write_bytes(json.dumps(state).encode())

    def _write_bytes(self, data: bytes) -> None:
        """``_write`` of text already encoded."""
        if self.path is None:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.pwrite(self._fd, data.ljust(self._size), 0)
        self._size = max(self._size, len(data))


def read_ledger(directory: str, pid: int) -> LedgerState:
    """The last state worker process ``pid`` wrote, and forget its file (an empty state
    when it wrote none or the file cannot be read)."""
    path = os.path.join(directory, f"{pid}.json")
    try:
        with open(path) as f:
            raw = json.load(f)
        running = _entries(raw.get("running", []))
        return LedgerState(running, raw.get("config_error"), raw.get("start_error"))
    except (OSError, ValueError, KeyError, TypeError):
        return LedgerState([])
    finally:
        _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _entries(raw: Any) -> list[LedgerEntry]:
    return [LedgerEntry(str(e["uuid"]), str(e["fence"]), int(e["attempt"])) for e in raw]


def hand_over_crash(directory: str, pid: int, reason: str, running: list[LedgerEntry]) -> None:
    """Leave in ``directory`` the attempts that died with worker process ``pid`` and how it
    died (``reason``), for ``record_crashes``. The file appears whole or not at all."""
    path = os.path.join(directory, f"crashed-{pid}.json")
    partial = os.path.join(directory, f"crashed-{pid}.partial")
    with open(partial, "w") as f:
        f.write(json.dumps({"reason": reason, "running": [e._asdict() for e in running]}))
    os.replace(partial, path)


def record_crashes(directory: str) -> int:
    """Record on their jobs the crashes handed over in ``directory``, each by one process
    only (it claims the file first), and forget them; returns how many attempts were
    recorded. A crash that cannot be recorded (the store is away) is logged; the job is
    then recovered as lost by whoever reserves it next, or by the maintenance sweep."""
    from pathlib import Path  # here, as the rest: the supervisor never records

    from geyser import _core
    from geyser.config import client
    from geyser.errors import GeyserError

    recorded = 0
    for path in sorted(Path(directory).glob("crashed-*.json")):
        claimed = path.with_name(f"claimed-{os.getpid()}-{path.name}")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:  # another worker process claimed it
            continue
        try:
            raw = json.loads(claimed.read_text())
            reason, running = str(raw["reason"]), _entries(raw["running"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("cannot read the crash record %s: %s", path.name, e)
            continue
        finally:
            claimed.unlink(missing_ok=True)
        for entry in running:
            try:
                done = _core.record_crash(client(), entry.uuid, entry.fence, entry.attempt, reason)
            except GeyserError as e:
                log.error("job %s attempt %d: could not record that %s: %s", entry.uuid, entry.attempt, reason, e)
                continue
            recorded += 1
            log.warning("job %s attempt %d did not finish: %s (job %s)", entry.uuid, entry.attempt, reason, done)
    return recorded


def main(argv: list[str] | None = None) -> int:
    """``python -m geyser.ledger DIR``: record the crashes handed over in DIR (the
    supervisor runs it when no worker process will start to do it)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m geyser.ledger", description=main.__doc__)
    p.add_argument("directory")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--log-format", default="text")
    args = p.parse_args(argv)
    from geyser import logs

    logs.configure(args.log_level, args.log_format)
    record_crashes(args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
