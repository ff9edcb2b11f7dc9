//! The embedded queue's wake-up bell, so that waiting consumers sleep instead of polling the
//! database: every connection that changes the queue writes one byte to a small file beside
//! the database (`<file>-wake`) right after its commit, and one watcher thread per process
//! (inotify on that file) wakes the consumers of this process that wait on it.
//! Touches only that file and its own inotify descriptor.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// Where the bell of the database at `db` lives.
fn bell_path(db: &Path) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push("-wake");
    PathBuf::from(name)
}

/// Opens (creating it) the bell file of `db` for writing, without changing its contents.
fn open_bell_file(db: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(false).open(bell_path(db))
}

/// The writing end, one per connection: `ring` after each commit that changed the queue.
pub(crate) struct Ringer {
    file: File,
    path: PathBuf,
    warned: AtomicBool,
}

impl Ringer {
    pub(crate) fn open(db: &Path) -> io::Result<Self> {
        Ok(Self { file: open_bell_file(db)?, path: bell_path(db), warned: AtomicBool::new(false) })
    }

    /// One byte written in place: every watcher of the file gets a modify event. A failure
    /// only costs waiting consumers their prompt wake-up (they look again within a
    /// moment anyway), so it is logged once per connection and the commit stands.
    pub(crate) fn ring(&self) {
        if let Err(e) = self.file.write_at(&[0], 0) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::warn!("sqlite queue: cannot ring {} (consumers wake later): {e}", self.path.display());
            }
        }
    }
}

/// The waiting end: a count of rings heard, shared by every consumer of one file in this process.
pub(crate) struct Bell {
    rings: Mutex<u64>,
    rang: Condvar,
    /// False when no watcher hears this bell (inotify unavailable, or the file was removed):
    /// its waiters must look at the database themselves now and then.
    watched: AtomicBool,
}

/// How a wait on the bell ended.
pub(crate) enum Woke {
    /// It rang: the count of rings heard so far.
    Rang(u64),
    TimedOut,
    Aborted,
}

impl Bell {
    fn new(watched: bool) -> Self {
        Self { rings: Mutex::new(0), rang: Condvar::new(), watched: AtomicBool::new(watched) }
    }

    /// The bell of the database at `db`, heard by this process's watcher; an unwatched one
    /// (with a warning) when the watch cannot be set up.
    pub(crate) fn for_file(db: &Path) -> Arc<Self> {
        match watcher().and_then(|w| w.watch(db)) {
            Ok(bell) => bell,
            Err(e) => {
                log::warn!(
                    "sqlite queue {}: cannot watch for changes ({e}); waiting consumers will poll the file",
                    db.display()
                );
                Arc::new(Self::new(false))
            }
        }
    }

    pub(crate) fn is_watched(&self) -> bool {
        self.watched.load(Ordering::Relaxed)
    }

    /// How many rings were heard so far.
    pub(crate) fn rings(&self) -> u64 {
        *self.lock()
    }

