//! Job documents in Redis, shared by every host that reaches the server. Owns the keys under
//! its prefix (default `geyser:`) in the URL's db and nothing else. A document is one string
//! key holding the JSON text serde_json wrote; every write that must change a document and
//! its index entries together is one Lua script (`lua/`), so a listing never sees an index
//! that disagrees with a document. Every call is bounded by the URL's timeouts.

mod scripts;
pub mod url;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script, ScriptInvocation};

use super::{Lease, ListFilter, Page, StaleKey, StaleRow, Store, StoreError, StoreResult, WorkerRecord};
use crate::model::{JobDocument, Status};
use crate::store::ca_file;
pub use url::{redact, RedisUrl};

/// How many index entries one listing script may read before it hands back a resume point:
/// a script blocks the server while it runs, so a sparse filter over a large index is read in
/// several short calls rather than one long one.
const SCAN_BUDGET: usize = 1000;
/// How many expired documents one purge script forgets before the next call.
const PURGE_BATCH: usize = 500;
/// Reconnection attempts the connection manager makes inside one call before reporting the
/// server unavailable (the next call tries again).
const RECONNECT_RETRIES: usize = 1;

/// Why a store URL could not be opened; `url` is always the redacted URL.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("bad redis store URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("redis store {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
}

/// The store: a connection manager (one multiplexed connection that reconnects by itself)
/// shared by every clone, replaced by a fresh one when a call gets no answer in time.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connection every call clones; `replace_connection` swaps in a fresh one.
    conn: RwLock<ConnectionManager>,
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// A replacement connection is being made (one at a time).
    replacing: AtomicBool,
    /// The runtime that opened the store: replacement connections live there, not on the
    /// runtime of whichever caller timed out (which may be a short-lived one).
    home: tokio::runtime::Handle,
    url: RedisUrl,
    /// The longest one call may take: a reconnection, then the answer.
    deadline: Duration,
}

/// A lane's own connection to the server, for reads (see `RedisStore::read`).
#[derive(Default)]
struct LaneConnection(std::sync::Mutex<Option<ConnectionManager>>);

impl LaneConnection {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<ConnectionManager>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self) -> Option<ConnectionManager> {
        self.slot().clone()
    }

    fn set(&self, conn: ConnectionManager) -> ConnectionManager {
        *self.slot() = Some(conn.clone());
        conn
    }

    fn forget(&self) {
        self.slot().take();
    }
}

