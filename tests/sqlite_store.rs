//! The SQLite store: the shared store contract on a temp file, plus what needs raw access to the
//! file (an unreadable document) or is special to an embedded store (sharing a file with the queue).

mod support;

use std::path::Path;

use geyser::queue::sqlite::SqliteQueue;
use geyser::queue::{PutOptions, Queue};
use geyser::store::sqlite::SqliteStore;
use geyser::store::{ListFilter, Page, Store, StoreError};
use support::store_contract::{document, job_type};

async fn sqlite_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("store.db")).expect("open store");
    (store, dir)
}

store_contract_tests!(sqlite_store());

/// Overwrites a document's stored JSON behind the store's back.
fn write_raw(path: &Path, uuid: &str, json: &str) {
    let conn = rusqlite::Connection::open(path).expect("raw connection");
    let n = conn.execute("UPDATE geyser_documents SET doc = ? WHERE uuid = ?", [json, uuid]).expect("raw write");
    assert_eq!(n, 1);
}

#[tokio::test]
async fn unreadable_document_is_corrupt_naming_its_uuid() {
    let (store, dir) = sqlite_store().await;
    let jt = job_type("corrupt");
    let doc = store.create(&document(&jt)).await.expect("create");
    write_raw(&dir.path().join("store.db"), &doc.uuid, r#"{"jobType": 5"#);
    let err = store.get(&doc.uuid).await.expect_err("get a corrupt document");
    assert!(matches!(&err, StoreError::Corrupt { uuid, .. } if *uuid == doc.uuid), "{err:?}");
    assert!(err.to_string().contains(&doc.uuid), "{err}");
    let filter = ListFilter { job_type: Some(jt), ..ListFilter::default() };
    let err = store.list(&filter, &Page::default()).await.expect_err("list over a corrupt document");
    assert!(matches!(&err, StoreError::Corrupt { uuid, .. } if *uuid == doc.uuid), "{err:?}");
}

#[tokio::test]
async fn stored_json_carries_the_version() {
    let (store, dir) = sqlite_store().await;
    let doc = store.create(&document(&job_type("json"))).await.expect("create");
    let doc = store.update(&doc).await.expect("update");
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).expect("raw connection");
    let json: String =
        conn.query_row("SELECT doc FROM geyser_documents WHERE uuid = ?", [&doc.uuid], |r| r.get(0)).expect("raw read");
    let raw: serde_json::Value = serde_json::from_str(&json).expect("stored JSON");
    assert_eq!(raw["version"], 2);
    assert_eq!(raw["uuid"], doc.uuid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_store_share_one_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("geyser.db");
    let store = SqliteStore::open(&path).expect("open store");
    let queue = SqliteQueue::open(&path).expect("open queue on the same file");
    let doc = store.create(&document(&job_type("shared"))).await.expect("create");
    let id = queue.put("shared", doc.uuid.as_bytes(), PutOptions::default()).await.expect("put");
    let mut consumer = queue.consumer(&["shared".to_owned()]).await.expect("consumer");
    let job = consumer.reserve(std::time::Duration::ZERO).await.expect("reserve").expect("the job");
    assert_eq!(job.id, id);
    let uuid = String::from_utf8(job.body).expect("uuid body");
    assert_eq!(store.get(&uuid).await.expect("get").expect("the document").uuid, doc.uuid);
}

#[tokio::test]
async fn read_then_write_starts_over_when_another_process_wrote_in_between() {
    let (store, dir) = sqlite_store().await;
    let doc = store.create(&document(&job_type("rtw_race"))).await.expect("create");
    let path = dir.path().join("store.db");
    let (uuid, seen) = (doc.uuid.clone(), std::sync::Arc::new(std::sync::Mutex::new(Vec::new())));
    let next: geyser::store::NextDocument = {
        let seen = seen.clone();
        std::sync::Arc::new(move |stored: &geyser::model::JobDocument| {
            let mut seen = seen.lock().unwrap();
            seen.push(stored.attempts);
            if seen.len() == 1 {
                // Another connection (as another process would) writes a new version after this read.
                let other = rusqlite::Connection::open(&path).expect("other connection");
                let theirs = geyser::model::JobDocument { attempts: 5, version: stored.version + 1, ..stored.clone() };
                let json = serde_json::to_string(&theirs).unwrap();
                let n = other
                    .execute(
                        "UPDATE geyser_documents SET doc = ?, version = version + 1 WHERE uuid = ?",
                        [&json, &uuid],
                    )
                    .unwrap();
                assert_eq!(n, 1);
            }
            Some(geyser::model::JobDocument { attempts: stored.attempts + 1, ..stored.clone() })
        })
    };
    let (_, written) = store.read_then_write(&doc.uuid, next).await.expect("read then write");
    assert_eq!(*seen.lock().unwrap(), vec![0, 5], "asked again with the other write seen");
    assert_eq!(written.map(|d| d.attempts), Some(6));
    assert_eq!(store.get(&doc.uuid).await.unwrap().map(|d| d.attempts), Some(6));
}

/// A row whose indexed columns disagree with its JSON (a hand edit, a bug, a migration) can
/// never be written by compare-and-swap: every write must say so at once, naming the field,
/// instead of reporting a conflict that a read-modify-write loop would retry forever.
#[tokio::test]
async fn row_that_contradicts_its_json_is_reported_not_retried() {
    let (store, dir) = sqlite_store().await;
    let path = dir.path().join("store.db");
    for (column, value) in [("job_type", "someone-else"), ("version", "41")] {
        let doc = store.create(&document(&job_type("inconsistent"))).await.expect("create");
        let conn = rusqlite::Connection::open(&path).expect("raw connection");
        let sql = format!("UPDATE geyser_documents SET {column} = ? WHERE uuid = ?");
        assert_eq!(conn.execute(&sql, [value, doc.uuid.as_str()]).expect("raw write"), 1);

        let err = store.update(&doc).await.expect_err("update of an inconsistent row");
        assert!(matches!(&err, StoreError::Inconsistent { uuid, .. } if *uuid == doc.uuid), "{column}: {err:?}");
        let field = if column == "job_type" { "jobType" } else { "version" };
        assert!(err.to_string().contains(field), "{err}");

        let next: geyser::store::NextDocument = std::sync::Arc::new(|d| Some(d.clone()));
        let started = std::time::Instant::now();
        let err = store.read_then_write(&doc.uuid, next).await.expect_err("read_then_write");
        assert!(matches!(err, StoreError::Inconsistent { .. }), "{column}: {err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "gave up only after {:?}", started.elapsed());
    }
}
