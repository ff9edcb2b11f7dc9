//! The `sqlite://` driver: the embedded queue and store, and, when both URLs name the same
//! file, an enqueue that commits the document and its queue entry in one transaction.
//! Maps URLs to files; the SQL lives in `queue/sqlite.rs` and `store/sqlite.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, TransactionBehavior};

use super::{Driver, Role};
use crate::client::{ClientError, ClientResult};
use crate::config::ConfigError;
use crate::enqueue::Enqueuer;
use crate::model::JobDocument;
use crate::queue::{self, PutOptions, Queue, QueueError, QueueJobId};
use crate::sqlite_conn::ConnThread;
use crate::store::{self, Store, StoreError};

pub struct Sqlite;

/// The embedded default: one SQLite file per user, shared by every process of the machine.
/// `$XDG_DATA_HOME/geyser/geyser.db`, else `~/.local/share/geyser/geyser.db`.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("geyser").join("geyser.db")
}

/// What `sqlite://...` names: `sqlite://` alone is the default file, `sqlite:///abs/path` or
/// `sqlite://relative/path` a file of the user's choice.
fn path_of(role: Role, url: &str) -> Result<PathBuf, ConfigError> {
    let rest = url.strip_prefix("sqlite://").unwrap_or(url);
    if rest.contains('?') {
        let reason = "query parameters are not supported".into();
        return Err(ConfigError::BadUrl { role: role.as_str(), url: url.into(), reason });
    }
    Ok(if rest.is_empty() { default_path() } else { PathBuf::from(rest) })
}

/// Open a SQLite-backed queue or store off the async threads (opening may wait for the file lock).
async fn open_file<T, E>(role: Role, url: &str, open: fn(&Path) -> Result<T, E>) -> Result<T, ConfigError>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let path = path_of(role, url)?;
    let open_err = |reason: String| ConfigError::Open { role: role.as_str(), url: url.into(), reason };
    tokio::task::spawn_blocking(move || open(&path))
        .await
        .map_err(|e| open_err(e.to_string()))?
        .map_err(|e| open_err(e.to_string()))
}

#[async_trait]
impl Driver for Sqlite {
    fn schemes(&self) -> &'static [&'static str] {
        &["sqlite"]
    }

    fn roles(&self) -> &'static [Role] {
        &[Role::Queue, Role::Store]
    }

    async fn open_queue(&self, url: &str) -> Result<Arc<dyn Queue>, ConfigError> {
        Ok(Arc::new(open_file(Role::Queue, url, queue::sqlite::SqliteQueue::open).await?))
    }

    async fn open_store(&self, url: &str) -> Result<Arc<dyn Store>, ConfigError> {
        Ok(Arc::new(open_file(Role::Store, url, store::sqlite::SqliteStore::open).await?))
    }

    async fn one_transaction_enqueue(
        &self,
        queue_url: &str,
        store_url: &str,
    ) -> Result<Option<Arc<dyn Enqueuer>>, ConfigError> {
        let (queue_file, store_file) = (path_of(Role::Queue, queue_url)?, path_of(Role::Store, store_url)?);
        let shared = tokio::task::spawn_blocking(move || -> Result<Option<SqliteOneCommit>, String> {
            let same = std::fs::canonicalize(&queue_file).map_err(|e| e.to_string())?
                == std::fs::canonicalize(&store_file).map_err(|e| e.to_string())?;
            same.then(|| SqliteOneCommit::open(&queue_file)).transpose().map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|reason| ConfigError::Open { role: "queue", url: queue_url.into(), reason })?;
        Ok(shared.map(|e| Arc::new(e) as Arc<dyn Enqueuer>))
    }
}

/// The embedded queue and store in one SQLite file: the queue entry and the document
/// (already carrying its `queueJobId`) are committed together, or not at all.
struct SqliteOneCommit {
    path: PathBuf,
    conn: ConnThread<Connection>,
}

