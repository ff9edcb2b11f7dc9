//! The outbox enqueue of two-system backends (a queue server and a separate store): the
//! document is committed, the caller returns, and a relay task of this process puts the
//! queue entries (pipelined, in batches) and notes their ids in the documents. Holds the
//! jobs not yet put in memory, bounded; everything it cannot put is a committed `queued`
//! document with no queue entry, which the maintenance sweep puts (docs/lifecycle.md
//! "Enqueue"). Touches only the store's new documents (CAS writes) and the queue's puts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use super::Enqueuer;
use crate::client::ClientResult;
use crate::model::JobDocument;
use crate::queue::{self, PutOptions, Queue, QueueError, QueueJobId};
use crate::store::{Store, StoreError};

/// The relay puts at most this many jobs per round (pipelined per queue), then notes their
/// ids in one store call.
pub const RELAY_BATCH: usize = 1_000;
/// Jobs a relay keeps in memory while the queue does not answer; beyond this the oldest are
/// left to the sweep (they are committed documents), with one warning per outage.
pub const MAX_PENDING: usize = 100_000;
/// The relay's wait between attempts while the queue does not answer starts here, doubles,
/// and stops growing at `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long the relay of a client that was let go of (the process configured other
/// backends) keeps trying before it leaves what it holds to the sweep.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// A job whose document is committed and whose queue entry is not put yet.
struct Pending {
    doc: JobDocument,
    opts: PutOptions,
    /// When `enqueue` returned: a delayed job's put asks for what is left of its delay.
    accepted: Instant,
}

impl Pending {
    fn put_options(&self) -> PutOptions {
        PutOptions { delay: self.opts.delay.saturating_sub(self.accepted.elapsed()), ..self.opts }
    }
}

#[derive(Default)]
struct Held {
    waiting: VecDeque<Pending>,
    /// Taken by the relay's current round, not yet put and noted.
    in_flight: usize,
    /// When the queue first failed to answer in the current outage.
    outage_since: Option<Instant>,
    /// Whether this outage already warned that jobs were left to the sweep.
    overflow_warned: bool,
    /// When the `Outbox` was dropped (no new jobs will come).
    orphaned_at: Option<Instant>,
}

/// What the outbox and its relay task share.
struct Relay {
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    held: Mutex<Held>,
    /// Rings the relay task when jobs arrive or the outbox is dropped.
    wake: Notify,
    /// Jobs accepted and not yet put (or left to the sweep): what `flush` waits on.
    pending: watch::Sender<usize>,
}

