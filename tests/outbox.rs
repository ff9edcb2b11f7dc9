//! The outbox enqueue (`enqueue/outbox.rs`) on a real beanstalkd with a SQLite store: an
//! enqueue while the server is down is saved and put once it is back, a delayed job waits
//! only what is left of its delay, and the relay never overwrites a queue id a worker
//! already wrote. Starts and kills its own beanstalkd; touches only its temp dirs.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use geyser::client::Geyser;
use geyser::model::{JobDocument, Status};
use geyser::queue::beanstalkd::BeanstalkdQueue;
use geyser::queue::{JobState, QueueJobId};
use geyser::store::sqlite::SqliteStore;
use support::beanstalkd::Beanstalkd;
use support::store_contract::{document, job_type};

/// The tube of `support::store_contract::document`.
const TUBE: &str = "contract";

async fn on_beanstalkd(server: &Beanstalkd) -> (Geyser, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = BeanstalkdQueue::connect(&[server.addr()]).await.expect("connect");
    let store = SqliteStore::open(&dir.path().join("store.db")).expect("store");
    (Geyser::with_outbox(Arc::new(queue), Arc::new(store)), dir)
}

fn new_job(label: &str) -> JobDocument {
    JobDocument { version: 0, ..document(&job_type(label)) }
}

async fn stored(g: &Geyser, uuid: &str) -> JobDocument {
    g.store.get(uuid).await.expect("get").expect("the document is kept")
}

fn entry_of(doc: &JobDocument) -> QueueJobId {
    doc.queue_job_id.as_deref().expect("a queue job id").parse().expect("shard:id")
}

#[tokio::test]
async fn an_enqueue_while_beanstalkd_is_down_is_saved_and_put_when_it_is_back() {
    let mut server = Beanstalkd::start();
    let (g, _dir) = on_beanstalkd(&server).await;
    server.kill();
    let doc = g.enqueue(new_job("down"), 0.0).await.expect("the enqueue succeeds: the document is committed");
    assert_eq!((doc.status, doc.queue_job_id.as_deref()), (Status::Queued, None));
    assert_eq!(g.flush(Duration::from_millis(300)).await, 1, "the job waits in the relay");
    assert_eq!(g.pending(), 1);
    assert_eq!(stored(&g, &doc.uuid).await.status, Status::Queued);

    server.start_again();
    assert_eq!(g.flush(Duration::from_secs(30)).await, 0, "put once the server is back");
    let noted = stored(&g, &doc.uuid).await;
    let mut consumer = g.queue.consumer(&[TUBE.to_owned()]).await.expect("consumer");
    let job = consumer.reserve(Duration::from_secs(5)).await.expect("reserve").expect("the job's entry");
    assert_eq!((String::from_utf8_lossy(&job.body).into_owned(), job.id), (doc.uuid.clone(), entry_of(&noted)));
    consumer.delete(job.id).await.expect("delete");
    assert!(consumer.reserve(Duration::from_millis(100)).await.expect("reserve").is_none(), "put once");
}

/// The put asks for what is left of the delay: a job whose delay ran out while the server
/// was down is ready at once; one with an hour left is delayed.
#[tokio::test]
async fn a_delayed_job_waits_only_what_is_left_of_its_delay() {
    let mut server = Beanstalkd::start();
    let (g, _dir) = on_beanstalkd(&server).await;
    server.kill();
    let accepted = Instant::now();
    let short = g.enqueue(new_job("short"), 0.5).await.expect("enqueue");
    let long = g.enqueue(new_job("long"), 3600.0).await.expect("enqueue");
    tokio::time::sleep_until((accepted + Duration::from_millis(700)).into()).await; // the short delay is over
    server.start_again();
    assert_eq!(g.flush(Duration::from_secs(30)).await, 0);
    let state = |doc: JobDocument| {
        let g = g.clone();
        async move { g.queue.job_state(entry_of(&stored(&g, &doc.uuid).await)).await.expect("state") }
    };
    assert_eq!(state(short).await, Some(JobState::Ready));
    assert_eq!(state(long).await, Some(JobState::Delayed));
}

/// A worker that reserved the entry before the relay noted it wrote its own id in its start
/// (here: a write of the document as the start makes it); the relay's note then loses.
#[tokio::test]
async fn the_relay_never_overwrites_the_id_a_worker_wrote() {
    let mut server = Beanstalkd::start();
    let (g, _dir) = on_beanstalkd(&server).await;
    server.kill();
    let doc = g.enqueue(new_job("claimed"), 0.0).await.expect("enqueue");
    let claimed = g
        .store
        .update(&JobDocument { queue_job_id: Some("0:424242".into()), ..doc.clone() })
        .await
        .expect("the worker's write");
    server.start_again();
    assert_eq!(g.flush(Duration::from_secs(30)).await, 0);
    let now = stored(&g, &doc.uuid).await;
    assert_eq!((now.queue_job_id.as_deref(), now.version), (Some("0:424242"), claimed.version));
}

