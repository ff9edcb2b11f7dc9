//! Embedded queue on a SQLite file (WAL): beanstalkd semantics for every process of one machine.
//! Owns the `geyser_queue_jobs` and `geyser_queue_paused` tables of that file and nothing else;
//! every SQLite call runs on a thread that owns its connection, never on an async worker thread.
//!
//! A job row holds `state` and `due_at` (epoch ms): when a delayed job becomes ready, or when a
//! reservation runs out. Time-driven transitions are lazy: a reserve first turns due delayed jobs
//! and expired reservations into ready ones, and reads (stats, job state) judge them by `due_at`.
//!
//! A waiting reserve sleeps until a job can be ready: every connection that changes the table
//! rings the file's bell after its commit (see `bell`), and the reserve sleeps until a ring,
//! the next `due_at` of the table, or its timeout, whichever comes first.
//!
//! A paused tube has a row in `geyser_queue_paused`, which every reserve consults; resuming
//! deletes it, and that commit rings the bell like any change of the jobs table.

mod bell;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, ToSql, TransactionBehavior};

use super::{
    check_tube, Consumer, JobState, PutOptions, Queue, QueueError, QueueJobId, QueueResult, Reserved, TubeStats,
};
use crate::sqlite_conn::{after_commits_changing, open_wal, CallFailed, ConnThread};
use bell::{Bell, Ringer, Woke};

const READY: i64 = 0;
const DELAYED: i64 = 1;
const RESERVED: i64 = 2;
const BURIED: i64 = 3;

/// beanstalkd silently raises a TTR under one second to one second; so do we.
const MIN_TTR_MS: i64 = 1000;
/// A waiting reserve runs its query at least this often, bell or not: writers that do not
/// ring (another program) are noticed within this long. Under MIN_TTR, so a reservation
/// made without a ring is seen before it can run out.
const MAX_QUIET: Duration = Duration::from_millis(500);
/// Without a watched bell, a waiting reserve checks for commits this often.
const POLL_UNWATCHED: Duration = Duration::from_millis(2);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS geyser_queue_jobs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    tube     TEXT    NOT NULL,
    priority INTEGER NOT NULL,
    state    INTEGER NOT NULL,
    due_at   INTEGER,
    ttr_ms   INTEGER NOT NULL,
    token    INTEGER,
    body     BLOB    NOT NULL,
    put_at   INTEGER
);
CREATE INDEX IF NOT EXISTS geyser_queue_jobs_next
    ON geyser_queue_jobs (tube, state, priority, id, due_at);
CREATE INDEX IF NOT EXISTS geyser_queue_jobs_due
    ON geyser_queue_jobs (state, due_at) WHERE due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS geyser_queue_paused (
    tube TEXT PRIMARY KEY
);
";
/// The tables whose changes ring the bell (a rowid table each: SQLite reports no row change
/// of a WITHOUT ROWID table to the hook that rings).
const RINGING_TABLES: &[&str] = &["geyser_queue_jobs", "geyser_queue_paused"];

/// Milliseconds since the Unix epoch: every process of the machine shares this clock.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A delay as milliseconds to add to `now_ms()`, so that the job never becomes ready early:
/// rounded up, plus the up to 1 ms that `now_ms()` drops. 0 only for no delay at all.
fn least_wait_ms(delay: Duration) -> i64 {
    if delay.is_zero() {
        return 0;
    }
    millis(delay.saturating_add(Duration::from_nanos(999_999))).saturating_add(1)
}

/// Names the file and the operation in every SQLite error (formatted only on failure).
fn sql_err<'a>(path: &'a Path, op: &'a str) -> impl FnOnce(rusqlite::Error) -> QueueError + 'a {
    move |source| QueueError::Backend {
        context: format!("sqlite queue {}: {op}", path.display()),
        source: source.into(),
    }
}

