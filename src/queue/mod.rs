//! The queue contract: beanstalkd's semantics (tubes, priority, delay, TTR,
//! reserve, touch, release, bury, kick, delete, stats) behind one trait, with an
//! embedded SQLite implementation and a beanstalkd one. Holds no job documents.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;

#[cfg(feature = "beanstalkd")]
pub mod beanstalkd;
pub mod sqlite;

/// Where a queued job lives: the shard (server index, 0 when there is one) and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueJobId {
    pub shard: u16,
    pub id: u64,
}

impl QueueJobId {
    pub fn new(shard: u16, id: u64) -> Self {
        Self { shard, id }
    }

    /// The entry a job document's `queueJobId` notes (`shard:id`); None when it notes none,
    /// or nothing this queue could have written (such a note is treated as absent).
    pub fn noted(queue_job_id: Option<&str>) -> Option<Self> {
        queue_job_id?.parse().ok()
    }
}

/// Written as `shard:id`, the form kept in the document's `queueJobId`.
impl fmt::Display for QueueJobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.shard, self.id)
    }
}

impl FromStr for QueueJobId {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || QueueError::BadJobId(s.to_owned());
        let (shard, id) = s.split_once(':').ok_or_else(bad)?;
        Ok(Self { shard: shard.parse().map_err(|_| bad())?, id: id.parse().map_err(|_| bad())? })
    }
}

/// How a job is put on (or released back to) a queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PutOptions {
    /// Lower runs first (beanstalkd: 0 is most urgent).
    pub priority: u32,
    /// Not reservable before this much time has passed.
    pub delay: Duration,
    /// A reservation lasts this long unless touched.
    pub ttr: Duration,
}

impl Default for PutOptions {
    fn default() -> Self {
        Self { priority: 1024, delay: Duration::ZERO, ttr: Duration::from_secs(60) }
    }
}

/// A job handed to one consumer, until it deletes, releases or buries it, or the TTR runs out.
#[derive(Debug, Clone, PartialEq)]
pub struct Reserved {
    pub id: QueueJobId,
    pub tube: String,
    pub body: Vec<u8>,
}

/// The state of one job on the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Ready,
    Delayed,
    Reserved,
    Buried,
}

/// Counts for one tube, as beanstalkd's `stats-tube` gives them, and what else an operator
/// asks of a tube: whether it is paused, how long its next job has waited, who watches it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TubeStats {
    pub name: String,
    pub ready: u64,
    pub delayed: u64,
    pub reserved: u64,
    pub buried: u64,
    pub total_jobs: u64,
    /// No consumer reserves from the tube (`Queue::pause`).
    pub paused: bool,
    /// Time since the put of a ready job, None when none is ready: on the embedded queue the
    /// oldest ready job; on beanstalkd the one reserved next (smallest priority, then oldest),
    /// as the server finds no other (docs/beanstalkd-protocol.md §Pause).
    pub oldest_ready_age: Option<Duration>,
    /// Consumers watching the tube (beanstalkd: connections, the most on any one server);
    /// None where the backend cannot tell (the embedded queue keeps no list of consumers).
    pub watching: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue job {0} not found (deleted, or reserved by someone else)")]
    NotFound(QueueJobId),
    #[error("job body of {size} bytes is over the queue's limit of {limit} bytes")]
    JobTooBig { size: usize, limit: usize },
    #[error("bad queue job id {0:?} (expected shard:id)")]
    BadJobId(String),
    #[error("bad tube name {0:?}: 1 to 200 characters of letters, digits and -+/;.$_()")]
    BadTube(String),
    /// beanstalkd has no such tube: none holds a job of it and no connection watches or uses it.
    #[error("queue {0:?} not found: the queue server knows a queue only while it holds jobs or a worker watches it")]
    UnknownTube(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The backend failed the operation; `context` names the backend, where, and the operation.
    #[error("{context}: {source}")]
    Backend {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with an error reply, or something that is not the protocol.
    #[error("{context}: server replied {reply}")]
    Server { context: String, reply: String },
    #[error("{0}")]
    Protocol(String),
    #[error("queue server {addr} unavailable: {reason}")]
    Unavailable { addr: String, reason: String },
}

pub type QueueResult<T> = Result<T, QueueError>;

/// Checks a tube name against beanstalkd's rules, so both backends accept the same names.
pub fn check_tube(name: &str) -> QueueResult<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-+/;.$_()".contains(c);
    if name.is_empty() || name.len() > 200 || name.starts_with('-') || !name.chars().all(ok_char) {
        return Err(QueueError::BadTube(name.to_owned()));
    }
    Ok(())
}

