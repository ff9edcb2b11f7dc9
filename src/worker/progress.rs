//! Coalesced progress writes: a running job may report progress as often as it likes;
//! the store sees at most one write per interval, always the latest state.
//! Writes through the attempt's FencedWriter only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::fenced::{FenceError, FencedWriter};
use crate::model::JobDocument;

pub struct ProgressWriter {
    pending: Arc<Mutex<Option<JobDocument>>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl ProgressWriter {
    pub fn start(writer: Arc<FencedWriter>, interval: Duration) -> Self {
        let pending: Arc<Mutex<Option<JobDocument>>> = Arc::default();
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(Self::write_loop(writer, pending.clone(), wake.clone(), interval));
        Self { pending, wake, task }
    }

    async fn write_loop(
        writer: Arc<FencedWriter>,
        pending: Arc<Mutex<Option<JobDocument>>>,
        wake: Arc<Notify>,
        interval: Duration,
    ) {
        loop {
            wake.notified().await;
            let latest = pending.lock().ok().and_then(|mut p| p.take());
            if let Some(doc) = latest {
                match writer.write(doc).await {
                    Ok(_) => {}
                    Err(e @ FenceError::Lost { .. }) => {
                        log::warn!("{e}; progress is no longer saved");
                        return;
                    }
                    Err(e) => log::warn!("progress write failed, will retry with the next update: {e}"),
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Note the job's latest state; it reaches the store within one interval.
    pub fn submit(&self, doc: JobDocument) {
        if let Ok(mut p) = self.pending.lock() {
            *p = Some(doc);
        }
        self.wake.notify_one();
    }

    /// Stop writing: the attempt's final write carries everything from here on.
    pub fn stop(self) {
        self.task.abort();
    }
}
