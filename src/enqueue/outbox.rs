//! The outbox enqueue of two-system backends (a queue server and a separate store): the
//! document is committed, the caller returns, and a relay task of this process puts the
//! queue entries (pipelined, in batches) and, `NOTE_DELAY` later, notes their ids in the
//! documents that no worker has started meanwhile. Holds the
//! jobs not yet put in memory, bounded; everything it cannot put is a committed `queued`
//! document with no queue entry, which the maintenance sweep puts (docs/lifecycle.md
//! "Enqueue"). Touches only the store's new documents (CAS writes) and the queue's puts.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
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
/// How long after its put the relay notes a job's queue id. A worker that reserves the
/// entry sooner (the usual case) writes the id in its start, and the note, a compare-and-swap
/// on the document as created, loses at no cost to the worker. Noted at once, the note met
/// the worker's start on the same row in 40% of starts at 100 jobs/s: whichever lost its
/// swap read and wrote again, and the start waited for the note's commit (docs/operating.md
/// "Where enqueue-to-start latency goes"). Well under the sweep's `--min-age` (60 s), which
/// is what the note is for: a job still queued then is known to have its entry.
pub const NOTE_DELAY: Duration = Duration::from_secs(1);
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
    /// Documents whose entries are put, with their ids, to note once `NOTE_DELAY` has passed
    /// since their put (oldest first).
    unnoted: VecDeque<(Instant, JobDocument)>,
    /// Documents in note calls not answered yet.
    noting: usize,
    /// Jobs cancelled in this process while in the current round or a note call: their
    /// entries are deleted once put (`Outbox::withdraw`). Emptied when neither is under way.
    withdrawn: HashSet<String>,
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
    /// Jobs accepted and not yet put (or left to the sweep): what `flush` waits on first.
    pending: watch::Sender<usize>,
    /// Put jobs whose ids are not noted yet: what `flush` waits on then.
    unnoted: watch::Sender<usize>,
    /// Callers of `flush` waiting now: the relay notes at once while there are any.
    flushing: AtomicUsize,
    /// Held by the note call under way: one at a time, in order.
    note_turn: tokio::sync::Mutex<()>,
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

