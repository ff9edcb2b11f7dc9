//! The Redis store over TLS (`rediss://`) against a private redis-server with a TLS port and a
//! certificate from a throwaway CA made by `openssl` (tests/support/tls.rs): the store works
//! over TLS, and checks the certificate unless the URL says `#insecure`. Touches only that
//! server (tests/support/redis.rs starts it and kills it by its PID) and its temp folders.
#![cfg(feature = "redis")]

#[path = "support/redis.rs"]
mod redis_support;
mod support;
#[path = "support/tls.rs"]
mod tls;

use geyser::store::redis::open;
use geyser::store::{Store, StoreError};
use redis_support::PrivateRedis;
use support::store_contract::{document, job_type};
use tls::TestCerts;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_against_a_tls_server() {
    let certs = TestCerts::make();
    let tls_port = tls::free_port();
    let path = |p: &std::path::Path| p.display().to_string();
    let _server = PrivateRedis::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path(&certs.server_cert),
        "--tls-key-file",
        &path(&certs.server_key),
        "--tls-ca-cert-file",
        &path(&certs.ca),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "tls-pw",
    ]);
    tls::wait_listening("127.0.0.1", tls_port, "redis-server's TLS port");

    // The store URL takes no CA file: the redis crate trusts the system's roots, so a private
    // CA's server is reached with #insecure (encrypted, certificate unchecked).
    let url = format!("rediss://:tls-pw@127.0.0.1:{tls_port}/0?prefix=geyser-tls-test:&connect_timeout=2#insecure");
    let store = open(&url).await.unwrap_or_else(|e| panic!("rediss with #insecure: {e}"));
    let doc = store.create(&document(&job_type("tls"))).await.expect("create over TLS");
    assert_eq!(store.get(&doc.uuid).await.expect("get over TLS").map(|d| d.version), Some(doc.version));
    let mut changed = doc.clone();
    changed.completeness = 0.5;
    let written = store.update(&changed).await.expect("swap over TLS");
    assert!(written.version > doc.version);
    match store.update(&changed).await {
        Err(StoreError::Conflict { expected, .. }) => assert_eq!(expected, doc.version),
        other => panic!("a swap at a stale version must conflict, got {other:?}"),
    }

    // Without #insecure the certificate is checked, and the test CA is no system root.
    let checked = format!("rediss://:tls-pw@localhost:{tls_port}/0?connect_timeout=2");
    let err = open(&checked).await.err().expect("an untrusted certificate is refused").to_string();
    assert!(err.contains("unreachable") && err.contains("UnknownIssuer"), "{err}");
    assert!(err.contains(":***@localhost") && !err.contains("tls-pw"), "{err}");

    // The TLS port speaks nothing else: plain redis:// to it fails.
    let plain = format!("redis://127.0.0.1:{tls_port}/0?connect_timeout=1");
    assert!(open(&plain).await.is_err(), "plain text to the TLS port must fail");
}
