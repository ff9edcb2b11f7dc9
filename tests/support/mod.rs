//! Shared test support: the contract suites every queue and store backend must pass,
//! and a real beanstalkd server for the tests that need one.
//! Each test binary uses only the parts for its own backend, hence the dead_code allowance.
#![allow(dead_code)]

pub mod beanstalkd;
pub mod lanes;
pub mod ports;
pub mod queue_contract;
pub mod store_contract;