/// Opens the store a `redis://` or `rediss://` URL names: reads the URL's CA file if it names
/// one, connects within the URL's connect timeout (an unreachable server is an error, never a
/// hang) and loads the scripts.
pub async fn open(url: &str) -> Result<RedisStore, OpenError> {
    let parsed = url::parse(url).map_err(|reason| OpenError::BadUrl { url: redact(url), reason })?;
    let bad_url =
        |e: redis::RedisError| OpenError::BadUrl { url: parsed.redacted.clone(), reason: parsed.scrub(&e.to_string()) };
    if parsed.server.starts_with("rediss:") {
        // Several TLS users may share the process; the first to install a provider wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    // Every request leaves at once (TCP_NODELAY, off in the redis crate by default): the one
    // multiplexed connection carries a job's start and outcome beside the heartbeat's and the
    // relay's writes, and under Nagle's algorithm a request sent while another is not yet
    // acknowledged waits for that acknowledgement (the server's delayed ACK).
    let info = redis::IntoConnectionInfo::into_connection_info(parsed.server.as_str())
        .map_err(bad_url)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = match parsed.root_cert.clone() {
        None => redis::Client::open(info).map_err(bad_url)?,
        Some(path) => {
            // Checked here, as every store checks its CA file; the redis crate parses the PEM
            // text again, with less telling errors.
            let pem = tokio::task::spawn_blocking(move || ca_file::read(&path).map(|(_, pem)| pem))
                .await
                .map_err(|e| OpenError::BadUrl { url: parsed.redacted.clone(), reason: format!("sslrootcert: {e}") })?
                .map_err(|reason| OpenError::BadUrl { url: parsed.redacted.clone(), reason })?;
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
            redis::Client::build_with_tls(info, certs).map_err(bad_url)?
        }
    };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(parsed.connect_timeout))
        .set_response_timeout(Some(parsed.response_timeout))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_max_delay(Duration::from_millis(200));
    let unreachable = |reason: String| OpenError::Unreachable { url: parsed.redacted.clone(), reason };
    let conn = match tokio::time::timeout(
        parsed.connect_timeout,
        ConnectionManager::new_with_config(client.clone(), config.clone()),
    )
    .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(unreachable(parsed.scrub(&e.to_string()))),
        Err(_) => return Err(unreachable(format!("no connection within {:?}", parsed.connect_timeout))),
    };
    let deadline = parsed.connect_timeout + parsed.response_timeout;
    let inner = Inner {
        conn: RwLock::new(conn),
        client,
        config,
        replacing: AtomicBool::new(false),
        home: tokio::runtime::Handle::current(),
        url: parsed,
        deadline,
    };
    let store = RedisStore { inner: Arc::new(inner) };
    for script in scripts::all() {
        let mut conn = store.conn();
        store
            .answer("load scripts", async move { script.load_async(&mut conn).await })
            .await
            .map_err(|e| OpenError::Unreachable { url: store.inner.url.redacted.clone(), reason: e.to_string() })?;
    }
    Ok(store)
}

/// A number as Redis and Lua read it back exactly (the shortest text that round-trips).
fn number(x: f64) -> String {
    format!("{x:?}")
}

/// When Redis should drop a finished document: `expires_at` in whole milliseconds, rounded up.
fn expiry_ms(expires_at: f64) -> i64 {
    (expires_at * 1000.0).ceil().max(1.0) as i64
}

/// Parses a stored document, naming its uuid when it is not one.
fn parse(uuid: &str, json: &[u8]) -> StoreResult<JobDocument> {
    JobDocument::from_json(json).map_err(|source| StoreError::Corrupt { uuid: uuid.to_owned(), source })
}

