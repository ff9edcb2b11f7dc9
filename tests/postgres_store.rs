//! The PostgreSQL store against the real server (127.0.0.1:5432, database `test`): the shared
//! store contract, then what needs raw access to the tables (unreadable or inconsistent rows,
//! schema versions) or is special to a network store (exact numbers through jsonb, large and
//! unicode documents, concurrent schema creation, passwords kept out of messages, a server
//! that is down or silent). Each test works in a schema of its own, dropped at its end.
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod pg;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geyser::model::JobDocument;
use geyser::store::postgres::{OpenError, PostgresStore, SCHEMA_LOCK_CLASS, SCHEMA_VERSION};
use geyser::store::{ListFilter, NextDocument, Page, Store, StoreError};
use pg::TestSchema;
use serde_json::Value;
use support::store_contract::{document, job_type};

async fn postgres_store() -> (PostgresStore, TestSchema) {
    let schema = TestSchema::new().await;
    let store = PostgresStore::open(&schema.url()).await.expect("open store");
    (store, schema)
}

store_contract_tests!(postgres_store());

/// Runs `sql` with `params` on a raw connection; returns the rows it changed.
async fn raw(sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> u64 {
    pg::connect().await.execute(sql, params).await.expect("raw statement")
}

/// Finite `f64`s from random bit patterns, plus the edges of the format.
fn awkward_floats(n: usize) -> Vec<f64> {
    let mut floats = vec![
        0.0,
        0.1,
        1e-7,
        5e-324,
        f64::MIN_POSITIVE,
        f64::EPSILON,
        1e15,
        1e16,
        -1e16,
        1.5e19,
        1e21,
        f64::MAX,
        -f64::MAX,
        1_796_002_004.226_930_1,
        9_007_199_254_740_993.0,
    ];
    while floats.len() < n {
        let x = f64::from_bits(rand::random::<u64>());
        if x.is_finite() && x != 0.0 {
            floats.push(x);
        }
    }
    floats
}

/// Every finite float (but -0.0, which PostgreSQL's numbers do not have) comes back from jsonb
/// as the float it was, bit for bit: in the document's own fields, in a job's fields, and
/// in the indexed column `list_stale` reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floats_survive_jsonb_bit_for_bit() {
    let (store, _schema) = postgres_store().await;
    let floats = awkward_floats(5000);
    let jt = job_type("floats");
    let mut doc = document(&jt);
    doc.updated_at = 1_796_002_004.226_930_1;
    doc.started_at = Some(1e16 + 2.0);
    doc.completeness = 0.1 + 0.2;
    doc.fields.insert("floats".into(), floats.iter().map(|&x| Value::from(x)).collect());
    let created = store.create(&doc).await.expect("create");
    let updated = store.update(&created).await.expect("update");
    let got = store.get(&doc.uuid).await.expect("get").expect("the document");
    assert_eq!(got, updated, "the document as written");
    assert_eq!(got.updated_at.to_bits(), doc.updated_at.to_bits());
    let back = got.fields["floats"].as_array().expect("the array");
    for (sent, came) in floats.iter().zip(back) {
        assert!(came.is_f64(), "{sent:e} came back as {came}, not a float");
        assert_eq!(came.as_f64().map(f64::to_bits), Some(sent.to_bits()), "{sent:e} came back as {came}");
    }
    let stale = store.list_stale(doc.status, 2e9, None, 10).await.expect("list stale");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].key.updated_at.to_bits(), doc.updated_at.to_bits());
}

#[tokio::test]
async fn unreadable_document_is_corrupt_naming_its_uuid() {
    let (store, schema) = postgres_store().await;
    let jt = job_type("corrupt");
    let doc = store.create(&document(&jt)).await.expect("create");
    let sql = format!("UPDATE {} SET doc = '{{\"jobType\": 5}}' WHERE uuid = $1", schema.table("geyser_documents"));
    assert_eq!(raw(&sql, &[&doc.uuid]).await, 1);
    let err = store.get(&doc.uuid).await.expect_err("get a corrupt document");
    assert!(matches!(&err, StoreError::Corrupt { uuid, .. } if *uuid == doc.uuid), "{err:?}");
    assert!(err.to_string().contains(&doc.uuid), "{err}");
    let filter = ListFilter { job_type: Some(jt), ..ListFilter::default() };
    let err = store.list(&filter, &Page::default()).await.expect_err("list over a corrupt document");
    assert!(matches!(&err, StoreError::Corrupt { uuid, .. } if *uuid == doc.uuid), "{err:?}");
}

