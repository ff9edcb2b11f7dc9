//! Bulk enqueue (`Geyser::enqueue_many`) on real backends: the embedded SQLite file (one
//! transaction) and beanstalkd with a SQLite store (one store transaction, then the outbox
//! relay's pipelined puts). A batch comes off the queue once per job in the order given; a
//! refused job writes nothing; a queue server gone mid-batch leaves the jobs it did not take
//! saved, counted as pending, and put once it is back (docs/lifecycle.md "Bulk enqueue").

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geyser::client::{ClientError, Geyser, ENQUEUE_CHUNK};
use geyser::model::{JobDocument, Status};
use geyser::queue::beanstalkd::BeanstalkdQueue;
use geyser::queue::{QueueError, QueueJobId};
use geyser::store::sqlite::SqliteStore;
use geyser::store::{ListFilter, Page};
use support::beanstalkd::Beanstalkd;
use support::store_contract::{document, job_type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The tube of `support::store_contract::document`.
const TUBE: &str = "contract";

fn batch(n: usize) -> Vec<JobDocument> {
    let jt = job_type("bulk");
    (0..n).map(|_| JobDocument { version: 0, ..document(&jt) }).collect()
}

/// The embedded queue and store in one file, opened as an application opens them.
async fn embedded() -> (Geyser, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("geyser.db").display());
    (geyser::config::open(Some(&url), Some(&url)).await.expect("open"), dir)
}

/// beanstalkd at `addr` with a SQLite store.
async fn on_beanstalkd(addr: &str) -> (Geyser, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = BeanstalkdQueue::connect(&[addr.to_owned()]).await.expect("connect");
    let store = SqliteStore::open(&dir.path().join("store.db")).expect("store");
    (Geyser::with_outbox(Arc::new(queue), Arc::new(store)), dir)
}

fn uuids(docs: &[JobDocument]) -> Vec<String> {
    docs.iter().map(|d| d.uuid.clone()).collect()
}

fn entry_of(doc: &JobDocument) -> QueueJobId {
    doc.queue_job_id.as_deref().expect("a queue job id").parse().expect("shard:id")
}

/// Enqueues 1,000 jobs in one call; each comes off the queue once, in the order given,
/// as the entry its document names.
async fn thousand_come_back_in_order(g: &Geyser) {
    let docs = batch(1000);
    let sent = uuids(&docs);
    let results = g.enqueue_many(docs, 0.0).await.expect("enqueue_many");
    let saved: Vec<JobDocument> = results.into_iter().map(|r| r.expect("every job queued")).collect();
    assert_eq!(uuids(&saved), sent, "one result per job, in order");
    assert!(saved.iter().all(|d| d.status == Status::Queued && d.version >= 1));
    assert_eq!(g.flush(Duration::from_secs(30)).await, 0, "every entry put");
    let mut consumer = g.queue.consumer(&[TUBE.to_owned()]).await.expect("consumer");
    for doc in &saved {
        let job = consumer.reserve(Duration::from_secs(5)).await.expect("reserve").expect("a job");
        assert_eq!(String::from_utf8_lossy(&job.body), doc.uuid, "reserved in the order enqueued");
        let stored = g.store.get(&doc.uuid).await.expect("get").expect("document");
        assert_eq!(entry_of(&stored), job.id, "the document names its entry");
        consumer.delete(job.id).await.expect("delete");
    }
    assert!(consumer.reserve(Duration::from_millis(100)).await.expect("reserve").is_none(), "each job once");
}

/// Job 500 is refused: the error names it and its field, and nothing at all is written.
async fn a_bad_job_writes_nothing(g: &Geyser) {
    let mut docs = batch(1000);
    docs[500].queue_kwargs.ttr = 0.0;
    let err = g.enqueue_many(docs, 0.0).await.expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, ClientError::InBatch { index: 500, .. }), "{err:?}");
    assert!(text.contains("job 500 of the batch") && text.contains("queueKwargs.ttr"), "{text}");
    let listed = g.store.list(&ListFilter::default(), &Page::default()).await.expect("list");
    assert!(listed.is_empty(), "no document written: {} found", listed.len());
    match g.queue.stats_tube(TUBE).await {
        Ok(stats) => assert_eq!(stats.total_jobs, 0, "no entry put"),
        Err(QueueError::UnknownTube(_)) => {}
        Err(e) => panic!("stats: {e}"),
    }
}

#[tokio::test]
async fn embedded_batch_comes_back_in_order() {
    let (g, _dir) = embedded().await;
    thousand_come_back_in_order(&g).await;
}

#[tokio::test]
async fn embedded_batch_with_a_bad_job_writes_nothing() {
    let (g, _dir) = embedded().await;
    a_bad_job_writes_nothing(&g).await;
}

