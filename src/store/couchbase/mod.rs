//! Job documents in Couchbase, shared by every host that reaches the cluster. Owns the keys
//! under its prefix (`PREFIX::UUID` for documents, `PREFIX:lease:NAME` for leases,
//! `PREFIX:workers` for the live workers' registrations) in one
//! collection, and the `geyser_PREFIX_*` indexes on it, and nothing else. A document is the
//! JSON text serde_json wrote, unchanged, so it moves to and from the other stores as is.
//!
//! Compare-and-swap: a write reads the document with its Couchbase CAS, checks Geyser's
//! `version` (and the fixed fields) against it, and replaces the document only if its CAS is
//! still the one read; a CAS mismatch is a `Conflict`. Listings are SQL++ queries at
//! `request_plus` consistency over partial indexes created on first use. Every call is bounded
//! by the URL's timeouts; the password never reaches an error (see `url.rs`).

mod sql;
pub mod url;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use couchbase::authenticator::PasswordAuthenticator;
use couchbase::cluster::Cluster;
use couchbase::collection::Collection;
use couchbase::error::{Error as SdkError, ErrorKind};
use couchbase::options::cluster_options::{ClusterOptions, KvOptions};
use couchbase::options::diagnostic_options::WaitUntilReadyOptions;
use couchbase::options::kv_options::{InsertOptions, RemoveOptions, ReplaceOptions};
use couchbase::options::query_options::{QueryOptions, ScanConsistency};
use couchbase::service_type::ServiceType;
use couchbase::transcoding::{encode_common_flags, DataType};
use futures::TryStreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::{timeout_at, Instant};

use super::{
    Lease, ListFilter, NextDocument, Page, StaleKey, StaleRow, Store, StoreError, StoreResult, WorkerRecord,
    MAX_CONFLICTS,
};
use crate::model::{now, JobDocument, Status};
use sql::Statements;
pub use url::{redact, CouchbaseUrl};

/// How many expired documents one purge statement deletes before the next.
const PURGE_BATCH: usize = 500;
/// The longest document expiry Geyser asks Couchbase for; a later `expiresAt` is left to
/// `purge_expired` (Couchbase keeps expiry times as 32-bit epoch seconds).
const LONGEST_EXPIRY: f64 = 50.0 * 365.0 * 86400.0;

/// Why a store URL could not be opened; `url` is always the redacted URL.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("bad couchbase store URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("couchbase store {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
}

/// The store: one SDK cluster handle (its own connection pool) shared by every clone.
#[derive(Clone)]
pub struct CouchbaseStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Kept so the SDK's connections live as long as the store.
    cluster: Cluster,
    collection: Collection,
    url: CouchbaseUrl,
    sql: Statements,
    /// Set once the indexes the listings need exist.
    indexes: OnceCell<()>,
}

/// A lease as its document holds it.
#[derive(Serialize, Deserialize)]
struct LeaseDoc {
    holder: String,
    #[serde(rename = "expiresAt")]
    expires_at: f64,
    version: u64,
}

/// The live workers' registrations, as their one document holds them (by id).
type Workers = std::collections::BTreeMap<String, WorkerRecord>;

/// One row of `list`.
#[derive(Deserialize)]
struct ListRow {
    id: String,
    doc: Value,
}

/// One row of `list_stale`.
#[derive(Deserialize)]
struct StaleQueryRow {
    id: String,
    #[serde(rename = "updatedAt")]
    updated_at: f64,
    doc: Value,
}

