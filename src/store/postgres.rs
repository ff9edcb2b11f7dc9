//! Job documents in PostgreSQL, shared by every machine that reaches the server:
//! `postgresql://user[:password]@host[:port]/database[?schema=NAME&sslmode=MODE]` (also `postgres://`).
//! Owns the tables `geyser_documents`, `geyser_leases`, `geyser_workers` and `geyser_meta` of one schema and
//! touches nothing else in the database; knows nothing about queues.
//!
//! - **Schema.** `geyser` unless the URL says `?schema=NAME`: Geyser's tables stay out of the
//!   way of an application's own tables in `public` (where PostgreSQL 15 no longer lets every
//!   user create tables anyway), two applications share a database with one schema each, and
//!   `DROP SCHEMA name CASCADE` removes all of one. The tables keep the names they have in the
//!   SQLite store, so a schema may even be `public`. The schema is created on first use and
//!   versioned (see `schema.rs`): a newer Geyser migrates it, an older one refuses it.
//! - **The document** is one `jsonb` value, beside the columns that `list`, the sweep and
//!   purge filter on (status, job_type, updated_at, expires_at) and the version the
//!   compare-and-swap checks. jsonb keeps a number as an exact decimal, so the shortest
//!   round-trip digits serde_json writes for an `f64` come back as written and parse to the
//!   same bits; jsonb prints numbers without an exponent, so floats of 1e16 and above are
//!   written out in full with a `.0` (`json.rs`) to come back as floats, not integers.
//!   tests/postgres_store.rs checks thousands of random bit patterns. Two things jsonb does not
//!   keep: the sign of -0.0 (it reads back as 0.0) and key order (no reader of an object of
//!   named fields depends on it). jsonb cannot hold the character U+0000 in a string: such a
//!   write is refused with an error that says so, and nothing is written.
//! - **One round trip per operation**, on a pooled connection (deadpool) with each statement
//!   prepared once per connection. A compare-and-swap that writes nothing returns, in the
//!   same statement, the row it lost to, so `update` explains a refusal and `read_then_write`
//!   retries without reading again. `read_then_write` itself is a read, then that swap: the
//!   successor is computed here, between the two, and holding a row lock across that (or
//!   `SELECT ... FOR UPDATE` in a transaction: three round trips) would cost more than the
//!   rare conflict it saves.
//! - **Errors.** A statement the server refuses is `StoreError::Backend` with the server's
//!   message; a connection that cannot be had or breaks is `Unavailable`; both name the URL
//!   (password hidden) and the operation. A stored document that does not parse is `Corrupt`
//!   naming its uuid; a row whose columns contradict its JSON is `Inconsistent`.
//!   Connecting gives up after `connect_timeout` (5 s unless the URL says otherwise).
//! - **TLS** as libpq's `sslmode` and `sslrootcert` say (`prefer` by default), with rustls
//!   (`tls.rs`); a connection that fails for a TLS reason says which one.

mod json;
mod schema;
mod tls;
mod url;

use std::collections::HashSet;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    Lease, ListFilter, NextDocument, Page, StaleKey, StaleRow, Store, StoreError, StoreResult, WorkerRecord,
    MAX_CONFLICTS,
};
use crate::model::{JobDocument, Status};
use json::{document_json, JsonText};

pub use schema::{LOCK_CLASS as SCHEMA_LOCK_CLASS, SCHEMA_VERSION};
pub use url::{redact, DEFAULT_SCHEMA};

/// How long an operation waits for a free pooled connection before it reports the store unavailable.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// Why the store could not be opened; `url` is the URL with its password hidden.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("bad PostgreSQL store URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The server did not answer, or the connection failed: it may answer later.
    #[error("PostgreSQL store {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The schema could not be created or migrated, or is newer than this build.
    #[error("cannot open the PostgreSQL store {url}: {reason}")]
    Schema { url: String, reason: String },
}

