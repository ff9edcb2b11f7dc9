//! Job documents in a SQLite file (WAL), shared by every process of one machine.
//! Owns the `geyser_documents`, `geyser_leases` and `geyser_workers` tables of that file (which may also hold the queue's tables)
//! and nothing else; every SQLite call runs on a thread that owns the connection.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, ToSql, Transaction, TransactionBehavior};

use super::{Lease, ListFilter, Page, StaleKey, StaleRow, Store, StoreError, StoreResult, WorkerRecord};
use crate::model::{JobDocument, Status};
use crate::sqlite_conn::{open_wal, ConnThread};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS geyser_documents (
    uuid       TEXT    PRIMARY KEY,
    version    INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    job_type   TEXT    NOT NULL,
    updated_at REAL    NOT NULL,
    expires_at REAL,
    doc        TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS geyser_documents_status ON geyser_documents (status, uuid);
CREATE INDEX IF NOT EXISTS geyser_documents_job_type ON geyser_documents (job_type, uuid);
CREATE INDEX IF NOT EXISTS geyser_documents_expires
    ON geyser_documents (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS geyser_documents_queued_since ON geyser_documents (updated_at, uuid)
    WHERE status = 'queued';
CREATE TABLE IF NOT EXISTS geyser_leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at REAL    NOT NULL,
    version    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS geyser_workers (
    id         TEXT    PRIMARY KEY,
    expires_at REAL    NOT NULL,
    record     TEXT    NOT NULL
);
";

/// Names the file and the operation in every SQLite error (formatted only on failure).
fn sql_err<'a>(path: &'a Path, op: &'a str) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Backend {
        context: format!("sqlite store {}: {op}", path.display()),
        source: source.into(),
    }
}

/// Parses a stored document, naming its uuid when it is not one.
fn parse(uuid: &str, json: &[u8]) -> StoreResult<JobDocument> {
    JobDocument::from_json(json).map_err(|source| StoreError::Corrupt { uuid: uuid.to_owned(), source })
}

/// Writes `doc` into the row values the columns index, next to its JSON.
fn columns(doc: &JobDocument) -> (i64, &'static str, &str, f64, Option<f64>, Vec<u8>) {
    let version = i64::try_from(doc.version).unwrap_or(i64::MAX);
    (version, doc.status.as_str(), &doc.job_type, doc.updated_at, doc.expires_at, doc.to_json())
}

