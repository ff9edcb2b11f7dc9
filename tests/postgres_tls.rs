//! The PostgreSQL store over TLS, against a private server with `ssl = on` and a certificate
//! from a throwaway CA made by `openssl` (tests/support/tls.rs): each `sslmode` connects as
//! libpq's would or fails saying why (untrusted certificate, name mismatch, a server without
//! SSL), never showing the password. One server for the whole file (a test is a process under
//! nextest, so the cases are steps of one test). Touches only that server and its temp folders.
#![cfg(feature = "postgres")]

mod support;
#[path = "support/tls.rs"]
mod tls;

use geyser::store::postgres::{OpenError, PostgresStore};
use geyser::store::{Store, StoreError};
use support::store_contract::{document, job_type};
use tls::{TestCerts, TlsPostgres};

/// Trust auth never asks for it, so it may stand in any URL, and must appear in no message.
const SECRET: &str = "hunter2-tls";

/// The store URL for `host` on the private server, with `params` (`sslmode=...&...`).
fn url(server: &TlsPostgres, host: &str, params: &str) -> String {
    format!("postgresql://postgres:{SECRET}@{host}:{}/postgres?schema=tls_test&connect_timeout=5&{params}", server.port)
}

/// Create, get and a compare-and-swap (one that wins, one that loses) through `store`.
async fn contract_basics(store: &PostgresStore, label: &str) {
    let doc = store.create(&document(&job_type("tls"))).await.unwrap_or_else(|e| panic!("{label}: create: {e}"));
    let read = store.get(&doc.uuid).await.unwrap_or_else(|e| panic!("{label}: get: {e}"));
    assert_eq!(read.as_ref().map(|d| d.version), Some(doc.version), "{label}: get reads back what create wrote");
    let mut changed = doc.clone();
    changed.completeness = 0.5;
    let written = store.update(&changed).await.unwrap_or_else(|e| panic!("{label}: update: {e}"));
    assert!(written.version > doc.version, "{label}: the swap wrote a new version");
    let read = store.get(&doc.uuid).await.unwrap_or_else(|e| panic!("{label}: get after update: {e}"));
    assert_eq!(read.map(|d| d.completeness), Some(0.5), "{label}: get reads the swap back");
    match store.update(&changed).await {
        Err(StoreError::Conflict { expected, .. }) => assert_eq!(expected, doc.version, "{label}"),
        other => panic!("{label}: a swap at a stale version must conflict, got {other:?}"),
    }
}

/// The server's clock now, as text: stores opened after it have connections started after it.
async fn server_now(server: &TlsPostgres) -> String {
    let row = server.admin().await.query_one("SELECT clock_timestamp()::text", &[]).await.expect("read the clock");
    row.get(0)
}

/// How many store connections (application_name geyser) started since `since` the server sees
/// with and without TLS (those of stores dropped before may not have closed yet).
async fn geyser_connections(server: &TlsPostgres, since: &str) -> (i64, i64) {
    let sql = "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
               FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
               WHERE a.application_name = 'geyser' AND a.backend_start >= $1::text::timestamptz";
    let row = server.admin().await.query_one(sql, &[&since]).await.expect("read pg_stat_ssl");
    (row.get(0), row.get(1))
}

/// Opens `url`, which must fail as unreachable with `reason` in the message, which names the
/// URL without its password.
async fn refused(url: &str, reason: &str) -> String {
    let err = match PostgresStore::open(url).await {
        Ok(_) => panic!("{url} must not connect"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(matches!(err, OpenError::Unreachable { .. }), "{url}: {text}");
    assert!(text.contains(reason), "{url}: {text:?} should say {reason:?}");
    assert!(text.contains("postgres:***@") && !text.contains(SECRET), "{url}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_against_a_server_with_and_without_ssl() {
    let certs = TestCerts::make();
    let server = TlsPostgres::start(&certs);
    let ca = format!("sslrootcert={}", certs.ca.display());

    // verify-full through the name on the certificate (localhost: SNI and a DNS name), and
    // through the address on it (127.0.0.1).
    let since = server_now(&server).await;
    // Kept open until their connections are counted.
    let mut stores = Vec::new();
    for host in ["localhost", "127.0.0.1"] {
        let store = PostgresStore::open(&url(&server, host, &format!("sslmode=verify-full&{ca}")))
            .await
            .unwrap_or_else(|e| panic!("verify-full via {host}: {e}"));
        contract_basics(&store, &format!("verify-full via {host}")).await;
        stores.push(store);
    }

    // require with a CA checks the chain but not the name, as libpq does: 127.0.0.2 is not on
    // the certificate. So does verify-ca.
    for mode in ["require", "verify-ca"] {
        let store = PostgresStore::open(&url(&server, "127.0.0.2", &format!("sslmode={mode}&{ca}")))
            .await
            .unwrap_or_else(|e| panic!("{mode} with a CA via 127.0.0.2: {e}"));
        contract_basics(&store, mode).await;
        stores.push(store);
    }

    // require without a CA, and the default (prefer): encrypted, the certificate unchecked.
    for params in ["sslmode=require", "pool_size=2"] {
        let store = PostgresStore::open(&url(&server, "127.0.0.2", params))
            .await
            .unwrap_or_else(|e| panic!("{params} via 127.0.0.2: {e}"));
        contract_basics(&store, params).await;
        stores.push(store);
    }
    let (tls, plain) = geyser_connections(&server, &since).await;
    assert!(tls >= 6 && plain == 0, "each of the 6 stores has TLS connections only: {tls} TLS, {plain} plain");
    drop(stores);

    // verify-full to a name the certificate does not carry; the system's roots do not know
    // the test CA (verify-full, and verify-ca which skips only the name); a CA file that is
    // not there.
    refused(&url(&server, "127.0.0.2", &format!("sslmode=verify-full&{ca}")), "TLS: name mismatch").await;
    let untrusted = refused(&url(&server, "localhost", "sslmode=verify-full"), "TLS: untrusted certificate").await;
    assert!(untrusted.contains("sslmode=verify-full"), "the message shows the URL's sslmode: {untrusted}");
    refused(&url(&server, "127.0.0.2", "sslmode=verify-ca"), "TLS: untrusted certificate").await;
    let missing = certs.dir.path().join("missing.pem");
    match PostgresStore::open(&url(&server, "localhost", &format!("sslrootcert={}", missing.display()))).await {
        Err(e @ OpenError::BadUrl { .. }) => {
            let text = e.to_string();
            assert!(text.contains("missing.pem: cannot read it") && !text.contains(SECRET), "{text}");
        }
        other => panic!("a missing sslrootcert file is a bad URL, got {:?}", other.map(|_| "a store")),
    }

    // The same server without SSL: require fails saying so; disable and prefer connect plain.
    server.turn_ssl_off().await;
    let text = refused(&url(&server, "127.0.0.1", "sslmode=require"), "the server does not support SSL").await;
    assert!(text.contains("sslmode=require"), "{text}");
    refused(&url(&server, "localhost", &format!("sslmode=verify-full&{ca}")), "the server does not support SSL").await;
    for params in ["sslmode=disable", "sslmode=prefer"] {
        let since = server_now(&server).await;
        let store = PostgresStore::open(&url(&server, "127.0.0.1", params))
            .await
            .unwrap_or_else(|e| panic!("{params} without SSL on the server: {e}"));
        contract_basics(&store, params).await;
        let (tls, plain) = geyser_connections(&server, &since).await;
        assert!(tls == 0 && plain >= 1, "{params}: {tls} TLS and {plain} plain connections");
    }
}
