//! The SQLite queue: the shared queue contract on a temp file, plus what only an embedded
//! queue must show: several OS processes sharing one file, and concurrent writers losing nothing.
//! Cross-process tests run this test binary again as a child: its ignored `child_reserver`
//! test, with a job spec in `CHILD_ENV` (without one, that test fails).

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Lines, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use geyser::queue::sqlite::SqliteQueue;
use geyser::queue::{JobState, PutOptions, Queue, QueueJobId};
use support::queue_contract::tube;

async fn sqlite_queue() -> (SqliteQueue, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = SqliteQueue::open(&dir.path().join("queue.db")).expect("open queue");
    (queue, dir)
}

queue_contract_tests!(sqlite_queue());

/// `path|tube|mode`: what `child_reserver` does as a second process on the queue.
const CHILD_ENV: &str = "GEYSER_TEST_SQLITE_QUEUE_CHILD";
/// The body of the job that tells a draining child it has seen every real job.
const STOP: &[u8] = b"stop";
/// Queued after every real job of a test (priority last), so it is reserved only once they all are.
const STOP_PRIORITY: u32 = u32::MAX;

fn opts(ttr: Duration) -> PutOptions {
    PutOptions { ttr, ..PutOptions::default() }
}

/// The child side of the cross-process tests, run by them as
/// `<this binary> --ignored --exact child_reserver` with `CHILD_ENV` set; run any other way it
/// fails. Prints `READY` once it watches the tube, then
/// `drain`: reserves and prints `RESERVED <id>` for each job until it reserves a `STOP` job,
/// then prints `DONE`; `hold`: reserves one job and prints it. Either way it keeps its jobs
/// until its standard input closes (the parent went away) or it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the cross-process tests, which run it themselves"]
async fn child_reserver() {
    let spec = std::env::var(CHILD_ENV).unwrap_or_else(|_| {
        panic!("child_reserver runs only as the child of a cross-process test ({CHILD_ENV} unset)")
    });
    let [path, tube, mode]: [&str; 3] = spec.split('|').collect::<Vec<_>>().try_into().expect("path|tube|mode");
    let queue = SqliteQueue::open(Path::new(path)).expect("child: open queue");
    let mut consumer = queue.consumer(&[tube.to_owned()]).await.expect("child: consumer");
    println!("READY");
    loop {
        let job = consumer.reserve(Duration::from_secs(30)).await.expect("child: reserve").expect("child: a job");
        if job.body == STOP {
            break;
        }
        println!("RESERVED {}", job.id);
        if mode == "hold" {
            break;
        }
    }
    println!("DONE");
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await.expect("child: stdin").ok();
}

/// A child test process, killed when dropped so a failing test leaves none behind.
struct ChildProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Held open: the child keeps its reservations until this closes.
    _stdin: ChildStdin,
}

