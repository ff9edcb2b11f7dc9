//! The worker side of the engine: reserve a job, start an attempt on its document,
//! keep it alive while Python runs it, and apply the outcome (document first, queue second).
//! Touches the queue (through one consumer) and the store; calls no Python.
//!
//! A worker's consumer lives on a current-thread runtime of the worker's own, which the
//! waiting caller drives (`Worker::runtime`; see `reservations.rs` for why); the heartbeat
//! runs on the runtime it is given at `Worker::open`.

pub mod crash;
mod fenced;
mod heartbeat;
pub mod outcome;
mod progress;
mod reservations;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::Mutex;

pub use fenced::FenceError;
use fenced::FencedWriter;
use heartbeat::Heartbeat;
pub use outcome::Outcome;
use outcome::QueueAction;
use reservations::{Reservations, SharedConsumer};

use crate::client::Geyser;
use crate::model::{JobDocument, Status, TransitionError};
use crate::queue::{Consumer, QueueError, QueueJobId, Reserved};
use crate::store::{NextDocument, StoreError};

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
    #[error("could not start the worker's runtime: {0}")]
    Runtime(#[source] std::io::Error),
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
    consumer: SharedConsumer,
    runtime: Arc<Runtime>,
    heartbeat: Arc<Heartbeat>,
    finished: FinishedEntry,
    config: WorkerConfig,
}

/// The queue entry of the job that succeeded last, still to delete. Its document is
/// final already; the delete goes out with the next reserve, in the same round trip
/// (`Consumer::delete_then_reserve`), or at `Worker::close`. Should the process die
/// first, the entry comes back and is deleted by whoever reserves it (the document
/// says the job is done).
type FinishedEntry = Arc<std::sync::Mutex<Option<(QueueJobId, String)>>>;

/// A job this worker holds: its document as started, and the machinery that keeps it alive.
pub struct Attempt {
    pub doc: JobDocument,
    pub queue_id: QueueJobId,
    consumer: SharedConsumer,
    writer: Arc<FencedWriter>,
    heartbeat: Arc<Heartbeat>,
    finished: FinishedEntry,
}

