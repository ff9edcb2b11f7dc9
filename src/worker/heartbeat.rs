//! The heartbeat of a worker: one tokio task for the worker's whole life that keeps its
//! running attempt alive. Every TTR/3 it stamps the document's `heartbeatAt` (through the
//! attempt's fenced writer) and touches the reservation, so a job may run far longer than
//! its TTR; it re-reads the document every second to see a cancel request or a lost fence,
//! and writes the attempt's coalesced progress. It never needs the GIL.
//!
//! `heartbeatAt` is what lets a worker that reserves a `running` job tell a dead owner
//! from a live one whose reservation the queue lost (a beanstalkd restart gives reserved
//! jobs back): `owner_alive_for` (docs/lifecycle.md, "A running job's owner").
//!
//! Starting or ending an attempt only swaps shared state: the task wakes on its own
//! schedule, at least every `TICK`, so a short job costs it no wake-up at all.
//!
//! The same task keeps the worker's registration fresh (`registration.rs`): written within a
//! tick of an attempt starting or ending, but no sooner than `JOB_CHANGE_GAP` after the last
//! write (a worker running many short jobs writes its record about once a second, not twice
//! per job), and every `REFRESH_EVERY` besides.
//!
//! It is also the last resort for TIMEOUT: a job stuck in C code that holds the GIL
//! cannot be stopped from Python, so once the attempt is `hard_stop_after` past its
//! TIMEOUT, the heartbeat saves the timeout failure itself and ends the process with
//! `EXIT_REPLACE` (the supervisor starts a new one).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fenced::{FenceError, FencedWriter};
use super::outcome::{self, Outcome};
use super::progress::Coalescer;
use super::registration::{Registration, REFRESH_EVERY};
use super::reservations::Reservations;
use super::settle;
use crate::client::secs;
use crate::model::{now, JobDocument, Status};
use crate::queue::QueueJobId;

/// How often a running attempt re-reads its document (cancel requests, lost fence).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Exit status of a worker process that ended itself to stop a stuck job (see worker.py).
pub const EXIT_REPLACE: i32 = 75;
/// The longest the task sleeps. A new attempt is seen within it, well before its first
/// touch is due (TTR/3, and never less than `MIN_TOUCH_EVERY`).
const TICK: Duration = Duration::from_millis(100);
const MIN_TOUCH_EVERY: Duration = Duration::from_millis(200);
/// The least time between the registration writes that attempts starting and ending ask for.
const JOB_CHANGE_GAP: Duration = Duration::from_secs(1);

/// A worker's heartbeat; the task ends when this is dropped.
pub struct Heartbeat {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    current: Mutex<Option<Beat>>,
    /// Rung when progress is due at once.
    wake: Notify,
    /// Held by the task while it works on an attempt, so ending the attempt waits for
    /// that work instead of racing it.
    busy: tokio::sync::Mutex<()>,
    /// How long past its TIMEOUT a job that cannot be interrupted may run.
    hard_stop_after: Duration,
    registration: Arc<Registration>,
    /// Set when the registration is to be written once `JOB_CHANGE_GAP` has passed since the
    /// last write (an attempt started or ended, or the last try found a write still in flight).
    register_now: Arc<AtomicBool>,
}

/// How much longer the attempt of a `running` document counts as alive: its last sign of
/// life (`heartbeatAt`, else `startedAt`) plus its TTR, less `now`, in whole milliseconds
/// rounded up; at most one TTR (a clock ahead of ours gains nothing). None when the
/// document is not running or that time is over.
pub fn owner_alive_for(doc: &JobDocument, now: f64) -> Option<Duration> {
    if doc.status != Status::Running {
        return None;
    }
    let ttr = doc.queue_kwargs.ttr;
    let last = doc.heartbeat_at.or(doc.started_at)?;
    let left_ms = ((last + ttr - now).min(ttr) * 1000.0).ceil();
    (left_ms.is_finite() && left_ms >= 1.0).then(|| Duration::from_millis(left_ms as u64))
}

/// The running attempt, as the heartbeat keeps it.
struct Beat {
    id: QueueJobId,
    writer: Arc<FencedWriter>,
    /// The document as the attempt started, for the timeout failure of last resort.
    started: JobDocument,
    /// The document as this attempt last wrote it (or started it): what a heartbeat stamps.
    latest: JobDocument,
    touch_every: Duration,
    next_touch: Instant,
    next_check: Instant,
    hard_stop: Option<Instant>,
    progress: Coalescer,
}