pub(crate) fn insert(conn: &Connection, doc: &JobDocument) -> rusqlite::Result<bool> {
    let (version, status, job_type, updated_at, expires_at, json) = columns(doc);
    let inserted = conn
        .prepare_cached(
            "INSERT INTO geyser_documents (uuid, version, status, job_type, updated_at, expires_at, doc)
             VALUES (?, ?, ?, ?, ?, ?, CAST(? AS TEXT))",
        )?
        .execute(params![doc.uuid, version, status, job_type, updated_at, expires_at, json]);
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The stored JSON of one document, as bytes.
fn select(conn: &Connection, uuid: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT CAST(doc AS BLOB) FROM geyser_documents WHERE uuid = ?")?
        .query_row([uuid], |r| r.get(0))
        .optional()
}

/// Writes `new` if the stored version is still `expected` and `new` keeps the fields fixed
/// at creation, and returns the JSON text written; None otherwise (or when the row is gone).
/// Those fields are left out of SET: naming a column there makes SQLite rewrite its index
/// entries, which costs pages that another process's write will make this one read again.
fn compare_and_swap(conn: &Connection, new: &JobDocument, expected: u64) -> rusqlite::Result<Option<Vec<u8>>> {
    let (version, status, job_type, updated_at, expires_at, json) = columns(new);
    let expected = i64::try_from(expected).unwrap_or(i64::MAX);
    let n = conn
        .prepare_cached(
            "UPDATE geyser_documents
             SET version = ?, status = ?, updated_at = ?, doc = CAST(? AS TEXT)
             WHERE uuid = ? AND version = ? AND job_type = ? AND expires_at IS ?",
        )?
        .execute(params![version, status, updated_at, json, new.uuid, expected, job_type, expires_at])?;
    Ok((n > 0).then_some(json))
}

/// The row's indexed columns, as `compare_and_swap` checks them.
struct RowColumns {
    version: i64,
    job_type: String,
    expires_at: Option<f64>,
    json: Vec<u8>,
}

fn select_row(conn: &Connection, uuid: &str) -> rusqlite::Result<Option<RowColumns>> {
    conn.prepare_cached("SELECT version, job_type, expires_at, CAST(doc AS BLOB) FROM geyser_documents WHERE uuid = ?")?
        .query_row([uuid], |r| {
            Ok(RowColumns { version: r.get(0)?, job_type: r.get(1)?, expires_at: r.get(2)?, json: r.get(3)? })
        })
        .optional()
}

/// Why a compare-and-swap of `new` wrote nothing: the row is gone, its version moved on,
/// `new` changes a field fixed at creation (the model's rule), or the row's columns
/// disagree with its own JSON (a hand edit or a bug): then no write can ever succeed, and
/// the document is reported unreadable instead of as a conflict to retry. Only on that path.
fn refusal(conn: &Connection, path: &Path, new: &JobDocument, expected: u64) -> StoreResult<StoreError> {
    let uuid = new.uuid.clone();
    let Some(row) = select_row(conn, &uuid).map_err(sql_err(path, "update: find why it wrote nothing"))? else {
        return Ok(StoreError::NotFound(uuid));
    };
    let stored = parse(&uuid, &row.json)?;
    if let Some(reason) = stored.disagreement_with_columns(row.version, &row.job_type, row.expires_at) {
        return Ok(StoreError::Inconsistent { uuid, reason });
    }
    Ok(match stored.changed_fixed_field(new) {
        Some(field) if stored.version == expected => StoreError::FixedField { uuid, field },
        _ => StoreError::Conflict { uuid, expected },
    })
}

/// Replaces the stored document whole with `doc` (version and fixed fields as given) if its
/// stored version is still `expected`: `Store::import`'s replace.
fn replace_at_version(conn: &Connection, doc: &JobDocument, expected: u64) -> rusqlite::Result<bool> {
    let (version, status, job_type, updated_at, expires_at, json) = columns(doc);
    let expected = i64::try_from(expected).unwrap_or(i64::MAX);
    let n = conn
        .prepare_cached(
            "UPDATE geyser_documents
             SET version = ?, status = ?, job_type = ?, updated_at = ?, expires_at = ?, doc = CAST(? AS TEXT)
             WHERE uuid = ? AND version = ?",
        )?
        .execute(params![version, status, job_type, updated_at, expires_at, json, doc.uuid, expected])?;
    Ok(n > 0)
}

fn remove_at_version(conn: &Connection, uuid: &str, version: u64) -> rusqlite::Result<bool> {
    let version = i64::try_from(version).unwrap_or(i64::MAX);
    Ok(conn
        .prepare_cached("DELETE FROM geyser_documents WHERE uuid = ? AND version = ?")?
        .execute(params![uuid, version])?
        > 0)
}

fn remove(conn: &Connection, uuid: &str) -> rusqlite::Result<bool> {
    Ok(conn.prepare_cached("DELETE FROM geyser_documents WHERE uuid = ?")?.execute([uuid])? > 0)
}

fn purge(conn: &Connection, now: f64) -> rusqlite::Result<u64> {
    let n = conn
        .prepare_cached(
            "DELETE FROM geyser_documents WHERE expires_at IS NOT NULL AND expires_at <= ?
             AND status IN ('succeeded', 'failed', 'cancelled')",
        )?
        .execute([now])?;
    Ok(n as u64)
}

/// `(uuid, json)` of one page of matching documents, in uuid order (descending with
/// `newest_first`). Only the conditions in use appear in the SQL, so each combination gets its
/// own cached plan on the right index (read backwards for descending pages).
fn select_page(conn: &Connection, filter: &ListFilter, page: &Page) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    let (sql, values) = page_sql(filter, page);
    let mut stmt = conn.prepare_cached(&sql)?;
    let params: Vec<&dyn ToSql> = values.iter().map(|v| v.as_ref()).collect();
    let rows = stmt.query_map(&*params, |r| Ok((r.get(0)?, r.get(1)?)))?.collect();
    rows
}

