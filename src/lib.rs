//! Geyser's engine: the job model, queue and store backends (chosen by URL through the
//! driver registry), the worker loop, and, with the `python` feature, the thin PyO3
//! bindings that the `geyser` Python package calls.

pub mod blocking;
pub mod client;
pub mod config;
pub mod drivers;
pub mod enqueue;
pub mod maintenance;
pub mod model;
pub mod queue;
pub mod store;
pub mod worker;

#[cfg(feature = "python")]
mod python;
mod sqlite_conn;
