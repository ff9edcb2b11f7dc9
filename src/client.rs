//! What producers and readers do with jobs: enqueue (see `enqueue.rs`), read,
//! save with compare-and-swap, cancel. Talks to one queue and one store; runs no jobs.
//! Remembers the documents it last handed out (`recent.rs`) so that saving one costs one
//! store write instead of a read and a write.

mod recent;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::enqueue::{Enqueuer, Outbox};
use crate::model::{now, InvalidJob, JobDocument, Status, TransitionError};
use crate::queue::{PutOptions, Queue, QueueError, QueueJobId, TubeStats};
use crate::store::{ListFilter, NextDocument, Page, Store, StoreError, WorkerRecord};
pub use recent::{Recent, RecentStats};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    InvalidJob(#[from] InvalidJob),
    /// An operation the job's current status does not allow (e.g. deleting a running job).
    #[error("job {uuid} is {status}: {op} needs a job that is {needs}")]
    WrongStatus { uuid: String, status: Status, op: &'static str, needs: &'static str },
    #[error("job {uuid}: {reason}")]
    Invalid { uuid: String, reason: String },
    /// `enqueue_many` refused the whole batch for the job at `index` (0-based); nothing was written.
    #[error("job {index} of the batch: {source}")]
    InBatch { index: usize, source: Box<ClientError> },
}

pub type ClientResult<T> = Result<T, ClientError>;

/// Seconds as a Duration, treating negative or NaN as zero.
pub fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::ZERO)
}

/// `Geyser::wait` polls the store no faster than this at first, and slows down to `WAIT_POLL_MAX`.
pub const WAIT_POLL_MIN: Duration = Duration::from_millis(50);
pub const WAIT_POLL_MAX: Duration = Duration::from_secs(1);

/// `enqueue_many` hands the enqueuer this many jobs at a time (one store transaction each):
/// enough to amortise a commit, few enough that a worker waiting to write to the same SQLite
/// file waits a fraction of a second, far from the busy timeout.
pub const ENQUEUE_CHUNK: usize = 10_000;

/// The queue and the store one process talks to, and how it enqueues into them.
#[derive(Clone)]
pub struct Geyser {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn Store>,
    enqueuer: Arc<dyn Enqueuer>,
    /// The documents last handed to callers, shared by every clone of this client.
    recent: Arc<Recent>,
}

/// Entries on a set of queues, as `Geyser::backlog` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Ready or delayed.
    pub waiting: u64,
    pub reserved: u64,
    /// Of the waiting ones, those whose job type the asking worker does not know.
    pub foreign: u64,
}

impl Backlog {
    /// Waiting entries the asking worker can run.
    pub fn runnable(&self) -> u64 {
        self.waiting.saturating_sub(self.foreign)
    }
}

/// The stored document before a change, and what was written (None: nothing).
struct Changed {
    before: JobDocument,
    written: Option<JobDocument>,
}

impl Changed {
    /// The document as it stands now.
    fn current(self) -> JobDocument {
        self.written.unwrap_or(self.before)
    }
}

impl Geyser {
    pub fn new(queue: Arc<dyn Queue>, store: Arc<dyn Store>, enqueuer: Arc<dyn Enqueuer>) -> Self {
        Self { queue, store, enqueuer, recent: Arc::default() }
    }

    /// This client, remembering the documents it hands out in `recent` (bounds of its own)
    /// instead of the default memory (`recent::MAX_ENTRIES`, `recent::MAX_BYTES`).
    pub fn remembering(self, recent: Recent) -> Self {
        Self { recent: Arc::new(recent), ..self }
    }

    /// How the memory of handed-out documents is used and how often `save` found its document there.
    pub fn recent_stats(&self) -> RecentStats {
        self.recent.stats()
    }

    /// `doc`, remembered as handed out: it must be exactly as the store returned or wrote it.
    fn handed_out(&self, doc: JobDocument) -> JobDocument {
        self.recent.remember(doc.clone());
        doc
    }

    /// Separate store and queue: enqueue commits the document, and this process's relay
    /// puts the queue entry and notes its id (`enqueue/outbox.rs`).
    pub fn with_outbox(queue: Arc<dyn Queue>, store: Arc<dyn Store>) -> Self {
        let enqueuer = Arc::new(Outbox::new(queue.clone(), store.clone()));
        Self::new(queue, store, enqueuer)
    }

    /// Jobs this client enqueued whose queue entries are not put yet (0 where the entry is
    /// put in the enqueue's own transaction).
    pub fn pending(&self) -> usize {
        self.enqueuer.pending()
    }