/// A row whose indexed columns disagree with its JSON can never be written by
/// compare-and-swap: every write says so at once, naming the field, instead of reporting
/// a conflict that a read-modify-write loop would retry.
#[tokio::test]
async fn row_that_contradicts_its_json_is_reported_not_retried() {
    let (store, schema) = postgres_store().await;
    for (column, value, field) in [("job_type", "'someone-else'", "jobType"), ("version", "41", "version")] {
        let doc = store.create(&document(&job_type("inconsistent"))).await.expect("create");
        let sql = format!("UPDATE {} SET {column} = {value} WHERE uuid = $1", schema.table("geyser_documents"));
        assert_eq!(raw(&sql, &[&doc.uuid]).await, 1);

        let err = store.update(&doc).await.expect_err("update of an inconsistent row");
        assert!(matches!(&err, StoreError::Inconsistent { uuid, .. } if *uuid == doc.uuid), "{column}: {err:?}");
        assert!(err.to_string().contains(field), "{err}");

        let next: NextDocument = Arc::new(|d| Some(d.clone()));
        let started = Instant::now();
        let err = store.read_then_write(&doc.uuid, next).await.expect_err("read_then_write");
        assert!(matches!(err, StoreError::Inconsistent { .. }), "{column}: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "gave up only after {:?}", started.elapsed());
    }
}

/// `read_then_write` asks `next` again with the document that another process wrote between
/// its read and its write (taken from the refused write: no second read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_then_write_starts_over_when_another_process_wrote_in_between() {
    let (store, schema) = postgres_store().await;
    let doc = store.create(&document(&job_type("rtw_race"))).await.expect("create");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sql = format!(
        "UPDATE {} SET doc = $1::text::jsonb, version = version + 1 WHERE uuid = $2",
        schema.table("geyser_documents")
    );
    let next: NextDocument = {
        let seen = seen.clone();
        Arc::new(move |stored: &JobDocument| {
            let mut seen = seen.lock().expect("seen");
            seen.push(stored.attempts);
            if seen.len() == 1 {
                // Another connection (as another process would) writes a new version after this read.
                let theirs = JobDocument { attempts: 5, version: stored.version + 1, ..stored.clone() };
                let (sql, uuid) = (sql.clone(), stored.uuid.clone());
                let written = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    let json = serde_json::to_string(&theirs).expect("json");
                    runtime.block_on(async { raw(&sql, &[&json, &uuid]).await })
                });
                assert_eq!(written.join().expect("the other writer"), 1);
            }
            Some(JobDocument { attempts: stored.attempts + 1, ..stored.clone() })
        })
    };
    let (_, written) = store.read_then_write(&doc.uuid, next).await.expect("read then write");
    assert_eq!(*seen.lock().expect("seen"), vec![0, 5], "asked again with the other write seen");
    assert_eq!(written.map(|d| (d.attempts, d.version)), Some((6, 3)));
    assert_eq!(store.get(&doc.uuid).await.expect("get").map(|d| (d.attempts, d.version)), Some((6, 3)));
}

