//! The Redis store: the shared store contract against the Redis server at 127.0.0.1:6379 (each
//! test under its own key prefix), plus what is special to Redis: indexes kept in step with
//! documents under concurrent writers, key expiry of finished documents, exact bytes and
//! timestamps, large and unicode documents, passwords kept out of errors, bounded connects and
//! calls, and recovery when a server comes back. Touches only its own keys and servers.
#![cfg(feature = "redis")]

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use geyser::model::{now, JobDocument, Status};
use geyser::store::redis::{open, RedisStore};
use geyser::store::{ListFilter, NextDocument, Page, Store, StoreError};
use redis::AsyncCommands;
use redis_support::{open_shared, raw_connection, shared_store, unique_prefix, KeysGuard, PrivateRedis};
use support::store_contract::{document, job_type};

store_contract_tests!(shared_store());

/// Polls `check` until it holds, failing with `what` after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The score of `uuid` in the index `name` of `store` (None: not a member).
async fn score(store: &RedisStore, name: &str, uuid: &str) -> Option<f64> {
    let mut conn = raw_connection().await;
    conn.zscore(format!("{}{name}", store.prefix()), uuid).await.expect("ZSCORE")
}

async fn raw_get(store: &RedisStore, uuid: &str) -> Option<Vec<u8>> {
    let mut conn = raw_connection().await;
    conn.get(format!("{}doc:{uuid}", store.prefix())).await.expect("GET")
}

fn by_type(job_type: &str) -> ListFilter {
    ListFilter { job_type: Some(job_type.to_owned()), ..ListFilter::default() }
}

/// A value that is not JSON is `Corrupt` naming its uuid for every read and checked write;
/// a plain delete still removes it and its index entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_document_is_corrupt_naming_its_uuid() {
    let (store, _keys) = shared_store().await;
    let jt = job_type("corrupt");
    let doc = store.create(&document(&jt)).await.expect("create");
    let mut conn = raw_connection().await;
    let _: () = conn.set(format!("{}doc:{}", store.prefix(), doc.uuid), r#"{"jobType": 5"#).await.expect("raw SET");

    let is_corrupt = |err: &StoreError| matches!(err, StoreError::Corrupt { uuid, .. } if *uuid == doc.uuid);
    let err = store.get(&doc.uuid).await.expect_err("get");
    assert!(is_corrupt(&err) && err.to_string().contains(&doc.uuid), "{err}");
    let err = store.list(&by_type(&jt), &Page::default()).await.expect_err("list");
    assert!(is_corrupt(&err), "{err:?}");
    let err = store.update(&doc).await.expect_err("update");
    assert!(is_corrupt(&err), "{err:?}");
    let err = store.delete_at_version(&doc.uuid, doc.version).await.expect_err("delete at version");
    assert!(is_corrupt(&err), "{err:?}");

    assert!(store.delete(&doc.uuid).await.expect("delete"), "a plain delete removes it");
    assert_eq!(score(&store, &format!("type:{jt}"), &doc.uuid).await, None);
    assert_eq!(score(&store, "all", &doc.uuid).await, None);
    assert_eq!(score(&store, "updated:queued", &doc.uuid).await, None);
}

/// JSON that parses but lacks what every write checks is reported, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_without_a_version_is_inconsistent() {
    let (store, _keys) = shared_store().await;
    let doc = store.create(&document(&job_type("noversion"))).await.expect("create");
    let mut raw: serde_json::Value = serde_json::from_slice(&doc.to_json()).expect("json");
    raw.as_object_mut().expect("object").remove("version");
    let mut conn = raw_connection().await;
    let _: () = conn.set(format!("{}doc:{}", store.prefix(), doc.uuid), raw.to_string()).await.expect("raw SET");
    let next: NextDocument = Arc::new(|d| Some(d.clone()));
    let err = store.read_then_write(&doc.uuid, next).await.expect_err("read then write");
    assert!(matches!(&err, StoreError::Inconsistent { uuid, .. } if *uuid == doc.uuid), "{err:?}");
}

