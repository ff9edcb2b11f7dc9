//! How a new job reaches the store and the queue: document first, queue entry second.
//! Two ways to do it: `TwoStep` works across any store and queue (save, put, note the
//! queue id); `SqliteOneCommit` does all of it in one transaction when the embedded queue
//! and store share a file. The client picks one at open time and only calls the trait.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, TransactionBehavior};

use crate::client::{ClientError, ClientResult};
use crate::model::JobDocument;
use crate::queue::{self, PutOptions, Queue, QueueError, QueueJobId};
use crate::sqlite_conn::ConnThread;
use crate::store::{self, Store, StoreError};

#[async_trait]
pub trait Enqueuer: Send + Sync {
    /// Save the new document `doc` and put its uuid on `doc.queue_kwargs.queue`.
    /// Returns the saved document with its `queueJobId`; on failure no job is left behind.
    async fn enqueue(&self, doc: JobDocument, opts: PutOptions) -> ClientResult<JobDocument>;
}

/// Any store, any queue: save, then put, then record the queue id in the document.
pub struct TwoStep {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn Store>,
}

#[async_trait]
impl Enqueuer for TwoStep {
    async fn enqueue(&self, doc: JobDocument, opts: PutOptions) -> ClientResult<JobDocument> {
        let saved = self.store.create(&doc).await?;
        let id = match self.queue.put(&saved.queue_kwargs.queue, saved.uuid.as_bytes(), opts).await {
            Ok(id) => id,
            Err(e) => {
                if let Err(del) = self.store.delete(&saved.uuid).await {
                    log::error!(
                        "job {}: put failed and the document could not be removed ({del}); the sweep will queue it",
                        saved.uuid
                    );
                }
                return Err(e.into());
            }
        };
        self.note_queue_id(saved, id).await
    }
}

impl TwoStep {
    /// Record where the job sits on the queue, unless a worker already did.
    async fn note_queue_id(&self, mut doc: JobDocument, id: QueueJobId) -> ClientResult<JobDocument> {
        for _ in 0..store::MAX_CONFLICTS {
            if doc.queue_job_id.is_some() {
                return Ok(doc);
            }
            doc.queue_job_id = Some(id.to_string());
            match self.store.update(&doc).await {
                Ok(saved) => return Ok(saved),
                Err(StoreError::Conflict { .. }) => {
                    doc = self.store.get(&doc.uuid).await?.ok_or_else(|| StoreError::NotFound(doc.uuid.clone()))?
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Contended { uuid: doc.uuid, tries: store::MAX_CONFLICTS }.into())
    }
}

/// The embedded queue and store in one SQLite file: the queue entry and the document
/// (already carrying its `queueJobId`) are committed together, or not at all.
pub struct SqliteOneCommit {
    path: PathBuf,
    conn: ConnThread<Connection>,
}

impl SqliteOneCommit {
    /// Opens its own connection to a file whose queue and store are already set up.
    pub fn open(path: &Path) -> ClientResult<Self> {
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

#[async_trait]
impl Enqueuer for SqliteOneCommit {
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