/// Opens the store a `couchbase://` or `couchbases://` URL names: connects and waits for the
/// bucket's data service within the URL's connect timeout (an unreachable cluster is an
/// error naming the redacted URL, never a hang), then checks that the collection exists.
pub async fn open(url: &str) -> Result<CouchbaseStore, OpenError> {
    let parsed = url::parse(url).map_err(|reason| OpenError::BadUrl { url: redact(url), reason })?;
    let unreachable = |reason: String| OpenError::Unreachable { url: parsed.redacted.clone(), reason };
    let limit = parsed.connect_timeout;
    let deadline = Instant::now() + limit;
    let options = ClusterOptions::new(PasswordAuthenticator::new(&parsed.username, parsed.password()).into())
        .kv_options(KvOptions::new().connect_timeout(limit));
    let cluster = match timeout_at(deadline, Cluster::connect(&parsed.connection_string, options)).await {
        Ok(Ok(cluster)) => cluster,
        Ok(Err(e)) => return Err(unreachable(parsed.scrub(&e.to_string()))),
        Err(_) => {
            return Err(unreachable(format!(
                "no cluster configuration within {limit:?} (connect_timeout): the cluster is down or \
                 unreachable, or it refused the user"
            )))
        }
    };
    let bucket = cluster.bucket(&parsed.bucket);
    let ready = WaitUntilReadyOptions::new().service_types(vec![ServiceType::KV]);
    match timeout_at(deadline, bucket.wait_until_ready(ready)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(unreachable(parsed.scrub(&e.to_string()))),
        Err(_) => {
            return Err(unreachable(format!(
                "bucket {:?} not ready within {limit:?} (connect_timeout): no such bucket, or the user \
                 may not use it",
                parsed.bucket
            )))
        }
    }
    let collection = bucket.scope(&parsed.scope).collection(&parsed.collection);
    let probe = format!("{}:open", parsed.prefix);
    match timeout_at(deadline, collection.exists(&probe, None)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(unreachable(format!("collection {}: {}", parsed.keyspace(), parsed.scrub(&e.to_string()))))
        }
        Err(_) => return Err(unreachable(format!("collection {} did not answer within {limit:?}", parsed.keyspace()))),
    }
    let sql = Statements::new(&parsed);
    Ok(CouchbaseStore { inner: Arc::new(Inner { cluster, collection, url: parsed, sql, indexes: OnceCell::new() }) })
}

/// Parses a stored document, naming its uuid when it is not one.
fn parse(uuid: &str, json: &[u8]) -> StoreResult<JobDocument> {
    JobDocument::from_json(json).map_err(|source| StoreError::Corrupt { uuid: uuid.to_owned(), source })
}

/// How long Couchbase should keep `doc` before dropping it by itself: only a finished
/// document with an `expiresAt` still ahead (one already past is left to `purge_expired`).
fn expiry_of(doc: &JobDocument) -> Option<Duration> {
    let remaining = doc.expires_at.filter(|_| doc.status.is_terminal())? - now();
    (1.0..LONGEST_EXPIRY).contains(&remaining).then(|| Duration::from_secs_f64(remaining.ceil()))
}

/// One SDK call, boxed: the SDK's futures nest deep enough that a store method holding one
/// directly exceeds the compiler's layout depth limit.
type SdkCall<'a, T> = Pin<Box<dyn Future<Output = couchbase::error::Result<T>> + Send + 'a>>;

fn is(e: &SdkError, kind: ErrorKind) -> bool {
    *e.kind() == kind
}

impl CouchbaseStore {
    fn doc_key(&self, uuid: &str) -> String {
        format!("{}::{uuid}", self.inner.url.prefix)
    }

    fn lease_key(&self, name: &str) -> String {
        format!("{}:lease:{name}", self.inner.url.prefix)
    }

