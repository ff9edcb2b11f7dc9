//! The store contract: job documents by uuid, written with compare-and-swap on
//! their `version`. One file per backend; none of them knows about queues.

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{JobDocument, Status};

#[cfg(any(feature = "postgres", feature = "redis"))]
pub mod ca_file;
pub mod copy;
#[cfg(feature = "couchbase")]
pub mod couchbase;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sqlite;
#[cfg(any(feature = "postgres", feature = "redis", feature = "couchbase"))]
pub mod url_parts;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} already exists")]
    AlreadyExists(String),
    #[error("job {uuid} changed since version {expected} was read")]
    Conflict { uuid: String, expected: u64 },
    #[error("job {0} not found")]
    NotFound(String),
    #[error("job {uuid}: {field} is fixed when the job is created; a write may not change it")]
    FixedField { uuid: String, field: &'static str },
    #[error("stored document of job {uuid} is unreadable: {source}")]
    Corrupt {
        uuid: String,
        #[source]
        source: serde_json::Error,
    },
    /// The stored row contradicts itself; no write to it can succeed until it is repaired.
    #[error("stored document of job {uuid} is inconsistent: {reason}")]
    Inconsistent { uuid: String, reason: String },
    /// The backend failed the operation; `context` names the backend, where, and the operation.
    #[error("{context}: {source}")]
    Backend {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error(
        "job {uuid}: gave up after {tries} conflicting writes in a row (the document kept changing under this write)"
    )]
    Contended { uuid: String, tries: u32 },
}

/// How many compare-and-swap conflicts in a row a read-modify-write of one document takes
/// before it gives up with `StoreError::Contended`: every such loop in the engine is bounded.
pub const MAX_CONFLICTS: u32 = 100;

pub type StoreResult<T> = Result<T, StoreError>;

/// Which documents `list` returns; every part is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub job_type: Option<String>,
    /// Only documents last written before this time (epoch seconds).
    pub updated_before: Option<f64>,
    /// Only documents put on this queue (`queueKwargs.queue`). No store indexes it: a listing
    /// walks its order (by uuid, or a status's or type's index) and checks each document, so a
    /// rare queue among many documents costs a long walk (docs/stores.md).
    pub queue: Option<String>,
}

/// Keyset paging: documents after `after` (a uuid from the previous page) in uuid order, at
/// most `limit`; with `newest_first`, in descending uuid order (after `after` in that order,
/// i.e. below it). New uuids are time-ordered (UUIDv7), so descending is newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub after: Option<String>,
    pub limit: usize,
    pub newest_first: bool,
}

impl Default for Page {
    fn default() -> Self {
        Self { after: None, limit: 100, newest_first: false }
    }
}

/// A live worker as it registers itself in the store (`Store::register_worker`): one record
/// per worker (runner thread), written again at every job start and finish and every few
/// seconds while idle, removed when it stops, and not listed once `expires_at` has passed
/// (a worker that died without removing it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkerRecord {
    /// The worker's name, unique among live workers (`host:pid`, or `host:pid/thread`).
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub queues: Vec<String>,
    /// When the worker started (epoch seconds).
    pub started_at: f64,
    /// When the worker last wrote this record.
    pub heartbeat_at: f64,
    /// The uuid of the job it is running, if any.
    pub job: Option<String>,
    /// When the record stops counting as live unless written again.
    pub expires_at: f64,
}

impl WorkerRecord {
    /// The record as the stores keep it (JSON text).
    pub fn to_json(&self) -> StoreResult<String> {
        serde_json::to_string(self).map_err(|e| unreadable_worker(&self.id, e))
    }

    /// A stored record; `where_` names where it was read, should it be unreadable.
    pub fn from_json(json: &[u8], where_: &str) -> StoreResult<Self> {
        serde_json::from_slice(json).map_err(|e| unreadable_worker(where_, e))
    }
}

fn unreadable_worker(what: &str, source: serde_json::Error) -> StoreError {
    StoreError::Backend { context: format!("worker registration {what}: not a worker record"), source: source.into() }
}

/// Where a row sits in `Store::list_stale`'s order (oldest write first); a page starts after it.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleKey {
    pub updated_at: f64,
    pub uuid: String,
}

/// One row of `Store::list_stale`: its place in the listing, and its document or why that
/// cannot be read (`Corrupt`), so that one bad document never hides the others.
#[derive(Debug)]
pub struct StaleRow {
    pub key: StaleKey,
    pub doc: StoreResult<JobDocument>,
}

/// A named lease (see `Store::try_acquire_lease`): who holds it, until when (epoch seconds),
/// and how many times it was granted (a new holder always sees a higher `version`).
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub expires_at: f64,
    pub version: u64,
}

impl Lease {
    pub fn is_held_by(&self, holder: &str) -> bool {
        self.holder == holder
    }
}

/// For `Store::read_then_write`: the document to write given the stored one, or None.
pub type NextDocument = Arc<dyn Fn(&JobDocument) -> Option<JobDocument> + Send + Sync>;