impl SqliteOneCommit {
    /// Opens its own connection to a file whose queue and store are already set up.
    fn open(path: &Path) -> ClientResult<Self> {
        let conn = queue::sqlite::open_connection(path)?;
        let conn = ConnThread::spawn("geyser-sqlite-enqueue", conn).map_err(|source| QueueError::Io {
            context: format!("sqlite {}: start the enqueue thread", path.display()),
            source,
        })?;
        Ok(Self { path: path.to_owned(), conn })
    }
}

fn commit_both(conn: &mut Connection, mut doc: JobDocument, opts: PutOptions) -> rusqlite::Result<Option<JobDocument>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id = queue::sqlite::put_job(&tx, &doc.queue_kwargs.queue, doc.uuid.as_bytes(), opts)?;
    doc.queue_job_id = Some(QueueJobId::new(0, id as u64).to_string());
    doc.version = 1;
    if !store::sqlite::insert(&tx, &doc)? {
        return Ok(None); // dropping the transaction rolls the put back
    }
    tx.commit()?;
    Ok(Some(doc))
}

/// `commit_both` for a batch, in one transaction: a job whose uuid is taken fails alone (its
/// queue entry is deleted again before the commit).
fn commit_all(
    conn: &mut Connection,
    jobs: Vec<(JobDocument, PutOptions)>,
) -> rusqlite::Result<Vec<Result<JobDocument, String>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(jobs.len());
    for (mut doc, opts) in jobs {
        let id = queue::sqlite::put_job(&tx, &doc.queue_kwargs.queue, doc.uuid.as_bytes(), opts)?;
        doc.queue_job_id = Some(QueueJobId::new(0, id as u64).to_string());
        doc.version = 1;
        if store::sqlite::insert(&tx, &doc)? {
            out.push(Ok(doc));
        } else {
            queue::sqlite::delete_unreserved(&tx, id)?;
            out.push(Err(doc.uuid));
        }
    }
    tx.commit()?;
    Ok(out)
}

#[async_trait]
impl Enqueuer for SqliteOneCommit {
    async fn enqueue_many(&self, jobs: Vec<(JobDocument, PutOptions)>) -> ClientResult<Vec<ClientResult<JobDocument>>> {
        let n = jobs.len();
        let sql_err = |source: rusqlite::Error| StoreError::Backend {
            context: format!("sqlite {}: enqueue {n} jobs", self.path.display()),
            source: source.into(),
        };
        let committed = self
            .conn
            .call(move |conn| commit_all(conn, jobs))
            .await
            .map_err(|e| StoreError::Unavailable(format!("sqlite {}: enqueue: {e}", self.path.display())))?
            .map_err(sql_err)?;
        Ok(committed.into_iter().map(|r| r.map_err(|uuid| StoreError::AlreadyExists(uuid).into())).collect())
    }

    async fn enqueue(&self, doc: JobDocument, opts: PutOptions) -> ClientResult<JobDocument> {
        queue::check_tube(&doc.queue_kwargs.queue)?;
        let uuid = doc.uuid.clone();
        let sql_err = |source: rusqlite::Error| StoreError::Backend {
            context: format!("sqlite {}: enqueue job {uuid}", self.path.display()),
            source: source.into(),
        };
        let committed = self
            .conn
            .call(move |conn| commit_both(conn, doc, opts))
            .await
            .map_err(|e| StoreError::Unavailable(format!("sqlite {}: enqueue: {e}", self.path.display())))?
            .map_err(sql_err)?;
        committed.ok_or_else(|| ClientError::Store(StoreError::AlreadyExists(uuid.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_follows_xdg() {
        // Read-only check of the rule; the env is whatever the test runner has.
        let p = default_path();
        assert!(p.ends_with("geyser/geyser.db"), "{}", p.display());
    }

    #[test]
    fn sqlite_urls() {
        assert_eq!(path_of(Role::Queue, "sqlite:///tmp/x.db").unwrap(), PathBuf::from("/tmp/x.db"));
        assert_eq!(path_of(Role::Queue, "sqlite://").unwrap(), default_path());
        assert!(path_of(Role::Queue, "sqlite:///x?y=1").is_err());
    }
}