/// The error for a stored value a script could not read as a document: `Corrupt` with the
/// parser's reason, or `Inconsistent` when it is JSON the model accepts but the scripts cannot
/// use (no numeric `version` or no `status` string).
fn unreadable(uuid: &str, raw: &[u8]) -> StoreError {
    match parse(uuid, raw) {
        Err(e) => e,
        Ok(_) => StoreError::Inconsistent {
            uuid: uuid.to_owned(),
            reason: "its JSON has no numeric version or no status string, which every write checks; \
                     fix or delete the key"
                .into(),
        },
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes of one batch (`create_many`, `update_many`) in flight at once: the multiplexed
/// connection pipelines them, and the bound keeps a large batch's memory and burst small.
const BATCH_IN_FLIGHT: usize = 1000;

/// Which write a batch does for each document.
#[derive(Clone, Copy)]
enum BatchWrite {
    Create,
    Update,
}

impl RedisStore {
    /// `write` for every document, `BATCH_IN_FLIGHT` at a time as concurrent script calls
    /// (pipelined on the one connection, not one transaction); one result per document, in order.
    async fn each(&self, docs: &[JobDocument], write: BatchWrite) -> Vec<StoreResult<JobDocument>> {
        let mut out = Vec::with_capacity(docs.len());
        for chunk in docs.chunks(BATCH_IN_FLIGHT) {
            let mut running = tokio::task::JoinSet::new();
            for (i, doc) in chunk.iter().cloned().enumerate() {
                let store = self.clone();
                running.spawn(async move {
                    let written = match write {
                        BatchWrite::Create => store.create(&doc).await,
                        BatchWrite::Update => store.update(&doc).await,
                    };
                    (i, written)
                });
            }
            let mut results: Vec<Option<StoreResult<JobDocument>>> = (0..chunk.len()).map(|_| None).collect();
            while let Some(joined) = running.join_next().await {
                match joined {
                    Ok((i, written)) => results[i] = Some(written),
                    Err(e) => log::error!("redis store: a batch write task failed: {e}"),
                }
            }
            out.extend(results.into_iter().zip(chunk).map(|(written, doc)| {
                written.unwrap_or_else(|| Err(self.unavailable("batch write", &format!("job {}: task lost", doc.uuid))))
            }));
        }
        out
    }

    fn doc_key(&self, uuid: &str) -> String {
        format!("{}doc:{uuid}", self.inner.url.prefix)
    }

    fn workers_key(&self) -> String {
        format!("{}workers", self.inner.url.prefix)
    }

    /// The key prefix of this store (from the URL).
    pub fn prefix(&self) -> &str {
        &self.inner.url.prefix
    }

    /// The store's URL without its password.
    pub fn redacted_url(&self) -> &str {
        &self.inner.url.redacted
    }

    /// Names the store and the operation, with the password scrubbed from the driver's words.
    fn unavailable(&self, op: &str, reason: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "redis store {}: {op}: {}",
            self.inner.url.redacted,
            self.inner.url.scrub(reason)
        ))
    }

    /// The connection for one call (a cheap clone of the shared one).
    fn conn(&self) -> ConnectionManager {
        self.inner.conn.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Awaits one call to the server within the store's deadline. A call that timed out
    /// replaces the connection for the calls after it.
    async fn answer<T>(&self, op: &str, call: impl Future<Output = RedisResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(self.inner.deadline, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.is_timeout() {
                    self.replace_connection();
                }
                Err(self.unavailable(op, &e.to_string()))
            }
            Err(_) => {
                self.replace_connection();
                Err(self.unavailable(op, &format!("no answer within {:?}", self.inner.deadline)))
            }
        }
    }

    /// The value of `key` (GET). In a lane (`blocking.rs`: a thread waiting on its own
    /// runtime), on the lane's own connection, made on first use, so the I/O runs on the
    /// calling thread; elsewhere on the shared one. Only reads take a lane's connection: its
    /// driver notices a connection the server closed only when a call fails on it (nothing
    /// polls an idle lane), and such a read is simply asked again, reconnected, where a
    /// script could run twice.
    async fn read(&self, op: &str, key: String) -> StoreResult<Option<Vec<u8>>> {
        let Some(lane) = crate::blocking::lane_local(&self.inner, LaneConnection::default) else {
            let mut conn = self.conn();
            return self.answer(op, async move { redis::cmd("GET").arg(key).query_async(&mut conn).await }).await;
        };
        let mut conn = match lane.get() {
            Some(conn) => conn,
            None => lane.set(self.connect().await.map_err(|reason| self.unavailable(op, &reason))?),
        };
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let mut asked = 0;
        loop {
            asked += 1;
            match tokio::time::timeout(self.inner.deadline, get.query_async(&mut conn)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if asked == 1 && (e.is_connection_dropped() || e.is_io_error()) => continue,
                Ok(Err(e)) => {
                    if e.is_timeout() {
                        lane.forget();
                    }
                    return Err(self.unavailable(op, &e.to_string()));
                }
                Err(_) => {
                    lane.forget(); // silent: the next read connects afresh (see `replace_connection`)
                    return Err(self.unavailable(op, &format!("no answer within {:?}", self.inner.deadline)));
                }
            }
        }
    }

    /// A new connection manager on the current runtime, within the URL's connect timeout.
    async fn connect(&self) -> Result<ConnectionManager, String> {
        let fresh = ConnectionManager::new_with_config(self.inner.client.clone(), self.inner.config.clone());
        match tokio::time::timeout(self.inner.url.connect_timeout, fresh).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection within {:?}", self.inner.url.connect_timeout)),
        }
    }

    /// Makes a fresh connection in the background and hands it to the next calls. A link
    /// that went silent (cut, not closed) keeps its TCP connection open for many seconds
    /// after it comes back, and the manager reconnects only on errors the socket reports;
    /// a timeout is the only sign. A replacement that fails leaves the old connection.
    fn replace_connection(&self) {
        if self.inner.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        self.inner.home.spawn(async move {
            let fresh = ConnectionManager::new_with_config(inner.client.clone(), inner.config.clone());
            if let Ok(Ok(conn)) = tokio::time::timeout(inner.url.connect_timeout, fresh).await {
                *inner.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
            }
            inner.replacing.store(false, Ordering::Release);
        });
    }

    /// Runs a script (EVALSHA, loading it first only if the server lost it); its reply is a
    /// list of strings, the first saying how it went.
    async fn run(&self, op: &str, invocation: ScriptInvocation<'static>) -> StoreResult<Vec<Vec<u8>>> {
        let mut conn = self.conn();
        self.answer(op, async move { invocation.invoke_async(&mut conn).await }).await
    }

    /// A document script's invocation: the document key, then prefix, uuid, JSON (`json`,
    /// the document's `to_json`), status, updatedAt, jobType, expiresAt ('' for none) and
    /// Redis's expiry time in ms.
    fn write_of(&self, script: &'static Script, doc: &JobDocument, json: &[u8]) -> ScriptInvocation<'static> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.doc_key(&doc.uuid))
            .arg(&self.inner.url.prefix)
            .arg(&doc.uuid)
            .arg(json)
            .arg(doc.status.as_str())
            .arg(number(doc.updated_at))
            .arg(&doc.job_type)
            .arg(doc.expires_at.map(number).unwrap_or_default())
            .arg(doc.expires_at.map_or(0, expiry_ms));
        invocation
    }

    /// One page of `list` from one script call: `(uuid, json)` rows and where to resume if the
    /// script's read budget ran out first.
    async fn list_once(
        &self,
        index: &str,
        filter: &ListFilter,
        after: &str,
        limit: usize,
        newest_first: bool,
    ) -> StoreResult<(Vec<(String, Vec<u8>)>, Option<String>)> {
        let mut invocation = scripts::LIST.prepare_invoke();
        invocation
            .arg(&self.inner.url.prefix)
            .arg(index)
            .arg(after)
            .arg(limit)
            .arg(filter.status.map_or("", Status::as_str))
            .arg(filter.updated_before.map(number).unwrap_or_default())
            .arg(SCAN_BUDGET)
            .arg(if newest_first { "desc" } else { "" })
            .arg(filter.queue.as_deref().unwrap_or_default());
        let reply = self.run("list", invocation).await?;
        let mut fields = reply.into_iter().skip(1);
        let resume = fields.next().filter(|r| !r.is_empty()).map(|r| text(&r));
        let mut rows = Vec::new();
        while let (Some(uuid), Some(json)) = (fields.next(), fields.next()) {
            rows.push((text(&uuid), json));
        }
        Ok((rows, resume))
    }

    /// One page of `list_stale` from one script call, as `list_once`.
    async fn stale_once(
        &self,
        status: Status,
        before: f64,
        after: Option<&StaleKey>,
        limit: usize,
    ) -> StoreResult<(Vec<StaleRow>, Option<StaleKey>)> {
        let mut invocation = scripts::LIST_STALE.prepare_invoke();
        invocation
            .arg(&self.inner.url.prefix)
            .arg(status.as_str())
            .arg(number(before))
            .arg(after.map(|k| number(k.updated_at)).unwrap_or_default())
            .arg(after.map(|k| k.uuid.as_str()).unwrap_or_default())
            .arg(limit)
            .arg(SCAN_BUDGET);
        let reply = self.run("list stale", invocation).await?;
        let time = |bytes: &[u8]| {
            let t = text(bytes);
            t.parse::<f64>().map_err(|e| self.unavailable("list stale", &format!("the index holds time {t:?}: {e}")))
        };
        let mut fields = reply.into_iter().skip(1);
        let resume = match (fields.next(), fields.next()) {
            (Some(t), Some(uuid)) if !uuid.is_empty() => Some(StaleKey { updated_at: time(&t)?, uuid: text(&uuid) }),
            _ => None,
        };
        let mut rows = Vec::new();
        while let (Some(uuid), Some(t), Some(json)) = (fields.next(), fields.next(), fields.next()) {
            let key = StaleKey { updated_at: time(&t)?, uuid: text(&uuid) };
            rows.push(StaleRow { doc: parse(&key.uuid, &json), key });
        }
        Ok((rows, resume))
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn create(&self, doc: &JobDocument) -> StoreResult<JobDocument> {
        let doc = JobDocument { version: 1, ..doc.clone() };
        let reply = self.run("create", self.write_of(&scripts::CREATE, &doc, &doc.to_json())).await?;
        match reply.first().map(Vec::as_slice) {
            Some(b"ok") => Ok(doc),
            Some(b"exists") => Err(StoreError::AlreadyExists(doc.uuid)),
            other => Err(self.unavailable("create", &format!("unexpected script reply {other:?}"))),
        }
    }

    /// Pipelined creates (see `each`); each is atomic, the batch is not one transaction.
    async fn create_many(&self, docs: &[JobDocument]) -> StoreResult<Vec<StoreResult<JobDocument>>> {
        Ok(self.each(docs, BatchWrite::Create).await)
    }

    /// Pipelined compare-and-swaps (see `each`).
    async fn update_many(&self, docs: &[JobDocument]) -> StoreResult<Vec<StoreResult<JobDocument>>> {
        Ok(self.each(docs, BatchWrite::Update).await)
    }

    async fn get(&self, uuid: &str) -> StoreResult<Option<JobDocument>> {
        Ok(self.get_with_json(uuid).await?.map(|(doc, _)| doc))
    }

    /// The stored text is what `JobDocument::to_json` wrote (every write here sends it; no
    /// script rewrites it).
    async fn get_with_json(&self, uuid: &str) -> StoreResult<Option<(JobDocument, Vec<u8>)>> {
        let Some(json) = self.read("get", self.doc_key(uuid)).await? else { return Ok(None) };
        Ok(Some((parse(uuid, &json)?, json)))
    }

    async fn update(&self, doc: &JobDocument) -> StoreResult<JobDocument> {
        Ok(self.update_with_json(doc).await?.0)
    }

    async fn update_with_json(&self, doc: &JobDocument) -> StoreResult<(JobDocument, Vec<u8>)> {
        let expected = doc.version;
        let new = JobDocument { version: expected.saturating_add(1), ..doc.clone() };
        let json = new.to_json();
        let mut invocation = self.write_of(&scripts::UPDATE, &new, &json);
        invocation.arg(expected);
        let reply = self.run("update", invocation).await?;
        let uuid = new.uuid.clone();
        match (reply.first().map(Vec::as_slice), reply.get(1).map(Vec::as_slice)) {
            (Some(b"ok"), _) => Ok((new, json)),
            (Some(b"notfound"), _) => Err(StoreError::NotFound(uuid)),
            (Some(b"conflict"), _) => Err(StoreError::Conflict { uuid, expected }),
            (Some(b"fixed"), Some(b"jobType")) => Err(StoreError::FixedField { uuid, field: "jobType" }),
            (Some(b"fixed"), Some(b"expiresAt")) => Err(StoreError::FixedField { uuid, field: "expiresAt" }),
            (Some(b"corrupt"), Some(raw)) => Err(unreadable(&uuid, raw)),
            (other, _) => Err(self.unavailable("update", &format!("unexpected script reply {other:?}"))),
        }
    }

    async fn delete(&self, uuid: &str) -> StoreResult<bool> {
        let mut invocation = scripts::DELETE.prepare_invoke();
        invocation.key(self.doc_key(uuid)).arg(&self.inner.url.prefix).arg(uuid).arg("");
        let reply = self.run("delete", invocation).await?;
        match reply.first().map(Vec::as_slice) {
            Some(b"ok") => Ok(true),
            Some(b"notfound") => Ok(false),
            other => Err(self.unavailable("delete", &format!("unexpected script reply {other:?}"))),
        }
    }

    async fn delete_at_version(&self, uuid: &str, version: u64) -> StoreResult<()> {
        let mut invocation = scripts::DELETE.prepare_invoke();
        invocation.key(self.doc_key(uuid)).arg(&self.inner.url.prefix).arg(uuid).arg(version);
        let reply = self.run("delete", invocation).await?;
        match (reply.first().map(Vec::as_slice), reply.get(1)) {
            (Some(b"ok"), _) => Ok(()),
            (Some(b"notfound"), _) => Err(StoreError::NotFound(uuid.to_owned())),
            (Some(b"conflict"), _) => Err(StoreError::Conflict { uuid: uuid.to_owned(), expected: version }),
            (Some(b"corrupt"), Some(raw)) => Err(unreadable(uuid, raw)),
            (other, _) => Err(self.unavailable("delete", &format!("unexpected script reply {other:?}"))),
        }
    }

    /// Walks the most selective index the filter names (type, else status, else all) in uuid
    /// order, or backwards; the other conditions are checked against the indexes inside the
    /// script, the queue against the document's JSON.
    async fn list(&self, filter: &ListFilter, page: &Page) -> StoreResult<Vec<JobDocument>> {
        let index = match (&filter.job_type, filter.status) {
            (Some(job_type), _) => format!("type:{job_type}"),
            (None, Some(status)) => format!("status:{}", status.as_str()),
            (None, None) => "all".to_owned(),
        };
        let mut docs = Vec::new();
        let mut after = page.after.clone().unwrap_or_default();
        while docs.len() < page.limit {
            let (rows, resume) =
                self.list_once(&index, filter, &after, page.limit - docs.len(), page.newest_first).await?;
            for (uuid, json) in rows {
                docs.push(parse(&uuid, &json)?);
            }
            match resume {
                Some(resume) => after = resume,
                None => break,
            }
        }
        Ok(docs)
    }

    async fn list_stale(
        &self,
        status: Status,
        before: f64,
        after: Option<&StaleKey>,
        limit: usize,
    ) -> StoreResult<Vec<StaleRow>> {
        let mut rows = Vec::new();
        let mut after = after.cloned();
        while rows.len() < limit {
            let (page, resume) = self.stale_once(status, before, after.as_ref(), limit - rows.len()).await?;
            rows.extend(page);
            match resume {
                Some(key) => after = Some(key),
                None => break,
            }
        }
        Ok(rows)
    }

    async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: f64, now: f64) -> StoreResult<Lease> {
        let mut invocation = scripts::LEASE_ACQUIRE.prepare_invoke();
        let key = format!("{}lease:{name}", self.inner.url.prefix);
        invocation.key(key).arg(holder).arg(number(now + ttl)).arg(number(now));
        let reply = self.run("acquire lease", invocation).await?;
        let [holder, expires_at, version] = <[Vec<u8>; 3]>::try_from(reply)
            .map_err(|r| self.unavailable("acquire lease", &format!("unexpected script reply {r:?}")))?;
        let bad = |what: &str| self.unavailable("acquire lease", &format!("the lease hash holds a bad {what}"));
        Ok(Lease {
            name: name.to_owned(),
            holder: text(&holder),
            expires_at: text(&expires_at).parse().map_err(|_| bad("expires_at"))?,
            version: text(&version).parse().map_err(|_| bad("version"))?,
        })
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        let mut invocation = scripts::LEASE_RELEASE.prepare_invoke();
        invocation.key(format!("{}lease:{name}", self.inner.url.prefix)).arg(holder);
        let mut conn = self.conn();
        let released: i64 =
            self.answer("release lease", async move { invocation.invoke_async(&mut conn).await }).await?;
        Ok(released == 1)
    }

    /// Registrations live in one hash, `P..workers`, id -> the record's JSON: a worker's write
    /// is one HSET; a listing drops the expired fields it finds.
    async fn register_worker(&self, record: &WorkerRecord) -> StoreResult<()> {
        let json = record.to_json()?;
        let (key, id) = (self.workers_key(), record.id.clone());
        let mut conn = self.conn();
        self.answer("register worker", async move {
            redis::cmd("HSET").arg(key).arg(id).arg(json).query_async::<i64>(&mut conn).await
        })
        .await?;
        Ok(())
    }

    async fn list_workers(&self, now: f64) -> StoreResult<Vec<WorkerRecord>> {
        let key = self.workers_key();
        let mut conn = self.conn();
        let all: Vec<(String, Vec<u8>)> = self
            .answer("list workers", async move { redis::cmd("HGETALL").arg(key).query_async(&mut conn).await })
            .await?;
        let mut live = Vec::new();
        let mut expired = Vec::new();
        for (id, json) in all {
            let record = WorkerRecord::from_json(&json, &format!("{id} in {}", self.inner.url.redacted))?;
            if record.expires_at > now {
                live.push(record);
            } else {
                expired.push(id);
            }
        }
        if !expired.is_empty() {
            let (key, mut conn) = (self.workers_key(), self.conn());
            self.answer("list workers: drop expired", async move {
                redis::cmd("HDEL").arg(key).arg(expired).query_async::<i64>(&mut conn).await
            })
            .await?;
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }

    async fn remove_worker(&self, id: &str) -> StoreResult<bool> {
        let (key, id) = (self.workers_key(), id.to_owned());
        let mut conn = self.conn();
        let n: i64 = self
            .answer("remove worker", async move { redis::cmd("HDEL").arg(key).arg(id).query_async(&mut conn).await })
            .await?;
        Ok(n > 0)
    }

    async fn import(&self, doc: &JobDocument, replacing: Option<u64>) -> StoreResult<JobDocument> {
        let mut invocation = self.write_of(&scripts::IMPORT, doc, &doc.to_json());
        invocation.arg(replacing.map(|v| v.to_string()).unwrap_or_default());
        let reply = self.run("import", invocation).await?;
        let uuid = doc.uuid.clone();
        match (reply.first().map(Vec::as_slice), reply.get(1)) {
            (Some(b"ok"), _) => Ok(doc.clone()),
            (Some(b"exists"), _) => Err(StoreError::AlreadyExists(uuid)),
            (Some(b"notfound"), _) => Err(StoreError::NotFound(uuid)),
            (Some(b"conflict"), _) => Err(StoreError::Conflict { uuid, expected: replacing.unwrap_or_default() }),
            (Some(b"corrupt"), Some(raw)) => Err(unreadable(&uuid, raw)),
            (other, _) => Err(self.unavailable("import", &format!("unexpected script reply {other:?}"))),
        }
    }

    /// Forgets expired finished documents in batches, each batch one script call. Counts the
    /// documents Redis had already dropped at their `expiresAt` too: their index entries go now.
    async fn purge_expired(&self, now: f64) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let mut invocation = scripts::PURGE.prepare_invoke();
            invocation.arg(&self.inner.url.prefix).arg(number(now)).arg(PURGE_BATCH);
            let reply = self.run("purge expired", invocation).await?;
            let purged: u64 = reply.get(1).and_then(|n| text(n).parse().ok()).ok_or_else(|| {
                self.unavailable("purge expired", &format!("unexpected script reply {:?}", reply.first()))
            })?;
            total += purged;
            if purged < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}