/// The work due now, taken out of the shared state so no lock is held across an await.
struct Due {
    id: QueueJobId,
    writer: Arc<FencedWriter>,
    /// Stamp `heartbeatAt` and touch the reservation.
    touch: bool,
    check: bool,
    progress: Option<JobDocument>,
    /// What to stamp when no progress is due: the attempt's latest written document.
    latest: JobDocument,
    stuck: Option<JobDocument>,
}

impl Heartbeat {
    /// Start the task on the current runtime. `hard_stop_after`: how long past its
    /// TIMEOUT a job that cannot be interrupted may run before the process ends.
    /// It writes `registration` at once, then as the module says.
    pub fn start(reservations: Reservations, hard_stop_after: Duration, registration: Arc<Registration>) -> Self {
        let shared = Arc::new(Shared {
            current: Mutex::new(None),
            wake: Notify::new(),
            busy: tokio::sync::Mutex::new(()),
            hard_stop_after,
            registration,
            register_now: Arc::new(AtomicBool::new(true)),
        });
        let task = tokio::spawn(run(shared.clone(), reservations));
        Self { shared, task }
    }

    /// Keep this attempt alive until `forget`.
    pub fn watch(&self, id: QueueJobId, writer: Arc<FencedWriter>, started: &JobDocument, progress_every: Duration) {
        let now = Instant::now();
        let touch_every = (secs(started.queue_kwargs.ttr) / 3).max(MIN_TOUCH_EVERY);
        let beat = Beat {
            id,
            writer,
            started: started.clone(),
            latest: started.clone(),
            touch_every,
            next_touch: now + touch_every,
            next_check: now + CHECK_EVERY,
            hard_stop: started.queue_kwargs.timeout.map(|t| now + secs(t) + self.shared.hard_stop_after),
            progress: Coalescer::new(progress_every, now),
        };
        *self.shared.current() = Some(beat);
        self.shared.registration.set_job(Some(&started.uuid));
        self.shared.register_soon();
    }

