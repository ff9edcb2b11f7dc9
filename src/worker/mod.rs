//! The worker side of the engine: reserve a job, start an attempt on its document,
//! keep it alive while Python runs it, and apply the outcome (document first, queue second).
//! Touches the queue (through one consumer) and the store; calls no Python.

mod fenced;
mod heartbeat;
pub mod outcome;
mod progress;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

pub use fenced::FenceError;
use fenced::FencedWriter;
use heartbeat::{Beat, Heartbeat};
pub use outcome::Outcome;
use outcome::QueueAction;
use progress::ProgressWriter;

use crate::client::Geyser;
use crate::model::{JobDocument, Status, TransitionError};
use crate::queue::{Consumer, QueueError, QueueJobId, Reserved};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

pub type WorkerResult<T> = Result<T, WorkerError>;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Written into the document of every attempt this worker starts.
    pub name: String,
    pub tubes: Vec<String>,
    /// At most one progress write per job per interval.
    pub progress_interval: Duration,
    /// How long past its TIMEOUT a job that cannot be interrupted may run before the
    /// heartbeat fails it and ends the process (see `heartbeat.rs`).
    pub hard_stop_after: Duration,
}

/// One reserving consumer and what it needs to run attempts.
pub struct Worker {
    geyser: Geyser,
    consumer: Arc<Mutex<Box<dyn Consumer>>>,
    config: WorkerConfig,
}

/// A job this worker holds: its document as started, and the machinery that keeps it alive.
pub struct Attempt {
    pub doc: JobDocument,
    pub queue_id: QueueJobId,
    consumer: Arc<Mutex<Box<dyn Consumer>>>,
    writer: Arc<FencedWriter>,
    progress: ProgressWriter,
    heartbeat: Heartbeat,
}

impl Worker {
    pub async fn new(geyser: Geyser, config: WorkerConfig) -> WorkerResult<Self> {
        let consumer = geyser.queue.consumer(&config.tubes).await?;
        Ok(Self { geyser, consumer: Arc::new(Mutex::new(consumer)), config })
    }

    pub fn tubes(&self) -> &[String] {
        &self.config.tubes
    }

