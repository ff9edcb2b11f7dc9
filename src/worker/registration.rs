//! A worker's registration in the store (`geyser workers`): who it is (host, pid, queues,
//! start time) and the job it runs, written when the worker opens, soon after a job starts or
//! ends (at most once a second for that), and every `REFRESH_EVERY` besides, by the worker's
//! heartbeat task; removed by
//! `Worker::close`. A worker that dies leaves its record to expire after `TTL`.
//! Touches the store's worker registrations only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::model::now;
use crate::store::{Store, StoreResult, WorkerRecord};

/// How often an idle worker writes its registration again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How long a registration counts as live after its last write: three missed refreshes.
pub const TTL: Duration = Duration::from_secs(15);

/// The registration of one worker, and whether it still wants to be listed.
pub struct Registration {
    store: Arc<dyn Store>,
    record: Mutex<WorkerRecord>,
    /// Held across a write; true once the worker has stopped (nothing is written after that).
    closed: tokio::sync::Mutex<bool>,
}

/// The name of this machine, as the worker's record shows it.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Registration {
    /// A registration for worker `id` watching `queues`, not written yet.
    pub fn new(store: Arc<dyn Store>, id: &str, queues: &[String]) -> Self {
        let started = now();
        let record = WorkerRecord {
            id: id.to_owned(),
            host: host_name(),
            pid: std::process::id(),
            queues: queues.to_vec(),
            started_at: started,
            heartbeat_at: started,
            job: None,
            expires_at: started + TTL.as_secs_f64(),
        };
        Self { store, record: Mutex::new(record), closed: tokio::sync::Mutex::new(false) }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, WorkerRecord> {
        self.record.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Note the job the worker runs now (None: none); the next `refresh` writes it.
    pub fn set_job(&self, job: Option<&str>) {
        self.record().job = job.map(str::to_owned);
    }

    /// Write the record as it stands, stamped now, unless the worker has stopped. Returns
    /// false, writing nothing, while another write is in flight (a slow store never piles
    /// writes up); the caller tries again soon.
    pub async fn refresh(&self) -> StoreResult<bool> {
        let Ok(closed) = self.closed.try_lock() else { return Ok(false) };
        if *closed {
            return Ok(true);
        }
        let record = {
            let mut record = self.record();
            record.heartbeat_at = now();
            record.expires_at = record.heartbeat_at + TTL.as_secs_f64();
            record.clone()
        };
        self.store.register_worker(&record).await?;
        Ok(true)
    }

    /// Remove the record for good: after any write in flight, and no write after it.
    pub async fn remove(&self) -> StoreResult<bool> {
        let mut closed = self.closed.lock().await;
        *closed = true;
        let id = self.record().id.clone();
        self.store.remove_worker(&id).await
    }
}
