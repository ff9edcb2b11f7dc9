//! What producers and readers do with jobs: enqueue (save, then put), read,
//! save with compare-and-swap, cancel. Talks to one queue and one store; runs no jobs.

use std::sync::Arc;
use std::time::Duration;

use crate::enqueue::{Enqueuer, TwoStep};
use crate::model::{now, JobDocument, Status, TransitionError};
use crate::queue::{PutOptions, Queue, QueueError, TubeStats};
use crate::store::{ListFilter, Page, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("job {uuid}: {reason}")]
    Invalid { uuid: String, reason: String },
}

pub type ClientResult<T> = Result<T, ClientError>;

/// Seconds as a Duration, treating negative or NaN as zero.
pub fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::ZERO)
}

/// The queue and the store one process talks to, and how it enqueues into them.
#[derive(Clone)]
pub struct Geyser {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn Store>,
    enqueuer: Arc<dyn Enqueuer>,
}

impl Geyser {
    pub fn new(queue: Arc<dyn Queue>, store: Arc<dyn Store>, enqueuer: Arc<dyn Enqueuer>) -> Self {
        Self { queue, store, enqueuer }
    }

    /// Separate store and queue: enqueue in steps (save, put, note the queue id).
    pub fn two_step(queue: Arc<dyn Queue>, store: Arc<dyn Store>) -> Self {
        let enqueuer = Arc::new(TwoStep { queue: queue.clone(), store: store.clone() });
        Self::new(queue, store, enqueuer)
    }

    /// Save a new job document and put it on its queue (see `enqueue.rs` for how).
    pub async fn enqueue(&self, mut doc: JobDocument, delay: f64) -> ClientResult<JobDocument> {
        if doc.version != 0 {
            return Err(ClientError::Invalid {
                uuid: doc.uuid,
                reason: "is already saved; enqueue takes a new job".into(),
            });
        }
        doc.status = Status::Queued;
        doc.next_run_at = (delay > 0.0).then(|| now() + delay);
        let opts =
            PutOptions { priority: doc.queue_kwargs.priority, delay: secs(delay), ttr: secs(doc.queue_kwargs.ttr) };
        self.enqueuer.enqueue(doc, opts).await
    }

    pub async fn get(&self, uuid: &str) -> ClientResult<Option<JobDocument>> {
        Ok(self.store.get(uuid).await?)
    }

    async fn must_get(&self, uuid: &str) -> ClientResult<JobDocument> {
        self.store.get(uuid).await?.ok_or_else(|| StoreError::NotFound(uuid.to_owned()).into())
    }

    /// Compare-and-swap write of a document the caller read at `doc.version`.
    pub async fn save(&self, doc: &JobDocument) -> ClientResult<JobDocument> {
        let mut doc = doc.clone();
        doc.updated_at = now();
        Ok(self.store.update(&doc).await?)
    }

    /// Ask a job to stop. A queued job is cancelled at once and leaves its queue;
    /// a running one is flagged, and its worker stops it. Finished jobs are left alone.
    pub async fn cancel(&self, uuid: &str) -> ClientResult<JobDocument> {
        loop {
            let mut doc = self.must_get(uuid).await?;
            match doc.status {
                s if s.is_terminal() => return Ok(doc),
                Status::Queued => doc.cancel()?,
                _ => {
                    if doc.cancel_requested {
                        return Ok(doc);
                    }
                    doc.cancel_requested = true;
                    doc.updated_at = now();
                }
            }
            match self.store.update(&doc).await {
                Ok(saved) => {
                    if saved.status == Status::Cancelled {
                        self.drop_queue_entry(&saved).await;
                    }
                    return Ok(saved);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Best effort: a worker that reserves the entry later finds the document final and deletes it.
    /// The entry is deleted only if it still carries this job's uuid (ids can be reused).
    async fn drop_queue_entry(&self, doc: &JobDocument) {
        let Some(id) = doc.queue_job_id.as_deref().and_then(|s| s.parse().ok()) else { return };
        let result = match self.queue.peek(id).await {
            Ok(Some(body)) if body == doc.uuid.as_bytes() => self.queue.delete(id).await,
            Ok(_) => return,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            log::debug!("job {}: queue entry {id} not deleted now ({e}); a worker will drop it", doc.uuid);
        }
    }

    pub async fn list(&self, filter: &ListFilter, page: &Page) -> ClientResult<Vec<JobDocument>> {
        Ok(self.store.list(filter, page).await?)
    }

    pub async fn stats_tube(&self, tube: &str) -> ClientResult<TubeStats> {
        Ok(self.queue.stats_tube(tube).await?)
    }
}
