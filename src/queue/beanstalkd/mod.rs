//! beanstalkd as the production queue: `BeanstalkdQueue` implements the
//! `Queue`/`Consumer` traits over one or more servers (shards), using our own
//! client (`connection`, `protocol`; spec in docs/beanstalkd-protocol.md).
//! Touches only beanstalkd sockets and the `queue` types.
//!
//! Sharding:
//! - `QueueJobId.shard` is the index of the server in the address list, so the
//!   list's order must stay the same for as long as jobs live on it.
//! - Puts: the first server tried is `(fnv1a(tube) + counter) % n`, with one
//!   counter per queue. That is round-robin (even spread whatever the bodies
//!   or tubes), offset per tube so that small tubes do not all start on server
//!   0. Job order is only kept within one server (beanstalkd orders by
//!   priority then age per server), which is all a sharded queue can promise.
//!   When a server cannot be reached (or is draining) the put goes to the next
//!   one. A put whose connection broke after sending may have been stored,
//!   so a fallback can, rarely, put the job twice: at-least-once, like the rest.
//! - Each server has a small pool of producer connections (`POOL_SIZE`) for
//!   puts and administration.
//! - A consumer has one connection per server. `reserve` polls every server
//!   with `reserve-with-timeout 0`, round-robin from where it last found a
//!   job; when all are empty it waits with `reserve-with-timeout 1` on one
//!   server, rotating, and polls again. A caller's timeout shorter than that
//!   second ends the call, not the wait: the wait stays out on its connection
//!   and the next `reserve` goes on reading it (docs/beanstalkd-protocol.md
//!   §Waiting reserve), so an idle worker blocks on the server, never polls.
//!   It never holds more than one new reservation per call. Ops on a
//!   reserved job go to the connection that reserved it.
//! - A dead server takes only its own jobs out of service: puts skip it,
//!   reserves skip it, admin ops (kick, stats, list, pause) report the others.
//!
//! beanstalkd counts delay and TTR in whole seconds: delays round up (a job
//! never becomes ready early), TTR rounds up with a minimum of 1 s.

pub mod connection;
pub mod protocol;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::Instant;

use self::connection::{BrokenPut, ClientError, ConnectOptions, Connection, Job, PutJob};
use self::protocol::ServerError;
use super::{
    check_tube, Consumer, JobState, PutOptions, Queue, QueueError, QueueJobId, QueueResult, Reserved, TubeStats,
};

/// Producer connections per server.
pub const POOL_SIZE: usize = 2;
/// Puts sent in one pipeline at most (docs/beanstalkd-protocol.md §Bulk put): bounds what one
/// exchange holds in memory and how many jobs a broken connection leaves undecided.
pub const PUT_BATCH: usize = 1000;
/// beanstalkd's port when an address has none.
pub const DEFAULT_PORT: u16 = 11300;