/// Every relay of this process that still holds or may receive jobs, for the process-wide
/// `flush` and `pending` (a client replaced by `configure` keeps delivering what it took).
fn relays() -> MutexGuard<'static, Vec<Weak<Relay>>> {
    static RELAYS: OnceLock<Mutex<Vec<Weak<Relay>>>> = OnceLock::new();
    RELAYS.get_or_init(Mutex::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn live_relays() -> Vec<Arc<Relay>> {
    relays().iter().filter_map(Weak::upgrade).collect()
}

/// Jobs this process enqueued whose queue entries are not put yet, over every client.
pub fn pending_everywhere() -> usize {
    live_relays().iter().map(|r| *r.pending.borrow()).sum()
}

/// Wait until every relay of this process has put what it holds, or `timeout` has passed;
/// returns how many jobs are still not put (0: all delivered).
pub async fn flush_everywhere(timeout: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + timeout;
    for relay in live_relays() {
        relay.flush_until(deadline).await;
    }
    pending_everywhere()
}

/// The two-system enqueue: one store write, then the relay (module comment).
pub struct Outbox {
    store: Arc<dyn Store>,
    relay: Arc<Relay>,
    /// The relay task, started by the first enqueue (which runs on the runtime it needs).
    started: OnceLock<()>,
}

impl Outbox {
    pub fn new(queue: Arc<dyn Queue>, store: Arc<dyn Store>) -> Self {
        let relay = Relay {
            queue,
            store: store.clone(),
            held: Mutex::default(),
            wake: Notify::new(),
            pending: watch::Sender::new(0),
        };
        Self { store, relay: Arc::new(relay), started: OnceLock::new() }
    }

    /// Hand committed documents to the relay, starting it on the current runtime if needed.
    fn hand_over(&self, jobs: impl IntoIterator<Item = (JobDocument, PutOptions)>) {
        self.started.get_or_init(|| {
            let mut all = relays();
            all.retain(|r| r.strong_count() > 0);
            all.push(Arc::downgrade(&self.relay));
            tokio::spawn(self.relay.clone().run());
        });
        let accepted = Instant::now();
        let mut held = self.relay.lock();
        held.waiting.extend(jobs.into_iter().map(|(doc, opts)| Pending { doc, opts, accepted }));
        self.relay.bound(&mut held);
        self.relay.publish(&held);
        drop(held);
        self.relay.wake.notify_one();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.relay.lock().orphaned_at = Some(Instant::now());
        self.relay.wake.notify_one();
    }
}

#[async_trait]
impl Enqueuer for Outbox {
    async fn enqueue(&self, doc: JobDocument, opts: PutOptions) -> ClientResult<JobDocument> {
        queue::check_tube(&doc.queue_kwargs.queue)?;
        let saved = self.store.create(&doc).await?;
        self.hand_over([(saved.clone(), opts)]);
        Ok(saved)
    }

    /// Every document in one store call; the committed ones go to the relay together.
    async fn enqueue_many(&self, jobs: Vec<(JobDocument, PutOptions)>) -> ClientResult<Vec<ClientResult<JobDocument>>> {
        let docs: Vec<JobDocument> = jobs.iter().map(|(doc, _)| doc.clone()).collect();
        let created = self.store.create_many(&docs).await?;
        let committed = created.iter().zip(&jobs).filter_map(|(r, (_, opts))| Some((r.as_ref().ok()?.clone(), *opts)));
        self.hand_over(committed);
        Ok(created.into_iter().map(|r| r.map_err(Into::into)).collect())
    }

    fn pending(&self) -> usize {
        *self.relay.pending.borrow()
    }

    async fn flush(&self, timeout: Duration) -> usize {
        self.relay.flush_until(tokio::time::Instant::now() + timeout).await;
        self.pending()
    }
}

/// How a round of puts ended.
enum Round {
    /// Everything put (or refused for good, and left to the sweep).
    Done,
    /// The queue did not answer: the jobs not put are back at the front.
    QueueDown(QueueError),
}

impl Relay {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, held: &Held) {
        self.pending.send_replace(held.waiting.len() + held.in_flight);
    }

    /// Past `MAX_PENDING`, forget the oldest jobs (their documents stay for the sweep).
    fn bound(&self, held: &mut Held) {
        let over = held.waiting.len().saturating_sub(MAX_PENDING);
        if over == 0 {
            return;
        }
        held.waiting.drain(..over);
        if !held.overflow_warned {
            held.overflow_warned = true;
            log::warn!(
                "enqueue relay: more than {MAX_PENDING} jobs wait for their queue; the oldest are left to the \
                 maintenance sweep, which puts them (they are saved, queued documents)"
            );
        }
    }

    async fn flush_until(&self, deadline: tokio::time::Instant) {
        let mut pending = self.pending.subscribe();
        // A timeout or a closed channel both leave the count to the caller to read.
        let _ = tokio::time::timeout_at(deadline, pending.wait_for(|&n| n == 0)).await;
    }

    /// The relay task: rounds of up to `RELAY_BATCH` jobs until the outbox is dropped and
    /// nothing is left (or, dropped, the queue stays down past `ORPHAN_GRACE`).
    async fn run(self: Arc<Self>) {
        let mut retry = RETRY_MIN;
        loop {
            let batch = {
                let mut held = self.lock();
                let n = held.waiting.len().min(RELAY_BATCH);
                if n == 0 && held.orphaned_at.is_some() {
                    return;
                }
                held.in_flight = n;
                held.waiting.drain(..n).collect::<Vec<_>>()
            };
            if batch.is_empty() {
                self.wake.notified().await;
                continue;
            }
            match self.round(batch).await {
                Round::Done => {
                    self.note_recovery();
                    retry = RETRY_MIN;
                }
                Round::QueueDown(e) => {
                    if self.note_outage(&e) {
                        return;
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// After a round that went through: end the outage, if there was one.
    fn note_recovery(&self) {
        let mut held = self.lock();
        if let Some(since) = held.outage_since.take() {
            log::info!(
                "enqueue relay: the queue answers again after {:.1} s; putting the {} jobs that waited",
                since.elapsed().as_secs_f64(),
                held.waiting.len()
            );
        }
        held.overflow_warned = false;
    }

    /// Log the outage once; returns true when an orphaned relay gives up (what it held is
    /// left to the sweep).
    fn note_outage(&self, e: &QueueError) -> bool {
        let mut held = self.lock();
        if held.outage_since.is_none() {
            held.outage_since = Some(Instant::now());
            log::warn!(
                "enqueue relay: the queue does not answer ({e}); {} enqueued jobs wait in this process and are put \
                 when it does (retrying every {} s at most)",
                held.waiting.len(),
                RETRY_MAX.as_secs()
            );
        }
        if held.orphaned_at.is_none_or(|at| at.elapsed() < ORPHAN_GRACE) {
            return false;
        }
        log::warn!(
            "enqueue relay: this client was closed and its queue still does not answer; the {} jobs it held are \
             left to the maintenance sweep, which puts them",
            held.waiting.len()
        );
        held.waiting.clear();
        self.publish(&held);
        true
    }

    /// Put the batch, queue by queue (pipelined), note the ids in one store call, and put
    /// back at the front, in order, the jobs the queue did not take.
    async fn round(&self, batch: Vec<Pending>) -> Round {
        let mut by_queue: Vec<(String, Vec<Pending>)> = Vec::new();
        for job in batch {
            let name = &job.doc.queue_kwargs.queue;
            match by_queue.iter_mut().find(|(q, _)| q == name) {
                Some((_, members)) => members.push(job),
                None => by_queue.push((name.clone(), vec![job])),
            }
        }
        let mut put: Vec<JobDocument> = Vec::new();
        let mut not_put: Vec<Pending> = Vec::new();
        let mut down: Option<QueueError> = None;
        for (name, members) in by_queue {
            let ids = if down.is_some() {
                Vec::new() // the queue failed this round: keep the rest for the next
            } else {
                let bodies: Vec<(&[u8], PutOptions)> =
                    members.iter().map(|job| (job.doc.uuid.as_bytes(), job.put_options())).collect();
                self.queue.put_many(&name, &bodies).await
            };
            let mut ids = ids.into_iter();
            for job in members {
                match ids.next() {
                    Some(Ok(id)) => put.push(noted(job.doc, id)),
                    Some(Err(e)) if lasting(&e) => log::error!(
                        "enqueue relay: job {}: the queue refused it ({e}); its document stays queued with no entry \
                         and the maintenance sweep tries again",
                        job.doc.uuid
                    ),
                    Some(Err(e)) => {
                        down.get_or_insert(e);
                        not_put.push(job);
                    }
                    None => not_put.push(job),
                }
            }
        }
        self.note(&put).await;
        let mut held = self.lock();
        held.in_flight = 0;
        for job in not_put.into_iter().rev() {
            held.waiting.push_front(job);
        }
        self.bound(&mut held);
        self.publish(&held);
        drop(held);
        match down {
            Some(e) => Round::QueueDown(e),
            None => Round::Done,
        }
    }

    /// Record each entry's id in its document, unless the document changed since it was
    /// created: a worker that reserved the entry first wrote its id in its start, which wins
    /// (a document with no id is claimed by the worker that reserves its entry).
    async fn note(&self, docs: &[JobDocument]) {
        if docs.is_empty() {
            return;
        }
        let results = match self.store.update_many(docs).await {
            Ok(results) => results,
            Err(e) => {
                log::warn!("enqueue relay: noting {} queue ids failed ({e}); their workers note them", docs.len());
                return;
            }
        };
        let failed: Vec<String> = results
            .into_iter()
            .zip(docs)
            .filter_map(|(r, doc)| match r {
                Ok(_) | Err(StoreError::Conflict { .. }) => None,
                Err(e) => Some(format!("{}: {e}", doc.uuid)),
            })
            .collect();
        if let Some(first) = failed.first() {
            log::warn!("enqueue relay: {} queue ids not noted (first: {first}); their workers note them", failed.len());
        }
    }
}

/// The document as the relay writes it once its entry is put.
fn noted(doc: JobDocument, id: QueueJobId) -> JobDocument {
    JobDocument { queue_job_id: Some(id.to_string()), ..doc }
}

/// An error that trying again cannot mend (the rest mean the queue is down or busy).
fn lasting(e: &QueueError) -> bool {
    matches!(e, QueueError::JobTooBig { .. } | QueueError::BadTube(_) | QueueError::BadJobId(_))
}
