//! The maintenance sweep on the embedded SQLite queue and store: what a crash between
//! two writes leaves behind is repaired, and healthy jobs are left alone.

mod support;

use std::sync::Arc;
use std::time::Duration;

use geyser::client::Geyser;
use geyser::maintenance::sweep;
use geyser::model::Status;
use geyser::queue::sqlite::SqliteQueue;
use geyser::queue::{JobState, PutOptions, QueueJobId};
use geyser::store::sqlite::SqliteStore;
use support::store_contract::{document, job_type};

fn embedded() -> (Geyser, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("geyser.db");
    let queue = SqliteQueue::open(&path).expect("open queue");
    let store = SqliteStore::open(&path).expect("open store");
    (Geyser::two_step(Arc::new(queue), Arc::new(store)), dir)
}

fn entry_of(doc: &geyser::model::JobDocument) -> QueueJobId {
    doc.queue_job_id.as_deref().expect("a queue job id").parse().expect("shard:id")
}

#[tokio::test]
async fn queued_document_without_entry_is_put_again_once() {
    let (g, _dir) = embedded();
    // A crash between saving the document and putting it.
    let doc = g.store.create(&document(&job_type("orphan"))).await.expect("create");
    let report = sweep(&g, 0.0).await.expect("sweep");
    assert_eq!((report.requeued, report.recovered), (1, 0));
    let swept = g.store.get(&doc.uuid).await.expect("get").expect("document");
    assert_eq!(swept.status, Status::Queued);
    assert_eq!(g.queue.job_state(entry_of(&swept)).await.expect("state"), Some(JobState::Ready));
    assert_eq!(sweep(&g, 0.0).await.expect("second sweep").requeued, 0, "the new entry is found");
    assert_eq!(g.queue.stats_tube("contract").await.expect("stats").ready, 1);
}

#[tokio::test]
async fn young_documents_are_left_to_their_enqueue() {
    let (g, _dir) = embedded();
    let mut doc = document(&job_type("young"));
    doc.updated_at = geyser::model::now();
    g.store.create(&doc).await.expect("create");
    assert_eq!(sweep(&g, 60.0).await.expect("sweep").requeued, 0);
}

#[tokio::test]
async fn running_document_whose_entry_is_gone_records_the_lost_attempt_and_is_put_again() {
    let (g, _dir) = embedded();
    let doc = g.store.create(&document(&job_type("lost"))).await.expect("create");
    let opts = PutOptions { ttr: Duration::from_secs(30), ..PutOptions::default() };
    let id = g.queue.put("contract", doc.uuid.as_bytes(), opts).await.expect("put");
    let mut consumer = g.queue.consumer(&["contract".to_owned()]).await.expect("consumer");
    let reserved = consumer.reserve(Duration::from_secs(1)).await.expect("reserve").expect("a job");
    let mut running = doc.clone();
    running.queue_job_id = Some(id.to_string());
    running.start_attempt("w", "1:f").expect("start");
    g.store.update(&running).await.expect("save running");
    // The queue loses the entry while the document says running.
    consumer.delete(reserved.id).await.expect("delete");

    let report = sweep(&g, 0.0).await.expect("sweep");
    assert_eq!((report.requeued, report.recovered), (0, 1));
    let swept = g.store.get(&doc.uuid).await.expect("get").expect("document");
    assert_eq!((swept.status, swept.attempts, swept.failures), (Status::Queued, 1, 1));
    assert_eq!(swept.errors[0].error_code, "worker-lost");
    assert_ne!(entry_of(&swept), id);
    assert!(g.queue.job_state(entry_of(&swept)).await.expect("state").is_some());
}

#[tokio::test]
async fn running_document_with_a_live_reservation_is_left_alone() {
    let (g, _dir) = embedded();
    let doc = g.store.create(&document(&job_type("alive"))).await.expect("create");
    let id = g.queue.put("contract", doc.uuid.as_bytes(), PutOptions::default()).await.expect("put");
    let mut consumer = g.queue.consumer(&["contract".to_owned()]).await.expect("consumer");
    consumer.reserve(Duration::from_secs(1)).await.expect("reserve").expect("a job");
    let mut running = doc.clone();
    running.queue_job_id = Some(id.to_string());
    running.start_attempt("w", "1:f").expect("start");
    let saved = g.store.update(&running).await.expect("save running");
    assert_eq!(sweep(&g, 0.0).await.expect("sweep"), Default::default());
    assert_eq!(g.store.get(&doc.uuid).await.expect("get").expect("document"), saved);
}