    /// Reserve until a job can start or `timeout` passes.
    pub async fn next(&self, timeout: Duration) -> WorkerResult<Option<Attempt>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(reserved) = self.consumer.lock().await.reserve(left).await? else {
                return Ok(None);
            };
            if let Some(attempt) = self.start(reserved).await? {
                return Ok(Some(attempt));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Turn a reservation into an attempt, or settle an entry that must not run (None).
    async fn start(&self, reserved: Reserved) -> WorkerResult<Option<Attempt>> {
        let id = reserved.id;
        let Ok(uuid) = String::from_utf8(reserved.body) else {
            log::error!("queue job {id} on {:?}: body is not a job uuid; buried", reserved.tube);
            self.bury(id).await;
            return Ok(None);
        };
        loop {
            let doc = match self.geyser.store.get(&uuid).await {
                Ok(Some(doc)) => doc,
                Ok(None) => {
                    log::error!("job {uuid} (queue job {id}): no document in the store; buried");
                    self.bury(id).await;
                    return Ok(None);
                }
                Err(e @ StoreError::Corrupt { .. }) => {
                    log::error!("{e}; queue job {id} buried");
                    self.bury(id).await;
                    return Ok(None);
                }
                Err(e) => {
                    self.release_soon(id).await;
                    return Err(e.into());
                }
            };
            let Some(mut doc) = self.triage(doc, id).await? else {
                return Ok(None);
            };
            let fence = format!("{}:{}", doc.attempts + 1, uuid::Uuid::new_v4().simple());
            doc.queue_job_id = Some(id.to_string());
            doc.start_attempt(&self.config.name, &fence)?;
            match self.geyser.store.update(&doc).await {
                Ok(started) => return Ok(Some(self.attempt(started, id))),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => {
                    self.release_soon(id).await;
                    return Err(e.into());
                }
            }
        }
    }

    /// Decide whether a reserved document may start: finished, stale and exhausted
    /// entries are settled here. Returns the document to start, or None.
    async fn triage(&self, mut doc: JobDocument, id: QueueJobId) -> WorkerResult<Option<JobDocument>> {
        let uuid = doc.uuid.clone();
        if doc.status.is_terminal() {
            log::info!("job {uuid} is already {}; queue job {id} deleted", doc.status);
            self.delete(id).await;
            return Ok(None);
        }
        if doc.queue_job_id.as_deref().is_some_and(|q| q != id.to_string()) {
            log::warn!("job {uuid} belongs to queue job {:?}; duplicate entry {id} deleted", doc.queue_job_id);
            self.delete(id).await;
            return Ok(None);
        }
        if doc.status == Status::Running {
            // The previous attempt's worker died or lost its reservation: that attempt failed.
            let lost = Outcome::worker_lost(doc.attempts, "its worker stopped");
            if outcome::apply(&mut doc, lost, rand::random())? == QueueAction::Bury {
                self.finish_doc(doc, id, QueueAction::Bury).await?;
                return Ok(None);
            }
        }
        Ok(Some(doc))
    }

    fn attempt(&self, doc: JobDocument, queue_id: QueueJobId) -> Attempt {
        let writer = Arc::new(FencedWriter::new(self.geyser.store.clone(), &doc));
        let progress = ProgressWriter::start(writer.clone(), self.config.progress_interval);
        let heartbeat = Heartbeat::start(Beat {
            consumer: self.consumer.clone(),
            id: queue_id,
            writer: writer.clone(),
            started: doc.clone(),
            hard_stop_after: self.config.hard_stop_after,
        });
        Attempt { doc, queue_id, consumer: self.consumer.clone(), writer, progress, heartbeat }
    }

    /// Save a document that will not run now, then settle its queue entry.
    async fn finish_doc(&self, doc: JobDocument, id: QueueJobId, action: QueueAction) -> WorkerResult<()> {
        match self.geyser.store.update(&doc).await {
            Ok(saved) => settle_or_log(&self.consumer, &saved, id, action).await,
            Err(StoreError::Conflict { .. }) => self.release_soon(id).await,
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn bury(&self, id: QueueJobId) {
        if let Err(e) = self.consumer.lock().await.bury(id, 0).await {
            log::error!("could not bury queue job {id}: {e}");
        }
    }

    async fn delete(&self, id: QueueJobId) {
        if let Err(e) = self.consumer.lock().await.delete(id).await {
            log::warn!("could not delete queue job {id}: {e}");
        }
    }

    async fn release_soon(&self, id: QueueJobId) {
        if let Err(e) = self.consumer.lock().await.release(id, 0, Duration::from_secs(1)).await {
            log::warn!("could not release queue job {id}: {e}");
        }
    }
}

/// Carry out the queue half of an outcome, after the document half is saved.
/// A failure is for the caller to report: the document is final already, and whoever
/// reserves the entry next settles it.
pub(crate) async fn settle(
    consumer: &Mutex<Box<dyn Consumer>>,
    doc: &JobDocument,
    id: QueueJobId,
    action: QueueAction,
) -> Result<(), QueueError> {
    let priority = doc.queue_kwargs.priority;
    let mut consumer = consumer.lock().await;
    match action {
        QueueAction::Delete => consumer.delete(id).await,
        QueueAction::Release { delay } => consumer.release(id, priority, delay).await,
        QueueAction::Bury => consumer.bury(id, priority).await,
    }
}

/// `settle`, logging a failure.
async fn settle_or_log(consumer: &Mutex<Box<dyn Consumer>>, doc: &JobDocument, id: QueueJobId, action: QueueAction) {
    if let Err(e) = settle(consumer, doc, id, action).await {
        log::warn!("job {}: queue job {id}: {action:?} failed: {e}", doc.uuid);
    }
}

impl Attempt {
    /// The job's latest state, saved within one progress interval.
    pub fn progress(&self, job: JobDocument) {
        let mut doc = self.doc.clone();
        doc.take_progress_from(job);
        self.progress.submit(doc);
    }

    pub fn cancel_requested(&self) -> bool {
        self.writer.cancel_requested()
    }

    /// Whether a newer attempt took the job over; this one's writes are refused.
    pub fn is_lost(&self) -> bool {
        self.writer.is_lost()
    }

    /// Write the final state of this attempt (unless it was lost), then settle the queue entry.
    pub async fn finish(self, job: JobDocument, outcome: Outcome) -> WorkerResult<JobDocument> {
        let Attempt { mut doc, queue_id, consumer, writer, progress, heartbeat } = self;
        progress.stop();
        heartbeat.stop();
        doc.take_progress_from(job);
        let action = outcome::apply(&mut doc, outcome, rand::random())?;
        let saved = match writer.write(doc).await {
            Ok(saved) => saved,
            Err(e @ FenceError::Lost { .. }) => {
                log::warn!("{e}; this attempt's outcome is dropped");
                return Err(e.into());
            }
            Err(e) => {
                // The document could not be saved: give the entry back so the job is not lost.
                let _ = consumer.lock().await.release(queue_id, 0, Duration::from_secs(1)).await;
                return Err(e.into());
            }
        };
        settle_or_log(&consumer, &saved, queue_id, action).await;
        Ok(saved)
    }
}
