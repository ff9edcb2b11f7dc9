//! The store contract: compare-and-swap document storage as tests that every `Store` backend runs.
//! A backend's test file (after `mod support;`) plugs in with one line, `store_contract_tests!(make_store());`, where
//! `make_store()` is a future giving `(store, guard)`; the guard (temp dir, database) lives as
//! long as the test. Every test uses its own job type and uuids so tests can share a database.
//! Unreadable documents need raw writes, so each backend tests `Corrupt` in its own file.

use geyser::model::{JobDocument, Status};
use std::sync::Arc;

use geyser::store::{ListFilter, Page, StaleKey, Store, StoreError, WorkerRecord};

/// Generates one `#[tokio::test]` per contract test in a `store_contract` module.
/// `store_contract_tests!(ignore = "why", make_store())` generates the same tests marked
/// `#[ignore = "why"]`, for a backend whose server is not always there: they are compiled and
/// listed as ignored, and run with `cargo nextest run --run-ignored all`.
#[macro_export]
macro_rules! store_contract_tests {
    (@module $attrs:tt $make:expr) => {
        mod store_contract {
            #[allow(unused_imports)]
            use super::*;
            $crate::store_contract_tests!(@each $attrs $make;
                create_then_get, create_twice_is_already_exists, update_bumps_version,
                stale_update_conflicts, update_of_missing_is_not_found, fixed_fields_are_kept, delete, list_filters,
                list_pages_by_uuid, purge_expired, read_then_write, list_stale_pages_oldest_first,
                lease_has_one_holder_until_it_runs_out, lease_given_up_is_free_at_once,
                import_keeps_the_document_as_given, delete_at_version_refuses_a_newer_document,
                concurrent_updates_let_exactly_one_writer_win, list_pages_newest_first, list_by_queue,
                workers_register_refresh_expire_and_leave, batch_writes_report_each_document,
                json_text_is_the_documents_own);
        }
    };
    (@each $attrs:tt $make:expr; $($name:ident),* $(,)?) => {
        $( $crate::store_contract_tests!(@one $attrs $make; $name); )*
    };
    (@one [$(#[$attr:meta])*] $make:expr; $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $name() {
            let (store, _guard) = $make.await;
            $crate::support::store_contract::$name(&store).await;
        }
    };
    (ignore = $reason:literal, $make:expr) => {
        $crate::store_contract_tests!(@module [#[ignore = $reason]] $make);
    };
    ($make:expr) => {
        $crate::store_contract_tests!(@module [] $make);
    };
}

/// A job type no other test uses.
pub fn job_type(label: &str) -> String {
    format!("{label}_{}", uuid::Uuid::new_v4().simple())
}

/// A fresh queued document of `job_type`, with one schema field of its own.
pub fn document(job_type: &str) -> JobDocument {
    let raw = serde_json::json!({
        "jobType": job_type, "createdAt": 1.0, "updatedAt": 1.0,
        "uuid": uuid::Uuid::new_v4().to_string(),
        "queueKwargs": {"queue": "contract", "priority": 10, "ttr": 30.0},
        "status": "queued", "maxRetries": 3, "fieldOne": "hello"
    });
    serde_json::from_value(raw).expect("a valid document")
}

async fn create(s: &dyn Store, doc: &JobDocument) -> JobDocument {
    s.create(doc).await.expect("create")
}

pub async fn create_then_get(s: &dyn Store) {
    let doc = document(&job_type("get"));
    let created = create(s, &doc).await;
    assert_eq!(created.version, 1);
    assert_eq!(JobDocument { version: doc.version, ..created.clone() }, doc, "create changes only the version");
    let got = s.get(&doc.uuid).await.expect("get").expect("the created document");
    assert_eq!(got, created);
    assert_eq!(got.fields.get("fieldOne"), Some(&serde_json::Value::from("hello")));
    assert!(s.get("no-such-uuid").await.expect("get").is_none());
}

pub async fn create_twice_is_already_exists(s: &dyn Store) {
    let doc = document(&job_type("twice"));
    create(s, &doc).await;
    let err = s.create(&doc).await.expect_err("a second create");
    assert!(matches!(&err, StoreError::AlreadyExists(u) if *u == doc.uuid), "{err:?}");
}

/// `create_many` and `update_many` (bulk enqueue): one result per document, in order; a
/// taken uuid, a stale version or a missing document fails alone and the others are written.
pub async fn batch_writes_report_each_document(s: &dyn Store) {
    let jt = job_type("batch");
    let taken = create(s, &document(&jt)).await;
    let (b, c) = (document(&jt), document(&jt));
    let created = s.create_many(&[b.clone(), taken.clone(), c.clone()]).await.expect("create_many");
    assert!(matches!(&created[1], Err(StoreError::AlreadyExists(u)) if *u == taken.uuid), "{created:?}");
    let (b, c) = (created[0].as_ref().expect("b created").clone(), created[2].as_ref().expect("c created").clone());
    assert_eq!((b.version, c.version), (1, 1));
    assert_eq!(s.get(&c.uuid).await.expect("get").expect("c stored"), c);
    assert!(s.create_many(&[]).await.expect("an empty batch").is_empty());

    let missing = JobDocument { version: 1, ..document(&jt) };
    let changed = JobDocument { completeness: 0.5, ..b.clone() };
    let stale = JobDocument { version: 7, ..c.clone() };
    let updated = s.update_many(&[changed, stale, missing.clone()]).await.expect("update_many");
    assert_eq!(updated[0].as_ref().map(|d| (d.version, d.completeness)).ok(), Some((2, 0.5)), "{updated:?}");
    assert!(matches!(&updated[1], Err(StoreError::Conflict { expected: 7, .. })), "{updated:?}");
    assert!(matches!(&updated[2], Err(StoreError::NotFound(u)) if *u == missing.uuid), "{updated:?}");
    let got = s.get(&b.uuid).await.expect("get").expect("b stored");
    assert_eq!((got.version, got.completeness), (2, 0.5));
    assert_eq!(s.get(&c.uuid).await.expect("get").expect("c stored").version, 1, "the stale write changed nothing");
    assert!(s.get(&missing.uuid).await.expect("get").is_none());
}

pub async fn update_bumps_version(s: &dyn Store) {
    let mut doc = create(s, &document(&job_type("update"))).await;
    doc.start_attempt("worker-1", "fence-1").expect("start");
    let updated = s.update(&doc).await.expect("update");
    assert_eq!(updated.version, 2);
    let got = s.get(&doc.uuid).await.expect("get").expect("the document");
    assert_eq!(got, updated, "the stored document carries the new version");
    assert_eq!((got.status, got.attempts), (Status::Running, 1));
}

/// `get_with_json` and `update_with_json` (what the Python client hands on) give the text
/// `JobDocument::to_json` writes for the document they return, whether the store writes it
/// out again or returns its own.
pub async fn json_text_is_the_documents_own(s: &dyn Store) {
    let mut doc = document(&job_type("json"));
    doc.updated_at = 1_796_002_004.226_930_1;
    doc.fields.insert("nested".into(), serde_json::json!({"a": [1, 2.5, "x\"y\u{e9}"], "b": null}));
    let created = create(s, &doc).await;
    let (got, json) = s.get_with_json(&doc.uuid).await.expect("get").expect("the created document");
    assert_eq!(got, created);
    assert_eq!(String::from_utf8_lossy(&json), String::from_utf8_lossy(&got.to_json()));
    assert!(s.get_with_json("no-such-uuid").await.expect("get").is_none());

    let changed = JobDocument { completeness: 0.25, ..got.clone() };
    let (written, json) = s.update_with_json(&changed).await.expect("update");
    assert_eq!((written.version, written.completeness), (2, 0.25));
    assert_eq!(String::from_utf8_lossy(&json), String::from_utf8_lossy(&written.to_json()));
    assert_eq!(s.get(&doc.uuid).await.expect("get"), Some(written));
    let err = s.update_with_json(&changed).await.expect_err("a stale write");
    assert!(matches!(&err, StoreError::Conflict { expected: 1, .. }), "{err:?}");
    let missing = JobDocument { version: 1, ..document(&job_type("json")) };
    let err = s.update_with_json(&missing).await.expect_err("a missing document");
    assert!(matches!(&err, StoreError::NotFound(u) if *u == missing.uuid), "{err:?}");
}

pub async fn stale_update_conflicts(s: &dyn Store) {
    let first = create(s, &document(&job_type("cas"))).await;
    let mut winner = first.clone();
    winner.completeness = 0.5;
    s.update(&winner).await.expect("first writer");
    let mut loser = first;
    loser.completeness = 0.9;
    let err = s.update(&loser).await.expect_err("a stale write");
    assert!(matches!(&err, StoreError::Conflict { uuid, expected: 1 } if *uuid == loser.uuid), "{err:?}");
    let got = s.get(&loser.uuid).await.expect("get").expect("the document");
    assert_eq!((got.version, got.completeness), (2, 0.5), "the stale write changed nothing");
}

pub async fn update_of_missing_is_not_found(s: &dyn Store) {
    let doc = JobDocument { version: 1, ..document(&job_type("missing")) };
    let err = s.update(&doc).await.expect_err("update of a missing document");
    assert!(matches!(&err, StoreError::NotFound(u) if *u == doc.uuid), "{err:?}");
}

/// `jobType` and `expiresAt` are fixed at creation: by `update` and by `read_then_write`,
/// a write changing one is refused, names the field, and changes nothing; lists still
/// find the document by its type.
pub async fn fixed_fields_are_kept(s: &dyn Store) {
    let kind = job_type("fixed");
    let doc = create(s, &JobDocument { expires_at: Some(1e12), ..document(&kind) }).await;
    let other_kind = JobDocument { job_type: job_type("other"), ..doc.clone() };
    let err = s.update(&other_kind).await.expect_err("a change of jobType");
    assert!(matches!(&err, StoreError::FixedField { field: "jobType", .. }), "{err:?}");
    let later = JobDocument { expires_at: Some(2e12), ..doc.clone() };
    let err = s.update(&later).await.expect_err("a change of expiresAt");
    assert!(matches!(&err, StoreError::FixedField { field: "expiresAt", .. }), "{err:?}");
    assert!(err.to_string().contains("expiresAt is fixed"), "{err}");
    let never = JobDocument { expires_at: None, ..doc.clone() };
    let err = s
        .read_then_write(&doc.uuid, Arc::new(move |_| Some(never.clone())))
        .await
        .expect_err("a change of expiresAt in read_then_write");
    assert!(matches!(&err, StoreError::FixedField { field: "expiresAt", .. }), "{err:?}");
    assert_eq!(s.get(&doc.uuid).await.expect("get").expect("the document"), doc, "nothing changed");
    let filter = ListFilter { job_type: Some(kind), ..Default::default() };
    let listed = s.list(&filter, &Page { limit: 10, ..Page::default() }).await.expect("list");
    assert_eq!(listed, vec![doc]);
}

pub async fn delete(s: &dyn Store) {
    let doc = create(s, &document(&job_type("delete"))).await;
    assert!(s.delete(&doc.uuid).await.expect("delete"));
    assert!(s.get(&doc.uuid).await.expect("get").is_none());
    assert!(!s.delete(&doc.uuid).await.expect("delete again"), "nothing left to delete");
}

pub async fn list_filters(s: &dyn Store) {
    let jt = job_type("filters");
    let queued = create(s, &document(&jt)).await;
    let mut running = create(s, &document(&jt)).await;
    running.start_attempt("w", "f").expect("start");
    running.updated_at = 100.0;
    let running = s.update(&running).await.expect("update");
    create(s, &document(&job_type("other"))).await;

    let list = |filter: ListFilter| async move {
        let docs = s.list(&filter, &Page::default()).await.expect("list");
        docs.into_iter().map(|d| d.uuid).collect::<Vec<_>>()
    };
    let by_type = ListFilter { job_type: Some(jt.clone()), ..ListFilter::default() };
    let mut both = vec![queued.uuid.clone(), running.uuid.clone()];
    both.sort();
    assert_eq!(list(by_type.clone()).await, both);
    let running_only = ListFilter { status: Some(Status::Running), ..by_type.clone() };
    assert_eq!(list(running_only).await, vec![running.uuid.clone()]);
    let old_only = ListFilter { updated_before: Some(50.0), ..by_type };
    assert_eq!(list(old_only).await, vec![queued.uuid.clone()], "only the document written at t=1");
}

pub async fn list_pages_by_uuid(s: &dyn Store) {
    let jt = job_type("paging");
    let mut uuids = Vec::new();
    for _ in 0..7 {
        uuids.push(create(s, &document(&jt)).await.uuid);
    }
    uuids.sort();
    let filter = ListFilter { job_type: Some(jt), ..ListFilter::default() };
    let (seen, sizes) = every_page(s, &filter, Page { limit: 3, ..Page::default() }).await;
    assert_eq!(seen, uuids, "every document once, in uuid order");
    assert_eq!(sizes, vec![3, 3, 1, 0]);
}

/// Pages through `filter` from `page` until an empty page: the uuids seen, and each page's size.
async fn every_page(s: &dyn Store, filter: &ListFilter, mut page: Page) -> (Vec<String>, Vec<usize>) {
    let (mut seen, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let docs = s.list(filter, &page).await.expect("list page");
        sizes.push(docs.len());
        let Some(last) = docs.last() else { break };
        page.after = Some(last.uuid.clone());
        seen.extend(docs.into_iter().map(|d| d.uuid));
    }
    (seen, sizes)
}

/// Descending keyset paging: every document once, highest uuid first, each page below the last.
pub async fn list_pages_newest_first(s: &dyn Store) {
    let jt = job_type("newest");
    let mut uuids = Vec::new();
    for _ in 0..7 {
        uuids.push(create(s, &document(&jt)).await.uuid);
    }
    uuids.sort();
    uuids.reverse();
    let filter = ListFilter { job_type: Some(jt), ..ListFilter::default() };
    let mut page = Page { limit: 3, newest_first: true, ..Page::default() };
    let (seen, sizes) = every_page(s, &filter, page.clone()).await;
    assert_eq!(seen, uuids, "every document once, in descending uuid order");
    assert_eq!(sizes, vec![3, 3, 1, 0]);
    // A page may start below any uuid, listed or not.
    page.after = Some(uuids[2].clone());
    let below = s.list(&filter, &page).await.expect("list below");
    assert_eq!(below.iter().map(|d| d.uuid.clone()).collect::<Vec<_>>(), uuids[3..6].to_vec());
}

/// The queue filter keeps the documents put on that queue, with the other filters and in
/// either order.
pub async fn list_by_queue(s: &dyn Store) {
    let jt = job_type("queue");
    let queue = format!("q_{}", uuid::Uuid::new_v4().simple());
    let mut on_queue = Vec::new();
    for i in 0..4 {
        let mut doc = document(&jt);
        if i % 2 == 0 {
            doc.queue_kwargs.queue = queue.clone();
            on_queue.push(doc.uuid.clone());
        }
        create(s, &doc).await;
    }
    on_queue.sort();
    let uuids = |docs: Vec<JobDocument>| docs.into_iter().map(|d| d.uuid).collect::<Vec<_>>();
    let filter = ListFilter { queue: Some(queue.clone()), ..ListFilter::default() };
    assert_eq!(uuids(s.list(&filter, &Page::default()).await.expect("list")), on_queue);
    let newest = Page { newest_first: true, ..Page::default() };
    let typed = ListFilter { job_type: Some(jt), status: Some(Status::Queued), ..filter };
    let mut descending = on_queue.clone();
    descending.reverse();
    assert_eq!(uuids(s.list(&typed, &newest).await.expect("list")), descending);
    let nowhere = ListFilter { queue: Some(format!("{queue}_none")), ..typed };
    assert!(s.list(&nowhere, &Page::default()).await.expect("list").is_empty());
}

/// A worker's registration is listed once written, shows its latest write, is not listed
/// once it expires, and is gone once removed.
pub async fn workers_register_refresh_expire_and_leave(s: &dyn Store) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let record = |id: &str, at: f64, job: Option<&str>| WorkerRecord {
        id: format!("{tag}-{id}"),
        host: "h".into(),
        pid: 42,
        queues: vec!["a".into(), "b".into()],
        started_at: 1000.0,
        heartbeat_at: at,
        job: job.map(str::to_owned),
        expires_at: at + 15.0,
    };
    let mine = |all: Vec<WorkerRecord>| all.into_iter().filter(|w| w.id.starts_with(&tag)).collect::<Vec<_>>();
    s.register_worker(&record("one", 1000.0, None)).await.expect("register one");
    s.register_worker(&record("two", 1000.0, None)).await.expect("register two");
    let listed = mine(s.list_workers(1001.0).await.expect("list"));
    assert_eq!(listed, vec![record("one", 1000.0, None), record("two", 1000.0, None)], "both, by id");

    // Refreshed with a job: the latest write shows, and it outlives the other one's time.
    s.register_worker(&record("one", 1010.0, Some("job-uuid"))).await.expect("refresh one");
    assert_eq!(
        mine(s.list_workers(1011.0).await.expect("list")),
        vec![record("one", 1010.0, Some("job-uuid")), record("two", 1000.0, None)]
    );
    assert_eq!(
        mine(s.list_workers(1020.0).await.expect("list")),
        vec![record("one", 1010.0, Some("job-uuid"))],
        "two expired at 1015"
    );
    // An expired record written again is live again.
    s.register_worker(&record("two", 1021.0, None)).await.expect("register two again");
    assert_eq!(mine(s.list_workers(1022.0).await.expect("list")).len(), 2);

    assert!(s.remove_worker(&format!("{tag}-one")).await.expect("remove"));
    assert!(!s.remove_worker(&format!("{tag}-one")).await.expect("remove again"), "gone already");
    assert_eq!(mine(s.list_workers(1022.0).await.expect("list")), vec![record("two", 1021.0, None)]);
    assert!(s.remove_worker(&format!("{tag}-two")).await.expect("remove two"));
    assert!(mine(s.list_workers(1022.0).await.expect("list")).is_empty());
}

pub async fn purge_expired(s: &dyn Store) {
    let jt = job_type("purge");
    let finished = |status| JobDocument { expires_at: Some(10.0), status, ..document(&jt) };
    let succeeded = create(s, &finished(Status::Succeeded)).await;
    let failed = create(s, &finished(Status::Failed)).await;
    let still_queued = create(s, &JobDocument { expires_at: Some(10.0), ..document(&jt) }).await;
    let later = create(s, &JobDocument { expires_at: Some(1000.0), ..finished(Status::Succeeded) }).await;
    let forever = create(s, &JobDocument { expires_at: None, ..finished(Status::Succeeded) }).await;
    let purged = s.purge_expired(500.0).await.expect("purge");
    assert!(purged >= 2, "purged {purged}");
    for gone in [&succeeded, &failed] {
        assert!(s.get(&gone.uuid).await.expect("get").is_none(), "{} {}", gone.uuid, gone.status);
    }
    for kept in [&still_queued, &later, &forever] {
        assert!(s.get(&kept.uuid).await.expect("get").is_some(), "{} {}", kept.uuid, kept.status);
    }
}

pub async fn read_then_write(s: &dyn Store) {
    let created = s.create(&document(&job_type("rtw"))).await.expect("create");
    let next: geyser::store::NextDocument = Arc::new(|stored: &JobDocument| {
        (stored.attempts < 1).then(|| JobDocument { attempts: stored.attempts + 1, ..stored.clone() })
    });
    let (stored, written) = s.read_then_write(&created.uuid, next.clone()).await.expect("first");
    assert_eq!(stored.map(|d| (d.version, d.attempts)), Some((1, 0)));
    let written = written.expect("a write");
    assert_eq!((written.version, written.attempts), (2, 1));
    assert_eq!(s.get(&created.uuid).await.unwrap().map(|d| (d.version, d.attempts)), Some((2, 1)));

    // `next` declines: nothing is written.
    let (stored, written) = s.read_then_write(&created.uuid, next.clone()).await.expect("second");
    assert_eq!((stored.map(|d| d.version), written), (Some(2), None));
    assert_eq!(s.get(&created.uuid).await.unwrap().map(|d| d.version), Some(2));

    let (stored, written) = s.read_then_write("no-such-uuid", next).await.expect("missing");
    assert!(stored.is_none() && written.is_none());
}

/// `list_stale` returns only documents of the status asked, written before the cutoff,
/// oldest write first (ties by uuid), every one once across pages.
pub async fn list_stale_pages_oldest_first(s: &dyn Store) {
    let jt = job_type("stale");
    let at = |status, updated_at| JobDocument { status, updated_at, ..document(&jt) };
    let mut tied = [create(s, &at(Status::Queued, 1000.25)).await, create(s, &at(Status::Queued, 1000.25)).await];
    tied.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    let oldest = create(s, &at(Status::Queued, 1000.125)).await;
    let newest = create(s, &at(Status::Queued, 1000.5)).await;
    let young = create(s, &at(Status::Queued, 1002.0)).await;
    let running = create(s, &at(Status::Running, 1000.0)).await;

    let mut after: Option<StaleKey> = None;
    let mut keys = Vec::new();
    loop {
        let rows = s.list_stale(Status::Queued, 1001.0, after.as_ref(), 2).await.expect("list stale");
        assert!(rows.len() <= 2, "a page holds at most its limit");
        let Some(last) = rows.last() else { break };
        after = Some(last.key.clone());
        for row in rows {
            let doc = row.doc.expect("a readable document");
            assert_eq!((doc.status, &doc.uuid), (Status::Queued, &row.key.uuid));
            assert!(doc.updated_at < 1001.0 && doc.updated_at == row.key.updated_at, "{doc:?}");
            keys.push(row.key);
        }
    }
    let in_order = keys.windows(2).all(|w| (w[0].updated_at, &w[0].uuid) < (w[1].updated_at, &w[1].uuid));
    assert!(in_order, "oldest first, each once: {keys:?}");
    let mine = [&oldest.uuid, &tied[0].uuid, &tied[1].uuid, &newest.uuid];
    let found: Vec<&String> = keys.iter().map(|k| &k.uuid).filter(|u| mine.contains(u)).collect();
    assert_eq!(found, mine.to_vec(), "this test's documents, oldest first");
    assert!(keys.iter().all(|k| k.uuid != young.uuid && k.uuid != running.uuid), "young or running listed");
    let rows = s.list_stale(Status::Running, 1001.0, None, 1000).await.expect("list stale running");
    assert!(rows.iter().any(|r| r.key.uuid == running.uuid));
}

/// A lease is granted to one holder at a time: renewed by its holder, refused to others
/// until it runs out, then taken over with a higher version.
pub async fn lease_has_one_holder_until_it_runs_out(s: &dyn Store) {
    let name = job_type("lease");
    let a = s.try_acquire_lease(&name, "a", 10.0, 100.0).await.expect("a takes");
    assert!(a.is_held_by("a") && a.name == name && a.expires_at == 110.0, "{a:?}");
    let b = s.try_acquire_lease(&name, "b", 10.0, 105.0).await.expect("b asks");
    assert_eq!(b, a, "refused while a holds it; the answer names a");
    let renewed = s.try_acquire_lease(&name, "a", 10.0, 105.0).await.expect("a renews");
    assert!(renewed.is_held_by("a") && renewed.expires_at == 115.0 && renewed.version > a.version, "{renewed:?}");
    let early = s.try_acquire_lease(&name, "b", 10.0, 114.9).await.expect("b asks again");
    assert!(early.is_held_by("a"), "{early:?}");
    let taken = s.try_acquire_lease(&name, "b", 10.0, 115.0).await.expect("b takes over");
    assert!(taken.is_held_by("b") && taken.expires_at == 125.0 && taken.version > renewed.version, "{taken:?}");
    let late = s.try_acquire_lease(&name, "a", 10.0, 116.0).await.expect("a comes back");
    assert!(late.is_held_by("b"), "a lost it: {late:?}");
    let other = s.try_acquire_lease(&job_type("lease"), "a", 10.0, 116.0).await.expect("another lease");
    assert!(other.is_held_by("a"), "leases are independent by name");
}

/// Only the holder can give a lease up, and then anyone can take it at once.
pub async fn lease_given_up_is_free_at_once(s: &dyn Store) {
    let name = job_type("release");
    s.try_acquire_lease(&name, "a", 60.0, 100.0).await.expect("a takes");
    assert!(!s.release_lease(&name, "b").await.expect("b releases"), "b does not hold it");
    assert!(s.try_acquire_lease(&name, "b", 60.0, 101.0).await.expect("b asks").is_held_by("a"));
    assert!(s.release_lease(&name, "a").await.expect("a releases"));
    assert!(s.try_acquire_lease(&name, "b", 60.0, 101.0).await.expect("b takes").is_held_by("b"));
    assert!(!s.release_lease(&job_type("never"), "a").await.expect("release an unknown lease"));
}

/// `import` writes a document exactly as given (version, timestamps to the bit): inserted when
/// the uuid is free, else replacing the stored one whole (fixed fields too) only at the version
/// named; every listing and purge follows the imported document.
pub async fn import_keeps_the_document_as_given(s: &dyn Store) {
    let (kind, new_kind) = (job_type("import"), job_type("imported"));
    let doc = JobDocument {
        version: 7,
        created_at: 1_796_002_004.226_930_1,
        updated_at: 0.1 + 0.2,
        started_at: Some(1e-7),
        ..document(&kind)
    };
    assert_eq!(s.import(&doc, None).await.expect("import"), doc);
    let got = s.get(&doc.uuid).await.expect("get").expect("the imported document");
    assert_eq!(got, doc, "stored as given, version included");
    assert_eq!(got.created_at.to_bits(), doc.created_at.to_bits());
    assert_eq!(got.updated_at.to_bits(), doc.updated_at.to_bits());
    let err = s.import(&doc, None).await.expect_err("an insert over a stored document");
    assert!(matches!(&err, StoreError::AlreadyExists(u) if *u == doc.uuid), "{err:?}");

    let by = |job_type: &str, status: Option<Status>| ListFilter {
        job_type: Some(job_type.into()),
        status,
        ..Default::default()
    };
    let page = Page { limit: 10, ..Page::default() };
    assert_eq!(s.list(&by(&kind, Some(Status::Queued)), &page).await.expect("list"), vec![doc.clone()]);

    let newer = JobDocument {
        version: 9,
        job_type: new_kind.clone(),
        status: Status::Succeeded,
        expires_at: Some(10.0),
        updated_at: 2.5,
        ..doc.clone()
    };
    let err = s.import(&newer, Some(6)).await.expect_err("a replace naming a version that is not stored");
    assert!(matches!(&err, StoreError::Conflict { uuid, .. } if *uuid == doc.uuid), "{err:?}");
    assert_eq!(s.get(&doc.uuid).await.expect("get").expect("the document"), doc, "a refused replace changes nothing");
    assert_eq!(s.import(&newer, Some(7)).await.expect("replace at the stored version"), newer);
    assert_eq!(s.get(&doc.uuid).await.expect("get").expect("the document"), newer);
    assert!(s.list(&by(&kind, None), &page).await.expect("list").is_empty(), "the old type's index let go of it");
    assert_eq!(s.list(&by(&new_kind, Some(Status::Succeeded)), &page).await.expect("list"), vec![newer.clone()]);
    assert!(s.list(&by(&new_kind, Some(Status::Queued)), &page).await.expect("list").is_empty());

    let written = s.update(&newer).await.expect("an ordinary write after an import");
    assert_eq!(written.version, 10);
    let missing = JobDocument { uuid: uuid::Uuid::new_v4().to_string(), ..newer.clone() };
    let err = s.import(&missing, Some(3)).await.expect_err("a replace of a missing document");
    assert!(matches!(&err, StoreError::NotFound(u) if *u == missing.uuid), "{err:?}");
    s.purge_expired(500.0).await.expect("purge");
    assert!(s.get(&doc.uuid).await.expect("get").is_none(), "an imported finished document expires");
}

/// `delete_at_version` deletes only the version the caller read.
pub async fn delete_at_version_refuses_a_newer_document(s: &dyn Store) {
    let doc = create(s, &document(&job_type("delete-at"))).await;
    let newer = s.update(&doc).await.expect("update");
    let err = s.delete_at_version(&doc.uuid, doc.version).await.expect_err("stale delete");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    s.delete_at_version(&doc.uuid, newer.version).await.expect("delete");
    let err = s.delete_at_version(&doc.uuid, newer.version).await.expect_err("second delete");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert!(s.get(&doc.uuid).await.expect("get").is_none());
}

/// Eight writers update the same version at once: exactly one wins, the others conflict.
pub async fn concurrent_updates_let_exactly_one_writer_win(s: &dyn Store) {
    let doc = create(s, &document(&job_type("race"))).await;
    let update = |i: u8| {
        let mut doc = doc.clone();
        doc.completeness = f64::from(i) / 10.0;
        async move { s.update(&doc).await }
    };
    let results = tokio::join!(update(0), update(1), update(2), update(3), update(4), update(5), update(6), update(7));
    let results = [results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7];
    let mut wins = 0;
    for result in results {
        match result {
            Ok(d) => {
                wins += 1;
                assert_eq!(d.version, 2);
            }
            Err(StoreError::Conflict { expected: 1, .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(wins, 1);
}