    /// Blocks until a ring beyond `seen` is heard, `abort` is set, or `until` passes.
    pub(crate) fn wait(&self, seen: u64, until: Instant, abort: &AtomicBool) -> Woke {
        let mut rings = self.lock();
        loop {
            if abort.load(Ordering::Relaxed) {
                return Woke::Aborted;
            }
            if *rings != seen {
                return Woke::Rang(*rings);
            }
            let now = Instant::now();
            if now >= until {
                return Woke::TimedOut;
            }
            rings = self.rang.wait_timeout(rings, until - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Makes every waiter look at its abort flag (set it first).
    pub(crate) fn wake_waiters(&self) {
        let _rings = self.lock();
        self.rang.notify_all();
    }

    fn ring(&self) {
        *self.lock() += 1;
        self.rang.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        self.rings.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// This process's inotify descriptor, the bells it serves, and the thread that listens.
struct Watcher {
    shared: Arc<Heard>,
    /// The process that started the listening thread: a forked child has no such thread.
    pid: u32,
}

/// What the watcher and its listening thread share.
struct Heard {
    fd: OwnedFd,
    /// By watch descriptor.
    bells: Mutex<HashMap<i32, Arc<Bell>>>,
}

/// The process's watcher, started on first use; an error when it could not be.
fn watcher() -> io::Result<&'static Watcher> {
    static WATCHER: OnceLock<Result<Watcher, String>> = OnceLock::new();
    match WATCHER.get_or_init(|| Watcher::start().map_err(|e| e.to_string())) {
        Ok(w) if w.pid == std::process::id() => Ok(w),
        Ok(_) => Err(io::Error::other("this process was forked from the one whose thread watches the file")),
        Err(e) => Err(io::Error::other(format!("no file watcher: {e}"))),
    }
}

impl Watcher {
    /// Opens an inotify descriptor and starts the thread that reads it.
    fn start() -> io::Result<Self> {
        // SAFETY: inotify_init1 takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let shared = Arc::new(Heard { fd, bells: Mutex::new(HashMap::new()) });
        let listener = Arc::clone(&shared);
        std::thread::Builder::new().name("geyser-queue-bell".into()).spawn(move || listener.run())?;
        Ok(Self { shared, pid: std::process::id() })
    }

    /// Watches the bell file of `db` (created if missing); every consumer of one file
    /// shares one bell.
    fn watch(&self, db: &Path) -> io::Result<Arc<Bell>> {
        drop(open_bell_file(db)?);
        let path = CString::new(bell_path(db).as_os_str().as_bytes()).map_err(io::Error::other)?;
        let mut bells = self.shared.lock();
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.shared.fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::clone(bells.entry(wd).or_insert_with(|| Arc::new(Bell::new(true)))))
    }
}

impl Heard {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Arc<Bell>>> {
        self.bells.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads events for as long as the process lives; on a read failure, leaves every bell
    /// unwatched (its waiters poll) and stops.
    fn run(&self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes for the whole call.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("sqlite queue: file watcher stopped ({e}); waiting consumers will poll");
                self.give_up();
                return;
            }
            self.dispatch(&buf[..n as usize]);
        }
    }

    /// Rings the bells that `events` (a batch read from inotify) name, each once.
    fn dispatch(&self, events: &[u8]) {
        let mut bells = self.lock();
        let mut to_ring: Vec<Arc<Bell>> = Vec::new();
        for (wd, mask) in parse_events(events) {
            if mask & libc::IN_Q_OVERFLOW != 0 {
                to_ring.extend(bells.values().cloned());
            } else if mask & libc::IN_IGNORED != 0 {
                // The file was removed: nothing will be heard from it again.
                if let Some(bell) = bells.remove(&wd) {
                    bell.watched.store(false, Ordering::Relaxed);
                    to_ring.push(bell);
                }
            } else if let Some(bell) = bells.get(&wd) {
                to_ring.push(Arc::clone(bell));
            }
        }
        drop(bells);
        to_ring.sort_by_key(|b| Arc::as_ptr(b) as usize);
        to_ring.dedup_by_key(|b| Arc::as_ptr(b) as usize);
        for bell in to_ring {
            bell.ring();
        }
    }

    fn give_up(&self) {
        for bell in self.lock().values() {
            bell.watched.store(false, Ordering::Relaxed);
            bell.ring();
        }
    }
}

/// (watch descriptor, mask) of each `struct inotify_event` in a buffer read from inotify.
fn parse_events(mut buf: &[u8]) -> Vec<(i32, u32)> {
    const HEADER: usize = 16;
    let word = |b: &[u8], at: usize| [b[at], b[at + 1], b[at + 2], b[at + 3]];
    let mut out = Vec::new();
    while buf.len() >= HEADER {
        let wd = i32::from_ne_bytes(word(buf, 0));
        let mask = u32::from_ne_bytes(word(buf, 4));
        let name_len = u32::from_ne_bytes(word(buf, 12)) as usize;
        out.push((wd, mask));
        buf = buf.get(HEADER + name_len..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[test]
    fn a_ring_from_another_handle_wakes_a_waiter_and_a_timeout_ends_a_quiet_wait() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.db");
        let bell = Bell::for_file(&db);
        assert!(bell.is_watched());
        let never = AtomicBool::new(false);
        let seen = bell.rings();
        let quiet = bell.wait(seen, Instant::now() + Duration::from_millis(50), &never);
        assert!(matches!(quiet, Woke::TimedOut));
        let ringer = Ringer::open(&db).unwrap();
        let waiter = {
            let bell = Arc::clone(&bell);
            std::thread::spawn(move || bell.wait(seen, Instant::now() + Duration::from_secs(10), &never))
        };
        ringer.ring();
        assert!(matches!(waiter.join().unwrap(), Woke::Rang(n) if n > seen));
        assert!(Arc::ptr_eq(&bell, &Bell::for_file(&db)), "one bell per file and process");
    }

    #[test]
    fn an_abort_wakes_a_waiter_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let bell = Bell::for_file(&dir.path().join("q.db"));
        let abort = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (bell, abort) = (Arc::clone(&bell), Arc::clone(&abort));
            std::thread::spawn(move || bell.wait(bell.rings(), Instant::now() + Duration::from_secs(60), &abort))
        };
        abort.store(true, Ordering::Relaxed);
        bell.wake_waiters();
        assert!(matches!(waiter.join().unwrap(), Woke::Aborted));
    }

    #[test]
    fn events_are_read_with_their_names_skipped() {
        let mut buf = Vec::new();
        for (wd, mask, name) in [(3i32, libc::IN_MODIFY, &b""[..]), (5, libc::IN_IGNORED, &b"name\0\0\0\0"[..])] {
            buf.extend(wd.to_ne_bytes());
            buf.extend(mask.to_ne_bytes());
            buf.extend(0u32.to_ne_bytes());
            buf.extend((name.len() as u32).to_ne_bytes());
            buf.extend(name);
        }
        assert_eq!(parse_events(&buf), vec![(3, libc::IN_MODIFY), (5, libc::IN_IGNORED)]);
    }
}