/// Names the file and the operation when a connection thread fails a call.
fn call_err<'a>(path: &'a Path, op: &'a str) -> impl FnOnce(CallFailed) -> QueueError + 'a {
    move |e| QueueError::Io {
        context: format!("sqlite queue {}: {op}", path.display()),
        source: std::io::Error::other(e),
    }
}

/// Opens one connection with the queue's schema in place, creating the file and its folders;
/// each of its commits that changes the queue rings the file's bell.
pub(crate) fn open_connection(path: &Path) -> QueueResult<Connection> {
    let mut conn = open_wal(path, SCHEMA).map_err(|e| QueueError::Io {
        context: format!("sqlite queue {}: open", path.display()),
        source: std::io::Error::other(e),
    })?;
    add_put_time(&mut conn).map_err(sql_err(path, "add the put_at column to geyser_queue_jobs"))?;
    let ringer = Ringer::open(path).map_err(|source| QueueError::Io {
        context: format!("sqlite queue {}: open its wake-up file", path.display()),
        source,
    })?;
    after_commits_changing(&conn, RINGING_TABLES, Arc::new(move || ringer.ring()));
    Ok(conn)
}

/// A file made before jobs carried their put time gets the column; its old rows have none,
/// and count for no age (`tube_stats`). Checked again under the write lock, so that two
/// processes opening the file at once add it once.
fn add_put_time(conn: &mut Connection) -> rusqlite::Result<()> {
    let has_column = |conn: &Connection| {
        conn.prepare("SELECT 1 FROM pragma_table_info('geyser_queue_jobs') WHERE name = 'put_at'")?.exists([])
    };
    if has_column(conn)? {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !has_column(&tx)? {
        tx.execute_batch("ALTER TABLE geyser_queue_jobs ADD COLUMN put_at INTEGER")?;
    }
    tx.commit()
}

/// Starts the thread that owns `state` (a connection and what goes with it).
fn spawn_thread<S: Send + 'static>(path: &Path, name: &str, state: S) -> QueueResult<ConnThread<S>> {
    ConnThread::spawn(name, state).map_err(|source| QueueError::Io {
        context: format!("sqlite queue {}: start {name} thread", path.display()),
        source,
    })
}

/// Where a row stands right now, judging its time-driven transitions by `due_at`.
fn effective_state(state: i64, due_at: Option<i64>, now: i64) -> Option<JobState> {
    let due = |t: Option<i64>| t.unwrap_or(i64::MIN);
    Some(match state {
        READY => JobState::Ready,
        DELAYED if due(due_at) <= now => JobState::Ready,
        DELAYED => JobState::Delayed,
        RESERVED if due(due_at) < now => JobState::Ready,
        RESERVED => JobState::Reserved,
        BURIED => JobState::Buried,
        _ => return None,
    })
}

/// The queue's own connection, for puts and administration; consumers get their own.
#[derive(Clone)]
pub struct SqliteQueue {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    conn: ConnThread<Connection>,
}

impl SqliteQueue {
    /// Opens (or creates) the queue in the SQLite file at `path`.
    pub fn open(path: &Path) -> QueueResult<Self> {
        let conn = spawn_thread(path, "geyser-sqlite-queue", open_connection(path)?)?;
        Ok(Self { shared: Arc::new(Shared { path: path.to_owned(), conn }) })
    }

    /// Runs `f` on the queue's connection thread, naming the file and `op` in any error.
    async fn with_conn<T, F>(&self, op: &'static str, f: F) -> QueueResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let path = &self.shared.path;
        self.shared.conn.call(f).await.map_err(call_err(path, op))?.map_err(sql_err(path, op))
    }
}

