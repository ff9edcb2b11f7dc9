"""Private servers for the soak and the partition drill (tests/soak/): a beanstalkd with a
binlog, a PostgreSQL cluster of its own (initdb into a temp folder, as the ``postgres``
user when running as root, since PostgreSQL refuses root) and a Redis server with
``appendonly yes``, each on a free port of the address given, so they can be killed and
started again without touching the machine's shared 5432/6379 servers. Each is stopped by
its own PID. Touches only the folder it is given and the processes it starts."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

def _pg_bin() -> Path:
    """Where PostgreSQL's server programs are: $SOAK_PG_BIN, else Debian's newest
    /usr/lib/postgresql/<version>/bin."""
    if os.environ.get("SOAK_PG_BIN"):
        return Path(os.environ["SOAK_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
START_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, what: str, proc: subprocess.Popen[bytes],
                   timeout: float = START_TIMEOUT) -> None:
    """Return once ``host:port`` accepts a connection; raise naming ``what`` if ``proc``
    exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout:g} s")


class Server:
    """A server process that can be killed and started again on the same port and data."""

    name = "server"
    #: The signal that ends it as a crash would (no clean shutdown).
    crash_signal = signal.SIGKILL

    def __init__(self, folder: Path, host: str = "127.0.0.1", prefix: list[str] | None = None, port: int = 0) -> None:
        self.folder, self.host = folder, host
        #: A command prefix, e.g. ``ip netns exec NAME`` to start it in a network namespace
        #: (give the ``port`` then: a free one here says nothing about there).
        self.prefix = prefix or []
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = (folder / f"{self.name}.log").open("ab")

    def command(self) -> list[str]:
        raise NotImplementedError

    def popen_kwargs(self) -> dict[str, object]:
        return {}

    def start(self) -> None:
        """Start it (again) and wait until it accepts connections."""
        self.proc = subprocess.Popen([*self.prefix, *self.command()], stdout=self.log, stderr=subprocess.STDOUT,
                                     **self.popen_kwargs())  # type: ignore[call-overload]
        wait_listening(self.host, self.port, self.name, self.proc)
        self.wait_ready()

    def wait_ready(self) -> None:
        """Return once it answers requests (listening may come first); servers that answer
        as soon as they listen need nothing more."""

    def crash(self) -> None:
        """End it the way a crash would, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(self.crash_signal)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def stop(self) -> None:
        self.crash()
        self.log.close()


class Beanstalkd(Server):
    """beanstalkd with a binlog (``-b``), so a restart keeps its jobs."""

    name = "beanstalkd"

    def __init__(self, folder: Path, host: str = "127.0.0.1", prefix: list[str] | None = None, port: int = 0) -> None:
        super().__init__(folder, host, prefix, port)
        self.binlog = folder / "binlog"
        self.binlog.mkdir(exist_ok=True)

    def command(self) -> list[str]:
        exe = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
        return [exe, "-l", self.host, "-p", str(self.port), "-b", str(self.binlog)]

    @property
    def url(self) -> str:
        return f"beanstalkd://{self.host}:{self.port}"


class Redis(Server):
    """redis-server with ``appendonly yes``: every write is in the file before the reply,
    so a kill -9 loses nothing."""

    name = "redis"

    def __init__(self, folder: Path, host: str = "127.0.0.1", prefix: list[str] | None = None, port: int = 0) -> None:
        super().__init__(folder, host, prefix, port)
        self.data = folder / "redis"
        self.data.mkdir(exist_ok=True)

    def command(self) -> list[str]:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        return [exe, "--port", str(self.port), "--bind", self.host, "--dir", str(self.data), "--appendonly", "yes",
                "--save", "", "--protected-mode", "no"]

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0?prefix=soak:"


class Postgres(Server):
    """A PostgreSQL cluster of its own (``fsync=off``: a killed server loses nothing the
    kernel has; only a machine crash would). Crashed with SIGQUIT (immediate shutdown: no
    checkpoint, crash recovery at the next start): a SIGKILL of the postmaster would leave
    its backends holding the shared memory."""

    name = "postgresql"
    crash_signal = signal.SIGQUIT

    def __init__(self, folder: Path, host: str = "127.0.0.1", prefix: list[str] | None = None, port: int = 0) -> None:
        super().__init__(folder, host, prefix, port)
        self.data = folder / "pgdata"
        self.sockets = folder / "pgsock"
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        for d in (self.data, self.sockets):
            d.mkdir(exist_ok=True)
            if self.user is not None:
                os.chown(d, self.user.pw_uid, self.user.pw_gid)
        if self.user is not None:  # the postgres user must reach its folders
            os.chmod(folder, 0o755)
        initdb = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync"]
        done = subprocess.run(initdb, capture_output=True, text=True,
                              **self.popen_kwargs())  # type: ignore[call-overload]
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")

    def wait_ready(self) -> None:
        """Wait until ``pg_isready`` says it accepts connections: after a crash it listens
        while still recovering, and refuses with "the database system is starting up"."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while starting")
            ready = subprocess.run([*self.prefix, str(PG_BIN / "pg_isready"), "-q", "-h", self.host,
                                    "-p", str(self.port)], capture_output=True)
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not accept connections within {START_TIMEOUT:g} s")

    def popen_kwargs(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def command(self) -> list[str]:
        return [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sockets),
                "-c", f"listen_addresses={self.host}", "-c", "fsync=off", "-c", "max_connections=1000"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres?schema=soak"


STORE_SERVERS: dict[str, type[Server]] = {"postgresql": Postgres, "redis": Redis}