/// The stored value is exactly the JSON serde wrote, and every timestamp comes back bit for bit,
/// from the document and from the update-time index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_and_bytes_survive_exactly() {
    let (store, _keys) = shared_store().await;
    let awkward = [0.1 + 0.2, 1_700_000_000.123_456_7, f64::from_bits(1_700_000_000f64.to_bits() + 1), 5e-324];
    let mut doc = JobDocument {
        created_at: awkward[1],
        updated_at: awkward[0],
        started_at: Some(awkward[2]),
        heartbeat_at: Some(awkward[3]),
        expires_at: Some(awkward[2] + 1e6),
        ..document(&job_type("exact"))
    };
    doc = store.create(&doc).await.expect("create");
    assert_eq!(raw_get(&store, &doc.uuid).await.expect("stored"), doc.to_json(), "the stored text is serde's");
    let got = store.get(&doc.uuid).await.expect("get").expect("the document");
    let bits = |d: &JobDocument| {
        [d.created_at, d.updated_at, d.started_at.unwrap(), d.heartbeat_at.unwrap(), d.expires_at.unwrap()]
            .map(f64::to_bits)
    };
    assert_eq!(bits(&got), bits(&doc));

    doc.updated_at = awkward[2];
    let doc = store.update(&doc).await.expect("update");
    assert_eq!(raw_get(&store, &doc.uuid).await.expect("stored"), doc.to_json());
    let rows = store.list_stale(Status::Queued, awkward[2] + 1.0, None, 10).await.expect("list stale");
    let row = rows.iter().find(|r| r.key.uuid == doc.uuid).expect("listed");
    assert_eq!(row.key.updated_at.to_bits(), awkward[2].to_bits(), "the index keeps the exact time");
    assert_eq!(bits(row.doc.as_ref().expect("readable")), bits(&doc));
}

/// A 1 MiB document of mixed scripts (and characters JSON must escape) round-trips unchanged
/// through create, get, update and list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_unicode_document_round_trips() {
    let (store, _keys) = shared_store().await;
    let jt = job_type("große_ジョブ_🚀");
    let piece = "żółć 東京 🚀 \u{0301}e\"\\\n\t\u{0}\u{7f} ";
    let big = piece.repeat((1 << 20) / piece.len() + 1);
    let mut doc = document(&jt);
    doc.fields.insert("payload".into(), serde_json::Value::from(big.clone()));
    doc.result_string = "結果 ✓".into();
    assert!(doc.to_json().len() > 1 << 20, "at least 1 MiB");

    let created = store.create(&doc).await.expect("create");
    assert_eq!(store.get(&doc.uuid).await.expect("get").as_ref(), Some(&created));
    let mut changed = created.clone();
    changed.fields.insert("payload".into(), serde_json::Value::from(format!("{big}✓")));
    let updated = store.update(&changed).await.expect("update");
    assert_eq!(store.get(&doc.uuid).await.expect("get"), Some(updated.clone()));
    assert_eq!(store.list(&by_type(&jt), &Page::default()).await.expect("list"), vec![updated]);
}