    /// Note the attempt's latest state; it is written within one progress interval.
    pub fn progress(&self, writer: &Arc<FencedWriter>, doc: JobDocument) {
        let wake = match self.shared.current().as_mut() {
            Some(beat) if Arc::ptr_eq(&beat.writer, writer) => beat.progress.submit(doc, Instant::now()),
            _ => false,
        };
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// Stop keeping this attempt alive, once any work on it in flight is done. Its final
    /// write carries the progress not yet written.
    pub async fn forget(&self, writer: &Arc<FencedWriter>) {
        self.shared.forget(writer);
        self.shared.registration.set_job(None);
        self.shared.register_soon();
        drop(self.shared.busy.lock().await);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn current(&self) -> MutexGuard<'_, Option<Beat>> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ask for the registration to be written; the task sees it within a `TICK`, and writes
    /// it once `JOB_CHANGE_GAP` has passed since the last write.
    fn register_soon(&self) {
        self.register_now.store(true, Ordering::Release);
    }

    /// Starts writing the registration if that is due at `now` (`last`: when the last write
    /// started; None: never); returns when it is due next, and when the last write started.
    /// The write is a task of its own, so a slow store never delays the running attempt's beat.
    fn keep_registered(&self, now: Instant, last: Option<Instant>) -> (Instant, Option<Instant>) {
        let due_at = registration_due(last, self.register_now.load(Ordering::Acquire));
        if let Some(due_at) = due_at.filter(|at| now < *at) {
            return (due_at, last);
        }
        self.register_now.store(false, Ordering::Release);
        let (registration, again) = (self.registration.clone(), self.register_now.clone());
        tokio::spawn(async move {
            match registration.refresh().await {
                Ok(true) => {}
                Ok(false) => again.store(true, Ordering::Release),
                Err(e) => {
                    log::warn!("could not refresh this worker's registration (tried again in {REFRESH_EVERY:?}): {e}")
                }
            }
        });
        (now + REFRESH_EVERY, Some(now))
    }

    fn is_current(&self, writer: &Arc<FencedWriter>) -> bool {
        watches(&self.current(), writer)
    }

    fn forget(&self, writer: &Arc<FencedWriter>) {
        let mut current = self.current();
        if watches(&current, writer) {
            *current = None;
        }
    }

    /// The attempt `writer` writes for saved `doc`: the next heartbeat stamps that.
    fn wrote(&self, writer: &Arc<FencedWriter>, doc: JobDocument) {
        if let Some(beat) = self.current().as_mut().filter(|beat| Arc::ptr_eq(&beat.writer, writer)) {
            beat.latest = doc;
        }
    }

    /// Take what is due at `now` and move its next times on; also say when to wake next.
    fn take_due(&self, now: Instant) -> (Option<Due>, Instant) {
        let mut current = self.current();
        let Some(beat) = current.as_mut() else {
            return (None, now + TICK);
        };
        let touch = now >= beat.next_touch;
        if touch {
            beat.next_touch = now + beat.touch_every;
        }
        let check = now >= beat.next_check;
        if check {
            beat.next_check = now + CHECK_EVERY;
        }
        let stuck = beat.hard_stop.filter(|at| now >= *at).map(|_| beat.started.clone());
        let progress = beat.progress.take_due(now);
        let mut wake_at = (now + TICK).min(beat.next_touch).min(beat.next_check);
        for at in [beat.hard_stop, beat.progress.due()].into_iter().flatten() {
            wake_at = wake_at.min(at);
        }
        let latest = beat.latest.clone();
        let due = Due { id: beat.id, writer: beat.writer.clone(), touch, check, progress, latest, stuck };
        (Some(due), wake_at)
    }
}

/// When the registration is due, its last write having started at `last` (None: never
/// written, due now); `wanted`: a job started or ended since.
fn registration_due(last: Option<Instant>, wanted: bool) -> Option<Instant> {
    last.map(|last| last + if wanted { JOB_CHANGE_GAP } else { REFRESH_EVERY })
}

/// Whether `current` is the attempt that `writer` writes for.
fn watches(current: &Option<Beat>, writer: &Arc<FencedWriter>) -> bool {
    current.as_ref().is_some_and(|beat| Arc::ptr_eq(&beat.writer, writer))
}

async fn run(shared: Arc<Shared>, reservations: Reservations) {
    let mut registered = None;
    loop {
        let (register_at, last) = shared.keep_registered(Instant::now(), registered);
        registered = last;
        let (due, wake_at) = shared.take_due(Instant::now());
        let wake_at = wake_at.min(register_at);
        if let Some(due) = due {
            let _busy = shared.busy.lock().await;
            // The attempt may have ended while this waited for the lock: then its work is over.
            if shared.is_current(&due.writer) {
                if let Some(started) = due.stuck {
                    return end_process_of_stuck_job(
                        &reservations,
                        due.id,
                        &due.writer,
                        started,
                        shared.hard_stop_after,
                    )
                    .await;
                }
                if let Some(saved) = beat(&reservations, &due).await {
                    shared.wrote(&due.writer, saved);
                }
                if due.writer.is_lost() {
                    shared.forget(&due.writer);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            () = shared.wake.notified() => {}
        }
    }
}

/// One round of work on the running attempt; failures are logged and tried again next time.
/// Returns the document it saved, if it wrote one. Every such write stamps `heartbeatAt`;
/// when the touch is due one is made even without progress, before the touch, so the
/// reservation never outlives the stamp by more than a TTR.
async fn beat(reservations: &Reservations, due: &Due) -> Option<JobDocument> {
    let write = due.progress.clone().or_else(|| due.touch.then(|| due.latest.clone()));
    let mut saved = None;
    if let Some(mut doc) = write {
        // A write is a sign of life, and a touch of the document for the maintenance sweep.
        let at = now();
        doc.heartbeat_at = Some(at);
        doc.updated_at = at;
        match due.writer.write(doc).await {
            Ok(doc) => saved = Some(doc),
            Err(e @ FenceError::Lost { .. }) => warn_later(format!("{e}; nothing more of it is saved")),
            Err(e) if due.progress.is_some() => {
                warn_later(format!("progress write failed, will retry with the next update: {e}"))
            }
            Err(e) => warn_later(format!("heartbeat: heartbeatAt not saved, will retry at the next touch: {e}")),
        }
    }
    if due.touch {
        let id = due.id;
        let touched =
            reservations.call_from_outside(move |consumer| async move { consumer.lock().await.touch(id).await });
        if let Err(e) = touched.await {
            warn_later(format!("heartbeat: touch of queue job {id} failed: {e}"));
        }
    }
    if due.check && !due.writer.is_lost() {
        if let Err(e) = due.writer.refresh().await {
            warn_later(format!("heartbeat: {e}"));
        }
    }
    saved
}

/// The job holds on past TIMEOUT and every softer stop: fail the attempt under the
/// retry policy (its unsaved progress is lost), settle the queue entry, end the process.
/// Messages go straight to stderr: the `log` bridge to Python needs the GIL the job holds.
async fn end_process_of_stuck_job(
    reservations: &Reservations,
    id: QueueJobId,
    writer: &FencedWriter,
    mut started: JobDocument,
    hard_stop_after: Duration,
) {
    eprintln!(
        "geyser: job {}: attempt {} is still running {hard_stop_after:?} past its TIMEOUT and cannot be interrupted; ending worker process {}",
        started.uuid,
        started.attempts,
        std::process::id()
    );
    let msg = format!(
        "attempt {} exceeded TIMEOUT of {} s and was stopped by ending its worker process",
        started.attempts,
        started.queue_kwargs.timeout.unwrap_or_default()
    );
    let outcome = Outcome::Continue { code: Value::from("timeout"), msg, traceback: None };
    let saved = match outcome::apply(&mut started, outcome, rand::random()) {
        Ok(action) => match writer.write(started).await {
            Ok(saved) => reservations
                .call_from_outside(move |consumer| async move { settle(&consumer, &saved, id, action).await })
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = saved {
        eprintln!(
            "geyser: timeout of queue job {id} not fully saved ({e}); the next reservation records the lost attempt"
        );
    }
    // SAFETY: _exit ends the process at once, without running Python's or Rust's exit
    // handlers, which could wait forever on the GIL the stuck job holds.
    unsafe { libc::_exit(EXIT_REPLACE) }
}

/// Log a warning from a blocking-pool thread: the `log` bridge to Python waits for the
/// GIL, which the running job may hold for long, and the heartbeat must not wait with it.
fn warn_later(msg: String) {
    tokio::task::spawn_blocking(move || log::warn!("{msg}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(ttr: f64, started_at: f64, heartbeat_at: Option<f64>) -> JobDocument {
        let raw = serde_json::json!({
            "jobType": "t", "createdAt": 1.0, "updatedAt": 1.0, "uuid": "u",
            "queueKwargs": {"queue": "q", "priority": 0, "ttr": ttr},
            "status": "running", "startedAt": started_at, "heartbeatAt": heartbeat_at,
        });
        serde_json::from_value(raw).expect("a valid document")
    }

    #[test]
    fn the_registration_is_written_at_once_then_at_most_once_a_second_for_jobs() {
        assert_eq!(registration_due(None, false), None, "a worker that opens registers at once");
        let last = Instant::now();
        assert_eq!(registration_due(Some(last), true), Some(last + JOB_CHANGE_GAP));
        assert_eq!(registration_due(Some(last), false), Some(last + REFRESH_EVERY));
        assert!(JOB_CHANGE_GAP < REFRESH_EVERY);
    }

    #[test]
    fn an_owner_is_alive_for_one_ttr_after_its_last_sign_of_life() {
        let secs = |s: f64| Some(Duration::from_secs_f64(s));
        assert_eq!(owner_alive_for(&running(10.0, 100.0, Some(105.0)), 108.0), secs(7.0));
        assert_eq!(owner_alive_for(&running(10.0, 100.0, None), 108.0), secs(2.0), "the start counts");
        assert_eq!(owner_alive_for(&running(10.0, 100.0, Some(105.0)), 115.0), None, "a TTR old: lost");
        assert_eq!(owner_alive_for(&running(10.0, 100.0, Some(500.0)), 108.0), secs(10.0), "at most one TTR");
        let barely = owner_alive_for(&running(10.0, 100.0, Some(105.0)), 114.9999);
        assert_eq!(barely, Some(Duration::from_millis(1)), "whole milliseconds, rounded up");
        let mut endless = running(10.0, 100.0, None);
        endless.queue_kwargs.ttr = f64::INFINITY;
        assert_eq!(owner_alive_for(&endless, 108.0), None, "no TTR to count from: lost");
        let mut queued = running(10.0, 100.0, Some(105.0));
        queued.status = Status::Queued;
        assert_eq!(owner_alive_for(&queued, 108.0), None, "only a running job has an owner");
    }
}