/// A 1 MiB document and text from many scripts, escapes and control characters come back as written.
#[tokio::test]
async fn large_and_unicode_documents_round_trip() {
    let (store, _schema) = postgres_store().await;
    let jt = job_type("big_ünïcødé_名前");
    let mut doc = document(&jt);
    let text = "Grüße, 世界! مرحبا 🎉👩‍👩‍👧 e\u{301} \"quoted\" back\\slash tab\t line\n bell\u{7} ";
    doc.fields.insert("text".into(), Value::from(text));
    doc.fields.insert("ключ 🔑".into(), Value::from("значение"));
    doc.fields.insert("big".into(), Value::from("x".repeat(1 << 20)));
    let created = store.create(&doc).await.expect("create a 1 MiB document");
    assert_eq!(store.get(&doc.uuid).await.expect("get").as_ref(), Some(&created));
    let mut changed = created.clone();
    changed.fields.insert("big".into(), Value::from("y".repeat(1 << 20)));
    let updated = store.update(&changed).await.expect("update");
    assert_eq!(store.get(&doc.uuid).await.expect("get").as_ref(), Some(&updated));
    let filter = ListFilter { job_type: Some(jt), ..ListFilter::default() };
    assert_eq!(store.list(&filter, &Page::default()).await.expect("list"), vec![updated]);
}

/// jsonb cannot hold U+0000 in a string: the write is refused saying so, and nothing is written.
#[tokio::test]
async fn nul_character_is_refused_saying_why() {
    let (store, _schema) = postgres_store().await;
    let mut doc = document(&job_type("nul"));
    doc.fields.insert("text".into(), Value::from("before\u{0}after"));
    let err = store.create(&doc).await.expect_err("a document with U+0000");
    assert!(err.to_string().contains("U+0000"), "{err}");
    assert!(store.get(&doc.uuid).await.expect("get").is_none());
}

/// Sets the stored schema version by hand.
async fn set_schema_version(schema: &TestSchema, version: i64) {
    let sql = format!("UPDATE {} SET value = $1 WHERE key = 'schema_version'", schema.table("geyser_meta"));
    assert_eq!(raw(&sql, &[&version]).await, 1);
}

/// A connection lost while the schema is being checked is `Unreachable` (a worker tries again
/// later), not a refusal: here the opening process waits on the schema lock another session
/// holds, and its connection is terminated while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_during_the_schema_check_is_unreachable() {
    let schema = TestSchema::new().await;
    let mut holder = pg::connect().await;
    let tx = holder.transaction().await.expect("begin");
    tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&SCHEMA_LOCK_CLASS, &schema.name])
        .await
        .expect("hold the schema lock");
    let url = schema.url();
    let opening = tokio::spawn(async move { PostgresStore::open(&url).await.err() });
    let admin = pg::connect().await;
    let waiting =
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%' \
                   AND pid <> pg_backend_pid()";
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid: i32 = loop {
        if let Some(row) = admin.query_opt(waiting, &[]).await.expect("find the waiting opener") {
            break row.get(0);
        }
        assert!(Instant::now() < deadline, "the opener never waited on the schema lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    admin.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.expect("terminate the opener's connection");
    let err = opening.await.expect("join").expect("opening fails");
    assert!(matches!(err, OpenError::Unreachable { .. }), "{err:?}");
    tx.rollback().await.expect("release the lock");
}

/// A Geyser facing a schema migrated by a newer one refuses it, naming both versions.
#[tokio::test]
async fn newer_schema_is_refused_naming_both_versions() {
    let (store, schema) = postgres_store().await;
    drop(store);
    set_schema_version(&schema, SCHEMA_VERSION + 1).await;
    let err = PostgresStore::open(&schema.url()).await.err().expect("open a newer schema");
    let message = err.to_string();
    assert!(matches!(err, OpenError::Schema { .. }), "{err:?}");
    for part in [
        format!("version {}", SCHEMA_VERSION + 1),
        format!("version {SCHEMA_VERSION}"),
        schema.name.clone(),
        "upgrade Geyser".into(),
    ] {
        assert!(message.contains(&part), "{part:?} missing from: {message}");
    }
}

/// An older schema (here version 0: a schema with only its version table) is migrated on open.
#[tokio::test]
async fn older_schema_is_migrated_on_open() {
    let schema = TestSchema::new().await;
    let client = pg::connect().await;
    let meta = schema.table("geyser_meta");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{}\";
             CREATE TABLE {meta} (key text PRIMARY KEY, value bigint NOT NULL);
             INSERT INTO {meta} VALUES ('schema_version', 0);",
            schema.name
        ))
        .await
        .expect("a version 0 schema");
    let store = PostgresStore::open(&schema.url()).await.expect("open migrates");
    let version: i64 = client
        .query_one(&format!("SELECT value FROM {meta} WHERE key = 'schema_version'"), &[])
        .await
        .expect("read the version")
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    let doc = store.create(&document(&job_type("migrated"))).await.expect("create");
    assert_eq!(store.get(&doc.uuid).await.expect("get"), Some(doc));
}

