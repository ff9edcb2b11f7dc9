//! Embedded queue on a SQLite file (WAL): beanstalkd semantics for every process of one machine.
// TEMPORARY stub until the sqlite branch lands.
use super::*;
pub struct SqliteQueue;
impl SqliteQueue { pub fn open(_p: &std::path::Path) -> QueueResult<Self> { Err(QueueError::Protocol("stub".into())) } }
#[async_trait]
impl Queue for SqliteQueue {
    async fn put(&self, _t: &str, _b: &[u8], _o: PutOptions) -> QueueResult<QueueJobId> { todo!() }
    async fn delete(&self, _id: QueueJobId) -> QueueResult<()> { todo!() }
    async fn kick(&self, _t: &str, _b: u64) -> QueueResult<u64> { todo!() }
    async fn kick_job(&self, _id: QueueJobId) -> QueueResult<()> { todo!() }
    async fn job_state(&self, _id: QueueJobId) -> QueueResult<Option<JobState>> { todo!() }
    async fn stats_tube(&self, _t: &str) -> QueueResult<TubeStats> { todo!() }
    async fn list_tubes(&self) -> QueueResult<Vec<String>> { todo!() }
    async fn consumer(&self, _t: &[String]) -> QueueResult<Box<dyn Consumer>> { todo!() }
}
