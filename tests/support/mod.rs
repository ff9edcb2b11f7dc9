//! Shared test support: the contract suites every queue and store backend must pass.
//! Each test binary uses only the parts for its own backend, hence the dead_code allowance.
#![allow(dead_code)]

pub mod queue_contract;
pub mod store_contract;
