//! The SQLite queue: the shared queue contract on a temp file, plus what only an embedded
//! queue must show: several OS processes sharing one file, and concurrent writers losing nothing.
//! Cross-process tests run this test binary again as a child, selected by `CHILD_ENV`.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
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

/// `path|tube|mode`: makes `child_reserver` act as a second process on the queue.
const CHILD_ENV: &str = "GEYSER_TEST_SQLITE_QUEUE_CHILD";

fn opts(ttr: Duration) -> PutOptions {
    PutOptions { ttr, ..PutOptions::default() }
}

/// Child mode (a no-op in a normal run). Prints `READY` once it watches the tube, then
/// `drain`: reserves until the tube stays empty for a second, printing `RESERVED <id>`, then
/// `DONE`; `hold`: reserves one job and prints it. Either way it keeps its jobs until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_reserver() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let [path, tube, mode]: [&str; 3] = spec.split('|').collect::<Vec<_>>().try_into().expect("path|tube|mode");
    let queue = SqliteQueue::open(Path::new(path)).expect("child: open queue");
    let mut consumer = queue.consumer(&[tube.to_owned()]).await.expect("child: consumer");
    println!("READY");
    let mut wait = Duration::from_secs(10);
    while let Some(job) = consumer.reserve(wait).await.expect("child: reserve") {
        println!("RESERVED {}", job.id);
        if mode == "hold" {
            break;
        }
        wait = Duration::from_secs(1);
    }
    println!("DONE");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// A child test process, killed when dropped so a failing test leaves none behind.
struct ChildProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ChildProcess {
    fn spawn(path: &Path, tube: &str, mode: &str) -> Self {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args(["--exact", "child_reserver", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}|{tube}|{mode}", path.display()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut me = Self { child, lines: BufReader::new(stdout).lines() };
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
    assert_eq!(stats.reserved as usize, JOBS, "both children still hold their jobs: {stats:?}");
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