#[tokio::test]
async fn beanstalkd_batch_comes_back_in_order() {
    let server = Beanstalkd::start();
    let (g, _dir) = on_beanstalkd(&server.addr()).await;
    thousand_come_back_in_order(&g).await;
}

#[tokio::test]
async fn beanstalkd_batch_with_a_bad_job_writes_nothing() {
    let server = Beanstalkd::start();
    let (g, _dir) = on_beanstalkd(&server.addr()).await;
    a_bad_job_writes_nothing(&g).await;
}

#[tokio::test]
async fn a_batch_larger_than_a_chunk_is_queued_whole_in_order() {
    let (g, _dir) = embedded().await;
    let docs = batch(2 * ENQUEUE_CHUNK + 7);
    let sent = uuids(&docs);
    let results = g.enqueue_many(docs, 0.0).await.expect("enqueue_many");
    let saved: Vec<JobDocument> = results.into_iter().map(|r| r.expect("every job queued")).collect();
    assert_eq!(uuids(&saved), sent);
    let stats = g.queue.stats_tube(TUBE).await.expect("stats");
    assert_eq!(stats.ready, sent.len() as u64);
}

#[tokio::test]
async fn the_same_job_twice_in_a_batch_is_refused() {
    let (g, _dir) = embedded().await;
    let mut docs = batch(3);
    docs[2] = docs[0].clone();
    let err = g.enqueue_many(docs, 0.0).await.expect_err("refused").to_string();
    assert!(err.contains("job 2 of the batch") && err.contains("job 0 of the batch too"), "{err}");
}

/// A loopback forwarder in front of beanstalkd that, once it has passed `replies` `INSERTED`
/// replies back to the client, kills the server and drops every connection: the server
/// dies in the middle of a pipelined batch, after exactly that many puts were answered. It
/// forwards to the server again once the server is started again.
async fn dying_after(server: Arc<Mutex<Beanstalkd>>, replies: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy listens");
    let addr = listener.local_addr().expect("proxy addr").to_string();
    let target = server.lock().expect("server").addr();
    let inserted = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            // While the server is down, a connection is refused by closing it.
            let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else { continue };
            let (mut client_in, mut client_out) = client.into_split();
            let (mut server_in, mut server_out) = upstream.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut client_in, &mut server_out).await });
            let (server, inserted) = (server.clone(), inserted.clone());
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let Ok(n) = server_in.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                        let line: Vec<u8> = pending.drain(..end + 2).collect();
                        if client_out.write_all(&line).await.is_err() {
                            return;
                        }
                        if line.starts_with(b"INSERTED ") && inserted.fetch_add(1, Ordering::SeqCst) + 1 == replies {
                            server.lock().expect("server").kill();
                            return; // dropping both halves closes the client's connection
                        }
                    }
                }
            });
        }
    });
    addr
}

/// The server dies after answering 1,500 puts of a 3,000-job batch: every job is saved and
/// reported queued; the relay holds the 1,500 the server did not take (its rounds are 1,000
/// jobs), and puts them, once each, when a server answers at that address again.
#[tokio::test]
async fn beanstalkd_killed_mid_batch_leaves_the_rest_pending_until_it_is_back() {
    let server = Arc::new(Mutex::new(Beanstalkd::start()));
    let proxy = dying_after(server.clone(), 1500).await;
    let (g, _dir) = on_beanstalkd(&proxy).await;
    let docs = batch(3000);
    let sent = uuids(&docs);
    let results = g.enqueue_many(docs, 0.0).await.expect("the batch is saved");
    assert_eq!(results.len(), sent.len());
    for (uuid, result) in sent.iter().zip(&results) {
        let doc = result.as_ref().expect("every job is saved, so queued");
        assert_eq!((&doc.uuid, doc.status), (uuid, Status::Queued));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while g.flush(Duration::from_millis(200)).await != 1500 && std::time::Instant::now() < deadline {}
    assert_eq!(g.pending(), 1500, "the puts the server did not answer wait in the relay");
    let stored = g.store.list(&ListFilter::default(), &Page { limit: 5000, ..Page::default() }).await.expect("list");
    assert_eq!(stored.len(), 3000, "every document is kept");
    assert_eq!(stored.iter().filter(|d| d.queue_job_id.is_some()).count(), 1500, "ids noted for the puts answered");

    server.lock().expect("server").start_again();
    assert_eq!(g.flush(Duration::from_secs(60)).await, 0, "the rest is put once the server is back");
    let stats = g.queue.stats_tube(TUBE).await.expect("stats");
    assert_eq!(stats.ready, 1500, "the server restarted empty: the rest, once each");
}
