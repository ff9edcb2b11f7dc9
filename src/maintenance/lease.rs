//! Holding the maintenance lease during one run: take it (or learn who holds it), renew it
//! when a third of its time has passed, notice when it is lost, and give it up at the end
//! if asked. Touches only the store's lease record.

use super::{Tally, LEASE_NAME};
use crate::model::now;
use crate::store::{Lease, Store, StoreResult};

/// Who asks for the lease, for how long, and whether to give it up after the run.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseTerms {
    /// Names this process, the same on every call from it (e.g. `host:pid:token`).
    pub holder: String,
    /// Seconds the lease lasts unless renewed.
    pub ttl: f64,
    /// Give the lease up when the run ends (a one-off sweep); otherwise keep it until it
    /// runs out, so that the same process leads the next periodic run.
    pub release_after: bool,
}

/// The lease while this process holds it.
pub(super) struct Keeper<'a> {
    store: &'a dyn Store,
    terms: &'a LeaseTerms,
    /// When the lease runs out, as last granted.
    expires_at: f64,
    lost: bool,
}

impl<'a> Keeper<'a> {
    /// Tries to take (or renew) the lease: returns the lease as it stands, and a keeper
    /// when this process holds it.
    pub(super) async fn acquire(store: &'a dyn Store, terms: &'a LeaseTerms) -> StoreResult<(Lease, Option<Self>)> {
        let lease = store.try_acquire_lease(LEASE_NAME, &terms.holder, terms.ttl, now()).await?;
        let keeper =
            lease.is_held_by(&terms.holder).then_some(Self { store, terms, expires_at: lease.expires_at, lost: false });
        Ok((lease, keeper))
    }

    /// Whether the lease is still ours: renews it once a third of its time has passed. A
    /// store error while renewing is recorded; the lease then counts as ours until only a
    /// third of its time is left, so a brief store failure does not end the run.
    pub(super) async fn keep(&mut self, tally: &mut Tally) -> bool {
        if self.lost {
            return false;
        }
        let at = now();
        let margin = self.terms.ttl / 3.0;
        if at < self.expires_at - 2.0 * margin {
            return true;
        }
        match self.store.try_acquire_lease(LEASE_NAME, &self.terms.holder, self.terms.ttl, at).await {
            Ok(lease) if lease.is_held_by(&self.terms.holder) => self.expires_at = lease.expires_at,
            Ok(lease) => {
                tally.error(format!("lost the maintenance lease to {}; stopping this run", lease.holder));
                tally.report.holder = Some(lease.holder);
                self.lost = true;
            }
            Err(e) if at < self.expires_at - margin => tally.error(format!("renewing the maintenance lease: {e}")),
            Err(e) => {
                tally.error(format!("renewing the maintenance lease: {e}; it is about to run out, stopping this run"));
                self.lost = true;
            }
        }
        tally.report.lease_lost = self.lost;
        !self.lost
    }

    /// Ends the run's hold: gives the lease up if the terms say so.
    pub(super) async fn finish(self, tally: &mut Tally) {
        if !self.terms.release_after || self.lost {
            return;
        }
        if let Err(e) = self.store.release_lease(LEASE_NAME, &self.terms.holder).await {
            tally.error(format!("giving up the maintenance lease (it runs out by itself): {e}"));
        }
    }
}
