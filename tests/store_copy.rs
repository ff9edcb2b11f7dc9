//! Copying every document between stores (`geyser::store::copy`): between two SQLite files,
//! and from SQLite to PostgreSQL to Redis and back, against the real servers (127.0.0.1:5432,
//! database `test`, a schema per test; 127.0.0.1:6379, a key prefix per test). Checks that
//! documents arrive exactly, that a second run copies nothing, that a stopped copy resumes
//! after the uuid it printed, conflicts, and unreadable source documents. Touches only its own
//! temp files, schemas and keys.

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg;
#[cfg(feature = "redis")]
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::path::Path;
use std::sync::Arc;

use geyser::model::{JobDocument, Status};
use geyser::store::copy::{copy_documents, CopyError, CopyEvent, CopyOptions, ProblemKind, Progress};
use geyser::store::sqlite::SqliteStore;
use geyser::store::{ListFilter, Page, Store};
use support::store_contract::{document, job_type};

/// What a copy reported: one progress per page, and the documents it did not copy.
#[derive(Default)]
struct Reported {
    pages: Vec<Progress>,
    problems: Vec<(String, ProblemKind, String)>,
}

/// Runs a copy, recording what it reports; `stop_after_pages` makes the callback stop it.
async fn copy(
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    options: &CopyOptions,
    stop_after_pages: Option<usize>,
) -> (Result<Progress, CopyError>, Reported) {
    let mut reported = Reported::default();
    let mut report = |event: CopyEvent<'_>| match event {
        CopyEvent::Page(progress) => {
            reported.pages.push(progress.clone());
            stop_after_pages.is_none_or(|n| reported.pages.len() < n)
        }
        CopyEvent::Problem { uuid, kind, reason } => {
            reported.problems.push((uuid.to_owned(), kind, reason.to_owned()));
            true
        }
    };
    let result = copy_documents(Arc::clone(from), Arc::clone(to), options, &mut report).await;
    (result, reported)
}

/// Every document of a store, in uuid order.
async fn all_documents(store: &dyn Store) -> Vec<JobDocument> {
    let mut docs = Vec::new();
    let mut page = Page { limit: 100, ..Page::default() };
    loop {
        let batch = store.list(&ListFilter::default(), &page).await.expect("list");
        let Some(last) = batch.last() else { return docs };
        page.after = Some(last.uuid.clone());
        docs.extend(batch);
    }
}

/// Asserts the two stores hold the same documents, field for field as JSON (every float to
/// the bit). Keys are compared as sets: a build with the `couchbase` feature keeps the order
/// of a job's own fields as read (serde_json's `preserve_order`), and PostgreSQL's jsonb has
/// an order of its own.
async fn assert_same_documents(a: &dyn Store, b: &dyn Store) {
    let (a, b) = (all_documents(a).await, all_documents(b).await);
    assert_eq!(a.len(), b.len(), "as many documents");
    let json = |doc: &JobDocument| serde_json::from_slice::<serde_json::Value>(&doc.to_json()).expect("JSON");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(json(x), json(y));
    }
}

/// `n` documents in `store`: various statuses and versions, timestamps that need every bit.
async fn fill(store: &dyn Store, n: usize) -> Vec<JobDocument> {
    let kind = job_type("copy");
    let mut docs = Vec::new();
    for i in 0..n {
        let seed = i as f64;
        let mut doc = JobDocument {
            created_at: 1_796_002_004.226_930_1 + seed / 3.0,
            updated_at: 0.1 + 0.2 + seed,
            expires_at: (i % 4 == 0).then_some(4e12 + seed / 7.0),
            ..document(&kind)
        };
        doc.fields.insert("note".into(), format!("dokument {i} – ünïcode").into());
        let mut doc = store.create(&doc).await.expect("create");
        for step in 0..i % 3 {
            match doc.status {
                Status::Queued => doc.start_attempt("w", "f").expect("start"),
                _ => doc.succeed().expect("succeed"),
            }
            doc.updated_at += 0.000_1 * (step as f64 + 1.0);
            doc = store.update(&doc).await.expect("update");
        }
        docs.push(doc);
    }
    docs.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    docs
}

