//! SQLite plumbing shared by the embedded queue and store: opening a file in WAL mode, an
//! action run after each commit that changed a given table, and a thread that owns one
//! connection so async code never blocks on SQLite. Knows no tables but the names it is given.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

/// How long a writer waits for another process's write transaction before giving up
/// (see `wait_for_writer`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Statements a connection keeps prepared; more than the queue and store use.
const STATEMENT_CACHE: usize = 64;
/// Pages in the WAL before a commit checkpoints it (SQLite's default is 1000): fewer, larger
/// checkpoints, hence fewer fsyncs per commit.
const WAL_CHECKPOINT_PAGES: i32 = 8000;
/// The least time between two checkpoints a process starts (see `checkpoint_now_and_then`).
const CHECKPOINT_GAP: Duration = Duration::from_millis(250);
/// The WAL file is cut back to this size after a checkpoint, so it does not stay at its peak.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("create folder {dir}: {source}")]
    Folder {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{step}: {source}")]
    Sqlite {
        step: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

/// Opens `path` (creating it and its folders) in WAL mode with `synchronous=NORMAL`, a busy
/// timeout, and `schema` (idempotent DDL) applied in one write transaction.
pub(crate) fn open_wal(path: &Path, schema: &str) -> Result<Connection, OpenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Folder { dir: dir.to_owned(), source })?;
    }
    let step = |step| move |source| OpenError::Sqlite { step, source };
    let conn = Connection::open(path).map_err(step("open"))?;
    conn.busy_handler(Some(wait_for_writer)).map_err(step("set busy handler"))?;
    switch_to_wal(&conn).map_err(step("switch to WAL"))?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(step("set synchronous"))?;
    conn.wal_hook(Some(after_commit));
    conn.pragma_update_and_check(None, "journal_size_limit", WAL_SIZE_LIMIT, |r| r.get::<_, i64>(0))
        .map_err(step("set journal_size_limit"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {schema} COMMIT;")).map_err(step("create schema"))?;
    Ok(conn)
}

/// What a connection asked to run after its current transaction commits (see `after_commits_changing`).
type CommitAction = Arc<dyn Fn() + Send + Sync>;

thread_local! {
    static PENDING: RefCell<Option<CommitAction>> = const { RefCell::new(None) };
}

/// Runs `action` on the committing thread right after each commit of `conn` that changed a
/// row of one of `tables`; by then the commit is visible to every other connection (SQLite calls
/// the WAL hook after the write lock is released). A transaction runs on one thread, so the
/// row change marks that thread and the commit (or rollback) that ends it clears the mark.
pub(crate) fn after_commits_changing(conn: &Connection, tables: &'static [&'static str], action: CommitAction) {
    conn.update_hook(Some(move |_: rusqlite::hooks::Action, _: &str, changed: &str, _: i64| {
        if tables.contains(&changed) {
            PENDING.with(|p| {
                p.borrow_mut().get_or_insert_with(|| Arc::clone(&action));
            });
        }
    }));
    conn.rollback_hook(Some(|| {
        PENDING.with(|p| p.borrow_mut().take());
    }));
}

/// SQLite's WAL hook, called after each commit that wrote pages: first the commit's action,
/// then a checkpoint when one is due.
fn after_commit(wal: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    if let Some(action) = PENDING.with(|p| p.borrow_mut().take()) {
        action();
    }
    checkpoint_now_and_then(wal, pages)
}

