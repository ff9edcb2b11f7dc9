//! How a new job reaches the store and the queue. A driver whose queue and store can share
//! one database offers its own one-transaction `Enqueuer` (see `drivers/`); every other
//! pair of backends uses the `Outbox` (`enqueue/outbox.rs`): the document is committed, and
//! a relay task of this process puts the queue entry soon after. The client picks one at
//! open time and only calls the trait.

mod outbox;

use std::time::Duration;

use async_trait::async_trait;

pub use outbox::{
    flush_everywhere, pending_everywhere, unnoted_everywhere, Outbox, MAX_PENDING, NOTE_DELAY, ORPHAN_GRACE,
    RELAY_BATCH,
};

use crate::client::ClientResult;
use crate::model::JobDocument;
use crate::queue::{PutOptions, QueueJobId};

#[async_trait]
pub trait Enqueuer: Send + Sync {
    /// Save the new document `doc` so that its uuid reaches `doc.queue_kwargs.queue` with
    /// `opts`. Returns the saved document; on failure no job is left behind. Its
    /// `queueJobId` is set when the entry was put in the same transaction, else null until
    /// the entry is put and noted.
    async fn enqueue(&self, doc: JobDocument, opts: PutOptions) -> ClientResult<JobDocument>;

    /// `enqueue` for a batch of new documents (checked by the caller), one result per job in
    /// order; a job that fails leaves nothing behind, as with `enqueue` (docs/lifecycle.md
    /// "Bulk enqueue"). An error of the whole call means no job was written.
    async fn enqueue_many(&self, jobs: Vec<(JobDocument, PutOptions)>) -> ClientResult<Vec<ClientResult<JobDocument>>>;

    /// Jobs enqueued through this enqueuer whose queue entries are not put yet.
    fn pending(&self) -> usize {
        0
    }

    /// For a cancel in this process of job `uuid`, whose document names no queue entry yet:
    /// stop delivering the job. A job not put yet is never put; for one put but not noted
    /// (the relay notes ids `NOTE_DELAY` after the put) the entry's id is returned, for the
    /// caller to delete. None where the entry is named in the enqueue's own transaction.
    fn withdraw(&self, _uuid: &str) -> Option<QueueJobId> {
        None
    }

    /// Wait until `pending` is 0 and the put entries' ids are noted in their documents, or
    /// `timeout` has passed; returns `pending` then.
    async fn flush(&self, _timeout: Duration) -> usize {
        0
    }
}
