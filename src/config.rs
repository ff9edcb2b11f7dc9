//! Backends chosen by URL (GEYSER_QUEUE_URL / GEYSER_STORE_URL or explicit strings).
//! Opens queues and stores; knows nothing of jobs or workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::client::Geyser;
use crate::enqueue::SqliteOneCommit;
use crate::queue::{self, Queue};
use crate::store::{self, Store};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("bad {role} URL {url:?}: {reason}")]
    BadUrl { role: &'static str, url: String, reason: String },
    #[error("cannot open {role} at {url:?}: {reason}")]
    Open { role: &'static str, url: String, reason: String },
}

/// The embedded default: one SQLite file per user, shared by every process of the machine.
/// `$XDG_DATA_HOME/geyser/geyser.db`, else `~/.local/share/geyser/geyser.db`.
pub fn default_sqlite_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("geyser").join("geyser.db")
}

/// What `sqlite://...` names: `sqlite://` alone is the default file, `sqlite:///abs/path` or
/// `sqlite://relative/path` a file of the user's choice.
fn sqlite_path(role: &'static str, url: &str, rest: &str) -> Result<PathBuf, ConfigError> {
    if rest.contains('?') {
        return Err(ConfigError::BadUrl { role, url: url.into(), reason: "query parameters are not supported".into() });
    }
    Ok(if rest.is_empty() { default_sqlite_path() } else { PathBuf::from(rest) })
}

fn split_scheme<'a>(role: &'static str, url: &'a str) -> Result<(&'a str, &'a str), ConfigError> {
    url.split_once("://").ok_or_else(|| ConfigError::BadUrl {
        role,
        url: url.into(),
        reason: "expected scheme://..., e.g. sqlite:///path/to/geyser.db or beanstalkd://127.0.0.1:11300".into(),
    })
}

/// Open a SQLite-backed queue or store off the async threads (opening may wait for the file lock).
async fn open_sqlite<T, E>(
    role: &'static str,
    url: &str,
    path: PathBuf,
    open: fn(&Path) -> Result<T, E>,
) -> Result<T, ConfigError>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let open_err = |reason: String| ConfigError::Open { role, url: url.into(), reason };
    tokio::task::spawn_blocking(move || open(&path))
        .await
        .map_err(|e| open_err(e.to_string()))?
        .map_err(|e| open_err(e.to_string()))
}

/// Open the queue a URL names; `None` is the embedded default.
pub async fn open_queue(url: Option<&str>) -> Result<Arc<dyn Queue>, ConfigError> {
    const ROLE: &str = "queue";
    let url = url.unwrap_or("sqlite://");
    match split_scheme(ROLE, url)? {
        ("sqlite", rest) => {
            let path = sqlite_path(ROLE, url, rest)?;
            Ok(Arc::new(open_sqlite(ROLE, url, path, queue::sqlite::SqliteQueue::open).await?))
        }
        #[cfg(feature = "beanstalkd")]
        ("beanstalkd", _) => {
            let q = queue::beanstalkd::BeanstalkdQueue::from_url(url).await;
            Ok(Arc::new(q.map_err(|e| ConfigError::Open { role: ROLE, url: url.into(), reason: e.to_string() })?))
        }
        (other, _) => Err(ConfigError::BadUrl {
            role: ROLE,
            url: url.into(),
            reason: format!("unknown scheme {other:?} (expected sqlite or beanstalkd)"),
        }),
    }
}