/// Processes starting together on a new schema create it once, and every one of them opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_create_the_schema_once() {
    let schema = TestSchema::new().await;
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let url = schema.url();
            tokio::spawn(async move { PostgresStore::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.expect("opener").expect("every concurrent open succeeds"));
    }
    let doc = stores[0].create(&document(&job_type("together"))).await.expect("create");
    assert_eq!(stores[7].get(&doc.uuid).await.expect("get"), Some(doc));
    let rows = pg::connect()
        .await
        .query(&format!("SELECT value FROM {}", schema.table("geyser_meta")), &[])
        .await
        .expect("read the version");
    assert_eq!(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), vec![SCHEMA_VERSION]);
}

/// A password in the URL never shows: not when the URL is refused, not when the server is
/// unreachable, not in an operation's error on a store that opened.
#[tokio::test]
async fn password_never_appears_in_errors() {
    const SECRET: &str = "hunter2-secret";
    let bad = format!("postgresql://postgres:{SECRET}@127.0.0.1:5432/test?sslcert=client.pem");
    let err = PostgresStore::open(&bad).await.err().expect("an unknown parameter");
    assert!(matches!(err, OpenError::BadUrl { .. }), "{err:?}");
    let down = format!("postgresql://postgres:{SECRET}@127.0.0.1:1/test?connect_timeout=2");
    let err = PostgresStore::open(&down).await.err().expect("nothing listens on port 1");
    assert!(err.to_string().contains("postgresql://postgres:***@127.0.0.1:1/test"), "{err}");
    let config_err = geyser::config::open_store(Some(&down)).await.err().expect("through the config");
    for message in [err.to_string(), format!("{err:?}"), config_err.to_string(), format!("{config_err:?}")] {
        assert!(!message.contains(SECRET), "{message}");
    }

    // Trust authentication ignores the password: the store opens, then loses its schema.
    let schema = TestSchema::new().await;
    let url = schema.url().replacen("postgresql://postgres@", &format!("postgresql://postgres:{SECRET}@"), 1);
    assert!(url.contains(SECRET), "the test URL carries a password: {url}");
    let store = PostgresStore::open(&url).await.expect("open with a password");
    raw(&format!("DROP SCHEMA \"{}\" CASCADE", schema.name), &[]).await;
    let err = store.get("any").await.expect_err("get from a dropped schema");
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("postgres:***@") && message.contains("get") && !message.contains(SECRET), "{message}");
    assert!(message.contains("does not exist"), "the server's own message is kept: {message}");
}

/// Opening a store where a server accepts connections but never answers gives up within
/// the connect timeout, naming the URL; it never hangs.
#[tokio::test]
async fn silent_server_fails_within_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = listener.local_addr().expect("port").port();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("postgresql://postgres@127.0.0.1:{port}/test?connect_timeout=1");
    let started = Instant::now();
    let err = PostgresStore::open(&url).await.err().expect("a silent server");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "gave up after {took:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    held.abort();
}