/// Whole seconds for a delay, rounded up so a job never starts early.
pub fn delay_secs(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Whole seconds for a TTR: rounded up, at least 1.
pub fn ttr_secs(d: Duration) -> u32 {
    delay_secs(d).max(1)
}

/// FNV-1a: a stable hash, the same in every process.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Maps a client error to the queue's error, naming the job where there is one.
fn queue_error(e: ClientError, id: Option<QueueJobId>) -> QueueError {
    if e.is_not_found() {
        if let Some(id) = id {
            return QueueError::NotFound(id);
        }
    }
    match e {
        ClientError::Io { addr, command, source } => {
            QueueError::Unavailable { addr, reason: format!("{command}: {source}") }
        }
        ClientError::Unavailable { addr, reason } => QueueError::Unavailable { addr, reason },
        ClientError::Timeout { addr, command, after } => {
            QueueError::Unavailable { addr, reason: format!("{command}: no reply within {after:?}") }
        }
        ClientError::Reply { addr, command, error } => {
            QueueError::Server { context: format!("beanstalkd {addr}: {command}"), reply: error.to_string() }
        }
        other => QueueError::Protocol(other.to_string()),
    }
}

/// One server: its producer pool.
struct Shard {
    index: u16,
    addr: String,
    pool: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Shard {
    fn new(index: u16, addr: &str, opts: &ConnectOptions) -> Self {
        Self {
            index,
            addr: addr.to_owned(),
            pool: (0..POOL_SIZE).map(|_| Mutex::new(Connection::new(addr, opts.clone()))).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A free pool connection if there is one, else the next in turn.
    async fn conn(&self) -> tokio::sync::MutexGuard<'_, Connection> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..self.pool.len() {
            if let Ok(guard) = self.pool[(start + k) % self.pool.len()].try_lock() {
                return guard;
            }
        }
        self.pool[start % self.pool.len()].lock().await
    }

    /// Opens a producer connection now, if none is open (within the backoff rules).
    async fn open(&self) -> Result<(), ClientError> {
        self.conn().await.ensure_open().await
    }

    /// Puts the job, refusing at once a body over the bound the connection reads at
    /// connect (the server's `max-job-size`, capped by the configured maximum).
    async fn put(&self, tube: &str, body: &[u8], opts: PutOptions) -> QueueResult<QueueJobId> {
        let mut conn = self.conn().await;
        conn.use_tube(tube).await.map_err(|e| queue_error(e, None))?;
        let limit = conn.max_job_size();
        if body.len() > limit {
            return Err(QueueError::JobTooBig { size: body.len(), limit });
        }
        match conn.put(opts.priority, delay_secs(opts.delay), ttr_secs(opts.ttr), body).await {
            Ok(id) => Ok(QueueJobId::new(self.index, id)),
            Err(e) if e.server_error() == Some(&ServerError::JobTooBig) => {
                Err(QueueError::JobTooBig { size: body.len(), limit })
            }
            Err(e) => Err(queue_error(e, None)),
        }
    }
}

impl Shard {
    /// Puts `jobs` in one pipeline (§Bulk put). Each job gets its result and whether another
    /// server may take it: no reply came (the connection broke; the put may or may not have
    /// been stored), or this server is draining. Bodies over the bound are refused unsent.
    async fn put_pipelined(&self, tube: &str, jobs: &[(&[u8], PutOptions)]) -> Vec<(QueueResult<QueueJobId>, bool)> {
        let mut conn = self.conn().await;
        let unanswered = |why: &dyn std::fmt::Display| {
            let reason = format!("put got no reply (it may or may not have been stored): {why}");
            (Err(QueueError::Unavailable { addr: self.addr.clone(), reason }), true)
        };
        if let Err(e) = conn.use_tube(tube).await {
            let not_sent = |_| {
                (Err(QueueError::Unavailable { addr: self.addr.clone(), reason: format!("put not sent: {e}") }), true)
            };
            return jobs.iter().map(not_sent).collect();
        }
        let limit = conn.max_job_size();
        let fits = |body: &[u8]| body.len() <= limit;
        let sent: Vec<PutJob<'_>> = jobs
            .iter()
            .filter(|(body, _)| fits(body))
            .map(|(body, o)| PutJob { pri: o.priority, delay: delay_secs(o.delay), ttr: ttr_secs(o.ttr), body })
            .collect();
        let (replies, broken) = match conn.put_pipelined(&sent).await {
            Ok(replies) => (replies, None),
            Err(BrokenPut { answered, error }) => (answered, Some(error)),
        };
        let mut replies = replies.into_iter();
        jobs.iter()
            .map(|(body, _)| {
                if !fits(body) {
                    return (Err(QueueError::JobTooBig { size: body.len(), limit }), false);
                }
                match (replies.next(), &broken) {
                    (Some(Ok(id)), _) => (Ok(QueueJobId::new(self.index, id)), false),
                    (Some(Err(e)), _) if e.server_error() == Some(&ServerError::Draining) => {
                        (Err(queue_error(e, None)), true)
                    }
                    (Some(Err(e)), _) => (Err(queue_error(e, None)), false),
                    (None, Some(e)) => unanswered(e),
                    (None, None) => unanswered(&"the server sent fewer replies than puts"),
                }
            })
            .collect()
    }
}

/// A queue over one or more beanstalkd servers.
pub struct BeanstalkdQueue {
    shards: Vec<Shard>,
    counter: AtomicU64,
    opts: ConnectOptions,
}

impl std::fmt::Debug for BeanstalkdQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<&str> = self.shards.iter().map(|s| s.addr.as_str()).collect();
        f.debug_struct("BeanstalkdQueue").field("servers", &addrs).finish()
    }
}

