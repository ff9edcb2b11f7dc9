//! Maintenance task: forget finished documents past their `expiresAt` (the job class's
//! LIFESPAN). Touches only the store.

use async_trait::async_trait;

use super::{Run, Task};
use crate::model::now;

pub struct PurgeExpired;

#[async_trait]
impl Task for PurgeExpired {
    fn name(&self) -> &'static str {
        "purge expired documents"
    }

    async fn run(&self, run: &mut Run<'_>) {
        match run.geyser.store.purge_expired(now()).await {
            Ok(n) => run.tally.report.purged += n,
            Err(e) => run.tally.error(format!("forgetting expired documents: {e}")),
        }
    }
}
