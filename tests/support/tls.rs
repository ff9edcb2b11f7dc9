//! TLS test fixtures: a throwaway CA and a server certificate for `localhost` and 127.0.0.1
//! made by the `openssl` command at test time, and a private PostgreSQL cluster (initdb into a
//! temp folder, run as the `postgres` user when the test runs as root, since PostgreSQL refuses
//! root) with `ssl = on` and that certificate, listening on 127.0.0.1 and 127.0.0.2 (a second
//! address the certificate does not name). Touches only its temp folders and the server it
//! starts, which it kills by its PID when dropped.

#![allow(dead_code)]

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::support::ports::free_port;

/// How long a server gets to start, and a reload to take effect.
const START_WITHIN: Duration = Duration::from_secs(30);

/// Polls until `host:port` accepts a TCP connection; fails the test after `START_WITHIN`.
pub fn wait_listening(host: &str, port: u16, what: &str) {
    let deadline = Instant::now() + START_WITHIN;
    while TcpStream::connect((host, port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {host}:{port} within {START_WITHIN:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command`, failing the test with its output when it fails.
fn run(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: cannot run it ({e}); is it installed?"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate it signed (P-256 keys, valid for two days), in PEM files.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCerts {
    /// Makes the CA and the server certificate for `DNS:localhost` and `IP:127.0.0.1`.
    pub fn make() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let file = |name: &str| dir.path().join(name);
        let ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(
            Command::new("openssl")
                .args(["req", "-x509", "-days", "2", "-subj", "/CN=Geyser test CA"])
                .args(ec_key)
                .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
                .arg("-keyout")
                .arg(file("ca.key"))
                .arg("-out")
                .arg(file("ca.pem")),
            "openssl req (the CA)",
        );
        run(
            Command::new("openssl")
                .args(["req", "-subj", "/CN=localhost"])
                .args(ec_key)
                .arg("-keyout")
                .arg(file("server.key"))
                .arg("-out")
                .arg(file("server.csr")),
            "openssl req (the server's request)",
        );
        std::fs::write(
            file("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the extensions file");
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
                .arg("-in")
                .arg(file("server.csr"))
                .arg("-CA")
                .arg(file("ca.pem"))
                .arg("-CAkey")
                .arg(file("ca.key"))
                .arg("-extfile")
                .arg(file("server.ext"))
                .arg("-out")
                .arg(file("server.pem")),
            "openssl x509 (signing the server's certificate)",
        );
        Self { ca: file("ca.pem"), server_cert: file("server.pem"), server_key: file("server.key"), dir }
    }
}

/// A second throwaway CA, with a name of its own (so a certificate from `TestCerts` does not
/// even claim to be issued by it), in `dir`: the path of its PEM certificate.
pub fn unrelated_ca(dir: &std::path::Path) -> PathBuf {
    let (cert, key) = (dir.join("unrelated-ca.pem"), dir.join("unrelated-ca.key"));
    run(
        Command::new("openssl")
            .args(["req", "-x509", "-days", "2", "-subj", "/CN=Geyser unrelated test CA", "-nodes"])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
            .arg("-keyout")
            .arg(key)
            .arg("-out")
            .arg(&cert),
        "openssl req (the unrelated CA)",
    );
    cert
}

/// The uid and gid of the `postgres` user, when the test runs as root (PostgreSQL refuses
/// root); `None` otherwise.
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "postgres"]).output().expect("run id");
        assert!(out.status.success(), "running as root needs a postgres user to start PostgreSQL as");
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().expect("a numeric id")
    };
    Some((id("-u"), id("-g")))
}

/// Where PostgreSQL's server programs are: $SOAK_PG_BIN, else Debian's newest
/// /usr/lib/postgresql/<version>/bin (as tests/soak/servers.py finds them).
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("SOAK_PG_BIN") {
        return PathBuf::from(dir);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .max();
    PathBuf::from(format!("/usr/lib/postgresql/{}/bin", newest.unwrap_or(15)))
}

/// A PostgreSQL cluster of the test's own with `ssl = on`; killed when dropped.
pub struct TlsPostgres {
    pub port: u16,
    child: Child,
    /// The cluster's folder, removed when the server is gone.
    _dir: tempfile::TempDir,
}

impl TlsPostgres {
    /// initdb, then the server on a free port with `certs`' server certificate.
    pub fn start(certs: &TestCerts) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        let user = postgres_user();
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        std::fs::create_dir(&sockets).expect("socket dir");
        let key = dir.path().join("server.key");
        std::fs::copy(&certs.server_key, &key).expect("copy the server key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("key mode");
        if let Some((uid, gid)) = user {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("dir mode");
            std::os::unix::fs::chown(&sockets, Some(uid), Some(gid)).expect("chown socket dir");
            std::os::unix::fs::chown(&key, Some(uid), Some(gid)).expect("chown key");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown cluster dir");
        }
        let as_server_user = |command: &mut Command| {
            if let Some((uid, gid)) = user {
                command.uid(uid).gid(gid);
            }
        };
        let mut initdb = Command::new(pg_bin().join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        as_server_user(&mut initdb);
        run(&mut initdb, "initdb");
        // In postgresql.conf rather than on the command line, so that ALTER SYSTEM can turn it off.
        let settings = format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            certs.server_cert.display(),
            key.display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("write postgresql.conf");
        // The certificate (not secret) must be readable by the server user too.
        std::fs::set_permissions(certs.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("certs dir mode");
        std::fs::set_permissions(&certs.server_cert, std::fs::Permissions::from_mode(0o644)).expect("cert mode");
        let port = free_port();
        let mut server = Command::new(pg_bin().join("postgres"));
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1,127.0.0.2", "-c", "fsync=off"])
            .arg("-k")
            .arg(&sockets)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_server_user(&mut server);
        let child = server.spawn().unwrap_or_else(|e| panic!("start postgres from {}: {e}", pg_bin().display()));
        let server = Self { port, child, _dir: dir };
        // Listening is not yet accepting sessions ("the database system is starting up").
        let deadline = Instant::now() + START_WITHIN;
        let ready = || {
            let mut check = Command::new(pg_bin().join("pg_isready"));
            check.args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()]);
            check.status().is_ok_and(|status| status.success())
        };
        while !ready() {
            assert!(Instant::now() < deadline, "the private PostgreSQL was not ready within {START_WITHIN:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        wait_listening("127.0.0.2", port, "the private PostgreSQL");
        server
    }

    /// A plain connection (`sslmode=disable`) as the superuser, for checks behind the store.
    pub async fn admin(&self) -> tokio_postgres::Client {
        let url = format!("postgresql://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port);
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("admin connection");
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("admin connection ended: {e}");
            }
        });
        client
    }

    /// Turns `ssl` off (ALTER SYSTEM, reload) and waits until a new connection sees it off.
    pub async fn turn_ssl_off(&self) {
        let admin = self.admin().await;
        admin.batch_execute("ALTER SYSTEM SET ssl = off").await.expect("turn ssl off");
        admin.batch_execute("SELECT pg_reload_conf()").await.expect("reload the configuration");
        let deadline = Instant::now() + START_WITHIN;
        loop {
            let row = self.admin().await.query_one("SHOW ssl", &[]).await.expect("SHOW ssl");
            if row.get::<_, String>(0) == "off" {
                return;
            }
            assert!(Instant::now() < deadline, "ssl still on {START_WITHIN:?} after the reload");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the postmaster takes its backends with it.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
        let _ = self.child.wait();
    }
}