/// Writers on their own connections hammer a few documents with read-then-write: no increment
/// is lost, and every index entry agrees with the final documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_no_update_and_indexes_agree() {
    const WRITERS: usize = 6;
    const ROUNDS: u32 = 40;
    let prefix = unique_prefix("race");
    let _keys = KeysGuard { prefix: prefix.clone() };
    let store = open_shared(&prefix, "").await;
    let jt = job_type("race");
    let mut uuids = Vec::new();
    for _ in 0..3 {
        uuids.push(store.create(&document(&jt)).await.expect("create").uuid);
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (prefix, uuids) = (prefix.clone(), uuids.clone());
        writers.push(tokio::spawn(async move {
            let mine = open_shared(&prefix, "").await;
            for round in 0..ROUNDS {
                let uuid = &uuids[(w + round as usize) % uuids.len()];
                let next: NextDocument = Arc::new(move |d: &JobDocument| {
                    let status = if d.status == Status::Queued { Status::Running } else { Status::Queued };
                    Some(JobDocument { attempts: d.attempts + 1, status, updated_at: d.updated_at + 1.0, ..d.clone() })
                });
                mine.read_then_write(uuid, next).await.expect("read then write");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    let mut total = 0;
    for uuid in &uuids {
        let doc = store.get(uuid).await.expect("get").expect("the document");
        assert_eq!(u64::from(doc.attempts) + 1, doc.version, "one version per increment");
        assert_eq!(doc.updated_at, 1.0 + f64::from(doc.attempts));
        total += doc.attempts;
        for status in Status::ALL {
            let here = status == doc.status;
            let in_status = score(&store, &format!("status:{}", status.as_str()), uuid).await;
            let written = score(&store, &format!("updated:{}", status.as_str()), uuid).await;
            assert_eq!(in_status.is_some(), here, "{uuid} in status:{status}");
            assert_eq!(written, here.then_some(doc.updated_at), "{uuid} in updated:{status}");
        }
        let listed =
            store.list(&ListFilter { status: Some(doc.status), ..by_type(&jt) }, &Page::default()).await.expect("list");
        assert!(listed.iter().any(|d| d.uuid == *uuid), "listed under its status");
    }
    assert_eq!(total, WRITERS as u32 * ROUNDS, "no lost update");
}

/// A finished document with `expiresAt` gets that time as its key's expiry: Redis drops it
/// then, listings skip it at once, purge removes its index entries, and its uuid can be used
/// again. A document that leaves the finished states loses its expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_documents_expire_with_their_key() {
    let (store, _keys) = shared_store().await;
    let jt = job_type("lifespan");
    let lifespan = 0.4;
    let mut doc = store.create(&JobDocument { expires_at: Some(now() + lifespan), ..document(&jt) }).await.unwrap();
    let mut conn = raw_connection().await;
    let key = format!("{}doc:{}", store.prefix(), doc.uuid);
    let ttl: i64 = conn.pttl(&key).await.expect("PTTL");
    assert_eq!(ttl, -1, "a queued document does not expire");

    doc.start_attempt("w", "f").expect("start");
    doc.fail().expect("fail");
    let failed = store.update(&doc).await.expect("fail");
    let ttl: i64 = conn.pttl(&key).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= (lifespan * 1000.0) as i64 + 1, "expires with the document: {ttl} ms");
    let mut queued_again = failed.clone();
    queued_again.retry().expect("retry");
    let queued_again = store.update(&queued_again).await.expect("retry");
    let ttl: i64 = conn.pttl(&key).await.expect("PTTL");
    assert_eq!(ttl, -1, "back in the queue: no expiry");
    assert_eq!(score(&store, "expires", &doc.uuid).await, None, "not listed for purge");

    let mut done = queued_again;
    done.start_attempt("w", "f2").expect("start");
    done.succeed().expect("succeed");
    let done = store.update(&done).await.expect("succeed");
    assert_eq!(score(&store, "expires", &doc.uuid).await, done.expires_at);
    eventually(Duration::from_secs(5), "Redis drops the key", || async { raw_get(&store, &doc.uuid).await.is_none() })
        .await;
    assert!(store.get(&doc.uuid).await.expect("get").is_none());
    assert!(score(&store, "all", &doc.uuid).await.is_some(), "its index entries wait for purge");
    let succeeded = ListFilter { status: Some(Status::Succeeded), ..by_type(&jt) };
    assert!(store.list(&succeeded, &Page::default()).await.expect("list").is_empty(), "a vanished key is skipped");
    let stale = store.list_stale(Status::Succeeded, now() + 10.0, None, 100).await.expect("list stale");
    assert!(stale.iter().all(|r| r.key.uuid != doc.uuid), "a vanished key is skipped");

    assert!(store.purge_expired(now()).await.expect("purge") >= 1);
    for index in ["all", "expires", "updated:succeeded", "status:succeeded", &format!("type:{jt}")] {
        assert_eq!(score(&store, index, &doc.uuid).await, None, "left in {index}");
    }
    let again = store.create(&JobDocument { uuid: doc.uuid.clone(), ..document(&jt) }).await.expect("same uuid");
    assert_eq!(store.list(&by_type(&jt), &Page::default()).await.expect("list"), vec![again]);
}

/// A finished document whose expiry has already passed when it is written stays readable
/// until a purge (Redis does not drop it at once); the remnants of one that Redis dropped do
/// not survive a new document of the same uuid, even before any purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_leave_nothing_that_a_new_document_sees() {
    let (store, _keys) = shared_store().await;
    let jt = job_type("remnant");
    let late = store.create(&JobDocument { status: Status::Failed, expires_at: Some(1.0), ..document(&jt) }).await;
    let late = late.expect("create a document finished past its expiry");
    assert_eq!(store.get(&late.uuid).await.expect("get"), Some(late.clone()), "kept until purged");
    assert_eq!(store.purge_expired(now()).await.expect("purge"), 1);
    assert_eq!(store.get(&late.uuid).await.expect("get"), None);

    let gone = JobDocument { status: Status::Cancelled, expires_at: Some(now() + 0.2), ..document(&jt) };
    store.create(&gone).await.expect("create");
    eventually(Duration::from_secs(5), "Redis drops the key", || async { raw_get(&store, &gone.uuid).await.is_none() })
        .await;
    let other_type = job_type("remnant_other");
    let again = store.create(&JobDocument { uuid: gone.uuid.clone(), ..document(&other_type) }).await.unwrap();
    let cancelled = ListFilter { status: Some(Status::Cancelled), ..ListFilter::default() };
    assert!(store.list(&cancelled, &Page::default()).await.expect("list").is_empty());
    assert!(store.list(&by_type(&jt), &Page::default()).await.expect("list").is_empty());
    assert_eq!(store.list(&by_type(&other_type), &Page::default()).await.expect("list"), vec![again]);
    assert_eq!(store.purge_expired(now() + 1.0).await.expect("purge"), 0, "nothing left to purge");
}

/// Filters that match few of many entries are read in several short script calls, and the
/// pages still hold every match once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_filters_over_large_indexes_find_every_match() {
    let (store, _keys) = shared_store().await;
    let jt = job_type("sparse");
    let mut running = Vec::new();
    for i in 0..1500 {
        let mut doc = document(&jt);
        doc.updated_at = 10.0 + f64::from(i % 7);
        if i % 500 == 499 {
            doc.status = Status::Running;
            running.push(doc.uuid.clone());
        }
        store.create(&doc).await.expect("create");
    }
    running.sort();
    let filter = ListFilter { status: Some(Status::Running), ..by_type(&jt) };
    let mut page = Page { limit: 2, ..Page::default() };
    let mut seen = Vec::new();
    loop {
        let docs = store.list(&filter, &page).await.expect("list");
        let Some(last) = docs.last() else { break };
        page.after = Some(last.uuid.clone());
        seen.extend(docs.into_iter().map(|d| d.uuid));
    }
    assert_eq!(seen, running);

    let stale = store.list_stale(Status::Queued, 100.0, None, 5000).await.expect("list stale");
    let mine: Vec<_> = stale.iter().filter(|r| r.doc.as_ref().is_ok_and(|d| d.job_type == jt)).collect();
    assert_eq!(mine.len(), 1497, "every queued document once");
    let in_order =
        stale.windows(2).all(|w| (w[0].key.updated_at, &w[0].key.uuid) < (w[1].key.updated_at, &w[1].key.uuid));
    assert!(in_order, "oldest write first");
}