/// A connection that reserves jobs and works on the ones it holds.
/// beanstalkd ties a reservation to the connection that made it, so touch,
/// release, bury and delete of a reserved job go through the same consumer.
#[async_trait]
pub trait Consumer: Send {
    /// The next ready job from the watched tubes, by priority then age;
    /// waits up to `timeout` and returns None if none came.
    async fn reserve(&mut self, timeout: Duration) -> QueueResult<Option<Reserved>>;
    /// Restart the reservation's TTR.
    async fn touch(&mut self, id: QueueJobId) -> QueueResult<()>;
    /// Give the job back, ready again after `delay`, with a new priority.
    async fn release(&mut self, id: QueueJobId, priority: u32, delay: Duration) -> QueueResult<()>;
    /// Set the job aside (dead letter) until kicked.
    async fn bury(&mut self, id: QueueJobId, priority: u32) -> QueueResult<()>;
    /// Remove the job for good.
    async fn delete(&mut self, id: QueueJobId) -> QueueResult<()>;
    /// `delete`, then `reserve`: a worker's step from one job to the next, in one round
    /// trip where the backend can (beanstalkd pipelines the two commands). The delete's
    /// outcome comes back beside the reservation's.
    async fn delete_then_reserve(
        &mut self,
        id: QueueJobId,
        timeout: Duration,
    ) -> (QueueResult<()>, QueueResult<Option<Reserved>>) {
        let deleted = self.delete(id).await;
        (deleted, self.reserve(timeout).await)
    }
}

/// A queue backend: puts, administration, and consumers.
#[async_trait]
pub trait Queue: Send + Sync {
    async fn put(&self, tube: &str, body: &[u8], opts: PutOptions) -> QueueResult<QueueJobId>;
    /// `put` for each job of one tube, one result per job in order (a failure fails that job
    /// only). beanstalkd pipelines them (docs/beanstalkd-protocol.md §Bulk put); this default
    /// puts one after the other.
    async fn put_many(&self, tube: &str, jobs: &[(&[u8], PutOptions)]) -> Vec<QueueResult<QueueJobId>> {
        let mut out = Vec::with_capacity(jobs.len());
        for (body, opts) in jobs {
            out.push(self.put(tube, body, *opts).await);
        }
        out
    }
    /// Delete a job that is not reserved by anyone (ready, delayed or buried).
    async fn delete(&self, id: QueueJobId) -> QueueResult<()>;
    /// Move up to `bound` buried jobs of the tube (or, if none are buried, delayed ones) to ready.
    async fn kick(&self, tube: &str, bound: u64) -> QueueResult<u64>;
    /// Move one buried or delayed job to ready.
    async fn kick_job(&self, id: QueueJobId) -> QueueResult<()>;
    /// Where the job stands, or None when the queue has no such job.
    async fn job_state(&self, id: QueueJobId) -> QueueResult<Option<JobState>>;
    /// The body of the job with this id, whatever its state, or None when there is none.
    /// Ids can be reused (beanstalkd restarted without a binlog starts again from 1), so
    /// whoever acts on a remembered id checks the body first.
    async fn peek(&self, id: QueueJobId) -> QueueResult<Option<Vec<u8>>>;
    async fn stats_tube(&self, tube: &str) -> QueueResult<TubeStats>;
    /// Stop every consumer (of every process) from reserving the tube's jobs until `resume`;
    /// its jobs wait, puts go on, and jobs reserved already are not affected. `UnknownTube`
    /// where the backend has no such tube (beanstalkd: docs/beanstalkd-protocol.md §Pause).
    async fn pause(&self, tube: &str) -> QueueResult<()>;
    /// Undo `pause`: the tube's ready jobs go to waiting consumers at once. A tube that is
    /// not paused is left as it is.
    async fn resume(&self, tube: &str) -> QueueResult<()>;
    async fn list_tubes(&self) -> QueueResult<Vec<String>>;
    /// A new consumer watching `tubes` (its own connection where the backend has them).
    async fn consumer(&self, tubes: &[String]) -> QueueResult<Box<dyn Consumer>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_round_trips() {
        let id = QueueJobId::new(2, 77);
        assert_eq!(id.to_string(), "2:77");
        assert_eq!("2:77".parse::<QueueJobId>().unwrap(), id);
        assert!("77".parse::<QueueJobId>().is_err());
    }

    #[test]
    fn a_note_that_is_absent_or_not_an_id_names_no_entry() {
        assert_eq!(QueueJobId::noted(Some("2:77")), Some(QueueJobId::new(2, 77)));
        for note in [None, Some(""), Some("77"), Some("a:b"), Some("2:"), Some(":7"), Some("70000:1"), Some("1:-3")] {
            assert_eq!(QueueJobId::noted(note), None, "{note:?}");
        }
    }

    #[test]
    fn tube_names_follow_beanstalkd() {
        assert!(check_tube("my_job").is_ok());
        assert!(check_tube("a-b.c/d").is_ok());
        assert!(check_tube("").is_err());
        assert!(check_tube("-x").is_err());
        assert!(check_tube("has space").is_err());
        assert!(check_tube(&"x".repeat(201)).is_err());
    }
}
