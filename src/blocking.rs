//! Driving an engine future from a thread that only waits for it (a Python caller with the
//! GIL released, a CLI). Backends whose calls block (the embedded SQLite file) may run them
//! on that waiting thread instead of their own, saving two thread switches per operation;
//! callers need not know which backend that is.

use std::future::Future;

use tokio::runtime::Runtime;

/// Run `fut` to completion on `runtime`, driven by this (otherwise idle) thread.
pub fn block_on<F: Future>(runtime: &Runtime, fut: F) -> F::Output {
    crate::sqlite_conn::inline_on_this_thread(|| runtime.block_on(fut))
}
