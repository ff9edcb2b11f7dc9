//! The maintenance service: periodic repair tasks that one process at a time runs for everyone
//! sharing a queue and a store. A run goes ahead only while its process holds the store's
//! lease `maintenance` (`lease`); each task is one unit registered in a `Service`
//! (`purge`: forget expired documents; `stale`: put back what a crash left behind). A failure
//! on one document or one queue server is counted and logged (`tally`, a bounded number of
//! lines per run) and never stops the run. Touches documents (compare-and-swap), queue
//! entries it puts, and the lease record; never a reservation someone holds.

mod lease;
mod purge;
mod stale;
mod tally;

use async_trait::async_trait;

use crate::client::Geyser;
use crate::store::StoreError;

pub use lease::LeaseTerms;
pub use purge::PurgeExpired;
pub use stale::RepairStale;
pub use tally::{SweepReport, Tally};

use lease::Keeper;

/// Documents this many seconds untouched or more are looked at; younger ones may be in the
/// middle of an enqueue (saved, not yet put) and are left alone.
pub const DEFAULT_MIN_AGE: f64 = 60.0;

/// How long the maintenance lease lasts unless renewed: twice the supervisor's default sweep
/// interval, so a leader sweeping at that interval keeps it, and a dead leader's successor
/// takes over within this time.
pub const DEFAULT_LEASE_TTL: f64 = 600.0;

/// The name of the lease record the maintenance service runs under.
pub const LEASE_NAME: &str = "maintenance";

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("maintenance: cannot read or take the lease {LEASE_NAME:?}: {0}")]
    Lease(#[source] StoreError),
}

/// Gives up the maintenance lease if `holder` holds it, so another process may sweep at once
/// rather than when the lease runs out (a supervisor that stops calls this). Whether it held it.
pub async fn release_lease(geyser: &Geyser, holder: &str) -> Result<bool, SweepError> {
    geyser.store.release_lease(LEASE_NAME, holder).await.map_err(SweepError::Lease)
}

/// One periodic maintenance task. `run` records what it did and every failure in `run.tally`
/// and goes on to the next item; between items it asks `run.may_continue()` and returns when
/// that says no (the lease was lost).
#[async_trait]
pub trait Task: Send + Sync {
    /// A short name for log lines.
    fn name(&self) -> &'static str;
    async fn run(&self, run: &mut Run<'_>);
}

/// What a task works with during one run of the service.
pub struct Run<'a> {
    pub geyser: &'a Geyser,
    pub tally: Tally,
    keeper: Option<Keeper<'a>>,
}

impl Run<'_> {
    /// Whether this process may go on working: renews the lease when that is due, and says
    /// no once it is lost. Always yes for a run without a lease.
    pub async fn may_continue(&mut self) -> bool {
        let Some(keeper) = self.keeper.as_mut() else { return true };
        keeper.keep(&mut self.tally).await
    }
}

/// The registered tasks, run in order.
pub struct Service {
    tasks: Vec<Box<dyn Task>>,
}

impl Service {
    /// A service running `tasks` in this order.
    pub fn new(tasks: Vec<Box<dyn Task>>) -> Self {
        Self { tasks }
    }

    /// The maintenance sweep: forget expired documents, then put back stale ones (left
    /// `queued` or `running` for at least `min_age` seconds with their queue entry gone).
    pub fn sweep(min_age: f64) -> Self {
        Self::new(vec![Box::new(PurgeExpired), Box::new(RepairStale { min_age })])
    }

    /// Runs every task once. With `lease`, only if this process holds or can take the
    /// maintenance lease (otherwise the report says who leads and nothing is done); without,
    /// unconditionally. Fails only when the lease cannot be read or taken at all.
    pub async fn run(&self, geyser: &Geyser, lease: Option<&LeaseTerms>) -> Result<SweepReport, SweepError> {
        let mut run = Run { geyser, tally: Tally::default(), keeper: None };
        if let Some(terms) = lease {
            let (held, keeper) = Keeper::acquire(geyser.store.as_ref(), terms).await.map_err(SweepError::Lease)?;
            run.tally.report.holder = Some(held.holder);
            let Some(keeper) = keeper else {
                log::debug!("maintenance: the lease is held by {}; nothing to do here", held_by(&run));
                return Ok(run.tally.finish());
            };
            run.keeper = Some(keeper);
        }
        run.tally.report.leader = true;
        for task in &self.tasks {
            if !run.may_continue().await {
                break;
            }
            log::debug!("maintenance: running {}", task.name());
            task.run(&mut run).await;
        }
        if let Some(keeper) = run.keeper.take() {
            keeper.finish(&mut run.tally).await;
        }
        Ok(run.tally.finish())
    }
}

fn held_by<'r>(run: &'r Run<'_>) -> &'r str {
    run.tally.report.holder.as_deref().unwrap_or("?")
}
