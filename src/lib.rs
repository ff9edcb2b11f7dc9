//! Geyser's engine: the job model, queue and store backends, the worker loop,
//! and the thin PyO3 bindings that the `geyser` Python package calls.

pub mod model;
pub mod queue;
pub mod store;
pub mod config;
pub mod client;
pub mod worker;
pub mod maintenance;
mod python;
