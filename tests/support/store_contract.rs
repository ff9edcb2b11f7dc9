//! The store contract: compare-and-swap document storage as tests that every `Store` backend runs.
//! A backend's test file (after `mod support;`) plugs in with one line, `store_contract_tests!(make_store());`, where
//! `make_store()` is a future giving `(store, guard)`; the guard (temp dir, database) lives as
//! long as the test. Every test uses its own job type and uuids so tests can share a database.
//! Unreadable documents need raw writes, so each backend tests `Corrupt` in its own file.

use geyser::model::{JobDocument, Status};
use std::sync::Arc;

use geyser::store::{ListFilter, Page, Store, StoreError};

/// Generates one `#[tokio::test]` per contract test in a `store_contract` module.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        mod store_contract {
            #[allow(unused_imports)]
            use super::*;
            $crate::store_contract_tests!(@each $make;
                create_then_get, create_twice_is_already_exists, update_bumps_version,
                stale_update_conflicts, update_of_missing_is_not_found, fixed_fields_are_kept, delete, list_filters,
                list_pages_by_uuid, purge_expired, read_then_write);
        }
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::support::store_contract::$name(&store).await;
            }
        )*
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

pub async fn update_bumps_version(s: &dyn Store) {
    let mut doc = create(s, &document(&job_type("update"))).await;
    doc.start_attempt("worker-1", "fence-1").expect("start");
    let updated = s.update(&doc).await.expect("update");
    assert_eq!(updated.version, 2);
    let got = s.get(&doc.uuid).await.expect("get").expect("the document");
    assert_eq!(got, updated, "the stored document carries the new version");
    assert_eq!((got.status, got.attempts), (Status::Running, 1));
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
    let listed = s.list(&filter, &Page { after: None, limit: 10 }).await.expect("list");
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
    let mut page = Page { after: None, limit: 3 };
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let docs = s.list(&filter, &page).await.expect("list page");
        sizes.push(docs.len());
        let Some(last) = docs.last() else { break };
        page.after = Some(last.uuid.clone());
        seen.extend(docs.into_iter().map(|d| d.uuid));
    }
    assert_eq!(seen, uuids, "every document once, in uuid order");
    assert_eq!(sizes, vec![3, 3, 1, 0]);
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
