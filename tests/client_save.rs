//! `Geyser::save` of a document the client handed out: one compare-and-swap built on the
//! remembered document (docs/stores.md "Saving a document"). On the embedded SQLite file, on
//! PostgreSQL (127.0.0.1:5432, a schema per test) and on Redis (127.0.0.1:6379, a key prefix
//! per test): forged lifecycle fields are still
//! ignored, a stale version still conflicts, a small memory still saves through the read, and
//! two clients saving the same job at once lose no update. Writes only temp files and its
//! own schemas and keys.

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
#[allow(dead_code)] // its proxy (a server that goes away) serves other tests
mod pg;
#[cfg(feature = "redis")]
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use geyser::client::{ClientError, Geyser, Recent};
use geyser::model::{JobDocument, Status};
use geyser::store::StoreError;
use serde_json::Value;
use support::store_contract::{document, job_type};

/// A client on `store_url`, with the embedded queue in `dir`.
async fn client(dir: &tempfile::TempDir, store_url: &str) -> Geyser {
    let queue = format!("sqlite://{}", dir.path().join("geyser.db").display());
    geyser::config::open(Some(&queue), Some(store_url)).await.expect("open the client")
}

/// Where a test keeps its store: a SQLite file, or a PostgreSQL schema of its own.
enum Place {
    Sqlite(tempfile::TempDir),
    #[cfg(feature = "postgres")]
    Postgres(tempfile::TempDir, pg::TestSchema),
    #[cfg(feature = "redis")]
    Redis(tempfile::TempDir, redis_support::KeysGuard),
}

impl Place {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    #[cfg(feature = "postgres")]
    async fn postgres() -> Self {
        Self::Postgres(tempfile::tempdir().expect("temp dir"), pg::TestSchema::new().await)
    }

    #[cfg(feature = "redis")]
    fn redis() -> Self {
        let keys = redis_support::KeysGuard { prefix: redis_support::unique_prefix("save") };
        Self::Redis(tempfile::tempdir().expect("temp dir"), keys)
    }

    /// A new client of this place (a memory of its own).
    async fn client(&self) -> Geyser {
        match self {
            Self::Sqlite(dir) => client(dir, &format!("sqlite://{}", dir.path().join("geyser.db").display())).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(dir, schema) => client(dir, &schema.url()).await,
            #[cfg(feature = "redis")]
            Self::Redis(dir, keys) => {
                client(dir, &format!("{}?prefix={}", redis_support::SHARED_SERVER, keys.prefix)).await
            }
        }
    }
}

/// A new queued job, written to the store directly: what an enqueue leaves (its queue entry
/// is of no concern here, and no relay noting it can move the document on under a test).
async fn enqueued(g: &Geyser) -> JobDocument {
    g.store.create(&document(&job_type("save"))).await.expect("create")
}

async fn get(g: &Geyser, uuid: &str) -> JobDocument {
    g.get(uuid).await.expect("get").expect("the document")
}

async fn forged_lifecycle_is_ignored(place: Place) {
    let g = place.client().await;
    let job = enqueued(&g).await;
    let mut doc = get(&g, &job.uuid).await;
    doc.status = Status::Succeeded;
    doc.attempts = 9;
    doc.failures = 4;
    doc.fence = Some("forged".into());
    doc.worker = Some("nobody".into());
    doc.cancel_requested = true;
    doc.queue_job_id = Some("forged".into());
    doc.completeness = 0.5;
    doc.fields.insert("fieldOne".into(), Value::from("changed"));
    let before = g.recent_stats();
    let saved = g.save(&doc).await.expect("save");
    let after = g.recent_stats();
    assert_eq!(after.hits, before.hits + 1, "the save was built on the remembered document");
    assert_eq!((saved.status, saved.attempts, saved.failures), (Status::Queued, 0, 0));
    assert_eq!((saved.fence.as_deref(), saved.worker.as_deref()), (None, None));
    assert!(!saved.cancel_requested);
    assert_eq!(saved.queue_job_id, job.queue_job_id, "the queue id is kept (none)");
    assert_eq!((saved.completeness, &saved.fields["fieldOne"]), (0.5, &Value::from("changed")));
    assert_eq!(saved.version, doc.version + 1);
    assert_eq!(get(&g, &job.uuid).await, saved, "the store holds what save returned");
}

