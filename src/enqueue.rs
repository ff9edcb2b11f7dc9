//! How a new job reaches the store and the queue: document first, queue entry second.
//! `TwoStep` works across any store and queue (save, put, note the queue id); a driver whose
//! queue and store can share one database offers its own one-transaction `Enqueuer`
//! (see `drivers/`). The client picks one at open time and only calls the trait.

use std::sync::Arc;

use async_trait::async_trait;

use crate::client::ClientResult;
use crate::model::JobDocument;
use crate::queue::{PutOptions, Queue, QueueJobId};
use crate::store::{self, Store, StoreError};

#[async_trait]
pub trait Enqueuer: Send + Sync {
    /// Save the new document `doc` and put its uuid on `doc.queue_kwargs.queue`.
    /// Returns the saved document with its `queueJobId`; on failure no job is left behind.
    async fn enqueue(&self, doc: JobDocument, opts: PutOptions) -> ClientResult<JobDocument>;
}

/// Any store, any queue: save, then put, then record the queue id in the document.
pub struct TwoStep {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn Store>,
}

#[async_trait]
impl Enqueuer for TwoStep {
    async fn enqueue(&self, doc: JobDocument, opts: PutOptions) -> ClientResult<JobDocument> {
        let saved = self.store.create(&doc).await?;
        let id = match self.queue.put(&saved.queue_kwargs.queue, saved.uuid.as_bytes(), opts).await {
            Ok(id) => id,
            Err(e) => {
                if let Err(del) = self.store.delete(&saved.uuid).await {
                    log::error!(
                        "job {}: put failed and the document could not be removed ({del}); the sweep will queue it",
                        saved.uuid
                    );
                }
                return Err(e.into());
            }
        };
        self.note_queue_id(saved, id).await
    }
}

impl TwoStep {
    /// Record where the job sits on the queue, unless a worker already did.
    async fn note_queue_id(&self, mut doc: JobDocument, id: QueueJobId) -> ClientResult<JobDocument> {
        for _ in 0..store::MAX_CONFLICTS {
            if doc.queue_job_id.is_some() {
                return Ok(doc);
            }
            doc.queue_job_id = Some(id.to_string());
            match self.store.update(&doc).await {
                Ok(saved) => return Ok(saved),
                Err(StoreError::Conflict { .. }) => {
                    doc = self.store.get(&doc.uuid).await?.ok_or_else(|| StoreError::NotFound(doc.uuid.clone()))?
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Contended { uuid: doc.uuid, tries: store::MAX_CONFLICTS }.into())
    }
}
