//! The `beanstalkd://host:port[,host:port...]` driver: a queue only (several servers are shards).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Driver, Role};
use crate::config::ConfigError;
use crate::queue::beanstalkd::BeanstalkdQueue;
use crate::queue::Queue;

pub struct Beanstalkd;

#[async_trait]
impl Driver for Beanstalkd {
    fn schemes(&self) -> &'static [&'static str] {
        &["beanstalkd"]
    }

    fn roles(&self) -> &'static [Role] {
        &[Role::Queue]
    }

    async fn open_queue(&self, url: &str) -> Result<Arc<dyn Queue>, ConfigError> {
        let queue = BeanstalkdQueue::from_url(url).await;
        Ok(Arc::new(queue.map_err(|e| ConfigError::Open { role: "queue", url: url.into(), reason: e.to_string() })?))
    }
}
