//! beanstalkd client and BeanstalkdQueue against real beanstalkd servers
//! (tests/support/beanstalkd.rs starts them) and against a hostile fake one on
//! loopback (the reply decoder's properties are in fuzz_beanstalkd_reply.rs). Touches only
//! servers it starts.
//! The binary counts each thread's allocations (to show a hostile reply is not
//! buffered) and captures log records (to show what opening a queue logs).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use geyser::queue::beanstalkd::connection::{ClientError, ConnectOptions, Connection, PutJob};
use geyser::queue::beanstalkd::protocol::ServerError;
use geyser::queue::beanstalkd::BeanstalkdQueue;
use geyser::queue::{Consumer, JobState, PutOptions, Queue, QueueError, QueueJobId};
use geyser::worker::{Attempt, Outcome, Worker, WorkerConfig};
use support::beanstalkd::{Beanstalkd, Hostile, HostileBeanstalkd, Options};

/// The system allocator, counting the bytes each thread asks for.
struct CountingAlloc;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes)));
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size.saturating_sub(layout.size()));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Bytes this thread has allocated so far.
fn allocated_here() -> usize {
    ALLOCATED.with(Cell::get)
}

/// Log records (level and message) of the whole binary, for tests that check what is logged.
struct Captured(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Captured {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut records) = self.0.lock() {
            records.push((record.level(), record.args().to_string()));
        }
    }

    fn flush(&self) {}
}

static LOGGED: Captured = Captured(Mutex::new(Vec::new()));

/// Starts capturing log records (once per process).
fn capture_logs() {
    if log::set_logger(&LOGGED).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

/// Warnings and errors logged so far that mention `needle`.
fn warnings_about(needle: &str) -> Vec<String> {
    let records = LOGGED.0.lock().map(|r| r.clone()).unwrap_or_default();
    records.into_iter().filter(|(level, msg)| *level <= log::Level::Warn && msg.contains(needle)).map(|r| r.1).collect()
}

/// An address on loopback where nothing listens.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

fn fast_opts() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..ConnectOptions::default()
    }
}

async fn conn(server: &Beanstalkd) -> Connection {
    Connection::connect(&server.addr(), fast_opts()).await.expect("connect")
}

fn opts(priority: u32, delay_ms: u64, ttr_s: u64) -> PutOptions {
    PutOptions { priority, delay: Duration::from_millis(delay_ms), ttr: Duration::from_secs(ttr_s) }
}

fn server_error(e: &geyser::queue::beanstalkd::connection::ClientError) -> Option<ServerError> {
    e.server_error().cloned()
}

#[tokio::test]
async fn every_command_round_trips() {
    let server = Beanstalkd::start();
    let mut c = conn(&server).await;

    c.use_tube("rt").await.unwrap();
    assert_eq!(c.list_tube_used().await.unwrap(), "rt");
    assert_eq!(c.watch("rt").await.unwrap(), 2);
    assert_eq!(c.ignore("default").await.unwrap(), 1);
    assert_eq!(c.list_tubes_watched().await.unwrap(), vec!["rt"]);
    let tubes = c.list_tubes().await.unwrap();
    assert!(tubes.contains(&"rt".to_owned()) && tubes.contains(&"default".to_owned()), "{tubes:?}");

    let a = c.put(5, 0, 60, b"a").await.unwrap();
    assert_eq!(c.peek(a).await.unwrap().unwrap().body, b"a");
    assert_eq!(c.peek_ready().await.unwrap().unwrap().id, a);
    let stats = c.stats_job(a).await.unwrap();
    assert_eq!((stats["tube"].as_str(), stats["state"].as_str(), stats["pri"].as_str()), ("rt", "ready", "5"));

    let job = c.reserve().await.unwrap();
    assert_eq!(job.id, a);
    c.touch(a).await.unwrap();
    c.release(a, 7, 100).await.unwrap();
    assert_eq!(c.peek_delayed().await.unwrap().unwrap().id, a);
    assert_eq!(c.kick(10).await.unwrap(), 1, "kick moves delayed jobs when none are buried");

    let job = c.reserve_job(a).await.unwrap();
    assert_eq!(job.body, b"a");
    c.bury(a, 9).await.unwrap();
    assert_eq!(c.peek_buried().await.unwrap().unwrap().id, a);
    c.kick_job(a).await.unwrap();
    assert_eq!(c.stats_job(a).await.unwrap()["state"], "ready");

    let job = c.reserve_with_timeout(1).await.unwrap().unwrap();
    assert_eq!(job.id, a);
    c.delete(a).await.unwrap();
    assert!(c.reserve_with_timeout(0).await.unwrap().is_none(), "TIMED_OUT is no job");
    assert!(c.peek(a).await.unwrap().is_none());

    let tube = c.stats_tube("rt").await.unwrap();
    assert_eq!(tube["name"], "rt");
    assert_eq!(tube["total-jobs"], "1");
    let stats = c.stats().await.unwrap();
    assert_eq!(stats["max-job-size"], "65535");
    c.pause_tube("rt", 1).await.unwrap();
    assert_eq!(c.stats_tube("rt").await.unwrap()["pause"], "1");
}