impl ChildProcess {
    fn spawn(path: &Path, tube: &str, mode: &str) -> Self {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args(["--ignored", "--exact", "child_reserver", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}|{tube}|{mode}", path.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let stdin = child.stdin.take().expect("child stdin");
        let mut me = Self { child, lines: BufReader::new(stdout).lines(), _stdin: stdin };
        me.next_tagged("READY").expect("child process started");
        me
    }

    /// What follows `tag` on the next line holding it (the test harness may print before it
    /// on the same line); None at end of output.
    fn next_tagged(&mut self, tag: &str) -> Option<String> {
        let mut lines = self.lines.by_ref().map_while(Result::ok);
        lines.find_map(|l| l.split_once(tag).map(|(_, rest)| rest.trim().to_owned()))
    }

    /// The ids the child reported up to its `DONE`.
    fn reserved_ids(&mut self) -> Vec<QueueJobId> {
        let lines = self.lines.by_ref().map_while(Result::ok).take_while(|l| !l.contains("DONE"));
        lines.filter_map(|l| l.split_once("RESERVED ").map(|(_, id)| id.trim().parse().expect("job id"))).collect()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_processes_never_share_a_reservation() {
    const JOBS: usize = 1000;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("queue.db");
    let queue = SqliteQueue::open(&path).expect("open queue");
    let t = tube("procs");
    let mut children = [ChildProcess::spawn(&path, &t, "drain"), ChildProcess::spawn(&path, &t, "drain")];
    rt.block_on(async {
        for i in 0..JOBS {
            queue.put(&t, i.to_string().as_bytes(), opts(Duration::from_secs(60))).await.expect("put");
        }
        for _ in &children {
            let stop = PutOptions { priority: STOP_PRIORITY, ..opts(Duration::from_secs(60)) };
            queue.put(&t, STOP, stop).await.expect("put stop");
        }
    });
    let mut seen = HashSet::new();
    let mut per_child = Vec::new();
    for child in &mut children {
        let ids = child.reserved_ids();
        per_child.push(ids.len());
        for id in ids {
            assert!(seen.insert(id), "job {id} reserved by both processes");
        }
    }
    assert_eq!(seen.len(), JOBS, "reserved per child: {per_child:?}");
    assert!(per_child.iter().all(|&n| n > 0), "both processes competed: {per_child:?}");
    let stats = rt.block_on(queue.stats_tube(&t)).expect("stats");
    let stops = children.len();
    assert_eq!(stats.reserved as usize, JOBS + stops, "both children still hold their jobs: {stats:?}");
}

#[test]
fn ttr_expiry_hands_a_job_to_another_process() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("queue.db");
    let queue = SqliteQueue::open(&path).expect("open queue");
    let t = tube("procttr");
    let mut child = ChildProcess::spawn(&path, &t, "hold");
    let id = rt.block_on(queue.put(&t, b"x", opts(Duration::from_secs(1)))).expect("put");
    let held: QueueJobId = child.next_tagged("RESERVED").expect("child reserved").parse().expect("job id");
    let reserved_at = Instant::now();
    assert_eq!(held, id);
    rt.block_on(async {
        assert_eq!(queue.job_state(id).await.expect("state"), Some(JobState::Reserved));
        let mut consumer = queue.consumer(std::slice::from_ref(&t)).await.expect("consumer");
        let job = consumer.reserve(Duration::from_secs(4)).await.expect("reserve").expect("given back");
        assert_eq!(job.id, id);
        assert!(reserved_at.elapsed() >= Duration::from_millis(800), "given back after {:?}", reserved_at.elapsed());
        consumer.delete(id).await.expect("delete by the new holder");
    });
}

/// Threads of this process whose name starts with `prefix` (as /proc shows it, cut to 15 bytes).
fn threads_named(prefix: &str) -> HashSet<String> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    let named = |tid: &String| {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).is_ok_and(|comm| comm.starts_with(prefix))
    };
    tasks.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(named).collect()
}

/// How many times a thread of this process gave up the CPU of its own accord (slept, waited).
fn voluntary_switches(tid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).expect("thread status");
    let line = status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")).expect("switch count");
    line.trim().parse().expect("a number")
}

/// A reserve with nothing to reserve sleeps until something changes: it wakes a few times
/// a second at most, where polling the file every millisecond or two wakes about a thousand.
#[test]
fn an_idle_reserve_sleeps_instead_of_polling() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = SqliteQueue::open(&dir.path().join("queue.db")).expect("open queue");
    let before = threads_named("geyser-sqlite-c");
    let mut consumer = rt.block_on(queue.consumer(&[tube("idle")])).expect("consumer");
    // A new thread names itself once it runs, so look until it has.
    let named_by = Instant::now() + Duration::from_secs(5);
    let theirs: Vec<String> = loop {
        let new: Vec<String> = threads_named("geyser-sqlite-c").difference(&before).cloned().collect();
        if !new.is_empty() {
            break new;
        }
        assert!(Instant::now() < named_by, "the consumer's connection thread never showed up");
        std::thread::yield_now();
    };
    let switches = || theirs.iter().map(|tid| voluntary_switches(tid)).sum::<u64>();
    let at_start = switches();
    assert!(rt.block_on(consumer.reserve(Duration::from_secs(2))).expect("reserve").is_none());
    let woke = switches() - at_start;
    assert!(woke < 50, "an idle 2 s reserve woke its thread {woke} times");
}

