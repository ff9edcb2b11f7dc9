//! The maintenance sweep: repairs what a crash between two writes can leave behind.
//! A document left `queued` with no queue entry is put again; a document left
//! `running` whose reservation is gone gets the worker-lost failure and, while
//! retries remain, a new queue entry. Documents past their LIFESPAN are forgotten.
//! Reads and writes documents (CAS) and puts queue entries; never touches a
//! reservation someone holds.

use crate::client::{secs, Geyser};
use crate::model::{now, JobDocument, Status, TransitionError};
use crate::queue::{PutOptions, QueueError, QueueJobId};
use crate::store::{ListFilter, Page, StoreError};
use crate::worker::outcome::{self, Outcome, QueueAction};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("sweep: listing {status} documents: {source}")]
    List {
        status: Status,
        #[source]
        source: StoreError,
    },
    #[error("sweep: job {uuid}: {source}")]
    Queue {
        uuid: String,
        #[source]
        source: QueueError,
    },
    #[error("sweep: job {uuid}: {source}")]
    Store {
        uuid: String,
        #[source]
        source: StoreError,
    },
    #[error("sweep: forgetting expired documents: {0}")]
    Purge(#[source] StoreError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

/// What one sweep repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// `queued` documents that had no queue entry and were put again.
    pub requeued: u64,
    /// `running` documents whose reservation was gone: failed or put again.
    pub recovered: u64,
    /// Documents past their `expiresAt` (the job class's LIFESPAN), forgotten.
    pub purged: u64,
}

/// Documents this many seconds untouched or more are looked at; younger ones may
/// be in the middle of an enqueue (saved, not yet put) and are left alone.
pub const DEFAULT_MIN_AGE: f64 = 60.0;

const PAGE: usize = 200;

/// Sweep every `queued` and `running` document last written at least `min_age` seconds ago.
pub async fn sweep(geyser: &Geyser, min_age: f64) -> Result<SweepReport, SweepError> {
    let purged = geyser.store.purge_expired(now()).await.map_err(SweepError::Purge)?;
    let mut report = SweepReport { purged, ..SweepReport::default() };
    for status in [Status::Queued, Status::Running] {
        let filter = ListFilter { status: Some(status), job_type: None, updated_before: Some(now() - min_age) };
        let mut page = Page { after: None, limit: PAGE };
        loop {
            let docs = geyser.store.list(&filter, &page).await.map_err(|source| SweepError::List { status, source })?;
            let Some(last) = docs.last() else { break };
            page.after = Some(last.uuid.clone());
            for doc in docs {
                if entry_is_gone(geyser, &doc).await? && repair(geyser, doc).await? {
                    match status {
                        Status::Queued => report.requeued += 1,
                        _ => report.recovered += 1,
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Whether the queue no longer holds the entry the document names (or it names none).
/// An entry counts only if it still carries this job's uuid: a beanstalkd restarted
/// without a binlog hands the same ids to new jobs. A `running` document whose entry is
/// ready or delayed again is left to the next worker that reserves it: its triage
/// records the lost attempt.
async fn entry_is_gone(geyser: &Geyser, doc: &JobDocument) -> Result<bool, SweepError> {
    let Some(id) = doc.queue_job_id.as_deref().and_then(|s| s.parse::<QueueJobId>().ok()) else {
        return Ok(true);
    };
    let body = geyser.queue.peek(id).await.map_err(|source| SweepError::Queue { uuid: doc.uuid.clone(), source })?;
    Ok(body.as_deref() != Some(doc.uuid.as_bytes()))
}

/// Put the job on its queue again (recording the lost attempt of a `running` one first).
/// Returns false when the document changed meanwhile (someone else is handling it).
async fn repair(geyser: &Geyser, mut doc: JobDocument) -> Result<bool, SweepError> {
    let uuid = doc.uuid.clone();
    let store_err = |source| SweepError::Store { uuid: uuid.clone(), source };
    let mut delay = 0.0;
    if doc.status == Status::Running {
        let lost = Outcome::worker_lost(doc.attempts, "its queue entry is gone");
        if outcome::apply(&mut doc, lost, rand::random())? == QueueAction::Bury {
            log::warn!("sweep: job {uuid} was left running with no queue entry; no retries left, failed");
            return save(geyser, &doc).await.map_err(store_err);
        }
        delay = doc.next_run_at.map_or(0.0, |at| at - now());
    }
    // Claim the document before putting, so two sweeps never put the same job twice.
    doc.queue_job_id = None;
    let claimed = match geyser.store.update(&doc).await {
        Ok(saved) => saved,
        Err(StoreError::Conflict { .. }) => return Ok(false),
        Err(e) => return Err(store_err(e)),
    };
    let opts =
        PutOptions { priority: claimed.queue_kwargs.priority, delay: secs(delay), ttr: secs(claimed.queue_kwargs.ttr) };
    let id = geyser
        .queue
        .put(&claimed.queue_kwargs.queue, uuid.as_bytes(), opts)
        .await
        .map_err(|source| SweepError::Queue { uuid: uuid.clone(), source })?;
    let mut noted = claimed;
    noted.queue_job_id = Some(id.to_string());
    match geyser.store.update(&noted).await {
        // A worker reserved the new entry first and noted the id itself.
        Ok(_) | Err(StoreError::Conflict { .. }) => {}
        Err(e) => return Err(store_err(e)),
    }
    log::info!("sweep: job {uuid} had no queue entry; put again as queue job {id}");
    Ok(true)
}

async fn save(geyser: &Geyser, doc: &JobDocument) -> Result<bool, StoreError> {
    match geyser.store.update(doc).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