impl Worker {
    /// Open the consumer on the worker's own runtime and start its heartbeat on
    /// `heartbeat_on`. Blocks: call it where blocking is allowed.
    pub fn open(geyser: Geyser, config: WorkerConfig, heartbeat_on: &tokio::runtime::Handle) -> WorkerResult<Self> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(WorkerError::Runtime)?;
        let runtime = Arc::new(runtime);
        let consumer: SharedConsumer = Arc::new(Mutex::new(runtime.block_on(geyser.queue.consumer(&config.tubes))?));
        let reservations = Reservations::new(consumer.clone(), &runtime);
        let heartbeat = {
            let _on = heartbeat_on.enter();
            Arc::new(Heartbeat::start(reservations, config.hard_stop_after))
        };
        Ok(Self { geyser, consumer, runtime, heartbeat, finished: FinishedEntry::default(), config })
    }

    /// The runtime that drives this worker's calls and its attempts' (`runtime.block_on`,
    /// from the thread that waits for them).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Delete the entry of the job that succeeded last, if that is still to do. For a
    /// worker about to stop reserving.
    pub async fn close(&self) -> WorkerResult<()> {
        if let Some((id, uuid)) = take(&self.finished) {
            self.consumer.lock().await.delete(id).await.inspect_err(|e| warn_delete_failed(&uuid, id, e))?;
        }
        Ok(())
    }

    pub fn tubes(&self) -> &[String] {
        &self.config.tubes
    }

    /// Reserve until a job can start or `timeout` passes.
    pub async fn next(&self, timeout: Duration) -> WorkerResult<Option<Attempt>> {
        let deadline = Instant::now() + timeout;
        let mut finished = take(&self.finished);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reserved = {
                let mut consumer = self.consumer.lock().await;
                match finished.take() {
                    Some((id, uuid)) => {
                        let (deleted, reserved) = consumer.delete_then_reserve(id, left).await;
                        if let Err(e) = deleted {
                            warn_delete_failed(&uuid, id, &e);
                        }
                        reserved?
                    }
                    None => consumer.reserve(left).await?,
                }
            };
            let Some(reserved) = reserved else {
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
    /// The document is read and the attempt started in one store step (`read_then_write`).
    async fn start(&self, reserved: Reserved) -> WorkerResult<Option<Attempt>> {
        let id = reserved.id;
        let Ok(uuid) = String::from_utf8(reserved.body) else {
            log::error!("queue job {id} on {:?}: body is not a job uuid; buried", reserved.tube);
            self.bury(id).await;
            return Ok(None);
        };
        let plan = Arc::new(Triage {
            id,
            worker: self.config.name.clone(),
            token: rand::random(),
            jitter: rand::random(),
            chosen: std::sync::Mutex::new(None),
        });
        let next: NextDocument = {
            let plan = plan.clone();
            Arc::new(move |stored: &JobDocument| plan.decide(stored))
        };
        let (stored, written) = match self.geyser.store.read_then_write(&uuid, next).await {
            Ok(both) => both,
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
        let Some(stored) = stored else {
            log::error!("job {uuid} (queue job {id}): no document in the store; buried");
            self.bury(id).await;
            return Ok(None);
        };
        match (plan.chosen(), written) {
            (Some(Ok(Choice::Start)), Some(started)) => Ok(Some(self.attempt(started, id))),
            (Some(Ok(Choice::GiveUp)), Some(failed)) => {
                settle_or_log(&self.consumer, &failed, id, QueueAction::Bury).await;
                Ok(None)
            }
            (Some(Ok(Choice::Finished)), _) => {
                log::info!("job {uuid} is already {}; queue job {id} deleted", stored.status);
                self.delete(id).await;
                Ok(None)
            }
            (Some(Ok(Choice::Duplicate)), _) => {
                log::warn!("job {uuid} belongs to queue job {:?}; duplicate entry {id} deleted", stored.queue_job_id);
                self.delete(id).await;
                Ok(None)
            }
            (Some(Err(refused)), _) => Err(refused.into()),
            (_, _) => {
                // A store that returned the document without asking `decide` about it.
                self.release_soon(id).await;
                Ok(None)
            }
        }
    }

    fn attempt(&self, doc: JobDocument, queue_id: QueueJobId) -> Attempt {
        let writer = Arc::new(FencedWriter::new(self.geyser.store.clone(), &doc));
        self.heartbeat.watch(queue_id, writer.clone(), &doc, self.config.progress_interval);
        Attempt {
            doc,
            queue_id,
            consumer: self.consumer.clone(),
            writer,
            heartbeat: self.heartbeat.clone(),
            finished: self.finished.clone(),
        }
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

/// What a reserved entry's document says to do. It is decided inside the store step that
/// writes the document (every random choice drawn up front), and the choice is kept for
/// the queue action that follows.
struct Triage {
    id: QueueJobId,
    worker: String,
    /// The random half of the new attempt's fence.
    token: u128,
    /// The retry delay's jitter, should a lost attempt be recorded.
    jitter: f64,
    /// The last choice `decide` made (a store may ask again after a conflict).
    chosen: std::sync::Mutex<Option<Result<Choice, TransitionError>>>,
}

#[derive(Debug, Clone, Copy)]
enum Choice {
    /// Start an attempt.
    Start,
    /// The previous attempt's worker died and no retries are left: the job failed; bury the entry.
    GiveUp,
    /// The job is finished already: delete the entry.
    Finished,
    /// The document belongs to another queue entry: delete this stale one.
    Duplicate,
}

impl Triage {
    /// The document to write for the stored one (None for Finished and Duplicate).
    fn decide(&self, stored: &JobDocument) -> Option<JobDocument> {
        let (choice, doc) = match self.choose(stored) {
            Ok((choice, doc)) => (Ok(choice), doc),
            Err(refused) => (Err(refused), None),
        };
        if let Ok(mut chosen) = self.chosen.lock() {
            *chosen = Some(choice);
        }
        doc
    }

    fn chosen(&self) -> Option<Result<Choice, TransitionError>> {
        self.chosen.lock().ok().and_then(|mut c| c.take())
    }

    fn choose(&self, stored: &JobDocument) -> Result<(Choice, Option<JobDocument>), TransitionError> {
        if stored.status.is_terminal() {
            return Ok((Choice::Finished, None));
        }
        let id = self.id.to_string();
        if stored.queue_job_id.as_deref().is_some_and(|q| q != id) {
            return Ok((Choice::Duplicate, None));
        }
        let mut doc = stored.clone();
        if doc.status == Status::Running {
            // The previous attempt's worker died or lost its reservation: that attempt failed.
            let lost = Outcome::worker_lost(doc.attempts, "its worker stopped");
            if outcome::apply(&mut doc, lost, self.jitter)? == QueueAction::Bury {
                return Ok((Choice::GiveUp, Some(doc)));
            }
        }
        let fence = format!("{}:{:032x}", doc.attempts + 1, self.token);
        doc.queue_job_id = Some(id);
        doc.start_attempt(&self.worker, &fence)?;
        Ok((Choice::Start, Some(doc)))
    }
}

/// A finished job's entry could not be deleted; whoever reserves it next will (its document is final).
fn warn_delete_failed(uuid: &str, id: QueueJobId, e: &QueueError) {
    log::warn!("job {uuid}: queue job {id}: delete failed: {e}");
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
        self.heartbeat.progress(&self.writer, doc);
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
        let Attempt { mut doc, queue_id, consumer, writer, heartbeat, finished } = self;
        heartbeat.forget(&writer).await;
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
        if action == QueueAction::Delete {
            let earlier = finished.lock().map(|mut f| f.replace((queue_id, saved.uuid.clone()))).ok().flatten();
            if let Some((id, uuid)) = earlier {
                // Not reached through `Worker::next` (which takes it): delete it now.
                if let Err(e) = consumer.lock().await.delete(id).await {
                    warn_delete_failed(&uuid, id, &e);
                }
            }
        } else {
            settle_or_log(&consumer, &saved, queue_id, action).await;
        }
        Ok(saved)
    }
}

fn take(finished: &FinishedEntry) -> Option<(QueueJobId, String)> {
    finished.lock().ok().and_then(|mut f| f.take())
}