/// No error shows the URL's password: not an unreachable server, not a refused login, not a
/// bad URL, not through the configuration layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_appear_in_errors() {
    let secret = "s3cr3t-pw";
    let urls = [
        format!("redis://:{secret}@127.0.0.1:1/0?connect_timeout=1"),
        format!("redis://:{secret}@127.0.0.1:6379/0?prefix={}", unique_prefix("auth")),
        format!("redis://user:{secret}@127.0.0.1:6379/0?nonsense=1"),
        format!("redis://user:{secret}@127.0.0.1:6379/x"),
    ];
    for url in &urls {
        let err = open(url).await.err().unwrap_or_else(|| panic!("{url} opened")).to_string();
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains(":***@127.0.0.1"), "names the redacted URL: {err}");
        let err = geyser::config::open_store(Some(url)).await.err().expect("config error").to_string();
        assert!(!err.contains(secret) && err.contains(":***@127.0.0.1"), "{err}");
    }
}

/// A store opened with a password (on a server that requires one) works, and a wrong one
/// fails without showing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_protected_server() {
    let server = PrivateRedis::start_with(&["--requirepass", "right-pw"]);
    let url = server.url().replacen("redis://", "redis://:right-pw@", 1);
    let store = open(&url).await.expect("open with the password");
    let doc = store.create(&document(&job_type("auth"))).await.expect("create");
    assert_eq!(store.get(&doc.uuid).await.expect("get"), Some(doc));
    assert!(!store.redacted_url().contains("right-pw"));
    let wrong = server.url().replacen("redis://", "redis://:wrong-pw@", 1);
    let err = open(&wrong).await.err().expect("a wrong password is refused").to_string();
    assert!(!err.contains("wrong-pw") && err.contains(":***@"), "{err}");
}