    /// The uuid of a document key of this store.
    fn uuid_of<'a>(&self, key: &'a str) -> &'a str {
        key.strip_prefix(self.inner.url.prefix.as_str()).and_then(|k| k.strip_prefix("::")).unwrap_or(key)
    }

    /// The store's URL without its password.
    pub fn redacted_url(&self) -> &str {
        &self.inner.url.redacted
    }

    /// The key prefix of this store (from the URL).
    pub fn prefix(&self) -> &str {
        &self.inner.url.prefix
    }

    /// Names the store and the operation, with the password scrubbed from the SDK's words.
    fn unavailable(&self, op: &str, reason: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "couchbase store {}: {op}: {}",
            self.inner.url.redacted,
            self.inner.url.scrub(reason)
        ))
    }

    /// An SDK error no caller expects: `Unavailable` when the cluster could not be reached or
    /// answered that it cannot now, `Backend` when it refused the operation.
    fn failure(&self, op: &str, e: SdkError) -> StoreError {
        let text = self.inner.url.scrub(&e.to_string());
        match e.kind() {
            ErrorKind::OtherFailure(_)
            | ErrorKind::ServerTimeout
            | ErrorKind::ServiceNotAvailable(_)
            | ErrorKind::TemporaryFailure
            | ErrorKind::RequestCanceled
            | ErrorKind::ClusterDropped
            | ErrorKind::RateLimitedFailure => self.unavailable(op, &text),
            _ => StoreError::Backend {
                context: format!("couchbase store {}: {op}", self.inner.url.redacted),
                source: text.into(),
            },
        }
    }

    /// Awaits one SDK call within `limit`; the SDK's own error comes back for the caller to
    /// read the kinds it expects (not found, exists, CAS mismatch).
    async fn within<T>(&self, op: &str, limit: Duration, call: SdkCall<'_, T>) -> StoreResult<Result<T, SdkError>> {
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| self.unavailable(op, &format!("no answer within {limit:?}")))
    }

    /// The value stored at `key` and its CAS, or None.
    async fn read(&self, op: &str, key: &str) -> StoreResult<Option<(Vec<u8>, u64)>> {
        match self.within(op, self.inner.url.timeout, Box::pin(self.inner.collection.get(key, None))).await? {
            Ok(got) => Ok(Some((got.content_as_raw().0.to_vec(), got.cas()))),
            Err(e) if is(&e, ErrorKind::DocumentNotFound) => Ok(None),
            Err(e) => Err(self.failure(op, e)),
        }
    }

    /// Inserts `json` at `key`: false when the key is taken.
    async fn insert(&self, op: &str, key: &str, json: &[u8], expiry: Option<Duration>) -> StoreResult<bool> {
        let mut options = InsertOptions::new();
        if let Some(expiry) = expiry {
            options = options.expiry(expiry);
        }
        let flags = encode_common_flags(DataType::Json);
        match self
            .within(op, self.inner.url.timeout, Box::pin(self.inner.collection.insert_raw(key, json, flags, options)))
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) if is(&e, ErrorKind::DocumentExists) => Ok(false),
            Err(e) => Err(self.failure(op, e)),
        }
    }

    /// Replaces the value at `key` if its CAS is still `cas`: false when it changed or is gone.
    async fn replace(&self, op: &str, key: &str, json: &[u8], cas: u64, expiry: Option<Duration>) -> StoreResult<bool> {
        // Without an expiry, a replace clears any the document had: exactly what a write of an
        // unfinished document needs.
        let mut options = ReplaceOptions::new().cas(cas);
        if let Some(expiry) = expiry {
            options = options.expiry(expiry);
        }
        let flags = encode_common_flags(DataType::Json);
        match self
            .within(op, self.inner.url.timeout, Box::pin(self.inner.collection.replace_raw(key, json, flags, options)))
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) if is(&e, ErrorKind::CasMismatch) || is(&e, ErrorKind::DocumentNotFound) => Ok(false),
            Err(e) => Err(self.failure(op, e)),
        }
    }

    /// Removes the value at `key` (if its CAS is still `cas`, when given): false when it
    /// changed or is gone.
    async fn remove(&self, op: &str, key: &str, cas: Option<u64>) -> StoreResult<bool> {
        let options = match cas {
            Some(cas) => RemoveOptions::new().cas(cas),
            None => RemoveOptions::new(),
        };
        match self.within(op, self.inner.url.timeout, Box::pin(self.inner.collection.remove(key, options))).await? {
            Ok(_) => Ok(true),
            Err(e) if is(&e, ErrorKind::CasMismatch) || is(&e, ErrorKind::DocumentNotFound) => Ok(false),
            Err(e) => Err(self.failure(op, e)),
        }
    }

    /// Writes `new` over `stored` (read with `cas`) at version `stored.version + 1`, unless it
    /// changes a fixed field; `Conflict` when the document changed since it was read.
    async fn replace_checked(
        &self,
        op: &str,
        stored: &JobDocument,
        cas: u64,
        new: &JobDocument,
    ) -> StoreResult<JobDocument> {
        if let Some(field) = stored.changed_fixed_field(new) {
            return Err(StoreError::FixedField { uuid: stored.uuid.clone(), field });
        }
        let new = JobDocument { version: stored.version.saturating_add(1), uuid: stored.uuid.clone(), ..new.clone() };
        match self.replace(op, &self.doc_key(&new.uuid), &new.to_json(), cas, expiry_of(&new)).await? {
            true => Ok(new),
            false => Err(StoreError::Conflict { uuid: new.uuid, expected: stored.version }),
        }
    }

    /// Creates the indexes the listings need, once per store (an index another process made
    /// first is fine).
    async fn ensure_indexes(&self) -> StoreResult<()> {
        self.inner
            .indexes
            .get_or_try_init(|| async {
                for (name, create) in &self.inner.sql.indexes {
                    let op = format!("create index {name}");
                    let cluster = self.inner.cluster.clone();
                    let statement = create.clone();
                    let options = QueryOptions::new().server_timeout(self.inner.url.query_timeout);
                    let made = async move { cluster.query(statement, options).await.map(|_| ()) };
                    match self.within(&op, self.inner.url.query_timeout, Box::pin(made)).await? {
                        Ok(()) => {}
                        Err(e) if is(&e, ErrorKind::IndexExists) || e.to_string().contains("already exist") => {}
                        Err(e) => return Err(self.failure(&op, e)),
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Runs one SQL++ statement at `request_plus` consistency (it sees every write made before
    /// it) and collects its rows.
    async fn query<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        op: &str,
        statement: String,
        parameters: Vec<(&str, Value)>,
    ) -> StoreResult<Vec<T>> {
        self.ensure_indexes().await?;
        let mut options = QueryOptions::new()
            .scan_consistency(ScanConsistency::RequestPlus)
            .server_timeout(self.inner.url.query_timeout);
        for (name, value) in parameters {
            options = options.add_named_parameter(name, value).map_err(|e| self.failure(op, e))?;
        }
        let cluster = self.inner.cluster.clone();
        let rows = async move { cluster.query(statement, options).await?.rows::<T>().try_collect::<Vec<T>>().await };
        self.within(op, self.inner.url.query_timeout, Box::pin(rows)).await?.map_err(|e| self.failure(op, e))
    }

    fn workers_key(&self) -> String {
        format!("{}:workers", self.inner.url.prefix)
    }

    /// Every worker registration (one document, id -> record) with its CAS, or None.
    async fn read_workers(&self, op: &str) -> StoreResult<Option<(Workers, u64)>> {
        let key = self.workers_key();
        let Some((raw, cas)) = self.read(op, &key).await? else { return Ok(None) };
        let workers = serde_json::from_slice(&raw).map_err(|e| StoreError::Backend {
            context: format!(
                "couchbase store {}: {op}: the document {key} is not worker registrations",
                self.redacted_url()
            ),
            source: e.into(),
        })?;
        Ok(Some((workers, cas)))
    }

    /// Applies `change` to the registrations and writes them back if it says they changed,
    /// compare-and-swap on the document's CAS, at most `MAX_CONFLICTS` times. Returns what
    /// `change` said.
    async fn change_workers(&self, op: &str, change: impl Fn(&mut Workers) -> bool + Send + Sync) -> StoreResult<bool> {
        let key = self.workers_key();
        for _ in 0..MAX_CONFLICTS {
            let (mut workers, cas) = match self.read_workers(op).await? {
                Some((workers, cas)) => (workers, Some(cas)),
                None => (Workers::new(), None),
            };
            if !change(&mut workers) {
                return Ok(false);
            }
            let json = serde_json::to_vec(&workers).map_err(|e| self.unavailable(op, &e.to_string()))?;
            let written = match cas {
                Some(cas) => self.replace(op, &key, &json, cas, None).await?,
                None => self.insert(op, &key, &json, None).await?,
            };
            if written {
                return Ok(true);
            }
        }
        Err(StoreError::Contended { uuid: key, tries: MAX_CONFLICTS })
    }

    /// The lease `name` as stored with its CAS, or None.
    async fn read_lease(&self, op: &str, name: &str) -> StoreResult<Option<(LeaseDoc, u64)>> {
        let Some((raw, cas)) = self.read(op, &self.lease_key(name)).await? else { return Ok(None) };
        let lease = serde_json::from_slice(&raw).map_err(|e| StoreError::Inconsistent {
            uuid: format!("lease {name}"),
            reason: format!("its document is not a lease ({e}); delete the key {}", self.lease_key(name)),
        })?;
        Ok(Some((lease, cas)))
    }

    /// Writes `lease` over the one read with `cas` (or as new when `cas` is None): false when
    /// another write came first.
    async fn write_lease(&self, op: &str, name: &str, lease: &LeaseDoc, cas: Option<u64>) -> StoreResult<bool> {
        let json = serde_json::to_vec(lease).map_err(|e| self.unavailable(op, &e.to_string()))?;
        match cas {
            Some(cas) => self.replace(op, &self.lease_key(name), &json, cas, None).await,
            None => self.insert(op, &self.lease_key(name), &json, None).await,
        }
    }
}

#[async_trait]
impl Store for CouchbaseStore {
    async fn create(&self, doc: &JobDocument) -> StoreResult<JobDocument> {
        let doc = JobDocument { version: 1, ..doc.clone() };
        match self.insert("create", &self.doc_key(&doc.uuid), &doc.to_json(), expiry_of(&doc)).await? {
            true => Ok(doc),
            false => Err(StoreError::AlreadyExists(doc.uuid)),
        }
    }

    async fn get(&self, uuid: &str) -> StoreResult<Option<JobDocument>> {
        self.read("get", &self.doc_key(uuid)).await?.map(|(raw, _)| parse(uuid, &raw)).transpose()
    }

    async fn update(&self, doc: &JobDocument) -> StoreResult<JobDocument> {
        let Some((raw, cas)) = self.read("update", &self.doc_key(&doc.uuid)).await? else {
            return Err(StoreError::NotFound(doc.uuid.clone()));
        };
        let stored = parse(&doc.uuid, &raw)?;
        if stored.version != doc.version {
            return Err(StoreError::Conflict { uuid: doc.uuid.clone(), expected: doc.version });
        }
        self.replace_checked("update", &stored, cas, doc).await
    }

    async fn delete(&self, uuid: &str) -> StoreResult<bool> {
        self.remove("delete", &self.doc_key(uuid), None).await
    }

    async fn delete_at_version(&self, uuid: &str, version: u64) -> StoreResult<()> {
        let key = self.doc_key(uuid);
        let Some((raw, cas)) = self.read("delete", &key).await? else {
            return Err(StoreError::NotFound(uuid.to_owned()));
        };
        if parse(uuid, &raw)?.version != version || !self.remove("delete", &key, Some(cas)).await? {
            return Err(StoreError::Conflict { uuid: uuid.to_owned(), expected: version });
        }
        Ok(())
    }

    async fn list(&self, filter: &ListFilter, page: &Page) -> StoreResult<Vec<JobDocument>> {
        let after = page.after.as_deref().map(|uuid| self.doc_key(uuid));
        let statement = self.inner.sql.list(filter, after.is_none(), page.newest_first);
        // From the start: the first key of this store's range, or descending its last.
        let start = if page.newest_first { format!("{}:;", self.inner.url.prefix) } else { self.doc_key("") };
        let mut parameters = vec![("after", Value::from(after.unwrap_or(start))), ("limit", Value::from(page.limit))];
        if let Some(status) = filter.status {
            parameters.push(("status", Value::from(status.as_str())));
        }
        if let Some(job_type) = &filter.job_type {
            parameters.push(("jobType", Value::from(job_type.as_str())));
        }
        if let Some(before) = filter.updated_before {
            parameters.push(("before", Value::from(before)));
        }
        if let Some(queue) = &filter.queue {
            parameters.push(("queue", Value::from(queue.as_str())));
        }
        let rows: Vec<ListRow> = self.query("list", statement, parameters).await?;
        rows.into_iter()
            .map(|row| {
                let uuid = self.uuid_of(&row.id).to_owned();
                serde_json::from_value(row.doc).map_err(|source| StoreError::Corrupt { uuid, source })
            })
            .collect()
    }

    async fn list_stale(
        &self,
        status: Status,
        before: f64,
        after: Option<&StaleKey>,
        limit: usize,
    ) -> StoreResult<Vec<StaleRow>> {
        let mut parameters = vec![
            ("status", Value::from(status.as_str())),
            ("before", Value::from(before)),
            ("limit", Value::from(limit)),
        ];
        if let Some(key) = after {
            parameters.push(("afterTime", Value::from(key.updated_at)));
            parameters.push(("afterId", Value::from(self.doc_key(&key.uuid))));
        }
        let rows: Vec<StaleQueryRow> = self.query("list stale", self.inner.sql.list_stale(after), parameters).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let uuid = self.uuid_of(&row.id).to_owned();
                let doc = serde_json::from_value(row.doc)
                    .map_err(|source| StoreError::Corrupt { uuid: uuid.clone(), source });
                StaleRow { key: StaleKey { updated_at: row.updated_at, uuid }, doc }
            })
            .collect())
    }

    /// One conditional write on the lease's document, read again after a losing race, at
    /// most `MAX_CONFLICTS` times.
    async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: f64, now: f64) -> StoreResult<Lease> {
        const OP: &str = "acquire lease";
        let as_lease = |doc: LeaseDoc| Lease {
            name: name.to_owned(),
            holder: doc.holder,
            expires_at: doc.expires_at,
            version: doc.version,
        };
        for _ in 0..MAX_CONFLICTS {
            let (version, cas) = match self.read_lease(OP, name).await? {
                None => (1, None),
                Some((held, cas)) if held.holder == holder || held.expires_at <= now => {
                    (held.version.saturating_add(1), Some(cas))
                }
                Some((held, _)) => return Ok(as_lease(held)),
            };
            let granted = LeaseDoc { holder: holder.to_owned(), expires_at: now + ttl, version };
            if self.write_lease(OP, name, &granted, cas).await? {
                return Ok(as_lease(granted));
            }
        }
        Err(StoreError::Contended { uuid: format!("lease {name}"), tries: MAX_CONFLICTS })
    }

    async fn register_worker(&self, record: &WorkerRecord) -> StoreResult<()> {
        let at = record.heartbeat_at;
        let record = record.clone();
        self.change_workers("register worker", move |workers| {
            workers.retain(|_, w| w.expires_at > at);
            workers.insert(record.id.clone(), record.clone());
            true
        })
        .await
        .map(|_| ())
    }

    async fn list_workers(&self, now: f64) -> StoreResult<Vec<WorkerRecord>> {
        let Some((workers, _)) = self.read_workers("list workers").await? else { return Ok(Vec::new()) };
        Ok(workers.into_values().filter(|w| w.expires_at > now).collect())
    }

    async fn remove_worker(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.change_workers("remove worker", move |workers| workers.remove(&id).is_some()).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        const OP: &str = "release lease";
        for _ in 0..MAX_CONFLICTS {
            let Some((held, cas)) = self.read_lease(OP, name).await? else { return Ok(false) };
            if held.holder != holder {
                return Ok(false);
            }
            // Its time set in the past, its version kept: the next holder's is still higher.
            let ended = LeaseDoc { expires_at: 0.0, ..held };
            if self.write_lease(OP, name, &ended, Some(cas)).await? {
                return Ok(true);
            }
        }
        Err(StoreError::Contended { uuid: format!("lease {name}"), tries: MAX_CONFLICTS })
    }

    /// Deletes expired finished documents in batches, one statement each. Documents Couchbase
    /// already dropped at their expiry are not counted.
    async fn purge_expired(&self, now: f64) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let parameters = vec![("now", Value::from(now)), ("limit", Value::from(PURGE_BATCH))];
            let deleted: Vec<String> = self.query("purge expired", self.inner.sql.purge(), parameters).await?;
            total += deleted.len() as u64;
            if deleted.len() < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Inserts `doc` as given, or replaces the stored one whole if its version is still
    /// `replacing` and its CAS is still the one read with it.
    async fn import(&self, doc: &JobDocument, replacing: Option<u64>) -> StoreResult<JobDocument> {
        let key = self.doc_key(&doc.uuid);
        let Some(expected) = replacing else {
            return match self.insert("import", &key, &doc.to_json(), expiry_of(doc)).await? {
                true => Ok(doc.clone()),
                false => Err(StoreError::AlreadyExists(doc.uuid.clone())),
            };
        };
        let Some((raw, cas)) = self.read("import", &key).await? else {
            return Err(StoreError::NotFound(doc.uuid.clone()));
        };
        let conflict = || StoreError::Conflict { uuid: doc.uuid.clone(), expected };
        if parse(&doc.uuid, &raw)?.version != expected {
            return Err(conflict());
        }
        match self.replace("import", &key, &doc.to_json(), cas, expiry_of(doc)).await? {
            true => Ok(doc.clone()),
            false => Err(conflict()),
        }
    }

    /// One read and one compare-and-swap on its CAS per round (the default reads twice).
    async fn read_then_write(
        &self,
        uuid: &str,
        next: NextDocument,
    ) -> StoreResult<(Option<JobDocument>, Option<JobDocument>)> {
        for _ in 0..MAX_CONFLICTS {
            let Some((raw, cas)) = self.read("read then write", &self.doc_key(uuid)).await? else {
                return Ok((None, None));
            };
            let stored = parse(uuid, &raw)?;
            let Some(new) = next(&stored) else {
                return Ok((Some(stored), None));
            };
            match self.replace_checked("read then write", &stored, cas, &new).await {
                Ok(written) => return Ok((Some(stored), Some(written))),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contended { uuid: uuid.to_owned(), tries: MAX_CONFLICTS })
    }
}
