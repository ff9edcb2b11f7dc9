//! The Redis store over TLS (`rediss://`) against a private redis-server with a TLS port and a
//! certificate from a throwaway CA made by `openssl` (tests/support/tls.rs): the store works
//! over TLS, and checks the certificate against the system's roots or the URL's `sslrootcert`
//! unless the URL says `#insecure`. Touches only that server (tests/support/redis.rs starts it
//! and kills it by its PID) and its temp folders.
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
    let tls_port = support::ports::free_port();
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

    // #insecure: encrypted, certificate unchecked.
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

    // With sslrootcert naming the test CA the certificate is checked against it, and passes.
    let ca = certs.ca.display();
    let trusted = format!("rediss://:tls-pw@localhost:{tls_port}/0?prefix=geyser-tls-ca-test:&sslrootcert={ca}");
    let store = open(&trusted).await.unwrap_or_else(|e| panic!("rediss with sslrootcert={ca}: {e}"));
    let doc = store.create(&document(&job_type("tls-ca"))).await.expect("create over verified TLS");
    assert_eq!(store.get(&doc.uuid).await.expect("get over verified TLS").map(|d| d.version), Some(doc.version));
    let mut changed = doc.clone();
    changed.completeness = 0.5;
    assert!(store.update(&changed).await.expect("swap over verified TLS").version > doc.version);
    match store.update(&changed).await {
        Err(StoreError::Conflict { expected, .. }) => assert_eq!(expected, doc.version),
        other => panic!("a swap at a stale version must conflict, got {other:?}"),
    }

    // Another CA did not sign the server's certificate: refused as untrusted.
    let other_ca = tls::unrelated_ca(certs.dir.path());
    let wrong = format!("rediss://:tls-pw@localhost:{tls_port}/0?connect_timeout=2&sslrootcert={}", other_ca.display());
    let err = open(&wrong).await.err().expect("a certificate from another CA is refused").to_string();
    assert!(err.contains("unreachable") && err.contains("UnknownIssuer"), "{err}");
    assert!(err.contains(":***@localhost") && !err.contains("tls-pw"), "{err}");

    // A CA file that is missing or not PEM, and sslrootcert where it cannot apply, are refused
    // before any connection, naming the parameter and the path, never the password.
    let not_pem = certs.dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "this is no certificate\n").expect("write the non-PEM file");
    let missing = certs.dir.path().join("missing.pem");
    for (url, says) in [
        (
            format!("rediss://:tls-pw@localhost:{tls_port}/0?sslrootcert={}", missing.display()),
            format!("sslrootcert={}: cannot read it", missing.display()),
        ),
        (
            format!("rediss://:tls-pw@localhost:{tls_port}/0?sslrootcert={}", not_pem.display()),
            format!("sslrootcert={}: the file holds no PEM certificate", not_pem.display()),
        ),
        (
            format!("rediss://:tls-pw@localhost:{tls_port}/0?sslrootcert={}", certs.server_key.display()),
            format!("sslrootcert={}: the file holds no PEM certificate", certs.server_key.display()),
        ),
        (
            format!("redis://:tls-pw@localhost:{tls_port}/0?sslrootcert={ca}"),
            format!("sslrootcert={ca} names a CA but redis:// is plain text"),
        ),
        (
            format!("rediss://:tls-pw@localhost:{tls_port}/0?sslrootcert={ca}#insecure"),
            format!("sslrootcert={ca} asks for the certificate to be checked but #insecure"),
        ),
    ] {
        let err = open(&url).await.err().unwrap_or_else(|| panic!("{url} must be refused")).to_string();
        assert!(err.starts_with("bad redis store URL") && err.contains(&says), "{url}: {err}");
        assert!(!err.contains("tls-pw"), "{url}: {err}");
    }

    // Without #insecure or sslrootcert the certificate is checked against the system's roots,
    // and the test CA is none of them.
    let checked = format!("rediss://:tls-pw@localhost:{tls_port}/0?connect_timeout=2");
    let err = open(&checked).await.err().expect("an untrusted certificate is refused").to_string();
    assert!(err.contains("unreachable") && err.contains("UnknownIssuer"), "{err}");
    assert!(err.contains(":***@localhost") && !err.contains("tls-pw"), "{err}");

    // The TLS port speaks nothing else: plain redis:// to it fails.
    let plain = format!("redis://127.0.0.1:{tls_port}/0?connect_timeout=1");
    assert!(open(&plain).await.is_err(), "plain text to the TLS port must fail");
}