pub(crate) fn put_job(conn: &Connection, tube: &str, body: &[u8], opts: PutOptions) -> rusqlite::Result<i64> {
    let (state, due_at) = if opts.delay.is_zero() {
        (READY, None)
    } else {
        (DELAYED, Some(now_ms().saturating_add(least_wait_ms(opts.delay))))
    };
    let ttr_ms = millis(opts.ttr).max(MIN_TTR_MS);
    conn.prepare_cached(
        "INSERT INTO geyser_queue_jobs (tube, priority, state, due_at, ttr_ms, body, put_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![tube, opts.priority, state, due_at, ttr_ms, body, now_ms()])?;
    Ok(conn.last_insert_rowid())
}

/// Deletes the job unless someone holds a live reservation of it.
pub(crate) fn delete_unreserved(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM geyser_queue_jobs WHERE id = ?1 AND NOT (state = ?2 AND due_at >= ?3)")?
        .execute(params![id, RESERVED, now_ms()])?;
    Ok(n > 0)
}

/// Kicks up to `bound` buried jobs of the tube, or if none is buried, up to `bound` delayed ones.
fn kick_tube(conn: &mut Connection, tube: &str, bound: u64) -> rusqlite::Result<u64> {
    let bound = i64::try_from(bound).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let mut kicked = tx
        .prepare_cached(
            "UPDATE geyser_queue_jobs SET state = ?1, due_at = NULL WHERE id IN (
                 SELECT id FROM geyser_queue_jobs WHERE tube = ?2 AND state = ?3 ORDER BY id LIMIT ?4)",
        )?
        .execute(params![READY, tube, BURIED, bound])?;
    if kicked == 0 {
        kicked = tx
            .prepare_cached(
                "UPDATE geyser_queue_jobs SET state = ?1, due_at = NULL WHERE id IN (
                     SELECT id FROM geyser_queue_jobs WHERE tube = ?2 AND state = ?3 AND due_at > ?4
                     ORDER BY due_at, id LIMIT ?5)",
            )?
            .execute(params![READY, tube, DELAYED, now, bound])?;
    }
    tx.commit()?;
    Ok(kicked as u64)
}

/// Makes one buried, or still delayed, job ready.
fn kick_one(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE geyser_queue_jobs SET state = ?1, due_at = NULL
             WHERE id = ?2 AND (state = ?3 OR (state = ?4 AND due_at > ?5))",
        )?
        .execute(params![READY, id, BURIED, DELAYED, now_ms()])?;
    Ok(n > 0)
}

fn job_state(conn: &Connection, id: i64) -> rusqlite::Result<Option<JobState>> {
    let row = conn
        .prepare_cached("SELECT state, due_at FROM geyser_queue_jobs WHERE id = ?")?
        .query_row([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)))
        .optional()?;
    Ok(row.and_then(|(state, due_at)| effective_state(state, due_at, now_ms())))
}

fn body(conn: &Connection, id: i64) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT body FROM geyser_queue_jobs WHERE id = ?")?.query_row([id], |r| r.get(0)).optional()
}

/// Counts by effective state, the put time of the oldest ready job, and the pause, in one
/// pass over the tube's rows.
fn tube_stats(conn: &Connection, tube: &str) -> rusqlite::Result<TubeStats> {
    let now = now_ms();
    let (ready, delayed, reserved, buried, oldest_put, paused) = conn
        .prepare_cached(
            "SELECT
                 COALESCE(SUM(state = ?2 OR (state = ?3 AND due_at <= ?6) OR (state = ?4 AND due_at < ?6)), 0),
                 COALESCE(SUM(state = ?3 AND due_at > ?6), 0),
                 COALESCE(SUM(state = ?4 AND due_at >= ?6), 0),
                 COALESCE(SUM(state = ?5), 0),
                 MIN(CASE WHEN state = ?2 OR (state = ?3 AND due_at <= ?6) OR (state = ?4 AND due_at < ?6)
                     THEN put_at END),
                 EXISTS (SELECT 1 FROM geyser_queue_paused WHERE tube = ?1)
             FROM geyser_queue_jobs WHERE tube = ?1",
        )?
        .query_row(params![tube, READY, DELAYED, RESERVED, BURIED, now], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, bool>(5)?,
            ))
        })?;
    let count = |n: i64| n.max(0) as u64;
    Ok(TubeStats {
        name: tube.to_owned(),
        ready: count(ready),
        delayed: count(delayed),
        reserved: count(reserved),
        buried: count(buried),
        // beanstalkd counts every job ever put in the tube; keeping that count would cost every
        // put a second write, so here it is the jobs the tube holds now.
        total_jobs: count(ready + delayed + reserved + buried),
        paused,
        oldest_ready_age: oldest_put.map(|at| Duration::from_millis(count(now - at))),
        // Consumers leave no trace in the file while they wait, so their number is unknown here.
        watching: None,
    })
}

