//! The heartbeat of a running attempt: touches the reservation every TTR/3 so a job
//! may run far longer than its TTR, and re-reads the document every second to see a
//! cancel request or a lost fence. Runs on tokio; never needs the GIL.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::fenced::FencedWriter;
use crate::queue::{Consumer, QueueJobId};

pub struct Heartbeat {
    task: JoinHandle<()>,
}

/// How often a running attempt re-reads its document (cancel requests, lost fence).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

impl Heartbeat {
    pub fn start(consumer: Arc<Mutex<Box<dyn Consumer>>>, id: QueueJobId, ttr: Duration, writer: Arc<FencedWriter>) -> Self {
        let touch_every = (ttr / 3).max(Duration::from_millis(200));
        Self { task: tokio::spawn(beat(consumer, id, touch_every, writer)) }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

async fn beat(consumer: Arc<Mutex<Box<dyn Consumer>>>, id: QueueJobId, touch_every: Duration, writer: Arc<FencedWriter>) {
    let mut touch = tokio::time::interval(touch_every);
    let mut check = tokio::time::interval(CHECK_EVERY);
    touch.tick().await;
    check.tick().await;
    loop {
        tokio::select! {
            _ = touch.tick() => {
                if let Err(e) = consumer.lock().await.touch(id).await {
                    log::warn!("heartbeat: touch of queue job {id} failed: {e}");
                }
            }
            _ = check.tick() => {
                if let Err(e) = writer.refresh().await {
                    log::warn!("heartbeat: {e}");
                    if writer.is_lost() {
                        return;
                    }
                }
            }
        }
    }
}
