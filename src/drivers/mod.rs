//! The driver registry: one entry per backend, mapping URL schemes to the code that opens
//! the backend's queue, its store, and (where queue and store can live in one database) a
//! one-transaction enqueue. `config.rs` looks a URL's scheme up here and calls the driver;
//! nothing else in the engine names a backend. Adding a backend means one module in this
//! folder, one line in `drivers()`, and running the queue and store contract suites.

#[cfg(feature = "beanstalkd")]
mod beanstalkd;
#[cfg(feature = "couchbase")]
mod couchbase;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
pub(crate) mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::enqueue::Enqueuer;
use crate::queue::Queue;
use crate::store::Store;

/// The roles a backend can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Queue,
    Store,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Queue => "queue",
            Role::Store => "store",
        }
    }
}

/// What one backend can open. A driver implements `open_queue` / `open_store` for the
/// roles it lists in `roles`; the others are never called.
#[async_trait]
pub trait Driver: Sync {
    /// The URL schemes it answers to.
    fn schemes(&self) -> &'static [&'static str];

    /// The roles it can play.
    fn roles(&self) -> &'static [Role];

    async fn open_queue(&self, url: &str) -> Result<Arc<dyn Queue>, ConfigError> {
        Err(no_such_role(url, Role::Queue))
    }

    async fn open_store(&self, url: &str) -> Result<Arc<dyn Store>, ConfigError> {
        Err(no_such_role(url, Role::Store))
    }

    /// An enqueue that commits the document and its queue entry in one transaction, when
    /// `queue_url` and `store_url` (both of this driver) name the same database.
    async fn one_transaction_enqueue(
        &self,
        _queue_url: &str,
        _store_url: &str,
    ) -> Result<Option<Arc<dyn Enqueuer>>, ConfigError> {
        Ok(None)
    }
}

/// Every backend this build has.
fn drivers() -> Vec<&'static dyn Driver> {
    let mut all: Vec<&'static dyn Driver> = vec![&sqlite::Sqlite];
    #[cfg(feature = "beanstalkd")]
    all.push(&beanstalkd::Beanstalkd);
    #[cfg(feature = "postgres")]
    all.push(&postgres::Postgres);
    #[cfg(feature = "redis")]
    all.push(&redis::Redis);
    #[cfg(feature = "couchbase")]
    all.push(&couchbase::Couchbase);
    all
}

/// The driver that plays `role` for `url`'s scheme, or an error naming the schemes that do.
pub fn driver_for(url: &str, role: Role) -> Result<&'static dyn Driver, ConfigError> {
    let bad = |reason: String| ConfigError::BadUrl { role: role.as_str(), url: redact(url), reason };
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(bad(format!("expected scheme://..., with a scheme among {}", schemes(role).join(", "))));
    };
    let all = drivers();
    let choices = format!("a {} URL is one of {}", role.as_str(), schemes(role).join(", "));
    match all.iter().find(|d| d.schemes().contains(&scheme)) {
        Some(d) if d.roles().contains(&role) => Ok(*d),
        Some(_) => Err(bad(format!("{scheme}:// keeps no {} ({choices})", role.as_str()))),
        None => Err(bad(format!("unknown scheme {scheme:?} ({choices})"))),
    }
}

/// The schemes of the drivers that play `role` in this build.
fn schemes(role: Role) -> Vec<String> {
    drivers()
        .into_iter()
        .filter(|d| d.roles().contains(&role))
        .flat_map(|d| d.schemes())
        .map(|s| format!("{s}://"))
        .collect()
}

fn no_such_role(url: &str, role: Role) -> ConfigError {
    ConfigError::BadUrl {
        role: role.as_str(),
        url: redact(url),
        reason: format!("this backend has no {}", role.as_str()),
    }
}

/// `url` with any password replaced by `***`, for errors and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(redact("postgresql://app:s3cret@db:5432/test"), "postgresql://app:***@db:5432/test");
        assert_eq!(redact("redis://:s3cret@cache/0"), "redis://:***@cache/0");
        assert_eq!(redact("beanstalkd://127.0.0.1:11300"), "beanstalkd://127.0.0.1:11300");
        let err = driver_for("nosuch://app:s3cret@host/x", Role::Store).err().unwrap().to_string();
        assert!(!err.contains("s3cret") && err.contains("unknown scheme"), "{err}");
    }

    #[test]
    fn a_scheme_that_cannot_play_the_role_is_named() {
        let err = driver_for("sqlite:///tmp/x.db", Role::Queue).map(|_| ()).err();
        assert!(err.is_none(), "{err:?}");
        #[cfg(feature = "beanstalkd")]
        {
            let err = driver_for("beanstalkd://127.0.0.1:11300", Role::Store).err().unwrap().to_string();
            assert!(err.contains("beanstalkd:// keeps no store") && err.contains("sqlite://"), "{err}");
        }
    }
}
