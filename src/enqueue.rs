//! How a new job reaches the store and the queue: document first, queue entry second.
//! `TwoStep` works across any store and queue (save, put, note the queue id); a driver whose
//! queue and store can share one database offers its own one-transaction `Enqueuer`
//! (see `drivers/`). The client picks one at open time and only calls the trait.

use std::sync::Arc;

use async_trait::async_trait;

use crate::client::{ClientError, ClientResult};
use crate::model::JobDocument;
use crate::queue::{PutOptions, Queue, QueueJobId};
use crate::store::{self, Store, StoreError};

#[async_trait]
pub trait Enqueuer: Send + Sync {
    /// Save the new document `doc` and put its uuid on `doc.queue_kwargs.queue`.
    /// Returns the saved document with its `queueJobId`; on failure no job is left behind.
    async fn enqueue(&self, doc: JobDocument, opts: PutOptions) -> ClientResult<JobDocument>;

    /// `enqueue` for a batch of new documents (checked by the caller), one result per job in
    /// order; a job that fails leaves nothing behind, as with `enqueue` (docs/lifecycle.md
    /// "Bulk enqueue"). An error of the whole call means no job was written.
    async fn enqueue_many(&self, jobs: Vec<(JobDocument, PutOptions)>) -> ClientResult<Vec<ClientResult<JobDocument>>>;
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
                self.remove_unqueued(&saved.uuid).await;
                return Err(e.into());
            }
        };
        self.note_queue_id(saved, id).await
    }

    /// Every document in one store call, the puts pipelined per queue, the queue ids noted
    /// in one store call. A failed put removes its document, as `enqueue` does; a document
    /// that cannot be removed is left for the sweep to queue.
    async fn enqueue_many(&self, jobs: Vec<(JobDocument, PutOptions)>) -> ClientResult<Vec<ClientResult<JobDocument>>> {
        let docs: Vec<JobDocument> = jobs.iter().map(|(doc, _)| doc.clone()).collect();
        let mut results: Vec<ClientResult<JobDocument>> =
            self.store.create_many(&docs).await?.into_iter().map(|r| r.map_err(ClientError::from)).collect();
        let mut noted = Vec::new();
        let mut noted_at = Vec::new();
        for (queue, members) in by_queue(&docs, &results) {
            let bodies: Vec<(&[u8], PutOptions)> =
                members.iter().map(|&i| (docs[i].uuid.as_bytes(), jobs[i].1)).collect();
            let ids = self.queue.put_many(&queue, &bodies).await;
            for (i, id) in members.into_iter().zip(ids) {
                match (id, &results[i]) {
                    (Ok(id), Ok(saved)) => {
                        noted.push(JobDocument { queue_job_id: Some(id.to_string()), ..saved.clone() });
                        noted_at.push((i, id));
                    }
                    (Ok(_), Err(_)) => {} // by_queue skips those
                    (Err(e), _) => {
                        self.remove_unqueued(&docs[i].uuid).await;
                        results[i] = Err(e.into());
                    }
                }
            }
        }
        let written = match self.store.update_many(&noted).await {
            Ok(written) => written,
            Err(e) => noted.iter().map(|_| Err(StoreError::Unavailable(e.to_string()))).collect(),
        };
        for (((i, id), note), written) in noted_at.into_iter().zip(noted).zip(written) {
            results[i] = match written {
                Ok(doc) => Ok(doc),
                // A worker reserved the entry and noted it first, or the write failed: note it
                // as a single enqueue does (which reads the document again on a conflict).
                Err(_) => self.note_queue_id(JobDocument { queue_job_id: None, ..note }, id).await,
            };
        }
        Ok(results)
    }
}

/// The documents `create_many` saved, grouped by queue: (queue, indexes in the batch).
fn by_queue(docs: &[JobDocument], saved: &[ClientResult<JobDocument>]) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        if saved[i].is_err() {
            continue;
        }
        let queue = &doc.queue_kwargs.queue;
        match groups.iter_mut().find(|(q, _)| q == queue) {
            Some((_, members)) => members.push(i),
            None => groups.push((queue.clone(), vec![i])),
        }
    }
    groups
}

impl TwoStep {
    /// After a failed put: remove the document again, or leave it for the sweep to queue.
    async fn remove_unqueued(&self, uuid: &str) {
        if let Err(del) = self.store.delete(uuid).await {
            log::error!(
                "job {uuid}: put failed and the document could not be removed ({del}); the sweep will queue it"
            );
        }
    }

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