async fn stale_version_conflicts(place: Place) {
    let (a, b) = (place.client().await, place.client().await);
    let job = enqueued(&a).await;
    let from_a = get(&a, &job.uuid).await;
    let mut from_b = get(&b, &job.uuid).await;
    from_b.completeness = 0.25;
    let won = b.save(&from_b).await.expect("b saves first");
    let before = a.recent_stats();
    let lost = a.save(&JobDocument { completeness: 0.75, ..from_a.clone() }).await;
    assert_eq!(a.recent_stats().hits, before.hits + 1, "a tried its remembered document");
    match lost {
        Err(ClientError::Store(StoreError::Conflict { uuid, expected })) => {
            assert_eq!((uuid.as_str(), expected), (job.uuid.as_str(), from_a.version));
        }
        other => panic!("a stale save must conflict, got {other:?}"),
    }
    assert_eq!(get(&b, &job.uuid).await, won, "the losing save wrote nothing");

    // The same stale document from a client that never handed it out: read, then conflict.
    let c = place.client().await;
    let before = c.recent_stats();
    let lost = c.save(&from_a).await;
    assert!(matches!(lost, Err(ClientError::Store(StoreError::Conflict { .. }))), "{lost:?}");
    assert_eq!(c.recent_stats().misses, before.misses + 1);
}

/// A client that remembers 4 documents saves 20 it handed out, newest first: the last 4 it
/// handed out are saved in one swap each, the 16 it forgot after a read; every save lands.
async fn small_memory_still_saves(place: Place) {
    let g = place.client().await.remembering(Recent::new(4, 1 << 20));
    let mut docs = Vec::new();
    for _ in 0..20 {
        let job = enqueued(&g).await;
        docs.push(get(&g, &job.uuid).await);
        assert!(g.recent_stats().entries <= 4, "{:?}", g.recent_stats());
    }
    let before = g.recent_stats();
    for doc in docs.iter().rev() {
        let saved = g.save(&JobDocument { completeness: 1.0, ..doc.clone() }).await.expect("save");
        assert_eq!((saved.version, saved.completeness), (doc.version + 1, 1.0));
        assert!(g.recent_stats().entries <= 4, "{:?}", g.recent_stats());
    }
    let after = g.recent_stats();
    assert_eq!((after.hits - before.hits, after.misses - before.misses), (4, 16));
}

/// Adds one to the job's `count` field `times` times, reading again after each conflict.
async fn count_up(g: &Geyser, uuid: &str, times: u64) {
    let mut conflicts = 0;
    let mut doc = get(g, uuid).await;
    let mut done = 0;
    while done < times {
        let count = doc.fields.get("count").and_then(Value::as_u64).unwrap_or(0);
        let mut next = doc.clone();
        next.fields.insert("count".into(), Value::from(count + 1));
        match g.save(&next).await {
            Ok(saved) => {
                doc = saved;
                done += 1;
            }
            Err(ClientError::Store(StoreError::Conflict { .. })) => {
                conflicts += 1;
                assert!(conflicts < 100 * times, "no progress after {conflicts} conflicts");
                doc = get(g, uuid).await;
            }
            Err(e) => panic!("save: {e}"),
        }
    }
}

async fn two_clients_lose_no_update(place: Place) {
    const TIMES: u64 = 200;
    let (a, b) = (place.client().await, place.client().await);
    let job = enqueued(&a).await;
    let start = get(&a, &job.uuid).await;
    let (ta, tb) = {
        let (a, b) = (a.clone(), b.clone());
        let (ua, ub) = (job.uuid.clone(), job.uuid.clone());
        (
            tokio::spawn(async move { count_up(&a, &ua, TIMES).await }),
            tokio::spawn(async move { count_up(&b, &ub, TIMES).await }),
        )
    };
    ta.await.expect("client a");
    tb.await.expect("client b");
    let end = get(&a, &job.uuid).await;
    assert_eq!(end.fields["count"], Value::from(2 * TIMES), "every increment is kept");
    assert_eq!(end.version, start.version + 2 * TIMES);
    assert!(a.recent_stats().hits > 0 && b.recent_stats().hits > 0, "both took the one-swap path");
}

