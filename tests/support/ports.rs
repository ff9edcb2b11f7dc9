//! Loopback ports for servers a test starts as child processes (beanstalkd, redis-server, a
//! TLS-fronted server). Such a port is chosen, then bound by the child a moment later; a
//! port from the kernel's ephemeral range (`bind(":0")`) could be handed to another test
//! process, or used as the source port of an outgoing connection, in between. So each test
//! process takes ports from its own block below that range: nextest's slot number (one per
//! test running at once) picks the block, and a probe bind skips a port still in use.
//! Touches nothing but loopback sockets it closes at once.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// The blocks start here and end below 32768, where Linux's ephemeral range begins. (The
/// Python tests use 20000 and up; the two suites never run at the same time anyway.)
const FIRST_PORT: u16 = 10000;
/// Ports per block: enough for every server one test process starts.
const BLOCK: u16 = 500;
/// Blocks: more than the tests nextest runs at once on any machine we use.
const BLOCKS: u16 = 20;

/// A loopback port no other test process picks, free right now.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let slot = std::env::var("NEXTEST_TEST_GLOBAL_SLOT").ok().and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
    let base = FIRST_PORT + (slot % BLOCKS) * BLOCK;
    // Start where this process's id points, so consecutive tests in one slot do not reuse a
    // port straight away.
    let start = (std::process::id() % u32::from(BLOCK)) as u16;
    for _ in 0..BLOCK {
        let port = base + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % BLOCK;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {base}..{}", base + BLOCK);
}
