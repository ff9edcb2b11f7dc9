//! beanstalkd as the production queue: our own async client, and sharding over several servers.
// TEMPORARY stub until the beanstalkd branch lands.
pub struct BeanstalkdQueue;
impl BeanstalkdQueue { pub async fn from_url(_u: &str) -> super::QueueResult<super::sqlite::SqliteQueue> { Err(super::QueueError::Protocol("stub".into())) } }