/// Jobs this process's relays put whose queue ids are not noted in their documents yet.
pub fn unnoted_everywhere() -> usize {
    live_relays().iter().map(|r| *r.unnoted.borrow()).sum()
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
            unnoted: watch::Sender::new(0),
            flushing: AtomicUsize::new(0),
            note_turn: tokio::sync::Mutex::new(()),
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

    /// A job still waiting is dropped; one put and not noted yet gives its entry's id; one
    /// in the round or note call under way is marked, and its entry deleted once that ends.
    fn withdraw(&self, uuid: &str) -> Option<QueueJobId> {
        let mut held = self.relay.lock();
        let mut entry = None;
        if let Some(at) = held.waiting.iter().position(|job| job.doc.uuid == uuid) {
            held.waiting.remove(at);
        } else if let Some(at) = held.unnoted.iter().position(|(_, doc)| doc.uuid == uuid) {
            entry = held.unnoted.remove(at).and_then(|(_, doc)| QueueJobId::noted(doc.queue_job_id.as_deref()));
        } else if held.in_flight > 0 || held.noting > 0 {
            held.withdrawn.insert(uuid.to_owned());
        }
        self.relay.publish(&held);
        entry
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
        self.unnoted.send_replace(held.unnoted.len() + held.noting);
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

    /// Wait until every job is put and its id noted (a flush makes the relay note at once:
    /// a caller that flushed reads the documents as the relay leaves them).
    async fn flush_until(&self, deadline: tokio::time::Instant) {
        let _hurry = Hurry::new(self);
        let (mut pending, mut unnoted) = (self.pending.subscribe(), self.unnoted.subscribe());
        let delivered = async {
            // A closed channel leaves the count to the caller to read.
            let _ = pending.wait_for(|&n| n == 0).await;
            let _ = unnoted.wait_for(|&n| n == 0).await;
        };
        let _ = tokio::time::timeout_at(deadline, delivered).await;
    }

    /// The relay task: rounds of up to `RELAY_BATCH` jobs, and the notes that come due,
    /// until the outbox is dropped and nothing is left (or, dropped, the queue stays down
    /// past `ORPHAN_GRACE`).
    async fn run(self: Arc<Self>) {
        let mut retry = RETRY_MIN;
        loop {
            let (batch, next_note) = {
                let mut held = self.lock();
                self.start_notes(&mut held);
                let n = held.waiting.len().min(RELAY_BATCH);
                if n == 0 && held.orphaned_at.is_some() && held.unnoted.is_empty() && held.noting == 0 {
                    return;
                }
                held.in_flight = n;
                let next_note = held.unnoted.front().filter(|_| held.noting == 0).map(|(put, _)| *put + NOTE_DELAY);
                (held.waiting.drain(..n).collect::<Vec<_>>(), next_note)
            };
            if batch.is_empty() {
                // A note call ending, a flush, a new job or the outbox dropped rings `wake`.
                match next_note {
                    Some(due) => {
                        let _ = tokio::time::timeout_at(due.into(), self.wake.notified()).await;
                    }
                    None => self.wake.notified().await,
                }
                continue;
            }
            match self.round(batch).await {
                Round::Done => {
                    self.note_recovery();
                    retry = RETRY_MIN;
                }
                Round::QueueDown(e) => {
                    if self.note_outage(&e) {
                        let unnoted: Vec<JobDocument> = self.lock().unnoted.drain(..).map(|(_, doc)| doc).collect();
                        self.note(&unnoted).await;
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

    /// Start a note of the ids whose `NOTE_DELAY` is over (all of them while a flush waits or
    /// the outbox is dropped; the oldest `RELAY_BATCH` at once when more wait), as a task of
    /// its own so that puts never wait for it; one note call at a time.
    fn start_notes(self: &Arc<Self>, held: &mut Held) {
        if held.noting > 0 || held.unnoted.is_empty() {
            return;
        }
        let all = self.flushing.load(Ordering::Acquire) > 0 || held.orphaned_at.is_some();
        let now = Instant::now();
        let due = held.unnoted.iter().take_while(|(put, _)| all || now.duration_since(*put) >= NOTE_DELAY).count();
        let n = match held.unnoted.len() > RELAY_BATCH {
            true => due.max(RELAY_BATCH),
            false => due,
        }
        .min(RELAY_BATCH);
        if n == 0 {
            return;
        }
        let docs: Vec<JobDocument> = held.unnoted.drain(..n).map(|(_, doc)| doc).collect();
        held.noting += n;
        let relay = self.clone();
        tokio::spawn(async move {
            relay.note(&docs).await;
            let withdrawn = {
                let mut held = relay.lock();
                held.noting -= n;
                let withdrawn = take_withdrawn(&mut held, &docs);
                relay.publish(&held);
                withdrawn
            };
            relay.delete_withdrawn(withdrawn).await;
            relay.wake.notify_one();
        });
    }

    /// Put the batch, queue by queue (pipelined), keep the ids to note (or, when the queue
    /// failed, note them all now), and put back at the front, in order, the jobs the queue
    /// did not take.
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
        if down.is_some() {
            // The relay waits for the queue now, and no worker reserves what it cannot reach:
            // note every put job at once, before `pending` shows the jobs left.
            let now: Vec<JobDocument> = {
                let mut held = self.lock();
                let now: Vec<JobDocument> = held.unnoted.drain(..).map(|(_, doc)| doc).chain(put.drain(..)).collect();
                held.noting += now.len();
                now
            };
            self.note(&now).await;
            self.lock().noting -= now.len();
        }
        let withdrawn = {
            let mut held = self.lock();
            held.in_flight = 0;
            let withdrawn = take_withdrawn(&mut held, &put);
            let at = Instant::now();
            let kept = put.into_iter().filter(|doc| !withdrawn.iter().any(|(uuid, _)| *uuid == doc.uuid));
            held.unnoted.extend(kept.map(|doc| (at, doc)));
            for job in not_put.into_iter().rev() {
                held.waiting.push_front(job);
            }
            self.bound(&mut held);
            self.publish(&held);
            withdrawn
        };
        self.delete_withdrawn(withdrawn).await;
        match down {
            Some(e) => Round::QueueDown(e),
            None => Round::Done,
        }
    }

    /// Delete the entries of jobs cancelled while they were being put or noted.
    async fn delete_withdrawn(&self, withdrawn: Vec<(String, QueueJobId)>) {
        for (uuid, id) in withdrawn {
            if let Err(e) = self.queue.delete(id).await {
                log::warn!("enqueue relay: job {uuid} was cancelled; deleting its queue entry {id} failed ({e})");
            }
        }
    }

    /// Record each entry's id in its document, unless the document changed since it was
    /// created: a worker that reserved the entry first wrote its id in its start, which wins
    /// (a document with no id is claimed by the worker that reserves its entry).
    async fn note(&self, docs: &[JobDocument]) {
        if docs.is_empty() {
            return;
        }
        let _turn = self.note_turn.lock().await;
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

/// A waiting `flush`: the relay notes at once while one lives.
struct Hurry<'a>(&'a Relay);

impl<'a> Hurry<'a> {
    fn new(relay: &'a Relay) -> Self {
        relay.flushing.fetch_add(1, Ordering::AcqRel);
        relay.wake.notify_one();
        Self(relay)
    }
}

impl Drop for Hurry<'_> {
    fn drop(&mut self) {
        self.0.flushing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The document as the relay writes it once its entry is put.
/// The uuids and entries of those of `docs` withdrawn meanwhile (`Outbox::withdraw`); the
/// marks are dropped once no round or note call is under way.
fn take_withdrawn(held: &mut Held, docs: &[JobDocument]) -> Vec<(String, QueueJobId)> {
    let taken = docs
        .iter()
        .filter(|doc| held.withdrawn.remove(&doc.uuid))
        .filter_map(|doc| Some((doc.uuid.clone(), QueueJobId::noted(doc.queue_job_id.as_deref())?)))
        .collect();
    if held.in_flight == 0 && held.noting == 0 {
        held.withdrawn.clear();
    }
    taken
}

fn noted(doc: JobDocument, id: QueueJobId) -> JobDocument {
    JobDocument { queue_job_id: Some(id.to_string()), ..doc }
}

/// An error that trying again cannot mend (the rest mean the queue is down or busy).
fn lasting(e: &QueueError) -> bool {
    matches!(e, QueueError::JobTooBig { .. } | QueueError::BadTube(_) | QueueError::BadJobId(_))
}
