"""The PostgreSQL store over TLS from Python, through ``GEYSER_STORE_URL``: a private
PostgreSQL cluster (tests/soak/servers.py) with ``ssl = on`` and a certificate from a
throwaway CA that ``openssl`` makes here, one server for the module. Enqueue, read back and a
compare-and-swap work with ``sslmode=require&sslrootcert=CA`` (the server sees TLS
connections), and ``verify-full`` to an address the certificate does not name fails saying
so, without the password. Touches only that server, its temp folder and a private beanstalkd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import geyser
import jobs_for_tests  # noqa: F401  (registers the echo job)
from conftest import HERE, Beanstalkd

sys.path.insert(0, str(HERE.parent / "soak"))
from servers import PG_BIN, Postgres  # noqa: E402

# Its module-scoped fixture is set up once: under pytest-xdist (scripts/test.sh) the module's
# tests stay on one worker.
pytestmark = pytest.mark.xdist_group("test_store_tls")

#: Trust auth never asks for it; it must appear in no message.
SECRET = "hunter2-tls"


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


def openssl(*args: str | Path) -> None:
    """Runs the openssl command, failing the test with its output when it fails."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (scripts/test.sh installs it)")
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"openssl {args[0]} failed: {done.stdout}{done.stderr}")


def make_certs(folder: Path) -> Certs:
    """A CA, and a server certificate it signed for DNS:localhost and IP:127.0.0.1."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", "-days", "2", "-subj", "/CN=Geyser test CA", *ec,
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            "-keyout", folder / "ca.key", "-out", folder / "ca.pem")
    openssl("req", "-subj", "/CN=localhost", *ec, "-keyout", folder / "server.key", "-out", folder / "server.csr")
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-days", "2", "-set_serial", "2", "-in", folder / "server.csr", "-CA", folder / "ca.pem",
            "-CAkey", folder / "ca.key", "-extfile", ext, "-out", folder / "server.pem")
    return Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key")


class TlsPostgres(Postgres):
    """The soak's private cluster with ``ssl = on``, listening on 127.0.0.1 and 127.0.0.2
    (an address the certificate does not name)."""

    def __init__(self, folder: Path, certs: Certs) -> None:
        super().__init__(folder)
        # The server user must own its key (mode 0600); the certificate only needs reading.
        self.key = certs.key
        self.key.chmod(0o600)
        if self.user is not None:
            os.chown(self.key, self.user.pw_uid, self.user.pw_gid)
        self.cert = certs.cert

    def command(self) -> list[str]:
        return [*super().command(), "-c", "listen_addresses=127.0.0.1,127.0.0.2", "-c", "ssl=on",
                "-c", f"ssl_cert_file={self.cert}", "-c", f"ssl_key_file={self.key}"]

    def start(self) -> None:
        super().start()
        # Listening is not accepting sessions yet ("the database system is starting up").
        deadline = time.monotonic() + 30
        while self.psql("SELECT 1") is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the private PostgreSQL was not ready within 30 s")
            time.sleep(0.05)

    def psql(self, sql: str) -> str | None:
        """One query as the superuser over the Unix socket; None when it fails."""
        done = subprocess.run([shutil.which("psql") or str(PG_BIN / "psql"), "-h", str(self.sockets), "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                               "-X", "-w", "-tA", "-c", sql], capture_output=True, text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else None

    def store_url(self, host: str, params: str) -> str:
        return f"postgresql://postgres:{SECRET}@{host}:{self.port}/postgres?schema=tls_py&{params}"


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[TlsPostgres, Certs]]:
    # Under /tmp rather than pytest's own folder, which the server user may not enter.
    with tempfile.TemporaryDirectory(prefix="geyser-tls-") as name:
        folder = Path(name)
        certs = make_certs(folder)
        folder.chmod(0o755)  # the server user reads the certificate from here
        server = TlsPostgres(folder, certs)
        server.start()
        try:
            yield server, certs
        finally:
            server.stop()


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[Beanstalkd]:
    server = Beanstalkd()
    monkeypatch.setenv("GEYSER_QUEUE_URL", server.url)
    try:
        yield server
    finally:
        geyser.configure()
        server.stop()


def test_require_with_a_ca_enqueues_reads_and_swaps_over_tls(
        tls_server: tuple[TlsPostgres, Certs], queue: Beanstalkd, monkeypatch: pytest.MonkeyPatch) -> None:
    server, certs = tls_server
    monkeypatch.setenv("GEYSER_STORE_URL", server.store_url("127.0.0.1", f"sslmode=require&sslrootcert={certs.ca}"))
    geyser.configure()
    job = geyser.make_base_job({"message": "over tls"}, "echo")
    uuid = job.enqueue()
    one, two = geyser.get_base_job(uuid), geyser.get_base_job(uuid)
    assert one is not None and two is not None and one.message == "over tls"
    one.message = "one"
    one.save()
    two.message = "two"
    with pytest.raises(geyser.ConflictError):
        two.save()
    assert geyser.get_base_job(uuid).message == "one"  # type: ignore[union-attr]
    seen = server.psql("SELECT count(*) FILTER (WHERE s.ssl) || ' ' || count(*) FILTER (WHERE NOT s.ssl) "
                       "FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'geyser'")
    assert seen is not None
    with_tls, plain = map(int, seen.split())
    assert with_tls >= 1 and plain == 0, f"{with_tls} TLS and {plain} plain store connections"


def test_verify_full_to_a_name_not_on_the_certificate_fails_clearly(
        tls_server: tuple[TlsPostgres, Certs], queue: Beanstalkd, monkeypatch: pytest.MonkeyPatch) -> None:
    server, certs = tls_server
    monkeypatch.setenv("GEYSER_STORE_URL", server.store_url("127.0.0.2", f"sslmode=verify-full&sslrootcert={certs.ca}"))
    geyser.configure()
    with pytest.raises(geyser.errors.StoreUnavailable) as err:
        geyser.make_base_job({"message": "x"}, "echo").enqueue()
    text = str(err.value)
    assert "TLS: name mismatch" in text and "127.0.0.2" in text, text
    assert f"postgres:***@127.0.0.2:{server.port}" in text and SECRET not in text, text
