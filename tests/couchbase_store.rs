//! The Couchbase store. Always run (no server needed): opening against nothing, and against a
//! listener on loopback that accepts and never answers, fails within the connect timeout with
//! an error naming the redacted URL; bad URLs are refused by the driver registry without
//! their password; the password reaches no log record. Run only against a real cluster
//! (ignored otherwise, see docs/stores.md, "Couchbase"): the shared store contract and what is
//! special to Couchbase, on the cluster `GEYSER_TEST_COUCHBASE_URL` names, e.g.
//!   GEYSER_TEST_COUCHBASE_URL='couchbase://USER:PASSWORD@127.0.0.1/BUCKET' \
//!     cargo nextest run --features couchbase --test couchbase_store --run-ignored all
//! Those tests leave their documents under the prefix `geyser_test` in that bucket's default
//! collection (use a scratch bucket), and the `geyser_geyser_test_*` indexes. Touches nothing else.
#![cfg(feature = "couchbase")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use couchbase::authenticator::PasswordAuthenticator;
use couchbase::cluster::Cluster;
use couchbase::collection::Collection;
use couchbase::options::cluster_options::ClusterOptions;
use couchbase::options::kv_options::GetOptions;
use couchbase::transcoding::{encode_common_flags, DataType};
use geyser::config::{open_queue, open_store, ConfigError};
use geyser::model::{now, JobDocument, Status};
use geyser::store::couchbase::url::parse;
use geyser::store::couchbase::{open, CouchbaseStore};
use geyser::store::{NextDocument, Store, StoreError};
use support::store_contract::{document, job_type};

store_contract_tests!(
    ignore = "needs a Couchbase cluster: set GEYSER_TEST_COUCHBASE_URL and run with --run-ignored all",
    cluster_store()
);

/// The password every URL of the tests without a cluster carries, to look for in messages.
const PASSWORD: &str = "s3cret-Pw";

/// The test cluster's URL with the tests' prefix; fails (never passes quietly) when the
/// variable is not set.
fn cluster_url() -> String {
    let url = std::env::var("GEYSER_TEST_COUCHBASE_URL").unwrap_or_else(|_| {
        panic!("GEYSER_TEST_COUCHBASE_URL is not set: these tests need a Couchbase cluster (see docs/stores.md)")
    });
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}prefix={PREFIX}&query_timeout=120")
}

/// The key prefix of the tests against a cluster.
const PREFIX: &str = "geyser_test";

/// The store on the test cluster.
async fn cluster_store() -> (CouchbaseStore, ()) {
    let store = open(&cluster_url()).await.unwrap_or_else(|e| panic!("cannot open the test cluster: {e}"));
    (store, ())
}

/// The SDK's own handle on the test collection, for reads and writes behind the store's back
/// (the cluster handle must live as long as the collection is used).
async fn raw_collection() -> (Cluster, Collection) {
    let url = parse(&cluster_url()).expect("the test cluster's URL");
    let options = ClusterOptions::new(PasswordAuthenticator::new(&url.username, url.password()).into());
    let cluster = Cluster::connect(&url.connection_string, options).await.expect("connect to the test cluster");
    let collection = cluster.bucket(&url.bucket).scope(&url.scope).collection(&url.collection);
    (cluster, collection)
}

/// When Couchbase will drop the document `uuid` by itself (epoch seconds), or None.
async fn couchbase_expiry(collection: &Collection, uuid: &str) -> Option<f64> {
    let got = collection.get(format!("{PREFIX}::{uuid}"), GetOptions::new().expiry(true)).await.expect("get");
    got.expiry_time().map(|t| t.timestamp() as f64)
}

/// Opens `url` through the driver registry, as the engine does, failing the test if that
/// takes more than `within` (a hang) or succeeds; returns the error's message.
async fn open_fails(url: &str, within: Duration) -> String {
    let started = Instant::now();
    let opened = tokio::time::timeout(within, open_store(Some(url))).await;
    let took = started.elapsed();
    let url = url.replace(PASSWORD, "***");
    match opened {
        Err(_) => panic!("{url}: still opening after {took:?}"),
        Ok(Ok(_)) => panic!("{url}: opened a store where there is no cluster"),
        Ok(Err(e)) => {
            let message = e.to_string();
            assert!(!message.contains(PASSWORD), "{url}: the password leaked: {message}");
            assert!(matches!(e, ConfigError::Unreachable { .. }), "{url}: {message}");
            message
        }
    }
}