/// Connecting to nothing, or to a server that never answers, fails within the connect
/// timeout with an error naming the URL; so does TLS against a plain-text server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fails_within_the_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener that never answers");
    let silent_url = format!("redis://{}/0?connect_timeout=1", silent.local_addr().expect("addr"));
    for url in ["redis://127.0.0.1:1/0?connect_timeout=1", &silent_url, "rediss://127.0.0.1:6379/0?connect_timeout=1"] {
        let started = Instant::now();
        let err = open(url).await.err().unwrap_or_else(|| panic!("{url} opened")).to_string();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{url}: gave up only after {took:?}");
        let shown = url.split('?').next().unwrap_or(url);
        assert!(err.contains(shown) && err.contains("unreachable"), "{url}: {err}");
    }
}

/// A frozen server makes each call fail within its deadline (naming the store and the
/// operation); when it thaws, the same store works again. A killed server (persistence off:
/// its documents are gone) is the same: errors while it is down, then the connection manager
/// reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopping_and_coming_back() {
    let mut server = PrivateRedis::start();
    let store = open(&format!("{}?connect_timeout=0.5&response_timeout=0.5", server.url())).await.expect("open");
    let doc = store.create(&document(&job_type("outage"))).await.expect("create");

    server.signal(libc::SIGSTOP);
    let started = Instant::now();
    let err = store.get(&doc.uuid).await.expect_err("a frozen server");
    assert!(started.elapsed() < Duration::from_secs(3), "gave up only after {:?}", started.elapsed());
    assert!(matches!(&err, StoreError::Unavailable(m) if m.contains(&server.url()) && m.contains("get")), "{err}");
    server.signal(libc::SIGCONT);
    eventually(Duration::from_secs(10), "the store answers again", || {
        let (store, uuid) = (store.clone(), doc.uuid.clone());
        async move { store.get(&uuid).await.is_ok() }
    })
    .await;
    let back = store.get(&doc.uuid).await.ok();
    assert_eq!(back, Some(Some(doc.clone())), "nothing lost while frozen");

    server.kill();
    let err = store.update(&doc).await.expect_err("a dead server");
    assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("update")), "{err}");
    server.start_again();
    eventually(Duration::from_secs(10), "the store reconnects", || {
        let store = store.clone();
        async move { store.get("any").await.is_ok() }
    })
    .await;
    assert_eq!(store.get(&doc.uuid).await.expect("get"), None, "without persistence the document is gone");
    store.create(&document(&job_type("after"))).await.expect("create after the restart");
}

/// Two stores on one server under different prefixes see nothing of each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_applications_apart() {
    let (one, _one_keys) = shared_store().await;
    let (two, _two_keys) = shared_store().await;
    let jt = job_type("apart");
    let doc = one.create(&document(&jt)).await.expect("create");
    assert!(two.get(&doc.uuid).await.expect("get").is_none());
    assert!(two.list(&by_type(&jt), &Page::default()).await.expect("list").is_empty());
    two.create(&doc).await.expect("the same uuid under another prefix");
    assert!(redis_support::keys_under(one.prefix()).iter().all(|k| k.starts_with(one.prefix())));
}

/// A server that lost its script cache (a restart, SCRIPT FLUSH) is given the scripts again
/// by the store, with no error for the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_loaded_again_when_the_server_forgot_them() {
    let server = PrivateRedis::start();
    let store = open(&server.url()).await.expect("open");
    let doc = store.create(&document(&job_type("flush"))).await.expect("create");
    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("raw connection");
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.expect("SCRIPT FLUSH");
    let updated = store.update(&doc).await.expect("update after the flush");
    assert_eq!(store.get(&doc.uuid).await.expect("get"), Some(updated));
}

/// A loopback forwarder to the shared server whose `go_silent` freezes every connection made
/// so far (no byte copied either way, both sockets left open: a link that was cut, not
/// closed), while connections made after it are forwarded as usual.
struct SilencingProxy {
    port: u16,
    counts: Arc<ProxyCounts>,
}