#[tokio::test]
async fn bodies_are_binary_safe() {
    let server = Beanstalkd::start();
    let mut c = conn(&server).await;
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\r\n".to_vec(),
        b"\r\n\r\n".to_vec(),
        b"  spaces both ends  ".to_vec(),
        b"INSERTED 5\r\nDELETED\r\n".to_vec(),
        b"\r".to_vec(),
        b"\n".to_vec(),
        all_bytes,
        vec![0u8; 60_000],
    ];
    for body in &bodies {
        let id = c.put(0, 0, 60, body).await.unwrap();
        let job = c.reserve_with_timeout(0).await.unwrap().expect("a job");
        assert_eq!((job.id, &job.body), (id, body));
        c.delete(id).await.unwrap();
    }
}

#[tokio::test]
async fn pipelined_puts_come_back_in_order() {
    let server = Beanstalkd::start();
    let mut c = conn(&server).await;
    c.use_tube("pipe").await.unwrap();
    let bodies: Vec<Vec<u8>> = (0..1000).map(|i| format!("job {i}\r\n").into_bytes()).collect();
    let jobs: Vec<PutJob<'_>> = bodies.iter().map(|b| PutJob { pri: 1, delay: 0, ttr: 60, body: b }).collect();
    let ids: Vec<u64> = c.put_pipelined(&jobs).await.unwrap().into_iter().map(Result::unwrap).collect();
    assert_eq!(ids.len(), 1000);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids follow the order of the puts");
    assert_eq!(c.stats_tube("pipe").await.unwrap()["current-jobs-ready"], "1000");
    c.watch("pipe").await.unwrap();
    c.ignore("default").await.unwrap();
    for (id, body) in ids.iter().zip(&bodies) {
        let job = c.reserve_with_timeout(0).await.unwrap().unwrap();
        assert_eq!((job.id, &job.body), (*id, body));
    }
}

#[tokio::test]
async fn error_replies_are_typed() {
    let server = Beanstalkd::start_with(Options { max_job_size: Some(100), ..Options::default() });
    let mut c = conn(&server).await;

    let err = c.put(0, 0, 60, &[b'x'; 101]).await.unwrap_err();
    assert_eq!(server_error(&err), Some(ServerError::JobTooBig), "{err}");
    assert!(err.to_string().contains(&server.addr()) && err.to_string().contains("put"), "{err}");
    // The connection is still in step after an error reply.
    assert!(c.put(0, 0, 60, &[b'x'; 100]).await.is_ok());

    let err = c.delete(999_999).await.unwrap_err();
    assert_eq!(server_error(&err), Some(ServerError::NotFound));
    assert!(err.is_not_found());
    assert_eq!(server_error(&c.kick_job(999_999).await.unwrap_err()), Some(ServerError::NotFound));
    assert_eq!(server_error(&c.stats_tube("nope").await.unwrap_err()), Some(ServerError::NotFound));
    assert_eq!(server_error(&c.ignore("default").await.unwrap_err()), Some(ServerError::NotIgnored));
    assert_eq!(server_error(&c.use_tube("-bad").await.unwrap_err()), Some(ServerError::BadFormat));

    // DEADLINE_SOON: holding a job with TTR 1 puts us in its safety margin at once.
    c.put(0, 0, 1, b"short").await.unwrap();
    let _held = c.reserve().await.unwrap();
    let _ = c.reserve_with_timeout(0).await; // may pick up the 100-byte job
    let err = c.reserve_with_timeout(1).await.unwrap_err();
    assert_eq!(server_error(&err), Some(ServerError::DeadlineSoon));

    // One bad job in a pipeline fails alone; the stream stays in step.
    let big = [b'y'; 101];
    let batch = [
        PutJob { pri: 0, delay: 0, ttr: 60, body: b"ok1" },
        PutJob { pri: 0, delay: 0, ttr: 60, body: &big },
        PutJob { pri: 0, delay: 0, ttr: 60, body: b"ok2" },
    ];
    let results = c.put_pipelined(&batch).await.unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert_eq!(results[1].as_ref().err().and_then(server_error), Some(ServerError::JobTooBig));

    // The queue checks the size against the server's max-job-size before sending.
    let queue = BeanstalkdQueue::connect(&[server.addr()]).await.unwrap();
    let before = c.stats().await.unwrap()["cmd-put"].clone();
    match queue.put("big", &[0u8; 101], PutOptions::default()).await {
        Err(QueueError::JobTooBig { size: 101, limit: 100 }) => {}
        other => panic!("expected JobTooBig, got {other:?}"),
    }
    assert_eq!(c.stats().await.unwrap()["cmd-put"], before, "nothing was sent");
}