async fn sqlite(dir: &Path, name: &str) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(&dir.join(name)).expect("open store"))
}

fn pages_of(size: usize) -> CopyOptions {
    CopyOptions { page_size: size, ..CopyOptions::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_sqlite_copies_exactly_then_skips_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (from, to) = (sqlite(dir.path(), "from.db").await, sqlite(dir.path(), "to.db").await);
    let docs = fill(from.as_ref(), 120).await;
    assert!(docs.iter().any(|d| d.version == 3), "some documents were written several times");

    let (done, reported) = copy(&from, &to, &pages_of(50), None).await;
    let done = done.expect("copy");
    assert_eq!((done.read, done.copied, done.skipped, done.problems()), (120, 120, 0, 0));
    assert_eq!(done.last_uuid.as_deref(), docs.last().map(|d| d.uuid.as_str()));
    let read_per_page: Vec<u64> = reported.pages.iter().map(|p| p.read).collect();
    assert_eq!(read_per_page, vec![50, 100, 120], "progress after every page");
    assert_eq!(
        reported.pages[0].last_uuid.as_deref(),
        Some(docs[49].uuid.as_str()),
        "each page names its resume point"
    );
    assert_same_documents(from.as_ref(), to.as_ref()).await;
    assert_eq!(all_documents(to.as_ref()).await, docs);

    let (again, _) = copy(&from, &to, &pages_of(50), None).await;
    let again = again.expect("copy again");
    assert_eq!((again.read, again.copied, again.skipped, again.problems()), (120, 0, 120, 0), "idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_copy_resumes_after_the_uuid_it_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (from, to) = (sqlite(dir.path(), "from.db").await, sqlite(dir.path(), "to.db").await);
    let docs = fill(from.as_ref(), 45).await;

    let (stopped, _) = copy(&from, &to, &pages_of(20), Some(1)).await;
    let Err(CopyError::Stopped { progress }) = stopped else { panic!("the callback stops it: {stopped:?}") };
    assert_eq!((progress.read, progress.copied), (20, 20));
    assert_eq!(progress.last_uuid.as_deref(), Some(docs[19].uuid.as_str()));
    assert_eq!(all_documents(to.as_ref()).await.len(), 20, "nothing after the first page");

    let resume = CopyOptions { after: progress.last_uuid.clone(), ..pages_of(20) };
    let (rest, _) = copy(&from, &to, &resume, None).await;
    let rest = rest.expect("resumed copy");
    assert_eq!((rest.read, rest.copied, rest.skipped), (25, 25, 0), "only what comes after the resume point");
    assert_same_documents(from.as_ref(), to.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_reported_and_kept_unless_overwritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (from, to) = (sqlite(dir.path(), "from.db").await, sqlite(dir.path(), "to.db").await);
    let docs = fill(from.as_ref(), 6).await;
    let (first, _) = copy(&from, &to, &pages_of(4), None).await;
    first.expect("first copy");

    // The target moved on for docs[0] (a worker wrote it there); the source moved on for docs[1].
    let mut moved_on = docs[0].clone();
    moved_on.fields.insert("note".into(), "written in the target".into());
    let moved_on = to.update(&moved_on).await.expect("write in the target");
    let mut newer = docs[1].clone();
    newer.fields.insert("note".into(), "written in the source since".into());
    let newer = from.update(&newer).await.expect("write in the source");

    let (second, reported) = copy(&from, &to, &pages_of(4), None).await;
    let second = second.expect("second copy");
    assert_eq!((second.read, second.copied, second.skipped, second.conflicting), (6, 1, 4, 1));
    assert_eq!(reported.problems.len(), 1);
    let (uuid, kind, reason) = &reported.problems[0];
    assert_eq!((uuid, *kind), (&docs[0].uuid, ProblemKind::Conflict));
    assert!(reason.contains("version") && reason.contains("--overwrite"), "{reason}");
    assert_eq!(to.get(&docs[0].uuid).await.expect("get"), Some(moved_on), "the target's newer write is kept");
    assert_eq!(to.get(&docs[1].uuid).await.expect("get"), Some(newer), "an older copy is brought up to date");

    let overwrite = CopyOptions { overwrite: true, ..pages_of(4) };
    let (third, _) = copy(&from, &to, &overwrite, None).await;
    let third = third.expect("copy with overwrite");
    assert_eq!((third.copied, third.skipped, third.conflicting), (1, 5, 0));
    assert_same_documents(from.as_ref(), to.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_source_documents_are_named_and_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (from, to) = (sqlite(dir.path(), "from.db").await, sqlite(dir.path(), "to.db").await);
    let docs = fill(from.as_ref(), 30).await;
    let bad = [&docs[3].uuid, &docs[17].uuid];
    let raw = rusqlite::Connection::open(dir.path().join("from.db")).expect("raw connection");
    for uuid in bad {
        let n = raw.execute("UPDATE geyser_documents SET doc = '{\"jobType\": 5' WHERE uuid = ?", [uuid]).expect("raw");
        assert_eq!(n, 1);
    }

    let (done, reported) = copy(&from, &to, &pages_of(10), None).await;
    let done = done.expect("a copy over unreadable documents runs to the end");
    assert_eq!((done.read, done.copied, done.unreadable), (30, 28, 2));
    let named: Vec<_> = reported.problems.iter().map(|(u, k, _)| (u, *k)).collect();
    assert_eq!(named, vec![(bad[0], ProblemKind::Unreadable), (bad[1], ProblemKind::Unreadable)]);
    assert!(reported.problems[0].2.contains("unreadable"), "{}", reported.problems[0].2);
    let copied: Vec<_> = all_documents(to.as_ref()).await;
    let expected: Vec<_> = docs.iter().filter(|d| !bad.contains(&&d.uuid)).cloned().collect();
    assert_eq!(copied, expected);
    assert_eq!(done.last_uuid.as_deref(), docs.last().map(|d| d.uuid.as_str()));
}

/// SQLite to PostgreSQL to Redis and back to a new SQLite file: every hop exact, every second
/// run a no-op.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_to_redis_and_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = pg::TestSchema::new().await;
    let (redis_store, _keys) = redis_support::shared_store().await;
    let sqlite_from = sqlite(dir.path(), "from.db").await;
    let postgres: Arc<dyn Store> =
        Arc::new(geyser::store::postgres::PostgresStore::open(&schema.url()).await.expect("open PostgreSQL"));
    let redis: Arc<dyn Store> = Arc::new(redis_store);
    let sqlite_back = sqlite(dir.path(), "back.db").await;
    let docs = fill(sqlite_from.as_ref(), 70).await;

    for (from, to) in [(&sqlite_from, &postgres), (&postgres, &redis), (&redis, &sqlite_back)] {
        let (done, _) = copy(from, to, &pages_of(25), None).await;
        let done = done.expect("copy");
        assert_eq!((done.read, done.copied, done.problems()), (70, 70, 0));
        assert_same_documents(from.as_ref(), to.as_ref()).await;
        let (again, _) = copy(from, to, &pages_of(25), None).await;
        let again = again.expect("copy again");
        assert_eq!((again.copied, again.skipped), (0, 70), "idempotent");
    }
    assert_eq!(all_documents(sqlite_back.as_ref()).await, docs, "the round trip changed nothing");
}

/// Problems on network stores: a document PostgreSQL cannot hold (U+0000 in a string) is refused
/// and named, the copy goes on; then, copying PostgreSQL to Redis, a row that does not parse is
/// named and skipped, and a document Redis holds differently at a higher version is a conflict.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_stores_report_refused_unreadable_and_conflicting_documents() {
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = pg::TestSchema::new().await;
    let (redis_store, _keys) = redis_support::shared_store().await;
    let sqlite_from = sqlite(dir.path(), "from.db").await;
    let postgres: Arc<dyn Store> =
        Arc::new(geyser::store::postgres::PostgresStore::open(&schema.url()).await.expect("open PostgreSQL"));
    let redis: Arc<dyn Store> = Arc::new(redis_store);
    let docs = fill(sqlite_from.as_ref(), 12).await;
    let mut nul = docs[5].clone();
    nul.fields.insert("note".into(), "a \u{0} inside".into());
    sqlite_from.update(&nul).await.expect("SQLite keeps U+0000");

    let (done, reported) = copy(&sqlite_from, &postgres, &pages_of(5), None).await;
    let done = done.expect("the copy goes on past a refused document");
    assert_eq!((done.read, done.copied, done.refused), (12, 11, 1));
    let (uuid, kind, reason) = &reported.problems[0];
    assert_eq!((uuid, *kind), (&docs[5].uuid, ProblemKind::Refused));
    assert!(reason.contains("U+0000"), "{reason}");

    let sql = format!("UPDATE {} SET doc = '{{\"jobType\": 5}}' WHERE uuid = $1", schema.table("geyser_documents"));
    assert_eq!(pg::connect().await.execute(&sql, &[&docs[2].uuid]).await.expect("raw write"), 1);
    let ahead = JobDocument { version: 40, ..docs[8].clone() };
    redis.import(&ahead, None).await.expect("a newer document already in Redis");
    let (done, reported) = copy(&postgres, &redis, &pages_of(5), None).await;
    let done = done.expect("copy");
    assert_eq!((done.read, done.copied, done.unreadable, done.conflicting), (11, 9, 1, 1));
    let named: Vec<_> = reported.problems.iter().map(|(u, k, _)| (u.clone(), *k)).collect();
    assert!(named.contains(&(docs[2].uuid.clone(), ProblemKind::Unreadable)), "{named:?}");
    assert!(named.contains(&(docs[8].uuid.clone(), ProblemKind::Conflict)), "{named:?}");
    assert_eq!(redis.get(&docs[8].uuid).await.expect("get"), Some(ahead), "left alone");
}

/// A target that goes away part-way stops the copy with an error naming the store and the
/// resume point of the last page done; carrying on from there once it is back finishes the job.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_going_away_stops_the_copy_at_a_resume_point() {
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = pg::TestSchema::new().await;
    let mut proxy = pg::Proxy::start().await;
    let from = sqlite(dir.path(), "from.db").await;
    let to: Arc<dyn Store> =
        Arc::new(geyser::store::postgres::PostgresStore::open(&proxy.url(&schema)).await.expect("open PostgreSQL"));
    let docs = fill(from.as_ref(), 30).await;

    let (stopped, _) = copy(&from, &to, &pages_of(10), Some(1)).await;
    let Err(CopyError::Stopped { progress }) = stopped else { panic!("stopped by the callback: {stopped:?}") };
    proxy.cut().await;
    let resume = CopyOptions { after: progress.last_uuid.clone(), ..pages_of(10) };
    let (failed, _) = copy(&from, &to, &resume, None).await;
    let Err(err @ CopyError::Target { .. }) = failed else { panic!("the target is gone: {failed:?}") };
    assert_eq!(err.progress().last_uuid.as_deref(), Some(docs[9].uuid.as_str()), "no further than the page done");
    let message = err.to_string();
    assert!(message.contains("store unavailable") && message.contains("postgresql store"), "{message}");

    proxy.restore().await;
    let (done, _) =
        copy(&from, &to, &CopyOptions { after: err.progress().last_uuid.clone(), ..pages_of(10) }, None).await;
    let done = done.expect("the copy carries on once the server is back");
    assert_eq!((done.read, done.copied + done.skipped), (20, 20));
    assert_same_documents(from.as_ref(), to.as_ref()).await;
}