/// Pauses (`true`) or resumes the tube; a commit that changes the table rings the bell.
fn set_paused(conn: &Connection, tube: &str, paused: bool) -> rusqlite::Result<()> {
    let sql = if paused {
        "INSERT OR IGNORE INTO geyser_queue_paused (tube) VALUES (?)"
    } else {
        "DELETE FROM geyser_queue_paused WHERE tube = ?"
    };
    conn.prepare_cached(sql)?.execute([tube])?;
    Ok(())
}

/// Tubes that hold at least one job, found by skipping through the index rather than scanning it.
fn tubes_with_jobs(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE t(name) AS (
             SELECT MIN(tube) FROM geyser_queue_jobs
             UNION ALL
             SELECT (SELECT MIN(tube) FROM geyser_queue_jobs WHERE tube > t.name) FROM t WHERE t.name IS NOT NULL)
         SELECT name FROM t WHERE name IS NOT NULL",
    )?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?.collect();
    names
}

fn check_id(id: QueueJobId) -> QueueResult<i64> {
    match (id.shard, i64::try_from(id.id)) {
        (0, Ok(row)) => Ok(row),
        _ => Err(QueueError::NotFound(id)),
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn put(&self, tube: &str, body: &[u8], opts: PutOptions) -> QueueResult<QueueJobId> {
        check_tube(tube)?;
        let (tube, body) = (tube.to_owned(), body.to_vec());
        let row = self.with_conn("put", move |conn| put_job(conn, &tube, &body, opts)).await?;
        Ok(QueueJobId::new(0, row as u64))
    }

    async fn delete(&self, id: QueueJobId) -> QueueResult<()> {
        let row = check_id(id)?;
        let deleted = self.with_conn("delete", move |conn| delete_unreserved(conn, row)).await?;
        deleted.then_some(()).ok_or(QueueError::NotFound(id))
    }

    async fn kick(&self, tube: &str, bound: u64) -> QueueResult<u64> {
        check_tube(tube)?;
        let tube = tube.to_owned();
        self.with_conn("kick", move |conn| kick_tube(conn, &tube, bound)).await
    }

    async fn kick_job(&self, id: QueueJobId) -> QueueResult<()> {
        let row = check_id(id)?;
        let kicked = self.with_conn("kick job", move |conn| kick_one(conn, row)).await?;
        kicked.then_some(()).ok_or(QueueError::NotFound(id))
    }

    async fn job_state(&self, id: QueueJobId) -> QueueResult<Option<JobState>> {
        let Ok(row) = check_id(id) else {
            return Ok(None);
        };
        self.with_conn("job state", move |conn| job_state(conn, row)).await
    }

    async fn peek(&self, id: QueueJobId) -> QueueResult<Option<Vec<u8>>> {
        let Ok(row) = check_id(id) else {
            return Ok(None);
        };
        self.with_conn("peek", move |conn| body(conn, row)).await
    }

    async fn stats_tube(&self, tube: &str) -> QueueResult<TubeStats> {
        check_tube(tube)?;
        let tube = tube.to_owned();
        self.with_conn("stats tube", move |conn| tube_stats(conn, &tube)).await
    }

    async fn pause(&self, tube: &str) -> QueueResult<()> {
        check_tube(tube)?;
        let tube = tube.to_owned();
        self.with_conn("pause", move |conn| set_paused(conn, &tube, true)).await
    }

    async fn resume(&self, tube: &str) -> QueueResult<()> {
        check_tube(tube)?;
        let tube = tube.to_owned();
        self.with_conn("resume", move |conn| set_paused(conn, &tube, false)).await
    }

    async fn list_tubes(&self) -> QueueResult<Vec<String>> {
        self.with_conn("list tubes", |conn| tubes_with_jobs(conn)).await
    }

    async fn consumer(&self, tubes: &[String]) -> QueueResult<Box<dyn Consumer>> {
        for tube in tubes {
            check_tube(tube)?;
        }
        let (path, tubes) = (self.shared.path.clone(), tubes.to_vec());
        let consumer =
            tokio::task::spawn_blocking(move || SqliteConsumer::open(&path, tubes)).await.map_err(|e| {
                QueueError::Io {
                    context: format!("sqlite queue {}: open consumer", self.shared.path.display()),
                    source: std::io::Error::other(e),
                }
            })??;
        Ok(Box::new(consumer))
    }
}

/// One reserving connection with its own reservation token: only it may touch, release,
/// bury or delete the jobs it reserved, and only while their TTR has not run out.
pub struct SqliteConsumer {
    path: PathBuf,
    conn: ConnThread<ConsumerConn>,
    bell: Arc<Bell>,
}

struct ConsumerConn {
    conn: Connection,
    token: i64,
    tubes: Vec<String>,
    bell: Arc<Bell>,
}

/// What one reserve attempt found: a job, or when the next time-driven change is due (epoch ms).
enum Attempt {
    Got(Reserved),
    Idle { next_due: Option<i64> },
}

/// Tells a blocking reserve to stop waiting once its caller has gone away.
struct AbortOnDrop(Arc<AtomicBool>, Arc<Bell>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        self.1.wake_waiters();
    }
}

