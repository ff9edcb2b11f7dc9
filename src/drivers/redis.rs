//! The `redis://` (and `rediss://`, TLS) driver: a store (see docs/stores.md).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Driver, Role};
use crate::config::ConfigError;
use crate::store::redis::{open, OpenError};
use crate::store::Store;

pub struct Redis;

#[async_trait]
impl Driver for Redis {
    fn schemes(&self) -> &'static [&'static str] {
        &["redis", "rediss"]
    }

    fn roles(&self) -> &'static [Role] {
        &[Role::Store]
    }

    async fn open_store(&self, url: &str) -> Result<Arc<dyn Store>, ConfigError> {
        match open(url).await {
            Ok(store) => Ok(Arc::new(store)),
            Err(OpenError::BadUrl { url, reason }) => Err(ConfigError::BadUrl { role: "store", url, reason }),
            Err(OpenError::Unreachable { url, reason }) => Err(ConfigError::Unreachable { role: "store", url, reason }),
        }
    }
}
