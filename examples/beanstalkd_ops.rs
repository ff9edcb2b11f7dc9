//! Throughput of our beanstalkd client against one server: sequential put,
//! pipelined put (batches of 100), reserve+delete. Prints ops/s, one line
//! each, for the Python benchmark that compares with greenstalk.
//! Touches only the tube it is given (default `geyser-bench`), which it empties.
//!
//! Usage: cargo run --release --example beanstalkd_ops -- [ADDR] [N] [TUBE]
//! (defaults 127.0.0.1:11300, 20000, geyser-bench)

use std::time::{Duration, Instant};

use geyser::queue::beanstalkd::connection::{ClientError, ConnectOptions, Connection, PutJob};

const BATCH: usize = 100;
const BODY: &[u8] = b"{\"uuid\": \"00000000-0000-0000-0000-000000000000\"}";

fn report(name: &str, n: usize, took: Duration) {
    let rate = n as f64 / took.as_secs_f64().max(1e-9);
    println!("{name:<16} n={n:<8} {:>10.3} s {rate:>12.0} ops/s", took.as_secs_f64());
}

async fn sequential_put(c: &mut Connection, n: usize) -> Result<Duration, ClientError> {
    let start = Instant::now();
    for _ in 0..n {
        c.put(1024, 0, 60, BODY).await?;
    }
    Ok(start.elapsed())
}

async fn pipelined_put(c: &mut Connection, n: usize) -> Result<Duration, ClientError> {
    let start = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        let jobs = vec![PutJob { pri: 1024, delay: 0, ttr: 60, body: BODY }; k];
        for result in c.put_pipelined(&jobs).await? {
            result?;
        }
        left -= k;
    }
    Ok(start.elapsed())
}

async fn reserve_delete(c: &mut Connection, n: usize) -> Result<Duration, ClientError> {
    let start = Instant::now();
    for _ in 0..n {
        let Some(job) = c.reserve_with_timeout(0).await? else { break };
        c.delete(job.id).await?;
    }
    Ok(start.elapsed())
}

/// Deletes whatever is left in the tube, so runs do not add up.
async fn drain(c: &mut Connection) -> Result<(), ClientError> {
    while let Some(job) = c.reserve_with_timeout(0).await? {
        c.delete(job.id).await?;
    }
    Ok(())
}

async fn run(addr: &str, n: usize, tube: &str) -> Result<(), ClientError> {
    let mut c = Connection::connect(addr, ConnectOptions::default()).await?;
    c.use_tube(tube).await?;
    c.watch(tube).await?;
    c.ignore("default").await?;
    drain(&mut c).await?;

    report("put", n, sequential_put(&mut c, n).await?);
    report("put-pipelined", n, pipelined_put(&mut c, n).await?);
    report("reserve+delete", 2 * n, reserve_delete(&mut c, 2 * n).await?);
    drain(&mut c).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.first().cloned().unwrap_or_else(|| "127.0.0.1:11300".to_owned());
    let n = match args.get(1).map(|s| s.parse::<usize>()) {
        None => 20_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("N must be a positive integer");
            std::process::exit(2);
        }
    };
    let tube = args.get(2).cloned().unwrap_or_else(|| "geyser-bench".to_owned());
    if let Err(e) = run(&addr, n, &tube).await {
        eprintln!("beanstalkd_ops: {e}");
        std::process::exit(1);
    }
}