/// Replaces SQLite's automatic checkpoint, which runs in the commit that finds the WAL over
/// its threshold, and, while another process has a read open (so the WAL cannot start
/// over), in every commit after it: two fsyncs each, in the middle of jobs. This one runs
/// at most once per CHECKPOINT_GAP in this process, in the commit that finds it due.
fn checkpoint_now_and_then(wal: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
    if pages < WAL_CHECKPOINT_PAGES {
        return Ok(());
    }
    {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < CHECKPOINT_GAP) {
            return Ok(());
        }
        *last = Some(now);
    }
    // Busy (another checkpoint is running) is no failure of the commit that got here.
    match wal.checkpoint_v2(rusqlite::hooks::CheckpointMode::PASSIVE) {
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// How a connection waits for another process's write transaction. SQLite's own busy
/// timeout sleeps 1 ms, then longer, each time it finds the write lock taken; a write
/// transaction here holds it for tens of µs, so processes sharing a file would mostly
/// sleep. This yields the CPU a few times first (the holder may be waiting for it), then
/// sleeps in short steps, then in longer ones, up to BUSY_TIMEOUT in all.
fn wait_for_writer(tries: i32) -> bool {
    match pause_before_try(u32::try_from(tries).unwrap_or(0)) {
        Some(Pause::Yield) => std::thread::yield_now(),
        Some(Pause::Sleep(d)) => std::thread::sleep(d),
        None => return false,
    }
    true
}

#[derive(Debug, PartialEq)]
enum Pause {
    Yield,
    Sleep(Duration),
}

/// What to do before try number `tries + 1` at the write lock; None: give up.
fn pause_before_try(tries: u32) -> Option<Pause> {
    const YIELDS: u32 = 20;
    const SHORT: Duration = Duration::from_micros(50);
    const SHORT_SLEEPS: u32 = 100;
    const LONG: Duration = Duration::from_millis(2);
    if tries < YIELDS {
        return Some(Pause::Yield);
    }
    let slept = tries - YIELDS;
    let waited = SHORT * slept.min(SHORT_SLEEPS) + LONG * slept.saturating_sub(SHORT_SLEEPS);
    if waited >= BUSY_TIMEOUT {
        return None;
    }
    Some(Pause::Sleep(if slept < SHORT_SLEEPS { SHORT } else { LONG }))
}

/// WAL is a property of the file: once one connection switched it, later opens find it set.
/// The switch itself needs the file to itself, so processes racing to create it retry.
fn switch_to_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut attempt = 0;
    loop {
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) && attempt < 200 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

type Call = Box<dyn FnOnce() + Send>;

/// A call that never finished: it panicked, or the connection thread is gone.
#[derive(Debug, thiserror::Error)]
#[error("the SQLite connection thread did not complete the call (it panicked or stopped)")]
pub(crate) struct CallFailed;

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with SQLite calls made on this thread itself. For a thread that does nothing
/// but wait for the call's result (a Python caller with the GIL released, blocked in
/// `block_on`): it is a blocking thread already, and running SQLite here saves two thread
/// switches per operation. Tasks on the runtime's threads never see this flag.
pub(crate) fn inline_on_this_thread<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            INLINE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(INLINE.with(|c| c.replace(true)));
    f()
}

/// A connection (with whatever state `S` goes with it) that async code uses without blocking
/// a runtime thread: calls run one at a time on a thread of its own, in order, and a caller
/// that goes away leaves its call to finish there. A caller inside `inline_on_this_thread`
/// runs its call on its own thread instead, under the same lock. The thread ends when the
/// last handle is dropped.
pub(crate) struct ConnThread<S> {
    state: Arc<Mutex<S>>,
    calls: mpsc::Sender<Call>,
}

impl<S: Send + 'static> ConnThread<S> {
    pub(crate) fn spawn(name: &str, state: S) -> std::io::Result<Self> {
        let (calls, inbox) = mpsc::channel::<Call>();
        std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            for call in inbox {
                // A panicking call drops its reply sender, which its caller sees as `CallFailed`.
                let _ = catch_unwind(AssertUnwindSafe(call));
            }
        })?;
        Ok(Self { state: Arc::new(Mutex::new(state)), calls })
    }

    /// Runs `f` on the connection and waits for its result.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, CallFailed>
    where
        T: Send + 'static,
        F: FnOnce(&mut S) -> T + Send + 'static,
    {
        if INLINE.with(|c| c.get()) {
            let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            return Ok(f(&mut state));
        }
        let (reply, result) = oneshot::channel();
        let state = self.state.clone();
        let call: Call = Box::new(move || {
            let mut state = state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = reply.send(f(&mut state));
        });
        self.calls.send(call).map_err(|_| CallFailed)?;
        result.await.map_err(|_| CallFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_yields_then_sleeps_short_then_long_and_gives_up_after_the_busy_timeout() {
        assert_eq!(pause_before_try(0), Some(Pause::Yield));
        assert_eq!(pause_before_try(20), Some(Pause::Sleep(Duration::from_micros(50))));
        assert_eq!(pause_before_try(200), Some(Pause::Sleep(Duration::from_millis(2))));
        let mut slept = Duration::ZERO;
        let mut tries = 0;
        while let Some(pause) = pause_before_try(tries) {
            if let Pause::Sleep(d) = pause {
                slept += d;
            }
            tries += 1;
        }
        assert!(slept >= BUSY_TIMEOUT && slept <= BUSY_TIMEOUT + Duration::from_millis(2), "{slept:?}");
    }

    #[test]
    fn the_wal_is_checkpointed_and_starts_over_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = open_wal(&path, "CREATE TABLE IF NOT EXISTS t (b BLOB);").unwrap();
        let page = vec![7u8; 3000];
        let commits = 4 * WAL_CHECKPOINT_PAGES as usize;
        let start = std::time::Instant::now();
        for _ in 0..commits {
            conn.execute("INSERT INTO t (b) VALUES (?)", [&page]).unwrap();
            conn.execute("DELETE FROM t", []).unwrap();
        }
        assert!(start.elapsed() > CHECKPOINT_GAP, "too fast to tell");
        let wal = std::fs::metadata(path.with_extension("db-wal")).unwrap().len();
        // Uncheckpointed, the WAL would hold two frames per commit (the insert, the delete).
        let uncheckpointed = (commits as u64) * 2 * 4096;
        assert!(wal < uncheckpointed / 3, "WAL of {wal} bytes after {commits} commits");
    }
}