/// Open the store a URL names; `None` is the embedded default.
pub async fn open_store(url: Option<&str>) -> Result<Arc<dyn Store>, ConfigError> {
    const ROLE: &str = "store";
    let url = url.unwrap_or("sqlite://");
    match split_scheme(ROLE, url)? {
        ("sqlite", rest) => {
            let path = sqlite_path(ROLE, url, rest)?;
            Ok(Arc::new(open_sqlite(ROLE, url, path, store::sqlite::SqliteStore::open).await?))
        }
        #[cfg(feature = "redis")]
        ("redis" | "rediss", _) => match store::redis::open(url).await {
            Ok(store) => Ok(Arc::new(store)),
            Err(store::redis::OpenError::BadUrl { url, reason }) => Err(ConfigError::BadUrl { role: ROLE, url, reason }),
            Err(store::redis::OpenError::Unreachable { url, reason }) => Err(ConfigError::Open { role: ROLE, url, reason }),
        },
        #[cfg(feature = "postgres")]
        ("postgresql" | "postgres", _) => match store::postgres::PostgresStore::open(url).await {
            Ok(store) => Ok(Arc::new(store)),
            Err(store::postgres::OpenError::BadUrl { url, reason }) => Err(ConfigError::BadUrl { role: ROLE, url, reason }),
            Err(store::postgres::OpenError::Unavailable { url, reason }) => Err(ConfigError::Open { role: ROLE, url, reason }),
        },
        (other, _) => Err(ConfigError::BadUrl {
            role: ROLE,
            url: url.into(),
            reason: format!("unknown scheme {other:?} (expected sqlite)"),
        }),
    }
}

/// The file a `sqlite://` URL names, or None for any other scheme.
fn embedded_path(role: &'static str, url: Option<&str>) -> Result<Option<PathBuf>, ConfigError> {
    let url = url.unwrap_or("sqlite://");
    match split_scheme(role, url)? {
        ("sqlite", rest) => Ok(Some(sqlite_path(role, url, rest)?)),
        _ => Ok(None),
    }
}

/// Open the queue and the store the URLs name (None: the embedded default), with the
/// way to enqueue into them: one SQLite transaction when both are the same embedded file.
pub async fn open(queue_url: Option<&str>, store_url: Option<&str>) -> Result<Geyser, ConfigError> {
    let queue = open_queue(queue_url).await?;
    let store = open_store(store_url).await?;
    let (Some(queue_file), Some(store_file)) = (embedded_path("queue", queue_url)?, embedded_path("store", store_url)?)
    else {
        return Ok(Geyser::two_step(queue, store));
    };
    let url = queue_url.unwrap_or("sqlite://").to_owned();
    let shared = tokio::task::spawn_blocking(move || -> Result<Option<SqliteOneCommit>, String> {
        let same = std::fs::canonicalize(&queue_file).map_err(|e| e.to_string())?
            == std::fs::canonicalize(&store_file).map_err(|e| e.to_string())?;
        same.then(|| SqliteOneCommit::open(&queue_file)).transpose().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|reason| ConfigError::Open { role: "queue", url, reason })?;
    Ok(match shared {
        Some(enqueuer) => Geyser::new(queue, store, Arc::new(enqueuer)),
        None => Geyser::two_step(queue, store),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_follows_xdg() {
        // Read-only check of the rule; the env is whatever the test runner has.
        let p = default_sqlite_path();
        assert!(p.ends_with("geyser/geyser.db"), "{}", p.display());
    }

    #[test]
    fn sqlite_urls() {
        assert_eq!(sqlite_path("queue", "sqlite:///tmp/x.db", "/tmp/x.db").unwrap(), PathBuf::from("/tmp/x.db"));
        assert_eq!(sqlite_path("queue", "sqlite://", "").unwrap(), default_sqlite_path());
        assert!(sqlite_path("queue", "sqlite:///x?y=1", "/x?y=1").is_err());
    }

    #[tokio::test]
    async fn bad_urls_are_named_in_the_error() {
        let err = open_queue(Some("redis://x")).await.err().unwrap().to_string();
        assert!(err.contains("redis://x") && err.contains("unknown scheme"), "{err}");
        let err = open_store(Some("nonsense")).await.err().unwrap().to_string();
        assert!(err.contains("nonsense") && err.contains("scheme://"), "{err}");
    }
}
