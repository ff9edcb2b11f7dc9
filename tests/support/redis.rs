//! Test harness for the Redis store: the shared server at 127.0.0.1:6379 (tests FAIL, saying
//! how to start it, when it is not there), a key prefix of its own for each test (its keys are
//! deleted when the guard drops; never FLUSHDB, other tests share the server), and a private
//! redis-server on a free port for tests that stop or kill it. Touches only its own keys,
//! processes and temp dirs.

#![allow(dead_code)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use geyser::store::redis::{open, RedisStore};

use crate::support::ports::free_port;

/// The Redis server every developer and CI machine runs.
pub const SHARED_SERVER: &str = "redis://127.0.0.1:6379/0";

const HOW_TO_START: &str = "start it with: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" \
     --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log";

/// A prefix no other test uses.
pub fn unique_prefix(label: &str) -> String {
    format!("geyser-test:{label}:{}:", uuid::Uuid::new_v4().simple())
}

/// A store on the shared server under a fresh prefix, and the guard that deletes its keys.
pub async fn shared_store() -> (RedisStore, KeysGuard) {
    let prefix = unique_prefix("store");
    let store = open_shared(&prefix, "").await;
    (store, KeysGuard { prefix })
}

/// Opens the shared server under `prefix` with extra URL parameters (`&name=value...`).
pub async fn open_shared(prefix: &str, params: &str) -> RedisStore {
    let url = format!("{SHARED_SERVER}?prefix={prefix}{params}");
    match open(&url).await {
        Ok(store) => store,
        Err(e) => panic!("the Redis store tests need a Redis server at 127.0.0.1:6379 ({e}); {HOW_TO_START}"),
    }
}

/// A plain connection to the shared server, for writes behind the store's back.
pub async fn raw_connection() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(SHARED_SERVER).expect("client");
    match client.get_multiplexed_async_connection().await {
        Ok(conn) => conn,
        Err(e) => panic!("no Redis server at 127.0.0.1:6379 ({e}); {HOW_TO_START}"),
    }
}

/// Every key under `prefix` on the shared server (SCAN, so the server never blocks).
pub fn keys_under(prefix: &str) -> Vec<String> {
    let client = redis::Client::open(SHARED_SERVER).expect("client");
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(5)).expect("connect to clean up");
    let iter = redis::Commands::scan_match::<_, String>(&mut conn, format!("{prefix}*")).expect("scan");
    iter.collect::<Result<Vec<_>, _>>().expect("scan keys")
}

/// Deletes every key under its prefix when dropped.
pub struct KeysGuard {
    pub prefix: String,
}

impl Drop for KeysGuard {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        // A plain thread with a blocking connection: the test's runtime may be shutting down.
        let cleanup = std::thread::spawn(move || {
            let keys = keys_under(&prefix);
            if keys.is_empty() {
                return;
            }
            let client = redis::Client::open(SHARED_SERVER).expect("client");
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(5)).expect("connect to clean up");
            for chunk in keys.chunks(500) {
                redis::cmd("UNLINK").arg(chunk).exec(&mut conn).expect("delete the test's keys");
            }
        });
        if cleanup.join().is_err() && !std::thread::panicking() {
            panic!("could not delete the keys under {}", self.prefix);
        }
    }
}

/// A redis-server of the test's own on a free port, without persistence; killed when dropped.
pub struct PrivateRedis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With more command-line options, e.g. `["--requirepass", "pw"]`.
    pub fn start_with(extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let extra_args = extra_args.iter().map(|a| (*a).to_owned()).collect();
        let mut server = Self { child: None, port: free_port(), dir, extra_args };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("the server is running")
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start redis-server (is it installed?): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server on port {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the server (SIGSTOP freezes it, SIGCONT thaws it).
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal {signal} to redis-server");
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port after `kill` (empty: persistence is off).
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen server must be thawed before it can die cleanly.
            let _ = i32::try_from(child.id()).map(|pid| unsafe { libc::kill(pid, libc::SIGCONT) });
        }
        self.kill();
    }
}