/// The SQL of every operation, written once for the store's schema.
struct Sql {
    get: String,
    create: String,
    /// `create` for many documents in one statement (parallel arrays); returns the uuids written.
    create_many: String,
    update: String,
    /// The swap for many documents in one statement; returns the uuids written (the others
    /// are tried again one by one, which says why they were not).
    update_many: String,
    delete: String,
    delete_at_version: String,
    purge: String,
    take_lease: String,
    read_lease: String,
    release_lease: String,
    /// Writes a worker's registration and drops expired ones, in one statement.
    put_worker: String,
    live_workers: String,
    remove_worker: String,
    /// `Store::import`'s replace: the whole row, if the stored version is still the one named.
    import_replace: String,
    /// One statement per status, in `Status::ALL` order (see `stale_sql`).
    stale: Vec<String>,
    /// One statement per combination of `list` conditions (see `list_sql`).
    list: Vec<String>,
}

/// `list` conditions, as bits of an index into `Sql::list`.
const BY_STATUS: usize = 1;
const BY_TYPE: usize = 2;
const BY_UPDATED: usize = 4;
const AFTER: usize = 8;
const BY_QUEUE: usize = 16;
/// Not a condition: descending uuid order (`Page::newest_first`).
const NEWEST_FIRST: usize = 32;

fn list_sql(docs: &str, conditions: usize) -> String {
    let newest_first = conditions & NEWEST_FIRST != 0;
    let after = if newest_first { "uuid < " } else { "uuid > " };
    let mut clauses = Vec::new();
    for (bit, clause) in [
        (BY_STATUS, "status = "),
        (BY_TYPE, "job_type = "),
        (BY_UPDATED, "updated_at < "),
        (BY_QUEUE, "doc->'queueKwargs'->>'queue' = "),
        (AFTER, after),
    ] {
        if conditions & bit != 0 {
            clauses.push(format!("{clause}${}", clauses.len() + 1));
        }
    }
    let limit = clauses.len() + 1;
    let where_clause = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
    let order = if newest_first { "DESC" } else { "" };
    format!("SELECT uuid, doc FROM {docs} {where_clause} ORDER BY uuid {order} LIMIT ${limit}")
}

