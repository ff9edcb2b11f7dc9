//! The maintenance service on real backends (the embedded SQLite queue and store, and real
//! beanstalkd servers): what a crash between two writes leaves behind is repaired, healthy
//! jobs are left alone, an unreadable document or a dead queue server only takes itself out
//! of the sweep, and one process at a time sweeps, under a lease that passes on when its
//! holder stops renewing it.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use geyser::client::Geyser;
use geyser::maintenance::{LeaseTerms, Run, Service, SweepReport, Task, LEASE_NAME};
use geyser::model::{now, JobDocument, Status};
use geyser::queue::beanstalkd::BeanstalkdQueue;
use geyser::queue::sqlite::SqliteQueue;
use geyser::queue::{JobState, PutOptions, QueueJobId};
use geyser::store::sqlite::SqliteStore;
use support::beanstalkd::Beanstalkd;
use support::store_contract::{document, job_type};

fn embedded_on(path: &Path) -> Geyser {
    let queue = SqliteQueue::open(path).expect("open queue");
    let store = SqliteStore::open(path).expect("open store");
    Geyser::with_outbox(Arc::new(queue), Arc::new(store))
}

fn embedded() -> (Geyser, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    (embedded_on(&dir.path().join("geyser.db")), dir)
}

fn entry_of(doc: &JobDocument) -> QueueJobId {
    doc.queue_job_id.as_deref().expect("a queue job id").parse().expect("shard:id")
}

/// One sweep without the lease.
async fn sweep(g: &Geyser, min_age: f64) -> SweepReport {
    Service::sweep(min_age).run(g, None).await.expect("sweep")
}

fn terms(holder: &str, ttl: f64) -> LeaseTerms {
    LeaseTerms { holder: holder.to_owned(), ttl, release_after: false }
}

/// Documents left `queued` with no queue entry (a crash between save and put), written at t=`at`.
async fn orphans(g: &Geyser, jt: &str, n: usize, at: f64) -> Vec<JobDocument> {
    let mut docs = Vec::new();
    for _ in 0..n {
        docs.push(g.store.create(&JobDocument { updated_at: at, ..document(jt) }).await.expect("create"));
    }
    docs
}

#[tokio::test]
async fn queued_document_without_entry_is_put_again_once() {
    let (g, _dir) = embedded();
    // A crash between saving the document and putting it.
    let doc = g.store.create(&document(&job_type("orphan"))).await.expect("create");
    let report = sweep(&g, 0.0).await;
    assert_eq!((report.requeued, report.recovered, report.errors), (1, 0, 0));
    let swept = g.store.get(&doc.uuid).await.expect("get").expect("document");
    assert_eq!(swept.status, Status::Queued);
    assert_eq!(g.queue.job_state(entry_of(&swept)).await.expect("state"), Some(JobState::Ready));
    assert_eq!(sweep(&g, 0.0).await.requeued, 0, "the new entry is found");
    assert_eq!(g.queue.stats_tube("contract").await.expect("stats").ready, 1);
}

/// A delayed job whose entry was never put (its producer died first) is put with what is
/// left of its delay, not run early.
#[tokio::test]
async fn a_delayed_document_without_entry_is_put_delayed() {
    let (g, _dir) = embedded();
    let doc = JobDocument { next_run_at: Some(now() + 3600.0), ..document(&job_type("later")) };
    let doc = g.store.create(&doc).await.expect("create");
    assert_eq!(sweep(&g, 0.0).await.requeued, 1);
    let swept = g.store.get(&doc.uuid).await.expect("get").expect("document");
    assert_eq!(g.queue.job_state(entry_of(&swept)).await.expect("state"), Some(JobState::Delayed));
}

#[tokio::test]
async fn young_documents_are_left_to_their_enqueue() {
    let (g, _dir) = embedded();
    let mut doc = document(&job_type("young"));
    doc.updated_at = now();
    g.store.create(&doc).await.expect("create");
    assert_eq!(sweep(&g, 60.0).await.requeued, 0);
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

    let report = sweep(&g, 0.0).await;
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
    assert_eq!(sweep(&g, 0.0).await, SweepReport { leader: true, ..SweepReport::default() });
    assert_eq!(g.store.get(&doc.uuid).await.expect("get").expect("document"), saved);
}