/// The server going away mid-work: operations fail at once with a clear error (no hang, no
/// half-written document), and once it is back the same store works again, no reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_going_away_is_an_error_then_the_store_recovers() {
    let schema = TestSchema::new().await;
    let mut proxy = pg::Proxy::start().await;
    let store = PostgresStore::open(&proxy.url(&schema)).await.expect("open through the proxy");
    let doc = store.create(&document(&job_type("away"))).await.expect("create");

    // A writer bumps `attempts` with every version until the server goes away under it.
    let writer = {
        let (store, uuid) = (store.clone(), doc.uuid.clone());
        tokio::spawn(async move {
            let bump: NextDocument = Arc::new(|d| Some(JobDocument { attempts: d.attempts + 1, ..d.clone() }));
            let mut written = 0_u64;
            loop {
                match store.read_then_write(&uuid, bump.clone()).await {
                    Ok(_) => written += 1,
                    Err(e) => return (written, e),
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.get(&doc.uuid).await.expect("get").map_or(0, |d| d.attempts) < 20 {
        assert!(Instant::now() < deadline, "the writer makes no progress");
    }
    proxy.cut().await;
    let (written, err) = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the writer fails within 10 s")
        .expect("writer task");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let started = Instant::now();
    let err = store.get(&doc.uuid).await.expect_err("get while the server is away");
    assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("get")), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "failed only after {:?}", started.elapsed());

    proxy.restore().await;
    let back = store.get(&doc.uuid).await.expect("get once the server is back").expect("the document");
    // Each write bumped both; the last one may have committed with its answer lost.
    assert_eq!(back.version, u64::from(back.attempts) + 1, "a whole document: {back:?}");
    assert!((written..=written + 1).contains(&u64::from(back.attempts)), "{written} writes, stored {back:?}");
    store.update(&back).await.expect("update once the server is back");
}

/// A user who may not create schemas opens a schema an administrator made for it.
#[tokio::test]
async fn schema_made_by_an_administrator_opens_without_the_right_to_create_schemas() {
    let schema = TestSchema::new().await;
    let role = schema.name.replace("geyser_test_", "geyser_test_role_");
    let admin = pg::connect().await;
    let setup = format!("CREATE ROLE {role} LOGIN; CREATE SCHEMA \"{}\" AUTHORIZATION {role};", schema.name);
    admin.batch_execute(&setup).await.expect("a role and its schema");
    let url = schema.url().replacen("postgresql://postgres@", &format!("postgresql://{role}@"), 1);
    let opened = PostgresStore::open(&url).await;
    let created = match &opened {
        Ok(store) => store.create(&document(&job_type("granted"))).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    drop(opened);
    let cleanup = format!("DROP SCHEMA \"{}\" CASCADE; DROP ROLE {role};", schema.name);
    admin.batch_execute(&cleanup).await.expect("drop the role and its schema");
    created.expect("open and create as the schema's owner");
}

/// A call in a lane does its I/O on the lane's own connection: it completes while every
/// thread of the runtime that opened the store is held up.
#[test]
fn a_call_in_a_lane_needs_no_thread_of_the_store_runtime() {
    let (home, lane) = support::lanes::home_and_lane(1);
    let schema = home.block_on(TestSchema::new());
    let store = home.block_on(PostgresStore::open(&schema.url())).expect("open");
    let doc = lane.block_on(store.create(&document(&job_type("lane")))).expect("create in the lane");

    let release = support::lanes::hold_the_thread(&home);
    let within = Duration::from_secs(5);
    let got = lane.block_on(async { tokio::time::timeout(within, store.get(&doc.uuid)).await });
    let got = got.expect("the get answers with the home runtime held").expect("get").expect("the document");
    let saved = lane.block_on(async { tokio::time::timeout(within, store.update(&got)).await });
    saved.expect("the update answers with the home runtime held").expect("update");
    release.send(()).expect("release the home thread");
}

/// A lane's connection that the server closed while no call was running (nothing polled it)
/// is replaced before the next call, which succeeds rather than failing on the dead one.
#[test]
fn a_lane_connection_closed_while_idle_is_replaced_before_the_next_call() {
    let (home, lane) = support::lanes::home_and_lane(2);
    let schema = home.block_on(TestSchema::new());
    let mut proxy = home.block_on(pg::Proxy::start());
    let store = home.block_on(PostgresStore::open(&proxy.url(&schema))).expect("open through the proxy");
    let doc = lane.block_on(store.create(&document(&job_type("lane")))).expect("create in the lane");
    lane.block_on(store.get(&doc.uuid)).expect("get").expect("the document");

    home.block_on(async {
        proxy.cut().await;
        proxy.restore().await;
    });
    let got = lane.block_on(store.get(&doc.uuid)).expect("the get after the cut").expect("the document");
    let saved = lane.block_on(store.update(&got)).expect("the update after the cut");
    assert_eq!(saved.version, doc.version + 1);
}
