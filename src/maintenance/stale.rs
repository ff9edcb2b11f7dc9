//! Maintenance task: put back what a crash between two writes left behind. A document left
//! `queued` with no queue entry is put again; a document left `running` whose reservation is
//! gone gets the worker-lost failure and, while retries remain, a new queue entry; an entry
//! left buried under a `queued` or `running` document is kicked. Only
//! documents untouched for `min_age` are looked at, through the store's stale listing.
//! An unreadable document is counted and skipped; a queue server that cannot be reached is
//! noted once and the documents whose entry it holds are skipped until the next run.
//! Reads and writes documents (CAS), puts queue entries and kicks buried ones; never
//! touches a reservation someone holds.

use std::collections::HashSet;

use async_trait::async_trait;

use super::{Run, Task};
use crate::client::{secs, Geyser};
use crate::model::{now, JobDocument, Status, TransitionError};
use crate::queue::{JobState, PutOptions, QueueError, QueueJobId};
use crate::store::{StaleKey, StoreError};
use crate::worker::outcome::{self, Outcome, QueueAction};

/// Documents read per store call.
const PAGE: usize = 200;

pub struct RepairStale {
    /// Seconds since its last write before a document counts as stale.
    pub min_age: f64,
}

#[derive(Debug, thiserror::Error)]
enum RepairError {
    #[error("job {uuid}: {source}")]
    Queue {
        uuid: String,
        #[source]
        source: QueueError,
    },
    #[error("job {uuid}: {source}")]
    Store {
        uuid: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

/// Queue servers (shards) found unreachable during this run; their jobs wait for the next.
type DownShards = HashSet<u16>;

#[async_trait]
impl Task for RepairStale {
    fn name(&self) -> &'static str {
        "repair stale documents"
    }

    async fn run(&self, run: &mut Run<'_>) {
        let before = now() - self.min_age;
        let mut down = DownShards::new();
        for status in [Status::Queued, Status::Running] {
            let mut after: Option<StaleKey> = None;
            loop {
                let rows = match run.geyser.store.list_stale(status, before, after.as_ref(), PAGE).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        run.tally.error(format!("listing stale {status} documents: {e}"));
                        break;
                    }
                };
                let full_page = rows.len() == PAGE;
                after = rows.last().map(|row| row.key.clone());
                for row in rows {
                    if !run.may_continue().await {
                        return;
                    }
                    match row.doc {
                        Ok(doc) => check(run, doc, &mut down).await,
                        Err(e) => run.tally.unreadable(&row.key.uuid, &e),
                    }
                }
                if !full_page {
                    break;
                }
            }
        }
    }
}

/// What the queue says of the entry a document names.
enum Entry {
    /// The queue holds it (with this job's uuid): nothing to repair.
    Held,
    /// The queue holds it buried, where no worker reserves it: kick it.
    Buried(QueueJobId),
    /// There is none (or the document names none): the job must be put again.
    Gone,
    /// Its server was found unreachable earlier in this run.
    ServerDown,
    /// Its server cannot be reached (first found now).
    ServerUnreachable(u16, QueueError),
    /// The lookup of this entry failed.
    Failed(QueueError),
}

/// Repairs the document if its queue entry is gone; records the outcome in the tally.
async fn check(run: &mut Run<'_>, doc: JobDocument, down: &mut DownShards) {
    match entry(run.geyser, &doc, down).await {
        Entry::Held => return,
        Entry::Buried(id) => {
            match run.geyser.queue.kick_job(id).await {
                Ok(()) => {
                    log::info!(
                        "maintenance: job {} ({}) had its queue entry {id} buried; kicked",
                        doc.uuid,
                        doc.status
                    );
                    run.tally.report.requeued += 1;
                }
                Err(e) => run.tally.error(format!("job {}: kicking its buried queue entry {id}: {e}", doc.uuid)),
            }
            return;
        }
        Entry::Gone => {}
        Entry::ServerDown => {
            run.tally.report.skipped += 1;
            return;
        }
        Entry::ServerUnreachable(shard, e) => {
            down.insert(shard);
            run.tally.report.skipped += 1;
            run.tally.error(format!("queue server {shard} unreachable, its jobs are left until it is back: {e}"));
            return;
        }
        Entry::Failed(e) => {
            run.tally.error(format!("job {}: looking up its queue entry: {e}", doc.uuid));
            return;
        }
    }
    let status = doc.status;
    match repair(run.geyser, doc).await {
        Ok(false) => {}
        Ok(true) if status == Status::Queued => run.tally.report.requeued += 1,
        Ok(true) => run.tally.report.recovered += 1,
        Err(e) => run.tally.error(e.to_string()),
    }
}

/// Looks up the entry the document names. An entry counts only if it still carries this
/// job's uuid: a beanstalkd restarted without a binlog hands the same ids to new jobs. A
/// `running` document whose entry is ready or delayed again is left to the next worker that
/// reserves it: its triage records the lost attempt. A buried one (a release that failed
/// after the attempt's reservation ended, say) would never be reserved: it is to be kicked.
async fn entry(geyser: &Geyser, doc: &JobDocument, down: &DownShards) -> Entry {
    let Some(id) = QueueJobId::noted(doc.queue_job_id.as_deref()) else {
        return Entry::Gone;
    };
    if down.contains(&id.shard) {
        return Entry::ServerDown;
    }
    match geyser.queue.peek(id).await {
        Ok(body) if body.as_deref() == Some(doc.uuid.as_bytes()) => match geyser.queue.job_state(id).await {
            Ok(Some(JobState::Buried)) => Entry::Buried(id),
            Ok(Some(_)) => Entry::Held,
            Ok(None) => Entry::Gone, // deleted since the peek
            Err(e @ (QueueError::Unavailable { .. } | QueueError::Io { .. })) => Entry::ServerUnreachable(id.shard, e),
            Err(e) => Entry::Failed(e),
        },
        Ok(_) => Entry::Gone,
        Err(e @ (QueueError::Unavailable { .. } | QueueError::Io { .. })) => Entry::ServerUnreachable(id.shard, e),
        Err(e) => Entry::Failed(e),
    }
}

/// Put the job on its queue again (recording the lost attempt of a `running` one first).
/// Returns false when the document changed meanwhile (someone else is handling it).
async fn repair(geyser: &Geyser, mut doc: JobDocument) -> Result<bool, RepairError> {
    let uuid = doc.uuid.clone();
    let store_err = |source| RepairError::Store { uuid: uuid.clone(), source };
    if doc.status == Status::Running {
        let lost = Outcome::worker_lost(doc.attempts, "its queue entry is gone");
        if outcome::apply(&mut doc, lost, rand::random())? == QueueAction::Bury {
            log::warn!("maintenance: job {uuid} was left running with no queue entry; no retries left, failed");
            return save(geyser, &doc).await.map_err(store_err);
        }
    }
    // A delayed job (or one waiting out a retry's backoff) keeps what is left of its wait.
    let delay = doc.next_run_at.map_or(0.0, |at| at - now());
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
        .map_err(|source| RepairError::Queue { uuid: uuid.clone(), source })?;
    let mut noted = claimed;
    noted.queue_job_id = Some(id.to_string());
    match geyser.store.update(&noted).await {
        // A worker reserved the new entry first and noted the id itself.
        Ok(_) | Err(StoreError::Conflict { .. }) => {}
        Err(e) => return Err(store_err(e)),
    }
    log::info!("maintenance: job {uuid} had no queue entry; put again as queue job {id}");
    Ok(true)
}

async fn save(geyser: &Geyser, doc: &JobDocument) -> Result<bool, StoreError> {
    match geyser.store.update(doc).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
