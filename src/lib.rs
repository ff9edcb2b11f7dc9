//! Geyser's engine: the job model, queue and store backends, the worker loop,
//! and the thin PyO3 bindings that the `geyser` Python package calls.

pub mod client;
pub mod config;
pub mod enqueue;
pub mod maintenance;
pub mod model;
pub mod queue;
pub mod store;
pub mod worker;

mod python;
mod sqlite_conn;