/// The SQL of `select_page` and its parameters.
fn page_sql(filter: &ListFilter, page: &Page) -> (String, Vec<Box<dyn ToSql>>) {
    let mut conds = Vec::new();
    let mut values: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(status) = filter.status {
        conds.push("status = ?");
        values.push(Box::new(status.as_str()));
    }
    if let Some(job_type) = &filter.job_type {
        conds.push("job_type = ?");
        values.push(Box::new(job_type.clone()));
    }
    if let Some(before) = filter.updated_before {
        conds.push("updated_at < ?");
        values.push(Box::new(before));
    }
    if let Some(queue) = &filter.queue {
        conds.push("json_extract(doc, '$.queueKwargs.queue') = ?");
        values.push(Box::new(queue.clone()));
    }
    if let Some(after) = &page.after {
        conds.push(if page.newest_first { "uuid < ?" } else { "uuid > ?" });
        values.push(Box::new(after.clone()));
    }
    values.push(Box::new(i64::try_from(page.limit).unwrap_or(i64::MAX)));
    let where_clause = if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
    let order = if page.newest_first { "DESC" } else { "" };
    let sql =
        format!("SELECT uuid, CAST(doc AS BLOB) FROM geyser_documents {where_clause} ORDER BY uuid {order} LIMIT ?");
    (sql, values)
}

/// One page of `Store::list_stale` as `(key, json)` rows. Queued documents (a backlog may
/// hold millions) are read in order from the partial index `geyser_documents_queued_since`,
/// named in the SQL (with no statistics SQLite would rather take the status index and sort
/// every stale row); the status is written into the SQL (one of a few fixed words) so that
/// SQLite can see the index applies. Other statuses go through the status index and a sort:
/// running documents are at most one per runner thread, and an index on their write time
/// would cost every start, progress and finish write an index update (measured on a job's
/// three store writes: about +30% with both indexes, a few % with the queued one alone;
/// `benches/stale_index.py`).
fn select_stale(
    conn: &Connection,
    status: Status,
    before: f64,
    after: Option<&StaleKey>,
    limit: usize,
) -> rusqlite::Result<Vec<(StaleKey, Vec<u8>)>> {
    let sql = stale_sql(status);
    let (after_time, after_uuid) = after.map_or((f64::NEG_INFINITY, ""), |k| (k.updated_at, k.uuid.as_str()));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(params![before, after_time, after_uuid, limit], |r| {
            Ok((StaleKey { updated_at: r.get(0)?, uuid: r.get(1)? }, r.get(2)?))
        })?
        .collect();
    rows
}

fn stale_sql(status: Status) -> String {
    let index = if status == Status::Queued { "INDEXED BY geyser_documents_queued_since" } else { "" };
    format!(
        "SELECT updated_at, uuid, CAST(doc AS BLOB) FROM geyser_documents {index}
         WHERE status = '{}' AND updated_at < ?1 AND (updated_at, uuid) > (?2, ?3)
         ORDER BY updated_at, uuid LIMIT ?4",
        status.as_str()
    )
}

fn lease_from_row(name: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    let version: i64 = r.get(2)?;
    Ok(Lease { name: name.to_owned(), holder: r.get(0)?, expires_at: r.get(1)?, version: version.max(0) as u64 })
}

/// Grants the lease to `holder` if it is free, expired or already theirs (one conditional
/// upsert: the compare and the swap are one statement), else reads who holds it.
fn take_lease(conn: &Connection, name: &str, holder: &str, ttl: f64, now: f64) -> rusqlite::Result<Lease> {
    let granted = conn
        .prepare_cached(
            "INSERT INTO geyser_leases (name, holder, expires_at, version) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (name) DO UPDATE
             SET holder = excluded.holder, expires_at = excluded.expires_at, version = version + 1
             WHERE holder = excluded.holder OR expires_at <= ?4
             RETURNING holder, expires_at, version",
        )?
        .query_row(params![name, holder, now + ttl, now], |r| lease_from_row(name, r))
        .optional()?;
    match granted {
        Some(lease) => Ok(lease),
        None => conn
            .prepare_cached("SELECT holder, expires_at, version FROM geyser_leases WHERE name = ?")?
            .query_row([name], |r| lease_from_row(name, r)),
    }
}

