//! Fenced writes of a running attempt's document: compare-and-swap on the version,
//! and on a conflict re-read to see whether the attempt still owns the job.
//! Touches only the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::{JobDocument, Status};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("job {uuid}: attempt {fence} lost the job to a newer attempt; its writes are refused")]
    Lost { uuid: String, fence: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the writer last learnt of the stored document.
#[derive(Debug)]
struct Seen {
    version: u64,
    cancel_requested: bool,
}

/// Writes one attempt's document, only while the stored fence is still this attempt's.
pub struct FencedWriter {
    store: Arc<dyn Store>,
    uuid: String,
    fence: String,
    seen: Mutex<Seen>,
    lost: AtomicBool,
}

impl FencedWriter {
    pub fn new(store: Arc<dyn Store>, started: &JobDocument) -> Self {
        Self {
            store,
            uuid: started.uuid.clone(),
            fence: started.fence.clone().unwrap_or_default(),
            seen: Mutex::new(Seen { version: started.version, cancel_requested: started.cancel_requested }),
            lost: AtomicBool::new(false),
        }
    }

    /// The store this writer writes to.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    pub fn cancel_requested(&self) -> bool {
        self.seen.lock().map(|s| s.cancel_requested).unwrap_or(false)
    }

    fn lose(&self) -> FenceError {
        self.lost.store(true, Ordering::Release);
        FenceError::Lost { uuid: self.uuid.clone(), fence: self.fence.clone() }
    }

    fn remember(&self, doc: &JobDocument) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.version = doc.version;
            seen.cancel_requested = doc.cancel_requested;
        }
    }

    /// Re-read the stored document: still ours? Picks up a cancel request on the way.
    pub async fn refresh(&self) -> Result<(), FenceError> {
        match self.store.get(&self.uuid).await? {
            Some(cur) if cur.fence.as_deref() == Some(self.fence.as_str()) && cur.status == Status::Running => {
                self.remember(&cur);
                Ok(())
            }
            _ => Err(self.lose()),
        }
    }

    /// `doc` as this attempt's next compare-and-swap writes it: at the version last seen,
    /// with this attempt's fence and any cancel request seen kept. For a caller that sends the
    /// swap itself (beside another write, `Worker::finish`); it hands the result to `written`,
    /// or after a conflict calls `write`, which finds out whether the attempt still owns the job.
    pub fn prepare(&self, mut doc: JobDocument) -> Result<JobDocument, FenceError> {
        if self.is_lost() {
            return Err(self.lose());
        }
        {
            let seen = self.seen.lock().map_err(|_| self.lose())?;
            doc.version = seen.version;
            doc.cancel_requested |= seen.cancel_requested;
        }
        doc.fence = Some(self.fence.clone());
        Ok(doc)
    }

    /// Note a document that a swap prepared by `prepare` wrote.
    pub fn written(&self, saved: &JobDocument) {
        self.remember(saved);
    }

    /// Write `doc` over the stored one if this attempt still owns it.
    /// A cancel request stored by someone else is kept, never overwritten.
    pub async fn write(&self, mut doc: JobDocument) -> Result<JobDocument, FenceError> {
        for _ in 0..crate::store::MAX_CONFLICTS {
            doc = self.prepare(doc)?;
            match self.store.update(&doc).await {
                Ok(saved) => {
                    self.remember(&saved);
                    return Ok(saved);
                }
                Err(StoreError::Conflict { .. }) => self.refresh().await?,
                Err(StoreError::NotFound(_)) => return Err(self.lose()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Contended { uuid: self.uuid.clone(), tries: crate::store::MAX_CONFLICTS }.into())
    }
}