impl SqliteConsumer {
    /// Opens the consumer's own connection and its thread; blocking (it may wait for the file lock).
    fn open(path: &Path, tubes: Vec<String>) -> QueueResult<Self> {
        let bell = Bell::for_file(path);
        let state =
            ConsumerConn { conn: open_connection(path)?, token: rand::random::<i64>(), tubes, bell: bell.clone() };
        Ok(Self { path: path.to_owned(), conn: spawn_thread(path, "geyser-sqlite-consumer", state)?, bell })
    }

    /// Runs `f` on this consumer's connection thread, naming the file and `op` in any error.
    async fn with_conn<T, F>(&self, op: &'static str, f: F) -> QueueResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut ConsumerConn) -> rusqlite::Result<T> + Send + 'static,
    {
        self.conn.call(f).await.map_err(call_err(&self.path, op))?.map_err(sql_err(&self.path, op))
    }

    /// Runs one statement on a job this consumer holds; `NotFound` when it no longer holds it.
    async fn on_held(&self, op: &'static str, id: QueueJobId, sql: &'static str, extra: Vec<i64>) -> QueueResult<()> {
        let row = check_id(id)?;
        let changed = self.with_conn(op, move |c| c.on_held(sql, row, &extra)).await?;
        changed.then_some(()).ok_or(QueueError::NotFound(id))
    }
}

impl ConsumerConn {
    /// Reserves the best ready job of the watched tubes, waiting up to `timeout` for one.
    fn reserve(&mut self, timeout: Duration, abort: &AtomicBool) -> rusqlite::Result<Option<Reserved>> {
        if timeout.is_zero() {
            return Ok(match self.try_reserve()? {
                Attempt::Got(job) => Some(job),
                Attempt::Idle { .. } => None,
            });
        }
        let deadline = Instant::now() + timeout;
        loop {
            // Noted before the attempt, so a commit landing between attempt and wait is seen.
            let (rung, version) = (self.bell.rings(), self.data_version()?);
            match self.try_reserve()? {
                Attempt::Got(job) => return Ok(Some(job)),
                Attempt::Idle { .. } if Instant::now() >= deadline => return Ok(None),
                Attempt::Idle { next_due } => {
                    if !self.wait_for_change(rung, version, wake_by(deadline, next_due), abort)? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Sleeps until another connection commits (the bell rings and the change counter moved),
    /// or `until` passes; then the caller attempts again. False when the caller went away.
    /// With an unwatched bell it looks at the change counter every POLL_UNWATCHED instead.
    fn wait_for_change(
        &self,
        mut rung: u64,
        version: i64,
        until: Instant,
        abort: &AtomicBool,
    ) -> rusqlite::Result<bool> {
        loop {
            let step_end = if self.bell.is_watched() { until } else { until.min(Instant::now() + POLL_UNWATCHED) };
            match self.bell.wait(rung, step_end, abort) {
                Woke::Aborted => return Ok(false),
                // A ring for a commit the last attempt already saw (or this process's own) changes nothing.
                Woke::Rang(now) => rung = now,
                Woke::TimedOut if Instant::now() >= until => return Ok(true),
                Woke::TimedOut => {}
            }
            if self.data_version()? != version {
                return Ok(true);
            }
        }
    }

    /// Changes whenever another connection (of any process) commits to the file.
    fn data_version(&self) -> rusqlite::Result<i64> {
        self.conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))
    }

    /// One atomic attempt: promote due jobs, pick the best ready one, reserve it for us.
    fn try_reserve(&mut self) -> rusqlite::Result<Attempt> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        // Due delayed jobs and expired reservations become ready (one statement, one index).
        tx.prepare_cached(
            "UPDATE geyser_queue_jobs SET state = ?1, due_at = NULL, token = NULL
             WHERE (state = ?2 AND due_at <= ?4) OR (state = ?3 AND due_at < ?4)",
        )?
        .execute(params![READY, DELAYED, RESERVED, now])?;
        let attempt = match best_ready(&tx, &self.tubes)? {
            Some(id) => Attempt::Got(
                tx.prepare_cached(
                    "UPDATE geyser_queue_jobs SET state = ?1, token = ?2, due_at = ?3 + ttr_ms WHERE id = ?4
                     RETURNING tube, body",
                )?
                .query_row(params![RESERVED, self.token, now, id], |r| {
                    Ok(Reserved { id: QueueJobId::new(0, id as u64), tube: r.get(0)?, body: r.get(1)? })
                })?,
            ),
            None => Attempt::Idle { next_due: next_due(&tx)? },
        };
        tx.commit()?;
        Ok(attempt)
    }

    /// Runs `sql` (bound to id, token, now, RESERVED, then `extra`) on a job reserved by this
    /// consumer whose TTR has not run out; false when there is no such job.
    fn on_held(&self, sql: &str, id: i64, extra: &[i64]) -> rusqlite::Result<bool> {
        let base = [id, self.token, now_ms(), RESERVED];
        let values: Vec<&dyn ToSql> = base.iter().chain(extra).map(|v| v as &dyn ToSql).collect();
        let n = self.conn.prepare_cached(sql)?.execute(&*values)?;
        Ok(n > 0)
    }
}

/// The ready job to reserve next from `tubes`: lowest priority, then oldest, across all of them,
/// paused tubes left out. One indexed lookup per tube, rather than one sort over every ready
/// job of every tube.
fn best_ready(conn: &Connection, tubes: &[String]) -> rusqlite::Result<Option<i64>> {
    let mut head = conn.prepare_cached(
        "SELECT priority, id FROM geyser_queue_jobs
         WHERE tube = ?1 AND state = ?2 AND NOT EXISTS (SELECT 1 FROM geyser_queue_paused WHERE tube = ?1)
         ORDER BY priority, id LIMIT 1",
    )?;
    let mut best: Option<(i64, i64)> = None;
    for tube in tubes {
        let found = head.query_row(params![tube, READY], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        best = match (best, found) {
            (Some(b), Some(f)) => Some(b.min(f)),
            (b, f) => b.or(f),
        };
    }
    Ok(best.map(|(_, id)| id))
}

/// When a waiting reserve must look again though nothing rang: at its deadline, when the
/// table's next time-driven change is due, or after MAX_QUIET, whichever comes first.
fn wake_by(deadline: Instant, next_due: Option<i64>) -> Instant {
    let now = Instant::now();
    let due = next_due.map(|t| now + Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0)));
    deadline.min(now + MAX_QUIET).min(due.unwrap_or(deadline))
}

/// When the next delayed job becomes ready or the next reservation runs out (epoch ms).
fn next_due(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let mut earliest =
        conn.prepare_cached("SELECT MIN(due_at) FROM geyser_queue_jobs WHERE state = ? AND due_at IS NOT NULL")?;
    let delayed: Option<i64> = earliest.query_row([DELAYED], |r| r.get(0))?;
    let expiring: Option<i64> = earliest.query_row([RESERVED], |r| r.get(0))?;
    Ok(delayed.into_iter().chain(expiring).min())
}

/// A closed consumer gives back the jobs it holds, as beanstalkd does when a connection closes;
/// this runs on the consumer's thread once its last handle is gone. A process that dies
/// without closing leaves them to their TTR.
impl Drop for ConsumerConn {
    fn drop(&mut self) {
        let released = self
            .conn
            .prepare_cached(
                "UPDATE geyser_queue_jobs SET state = ?1, due_at = NULL, token = NULL WHERE state = ?2 AND token = ?3",
            )
            .and_then(|mut stmt| stmt.execute(params![READY, RESERVED, self.token]));
        if let Err(e) = released {
            log::warn!("sqlite queue: a closed consumer could not give back its jobs (they return at TTR): {e}");
        }
    }
}

/// The condition every consumer operation puts on its job: ours, reserved, TTR not run out.
macro_rules! held {
    () => {
        "id = ?1 AND token = ?2 AND due_at >= ?3 AND state = ?4"
    };
}

#[async_trait]
impl Consumer for SqliteConsumer {
    /// Waits on the consumer's own thread; dropping this future stops the wait at once
    /// (a job reserved in that instant stays reserved until its TTR runs out).
    async fn reserve(&mut self, timeout: Duration) -> QueueResult<Option<Reserved>> {
        let abort = Arc::new(AtomicBool::new(false));
        let _guard = AbortOnDrop(Arc::clone(&abort), Arc::clone(&self.bell));
        self.with_conn("reserve", move |c| c.reserve(timeout, &abort)).await
    }