    /// Wait until every job this client enqueued is on its queue, or `timeout` has passed;
    /// returns how many are still not put.
    pub async fn flush(&self, timeout: Duration) -> usize {
        self.enqueuer.flush(timeout).await
    }

    /// Engine operation `enqueue`: save a new job document for its queue (see `enqueue.rs`
    /// for how the entry is put: in the same transaction, or by this process's relay).
    /// Only the job's type, own fields, progress and options are taken from `doc`; the
    /// engine sets every lifecycle field itself.
    pub async fn enqueue(&self, mut doc: JobDocument, delay: f64) -> ClientResult<JobDocument> {
        if doc.version != 0 {
            return Err(ClientError::Invalid {
                uuid: doc.uuid,
                reason: "is already saved; enqueue takes a new job".into(),
            });
        }
        doc.reset_for_enqueue(delay)?;
        let opts =
            PutOptions { priority: doc.queue_kwargs.priority, delay: secs(delay), ttr: secs(doc.queue_kwargs.ttr) };
        self.enqueuer.enqueue(doc, opts).await.map(|saved| self.handed_out(saved))
    }

    /// Engine operation `enqueue` for many new jobs at once (docs/lifecycle.md "Bulk
    /// enqueue"): every job is checked first (`InBatch` names the first refused one, and
    /// nothing is written), then the documents are written (and the entries put, or handed
    /// to the relay) in as few round trips as the backends allow, `ENQUEUE_CHUNK` jobs at a
    /// time. One result per job, in order: a job that failed left nothing behind. An error
    /// of the whole call means nothing was written.
    pub async fn enqueue_many(
        &self,
        docs: Vec<JobDocument>,
        delay: f64,
    ) -> ClientResult<Vec<ClientResult<JobDocument>>> {
        let mut jobs = Vec::with_capacity(docs.len());
        let mut seen = std::collections::HashMap::with_capacity(docs.len());
        for (index, mut doc) in docs.into_iter().enumerate() {
            let refuse = |source: ClientError| ClientError::InBatch { index, source: Box::new(source) };
            if let Some(first) = seen.insert(doc.uuid.clone(), index) {
                let reason = format!("is job {first} of the batch too; each job is enqueued once");
                return Err(refuse(ClientError::Invalid { uuid: doc.uuid, reason }));
            }
            if doc.version != 0 {
                let reason = "is already saved; enqueue takes a new job".into();
                return Err(refuse(ClientError::Invalid { uuid: doc.uuid, reason }));
            }
            doc.reset_for_enqueue(delay).map_err(|e| refuse(e.into()))?;
            crate::queue::check_tube(&doc.queue_kwargs.queue).map_err(|e| refuse(e.into()))?;
            let kw = &doc.queue_kwargs;
            let opts = PutOptions { priority: kw.priority, delay: secs(delay), ttr: secs(kw.ttr) };
            jobs.push((doc, opts));
        }
        let mut out = Vec::with_capacity(jobs.len());
        let mut rest = jobs.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<_> = rest.by_ref().take(ENQUEUE_CHUNK).collect();
            let n = chunk.len();
            match self.enqueuer.enqueue_many(chunk).await {
                Ok(results) => out.extend(results),
                Err(e) if out.is_empty() => return Err(e), // nothing written yet
                Err(e) => {
                    let reason = format!("not written: {e}");
                    out.extend((0..n).map(|_| Err(StoreError::Unavailable(reason.clone()).into())));
                }
            }
        }
        Ok(out)
    }

    pub async fn get(&self, uuid: &str) -> ClientResult<Option<JobDocument>> {
        Ok(self.store.get(uuid).await?.map(|doc| self.handed_out(doc)))
    }

    /// `get` for a caller that takes the document as JSON text (the Python client): the
    /// document itself goes into the memory, with no copy made (a read is the cheapest call
    /// there is, and a copy cost 20% of a SQLite get's CPU), and the text is the store's own
    /// where it keeps `to_json`'s (`Store::get_with_json`), not written out again.
    pub async fn get_json(&self, uuid: &str) -> ClientResult<Option<Vec<u8>>> {
        let Some((doc, json)) = self.store.get_with_json(uuid).await? else { return Ok(None) };
        self.recent.remember(doc);
        Ok(Some(json))
    }

    /// Read the document and write `change`'s successor of it in one store step.
    /// `change` returns the document to write, None to leave it, or an error to refuse.
    async fn change<F>(&self, uuid: &str, change: F) -> ClientResult<Changed>
    where
        F: Fn(&JobDocument) -> ClientResult<Option<JobDocument>> + Send + Sync + 'static,
    {
        let refused: Arc<Mutex<Option<ClientError>>> = Arc::default();
        let next: NextDocument = {
            let refused = refused.clone();
            Arc::new(move |stored: &JobDocument| {
                let (doc, error) = match change(stored) {
                    Ok(doc) => (doc, None),
                    Err(e) => (None, Some(e)),
                };
                if let Ok(mut slot) = refused.lock() {
                    *slot = error;
                }
                doc
            })
        };
        let (before, written) = self.store.read_then_write(uuid, next).await?;
        if let Some(e) = refused.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(e);
        }
        let before = before.ok_or_else(|| StoreError::NotFound(uuid.to_owned()))?;
        Ok(Changed { before, written })
    }

    /// Write the job's own fields and progress from `doc`, which the caller read at
    /// `doc.version` (`Conflict` if the document changed since). Every lifecycle field in
    /// `doc` is ignored: only named operations change those. They are taken from the stored
    /// document: the one this client handed out at `doc.version` if it still remembers it (one
    /// compare-and-swap at that version), else the one read now (a read, then the swap).
    pub async fn save(&self, doc: &JobDocument) -> ClientResult<JobDocument> {
        if let Some(new) = self.successor_of_remembered(doc) {
            match self.store.update(&new).await {
                // Read below: the write in between may be the relay noting the queue id.
                Err(StoreError::Conflict { .. }) => {}
                written => return Ok(self.handed_out(written?)),
            }
        }
        self.save_after_reading(doc).await
    }

    /// `save` for a caller that takes the saved document as JSON text (the Python client):
    /// after the one compare-and-swap, the written document goes into the memory with no
    /// copy made, and the text is the one the store wrote where it writes `to_json`'s
    /// (`Store::update_with_json`), not written out again.
    pub async fn save_json(&self, doc: &JobDocument) -> ClientResult<Vec<u8>> {
        if let Some(new) = self.successor_of_remembered(doc) {
            match self.store.update_with_json(&new).await {
                Err(StoreError::Conflict { .. }) => {} // read below, as `save` does
                Err(e) => return Err(e.into()),
                Ok((written, json)) => {
                    self.recent.remember(written);
                    return Ok(json);
                }
            }
        }
        Ok(self.save_after_reading(doc).await?.to_json())
    }

    /// `save` with the lifecycle fields taken from the document as stored now: a read, then
    /// a compare-and-swap (`Conflict` if it moved on since `doc.version`).
    async fn save_after_reading(&self, doc: &JobDocument) -> ClientResult<JobDocument> {
        let job = doc.clone();
        let changed = self
            .change(&doc.uuid, move |stored| {
                if stored.version != job.version && !only_queue_id_noted(&job, stored) {
                    return Err(StoreError::Conflict { uuid: job.uuid.clone(), expected: job.version }.into());
                }
                let mut new = stored.clone();
                new.take_progress_from(job.clone())?;
                Ok(Some(new))
            })
            .await?;
        Ok(self.handed_out(changed.current()))
    }

    /// The document `save` writes for `doc`, built on the one this client handed out at
    /// `doc.version` (taken from its memory), or None to read the stored one instead: when
    /// that version is not remembered, when `doc` is of another job that had the same uuid
    /// (its `createdAt` differs), or when `doc`'s progress is refused (the read then says
    /// whether the document moved on, which `save` reports first).
    fn successor_of_remembered(&self, doc: &JobDocument) -> Option<JobDocument> {
        let mut new = self.recent.take(&doc.uuid, doc.version)?;
        if new.created_at != doc.created_at {
            return None;
        }
        new.take_progress_from(doc.clone()).ok()?;
        Some(new)
    }

    /// Engine operation `cancel`: a queued job is cancelled at once and leaves its queue;
    /// a running one is flagged, and its worker stops it. Finished jobs are left alone
    /// (the returned document says which status they have).
    pub async fn cancel(&self, uuid: &str) -> ClientResult<JobDocument> {
        let changed = self
            .change(uuid, |stored| {
                let mut doc = stored.clone();
                match doc.status {
                    s if s.is_terminal() => return Ok(None),
                    Status::Queued => doc.cancel()?,
                    _ if doc.cancel_requested => return Ok(None),
                    _ => {
                        doc.cancel_requested = true;
                        doc.updated_at = now();
                    }
                }
                Ok(Some(doc))
            })
            .await?;
        let doc = self.handed_out(changed.current());
        if doc.status == Status::Cancelled {
            // A job enqueued here moments ago names no entry yet: the relay gives it up.
            let unnoted = || self.enqueuer.withdraw(&doc.uuid).map(|id| id.to_string());
            let entry = doc.queue_job_id.clone().or_else(unnoted);
            self.drop_queue_entry(&doc.uuid, entry.as_deref()).await;
        }
        Ok(doc)
    }

    /// Engine operation `retry`: a failed (or buried) or cancelled job is queued again,
    /// with its retry budget renewed and its attempts, events and errors kept. Its old
    /// queue entry (a buried one) is replaced by a new one. Any other status is refused.
    pub async fn retry(&self, uuid: &str) -> ClientResult<JobDocument> {
        let changed = self
            .change(uuid, |stored| {
                if !matches!(stored.status, Status::Failed | Status::Cancelled) {
                    return Err(wrong_status(stored, "retry", "failed or cancelled"));
                }
                let mut doc = stored.clone();
                doc.retry()?;
                doc.queue_job_id = None;
                Ok(Some(doc))
            })
            .await?;
        let Changed { before, written } = changed;
        let Some(queued) = written else {
            return Err(wrong_status(&before, "retry", "failed or cancelled"));
        };
        self.drop_queue_entry(uuid, before.queue_job_id.as_deref()).await;
        self.put_again(queued).await
    }

    /// Put a queued document with no queue entry on its queue, and note the entry's id.
    /// Should the put fail, the document stays queued with no entry and the maintenance
    /// sweep puts it later; the caller gets the document as it is.
    async fn put_again(&self, doc: JobDocument) -> ClientResult<JobDocument> {
        let kw = &doc.queue_kwargs;
        let delay = doc.next_run_at.map_or(0.0, |at| at - now());
        let opts = PutOptions { priority: kw.priority, delay: secs(delay), ttr: secs(kw.ttr) };
        let id = match self.queue.put(&kw.queue, doc.uuid.as_bytes(), opts).await {
            Ok(id) => id,
            Err(e) => {
                log::warn!("job {}: queued, but its queue entry could not be put now ({e}); the sweep will", doc.uuid);
                return Ok(self.handed_out(doc));
            }
        };
        let noted = id.to_string();
        let changed = self
            .change(&doc.uuid, move |stored| {
                if stored.queue_job_id.is_some() {
                    return Ok(None); // a worker reserved the entry first and noted it
                }
                Ok(Some(JobDocument { queue_job_id: Some(noted.clone()), ..stored.clone() }))
            })
            .await?;
        Ok(self.handed_out(changed.current()))
    }

    /// Engine operation `delete`: forget a finished job (succeeded, failed or cancelled)
    /// and its queue entry, if one is left (a buried one). Queued and running jobs are refused.
    pub async fn delete(&self, uuid: &str) -> ClientResult<JobDocument> {
        for _ in 0..crate::store::MAX_CONFLICTS {
            let doc = self.store.get(uuid).await?.ok_or_else(|| StoreError::NotFound(uuid.to_owned()))?;
            if !doc.status.is_terminal() {
                return Err(wrong_status(&doc, "delete", "succeeded, failed or cancelled"));
            }
            match self.store.delete_at_version(uuid, doc.version).await {
                Ok(()) => {
                    self.recent.forget(uuid);
                    self.drop_queue_entry(uuid, doc.queue_job_id.as_deref()).await;
                    return Ok(doc);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Contended { uuid: uuid.to_owned(), tries: crate::store::MAX_CONFLICTS }.into())
    }

    /// Engine operation `kick`: move up to `bound` buried entries of `queue` (or, when none
    /// is buried, delayed ones) back to ready. A kicked entry of a failed job runs again
    /// with its retry budget renewed (the worker applies `retry` when it reserves it).
    pub async fn kick(&self, queue: &str, bound: u64) -> ClientResult<u64> {
        Ok(self.queue.kick(queue, bound).await?)
    }

    /// Wait until the job is finished (succeeded, failed or cancelled) and return its
    /// document, or None once `timeout` has passed. Polls the store from `first_poll`
    /// apart, slowing down to `WAIT_POLL_MAX`.
    pub async fn wait(&self, uuid: &str, timeout: Duration, first_poll: Duration) -> ClientResult<Option<JobDocument>> {
        let deadline = Instant::now() + timeout;
        let mut interval = first_poll.clamp(WAIT_POLL_MIN, WAIT_POLL_MAX);
        loop {
            let doc = self.store.get(uuid).await?.ok_or_else(|| StoreError::NotFound(uuid.to_owned()))?;
            if doc.status.is_terminal() {
                return Ok(Some(self.handed_out(doc)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(interval.min(left)).await;
            interval = interval.mul_f64(1.5).min(WAIT_POLL_MAX);
        }
    }

    /// Best effort: delete the queue entry `id` if it still carries this job's uuid (ids can
    /// be reused). A worker that reserves it later finds the document final and deletes it.
    async fn drop_queue_entry(&self, uuid: &str, id: Option<&str>) {
        let Some(id) = QueueJobId::noted(id) else { return };
        let result = match self.queue.peek(id).await {
            Ok(Some(body)) if body == uuid.as_bytes() => self.queue.delete(id).await,
            Ok(_) => return,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            log::debug!("job {uuid}: queue entry {id} not deleted now ({e}); a worker will drop it");
        }
    }

    /// What the queues `tubes` hold for a worker that runs `job_types` (None: every type):
    /// entries waiting (ready or delayed) and reserved, and how many of the waiting ones are
    /// jobs of other types (queued documents of an unknown type on these queues, which such
    /// a worker only releases). For `--burst`: the queues are drained for this worker when
    /// `waiting - foreign` is 0 and nothing is reserved. A paused queue's waiting entries
    /// are not counted: no worker can take them until it is resumed.
    pub async fn backlog(
        &self,
        tubes: &[String],
        job_types: Option<&std::collections::HashSet<String>>,
    ) -> ClientResult<Backlog> {
        let mut backlog = Backlog::default();
        for tube in tubes {
            let s = self.queue.stats_tube(tube).await?;
            if !s.paused {
                backlog.waiting += s.ready + s.delayed;
            }
            backlog.reserved += s.reserved;
        }
        let Some(known) = job_types.filter(|_| backlog.waiting > 0) else { return Ok(backlog) };
        let filter = ListFilter { status: Some(Status::Queued), ..ListFilter::default() };
        let mut page = Page { limit: 500, ..Page::default() };
        loop {
            let docs = self.store.list(&filter, &page).await?;
            let Some(last) = docs.last() else { break };
            page.after = Some(last.uuid.clone());
            let foreign =
                docs.iter().filter(|d| !known.contains(&d.job_type) && tubes.contains(&d.queue_kwargs.queue)).count()
                    as u64;
            backlog.foreign += foreign;
        }
        backlog.foreign = backlog.foreign.min(backlog.waiting);
        Ok(backlog)
    }

    pub async fn list(&self, filter: &ListFilter, page: &Page) -> ClientResult<Vec<JobDocument>> {
        Ok(self.store.list(filter, page).await?.into_iter().map(|doc| self.handed_out(doc)).collect())
    }

    /// The live workers, as each registers itself in the store (by id; expired ones left out).
    pub async fn workers(&self) -> ClientResult<Vec<WorkerRecord>> {
        Ok(self.store.list_workers(now()).await?)
    }

    pub async fn stats_tube(&self, tube: &str) -> ClientResult<TubeStats> {
        Ok(self.queue.stats_tube(tube).await?)
    }

    /// Engine operation `pause`: no worker reserves from `queue` until `resume`; its jobs
    /// wait, and running ones go on (see `Queue::pause`).
    pub async fn pause(&self, queue: &str) -> ClientResult<()> {
        Ok(self.queue.pause(queue).await?)
    }

    pub async fn resume(&self, queue: &str) -> ClientResult<()> {
        Ok(self.queue.resume(queue).await?)
    }
}

/// Whether the one write between the version `job` was read at and `stored` is the enqueue
/// relay noting the queue entry's id (docs/lifecycle.md, "Enqueue"): one version on, still
/// queued at the same attempt, and the id now set where `job` had none. `save` applies the
/// caller's progress on top of it rather than reporting a conflict, since the note touched
/// no field the caller owns.
fn only_queue_id_noted(job: &JobDocument, stored: &JobDocument) -> bool {
    stored.version == job.version.saturating_add(1)
        && stored.status == Status::Queued
        && stored.attempts == job.attempts
        && job.queue_job_id.is_none()
        && stored.queue_job_id.is_some()
}

fn wrong_status(doc: &JobDocument, op: &'static str, needs: &'static str) -> ClientError {
    ClientError::WrongStatus { uuid: doc.uuid.clone(), status: doc.status, op, needs }
}