#[tokio::test]
async fn queue_trait_semantics() {
    let server = Beanstalkd::start();
    let queue = BeanstalkdQueue::connect(&[server.addr()]).await.unwrap();
    let tube = "sem".to_owned();

    let a = queue.put(&tube, b"a", opts(10, 0, 60)).await.unwrap();
    assert_eq!(a.shard, 0);
    assert_eq!(queue.job_state(a).await.unwrap(), Some(JobState::Ready));
    let d = queue.put(&tube, b"d", opts(10, 1200, 60)).await.unwrap();
    assert_eq!(queue.job_state(d).await.unwrap(), Some(JobState::Delayed));
    // A fractional delay is rounded up, never down.
    let mut c = conn(&server).await;
    assert_eq!(c.stats_job(d.id).await.unwrap()["delay"], "2");

    let mut consumer = queue.consumer(std::slice::from_ref(&tube)).await.unwrap();
    let got = consumer.reserve(Duration::from_millis(100)).await.unwrap().unwrap();
    assert_eq!((got.id, got.tube.as_str(), got.body.as_slice()), (a, "sem", &b"a"[..]));
    assert_eq!(queue.job_state(a).await.unwrap(), Some(JobState::Reserved));
    consumer.bury(a, 5).await.unwrap();
    assert_eq!(queue.job_state(a).await.unwrap(), Some(JobState::Buried));

    // kick: buried first, then delayed.
    assert_eq!(queue.kick(&tube, 10).await.unwrap(), 1);
    assert_eq!(queue.job_state(a).await.unwrap(), Some(JobState::Ready));
    assert_eq!(queue.job_state(d).await.unwrap(), Some(JobState::Delayed));
    assert_eq!(queue.kick(&tube, 10).await.unwrap(), 1);
    assert_eq!(queue.job_state(d).await.unwrap(), Some(JobState::Ready));

    let stats = queue.stats_tube(&tube).await.unwrap();
    assert_eq!((stats.ready, stats.total_jobs), (2, 2));
    assert!(queue.list_tubes().await.unwrap().contains(&tube));
    assert_eq!(queue.stats_tube("never-used").await.unwrap().ready, 0);

    queue.delete(d).await.unwrap();
    assert_eq!(queue.job_state(d).await.unwrap(), None);
    assert!(matches!(queue.delete(d).await, Err(QueueError::NotFound(id)) if id == d));
    assert!(matches!(queue.kick_job(d).await, Err(QueueError::NotFound(_))));

    let got = consumer.reserve(Duration::ZERO).await.unwrap().unwrap();
    consumer.release(got.id, 1, Duration::from_millis(10)).await.unwrap();
    assert_eq!(queue.job_state(got.id).await.unwrap(), Some(JobState::Delayed));
    queue.kick_job(got.id).await.unwrap();
    let got = consumer.reserve(Duration::from_secs(1)).await.unwrap().unwrap();
    consumer.delete(got.id).await.unwrap();
    assert!(matches!(consumer.delete(got.id).await, Err(QueueError::NotFound(_))));
    assert!(consumer.reserve(Duration::ZERO).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_restart_loses_no_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Beanstalkd::with_binlog(dir.path());
    let queue = BeanstalkdQueue::connect(&[server.addr()]).await.unwrap();
    let mut put = HashSet::new();
    for i in 0..50 {
        put.insert(queue.put("durable", format!("job {i}").as_bytes(), opts(1, 0, 60)).await.unwrap());
    }
    server.restart();
    let mut consumer = queue.consumer(&["durable".to_owned()]).await.unwrap();
    let mut got = HashSet::new();
    while let Some(job) = consumer.reserve(Duration::ZERO).await.unwrap() {
        consumer.delete(job.id).await.unwrap();
        got.insert(job.id);
    }
    assert_eq!(got, put);
    // The producer pool reconnects transparently for its next put.
    let mut ok = false;
    for _ in 0..50 {
        if queue.put("durable", b"after", opts(1, 0, 60)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "puts work again after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_reserve_errors_then_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Beanstalkd::with_binlog(dir.path());
    let mut c = conn(&server).await;
    c.watch("w").await.unwrap();
    c.ignore("default").await.unwrap();
    c.use_tube("w").await.unwrap();
    let id = c.put(0, 0, 60, b"held").await.unwrap();
    let held = c.reserve().await.unwrap();
    assert_eq!(held.id, id);

    let waiting = tokio::spawn(async move {
        let result = c.reserve_with_timeout(10).await;
        (c, result)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    let (mut c, result) = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    let err = result.unwrap_err();
    assert!(err.is_connection(), "{err}");
    assert!(c.put(0, 0, 60, b"x").await.unwrap_err().is_connection(), "server still down");

    server.start_again();
    let mut reconnected = None;
    for _ in 0..100 {
        match c.list_tubes_watched().await {
            Ok(w) => {
                reconnected = Some(w);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(reconnected.expect("reconnected"), vec!["w"], "watch list restored");
    assert_eq!(c.list_tube_used().await.unwrap(), "w", "used tube restored");
    assert!(c.sessions() >= 2);
    // The reservation died with the old connection: no silent success.
    let err = c.delete(id).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(c.touch(id).await.unwrap_err().is_not_found());
    // The job came back (binlog) and can be reserved anew, then deleted.
    let again = c.reserve_with_timeout(1).await.unwrap().expect("job back");
    assert_eq!(again.id, id);
    c.delete(id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_shard_leaves_the_others_working() {
    let servers = [Beanstalkd::start(), Beanstalkd::start(), Beanstalkd::start()];
    let addrs: Vec<String> = servers.iter().map(Beanstalkd::addr).collect();
    let queue = BeanstalkdQueue::connect(&addrs).await.unwrap();
    let tube = vec!["sharded".to_owned()];
    let mut consumer = queue.consumer(&tube).await.unwrap();

    let mut shards_used = HashSet::new();
    for i in 0..30 {
        shards_used.insert(queue.put("sharded", format!("{i}").as_bytes(), opts(1, 0, 60)).await.unwrap().shard);
    }
    assert_eq!(shards_used.len(), 3, "puts spread over all servers");
    let job_on_1 = loop {
        let job = consumer.reserve(Duration::from_secs(1)).await.unwrap().unwrap();
        if job.id.shard == 1 {
            break job;
        }
        consumer.delete(job.id).await.unwrap();
    };

    let mut servers = servers;
    servers[1].kill();
    let mut put = HashSet::new();
    for i in 0..30 {
        let id = queue.put("sharded", format!("after {i}").as_bytes(), opts(1, 0, 60)).await.unwrap();
        assert_ne!(id.shard, 1, "puts fall back past the dead server");
        put.insert(id);
    }
    let mut got = HashSet::new();
    while let Some(job) = consumer.reserve(Duration::from_millis(300)).await.unwrap() {
        if job.id.shard != 1 {
            consumer.delete(job.id).await.unwrap();
            got.insert(job.id);
        }
    }
    assert!(put.is_subset(&got), "reserves go on from the live servers");
    assert!(matches!(
        consumer.delete(job_on_1.id).await,
        Err(QueueError::NotFound(_)) | Err(QueueError::Unavailable { .. })
    ));
    assert!(queue.stats_tube("sharded").await.is_ok(), "admin ops report the live servers");
    assert!(queue.list_tubes().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_never_share_a_job() {
    let servers = [Beanstalkd::start(), Beanstalkd::start()];
    let addrs: Vec<String> = servers.iter().map(Beanstalkd::addr).collect();
    let queue = BeanstalkdQueue::connect(&addrs).await.unwrap();
    let tube = vec!["shared".to_owned()];
    let mut all = HashSet::new();
    for i in 0..300 {
        all.insert(queue.put("shared", format!("{i}").as_bytes(), opts(1, 0, 60)).await.unwrap());
    }
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut consumer = queue.consumer(&tube).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = consumer.reserve(Duration::ZERO).await.unwrap() {
                mine.push(job.id);
                consumer.delete(job.id).await.unwrap();
            }
            mine
        }));
    }
    let mut seen: Vec<QueueJobId> = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let unique: HashSet<QueueJobId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no job reserved twice");
    assert_eq!(unique, all);
}

#[tokio::test]
async fn ttr_expiry_gives_the_job_back() {
    let server = Beanstalkd::start();
    let queue = BeanstalkdQueue::connect(&[server.addr()]).await.unwrap();
    let tube = vec!["ttr".to_owned()];
    let id = queue
        .put("ttr", b"slow", PutOptions { ttr: Duration::from_millis(300), ..PutOptions::default() })
        .await
        .unwrap();
    let mut a = queue.consumer(&tube).await.unwrap();
    let mut b = queue.consumer(&tube).await.unwrap();
    assert_eq!(a.reserve(Duration::ZERO).await.unwrap().unwrap().id, id);
    assert!(b.reserve(Duration::ZERO).await.unwrap().is_none());
    let again = b.reserve(Duration::from_secs(4)).await.unwrap().expect("given back after TTR (1 s)");
    assert_eq!(again.id, id);
    assert!(matches!(a.delete(id).await, Err(QueueError::NotFound(_))), "the first holder lost it");
    b.delete(id).await.unwrap();
}

#[tokio::test]
async fn touch_extends_the_reservation() {
    let server = Beanstalkd::start();
    let queue = BeanstalkdQueue::connect(&[server.addr()]).await.unwrap();
    let tube = vec!["touch".to_owned()];
    let id =
        queue.put("touch", b"long", PutOptions { ttr: Duration::from_secs(2), ..PutOptions::default() }).await.unwrap();
    let mut a = queue.consumer(&tube).await.unwrap();
    assert_eq!(a.reserve(Duration::ZERO).await.unwrap().unwrap().id, id);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        a.touch(id).await.unwrap();
    }
    // 2.7 s after the reserve, past the 2 s TTR: still ours.
    assert_eq!(queue.job_state(id).await.unwrap(), Some(JobState::Reserved));
    a.delete(id).await.unwrap();
}

#[tokio::test]
async fn a_cancelled_command_does_not_desync_the_connection() {
    let server = Beanstalkd::start();
    let mut c = conn(&server).await;
    c.watch("cancel").await.unwrap();
    c.use_tube("cancel").await.unwrap();
    // Dropped while waiting: its reply could arrive later and be taken for the next one's.
    assert!(tokio::time::timeout(Duration::from_millis(100), c.reserve()).await.is_err());
    let id = c.put(0, 0, 60, b"after cancel").await.unwrap();
    let mut watched = c.list_tubes_watched().await.unwrap();
    watched.sort();
    assert_eq!(watched, vec!["cancel", "default"], "state replayed on the new connection");
    let job = c.reserve_with_timeout(1).await.unwrap().unwrap();
    assert_eq!((job.id, job.body.as_slice()), (id, &b"after cancel"[..]));
}

/// A server-wide counter from `stats`.
async fn server_stat(c: &mut Connection, key: &str) -> u64 {
    c.stats().await.unwrap()[key].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_shorter_than_a_second_blocks_on_the_server_instead_of_polling() {
    let server = Beanstalkd::start();
    let queue = BeanstalkdQueue::connect(&[server.addr()]).await.unwrap();
    let mut admin = conn(&server).await;
    let mut consumer = queue.consumer(&["short".to_owned()]).await.unwrap();
    let before = server_stat(&mut admin, "cmd-reserve-with-timeout").await;
    assert!(consumer.reserve(Duration::from_millis(600)).await.unwrap().is_none());
    let sent = server_stat(&mut admin, "cmd-reserve-with-timeout").await - before;
    assert!(sent <= 2, "one look and one wait, not a poll loop: {sent} reserve commands");

    // A job put while a short reserve is out goes to it, not to the next poll.
    let waiter = tokio::spawn(async move {
        let got = consumer.reserve(Duration::from_millis(900)).await.unwrap();
        (consumer, got)
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while server_stat(&mut admin, "current-waiting").await == 0 {
        assert!(Instant::now() < deadline, "the consumer never waited on the server");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let id = queue.put("short", b"now", opts(1, 0, 60)).await.unwrap();
    let (_consumer, got) = waiter.await.unwrap();
    assert_eq!(got.map(|j| j.id), Some(id));
}

#[tokio::test]
async fn a_job_that_comes_after_a_short_reserve_gave_up_goes_to_the_next_reserve() {
    let server = Beanstalkd::start();
    let queue = BeanstalkdQueue::connect(&[server.addr()]).await.unwrap();
    let tube = vec!["late".to_owned()];
    let mut a = queue.consumer(&tube).await.unwrap();
    let mut b = queue.consumer(&tube).await.unwrap();
    assert!(a.reserve(Duration::from_millis(50)).await.unwrap().is_none());
    // a's wait is still out on the server: the job goes to it, and is not lost.
    let id = queue.put("late", b"late", opts(1, 0, 60)).await.unwrap();
    assert_eq!(queue.job_state(id).await.unwrap(), Some(JobState::Reserved), "handed to the wait that is out");
    assert!(b.reserve(Duration::ZERO).await.unwrap().is_none());
    let got = a.reserve(Duration::from_secs(1)).await.unwrap().expect("the late job");
    assert_eq!((got.id, got.body.as_slice()), (id, &b"late"[..]));
    a.delete(id).await.unwrap();

    // Another command behind a wait that is out reads its reply first: the job it brings
    // is held and handed out by the next reserve.
    assert!(a.reserve(Duration::from_millis(50)).await.unwrap().is_none());
    let second = queue.put("late", b"second", opts(1, 0, 60)).await.unwrap();
    assert!(matches!(a.touch(id).await, Err(QueueError::NotFound(_))), "the deleted job is gone");
    let got = a.reserve(Duration::ZERO).await.unwrap().expect("the held job");
    assert_eq!(got.id, second);
    a.delete(second).await.unwrap();

    // A consumer dropped while its wait is out gives the late job back to the queue.
    assert!(a.reserve(Duration::from_millis(50)).await.unwrap().is_none());
    let third = queue.put("late", b"third", opts(1, 0, 60)).await.unwrap();
    drop(a);
    let got = b.reserve(Duration::from_secs(2)).await.unwrap().expect("released when a closed");
    assert_eq!(got.id, third);
}

// ---- hostile servers (a fake beanstalkd on loopback) ----

#[tokio::test]
async fn an_oversized_reply_is_refused_unread_and_the_connection_recovers() {
    // The first connection's reserve is answered with a 1 GiB body, 8 MiB of which is sent.
    let fake = HostileBeanstalkd::start(Hostile::Oversized { streamed: 8 << 20 }, 1);
    let mut c = conn_to(&fake.addr()).await;
    assert_eq!(c.max_job_size(), 65_535, "the bound is the server's max-job-size");
    let before = allocated_here();
    let started = Instant::now();
    let err = c.reserve_with_timeout(1).await.unwrap_err();
    let allocated = allocated_here() - before;
    let text = err.to_string();
    assert!(text.contains("1073741824") && text.contains("65535") && text.contains(&fake.addr()), "{text}");
    assert!(text.len() < 400, "the error quotes no payload: {} bytes", text.len());
    // Not a timeout: the line alone was enough, the body was never waited for.
    assert!(err.is_connection() && !matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < fast_opts().io_timeout, "{:?}", started.elapsed());
    assert!(allocated < 1 << 20, "{allocated} bytes allocated for a refused reply");
    assert!(!c.is_connected(), "the connection is closed");
    // The next connection serves a proper job.
    let job = reserve_when_back(&mut c).await;
    assert_eq!((job.id, job.body.as_slice()), (2, &b"hello"[..]));
    assert_eq!(fake.connections(), 2);
}

#[tokio::test]
async fn a_garbage_line_is_refused_with_a_short_error_and_the_connection_recovers() {
    let fake = HostileBeanstalkd::start(Hostile::GarbageLine, 1);
    let mut c = conn_to(&fake.addr()).await;
    let before = allocated_here();
    let err = c.reserve_with_timeout(1).await.unwrap_err();
    let allocated = allocated_here() - before;
    let text = err.to_string();
    assert!(text.contains("longer than 512 bytes") && text.contains("AAAA"), "{text}");
    assert!(text.len() < 400, "the error quotes a few hundred bytes at most: {} bytes", text.len());
    assert!(allocated < 1 << 20, "{allocated} bytes allocated for a refused line");
    let job = reserve_when_back(&mut c).await;
    assert_eq!(job.id, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_sending_bad_replies_is_retried_with_growing_delays() {
    // Two shards: a real, empty server and a fake one that answers every reserve with garbage.
    let good = Beanstalkd::start();
    let fake = HostileBeanstalkd::start(Hostile::GarbageLine, usize::MAX);
    let addrs = [good.addr(), fake.addr()];
    let opts =
        ConnectOptions { backoff_min: Duration::from_millis(200), backoff_max: Duration::from_secs(2), ..fast_opts() };
    let mut consumer =
        geyser::queue::beanstalkd::BeanstalkdConsumer::connect(&addrs, &["t".to_owned()], opts).await.unwrap();
    let opened = fake.connections();
    // Reserving for 2 s polls the fake server again and again. Each failed new connection
    // doubles the wait before the next one (200 ms, 400, 800, ...): reconnects at about
    // 0, 0.2, 0.6 and 1.4 s, four at most, not one per poll.
    assert!(consumer.reserve(Duration::from_secs(2)).await.unwrap().is_none());
    let reconnects = fake.connections() - opened;
    assert!((2..=4).contains(&reconnects), "{reconnects} reconnects in 2 s");
}

#[tokio::test]
async fn opening_with_every_server_down_is_one_error_and_logs_nothing() {
    capture_logs();
    let (a, b) = (closed_port(), closed_port());
    let err = BeanstalkdQueue::from_url(&format!("beanstalkd://{a}")).await.unwrap_err().to_string();
    assert!(err.contains(&a) && err.contains("refused"), "{err}");
    let err = BeanstalkdQueue::from_url(&format!("beanstalkd://{a},{b}")).await.unwrap_err().to_string();
    assert!(err.contains(&a) && err.contains(&b) && err.contains("no beanstalkd server answered"), "{err}");
    let tubes = ["t".to_owned()];
    let err = geyser::queue::beanstalkd::BeanstalkdConsumer::connect(std::slice::from_ref(&a), &tubes, fast_opts())
        .await
        .err()
        .expect("no consumer without a server")
        .to_string();
    assert!(err.contains(&a), "{err}");
    assert_eq!(warnings_about(&a), Vec::<String>::new(), "the error is the only report");
}

#[tokio::test]
async fn opening_with_one_server_down_warns_once_and_works() {
    capture_logs();
    let server = Beanstalkd::start();
    let down = closed_port();
    let queue = BeanstalkdQueue::from_url(&format!("beanstalkd://{},{down}", server.addr())).await.unwrap();
    let warned = warnings_about(&down);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("1 of 2 servers down") && warned[0].contains("shard 1"), "{}", warned[0]);
    let id = queue.put("t", b"x", opts(1, 0, 60)).await.unwrap();
    assert_eq!(id.shard, 0, "puts go to the server that is up");
}

#[tokio::test]
async fn a_configured_maximum_caps_the_servers() {
    let server = Beanstalkd::start();
    let queue = BeanstalkdQueue::from_url(&format!("beanstalkd://{}?max-job-size=100", server.addr())).await.unwrap();
    match queue.put("capped", &[0u8; 101], PutOptions::default()).await {
        Err(QueueError::JobTooBig { size: 101, limit: 100 }) => {}
        other => panic!("expected JobTooBig, got {other:?}"),
    }
    assert!(queue.put("capped", &[0u8; 100], PutOptions::default()).await.is_ok());
    let capped = ConnectOptions { max_job_size: Some(100), ..fast_opts() };
    let c = Connection::connect(&server.addr(), capped).await.unwrap();
    assert_eq!(c.max_job_size(), 100);
}

async fn conn_to(addr: &str) -> Connection {
    Connection::connect(addr, fast_opts()).await.expect("connect")
}

/// Reserves once the connection's backoff allows a new connection (within a few seconds).
async fn reserve_when_back(c: &mut Connection) -> geyser::queue::beanstalkd::connection::Job {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c.reserve_with_timeout(1).await {
            Ok(Some(job)) => return job,
            Ok(None) => panic!("the fake server always has a job"),
            Err(ClientError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    }
}

// ---- a worker across a server restart ----

/// A worker named `name` on `tube`, its heartbeat on `rt`.
fn worker(geyser: &geyser::client::Geyser, name: &str, tube: &str, rt: &tokio::runtime::Runtime) -> Worker {
    let config = WorkerConfig {
        name: name.to_owned(),
        tubes: vec![tube.to_owned()],
        progress_interval: Duration::from_millis(100),
        hard_stop_after: Duration::from_secs(60),
        job_types: None,
    };
    Worker::open(geyser.clone(), config, rt.handle()).expect("open a worker")
}

/// A runtime, and Geyser on `server` with a SQLite store in `dir`.
fn open_on(server: &Beanstalkd, dir: &std::path::Path) -> (tokio::runtime::Runtime, geyser::client::Geyser) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store_url = format!("sqlite://{}", dir.join("store.db").display());
    let queue_url = format!("beanstalkd://{}", server.addr());
    let geyser = rt.block_on(geyser::config::open(Some(&queue_url), Some(&store_url))).expect("open geyser");
    (rt, geyser)
}

fn next(w: &Worker, timeout: Duration) -> Option<Attempt> {
    w.block_on(w.next(timeout)).expect("reserve")
}

#[test]
fn a_restart_of_beanstalkd_does_not_make_a_live_workers_job_lost() {
    let dir = tempfile::tempdir().unwrap();
    let binlog = dir.path().join("binlog");
    std::fs::create_dir(&binlog).unwrap();
    let mut server = Beanstalkd::with_binlog(&binlog);
    let (rt, geyser) = open_on(&server, dir.path());
    let tube = "restart";
    let mut doc = support::store_contract::document("restart_job");
    doc.queue_kwargs.queue = tube.to_owned();
    doc.queue_kwargs.ttr = 2.0;
    let uuid = rt.block_on(geyser.enqueue(doc, 0.0)).expect("enqueue").uuid;

    let a = worker(&geyser, "a", tube, &rt);
    let attempt = next(&a, Duration::from_secs(5)).expect("worker a starts the job");
    // The server restarts from its binlog: the job it had reserved for `a` is ready again.
    server.restart();
    let b = worker(&geyser, "b", tube, &rt);
    let queue = &geyser.queue;
    // For three TTRs `b` keeps reserving the entry and must leave it be: `a` is alive.
    let until = Instant::now() + Duration::from_secs(6);
    let mut looked = 0;
    while Instant::now() < until {
        if let Some(second) = next(&b, Duration::from_secs(1)) {
            panic!("a second attempt started while the first runs: {:?}", second.doc.errors);
        }
        let stats = rt.block_on(queue.stats_tube(tube)).unwrap();
        looked += usize::from(stats.delayed == 1);
    }
    assert!(looked > 0, "b reserved the entry and released it with a delay");
    let running = rt.block_on(geyser.get(&uuid)).unwrap().unwrap();
    assert_eq!((running.status, running.attempts), (geyser::model::Status::Running, 1));
    assert!(running.heartbeat_at > running.started_at, "a's heartbeat stamps the document");

    // `a` finishes: its write is accepted, and the entry left over is deleted when next reserved.
    let job = attempt.doc.clone();
    let done = a.block_on(attempt.finish(job, Outcome::Succeeded)).expect("a's outcome is saved");
    assert_eq!(done.status, geyser::model::Status::Succeeded);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(next(&b, Duration::from_secs(1)).is_none(), "the job is finished");
        let stats = rt.block_on(queue.stats_tube(tube)).unwrap();
        if stats.ready + stats.delayed + stats.reserved == 0 {
            break;
        }
        assert!(Instant::now() < until, "the left-over entry is still there: {stats:?}");
    }
    let _ = a.block_on(a.close());
    let done = rt.block_on(geyser.get(&uuid)).unwrap().unwrap();
    assert_eq!((done.status, done.attempts, done.failures), (geyser::model::Status::Succeeded, 1, 0));
    assert!(done.errors.is_empty(), "no worker-lost error: {:?}", done.errors);
}

#[test]
fn a_dead_workers_job_is_still_recovered_within_about_one_ttr() {
    let dir = tempfile::tempdir().unwrap();
    let server = Beanstalkd::start();
    let (rt, geyser) = open_on(&server, dir.path());
    let tube = "dead";
    let mut doc = support::store_contract::document("dead_job");
    doc.queue_kwargs.queue = tube.to_owned();
    doc.queue_kwargs.ttr = 2.0;
    rt.block_on(geyser.enqueue(doc, 0.0)).expect("enqueue");
    let a = worker(&geyser, "a", tube, &rt);
    let attempt = next(&a, Duration::from_secs(5)).expect("worker a starts the job");
    // `a` dies: its connection closes (the entry is ready at once) and its heartbeat stops.
    let died = Instant::now();
    drop(attempt);
    drop(a);
    let b = worker(&geyser, "b", tube, &rt);
    let until = died + Duration::from_secs(10);
    let second = loop {
        if let Some(second) = next(&b, Duration::from_secs(1)) {
            break second;
        }
        assert!(Instant::now() < until, "the job of a dead worker was not recovered");
    };
    let waited = died.elapsed();
    assert!(waited < Duration::from_secs(5), "recovered after {waited:?}, TTR is 2 s");
    assert_eq!(second.doc.attempts, 2);
    assert_eq!(second.doc.errors[0].error_code, serde_json::Value::from("worker-lost"));
}

#[test]
fn finishing_with_prefetch_starts_the_next_job_on_the_way_and_close_hands_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Beanstalkd::start();
    let (rt, geyser) = open_on(&server, dir.path());
    let tube = "prefetch";
    let mut uuids = HashSet::new();
    for _ in 0..3 {
        let mut doc = support::store_contract::document("prefetch_job");
        doc.queue_kwargs.queue = tube.to_owned();
        uuids.insert(rt.block_on(geyser.enqueue(doc, 0.0)).expect("enqueue").uuid);
    }
    assert_eq!(rt.block_on(geyser.flush(Duration::from_secs(10))), 0, "every entry is put");
    let get = |uuid: &str| rt.block_on(geyser.get(uuid)).unwrap().unwrap();
    let running = |uuids: &HashSet<String>| -> Vec<String> {
        uuids.iter().filter(|u| get(u).status == geyser::model::Status::Running).cloned().collect()
    };
    let w = worker(&geyser, "w", tube, &rt);
    w.set_prefetch(true);

    let mut attempt = next(&w, Duration::from_secs(5)).expect("the first job starts");
    for ran in 1..=2 {
        let uuid = attempt.doc.uuid.clone();
        uuids.remove(&uuid);
        let job = attempt.doc.clone();
        let done = w.block_on(w.finish(attempt, job, Outcome::Succeeded)).expect("the outcome is saved");
        // Saved when `finish` returns, and the next job was started with it, before it runs.
        assert_eq!(
            (done.status, get(&uuid).status),
            (geyser::model::Status::Succeeded, geyser::model::Status::Succeeded)
        );
        let started = running(&uuids);
        assert_eq!(started.len(), 1, "after job {ran}, one more job started: {started:?}");
        assert_eq!((get(&started[0]).attempts, get(&started[0]).worker.as_deref()), (1, Some("w")));
        attempt = next(&w, Duration::ZERO).expect("`next` returns the job started on the way");
        assert_eq!(attempt.doc.uuid, started[0]);
    }
    // The last one was asked for by `next`; finishing it with nothing ready starts nothing.
    let last = attempt.doc.uuid.clone();
    let job = attempt.doc.clone();
    w.block_on(w.finish(attempt, job, Outcome::Succeeded)).expect("the outcome is saved");
    assert_eq!(get(&last).status, geyser::model::Status::Succeeded);
    assert!(next(&w, Duration::ZERO).is_none(), "the queue is empty");
    w.block_on(w.close()).expect("close");
    let stats = rt.block_on(geyser.queue.stats_tube(tube)).unwrap();
    assert_eq!((stats.ready, stats.reserved, stats.delayed, stats.buried), (0, 0, 0, 0), "every entry is deleted");

    // A job started on the way that `next` never asks for is handed back by `close`:
    // queued again, its attempt not counted, its entry ready for another worker.
    let mut uuids = HashSet::new();
    for _ in 0..2 {
        let mut doc = support::store_contract::document("prefetch_job");
        doc.queue_kwargs.queue = tube.to_owned();
        uuids.insert(rt.block_on(geyser.enqueue(doc, 0.0)).expect("enqueue").uuid);
    }
    assert_eq!(rt.block_on(geyser.flush(Duration::from_secs(10))), 0, "every entry is put");
    let w = worker(&geyser, "w2", tube, &rt);
    w.set_prefetch(true);
    let attempt = next(&w, Duration::from_secs(5)).expect("a job starts");
    uuids.remove(&attempt.doc.uuid);
    let job = attempt.doc.clone();
    w.block_on(w.finish(attempt, job, Outcome::Succeeded)).expect("the outcome is saved");
    let started = running(&uuids);
    assert_eq!(started.len(), 1, "the other job started on the way");
    w.block_on(w.close()).expect("close");
    let back = get(&started[0]);
    assert_eq!((back.status, back.attempts), (geyser::model::Status::Queued, 0));
    let stats = rt.block_on(geyser.queue.stats_tube(tube)).unwrap();
    assert_eq!((stats.ready, stats.reserved), (1, 0), "its entry is ready again");
}
