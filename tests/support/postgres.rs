//! The PostgreSQL server the tests use (127.0.0.1:5432, trust auth, database `test`, or
//! `GEYSER_TEST_POSTGRES_URL`), and a schema of its own for each test, dropped with
//! everything in it when the test ends, so tests run in any order and side by side.
//! Touches only the schemas it creates.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// How to start the server when it is down.
pub const START_HINT: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// The server's URL, without a schema.
pub fn server_url() -> String {
    std::env::var("GEYSER_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".into())
}

/// A raw connection to the server (for writes behind the store's back); a test fails, saying
/// how to start PostgreSQL, when the server cannot be reached.
pub async fn connect() -> Client {
    let url = server_url();
    let connecting = tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(&url, NoTls)).await;
    let (client, connection) = match connecting {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => panic!("PostgreSQL is not reachable at {url}: {e}; start it with `{START_HINT}`"),
        Err(_) => panic!("PostgreSQL at {url} did not answer within 10 s; start it with `{START_HINT}`"),
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("raw PostgreSQL test connection ended: {e}");
        }
    });
    client
}

/// A schema name no other test uses (created by whoever opens a store on it first).
pub struct TestSchema {
    pub name: String,
}

impl TestSchema {
    /// A fresh schema name; fails the test if the server is down.
    pub async fn new() -> Self {
        connect().await;
        Self { name: format!("geyser_test_{}", uuid::Uuid::new_v4().simple()) }
    }

    /// The store URL for this schema.
    pub fn url(&self) -> String {
        format!("{}?schema={}", server_url(), self.name)
    }

    /// `table` of this schema, as SQL names it.
    pub fn table(&self, table: &str) -> String {
        format!("\"{}\".{table}", self.name)
    }
}

impl Drop for TestSchema {
    /// Drops the schema from a thread of its own (a drop cannot wait on the test's runtime).
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&server_url(), NoTls).await?;
                tokio::spawn(connection);
                client.batch_execute(&sql).await
            })?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test schema {}: {e}", self.name),
            Err(_) => eprintln!("could not drop test schema {}: the dropping thread panicked", self.name),
        }
    }
}

/// A TCP forwarder on loopback in front of the server, which a test can cut (every connection
/// closed, nothing listening: the server seems gone) and restore on the same port.
pub struct Proxy {
    pub port: u16,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to the test server (127.0.0.1:5432).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy listens");
        let port = listener.local_addr().expect("proxy port").port();
        Self { port, running: Some(tokio::spawn(forward(listener))) }
    }

    /// The store URL through this proxy for `schema`.
    pub fn url(&self, schema: &TestSchema) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/test?schema={}&connect_timeout=2", self.port, schema.name)
    }

    /// Closes every forwarded connection and stops listening.
    pub async fn cut(&mut self) {
        if let Some(task) = self.running.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.expect("proxy listens again");
        self.running = Some(tokio::spawn(forward(listener)));
    }
}

/// Accepts connections and copies each to and from the server; dropping (aborting) this
/// task drops every connection it forwards.
async fn forward(listener: tokio::net::TcpListener) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((mut client, _)) = listener.accept().await {
        connections.spawn(async move {
            if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}