/// Ends `holder`'s lease now (its time is set in the past); false when someone else holds it.
fn drop_lease(conn: &Connection, name: &str, holder: &str) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached("UPDATE geyser_leases SET expires_at = 0 WHERE name = ? AND holder = ?")?
        .execute([name, holder])?;
    Ok(n > 0)
}

/// Writes worker `record.id`'s registration and drops every registration that has expired
/// by this record's time (the table holds only about as many rows as there are live workers).
fn put_worker(conn: &Connection, record: &WorkerRecord, json: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM geyser_workers WHERE expires_at <= ?")?.execute([record.heartbeat_at])?;
    conn.prepare_cached("INSERT OR REPLACE INTO geyser_workers (id, expires_at, record) VALUES (?, ?, ?)")?
        .execute(params![record.id, record.expires_at, json])?;
    Ok(())
}

fn live_workers(conn: &Connection, now: f64) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM geyser_workers WHERE expires_at > ? ORDER BY id")?;
    let rows = stmt.query_map([now], |r| r.get(0))?.collect();
    rows
}

/// The store's connection, owned by one thread that runs its tasks' calls in order.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: Arc<Path>,
    conn: ConnThread<Connection>,
}

impl SqliteStore {
    /// Opens (or creates) the document store in the SQLite file at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!("sqlite store {}: {what}: {e}", path.display()))
        };
        let conn = open_wal(path, SCHEMA).map_err(|e| unavailable("open", &e))?;
        let conn = ConnThread::spawn("geyser-sqlite-store", conn).map_err(|e| unavailable("start thread", &e))?;
        Ok(Self { shared: Arc::new(Shared { path: Arc::from(path), conn }) })
    }

    /// Runs `f` on the store's connection thread; `f` names its own operation in SQLite errors.
    async fn with_conn<T, F>(&self, op: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> StoreResult<T> + Send + 'static,
    {
        let path = Arc::clone(&self.shared.path);
        let result = self.shared.conn.call(move |conn| f(conn, &path)).await;
        result
            .map_err(|e| StoreError::Unavailable(format!("sqlite store {}: {op}: {e}", self.shared.path.display())))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, doc: &JobDocument) -> StoreResult<JobDocument> {
        let doc = JobDocument { version: 1, ..doc.clone() };
        self.with_conn("create", move |conn, path| match insert(conn, &doc).map_err(sql_err(path, "create"))? {
            true => Ok(doc),
            false => Err(StoreError::AlreadyExists(doc.uuid)),
        })
        .await
    }

    /// One transaction: every insert commits together (an already used uuid fails alone).
    async fn create_many(&self, docs: &[JobDocument]) -> StoreResult<Vec<StoreResult<JobDocument>>> {
        let docs: Vec<JobDocument> = docs.iter().map(|d| JobDocument { version: 1, ..d.clone() }).collect();
        self.with_conn("create_many", move |conn, path| {
            let tx =
                Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(sql_err(path, "begin"))?;
            let mut out = Vec::with_capacity(docs.len());
            for doc in docs {
                out.push(match insert(&tx, &doc).map_err(sql_err(path, "create_many"))? {
                    true => Ok(doc),
                    false => Err(StoreError::AlreadyExists(doc.uuid)),
                });
            }
            tx.commit().map_err(sql_err(path, "commit"))?;
            Ok(out)
        })
        .await
    }

    /// One transaction: every compare-and-swap commits together (a conflict fails alone).
    async fn update_many(&self, docs: &[JobDocument]) -> StoreResult<Vec<StoreResult<JobDocument>>> {
        let docs = docs.to_vec();
        self.with_conn("update_many", move |conn, path| {
            let tx =
                Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(sql_err(path, "begin"))?;
            let mut out = Vec::with_capacity(docs.len());
            for doc in docs {
                let expected = doc.version;
                let new = JobDocument { version: expected.saturating_add(1), ..doc };
                out.push(if compare_and_swap(&tx, &new, expected).map_err(sql_err(path, "update_many"))?.is_some() {
                    Ok(new)
                } else {
                    Err(refusal(&tx, path, &new, expected).unwrap_or_else(|e| e))
                });
            }
            tx.commit().map_err(sql_err(path, "commit"))?;
            Ok(out)
        })
        .await
    }

    async fn get(&self, uuid: &str) -> StoreResult<Option<JobDocument>> {
        Ok(self.get_with_json(uuid).await?.map(|(doc, _)| doc))
    }

    /// The stored text is what `JobDocument::to_json` wrote (every write here goes through it).
    async fn get_with_json(&self, uuid: &str) -> StoreResult<Option<(JobDocument, Vec<u8>)>> {
        let uuid = uuid.to_owned();
        self.with_conn("get", move |conn, path| {
            let Some(json) = select(conn, &uuid).map_err(sql_err(path, "get"))? else { return Ok(None) };
            Ok(Some((parse(&uuid, &json)?, json)))
        })
        .await
    }

    async fn update(&self, doc: &JobDocument) -> StoreResult<JobDocument> {
        Ok(self.update_with_json(doc).await?.0)
    }

    async fn update_with_json(&self, doc: &JobDocument) -> StoreResult<(JobDocument, Vec<u8>)> {
        let expected = doc.version;
        let new = JobDocument { version: expected.saturating_add(1), ..doc.clone() };
        self.with_conn("update", move |conn, path| {
            if let Some(json) = compare_and_swap(conn, &new, expected).map_err(sql_err(path, "update"))? {
                return Ok((new, json));
            }
            Err(refusal(conn, path, &new, expected)?)
        })
        .await
    }

    async fn delete(&self, uuid: &str) -> StoreResult<bool> {
        let uuid = uuid.to_owned();
        self.with_conn("delete", move |conn, path| remove(conn, &uuid).map_err(sql_err(path, "delete"))).await
    }

    async fn delete_at_version(&self, uuid: &str, version: u64) -> StoreResult<()> {
        let uuid = uuid.to_owned();
        self.with_conn("delete", move |conn, path| {
            if remove_at_version(conn, &uuid, version).map_err(sql_err(path, "delete"))? {
                return Ok(());
            }
            match select(conn, &uuid).map_err(sql_err(path, "delete: find why it deleted nothing"))? {
                None => Err(StoreError::NotFound(uuid)),
                Some(_) => Err(StoreError::Conflict { uuid, expected: version }),
            }
        })
        .await
    }

    async fn list(&self, filter: &ListFilter, page: &Page) -> StoreResult<Vec<JobDocument>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.with_conn("list", move |conn, path| {
            let rows = select_page(conn, &filter, &page).map_err(sql_err(path, "list"))?;
            rows.iter().map(|(uuid, json)| parse(uuid, json)).collect()
        })
        .await
    }

    async fn list_stale(
        &self,
        status: Status,
        before: f64,
        after: Option<&StaleKey>,
        limit: usize,
    ) -> StoreResult<Vec<StaleRow>> {
        let after = after.cloned();
        self.with_conn("list stale", move |conn, path| {
            let rows =
                select_stale(conn, status, before, after.as_ref(), limit).map_err(sql_err(path, "list stale"))?;
            Ok(rows.into_iter().map(|(key, json)| StaleRow { doc: parse(&key.uuid, &json), key }).collect())
        })
        .await
    }

    async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: f64, now: f64) -> StoreResult<Lease> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.with_conn("acquire lease", move |conn, path| {
            take_lease(conn, &name, &holder, ttl, now).map_err(sql_err(path, "acquire lease"))
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.with_conn("release lease", move |conn, path| {
            drop_lease(conn, &name, &holder).map_err(sql_err(path, "release lease"))
        })
        .await
    }

    async fn register_worker(&self, record: &WorkerRecord) -> StoreResult<()> {
        let record = record.clone();
        let json = record.to_json()?;
        self.with_conn("register worker", move |conn, path| {
            put_worker(conn, &record, &json).map_err(sql_err(path, "register worker"))
        })
        .await
    }

    async fn list_workers(&self, now: f64) -> StoreResult<Vec<WorkerRecord>> {
        self.with_conn("list workers", move |conn, path| {
            let rows = live_workers(conn, now).map_err(sql_err(path, "list workers"))?;
            rows.iter()
                .map(|json| WorkerRecord::from_json(json.as_bytes(), &format!("in {}", path.display())))
                .collect()
        })
        .await
    }

    async fn remove_worker(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.with_conn("remove worker", move |conn, path| {
            let n = conn
                .prepare_cached("DELETE FROM geyser_workers WHERE id = ?")
                .and_then(|mut stmt| stmt.execute([&id]))
                .map_err(sql_err(path, "remove worker"))?;
            Ok(n > 0)
        })
        .await
    }

    async fn import(&self, doc: &JobDocument, replacing: Option<u64>) -> StoreResult<JobDocument> {
        let doc = doc.clone();
        self.with_conn("import", move |conn, path| {
            let Some(expected) = replacing else {
                return match insert(conn, &doc).map_err(sql_err(path, "import"))? {
                    true => Ok(doc),
                    false => Err(StoreError::AlreadyExists(doc.uuid)),
                };
            };
            if replace_at_version(conn, &doc, expected).map_err(sql_err(path, "import"))? {
                return Ok(doc);
            }
            match select(conn, &doc.uuid).map_err(sql_err(path, "import: find why it wrote nothing"))? {
                None => Err(StoreError::NotFound(doc.uuid)),
                Some(_) => Err(StoreError::Conflict { uuid: doc.uuid, expected }),
            }
        })
        .await
    }

    async fn purge_expired(&self, now: f64) -> StoreResult<u64> {
        self.with_conn("purge expired", move |conn, path| purge(conn, now).map_err(sql_err(path, "purge expired")))
            .await
    }
}

