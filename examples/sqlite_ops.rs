//! Prints operations per second of the embedded SQLite queue and store, one task at a time,
//! on a temp file: `cargo run --release --example sqlite_ops [N]` (N defaults to 20000).
//! Touches nothing but its own temp folder.

use std::future::Future;
use std::time::{Duration, Instant};

use geyser::model::JobDocument;
use geyser::queue::sqlite::SqliteQueue;
use geyser::queue::{PutOptions, Queue};
use geyser::store::sqlite::SqliteStore;
use geyser::store::Store;

type Error = Box<dyn std::error::Error>;

/// Runs `op(i)` for i in 0..n one after another and prints the rate.
async fn measure<F, Fut>(label: &str, n: usize, mut op: F) -> Result<(), Error>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let start = Instant::now();
    for i in 0..n {
        op(i).await?;
    }
    report(label, n, start);
    Ok(())
}

fn report(label: &str, n: usize, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!("{label:<24} {:>10.0} ops/s  ({n} in {secs:.3} s)", n as f64 / secs);
}

fn document(i: usize) -> Result<JobDocument, Error> {
    let raw = serde_json::json!({
        "jobType": "bench", "createdAt": 1.0, "updatedAt": 1.0, "uuid": format!("{i:08}-bench"),
        "queueKwargs": {"queue": "bench", "priority": 10, "ttr": 30.0},
        "status": "queued", "maxRetries": 3, "fieldOne": "hello"
    });
    Ok(serde_json::from_value(raw)?)
}

async fn queue_ops(path: &std::path::Path, n: usize) -> Result<(), Error> {
    let queue = SqliteQueue::open(path)?;
    let body = uuid::Uuid::new_v4().to_string().into_bytes();
    let opts = PutOptions { ttr: Duration::from_secs(60), ..PutOptions::default() };
    measure("queue put", n, |_| async { Ok(queue.put("bench", &body, opts).await.map(drop)?) }).await?;
    // A consumer is used by one task at a time (`&mut`), so this loop is written out.
    let mut consumer = queue.consumer(&["bench".to_owned()]).await?;
    let start = Instant::now();
    for _ in 0..n {
        let job = consumer.reserve(Duration::ZERO).await?.ok_or("queue ran dry")?;
        consumer.delete(job.id).await?;
    }
    report("queue reserve+delete", n, start);
    concurrent_puts(&queue, n, 8).await
}

/// The same puts from `tasks` tasks at once, as a web server enqueuing for many clients does.
async fn concurrent_puts(queue: &SqliteQueue, n: usize, tasks: usize) -> Result<(), Error> {
    let start = Instant::now();
    let mut running = Vec::new();
    for _ in 0..tasks {
        let queue = queue.clone();
        running.push(tokio::spawn(async move {
            for _ in 0..n / tasks {
                queue.put("bench-concurrent", b"x", PutOptions::default()).await?;
            }
            Ok::<_, geyser::queue::QueueError>(())
        }));
    }
    for task in running {
        task.await??;
    }
    report(&format!("queue put, {tasks} tasks"), n / tasks * tasks, start);
    Ok(())
}

async fn store_ops(path: &std::path::Path, n: usize) -> Result<(), Error> {
    let store = SqliteStore::open(path)?;
    let docs = (0..n).map(document).collect::<Result<Vec<_>, _>>()?;
    let store = &store;
    measure("store create", n, |i| {
        let doc = &docs[i];
        async move { Ok(store.create(doc).await.map(drop)?) }
    })
    .await?;
    measure("store get", n, |i| {
        let uuid = &docs[i].uuid;
        async move { Ok(store.get(uuid).await?.map(drop).ok_or("document missing")?) }
    })
    .await?;
    measure("store update", n, |i| {
        let doc = JobDocument { version: 1, completeness: 0.5, ..docs[i].clone() };
        async move { Ok(store.update(&doc).await.map(drop)?) }
    })
    .await
}

/// Runs on a runtime worker thread, as the engine's own tasks do.
#[tokio::main]
async fn main() -> Result<(), Error> {
    tokio::spawn(async { run().await.map_err(|e| e.to_string()) }).await??;
    Ok(())
}

async fn run() -> Result<(), Error> {
    let n = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| format!("N must be a count, not {arg:?}: {e}"))?,
        None => 20_000,
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("geyser.db");
    queue_ops(&path, n).await?;
    store_ops(&path, n).await
}