/// `save_json` (what the Python client saves with) hands back the saved document's text on
/// both paths: after one swap on the remembered document (which it remembers in turn, so
/// the next save of that text is one swap too), and after a read when it remembers nothing.
async fn save_json_hands_back_the_saved_text(place: Place) {
    let g = place.client().await;
    let job = enqueued(&g).await;
    let read = JobDocument::from_json(&g.get_json(&job.uuid).await.expect("get").expect("the document")).expect("json");
    let before = g.recent_stats();
    let json = g.save_json(&JobDocument { completeness: 0.5, ..read }).await.expect("save");
    let saved = JobDocument::from_json(&json).expect("the saved document");
    assert_eq!((saved.version, saved.completeness), (job.version + 1, 0.5));
    assert_eq!(json, get(&g, &job.uuid).await.to_json(), "the text of the stored document");
    let json = g.save_json(&JobDocument { completeness: 0.75, ..saved }).await.expect("save again");
    assert_eq!(g.recent_stats().hits, before.hits + 2, "both saves took the one-swap path");

    let other = place.client().await; // remembers nothing: reads, then swaps
    let saved = JobDocument::from_json(&json).expect("the saved document");
    let json = other.save_json(&JobDocument { completeness: 1.0, ..saved.clone() }).await.expect("save");
    let last = JobDocument::from_json(&json).expect("the saved document");
    assert_eq!((last.version, last.completeness), (saved.version + 1, 1.0));
    assert_eq!(json, get(&g, &job.uuid).await.to_json());
    let err = other.save_json(&saved).await.expect_err("a stale version");
    assert!(matches!(err, ClientError::Store(StoreError::Conflict { .. })), "{err:?}");
}

#[tokio::test]
async fn sqlite_save_json_hands_back_the_saved_text() {
    save_json_hands_back_the_saved_text(Place::sqlite()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_save_json_hands_back_the_saved_text() {
    save_json_hands_back_the_saved_text(Place::postgres().await).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_save_json_hands_back_the_saved_text() {
    save_json_hands_back_the_saved_text(Place::redis()).await;
}

/// `get_json` (what the Python client reads with) remembers the document as `get` does.
#[tokio::test]
async fn sqlite_get_json_remembers_the_document() {
    let g = Place::sqlite().client().await;
    let job = enqueued(&g).await;
    let json = g.get_json(&job.uuid).await.expect("get_json").expect("the document");
    let read = JobDocument::from_json(&json).expect("a job document");
    assert_eq!(read, job);
    let before = g.recent_stats();
    g.save(&JobDocument { completeness: 0.5, ..read }).await.expect("save");
    assert_eq!(g.recent_stats().hits, before.hits + 1);
    assert!(g.get_json("no-such-job").await.expect("get_json").is_none());
}

/// The embedded file commits a job's document and queue entry together, so the document
/// `enqueue` returns is the stored one: saving it right away takes one swap.
#[tokio::test]
async fn sqlite_enqueue_then_save_takes_one_swap() {
    let g = Place::sqlite().client().await;
    let job = g.enqueue(JobDocument { version: 0, ..document(&job_type("save")) }, 0.0).await.expect("enqueue");
    let before = g.recent_stats();
    let saved = g.save(&JobDocument { completeness: 0.5, ..job.clone() }).await.expect("save");
    assert_eq!(g.recent_stats().hits, before.hits + 1);
    assert_eq!((saved.version, saved.completeness, &saved.queue_job_id), (job.version + 1, 0.5, &job.queue_job_id));
}

#[tokio::test]
async fn sqlite_forged_lifecycle_is_ignored_on_the_fast_path() {
    forged_lifecycle_is_ignored(Place::sqlite()).await;
}

#[tokio::test]
async fn sqlite_stale_version_conflicts_on_the_fast_path() {
    stale_version_conflicts(Place::sqlite()).await;
}

#[tokio::test]
async fn sqlite_small_memory_still_saves() {
    small_memory_still_saves(Place::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_clients_lose_no_update() {
    two_clients_lose_no_update(Place::sqlite()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_forged_lifecycle_is_ignored_on_the_fast_path() {
    forged_lifecycle_is_ignored(Place::postgres().await).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_stale_version_conflicts_on_the_fast_path() {
    stale_version_conflicts(Place::postgres().await).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_small_memory_still_saves() {
    small_memory_still_saves(Place::postgres().await).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_clients_lose_no_update() {
    two_clients_lose_no_update(Place::postgres().await).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_forged_lifecycle_is_ignored_on_the_fast_path() {
    forged_lifecycle_is_ignored(Place::redis()).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_stale_version_conflicts_on_the_fast_path() {
    stale_version_conflicts(Place::redis()).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_small_memory_still_saves() {
    small_memory_still_saves(Place::redis()).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_clients_lose_no_update() {
    two_clients_lose_no_update(Place::redis()).await;
}