/// Stale documents of one status, oldest write first. The status is written into the SQL (one
/// of five fixed words) so that the planner sees that the partial index of queued documents
/// applies to every execution of the prepared statement; other statuses use the status index
/// and a sort (running documents are few: at most one per runner thread).
fn stale_sql(docs: &str, status: Status) -> String {
    format!(
        "SELECT updated_at, uuid, doc FROM {docs}
         WHERE status = '{}' AND updated_at < $1 AND (updated_at, uuid) > ($2, $3)
         ORDER BY updated_at, uuid LIMIT $4",
        status.as_str()
    )
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = schema::quoted(schema);
        let docs = format!("{s}.geyser_documents");
        let leases = format!("{s}.geyser_leases");
        let workers = format!("{s}.geyser_workers");
        Self {
            get: format!("SELECT doc FROM {docs} WHERE uuid = $1"),
            create: format!(
                "INSERT INTO {docs} (uuid, version, status, job_type, updated_at, expires_at, doc)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (uuid) DO NOTHING"
            ),
            create_many: format!(
                "INSERT INTO {docs} (uuid, version, status, job_type, updated_at, expires_at, doc)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[],
                                      $6::float8[], $7::jsonb[])
                 ON CONFLICT (uuid) DO NOTHING RETURNING uuid"
            ),
            update_many: format!(
                "UPDATE {docs} AS d SET version = n.version, status = n.status, updated_at = n.updated_at, doc = n.doc
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::float8[], $5::jsonb[], $6::bigint[],
                             $7::text[], $8::float8[])
                      AS n(uuid, version, status, updated_at, doc, expected, job_type, expires_at)
                 WHERE d.uuid = n.uuid AND d.version = n.expected AND d.job_type = n.job_type
                   AND d.expires_at IS NOT DISTINCT FROM n.expires_at
                 RETURNING d.uuid"
            ),
            // The swap, and when it writes nothing, the row as it stands (the outer SELECT
            // reads the statement's snapshot, the UPDATE the latest version: a row that moved
            // in between is reported as a conflict with an older version, and retried).
            update: format!(
                "WITH written AS (
                     UPDATE {docs} SET version = $2, status = $3, updated_at = $4, doc = $5
                     WHERE uuid = $1 AND version = $6 AND job_type = $7 AND expires_at IS NOT DISTINCT FROM $8
                     RETURNING 1)
                 SELECT true, NULL::bigint, NULL::text, NULL::float8, NULL::jsonb FROM written
                 UNION ALL
                 SELECT false, version, job_type, expires_at, doc FROM {docs}
                 WHERE uuid = $1 AND NOT EXISTS (SELECT 1 FROM written)"
            ),
            delete: format!("DELETE FROM {docs} WHERE uuid = $1"),
            delete_at_version: format!(
                "WITH gone AS (DELETE FROM {docs} WHERE uuid = $1 AND version = $2 RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM gone), EXISTS (SELECT 1 FROM {docs} WHERE uuid = $1)"
            ),
            purge: format!(
                "DELETE FROM {docs} WHERE expires_at <= $1 AND status IN ('succeeded', 'failed', 'cancelled')"
            ),
            take_lease: format!(
                "WITH taken AS (
                     INSERT INTO {leases} AS l (name, holder, expires_at, version) VALUES ($1, $2, $3, 1)
                     ON CONFLICT (name) DO UPDATE
                     SET holder = excluded.holder, expires_at = excluded.expires_at, version = l.version + 1
                     WHERE l.holder = excluded.holder OR l.expires_at <= $4
                     RETURNING holder, expires_at, version)
                 SELECT holder, expires_at, version FROM taken
                 UNION ALL
                 SELECT holder, expires_at, version FROM {leases}
                 WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM taken)"
            ),
            read_lease: format!("SELECT holder, expires_at, version FROM {leases} WHERE name = $1"),
            release_lease: format!("UPDATE {leases} SET expires_at = 0 WHERE name = $1 AND holder = $2"),
            put_worker: format!(
                "WITH dropped AS (DELETE FROM {workers} WHERE expires_at <= $4 AND id <> $1)
                 INSERT INTO {workers} (id, expires_at, record) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, record = excluded.record"
            ),
            live_workers: format!("SELECT record FROM {workers} WHERE expires_at > $1 ORDER BY id"),
            remove_worker: format!("DELETE FROM {workers} WHERE id = $1"),
            import_replace: format!(
                "WITH written AS (
                     UPDATE {docs} SET version = $2, status = $3, job_type = $4, updated_at = $5, expires_at = $6,
                         doc = $7
                     WHERE uuid = $1 AND version = $8
                     RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM written), EXISTS (SELECT 1 FROM {docs} WHERE uuid = $1)"
            ),
            stale: Status::ALL.iter().map(|&status| stale_sql(&docs, status)).collect(),
            list: (0..64).map(|conditions| list_sql(&docs, conditions)).collect(),
        }
    }
}

/// Whether a driver error is the connection failing (I/O, closed, the server shutting down or
/// out of connections: SQLSTATE classes 08 and 57P, 53300) rather than a statement refused.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    e.code().is_none_or(|code| {
        let code = code.code();
        code.starts_with("08") || code.starts_with("57P") || code == SqlState::TOO_MANY_CONNECTIONS.code()
    })
}

/// An error and its causes on one line: the driver's own message leaves out the server's. A
/// TLS failure starts with what it means (untrusted certificate, name mismatch, no TLS).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        cause = c.source();
    }
    if let Some(meaning) = tls::explain(e) {
        text = format!("{meaning} ({text})");
    }
    text.replace('\n', "; ")
}