    async fn touch(&mut self, id: QueueJobId) -> QueueResult<()> {
        let sql = concat!("UPDATE geyser_queue_jobs SET due_at = ?3 + ttr_ms WHERE ", held!());
        self.on_held("touch", id, sql, vec![]).await
    }

    async fn release(&mut self, id: QueueJobId, priority: u32, delay: Duration) -> QueueResult<()> {
        // A delay is a least wait, and a delayed row needs a due time (however short the delay).
        let delay_ms = least_wait_ms(delay);
        let state = if delay_ms == 0 { READY } else { DELAYED };
        let sql = concat!(
            "UPDATE geyser_queue_jobs SET state = ?5, priority = ?6, token = NULL,
                 due_at = CASE WHEN ?7 > 0 THEN ?3 + ?7 END WHERE ",
            held!()
        );
        self.on_held("release", id, sql, vec![state, i64::from(priority), delay_ms]).await
    }

    async fn bury(&mut self, id: QueueJobId, priority: u32) -> QueueResult<()> {
        let sql = concat!(
            "UPDATE geyser_queue_jobs SET state = ?5, priority = ?6, token = NULL, due_at = NULL WHERE ",
            held!()
        );
        self.on_held("bury", id, sql, vec![BURIED, i64::from(priority)]).await
    }

    async fn delete(&mut self, id: QueueJobId) -> QueueResult<()> {
        let sql = concat!("DELETE FROM geyser_queue_jobs WHERE ", held!());
        self.on_held("delete", id, sql, vec![]).await
    }
}
