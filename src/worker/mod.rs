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
mod registration;
mod reservations;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

pub use fenced::FenceError;
use fenced::FencedWriter;
use heartbeat::Heartbeat;
pub use outcome::Outcome;
use outcome::QueueAction;
use registration::Registration;
use reservations::{Reservations, SharedConsumer};

use crate::blocking::Lane;
use crate::client::Geyser;
use crate::model::{Event, InvalidJob, JobDocument, Status, TransitionError};
use crate::queue::{Consumer, QueueError, QueueJobId, Reserved};
use crate::store::{NextDocument, Store, StoreError};

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
    #[error(transparent)]
    InvalidJob(#[from] InvalidJob),
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
    /// The job types this worker can run; None: every type. An entry of another type is
    /// released with a growing delay (another worker may know it) and buried only after
    /// `FOREIGN_RELEASES` such releases, with the reason recorded on the job.
    pub job_types: Option<Arc<std::collections::HashSet<String>>>,
}

/// How many times workers that do not know a job's type release it before it is buried.
pub const FOREIGN_RELEASES: usize = 10;
/// The delay before the n-th such release is over: 2^n seconds, at most this long.
const FOREIGN_DELAY_MAX: Duration = Duration::from_secs(300);
/// The event action that records one such release on the job.
const FOREIGN_ACTION: &str = "unknown-type-released";

/// One reserving consumer and what it needs to run attempts.
pub struct Worker {
    geyser: Geyser,
    consumer: SharedConsumer,
    /// The worker's own runtime, driven by the thread that waits on its calls.
    lane: Lane,
    heartbeat: Arc<Heartbeat>,
    registration: Arc<Registration>,
    finished: FinishedEntry,
    config: WorkerConfig,
    /// Whether `finish` reserves and starts the next job on its way (see `Worker::finish`).
    prefetch: AtomicBool,
    /// The attempt `finish` started, for the next `next` to return.
    pending: std::sync::Mutex<Option<Attempt>>,
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
    /// `heartbeat_on`; the heartbeat registers the worker in the store under `config.name`
    /// (`registration.rs`). Blocks: call it where blocking is allowed.
    pub fn open(geyser: Geyser, config: WorkerConfig, heartbeat_on: &tokio::runtime::Handle) -> WorkerResult<Self> {
        let lane = Lane::new().map_err(WorkerError::Runtime)?;
        let consumer: SharedConsumer = Arc::new(Mutex::new(lane.block_on(geyser.queue.consumer(&config.tubes))?));
        let reservations = Reservations::new(consumer.clone(), lane.runtime());
        let registration = Arc::new(Registration::new(geyser.store.clone(), &config.name, &config.tubes));
        let heartbeat = {
            let _on = heartbeat_on.enter();
            Arc::new(Heartbeat::start(reservations, config.hard_stop_after, registration.clone()))
        };
        Ok(Self {
            geyser,
            consumer,
            lane,
            heartbeat,
            registration,
            finished: FinishedEntry::default(),
            config,
            prefetch: AtomicBool::new(false),
            pending: std::sync::Mutex::new(None),
        })
    }