/// The relay's note is the one write between enqueue and a save of the document enqueue
/// returned: the save applies its progress on top of it instead of reporting a conflict,
/// and keeps the noted id. A write by anyone else in between is still a conflict.
#[tokio::test]
async fn a_save_right_after_enqueue_is_no_conflict_with_the_relays_note() {
    let server = Beanstalkd::start();
    let (g, _dir) = on_beanstalkd(&server).await;
    let doc = g.enqueue(new_job("saved"), 0.0).await.expect("enqueue");
    assert_eq!(g.flush(Duration::from_secs(30)).await, 0);
    let noted = stored(&g, &doc.uuid).await;
    assert_eq!(noted.version, doc.version + 1, "the relay noted the queue id");

    let saved = g.save(&JobDocument { completeness: 0.5, ..doc.clone() }).await.expect("no conflict");
    assert_eq!((saved.completeness, saved.queue_job_id.clone()), (0.5, noted.queue_job_id.clone()));
    assert_eq!(stored(&g, &doc.uuid).await, saved);

    let stale = g.save(&JobDocument { completeness: 0.7, ..doc.clone() }).await;
    assert!(
        matches!(stale, Err(geyser::client::ClientError::Store(geyser::store::StoreError::Conflict { .. }))),
        "a save at the version before someone else's write conflicts: {stale:?}"
    );
    assert_eq!(stored(&g, &doc.uuid).await.completeness, 0.5);
}

/// The relay notes a queue id `NOTE_DELAY` after the put, not with it: a worker reserving
/// the entry sooner starts the job on a document nobody else is writing. Polls until the
/// note lands; it may come later on a busy machine, never sooner.
/// A cancel in the producer's process moments after the enqueue (the document names no
/// entry yet): the entry is deleted whether the relay had put it or not, so the queue does
/// not count a cancelled job as ready.
#[tokio::test]
async fn a_cancel_right_after_enqueue_leaves_no_entry() {
    let server = Beanstalkd::start();
    let (g, _dir) = on_beanstalkd(&server).await;
    let kept = g.enqueue(new_job("kept"), 0.0).await.expect("enqueue");
    let before_put = g.enqueue(new_job("cancelled at once"), 0.0).await.expect("enqueue");
    assert_eq!(g.cancel(&before_put.uuid).await.expect("cancel").status, Status::Cancelled);
    let after_put = g.enqueue(new_job("cancelled after its put"), 0.0).await.expect("enqueue");
    let deadline = Instant::now() + Duration::from_secs(30);
    while g.pending() > 0 {
        assert!(Instant::now() < deadline, "the relay put nothing within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Put, and (well within NOTE_DELAY) not noted yet.
    assert_eq!(g.cancel(&after_put.uuid).await.expect("cancel").status, Status::Cancelled);
    assert_eq!(g.flush(Duration::from_secs(30)).await, 0);
    let stats = g.queue.stats_tube(TUBE).await.expect("stats");
    assert_eq!(stats.ready, 1, "{stats:?}");
    let mut consumer = g.queue.consumer(&[TUBE.to_owned()]).await.expect("consumer");
    let job = consumer.reserve(Duration::from_secs(5)).await.expect("reserve").expect("an entry");
    assert_eq!(job.body, kept.uuid.as_bytes());
}

#[tokio::test]
async fn the_relay_notes_the_queue_id_only_after_the_note_delay() {
    let server = Beanstalkd::start();
    let (g, _dir) = on_beanstalkd(&server).await;
    let enqueued = Instant::now();
    let doc = g.enqueue(new_job("later"), 0.0).await.expect("enqueue");
    let deadline = enqueued + Duration::from_secs(30);
    let noted = loop {
        let now = stored(&g, &doc.uuid).await;
        if now.queue_job_id.is_some() {
            break now;
        }
        assert!(Instant::now() < deadline, "the relay noted no queue id within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(enqueued.elapsed() >= geyser::enqueue::NOTE_DELAY, "noted {:?} after the enqueue", enqueued.elapsed());
    assert_eq!(noted.version, doc.version + 1, "one write: the note");
    let mut consumer = g.queue.consumer(&[TUBE.to_owned()]).await.expect("consumer");
    let job = consumer.reserve(Duration::from_secs(5)).await.expect("reserve").expect("the job's entry");
    assert_eq!(job.id, entry_of(&noted), "the note names the entry put");
}