/// A port on loopback where nothing listens (bound, then closed).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// A listener on loopback that accepts every connection and never writes a byte; returns its
/// port and the number of connections it accepted so far.
async fn silent_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let port = listener.local_addr().expect("its address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_fails_within_the_connect_timeout() {
    let url = format!("couchbase://geyser:{PASSWORD}@127.0.0.1:{}/jobs?connect_timeout=1", closed_port());
    let message = open_fails(&url, Duration::from_secs(5)).await;
    let shown = url.replace(PASSWORD, "***");
    assert!(message.contains(&shown) && message.contains("unreachable"), "{message}");
    assert!(message.contains("within 1s"), "says which timeout ran out: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_answers_fails_within_the_connect_timeout() {
    let (port, accepted) = silent_listener().await;
    let url = format!("couchbase://geyser:{PASSWORD}@127.0.0.1:{port}/jobs?connect_timeout=1");
    let message = open_fails(&url, Duration::from_secs(5)).await;
    assert!(accepted.load(Ordering::SeqCst) > 0, "the store never connected to the listener: {message}");
    let shown = url.replace(PASSWORD, "***");
    assert!(message.contains(&shown) && message.contains("unreachable"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_refused_without_their_password() {
    for (url, says) in [
        (format!("couchbase://geyser:{PASSWORD}@127.0.0.1/jobs?bogus=1"), "unknown parameter \"bogus\""),
        (format!("couchbase://geyser:{PASSWORD}@127.0.0.1/"), "no bucket"),
        (format!("couchbases://geyser:{PASSWORD}@127.0.0.1/jobs?password={PASSWORD}"), "goes in the user info"),
        ("couchbase://127.0.0.1/jobs".to_owned(), "no user"),
    ] {
        let err = open_store(Some(&url)).await.err().unwrap_or_else(|| panic!("{url} opened"));
        let message = err.to_string();
        assert!(matches!(err, ConfigError::BadUrl { .. }) && message.contains(says), "{url}: {message}");
        assert!(!message.contains(PASSWORD), "{url}: the password leaked: {message}");
    }
    let err = open_queue(Some("couchbase://geyser:pw@127.0.0.1/jobs")).await.err().expect("not a queue");
    assert!(err.to_string().contains("couchbase:// keeps no queue"), "{err}");
}

/// Every log record, of any crate, as "target: message".
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{}: {}", record.target(), record.args());
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

/// The SDK logs (through `log`, as it does inside the Python module) while it tries to reach
/// a listener that never answers; none of its records holds the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_reaches_no_log_record() {
    log::set_logger(&CAPTURE).expect("this test binary's only logger");
    log::set_max_level(log::LevelFilter::Trace);
    let (port, _) = silent_listener().await;
    let url = format!("couchbase://geyser:{PASSWORD}@127.0.0.1:{port}/jobs?connect_timeout=1");
    open_fails(&url, Duration::from_secs(5)).await;
    let records = CAPTURE.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(records.iter().any(|r| r.starts_with("couchbase")), "the SDK logged nothing: {records:?}");
    let leaked: Vec<&String> = records.iter().filter(|r| r.contains(PASSWORD)).collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

// -- Against a real cluster (ignored without one) -------------------------------------------

/// Two writers that read the same version: exactly one wins, the other gets `Conflict`
/// (Couchbase's CAS), and the document holds the winner's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Couchbase cluster: set GEYSER_TEST_COUCHBASE_URL and run with --run-ignored all"]
async fn concurrent_writers_lose_no_update() {
    let (store, _) = cluster_store().await;
    let doc = store.create(&document(&job_type("race"))).await.expect("create");
    let bump: NextDocument = Arc::new(|d: &JobDocument| Some(JobDocument { attempts: d.attempts + 1, ..d.clone() }));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let (store, uuid, bump) = (store.clone(), doc.uuid.clone(), bump.clone());
            tokio::spawn(async move {
                for _ in 0..5 {
                    store.read_then_write(&uuid, bump.clone()).await.expect("read then write");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    let got = store.get(&doc.uuid).await.expect("get").expect("the document");
    assert_eq!((got.attempts, got.version), (40, 41), "every increment kept, each one version");
}

/// A value that is not a job document is `Corrupt` naming its uuid, for reads and writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Couchbase cluster: set GEYSER_TEST_COUCHBASE_URL and run with --run-ignored all"]
async fn unreadable_document_is_corrupt_naming_its_uuid() {
    let (store, _) = cluster_store().await;
    let doc = store.create(&document(&job_type("corrupt"))).await.expect("create");
    let (_cluster, raw) = raw_collection().await;
    let flags = encode_common_flags(DataType::Json);
    raw.upsert_raw(format!("{PREFIX}::{}", doc.uuid), br#"{"jobType": 5}"#, flags, None).await.expect("a raw write");
    let err = store.get(&doc.uuid).await.expect_err("an unreadable document");
    assert!(matches!(&err, StoreError::Corrupt { uuid, .. } if *uuid == doc.uuid), "{err:?}");
    let err = store.update(&doc).await.expect_err("a write over it");
    assert!(matches!(&err, StoreError::Corrupt { uuid, .. } if *uuid == doc.uuid), "{err:?}");
    assert!(store.delete(&doc.uuid).await.expect("a plain delete still works"));
}

/// A finished document with an `expiresAt` ahead gets that expiry in Couchbase; writing it
/// back to queued clears it; a document not finished never has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Couchbase cluster: set GEYSER_TEST_COUCHBASE_URL and run with --run-ignored all"]
async fn finished_documents_expire_at_their_lifespan() {
    let (store, _) = cluster_store().await;
    let (_cluster, raw) = raw_collection().await;
    let expires_at = (now() + 3600.0).floor();
    let queued = store.create(&JobDocument { expires_at: Some(expires_at), ..document(&job_type("ttl")) }).await;
    let queued = queued.expect("create");
    assert_eq!(couchbase_expiry(&raw, &queued.uuid).await, None, "not finished: no expiry");
    let finished = store.update(&JobDocument { status: Status::Failed, ..queued.clone() }).await.expect("fail it");
    let expiry = couchbase_expiry(&raw, &queued.uuid).await.expect("an expiry once finished");
    assert!((expiry - expires_at).abs() <= 2.0, "expiry {expiry} for expiresAt {expires_at}");
    store.update(&JobDocument { status: Status::Queued, ..finished }).await.expect("retry it");
    assert_eq!(couchbase_expiry(&raw, &queued.uuid).await, None, "queued again: no expiry");
}