/// `text` with every occurrence of the password replaced by `***`: no message the driver or
/// the server writes is known to quote it, and none ever will through this store.
fn scrub(text: String, password: &Option<String>) -> String {
    match password {
        Some(p) if !p.is_empty() && text.contains(p.as_str()) => text.replace(p.as_str(), "***"),
        _ => text,
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Parses a stored document, naming its uuid when it is not one.
fn parse(uuid: &str, json: JsonText<'_>) -> StoreResult<JobDocument> {
    JobDocument::from_json(json.0).map_err(|source| StoreError::Corrupt { uuid: uuid.to_owned(), source })
}

/// The stored row a compare-and-swap lost to: its columns and its JSON.
struct StoredRow<'a> {
    version: i64,
    job_type: String,
    expires_at: Option<f64>,
    json: JsonText<'a>,
}

/// What a compare-and-swap did.
enum Swap {
    Written,
    Missing,
    /// The stored document moved on (or a concurrent write hid it): here it is as read.
    Moved(Box<JobDocument>),
}

/// Why a compare-and-swap of `new` wrote nothing, given the row as it stands: the row's
/// columns disagree with its own JSON (a hand edit or a bug: no write can ever succeed, so
/// it is reported, not retried), `new` changes a field fixed at creation, or the document
/// moved on (returned, to retry against).
fn refusal(new: &JobDocument, expected: u64, row: StoredRow<'_>) -> StoreResult<JobDocument> {
    let uuid = &new.uuid;
    let stored = parse(uuid, row.json)?;
    if let Some(reason) = stored.disagreement_with_columns(row.version, &row.job_type, row.expires_at) {
        return Err(StoreError::Inconsistent { uuid: uuid.clone(), reason });
    }
    match stored.changed_fixed_field(new) {
        Some(field) if stored.version == expected => Err(StoreError::FixedField { uuid: uuid.clone(), field }),
        _ => Ok(stored),
    }
}

/// What a pool of the store's connections is made from.
struct PoolSpec {
    pg: tokio_postgres::Config,
    tls: Option<rustls::ClientConfig>,
    connect_timeout: Duration,
}

impl PoolSpec {
    /// A pool of up to `size` connections, each made when first needed, on the runtime that
    /// asks for it.
    fn build(&self, size: usize) -> Result<Pool, deadpool_postgres::BuildError> {
        let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match &self.tls {
            Some(config) => Manager::from_config(self.pg.clone(), MakeRustlsConnect::new(config.clone()), recycling),
            None => Manager::from_config(self.pg.clone(), NoTls, recycling),
        };
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(self.connect_timeout))
            .recycle_timeout(Some(self.connect_timeout))
            .wait_timeout(Some(POOL_WAIT))
            .build()
    }
}

/// Job documents in one schema of a PostgreSQL database, through a pool of connections.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// How to make a pool of this store's connections: one more for each lane that calls it.
    pools: PoolSpec,
    /// "postgresql store URL" (password hidden), the start of every error message.
    label: String,
    /// The URL's password, scrubbed from any message the driver or the server writes.
    password: Option<String>,
    sql: Sql,
    /// The runtime that opened the store, where every connection is made (see `connection`).
    home: tokio::runtime::Handle,
}