#[cfg(test)]
mod stale_listing_tests {
    use super::*;

    fn plan(conn: &Connection, status: Status) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", stale_sql(status))).expect("plan");
        let rows = stmt.query_map(params![1.0, 0.0, "", 10], |r| r.get::<_, String>(3)).expect("query plan");
        rows.collect::<rusqlite::Result<Vec<_>>>().expect("plan rows").join("; ")
    }

    /// Stale queued documents are read in order from their partial index (no scan, no sort);
    /// running ones from the status index (no scan).
    #[test]
    fn stale_listing_reads_only_stale_candidates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = open_wal(&dir.path().join("plan.db"), SCHEMA).expect("open");
        let queued = plan(&conn, Status::Queued);
        assert!(queued.starts_with("SEARCH geyser_documents USING INDEX geyser_documents_queued_since"), "{queued}");
        assert!(!queued.contains("TEMP B-TREE"), "sorts: {queued}");
        let running = plan(&conn, Status::Running);
        assert!(running.starts_with("SEARCH geyser_documents USING INDEX geyser_documents_status"), "{running}");
    }

    fn page_plan(conn: &Connection, filter: &ListFilter, page: &Page) -> String {
        let (sql, values) = page_sql(filter, page);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("plan");
        let params: Vec<&dyn ToSql> = values.iter().map(|v| v.as_ref()).collect();
        let rows = stmt.query_map(&*params, |r| r.get::<_, String>(3)).expect("query plan");
        rows.collect::<rusqlite::Result<Vec<_>>>().expect("plan rows").join("; ")
    }

    /// Newest-first pages read an index backwards from where the page starts: no sort, and
    /// no scan of the table beyond the page (`geyser jobs ls` on 100,000 documents).
    #[test]
    fn newest_first_pages_read_an_index_backwards() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = open_wal(&dir.path().join("plan.db"), SCHEMA).expect("open");
        let newest = Page { after: Some("u".into()), newest_first: true, ..Page::default() };
        let all = page_plan(&conn, &ListFilter::default(), &newest);
        assert!(all.starts_with("SEARCH geyser_documents USING INDEX sqlite_autoindex_geyser_documents_1"), "{all}");
        let failed = ListFilter { status: Some(Status::Failed), ..ListFilter::default() };
        let by_status = page_plan(&conn, &failed, &newest);
        assert!(by_status.starts_with("SEARCH geyser_documents USING INDEX geyser_documents_status"), "{by_status}");
        let typed = ListFilter { job_type: Some("t".into()), ..ListFilter::default() };
        let by_type = page_plan(&conn, &typed, &Page { newest_first: true, ..Page::default() });
        assert!(by_type.starts_with("SEARCH geyser_documents USING INDEX geyser_documents_job_type"), "{by_type}");
        for plan in [all, by_status, by_type] {
            assert!(!plan.contains("TEMP B-TREE"), "sorts: {plan}");
        }
    }
}
