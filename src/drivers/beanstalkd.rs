//! The `beanstalkd://host:port[,host:port...]` driver: a queue only (several servers are shards).

use std::sync::Arc;

use async_trait::async_trait;

use super::{redact, Driver, Role};
use crate::config::ConfigError;
use crate::queue::beanstalkd::BeanstalkdQueue;
use crate::queue::{Queue, QueueError};

pub struct Beanstalkd;

#[async_trait]
impl Driver for Beanstalkd {
    fn schemes(&self) -> &'static [&'static str] {
        &["beanstalkd"]
    }

    fn roles(&self) -> &'static [Role] {
        &[Role::Queue]
    }

    /// beanstalkd has no users or passwords: a URL with `user:password@` is refused before
    /// anything quotes it (the queue's own errors quote the servers' addresses as written).
    async fn open_queue(&self, url: &str) -> Result<Arc<dyn Queue>, ConfigError> {
        let servers = url.split(['/', '?']).nth(2).unwrap_or_default();
        if servers.contains('@') {
            let reason = "beanstalkd has no users or passwords: remove `user:password@` from the URL".to_owned();
            return Err(ConfigError::BadUrl { role: "queue", url: redact(url), reason });
        }
        let queue = BeanstalkdQueue::from_url(url).await.map_err(|e| {
            let (url, reason) = (redact(url), e.to_string());
            match e {
                QueueError::Unavailable { .. } | QueueError::Io { .. } => {
                    ConfigError::Unreachable { role: "queue", url, reason }
                }
                _ => ConfigError::Open { role: "queue", url, reason },
            }
        })?;
        Ok(Arc::new(queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_url_with_a_password_is_refused_without_quoting_it() {
        for url in
            ["beanstalkd://user:s3cret@127.0.0.1:1", "beanstalkd://127.0.0.1:1,:s3cret@127.0.0.2:1?max-job-size=9"]
        {
            let err = Beanstalkd.open_queue(url).await.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("no users or passwords") && !err.contains("s3cret"), "{url}: {err}");
        }
    }
}