/// A reserve whose caller went away gives the consumer back at once, not at its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_reserve_frees_its_consumer() {
    let (queue, _dir) = sqlite_queue().await;
    let t = tube("dropped");
    let mut consumer = queue.consumer(std::slice::from_ref(&t)).await.expect("consumer");
    let gave_up = tokio::time::timeout(Duration::from_millis(100), consumer.reserve(Duration::from_secs(60))).await;
    assert!(gave_up.is_err(), "nothing to reserve");
    let id = queue.put(&t, b"x", PutOptions::default()).await.expect("put");
    let next = tokio::time::timeout(Duration::from_secs(10), consumer.reserve(Duration::ZERO)).await;
    let job = next.expect("the consumer is free again").expect("reserve").expect("the job");
    assert_eq!(job.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_from_several_threads_lose_nothing() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    let (shared, dir) = sqlite_queue().await;
    let path = dir.path().join("queue.db");
    let t = tube("puts");
    let mut tasks = Vec::new();
    for i in 0..THREADS * 2 {
        // Half the writers get their own connection, half share one.
        let queue = if i % 2 == 0 { SqliteQueue::open(&path).expect("open") } else { shared.clone() };
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..PER_THREAD / 2 {
                ids.push(queue.put(&t, format!("{i}-{n}").as_bytes(), PutOptions::default()).await.expect("put"));
            }
            ids
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        ids.extend(task.await.expect("writer"));
    }
    assert_eq!(ids.len(), THREADS * PER_THREAD);
    let stats = shared.stats_tube(&t).await.expect("stats");
    assert_eq!((stats.ready, stats.total_jobs), ((THREADS * PER_THREAD) as u64, (THREADS * PER_THREAD) as u64));
}

#[tokio::test]
async fn jobs_survive_reopening_and_open_creates_folders() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested/deeper/queue.db");
    let t = tube("reopen");
    let id = SqliteQueue::open(&path).expect("open").put(&t, b"kept", PutOptions::default()).await.expect("put");
    let queue = SqliteQueue::open(&path).expect("reopen");
    assert_eq!(queue.job_state(id).await.expect("state"), Some(JobState::Ready));
    let mut consumer = queue.consumer(&[t]).await.expect("consumer");
    let job = consumer.reserve(Duration::ZERO).await.expect("reserve").expect("the kept job");
    assert_eq!(job.body, b"kept");
}

#[tokio::test]
async fn bad_tube_names_are_refused() {
    let (queue, _dir) = sqlite_queue().await;
    assert!(queue.put("has space", b"x", PutOptions::default()).await.is_err());
    assert!(queue.consumer(&["".to_owned()]).await.is_err());
}

/// A pause lives in the file: a queue opened on it later (another process, a restart) finds
/// the tube paused, and a resume there frees its jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_is_kept_in_the_file() {
    let (queue, dir) = sqlite_queue().await;
    let t = tube("keptpause");
    queue.pause(&t).await.expect("pause an empty tube");
    let id = queue.put(&t, b"x", PutOptions::default()).await.expect("put");
    let reopened = SqliteQueue::open(&dir.path().join("queue.db")).expect("reopen");
    assert!(reopened.stats_tube(&t).await.expect("stats").paused);
    let mut consumer = reopened.consumer(std::slice::from_ref(&t)).await.expect("consumer");
    assert!(consumer.reserve(Duration::ZERO).await.expect("reserve").is_none());
    reopened.resume(&t).await.expect("resume");
    assert!(!queue.stats_tube(&t).await.expect("stats").paused);
    assert_eq!(consumer.reserve(Duration::from_secs(2)).await.expect("reserve").map(|j| j.id), Some(id));
}

/// A file made before jobs carried their put time gets the column when opened: its old jobs
/// are kept (with no age), and new ones have one.
#[tokio::test]
async fn a_file_without_put_times_is_migrated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("old.db");
    let t = tube("migrated");
    let old = rusqlite::Connection::open(&path).expect("create the old file");
    old.execute_batch(
        "CREATE TABLE geyser_queue_jobs (
             id INTEGER PRIMARY KEY AUTOINCREMENT, tube TEXT NOT NULL, priority INTEGER NOT NULL,
             state INTEGER NOT NULL, due_at INTEGER, ttr_ms INTEGER NOT NULL, token INTEGER, body BLOB NOT NULL);",
    )
    .expect("old schema");
    old.execute(
        "INSERT INTO geyser_queue_jobs (tube, priority, state, ttr_ms, body) VALUES (?1, 5, 0, 60000, x'6f6c64')",
        [&t],
    )
    .expect("an old job");
    drop(old);

    let queue = SqliteQueue::open(&path).expect("open the old file");
    let stats = queue.stats_tube(&t).await.expect("stats");
    assert_eq!((stats.ready, stats.oldest_ready_age), (1, None));
    queue.put(&t, b"new", PutOptions::default()).await.expect("put");
    assert!(queue.stats_tube(&t).await.expect("stats").oldest_ready_age.is_some());
    drop(queue);
    let reopened = SqliteQueue::open(&path).expect("open the migrated file again");
    let mut consumer = reopened.consumer(&[t]).await.expect("consumer");
    let job = consumer.reserve(Duration::ZERO).await.expect("reserve").expect("the old job");
    assert_eq!(job.body, b"old");
}