#[derive(Default)]
struct ProxyCounts {
    /// Bumped by `go_silent`: connections born before it fall silent.
    generation: std::sync::atomic::AtomicU64,
    forwarding: std::sync::atomic::AtomicU64,
    silent: std::sync::atomic::AtomicU64,
}

impl SilencingProxy {
    async fn start() -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy listens");
        let port = listener.local_addr().expect("proxy port").port();
        let counts = Arc::new(ProxyCounts::default());
        let shared = Arc::clone(&counts);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (counts, born) = (Arc::clone(&shared), shared.generation.load(SeqCst));
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:6379").await else { return };
                    counts.forwarding.fetch_add(1, SeqCst);
                    let silent = async {
                        while counts.generation.load(SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = silent => {
                            counts.silent.fetch_add(1, SeqCst);
                            std::future::pending::<()>().await
                        }
                    }
                });
            }
        });
        Self { port, counts }
    }

    /// Freezes the connections made so far, returning once each has stopped copying.
    async fn go_silent(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let forwarding = self.counts.forwarding.load(SeqCst);
        self.counts.generation.fetch_add(1, SeqCst);
        eventually(Duration::from_secs(5), "the proxy's connections fall silent", || {
            let counts = Arc::clone(&self.counts);
            async move { counts.silent.load(SeqCst) >= forwarding }
        })
        .await;
    }
}

/// A connection that goes silent (a cut link: no error, no answer) is replaced after the
/// first call that times out, so the store answers again at once instead of waiting out TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gone_silent_is_replaced() {
    let proxy = SilencingProxy::start().await;
    let prefix = unique_prefix("silent");
    let _keys = KeysGuard { prefix: prefix.clone() };
    let url = format!("redis://127.0.0.1:{}/0?prefix={prefix}&connect_timeout=0.5&response_timeout=0.5", proxy.port);
    let store = open(&url).await.expect("open through the proxy");
    let doc = store.create(&document(&job_type("silent"))).await.expect("create");

    proxy.go_silent().await;
    let err = store.get(&doc.uuid).await.expect_err("a silent connection");
    assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("get")), "{err}");
    eventually(Duration::from_secs(5), "a fresh connection answers", || {
        let (store, uuid) = (store.clone(), doc.uuid.clone());
        async move { store.get(&uuid).await.is_ok() }
    })
    .await;
    assert_eq!(store.get(&doc.uuid).await.expect("get"), Some(doc));
}

/// A read in a lane does its I/O on the lane's own connection: it completes while every
/// thread of the runtime that opened the store is held up.
#[test]
fn a_read_in_a_lane_needs_no_thread_of_the_store_runtime() {
    let (home, lane) = support::lanes::home_and_lane(1);
    let (store, _keys) = home.block_on(shared_store());
    let doc = home.block_on(store.create(&document(&job_type("lane")))).expect("create");

    let release = support::lanes::hold_the_thread(&home);
    let got = lane.block_on(async { tokio::time::timeout(Duration::from_secs(5), store.get(&doc.uuid)).await });
    release.send(()).expect("release the home thread");
    let got = got.expect("the get answers with the home runtime held").expect("get").expect("the document");
    assert_eq!(got, doc);
}

/// A lane's connection that the server closed while no call was running is noticed only by
/// the next read, which is asked again on a new connection and succeeds.
#[test]
fn a_lane_read_after_the_server_closed_its_connection_succeeds() {
    let (home, lane) = support::lanes::home_and_lane(2);
    let server = PrivateRedis::start();
    let store = home.block_on(open(&server.url())).expect("open the private server");
    let doc = home.block_on(store.create(&document(&job_type("lane")))).expect("create");
    lane.block_on(store.get(&doc.uuid)).expect("get").expect("the document");

    home.block_on(async {
        let client = redis::Client::open(server.url()).expect("client");
        let mut admin = client.get_multiplexed_async_connection().await.expect("an admin connection");
        let killed: i64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
            .query_async(&mut admin)
            .await
            .expect("CLIENT KILL");
        assert!(killed >= 2, "the store's shared and lane connections were closed ({killed})");
    });
    let got = lane.block_on(store.get(&doc.uuid)).expect("the get after the kill").expect("the document");
    assert_eq!(got, doc);
}