impl BeanstalkdQueue {
    /// Connects to every server (`host:port`); works as long as one answers.
    pub async fn connect(addrs: &[String]) -> QueueResult<Self> {
        Self::connect_with(addrs, ConnectOptions::default()).await
    }

    /// `beanstalkd://h1:p1,h2:p2[?max-job-size=BYTES]` (port 11300 where none is given).
    pub async fn from_url(url: &str) -> QueueResult<Self> {
        let (addrs, opts) = parse_url_with_options(url)?;
        Self::connect_with(&addrs, opts).await
    }

    /// Connects to every server. When none answers, that is the one error (naming each
    /// server); when some do, the queue opens and one warning names those that did not:
    /// their jobs wait until they come back, and every use tries them again.
    pub async fn connect_with(addrs: &[String], opts: ConnectOptions) -> QueueResult<Self> {
        if addrs.is_empty() || addrs.len() > usize::from(u16::MAX) {
            return Err(QueueError::Protocol(format!("beanstalkd needs 1 to 65535 servers, got {}", addrs.len())));
        }
        let shards: Vec<Shard> = addrs.iter().enumerate().map(|(i, a)| Shard::new(i as u16, a, &opts)).collect();
        let mut down = Vec::new();
        for shard in &shards {
            if let Err(e) = shard.open().await {
                down.push((shard.index, e));
            }
        }
        check_servers_up("queue", addrs, down)?;
        Ok(Self { shards, counter: AtomicU64::new(0), opts })
    }

    /// The server addresses, in shard order.
    pub fn addrs(&self) -> Vec<String> {
        self.shards.iter().map(|s| s.addr.clone()).collect()
    }

    fn shard(&self, id: QueueJobId) -> QueueResult<&Shard> {
        self.shards.get(usize::from(id.shard)).ok_or(QueueError::NotFound(id))
    }

    /// `pause-tube` on every server that has the tube (§Pause); `UnknownTube` when none has.
    async fn pause_tube(&self, tube: &str, delay: u32) -> QueueResult<()> {
        check_tube(tube)?;
        let owned = tube.to_owned();
        let found = self
            .on_all("pause-tube", |conn| {
                let tube = owned.clone();
                Box::pin(async move {
                    match conn.pause_tube(&tube, delay).await {
                        Ok(()) => Ok(true),
                        Err(e) if e.is_not_found() => Ok(false),
                        Err(e) => Err(e),
                    }
                })
            })
            .await?;
        if found.contains(&true) {
            Ok(())
        } else {
            Err(QueueError::UnknownTube(tube.to_owned()))
        }
    }

    /// Runs `op` on one producer connection of every server; failed servers are
    /// logged and skipped unless all fail.
    async fn on_all<T, F>(&self, what: &str, mut op: F) -> QueueResult<Vec<T>>
    where
        F: for<'c> FnMut(
            &'c mut Connection,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, ClientError>> + Send + 'c>>,
    {
        let mut results = Vec::new();
        let mut last_error = None;
        for shard in &self.shards {
            let mut conn = shard.conn().await;
            match op(&mut conn).await {
                Ok(v) => results.push(v),
                Err(e) if e.is_connection() => {
                    log::warn!("beanstalkd shard {} skipped for {what}: {e}", shard.index);
                    last_error = Some(e);
                }
                Err(e) => return Err(queue_error(e, None)),
            }
        }
        match last_error {
            Some(e) if results.is_empty() => Err(queue_error(e, None)),
            _ => Ok(results),
        }
    }
}

