//! Writers in several OS processes on one store lose no update: each child process adds to a
//! counter in one document through `read_then_write` (read, then compare-and-swap, asked again
//! after a conflict), and the parent checks the sum. Run against every store CI has: a SQLite
//! file, PostgreSQL (a schema of its own) and Redis (a key prefix of its own).
//! The child is an ignored test that the parent runs by name; run on its own it fails.

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
#[allow(dead_code)] // this file uses only the schema of the PostgreSQL support
mod pg;
#[cfg(feature = "redis")]
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;

use geyser::store::NextDocument;
use serde_json::Value;
use support::store_contract::{document, job_type};

const CHILDREN: u64 = 4;
const ADDS_PER_CHILD: u64 = 25;
const URL_VAR: &str = "GEYSER_TEST_WRITER_URL";
const UUID_VAR: &str = "GEYSER_TEST_WRITER_UUID";

/// The child: adds 1 to the document's `count` field `ADDS_PER_CHILD` times.
#[tokio::test]
#[ignore = "a child process of no_update_is_lost_*: the parent runs it with the store to write"]
async fn writer_child() {
    let url = std::env::var(URL_VAR).expect("run by a no_update_is_lost_* test, which sets the store URL");
    let uuid = std::env::var(UUID_VAR).expect("run by a no_update_is_lost_* test, which sets the uuid");
    let store = geyser::config::open_store(Some(&url)).await.expect("open the store");
    let add_one: NextDocument = Arc::new(|doc| {
        let mut next = doc.clone();
        let count = doc.fields.get("count").and_then(Value::as_u64).unwrap_or(0);
        next.fields.insert("count".into(), Value::from(count + 1));
        Some(next)
    });
    for _ in 0..ADDS_PER_CHILD {
        let (_, written) = store.read_then_write(&uuid, add_one.clone()).await.expect("add one");
        assert!(written.is_some(), "the document is there");
    }
}

/// Creates the document, runs the children at once, and checks that every add counted.
async fn no_update_is_lost(url: &str) {
    let store = geyser::config::open_store(Some(url)).await.expect("open the store");
    let doc = store.create(&document(&job_type("processes"))).await.expect("create");
    let exe = std::env::current_exe().expect("the test binary");
    let children: Vec<_> = (0..CHILDREN)
        .map(|_| {
            Command::new(&exe)
                .args(["--ignored", "--exact", "writer_child", "--nocapture"])
                .env(URL_VAR, url)
                .env(UUID_VAR, &doc.uuid)
                .stdout(Stdio::null())
                .spawn()
                .expect("start a writer process")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("a writer process").success(), "a writer process failed");
    }
    let stored = store.get(&doc.uuid).await.expect("get").expect("the document");
    assert_eq!(stored.fields.get("count").and_then(Value::as_u64), Some(CHILDREN * ADDS_PER_CHILD));
    assert_eq!(stored.version, 1 + CHILDREN * ADDS_PER_CHILD);
}

#[tokio::test]
async fn no_update_is_lost_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    no_update_is_lost(&format!("sqlite://{}", dir.path().join("store.db").display())).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn no_update_is_lost_on_postgresql() {
    let schema = pg::TestSchema::new().await;
    no_update_is_lost(&schema.url()).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn no_update_is_lost_on_redis() {
    let guard = redis_support::KeysGuard { prefix: redis_support::unique_prefix("processes") };
    no_update_is_lost(&format!("redis://127.0.0.1:6379/0?prefix={}", guard.prefix)).await;
}
