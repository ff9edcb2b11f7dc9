//! The PyO3 module `geyser._core`: thin bindings over the client and the worker.
//! Everything here converts types and releases the GIL; the logic lives elsewhere.

mod awaitable;
mod client;
mod errors;
mod store;
mod worker;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Rust `log` records go to Python's `logging`, under the logger names of their modules.
    let _ = pyo3_log::try_init();
    let py = m.py();
    m.add_class::<client::PyClient>()?;
    m.add_class::<worker::PyWorker>()?;
    m.add_class::<worker::PyAttempt>()?;
    m.add_function(wrap_pyfunction!(client::new_uuid, m)?)?;
    m.add_function(wrap_pyfunction!(client::pending, m)?)?;
    m.add_function(wrap_pyfunction!(client::unnoted, m)?)?;
    m.add_function(wrap_pyfunction!(client::flush, m)?)?;
    m.add_function(wrap_pyfunction!(client::flush_async, m)?)?;
    m.add_function(wrap_pyfunction!(worker::sweep, m)?)?;
    m.add_function(wrap_pyfunction!(worker::release_maintenance_lease, m)?)?;
    m.add_function(wrap_pyfunction!(worker::record_crash, m)?)?;
    store::register(m)?;
    m.add("GeyserError", py.get_type::<errors::GeyserError>())?;
    m.add("ConfigError", py.get_type::<errors::ConfigError>())?;
    m.add("ConflictError", py.get_type::<errors::ConflictError>())?;
    m.add("JobNotFound", py.get_type::<errors::JobNotFound>())?;
    m.add("BackendError", py.get_type::<errors::BackendError>())?;
    m.add("StoreUnavailable", py.get_type::<errors::StoreUnavailable>())?;
    m.add("QueueUnavailable", py.get_type::<errors::QueueUnavailable>())?;
    m.add("InvalidDocument", py.get_type::<errors::InvalidDocument>())?;
    m.add("InvalidTransition", py.get_type::<errors::InvalidTransition>())?;
    m.add("default_sqlite_path", crate::config::default_sqlite_path())?;
    Ok(())
}