/// A `queued` (or `running`) document whose entry is buried, where no worker reserves it:
/// what a release left when it failed because the attempt's reservation had ended and the
/// entry was buried by then. The sweep kicks the entry, so the job runs; it is not put twice.
async fn a_buried_entry_under_a_live_document_is_kicked(g: &Geyser) {
    let jt = job_type("buried");
    let queued = g.store.create(&document(&jt)).await.expect("create");
    let running = g.store.create(&document(&jt)).await.expect("create");
    let finished = g.store.create(&document(&jt)).await.expect("create");
    let mut consumer = g.queue.consumer(&["contract".to_owned()]).await.expect("consumer");
    let mut entries = Vec::new();
    for doc in [&queued, &running, &finished] {
        let id = g.queue.put("contract", doc.uuid.as_bytes(), PutOptions::default()).await.expect("put");
        let reserved = consumer.reserve(Duration::from_secs(1)).await.expect("reserve").expect("a job");
        assert_eq!(reserved.id, id);
        consumer.bury(id, 1).await.expect("bury");
        entries.push(id);
    }
    let named = |doc: &JobDocument, id: QueueJobId| JobDocument { queue_job_id: Some(id.to_string()), ..doc.clone() };
    g.store.update(&named(&queued, entries[0])).await.expect("save queued");
    let mut started = named(&running, entries[1]);
    started.start_attempt("w", "1:f").expect("start");
    g.store.update(&started).await.expect("save running");
    // A failed job's buried entry is the operator's to kick: left alone.
    let mut failed = named(&finished, entries[2]);
    failed.start_attempt("w", "1:g").expect("start");
    failed.fail().expect("fail");
    g.store.update(&failed).await.expect("save failed");

    let report = sweep(g, 0.0).await;
    assert_eq!((report.requeued, report.recovered, report.errors), (2, 0, 0), "{report:?}");
    let mut states = Vec::new();
    for id in &entries {
        states.push(g.queue.job_state(*id).await.expect("state"));
    }
    assert_eq!(states, [Some(JobState::Ready), Some(JobState::Ready), Some(JobState::Buried)]);
    assert_eq!(g.queue.stats_tube("contract").await.expect("stats").ready, 2, "kicked, not put again");
    assert_eq!(sweep(g, 0.0).await.requeued, 0, "the kicked entries are found");
}

#[tokio::test]
async fn a_buried_entry_under_a_live_document_is_kicked_embedded() {
    let (g, _dir) = embedded();
    a_buried_entry_under_a_live_document_is_kicked(&g).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buried_entry_under_a_live_document_is_kicked_beanstalkd() {
    let server = Beanstalkd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = BeanstalkdQueue::connect(&[server.addr()]).await.expect("connect");
    let store = SqliteStore::open(&dir.path().join("store.db")).expect("open store");
    let g = Geyser::with_outbox(Arc::new(queue), Arc::new(store));
    a_buried_entry_under_a_live_document_is_kicked(&g).await;
}

/// A row whose JSON cannot be read, among good stale documents: the sweep puts the good ones
/// back, counts the bad one and names it, every time it runs.
#[tokio::test]
async fn an_unreadable_document_is_skipped_and_counted_and_the_rest_are_repaired() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("geyser.db");
    let g = embedded_on(&path);
    let jt = job_type("unreadable");
    let mut good = orphans(&g, &jt, 2, 10.0).await;
    good.extend(orphans(&g, &jt, 2, 30.0).await);
    let bad = uuid::Uuid::new_v4().to_string();
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    raw.execute(
        "INSERT INTO geyser_documents (uuid, version, status, job_type, updated_at, expires_at, doc)
         VALUES (?, 1, 'queued', ?, 20.0, NULL, '{\"jobType\": 5')",
        [&bad, &jt],
    )
    .expect("insert a corrupt row");

    let report = sweep(&g, 0.0).await;
    assert_eq!((report.requeued, report.unreadable, report.errors), (4, 1, 0), "{report:?}");
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(report.problems[0].contains(&bad), "the bad document is named: {report:?}");
    for doc in &good {
        let swept = g.store.get(&doc.uuid).await.expect("get").expect("document");
        assert_eq!(g.queue.job_state(entry_of(&swept)).await.expect("state"), Some(JobState::Ready));
    }
    let again = sweep(&g, 0.0).await;
    assert_eq!((again.requeued, again.unreadable), (0, 1), "{again:?}");
}

/// Two servers, one killed: the documents whose entries lived on the live server (gone
/// from it) are put again there; those of the dead server are left for when it is back,
/// and the sweep reports its failure once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_queue_server_takes_only_its_own_jobs_out_of_the_sweep() {
    let live = Beanstalkd::start();
    let mut dead = Beanstalkd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = BeanstalkdQueue::connect(&[live.addr(), dead.addr()]).await.expect("connect");
    let store = SqliteStore::open(&dir.path().join("store.db")).expect("open store");
    let g = Geyser::with_outbox(Arc::new(queue), Arc::new(store));
    let jt = job_type("shards");
    let with_entry =
        |entry: &str, at: f64| JobDocument { queue_job_id: Some(entry.to_owned()), updated_at: at, ..document(&jt) };
    // The dead server's documents come first in the sweep's order.
    let mut on_dead = Vec::new();
    for (i, entry) in ["1:1", "1:2", "1:3"].into_iter().enumerate() {
        on_dead.push(g.store.create(&with_entry(entry, 10.0 + i as f64)).await.expect("create"));
    }
    let mut on_live = Vec::new();
    for (i, entry) in ["0:900001", "0:900002"].into_iter().enumerate() {
        on_live.push(g.store.create(&with_entry(entry, 20.0 + i as f64)).await.expect("create"));
    }
    dead.kill();

    let report = sweep(&g, 0.0).await;
    assert_eq!((report.requeued, report.skipped, report.errors), (2, 3, 1), "{report:?}");
    assert!(report.problems[0].contains(&dead.addr()), "the dead server is named: {report:?}");
    for doc in &on_live {
        let swept = g.store.get(&doc.uuid).await.expect("get").expect("document");
        let entry = entry_of(&swept);
        assert_eq!(entry.shard, 0, "put on the live server");
        assert_eq!(g.queue.job_state(entry).await.expect("state"), Some(JobState::Ready));
    }
    for doc in &on_dead {
        assert_eq!(&g.store.get(&doc.uuid).await.expect("get").expect("document"), doc, "left alone");
    }
}