/// Whether opening may go on with the servers that answered: an error when none did
/// (one error naming every server), else one warning naming those down (or nothing).
fn check_servers_up(what: &str, addrs: &[String], down: Vec<(u16, ClientError)>) -> QueueResult<()> {
    let servers = addrs.len();
    let list = down.iter().map(|(i, e)| format!("shard {i}: {e}")).collect::<Vec<_>>().join("; ");
    if down.len() < servers {
        if !down.is_empty() {
            log::warn!(
                "beanstalkd {what}: opened with {} of {servers} servers down; their jobs wait until they \
                 come back, and they are tried again on use ({})",
                down.len(),
                list
            );
        }
        return Ok(());
    }
    if servers == 1 {
        if let Some((_, e)) = down.into_iter().next() {
            return Err(queue_error(e, None));
        }
    }
    Err(QueueError::Unavailable { addr: addrs.join(","), reason: format!("no beanstalkd server answered ({list})") })
}

/// The server list of a `beanstalkd://` URL (which must have no options).
pub fn parse_url(url: &str) -> QueueResult<Vec<String>> {
    let (addrs, opts) = parse_url_with_options(url)?;
    if opts.max_job_size.is_some() {
        return Err(QueueError::Protocol(format!("bad beanstalkd URL {url:?}: options are not expected here")));
    }
    Ok(addrs)
}

/// The server list and connection options of `beanstalkd://h1:p1,h2:p2[?max-job-size=BYTES]`.
/// `max-job-size` caps the reply body bound (docs/beanstalkd-protocol.md §Reply size).
pub fn parse_url_with_options(url: &str) -> QueueResult<(Vec<String>, ConnectOptions)> {
    let bad = |why: &str| QueueError::Protocol(format!("bad beanstalkd URL {url:?}: {why}"));
    let rest = url
        .strip_prefix("beanstalkd://")
        .ok_or_else(|| bad("expected beanstalkd://host:port[,host:port...][?max-job-size=BYTES]"))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut opts = ConnectOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("max-job-size", v)) => match v.parse::<usize>() {
                Ok(n) if n > 0 => opts.max_job_size = Some(n),
                _ => return Err(bad("max-job-size must be a whole number of bytes above 0")),
            },
            _ => return Err(bad(&format!("unknown option {pair:?} (known: max-job-size=BYTES)"))),
        }
    }
    let rest = rest.trim_end_matches('/');
    let mut addrs = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad("empty server"));
        }
        let addr = match part.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => part.to_owned(),
            Some(_) => return Err(bad("bad port")),
            None => format!("{part}:{DEFAULT_PORT}"),
        };
        addrs.push(addr);
    }
    Ok((addrs, opts))
}