impl PostgresStore {
    /// Connects (within the URL's connect timeout), creates or migrates the schema, and keeps
    /// a pool of connections for the store's operations.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        let parsed = url::parse(url).map_err(|reason| OpenError::BadUrl { url: redact(url), reason })?;
        let password = parsed.pg.get_password().map(|p| String::from_utf8_lossy(p).into_owned());
        let unreachable =
            |reason: String| OpenError::Unreachable { url: parsed.redacted.clone(), reason: scrub(reason, &password) };
        let schema_failed =
            |reason: String| OpenError::Schema { url: parsed.redacted.clone(), reason: scrub(reason, &password) };
        let tls = tls::client_config(&parsed.tls)
            .map_err(|reason| OpenError::BadUrl { url: parsed.redacted.clone(), reason })?;
        let pools = PoolSpec { pg: parsed.pg.clone(), tls, connect_timeout: parsed.connect_timeout };
        let pool =
            pools.build(parsed.pool_size).map_err(|e| schema_failed(format!("build the connection pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| unreachable(format!("connect: {}", describe(&e))))?;
        if let Err(e) = schema::ensure(&mut client, &parsed.schema).await {
            // A connection lost during the check (a server restarting) may work next time;
            // a refusal (a newer schema, no rights) will not.
            return Err(if e.connection_lost { unreachable(e.reason) } else { schema_failed(e.reason) });
        }
        drop(client);
        let label = format!("postgresql store {}", parsed.redacted);
        let home = tokio::runtime::Handle::current();
        Ok(Self { inner: Arc::new(Inner { pool, pools, label, password, sql: Sql::new(&parsed.schema), home }) })
    }

    /// The store unavailable for `op`, naming the store and the cause.
    fn failed(&self, op: &str, e: impl Display) -> StoreError {
        StoreError::Unavailable(format!("{}: {op}: {}", self.inner.label, scrub(e.to_string(), &self.inner.password)))
    }

    /// A driver error of `op`: a statement the server refused is `Backend`, with the server's
    /// message and what jsonb cannot hold spelled out; a connection that failed, closed or was
    /// shut down by the server (SQLSTATE class 08, 57P, or too many connections) is `Unavailable`.
    fn db_failed(&self, op: &str, e: tokio_postgres::Error) -> StoreError {
        let text = describe(&e);
        match e.code() {
            Some(code) if !connection_lost(&e) => {
                let text = match *code == SqlState::UNTRANSLATABLE_CHARACTER {
                    true => format!("{text} (PostgreSQL jsonb cannot hold the character U+0000 in a string)"),
                    false => text,
                };
                let text = scrub(text, &self.inner.password);
                StoreError::Backend { context: format!("{}: {op}", self.inner.label), source: text.into() }
            }
            _ => self.failed(op, text),
        }
    }

    /// A pooled connection. A connection's I/O runs as a task on the runtime that made it. A
    /// call in a lane (`blocking.rs`: a thread waiting on its own current-thread runtime)
    /// takes the lane's own connection, made on that runtime, so its I/O runs on the waiting
    /// thread. Any other call from a current-thread runtime (a worker's, driven only while its
    /// thread waits on it) takes its connection through the store's home runtime, which always
    /// runs: a connection made on the worker's runtime would stall a call from elsewhere (the
    /// worker's heartbeat and registration) handed it while that thread runs a job, or waits
    /// for that call.
    async fn connection(&self, op: &str) -> StoreResult<deadpool_postgres::Object> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let lane_pool =
            crate::blocking::lane_local(&self.inner, || self.inner.pools.build(1).ok()).and_then(|p| (*p).clone());
        let got = match (lane_pool, Handle::current().runtime_flavor()) {
            (Some(pool), _) => {
                crate::blocking::catch_up_on_idle_sockets().await;
                pool.get().await
            }
            (None, RuntimeFlavor::CurrentThread) => {
                let pool = self.inner.pool.clone();
                let made = self.inner.home.spawn(async move { pool.get().await }).await;
                made.map_err(|e| self.failed(op, e))?
            }
            (None, _) => self.inner.pool.get().await,
        };
        got.map_err(|e| self.failed(op, describe(&e)))
    }

    /// Runs one prepared statement on a pooled connection: one round trip once the
    /// connection has prepared it.
    async fn query(&self, op: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let client = self.connection(op).await?;
        let statement = client.prepare_cached(sql).await.map_err(|e| self.db_failed(op, e))?;
        client.query(&statement, params).await.map_err(|e| self.db_failed(op, e))
    }

    async fn execute(&self, op: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let client = self.connection(op).await?;
        let statement = client.prepare_cached(sql).await.map_err(|e| self.db_failed(op, e))?;
        client.execute(&statement, params).await.map_err(|e| self.db_failed(op, e))
    }

    fn column<'r, T: FromSql<'r>>(&self, op: &str, row: &'r Row, index: usize) -> StoreResult<T> {
        row.try_get(index).map_err(|e| self.failed(op, describe(&e)))
    }

    /// Writes `new` if the stored version is still `expected` and `new` keeps the fixed fields.
    async fn swap(&self, new: &JobDocument, expected: u64) -> StoreResult<Swap> {
        const OP: &str = "update";
        let json = document_json(new).map_err(|e| self.failed(OP, e))?;
        let rows = self
            .query(
                OP,
                &self.inner.sql.update,
                &[
                    &new.uuid,
                    &to_i64(new.version),
                    &new.status.as_str(),
                    &new.updated_at,
                    &JsonText(&json),
                    &to_i64(expected),
                    &new.job_type,
                    &new.expires_at,
                ],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(Swap::Missing) };
        if self.column::<bool>(OP, row, 0)? {
            return Ok(Swap::Written);
        }
        let stored = StoredRow {
            version: self.column(OP, row, 1)?,
            job_type: self.column(OP, row, 2)?,
            expires_at: self.column(OP, row, 3)?,
            json: self.column(OP, row, 4)?,
        };
        refusal(new, expected, stored).map(|doc| Swap::Moved(Box::new(doc)))
    }

    fn lease(&self, name: &str, row: &Row) -> StoreResult<Lease> {
        const OP: &str = "acquire lease";
        let version: i64 = self.column(OP, row, 2)?;
        Ok(Lease {
            name: name.to_owned(),
            holder: self.column(OP, row, 0)?,
            expires_at: self.column(OP, row, 1)?,
            version: version.max(0) as u64,
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create(&self, doc: &JobDocument) -> StoreResult<JobDocument> {
        let doc = JobDocument { version: 1, ..doc.clone() };
        let json = document_json(&doc).map_err(|e| self.failed("create", e))?;
        let params: [&(dyn ToSql + Sync); 7] = [
            &doc.uuid,
            &1_i64,
            &doc.status.as_str(),
            &doc.job_type,
            &doc.updated_at,
            &doc.expires_at,
            &JsonText(&json),
        ];
        match self.execute("create", &self.inner.sql.create, &params).await? {
            0 => Err(StoreError::AlreadyExists(doc.uuid)),
            _ => Ok(doc),
        }
    }

    /// One statement (a multi-row insert), so one round trip and one transaction.
    async fn create_many(&self, docs: &[JobDocument]) -> StoreResult<Vec<StoreResult<JobDocument>>> {
        const OP: &str = "create_many";
        let docs: Vec<JobDocument> = docs.iter().map(|d| JobDocument { version: 1, ..d.clone() }).collect();
        let jsons = docs.iter().map(document_json).collect::<Result<Vec<_>, _>>().map_err(|e| self.failed(OP, e))?;
        let uuids: Vec<&str> = docs.iter().map(|d| d.uuid.as_str()).collect();
        let versions = vec![1_i64; docs.len()];
        let statuses: Vec<&str> = docs.iter().map(|d| d.status.as_str()).collect();
        let types: Vec<&str> = docs.iter().map(|d| d.job_type.as_str()).collect();
        let updated: Vec<f64> = docs.iter().map(|d| d.updated_at).collect();
        let expires: Vec<Option<f64>> = docs.iter().map(|d| d.expires_at).collect();
        let texts: Vec<JsonText<'_>> = jsons.iter().map(|j| JsonText(j)).collect();
        let params: [&(dyn ToSql + Sync); 7] = [&uuids, &versions, &statuses, &types, &updated, &expires, &texts];
        let rows = self.query(OP, &self.inner.sql.create_many, &params).await?;
        let written = rows.iter().map(|row| self.column::<String>(OP, row, 0)).collect::<StoreResult<HashSet<_>>>()?;
        Ok(docs
            .into_iter()
            .map(|doc| match written.contains(&doc.uuid) {
                true => Ok(doc),
                false => Err(StoreError::AlreadyExists(doc.uuid)),
            })
            .collect())
    }

    /// One statement for every swap that succeeds; a document it did not write is tried
    /// again alone, whose error says why (conflict, gone, fixed field, inconsistent).
    async fn update_many(&self, docs: &[JobDocument]) -> StoreResult<Vec<StoreResult<JobDocument>>> {
        const OP: &str = "update_many";
        let new: Vec<JobDocument> =
            docs.iter().map(|d| JobDocument { version: d.version.saturating_add(1), ..d.clone() }).collect();
        let jsons = new.iter().map(document_json).collect::<Result<Vec<_>, _>>().map_err(|e| self.failed(OP, e))?;
        let uuids: Vec<&str> = new.iter().map(|d| d.uuid.as_str()).collect();
        let versions: Vec<i64> = new.iter().map(|d| to_i64(d.version)).collect();
        let statuses: Vec<&str> = new.iter().map(|d| d.status.as_str()).collect();
        let updated: Vec<f64> = new.iter().map(|d| d.updated_at).collect();
        let texts: Vec<JsonText<'_>> = jsons.iter().map(|j| JsonText(j)).collect();
        let expected: Vec<i64> = docs.iter().map(|d| to_i64(d.version)).collect();
        let types: Vec<&str> = new.iter().map(|d| d.job_type.as_str()).collect();
        let expires: Vec<Option<f64>> = new.iter().map(|d| d.expires_at).collect();
        let params: [&(dyn ToSql + Sync); 8] =
            [&uuids, &versions, &statuses, &updated, &texts, &expected, &types, &expires];
        let rows = self.query(OP, &self.inner.sql.update_many, &params).await?;
        let written = rows.iter().map(|row| self.column::<String>(OP, row, 0)).collect::<StoreResult<HashSet<_>>>()?;
        let mut out = Vec::with_capacity(new.len());
        for (doc, written_doc) in docs.iter().zip(new) {
            out.push(match written.contains(&doc.uuid) {
                true => Ok(written_doc),
                false => self.update(doc).await,
            });
        }
        Ok(out)
    }

    async fn get(&self, uuid: &str) -> StoreResult<Option<JobDocument>> {
        let rows = self.query("get", &self.inner.sql.get, &[&uuid]).await?;
        rows.first().map(|row| parse(uuid, self.column("get", row, 0)?)).transpose()
    }

    async fn update(&self, doc: &JobDocument) -> StoreResult<JobDocument> {
        let new = JobDocument { version: doc.version.saturating_add(1), ..doc.clone() };
        match self.swap(&new, doc.version).await? {
            Swap::Written => Ok(new),
            Swap::Missing => Err(StoreError::NotFound(new.uuid)),
            Swap::Moved(_) => Err(StoreError::Conflict { uuid: new.uuid, expected: doc.version }),
        }
    }

    async fn delete(&self, uuid: &str) -> StoreResult<bool> {
        Ok(self.execute("delete", &self.inner.sql.delete, &[&uuid]).await? > 0)
    }

    async fn delete_at_version(&self, uuid: &str, version: u64) -> StoreResult<()> {
        const OP: &str = "delete";
        let rows = self.query(OP, &self.inner.sql.delete_at_version, &[&uuid, &to_i64(version)]).await?;
        let row = rows.first().ok_or_else(|| self.failed(OP, "the statement returned no row"))?;
        match (self.column::<bool>(OP, row, 0)?, self.column::<bool>(OP, row, 1)?) {
            (true, _) => Ok(()),
            (false, true) => Err(StoreError::Conflict { uuid: uuid.to_owned(), expected: version }),
            (false, false) => Err(StoreError::NotFound(uuid.to_owned())),
        }
    }

    async fn list(&self, filter: &ListFilter, page: &Page) -> StoreResult<Vec<JobDocument>> {
        const OP: &str = "list";
        let status = filter.status.map(Status::as_str);
        let limit = to_i64(page.limit as u64);
        let mut conditions = 0;
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(status) = &status {
            conditions |= BY_STATUS;
            params.push(status);
        }
        if let Some(job_type) = &filter.job_type {
            conditions |= BY_TYPE;
            params.push(job_type);
        }
        if let Some(before) = &filter.updated_before {
            conditions |= BY_UPDATED;
            params.push(before);
        }
        if let Some(queue) = &filter.queue {
            conditions |= BY_QUEUE;
            params.push(queue);
        }
        if let Some(after) = &page.after {
            conditions |= AFTER;
            params.push(after);
        }
        if page.newest_first {
            conditions |= NEWEST_FIRST;
        }
        params.push(&limit);
        let rows = self.query(OP, &self.inner.sql.list[conditions], &params).await?;
        rows.iter()
            .map(|row| {
                let uuid: &str = self.column(OP, row, 0)?;
                parse(uuid, self.column(OP, row, 1)?)
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
        const OP: &str = "list stale";
        let sql = &self.inner.sql.stale[Status::ALL.iter().position(|&s| s == status).unwrap_or(0)];
        let (after_time, after_uuid) = after.map_or((f64::NEG_INFINITY, ""), |k| (k.updated_at, k.uuid.as_str()));
        let limit = to_i64(limit as u64);
        let rows = self.query(OP, sql, &[&before, &after_time, &after_uuid, &limit]).await?;
        rows.iter()
            .map(|row| {
                let key = StaleKey { updated_at: self.column(OP, row, 0)?, uuid: self.column(OP, row, 1)? };
                let doc = parse(&key.uuid, self.column(OP, row, 2)?);
                Ok(StaleRow { key, doc })
            })
            .collect()
    }

    async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: f64, now: f64) -> StoreResult<Lease> {
        let sql = &self.inner.sql;
        let rows = self.query("acquire lease", &sql.take_lease, &[&name, &holder, &(now + ttl), &now]).await?;
        if let Some(row) = rows.first() {
            return self.lease(name, row);
        }
        // Refused, and the lease row was created after this statement's snapshot (by the
        // write that refused it): read it again in a new one.
        let rows = self.query("acquire lease", &sql.read_lease, &[&name]).await?;
        let row = rows.first().ok_or_else(|| self.failed("acquire lease", format!("lease {name:?} vanished")))?;
        self.lease(name, row)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        Ok(self.execute("release lease", &self.inner.sql.release_lease, &[&name, &holder]).await? > 0)
    }

    async fn register_worker(&self, record: &WorkerRecord) -> StoreResult<()> {
        let json = record.to_json()?;
        let params: [&(dyn ToSql + Sync); 4] = [&record.id, &record.expires_at, &json, &record.heartbeat_at];
        self.execute("register worker", &self.inner.sql.put_worker, &params).await?;
        Ok(())
    }

    async fn list_workers(&self, now: f64) -> StoreResult<Vec<WorkerRecord>> {
        const OP: &str = "list workers";
        let rows = self.query(OP, &self.inner.sql.live_workers, &[&now]).await?;
        rows.iter()
            .map(|row| {
                let json: &str = self.column(OP, row, 0)?;
                WorkerRecord::from_json(json.as_bytes(), &format!("in {}", self.inner.label))
            })
            .collect()
    }

    async fn remove_worker(&self, id: &str) -> StoreResult<bool> {
        Ok(self.execute("remove worker", &self.inner.sql.remove_worker, &[&id]).await? > 0)
    }

    /// An insert (the statement of `create`, with the document's own version) or a replace of
    /// the whole row at a version; either is one round trip. Both take the row's values in the
    /// same order; the replace adds the version it expects.
    async fn import(&self, doc: &JobDocument, replacing: Option<u64>) -> StoreResult<JobDocument> {
        const OP: &str = "import";
        let json = document_json(doc).map_err(|e| self.failed(OP, e))?;
        let (version, status, json) = (to_i64(doc.version), doc.status.as_str(), JsonText(&json));
        let expected = to_i64(replacing.unwrap_or_default());
        let params: [&(dyn ToSql + Sync); 8] =
            [&doc.uuid, &version, &status, &doc.job_type, &doc.updated_at, &doc.expires_at, &json, &expected];
        let Some(expected) = replacing else {
            return match self.execute(OP, &self.inner.sql.create, &params[..7]).await? {
                0 => Err(StoreError::AlreadyExists(doc.uuid.clone())),
                _ => Ok(doc.clone()),
            };
        };
        let rows = self.query(OP, &self.inner.sql.import_replace, &params).await?;
        let row = rows.first().ok_or_else(|| self.failed(OP, "the statement returned no row"))?;
        match (self.column::<bool>(OP, row, 0)?, self.column::<bool>(OP, row, 1)?) {
            (true, _) => Ok(doc.clone()),
            (false, true) => Err(StoreError::Conflict { uuid: doc.uuid.clone(), expected }),
            (false, false) => Err(StoreError::NotFound(doc.uuid.clone())),
        }
    }

    async fn purge_expired(&self, now: f64) -> StoreResult<u64> {
        self.execute("purge expired", &self.inner.sql.purge, &[&now]).await
    }

    /// A read, then compare-and-swaps: a swap that loses returns the document it lost to,
    /// so each conflict costs one round trip, not two.
    async fn read_then_write(
        &self,
        uuid: &str,
        next: NextDocument,
    ) -> StoreResult<(Option<JobDocument>, Option<JobDocument>)> {
        let Some(mut stored) = self.get(uuid).await? else {
            return Ok((None, None));
        };
        for _ in 0..MAX_CONFLICTS {
            let Some(new) = next(&stored) else {
                return Ok((Some(stored), None));
            };
            let new = JobDocument { version: stored.version.saturating_add(1), ..new };
            match self.swap(&new, stored.version).await? {
                Swap::Written => return Ok((Some(stored), Some(new))),
                Swap::Missing => return Err(StoreError::NotFound(new.uuid)),
                Swap::Moved(current) => stored = *current,
            }
        }
        Err(StoreError::Contended { uuid: uuid.to_owned(), tries: MAX_CONFLICTS })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_messages_lose_the_password() {
        let password = Some("hunter2".to_owned());
        assert_eq!(scrub("bad login hunter2 for x".into(), &password), "bad login *** for x");
        assert_eq!(scrub("nothing secret".into(), &password), "nothing secret");
        assert_eq!(scrub("no password at all".into(), &None), "no password at all");
    }
}