/// Two processes' sweeps at once, each with its own connections to one file: one leads and
/// repairs everything once; the other does nothing and names the leader, until the leader
/// gives the lease up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_sweepers_only_the_lease_holder_sweeps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("geyser.db");
    let (ga, gb) = (embedded_on(&path), embedded_on(&path));
    let jt = job_type("leader");
    orphans(&ga, &jt, 6, 10.0).await;
    let service = Service::sweep(0.0);
    let (a, b) = (terms("a", 60.0), terms("b", 60.0));
    let (ra, rb) = tokio::join!(service.run(&ga, Some(&a)), service.run(&gb, Some(&b)));
    let (ra, rb) = (ra.expect("sweep a"), rb.expect("sweep b"));
    assert!(ra.leader != rb.leader, "exactly one leads: {ra:?} {rb:?}");
    let (leader, follower, lead_terms, follow_terms, gl, gf) =
        if ra.leader { (ra, rb, &a, &b, &ga, &gb) } else { (rb, ra, &b, &a, &gb, &ga) };
    assert_eq!(leader.requeued, 6, "{leader:?}");
    assert_eq!((follower.requeued, follower.holder.as_deref()), (0, Some(lead_terms.holder.as_str())));
    assert_eq!(ga.queue.stats_tube("contract").await.expect("stats").ready, 6, "each job put once");

    orphans(&ga, &jt, 1, 10.0).await;
    let again = service.run(gf, Some(follow_terms)).await.expect("follower again");
    assert!(!again.leader && again.requeued == 0, "the lease still holds: {again:?}");
    let renewed = service.run(gl, Some(lead_terms)).await.expect("leader again");
    assert!(renewed.leader && renewed.requeued == 1, "the leader renews: {renewed:?}");

    assert!(gl.store.release_lease(LEASE_NAME, &lead_terms.holder).await.expect("release"));
    assert!(service.run(gf, Some(follow_terms)).await.expect("follower takes over").leader);
}

/// A leader that stops renewing (a dead process) keeps the lease until it runs out, not
/// longer: the other sweeper takes over then, and the old leader finds itself a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leaders_lease_runs_out_and_another_takes_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("geyser.db");
    let (ga, gb) = (embedded_on(&path), embedded_on(&path));
    let service = Service::sweep(0.0);
    let ttl = 1.0;
    let (a, b) = (terms("a", ttl), terms("b", ttl));
    let before_a = now();
    assert!(service.run(&ga, Some(&a)).await.expect("a sweeps").leader);
    let deadline = Instant::now() + Duration::from_secs(10);
    let took_over_at = loop {
        let report = service.run(&gb, Some(&b)).await.expect("b tries");
        if report.leader {
            break now();
        }
        assert_eq!(report.holder.as_deref(), Some("a"));
        assert!(Instant::now() < deadline, "b never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(took_over_at >= before_a + ttl, "taken over before a's lease ran out");
    let a_again = service.run(&ga, Some(&a)).await.expect("a comes back");
    assert_eq!((a_again.leader, a_again.holder.as_deref()), (false, Some("b")));
}

/// A task that waits until the run may not continue (or 10 s pass), after another process
/// has taken the lease behind its back.
struct OutlivesItsLease {
    thief: Geyser,
}

#[async_trait]
impl Task for OutlivesItsLease {
    fn name(&self) -> &'static str {
        "outlive the lease"
    }

    async fn run(&self, run: &mut Run<'_>) {
        let far_future = now() + 1e6;
        let stolen = self.thief.store.try_acquire_lease(LEASE_NAME, "thief", 60.0, far_future).await.expect("steal");
        assert!(stolen.is_held_by("thief"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while run.may_continue().await {
            assert!(Instant::now() < deadline, "the run never noticed it lost the lease");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The leader renews its lease during a run; when the renewal finds someone else holding
/// it, the run stops and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_loses_its_lease_stops_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("geyser.db");
    let (g, thief) = (embedded_on(&path), embedded_on(&path));
    let service = Service::new(vec![Box::new(OutlivesItsLease { thief })]);
    let report = service.run(&g, Some(&terms("a", 0.3))).await.expect("run");
    assert!(report.leader && report.lease_lost, "{report:?}");
    assert_eq!(report.holder.as_deref(), Some("thief"));
    assert!(report.problems.iter().any(|p| p.contains("lost the maintenance lease to thief")), "{report:?}");
}
