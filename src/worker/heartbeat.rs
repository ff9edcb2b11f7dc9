//! The heartbeat of a running attempt: touches the reservation every TTR/3 so a job
//! may run far longer than its TTR, and re-reads the document every second to see a
//! cancel request or a lost fence. Runs on tokio; never needs the GIL.
//!
//! It is also the last resort for TIMEOUT: a job stuck in C code that holds the GIL
//! cannot be stopped from Python, so once the attempt is `hard_stop_after` past its
//! TIMEOUT, the heartbeat saves the timeout failure itself and ends the process with
//! `EXIT_REPLACE` (the supervisor starts a new one).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fenced::FencedWriter;
use super::outcome::{self, Outcome};
use super::settle;
use crate::client::secs;
use crate::model::JobDocument;
use crate::queue::{Consumer, QueueJobId};

/// How often a running attempt re-reads its document (cancel requests, lost fence).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Exit status of a worker process that ended itself to stop a stuck job (see worker.py).
pub const EXIT_REPLACE: i32 = 75;

pub struct Heartbeat {
    task: JoinHandle<()>,
}

/// What the heartbeat of one attempt works on.
pub struct Beat {
    pub consumer: Arc<Mutex<Box<dyn Consumer>>>,
    pub id: QueueJobId,
    pub writer: Arc<FencedWriter>,
    /// The document as the attempt started, for the timeout failure of last resort.
    pub started: JobDocument,
    /// How long past TIMEOUT the Python side gets to stop the job before the process ends.
    pub hard_stop_after: Duration,
}

impl Heartbeat {
    pub fn start(beat: Beat) -> Self {
        Self { task: tokio::spawn(beat.run()) }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

impl Beat {
    async fn run(self) {
        let touch_every = (secs(self.started.queue_kwargs.ttr) / 3).max(Duration::from_millis(200));
        let mut touch = tokio::time::interval(touch_every);
        let mut check = tokio::time::interval(CHECK_EVERY);
        touch.tick().await;
        check.tick().await;
        let hard_stop = self.started.queue_kwargs.timeout.map(|t| Instant::now() + secs(t) + self.hard_stop_after);
        loop {
            tokio::select! {
                _ = touch.tick() => {
                    if let Err(e) = self.consumer.lock().await.touch(self.id).await {
                        warn_later(format!("heartbeat: touch of queue job {} failed: {e}", self.id));
                    }
                }
                _ = check.tick() => {
                    if let Err(e) = self.writer.refresh().await {
                        warn_later(format!("heartbeat: {e}"));
                        if self.writer.is_lost() {
                            return;
                        }
                    }
                }
                _ = sleep_until(hard_stop) => return self.end_process_of_stuck_job().await,
            }
        }
    }

    /// The job holds on past TIMEOUT and every softer stop: fail the attempt under the
    /// retry policy (its unsaved progress is lost), settle the queue entry, end the process.
    /// Messages go straight to stderr: the `log` bridge to Python needs the GIL the job holds.
    async fn end_process_of_stuck_job(self) {
        let Beat { consumer, id, writer, mut started, hard_stop_after } = self;
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
                Ok(saved) => settle(&consumer, &saved, id, action).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = saved {
            eprintln!("geyser: timeout of queue job {id} not fully saved ({e}); the next reservation records the lost attempt");
        }
        // SAFETY: _exit ends the process at once, without running Python's or Rust's exit
        // handlers, which could wait forever on the GIL the stuck job holds.
        unsafe { libc::_exit(EXIT_REPLACE) }
    }
}

/// Log a warning from a blocking-pool thread: the `log` bridge to Python waits for the
/// GIL, which the running job may hold for long, and the heartbeat must not wait with it.
fn warn_later(msg: String) {
    tokio::task::spawn_blocking(move || log::warn!("{msg}"));
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