    /// Run one of this worker's calls (`next`, `finish`, `close`) to completion, driven by
    /// this thread, on the worker's own lane (`blocking.rs`): its queue connection, and a
    /// store connection of its own, do their I/O on this thread.
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        self.lane.block_on(fut)
    }

    /// Whether `finish` also starts the next job (off for a new worker). A worker loop turns it
    /// on while it goes on reserving, and off as soon as it is to stop, so that no job is
    /// started for it that it would only hand back.
    pub fn set_prefetch(&self, on: bool) {
        self.prefetch.store(on, Ordering::Release);
    }

    /// Hand back the job `finish` started for a next `next` that did not come, remove the
    /// worker's registration, and delete the entry of the job that succeeded last, if that is
    /// still to do. For a worker about to stop reserving.
    pub async fn close(&self) -> WorkerResult<()> {
        self.set_prefetch(false);
        if let Some(attempt) = take_pending(&self.pending) {
            let doc = attempt.doc.clone();
            if let Err(e) = attempt.finish(doc, Outcome::HandBack).await {
                log::warn!("could not hand back the job started for the next reserve: {e}");
            }
        }
        let removed = self.registration.remove().await;
        if let Some((id, uuid)) = take(&self.finished) {
            self.consumer.lock().await.delete(id).await.inspect_err(|e| warn_delete_failed(&uuid, id, e))?;
        }
        removed?;
        Ok(())
    }

    pub fn tubes(&self) -> &[String] {
        &self.config.tubes
    }

    /// The job types this worker runs (None: every type).
    pub fn job_types(&self) -> Option<Arc<std::collections::HashSet<String>>> {
        self.config.job_types.clone()
    }

    /// Reserve until a job can start or `timeout` passes.
    pub async fn next(&self, timeout: Duration) -> WorkerResult<Option<Attempt>> {
        if let Some(attempt) = take_pending(&self.pending) {
            return Ok(Some(attempt));
        }
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
        match job_uuid(reserved) {
            Ok((id, uuid)) => self.start_job(id, &uuid).await,
            Err((id, tube, body)) => self.bury_foreign_body(id, &tube, &body).await,
        }
    }

    fn triage(&self, id: QueueJobId) -> Triage {
        Triage {
            id,
            worker: self.config.name.clone(),
            job_types: self.config.job_types.clone(),
            token: rand::random(),
            jitter: rand::random(),
            chosen: std::sync::Mutex::new(None),
        }
    }

    /// `start` for the entry `id` of job `uuid`.
    async fn start_job(&self, id: QueueJobId, uuid: &str) -> WorkerResult<Option<Attempt>> {
        let plan = Arc::new(self.triage(id));
        let next: NextDocument = {
            let plan = plan.clone();
            Arc::new(move |stored: &JobDocument| plan.decide(stored))
        };
        let (stored, written) = match self.geyser.store.read_then_write(uuid, next).await {
            Ok(both) => both,
            Err(e @ (StoreError::Corrupt { .. } | StoreError::Inconsistent { .. })) => {
                log::error!("{e}; queue job {id} buried (kick it once the document is repaired)");
                self.bury(id).await;
                return Ok(None);
            }
            Err(e @ (StoreError::Unavailable(_) | StoreError::Backend { .. })) => {
                self.release_soon(id).await;
                return Err(e.into());
            }
            Err(e) => {
                // This one job could not be started (e.g. its document kept changing): the
                // others can. It comes back after a while.
                log::error!("job {uuid} (queue job {id}) not started: {e}; released for {FOREIGN_PAUSE:?}");
                self.release(id, FOREIGN_PAUSE).await;
                return Ok(None);
            }
        };
        let Some(stored) = stored else {
            log::error!("job {uuid} (queue job {id}): no document in the store; buried");
            self.bury(id).await;
            return Ok(None);
        };
        match (plan.chosen(), written) {
            (Some(Ok(Choice::Start)), Some(started)) => Ok(Some(self.attempt(started, id))),
            (Some(Ok(Choice::Foreign { delay })), _) => {
                log::info!(
                    "job {uuid} is of type {:?}, which this worker does not know; queue job {id} released for {delay:?}",
                    stored.job_type
                );
                self.release(id, delay).await;
                Ok(None)
            }
            (Some(Ok(Choice::Owned { delay })), _) => {
                let owner = stored.worker.as_deref().unwrap_or("?");
                log::info!("job {uuid} is running on live worker {owner}; queue job {id} released for {delay:?}");
                self.release(id, delay).await;
                Ok(None)
            }
            (Some(Ok(Choice::GiveUp)), Some(failed)) => {
                bury_and_name(self.geyser.store.as_ref(), &self.consumer, &failed, id).await;
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
            (Some(Err(refused)), _) => {
                log::error!("queue job {id}: {refused}; buried");
                self.bury(id).await;
                Ok(None)
            }
            (_, _) => {
                // A store that returned the document without asking `decide` about it.
                self.release_soon(id).await;
                Ok(None)
            }
        }
    }

    /// End `attempt` as `Attempt::finish` does. With prefetch on (`set_prefetch`) and an
    /// entry to delete, it first reserves the next entry at once (in the round trip that
    /// deletes the last finished job's entry) and, when that job can start, writes this
    /// attempt's final document and the next job's start in one store call
    /// (`Store::update_many`: one statement, pipeline or transaction), so a job in a busy
    /// queue costs one store commit, not two; the next `next` returns the started attempt.
    /// As without: the final document is saved before this returns and before its entry is
    /// deleted, the next job's start before it runs, each by compare-and-swap (the final one
    /// fenced); a conflict on either falls back to the one-write path.
    pub async fn finish(&self, attempt: Attempt, job: JobDocument, outcome: Outcome) -> WorkerResult<JobDocument> {
        if !self.prefetch.load(Ordering::Acquire) {
            return attempt.finish(job, outcome).await;
        }
        let Attempt { doc, queue_id, consumer, writer, heartbeat, finished } = attempt;
        heartbeat.forget(&writer).await;
        let (doc, action) = conclude(doc, job, outcome)?;
        let next = if action == QueueAction::Delete { self.reserve_now().await } else { None };
        let Some((id, uuid)) = next else {
            let saved = write_final(&writer, &consumer, queue_id, doc).await?;
            settle_final(writer.store(), &consumer, &finished, queue_id, &saved, action).await;
            return Ok(saved);
        };
        let plan = self.triage(id);
        let start = match self.geyser.store.get(&uuid).await {
            Ok(Some(stored)) => plan
                .decide(&stored)
                .filter(|_| matches!(plan.chosen(), Some(Ok(Choice::Start))))
                .map(|new| JobDocument { version: stored.version, ..new }),
            // Whatever it is, the one-write path below deals with it (and reads again).
            _ => None,
        };
        let (written, started) = match (start, writer.prepare(doc)) {
            (Some(start), Ok(last)) => match self.geyser.store.update_many(&[last.clone(), start]).await {
                Ok(results) => {
                    let mut results = results.into_iter();
                    let written = match results.next() {
                        Some(Ok(saved)) => {
                            writer.written(&saved);
                            Ok(saved)
                        }
                        // Moved on (a cancel request, a newer attempt): the fenced write finds out.
                        Some(Err(StoreError::Conflict { .. } | StoreError::NotFound(_))) | None => {
                            writer.write(last).await
                        }
                        Some(Err(e)) => Err(FenceError::Store(e)),
                    };
                    (written, results.next().and_then(Result::ok))
                }
                Err(e) => (Err(FenceError::Store(e)), None),
            },
            (_, Ok(last)) => (writer.write(last).await, None),
            (_, Err(lost)) => (Err(lost), None),
        };
        let next = match started {
            Some(doc) => Ok(Some(self.attempt(doc, id))),
            // Not started together: the one-write start reads the document again and settles
            // the entry whatever it holds (a conflict, another status, a store error).
            None => self.start_job(id, &uuid).await,
        };
        match next {
            Ok(Some(attempt)) => {
                if let Ok(mut pending) = self.pending.lock() {
                    *pending = Some(attempt);
                }
            }
            Ok(None) => {}
            Err(e) => log::warn!("job {uuid} (queue job {id}) not started: {e}"),
        }
        let saved = final_written(written, &consumer, queue_id).await?;
        settle_final(writer.store(), &consumer, &finished, queue_id, &saved, action).await;
        Ok(saved)
    }

    /// Reserve the next entry if one is ready now (deleting the last finished job's entry in
    /// the same round trip): its id and job uuid. None when none is ready or the queue failed
    /// (the next `next` finds out again); an entry that names no job is buried.
    async fn reserve_now(&self) -> Option<(QueueJobId, String)> {
        let reserved = {
            let mut consumer = self.consumer.lock().await;
            match take(&self.finished) {
                Some((id, uuid)) => {
                    let (deleted, reserved) = consumer.delete_then_reserve(id, Duration::ZERO).await;
                    if let Err(e) = deleted {
                        warn_delete_failed(&uuid, id, &e);
                    }
                    reserved
                }
                None => consumer.reserve(Duration::ZERO).await,
            }
        };
        match reserved {
            Ok(Some(reserved)) => match job_uuid(reserved) {
                Ok(job) => Some(job),
                Err((id, tube, body)) => {
                    let _ = self.bury_foreign_body(id, &tube, &body).await;
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                log::debug!("no next job reserved on finishing: {e}");
                None
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

    async fn bury_foreign_body(&self, id: QueueJobId, tube: &str, body: &[u8]) -> WorkerResult<Option<Attempt>> {
        const QUOTED: usize = 64;
        let shown = String::from_utf8_lossy(&body[..body.len().min(QUOTED)]);
        let more = if body.len() > QUOTED { format!("... ({} bytes)", body.len()) } else { String::new() };
        log::error!("queue job {id} on {tube:?}: body {shown:?}{more} is not a job uuid; buried");
        self.bury(id).await;
        Ok(None)
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
        self.release(id, Duration::from_secs(1)).await
    }

    async fn release(&self, id: QueueJobId, delay: Duration) {
        if let Err(e) = self.consumer.lock().await.release(id, 0, delay).await {
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
    job_types: Option<Arc<std::collections::HashSet<String>>>,
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
    /// This worker does not know the job's type: release the entry for `delay`.
    Foreign { delay: Duration },
    /// The job is running under a live worker (its heartbeat is fresher than the TTR) whose
    /// reservation the queue lost: release the entry until that heartbeat could be stale.
    Owned { delay: Duration },
}

/// How long an entry that could not be started (not for lack of a store) stays released.
const FOREIGN_PAUSE: Duration = Duration::from_secs(5);

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
        let id = self.id.to_string();
        let kicked = stored.status == Status::Failed && stored.queue_job_id.as_deref() == Some(id.as_str());
        if stored.status.is_terminal() && !kicked {
            if crashed_out(stored) {
                // Failed by the supervisor after its worker processes kept dying (the entry
                // was still reserved then): bury the entry that came back; `bury_and_name`
                // then names it in the document, so that a kick runs the job again.
                return Ok((Choice::GiveUp, Some(stored.clone())));
            }
            return Ok((Choice::Finished, None));
        }
        if stored.queue_job_id.as_deref().is_some_and(|q| q != id) {
            return Ok((Choice::Duplicate, None));
        }
        if let Some(delay) = heartbeat::owner_alive_for(stored, crate::model::now()) {
            // Its worker is alive though the queue gave the entry back (a beanstalkd restart):
            // not lost. Look again once its heartbeat could be stale.
            return Ok((Choice::Owned { delay }, None));
        }
        let mut doc = stored.clone();
        if kicked {
            // A failed job's entry is kept only when it was buried: an operator kicked it.
            doc.retry()?;
        }
        if let Some(foreign) = self.foreign(&doc)? {
            return Ok(foreign);
        }
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

impl Triage {
    /// For a job type this worker does not know: record the release on the job and pick
    /// its delay, or, after `FOREIGN_RELEASES` of them, fail the job so its entry is buried.
    fn foreign(&self, stored: &JobDocument) -> Result<Option<(Choice, Option<JobDocument>)>, TransitionError> {
        let Some(known) = &self.job_types else { return Ok(None) };
        if known.contains(&stored.job_type) || stored.status != Status::Queued {
            return Ok(None);
        }
        let released = stored.events.iter().filter(|e| e.action == FOREIGN_ACTION).count();
        let mut doc = stored.clone();
        doc.queue_job_id = Some(self.id.to_string());
        if released >= FOREIGN_RELEASES {
            let msg = format!(
                "no worker watching queue {:?} knows job type {:?} (released {released} times; last by {}); \
                 start a worker with its module, then retry the job",
                doc.queue_kwargs.queue, doc.job_type, self.worker
            );
            doc.give_up(serde_json::Value::from("unknown-job-type"), &msg)?;
            doc.queue_job_id = None; // named once the entry is buried (`bury_and_name`)
            return Ok(Some((Choice::GiveUp, Some(doc))));
        }
        let delay = Duration::from_secs(1u64 << released.min(16)).min(FOREIGN_DELAY_MAX);
        doc.updated_at = crate::model::now();
        doc.events.push(Event {
            msg: format!("worker {} does not know job type {:?}; released for {delay:?}", self.worker, doc.job_type),
            action: FOREIGN_ACTION.into(),
            at: doc.updated_at,
        });
        Ok(Some((Choice::Foreign { delay }, Some(doc))))
    }
}

/// Whether a failed document was failed by `crash::record_crash` with no entry left to name:
/// its entry, given back when the dead process's reservation ended, is to be buried.
fn crashed_out(doc: &JobDocument) -> bool {
    doc.status == Status::Failed
        && doc.queue_job_id.is_none()
        && doc.errors.last().is_some_and(|e| e.error_code.as_str() == Some(crash::CRASH_CODE))
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
    /// The job's latest state, saved within one progress interval. A state that breaks
    /// the document's rules is refused (nothing is saved) and the error names the field.
    pub fn progress(&self, job: JobDocument) -> Result<(), InvalidJob> {
        let mut doc = self.doc.clone();
        doc.take_progress_from(job)?;
        self.heartbeat.progress(&self.writer, doc);
        Ok(())
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
        let Attempt { doc, queue_id, consumer, writer, heartbeat, finished } = self;
        heartbeat.forget(&writer).await;
        let (doc, action) = conclude(doc, job, outcome)?;
        let saved = write_final(&writer, &consumer, queue_id, doc).await?;
        settle_final(writer.store(), &consumer, &finished, queue_id, &saved, action).await;
        Ok(saved)
    }
}

fn take(finished: &FinishedEntry) -> Option<(QueueJobId, String)> {
    finished.lock().ok().and_then(|mut f| f.take())
}

fn take_pending(pending: &std::sync::Mutex<Option<Attempt>>) -> Option<Attempt> {
    pending.lock().ok().and_then(|mut p| p.take())
}

/// A reserved entry's id and job uuid; or, for a body that is no uuid (another program's
/// entry, a bug), its id, tube and body, to bury.
fn job_uuid(reserved: Reserved) -> Result<(QueueJobId, String), (QueueJobId, String, Vec<u8>)> {
    let Reserved { id, tube, body } = reserved;
    match String::from_utf8(body) {
        Ok(uuid) if uuid::Uuid::parse_str(&uuid).is_ok() => Ok((id, uuid)),
        Ok(text) => Err((id, tube, text.into_bytes())),
        Err(e) => Err((id, tube, e.into_bytes())),
    }
}

/// The final document of an attempt that started as `doc`, given the job's last state and
/// the outcome; and the queue action once it is saved.
fn conclude(mut doc: JobDocument, job: JobDocument, outcome: Outcome) -> WorkerResult<(JobDocument, QueueAction)> {
    let outcome = match doc.take_progress_from(job) {
        Ok(()) => outcome,
        // What the job did to its document is this attempt's error; its state at the
        // start of the attempt is kept.
        Err(invalid) => Outcome::Continue {
            code: serde_json::Value::from("invalid-document"),
            msg: invalid.to_string(),
            traceback: None,
        },
    };
    let action = outcome::apply(&mut doc, outcome, rand::random())?;
    Ok((doc, action))
}

/// Write an attempt's final document (fenced).
async fn write_final(
    writer: &FencedWriter,
    consumer: &Mutex<Box<dyn Consumer>>,
    queue_id: QueueJobId,
    doc: JobDocument,
) -> WorkerResult<JobDocument> {
    final_written(writer.write(doc).await, consumer, queue_id).await
}

/// What became of an attempt's final write: a lost attempt's outcome is dropped; a document
/// that could not be saved gives its entry back, so the job is not lost.
async fn final_written(
    written: Result<JobDocument, FenceError>,
    consumer: &Mutex<Box<dyn Consumer>>,
    queue_id: QueueJobId,
) -> WorkerResult<JobDocument> {
    match written {
        Ok(saved) => Ok(saved),
        Err(e @ FenceError::Lost { .. }) => {
            log::warn!("{e}; this attempt's outcome is dropped");
            Err(e.into())
        }
        Err(e) => {
            let _ = consumer.lock().await.release(queue_id, 0, Duration::from_secs(1)).await;
            Err(e.into())
        }
    }
}

/// The queue half of an attempt's end, once its final document is saved. An entry to delete
/// waits for the next reserve (`FinishedEntry`).
async fn settle_final(
    store: &dyn Store,
    consumer: &Mutex<Box<dyn Consumer>>,
    finished: &FinishedEntry,
    queue_id: QueueJobId,
    saved: &JobDocument,
    action: QueueAction,
) {
    if action == QueueAction::Delete {
        let earlier = finished.lock().map(|mut f| f.replace((queue_id, saved.uuid.clone()))).ok().flatten();
        if let Some((id, uuid)) = earlier {
            // Not reached through `Worker::next` (which takes it): delete it now.
            if let Err(e) = consumer.lock().await.delete(id).await {
                warn_delete_failed(&uuid, id, &e);
            }
        }
    } else if action == QueueAction::Bury {
        bury_and_name(store, consumer, saved, queue_id).await;
    } else {
        settle_or_log(consumer, saved, queue_id, action).await;
    }
}

/// Bury the entry of a job whose failed document is saved (naming no entry), then name the
/// entry in the document by one compare-and-swap at the saved version. Written in that
/// order, a failed document that names its entry means the entry is buried: should the bury
/// be lost (the process dies first, or its reservation ended meanwhile), the entry that
/// comes back is deleted as a stray, never taken for a kick and run past the job's retries.
/// A document changed since (retried, deleted) is left alone; its buried entry is then a
/// stray, deleted should anyone kick it.
async fn bury_and_name(store: &dyn Store, consumer: &Mutex<Box<dyn Consumer>>, failed: &JobDocument, id: QueueJobId) {
    if let Err(e) = settle(consumer, failed, id, QueueAction::Bury).await {
        log::warn!("job {}: queue job {id}: bury failed: {e}; whoever reserves it next deletes it", failed.uuid);
        return;
    }
    let named = JobDocument { queue_job_id: Some(id.to_string()), ..failed.clone() };
    match store.update(&named).await {
        Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
        Err(e) => log::warn!(
            "job {}: queue job {id} is buried but the document could not name it ({e}); a kick of it deletes it",
            failed.uuid
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triage(job_types: &[&str]) -> Triage {
        Triage {
            id: QueueJobId::new(0, 7),
            worker: "w".into(),
            job_types: Some(Arc::new(job_types.iter().map(|t| t.to_string()).collect())),
            token: 1,
            jitter: 0.0,
            chosen: std::sync::Mutex::new(None),
        }
    }

    fn queued(job_type: &str) -> JobDocument {
        serde_json::from_value(serde_json::json!({
            "jobType": job_type, "createdAt": 1.0, "updatedAt": 1.0, "uuid": "u",
            "queueKwargs": {"queue": "shared", "priority": 1, "ttr": 5.0},
            "status": "queued", "maxRetries": 0, "queueJobId": "0:7"
        }))
        .unwrap()
    }

    #[test]
    fn an_unknown_type_is_released_with_growing_delays_then_given_up() {
        let t = triage(&["alpha"]);
        let mut doc = queued("beta");
        let mut delays = Vec::new();
        for _ in 0..FOREIGN_RELEASES {
            let (choice, written) = t.choose(&doc).unwrap();
            let Choice::Foreign { delay } = choice else { panic!("{choice:?}") };
            delays.push(delay.as_secs());
            doc = written.unwrap();
            assert_eq!((doc.status, doc.attempts), (Status::Queued, 0));
        }
        assert_eq!(&delays[..4], &[1, 2, 4, 8]);
        assert!(delays.iter().all(|d| *d <= FOREIGN_DELAY_MAX.as_secs()));
        let (choice, written) = t.choose(&doc).unwrap();
        assert!(matches!(choice, Choice::GiveUp), "{choice:?}");
        let failed = written.unwrap();
        assert_eq!((failed.status, failed.attempts, failed.queue_job_id), (Status::Failed, 0, None));
        assert!(failed.errors[0].msg.contains("beta"), "{:?}", failed.errors);
    }

    #[test]
    fn a_known_type_starts_and_a_kicked_failed_job_runs_again() {
        let t = triage(&["alpha"]);
        let (choice, started) = t.choose(&queued("alpha")).unwrap();
        assert!(matches!(choice, Choice::Start), "{choice:?}");
        let mut failed = started.unwrap();
        failed.failures = 1;
        failed.fail().unwrap();
        let (choice, again) = t.choose(&failed).unwrap();
        assert!(matches!(choice, Choice::Start), "{choice:?}");
        let again = again.unwrap();
        assert_eq!((again.status, again.attempts, again.failures), (Status::Running, 2, 0));
        // A failed job whose entry was deleted (WFErrorFinish), or whose bury never happened
        // (the failed document names its entry only once it is buried), never runs from a
        // stray entry.
        failed.queue_job_id = None;
        assert!(matches!(t.choose(&failed).unwrap().0, Choice::Finished));
        // One failed because its worker processes kept dying: its entry is buried, then named.
        failed.record_error(serde_json::Value::from(crash::CRASH_CODE), "worker process 9 died", None);
        let (choice, buried) = t.choose(&failed).unwrap();
        assert!(matches!(choice, Choice::GiveUp), "{choice:?}");
        assert_eq!(buried.unwrap().queue_job_id, None);
    }
}