#[async_trait]
pub trait Store: Send + Sync {
    /// Save a new document at version 1 (its `version` field is set by the store).
    async fn create(&self, doc: &JobDocument) -> StoreResult<JobDocument>;
    /// `create` for each of `docs`, one result per document in order; an error of the whole
    /// call means none was written. SQLite writes them in one transaction; this default
    /// creates one after the other (so a failing store can leave the first ones written:
    /// their results say so).
    async fn create_many(&self, docs: &[JobDocument]) -> StoreResult<Vec<StoreResult<JobDocument>>> {
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            out.push(self.create(doc).await);
        }
        Ok(out)
    }
    async fn get(&self, uuid: &str) -> StoreResult<Option<JobDocument>>;
    /// `get`, and the document's JSON text as `JobDocument::to_json` writes it, for a caller
    /// that hands the text on (the Python client). This default writes the text out again; a
    /// store that keeps exactly that text (SQLite, Redis) returns it as read, once parsing it
    /// has checked it, which saves a third of a read's CPU.
    async fn get_with_json(&self, uuid: &str) -> StoreResult<Option<(JobDocument, Vec<u8>)>> {
        Ok(self.get(uuid).await?.map(|doc| {
            let json = doc.to_json();
            (doc, json)
        }))
    }
    /// Replace the document if its stored version is still `doc.version`;
    /// returns it with the new version, or `Conflict`. `jobType` and `expiresAt` are
    /// fixed at creation: a write that changes one is refused (`FixedField`).
    async fn update(&self, doc: &JobDocument) -> StoreResult<JobDocument>;
    /// `update`, and the written document's JSON text as `JobDocument::to_json` writes it.
    /// This default writes the text out again; a store that writes exactly that text (SQLite,
    /// Redis) returns the text it wrote.
    async fn update_with_json(&self, doc: &JobDocument) -> StoreResult<(JobDocument, Vec<u8>)> {
        let written = self.update(doc).await?;
        let json = written.to_json();
        Ok((written, json))
    }
    /// `update` for each of `docs`, one result per document in order (a conflict fails that
    /// one only); an error of the whole call means none was written. SQLite writes them in one
    /// transaction; this default updates one after the other.
    async fn update_many(&self, docs: &[JobDocument]) -> StoreResult<Vec<StoreResult<JobDocument>>> {
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            out.push(self.update(doc).await);
        }
        Ok(out)
    }
    async fn delete(&self, uuid: &str) -> StoreResult<bool>;
    /// Delete the document only if its stored version is still `version`: `Conflict` if it
    /// changed, `NotFound` if it is gone.
    async fn delete_at_version(&self, uuid: &str, version: u64) -> StoreResult<()>;
    /// Documents matching `filter`, ordered by uuid (descending with `page.newest_first`), one
    /// page at a time.
    async fn list(&self, filter: &ListFilter, page: &Page) -> StoreResult<Vec<JobDocument>>;
    /// Documents of `status` last written before `before`, oldest write first (then by uuid),
    /// at most `limit` of them after `after`. Reads only those rows (SQLite: an index on
    /// status and write time). A row whose document cannot be read comes back in its place
    /// as `Corrupt`; an error of the whole call means the store itself failed.
    async fn list_stale(
        &self,
        status: Status,
        before: f64,
        after: Option<&StaleKey>,
        limit: usize,
    ) -> StoreResult<Vec<StaleRow>>;
    /// Take or renew the lease `name` for `holder` until `now + ttl`, in one atomic conditional
    /// write: granted when nobody holds it, when `holder` already does, or when the holder's
    /// time has run out (`expires_at <= now`). Returns the lease as it stands after the
    /// attempt: `holder` has it exactly when `lease.is_held_by(holder)`.
    async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: f64, now: f64) -> StoreResult<Lease>;
    /// Give up the lease `name` if `holder` holds it (anyone may take it at once);
    /// returns whether it did.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool>;
    /// Write worker `record.id`'s registration, replacing the one it wrote before.
    async fn register_worker(&self, record: &WorkerRecord) -> StoreResult<()>;
    /// The registrations whose `expires_at` is after `now`, by id; expired ones may be dropped.
    async fn list_workers(&self, now: f64) -> StoreResult<Vec<WorkerRecord>>;
    /// Remove worker `id`'s registration; returns whether there was one.
    async fn remove_worker(&self, id: &str) -> StoreResult<bool>;
    /// Forget finished documents (succeeded, failed, cancelled) whose `expiresAt` has passed;
    /// a job still queued or running is never forgotten under it. Returns how many.
    async fn purge_expired(&self, now: f64) -> StoreResult<u64>;

    /// Write `doc` exactly as given, its `version` included, as a copy from another store
    /// (`copy.rs`) does. `replacing: None` inserts it (`AlreadyExists` if the uuid is taken);
    /// `Some(v)` replaces the stored document whole, fixed fields too, only if its version is
    /// still `v` (`Conflict` if it moved on, `NotFound` if it is gone). Every index follows the
    /// new document.
    async fn import(&self, doc: &JobDocument, replacing: Option<u64>) -> StoreResult<JobDocument>;

    /// Read a document and write its successor with no other write in between: `next` gets
    /// the stored document and returns the one to write (the store sets its version), or
    /// None to write nothing. Returns the stored document (None: there is none) and what
    /// was written. This default reads, then compares-and-swaps, asking `next` again after
    /// a conflict, at most `MAX_CONFLICTS` times. SQLite keeps it: a read transaction upgraded to a write is refused
    /// whenever another process is writing, and starting such a transaction over (which
    /// happened to 60% of worker starts at `-c 2`) costs more than a rare CAS miss.
    async fn read_then_write(
        &self,
        uuid: &str,
        next: NextDocument,
    ) -> StoreResult<(Option<JobDocument>, Option<JobDocument>)> {
        for _ in 0..MAX_CONFLICTS {
            let Some(stored) = self.get(uuid).await? else {
                return Ok((None, None));
            };
            let Some(new) = next(&stored) else {
                return Ok((Some(stored), None));
            };
            match self.update(&JobDocument { version: stored.version, ..new }).await {
                Ok(written) => return Ok((Some(stored), Some(written))),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contended { uuid: uuid.to_owned(), tries: MAX_CONFLICTS })
    }
}
