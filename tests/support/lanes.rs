//! For tests of store calls in a lane (`geyser::blocking::Lane`): the runtime a Python
//! process shares, where a store is opened, beside a lane like a Python caller's thread or a
//! worker's; and a way to hold every thread of that runtime while the lane calls. Touches
//! nothing but the runtimes it makes.

use std::sync::mpsc;

use geyser::blocking::Lane;
use tokio::runtime::Runtime;

pub fn home_and_lane(worker_threads: usize) -> (Runtime, Lane) {
    let home = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .expect("a runtime");
    (home, Lane::new().expect("a lane"))
}

/// Holds the only thread of `home` (made with one worker thread) until the returned sender
/// is sent to or dropped; returns once the thread is held.
pub fn hold_the_thread(home: &Runtime) -> mpsc::Sender<()> {
    let (release, held) = mpsc::channel::<()>();
    let (holding, started) = mpsc::channel::<()>();
    home.spawn(async move {
        let _ = holding.send(());
        let _ = held.recv();
    });
    started.recv().expect("the home thread is held");
    release
}
