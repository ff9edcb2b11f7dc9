//! Backends chosen by URL (GEYSER_QUEUE_URL / GEYSER_STORE_URL or explicit strings): looks
//! each URL's scheme up in the driver registry (`drivers/`) and opens what it names.
//! Knows no backend by name, nor anything of jobs or workers.

use std::path::PathBuf;

use crate::client::Geyser;
use crate::drivers::{self, Role};
use crate::queue::Queue;
use crate::store::Store;
use std::sync::Arc;

/// A URL that names no backend of this build, one that cannot be opened, or a server that
/// did not answer. URLs in these messages have their password replaced by `***`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("bad {role} URL {url:?}: {reason}")]
    BadUrl { role: &'static str, url: String, reason: String },
    /// Opening failed for a reason that trying again will not mend (a file that cannot be
    /// created, a schema newer than this build).
    #[error("cannot open {role} at {url:?}: {reason}")]
    Open { role: &'static str, url: String, reason: String },
    /// The server did not answer (refused, timed out, closed): it may answer later, so a
    /// worker tries again instead of stopping as misconfigured.
    #[error("{role} at {url:?} unreachable: {reason}")]
    Unreachable { role: &'static str, url: String, reason: String },
}

/// The queue and the store when nothing is configured: the embedded file.
pub const DEFAULT_URL: &str = "sqlite://";

/// The embedded default file: `$XDG_DATA_HOME/geyser/geyser.db`, else
/// `~/.local/share/geyser/geyser.db`, shared by every process of the user.
pub fn default_sqlite_path() -> PathBuf {
    drivers::sqlite::default_path()
}

/// Open the queue a URL names; `None` is the embedded default.
pub async fn open_queue(url: Option<&str>) -> Result<Arc<dyn Queue>, ConfigError> {
    let url = url.unwrap_or(DEFAULT_URL);
    drivers::driver_for(url, Role::Queue)?.open_queue(url).await
}

/// Open the store a URL names; `None` is the embedded default.
pub async fn open_store(url: Option<&str>) -> Result<Arc<dyn Store>, ConfigError> {
    let url = url.unwrap_or(DEFAULT_URL);
    drivers::driver_for(url, Role::Store)?.open_store(url).await
}

/// Open the queue and the store the URLs name (None: the embedded default), with the way to
/// enqueue into them: one transaction when both live in one database (the driver says),
/// else the outbox (the document is committed, this process's relay puts the entry).
pub async fn open(queue_url: Option<&str>, store_url: Option<&str>) -> Result<Geyser, ConfigError> {
    let (queue_url, store_url) = (queue_url.unwrap_or(DEFAULT_URL), store_url.unwrap_or(DEFAULT_URL));
    let queue_driver = drivers::driver_for(queue_url, Role::Queue)?;
    let store_driver = drivers::driver_for(store_url, Role::Store)?;
    let queue = queue_driver.open_queue(queue_url).await?;
    let store = store_driver.open_store(store_url).await?;
    // The same driver (drivers are zero-sized, so their addresses cannot tell them apart).
    if queue_driver.schemes() == store_driver.schemes() {
        if let Some(enqueuer) = queue_driver.one_transaction_enqueue(queue_url, store_url).await? {
            return Ok(Geyser::new(queue, store, enqueuer));
        }
    }
    Ok(Geyser::with_outbox(queue, store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_are_named_in_the_error() {
        let err = open_queue(Some("redis://x")).await.err().unwrap().to_string();
        assert!(err.contains("redis://x") && err.contains("redis:// keeps no queue"), "{err}");
        let err = open_store(Some("nonsense")).await.err().unwrap().to_string();
        assert!(err.contains("nonsense") && err.contains("scheme://"), "{err}");
        let err = open_store(Some("couch://x")).await.err().unwrap().to_string();
        assert!(err.contains("unknown scheme") && err.contains("sqlite://"), "{err}");
    }

    /// Drivers are zero-sized values, whose addresses may coincide: an embedded queue with a
    /// Redis store (the server at 127.0.0.1:6379) must not be taken for one database.
    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn a_queue_and_a_store_of_different_backends_open_as_two() {
        let dir = tempfile::tempdir().unwrap();
        let queue = format!("sqlite://{}", dir.path().join("queue.db").display());
        let opened = open(Some(&queue), Some("redis://127.0.0.1:6379/0?prefix=geyser-test:config:")).await;
        assert!(opened.is_ok(), "{:?}", opened.err());
    }
}
