//! Job documents in a SQLite file (WAL), shared by every process of one machine.
// TEMPORARY stub until the sqlite branch lands.
use super::*;
use async_trait::async_trait;
pub struct SqliteStore;
impl SqliteStore { pub fn open(_p: &std::path::Path) -> StoreResult<Self> { Err(StoreError::Unavailable("stub".into())) } }
#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, _d: &JobDocument) -> StoreResult<JobDocument> { todo!() }
    async fn get(&self, _u: &str) -> StoreResult<Option<JobDocument>> { todo!() }
    async fn update(&self, _d: &JobDocument) -> StoreResult<JobDocument> { todo!() }
    async fn delete(&self, _u: &str) -> StoreResult<bool> { todo!() }
    async fn list(&self, _f: &ListFilter, _p: &Page) -> StoreResult<Vec<JobDocument>> { todo!() }
    async fn purge_expired(&self, _n: f64) -> StoreResult<u64> { todo!() }
}