fn parse_count(map: &std::collections::HashMap<String, String>, key: &str) -> u64 {
    map.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The longest pause `pause-tube` takes: a paused queue stays paused until resumed (§Pause).
pub const PAUSE_FOREVER_SECS: u32 = u32::MAX;

/// The `age` of the job the tube's next reserve on this server would take (§Pause), None
/// when it has no ready job (or that job went between `peek-ready` and `stats-job`).
async fn next_ready_age(conn: &mut Connection, tube: &str) -> Result<Option<u64>, ClientError> {
    conn.use_tube(tube).await?;
    let Some(job) = conn.peek_ready().await? else { return Ok(None) };
    match conn.stats_job(job.id).await {
        Ok(stats) => Ok(stats.get("age").and_then(|v| v.parse().ok())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Queue for BeanstalkdQueue {
    async fn put(&self, tube: &str, body: &[u8], opts: PutOptions) -> QueueResult<QueueJobId> {
        check_tube(tube)?;
        let n = self.shards.len();
        let turn = fnv1a(tube).wrapping_add(self.counter.fetch_add(1, Ordering::Relaxed));
        let start = (turn % n as u64) as usize;
        let mut last_error = None;
        for k in 0..n {
            let shard = &self.shards[(start + k) % n];
            match shard.put(tube, body, opts).await {
                Ok(id) => return Ok(id),
                Err(e @ QueueError::Unavailable { .. }) | Err(e @ QueueError::Protocol(_)) => {
                    log::warn!("beanstalkd put on shard {} failed, trying the next: {e}", shard.index);
                    last_error = Some(e);
                }
                Err(QueueError::Server { context, reply }) if reply == "DRAINING" => {
                    log::warn!("{context}: draining, trying the next server");
                    last_error = Some(QueueError::Server { context, reply });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| QueueError::Protocol("no beanstalkd server".into())))
    }

    /// Batches of `PUT_BATCH` pipelined puts, each batch on the server a single put would
    /// pick; the jobs of a batch that server left without a reply (or refused as draining)
    /// go to the next server, as a single put's fallback does (§Bulk put).
    async fn put_many(&self, tube: &str, jobs: &[(&[u8], PutOptions)]) -> Vec<QueueResult<QueueJobId>> {
        if check_tube(tube).is_err() {
            return jobs.iter().map(|_| Err(QueueError::BadTube(tube.to_owned()))).collect();
        }
        let n = self.shards.len();
        let mut out = Vec::with_capacity(jobs.len());
        for batch in jobs.chunks(PUT_BATCH) {
            let turn = fnv1a(tube).wrapping_add(self.counter.fetch_add(1, Ordering::Relaxed));
            let start = (turn % n as u64) as usize;
            let mut results: Vec<(QueueResult<QueueJobId>, bool)> = Vec::new();
            let mut pending: Vec<usize> = (0..batch.len()).collect();
            for k in 0..n {
                if pending.is_empty() {
                    break;
                }
                let shard = &self.shards[(start + k) % n];
                let sent: Vec<(&[u8], PutOptions)> = pending.iter().map(|&i| batch[i]).collect();
                let got = shard.put_pipelined(tube, &sent).await;
                if results.is_empty() {
                    results = got;
                } else {
                    for (&i, result) in pending.iter().zip(got) {
                        results[i] = result;
                    }
                }
                pending.retain(|&i| results[i].1);
                if !pending.is_empty() && k + 1 < n {
                    log::warn!(
                        "beanstalkd: {} puts on shard {} failed, trying the next server",
                        pending.len(),
                        shard.index
                    );
                }
            }
            out.extend(results.into_iter().map(|(result, _)| result));
        }
        out
    }

    async fn delete(&self, id: QueueJobId) -> QueueResult<()> {
        let shard = self.shard(id)?;
        let result = shard.conn().await.delete(id.id).await;
        result.map_err(|e| queue_error(e, Some(id)))
    }

    async fn kick(&self, tube: &str, bound: u64) -> QueueResult<u64> {
        check_tube(tube)?;
        let mut kicked = 0;
        let mut last_error = None;
        let mut answered = 0;
        for shard in &self.shards {
            if kicked >= bound {
                break;
            }
            let mut conn = shard.conn().await;
            let result = match conn.use_tube(tube).await {
                Ok(()) => conn.kick(bound - kicked).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(n) => {
                    kicked += n;
                    answered += 1;
                }
                Err(e) if e.is_connection() => {
                    log::warn!("beanstalkd shard {} skipped for kick: {e}", shard.index);
                    last_error = Some(e);
                }
                Err(e) => return Err(queue_error(e, None)),
            }
        }
        match last_error {
            Some(e) if answered == 0 && kicked < bound => Err(queue_error(e, None)),
            _ => Ok(kicked),
        }
    }

    async fn kick_job(&self, id: QueueJobId) -> QueueResult<()> {
        let shard = self.shard(id)?;
        let result = shard.conn().await.kick_job(id.id).await;
        result.map_err(|e| queue_error(e, Some(id)))
    }

    async fn job_state(&self, id: QueueJobId) -> QueueResult<Option<JobState>> {
        let Ok(shard) = self.shard(id) else { return Ok(None) };
        let result = shard.conn().await.stats_job(id.id).await;
        let stats = match result {
            Ok(stats) => stats,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(queue_error(e, Some(id))),
        };
        match stats.get("state").map(String::as_str) {
            Some("ready") => Ok(Some(JobState::Ready)),
            Some("delayed") => Ok(Some(JobState::Delayed)),
            Some("reserved") => Ok(Some(JobState::Reserved)),
            Some("buried") => Ok(Some(JobState::Buried)),
            other => Err(QueueError::Protocol(format!(
                "beanstalkd {}: stats-job {}: unknown state {other:?}",
                shard.addr, id.id
            ))),
        }
    }

    async fn peek(&self, id: QueueJobId) -> QueueResult<Option<Vec<u8>>> {
        let Ok(shard) = self.shard(id) else { return Ok(None) };
        let result = shard.conn().await.peek(id.id).await;
        match result {
            Ok(job) => Ok(job.map(|j| j.body)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(queue_error(e, Some(id))),
        }
    }

    async fn stats_tube(&self, tube: &str) -> QueueResult<TubeStats> {
        check_tube(tube)?;
        let owned = tube.to_owned();
        let per_shard = self
            .on_all("stats-tube", |conn| {
                let tube = owned.clone();
                Box::pin(async move {
                    let map = match conn.stats_tube(&tube).await {
                        Ok(map) => map,
                        Err(e) if e.is_not_found() => return Ok(None),
                        Err(e) => return Err(e),
                    };
                    let age = if parse_count(&map, "current-jobs-ready") > 0 {
                        next_ready_age(conn, &tube).await?
                    } else {
                        None
                    };
                    Ok(Some((map, age)))
                })
            })
            .await?;
        let mut total = TubeStats { name: tube.to_owned(), watching: Some(0), ..TubeStats::default() };
        for (map, age) in per_shard.into_iter().flatten() {
            total.ready += parse_count(&map, "current-jobs-ready");
            total.delayed += parse_count(&map, "current-jobs-delayed");
            total.reserved += parse_count(&map, "current-jobs-reserved");
            total.buried += parse_count(&map, "current-jobs-buried");
            total.total_jobs += parse_count(&map, "total-jobs");
            total.paused |= parse_count(&map, "pause") > 0 || parse_count(&map, "pause-time-left") > 0;
            total.watching = total.watching.max(Some(parse_count(&map, "current-watching")));
            total.oldest_ready_age = total.oldest_ready_age.max(age.map(Duration::from_secs));
        }
        Ok(total)
    }

    async fn pause(&self, tube: &str) -> QueueResult<()> {
        self.pause_tube(tube, PAUSE_FOREVER_SECS).await
    }

    async fn resume(&self, tube: &str) -> QueueResult<()> {
        self.pause_tube(tube, 0).await
    }

    async fn list_tubes(&self) -> QueueResult<Vec<String>> {
        let lists = self.on_all("list-tubes", |conn| Box::pin(conn.list_tubes())).await?;
        let mut tubes: Vec<String> = lists.into_iter().flatten().collect();
        tubes.sort();
        tubes.dedup();
        Ok(tubes)
    }

    async fn consumer(&self, tubes: &[String]) -> QueueResult<Box<dyn Consumer>> {
        Ok(Box::new(BeanstalkdConsumer::connect(&self.addrs(), tubes, self.opts.clone()).await?))
    }
}

/// How long `reserve` blocks on one server before polling them all again.
const WAIT_SLICE_SECS: u32 = 1;
/// Pause after DEADLINE_SOON (a held job is in its last TTR second), so the wait is not a spin.
const POLL_PAUSE: Duration = Duration::from_millis(50);

/// One connection per server, watching the same tubes.
pub struct BeanstalkdConsumer {
    conns: Vec<Connection>,
    tubes: Vec<String>,
    /// The server to look at first.
    cursor: usize,
}

impl BeanstalkdConsumer {
    /// Opens a connection to each server, watching `tubes`; works as long as one answers.
    pub async fn connect(addrs: &[String], tubes: &[String], opts: ConnectOptions) -> QueueResult<Self> {
        if tubes.is_empty() {
            return Err(QueueError::BadTube(String::new()));
        }
        for t in tubes {
            check_tube(t)?;
        }
        let mut conns = Vec::with_capacity(addrs.len());
        let mut down = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let mut conn = Connection::new(addr, opts.clone());
            conn.set_watch_list(tubes);
            if let Err(e) = conn.ensure_open().await {
                down.push((i as u16, e));
            }
            conns.push(conn);
        }
        check_servers_up("consumer", addrs, down)?;
        Ok(Self { conns, tubes: tubes.to_vec(), cursor: 0 })
    }

    fn conn(&mut self, id: QueueJobId) -> QueueResult<&mut Connection> {
        self.conns.get_mut(usize::from(id.shard)).ok_or(QueueError::NotFound(id))
    }

    /// One `reserve-with-timeout 0` on each server in turn; on the server where a wait is
    /// out, a look at whether its reply has come. Errors only when every server failed.
    async fn poll_round(&mut self) -> QueueResult<Option<Reserved>> {
        let n = self.conns.len();
        let mut failed = 0;
        let mut last_error = None;
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let conn = &mut self.conns[i];
            let polled = if conn.is_waiting() {
                conn.reserve_until(WAIT_SLICE_SECS, Instant::now()).await
            } else {
                conn.reserve_with_timeout(0).await
            };
            match polled {
                Ok(Some(job)) => {
                    self.cursor = (i + 1) % n;
                    return self.reserved(i, job).await.map(Some);
                }
                Ok(None) => {}
                Err(e) if e.server_error() == Some(&ServerError::DeadlineSoon) => {}
                Err(e) if e.is_connection() => {
                    failed += 1;
                    last_error = Some(e);
                }
                Err(e) => return Err(queue_error(e, None)),
            }
        }
        match last_error {
            Some(e) if failed == n => Err(queue_error(e, None)),
            _ => Ok(None),
        }
    }

    /// Waits until `deadline` on the server where a wait is out, else on the next in turn
    /// (`reserve-with-timeout 1`, which may outlive this call: §Waiting reserve).
    async fn wait_until(&mut self, deadline: Instant) -> QueueResult<Option<Reserved>> {
        let i = match self.conns.iter().position(Connection::is_waiting) {
            Some(i) => i,
            None => {
                let i = self.cursor;
                self.cursor = (self.cursor + 1) % self.conns.len();
                i
            }
        };
        match self.conns[i].reserve_until(WAIT_SLICE_SECS, deadline).await {
            Ok(Some(job)) => self.reserved(i, job).await.map(Some),
            Ok(None) => Ok(None),
            Err(e) if e.server_error() == Some(&ServerError::DeadlineSoon) => {
                tokio::time::sleep_until(deadline.min(Instant::now() + POLL_PAUSE)).await;
                Ok(None)
            }
            // A dead server: the next poll round finds out whether any is alive.
            Err(e) if e.is_connection() => Ok(None),
            Err(e) => Err(queue_error(e, None)),
        }
    }

    /// Names the tube of a reserved job: the only watched one, or from stats-job.
    async fn reserved(&mut self, shard: usize, job: Job) -> QueueResult<Reserved> {
        let id = QueueJobId::new(shard as u16, job.id);
        let tube = if self.tubes.len() == 1 {
            self.tubes[0].clone()
        } else {
            match self.conns[shard].stats_job(job.id).await {
                Ok(stats) => stats.get("tube").cloned().unwrap_or_default(),
                Err(e) if e.is_connection() => return Err(queue_error(e, Some(id))),
                Err(e) => {
                    log::warn!("tube of reserved job {id} unknown: {e}");
                    String::new()
                }
            }
        };
        Ok(Reserved { id, tube, body: job.body })
    }
}

#[async_trait]
impl Consumer for BeanstalkdConsumer {
    async fn reserve(&mut self, timeout: Duration) -> QueueResult<Option<Reserved>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(job) = self.poll_round().await? {
                return Ok(Some(job));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            if let Some(job) = self.wait_until(deadline).await? {
                return Ok(Some(job));
            }
        }
    }

    async fn touch(&mut self, id: QueueJobId) -> QueueResult<()> {
        let result = self.conn(id)?.touch(id.id).await;
        result.map_err(|e| queue_error(e, Some(id)))
    }

    async fn release(&mut self, id: QueueJobId, priority: u32, delay: Duration) -> QueueResult<()> {
        let result = self.conn(id)?.release(id.id, priority, delay_secs(delay)).await;
        result.map_err(|e| queue_error(e, Some(id)))
    }

    async fn bury(&mut self, id: QueueJobId, priority: u32) -> QueueResult<()> {
        let result = self.conn(id)?.bury(id.id, priority).await;
        result.map_err(|e| queue_error(e, Some(id)))
    }

    async fn delete(&mut self, id: QueueJobId) -> QueueResult<()> {
        let result = self.conn(id)?.delete(id.id).await;
        result.map_err(|e| queue_error(e, Some(id)))
    }

    /// Pipelined when the job's server is the one to look at first (always, with one
    /// server); otherwise, and when that server has nothing ready, as two steps.
    async fn delete_then_reserve(
        &mut self,
        id: QueueJobId,
        timeout: Duration,
    ) -> (QueueResult<()>, QueueResult<Option<Reserved>>) {
        let shard = usize::from(id.shard);
        if shard != self.cursor || shard >= self.conns.len() {
            let deleted = self.delete(id).await;
            return (deleted, self.reserve(timeout).await);
        }
        let (deleted, job) = match self.conns[shard].delete_then_reserve_with_timeout(id.id, 0).await {
            Ok(both) => both,
            Err(e) => {
                let deleted = Err(queue_error(e, Some(id)));
                return (deleted, self.reserve(timeout).await);
            }
        };
        let deleted = deleted.map_err(|e| queue_error(e, Some(id)));
        match job {
            Ok(Some(job)) => {
                self.cursor = (shard + 1) % self.conns.len();
                (deleted, self.reserved(shard, job).await.map(Some))
            }
            Ok(None) => (deleted, self.reserve(timeout).await),
            Err(e) if e.server_error() == Some(&ServerError::DeadlineSoon) || e.is_connection() => {
                (deleted, self.reserve(timeout).await)
            }
            Err(e) => (deleted, Err(queue_error(e, None))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(delay_secs(Duration::ZERO), 0);
        assert_eq!(delay_secs(Duration::from_millis(1)), 1);
        assert_eq!(delay_secs(Duration::from_millis(1500)), 2);
        assert_eq!(delay_secs(Duration::from_secs(3)), 3);
        assert_eq!(ttr_secs(Duration::ZERO), 1);
        assert_eq!(ttr_secs(Duration::from_millis(200)), 1);
        assert_eq!(delay_secs(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn urls_list_servers() {
        assert_eq!(parse_url("beanstalkd://a:1,b:2").unwrap(), vec!["a:1", "b:2"]);
        assert_eq!(parse_url("beanstalkd://a").unwrap(), vec!["a:11300"]);
        assert!(parse_url("redis://a:1").is_err());
        assert!(parse_url("beanstalkd://a:x").is_err());
        assert!(parse_url("beanstalkd://a:1,").is_err());
    }

    #[test]
    fn urls_may_cap_the_job_size() {
        let (addrs, opts) = parse_url_with_options("beanstalkd://a:1,b:2?max-job-size=1000").unwrap();
        assert_eq!((addrs, opts.max_job_size), (vec!["a:1".to_owned(), "b:2".to_owned()], Some(1000)));
        assert_eq!(parse_url_with_options("beanstalkd://a:1").unwrap().1.max_job_size, None);
        for bad in ["beanstalkd://a:1?max-job-size=0", "beanstalkd://a:1?max-job-size=x", "beanstalkd://a:1?ttr=3"] {
            let err = parse_url_with_options(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("max-job-size"), "{err}");
        }
    }
}
