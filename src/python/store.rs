//! `geyser._core.copy_store` (and `redact_url`): the binding of `store::copy` for
//! `python -m geyser.store copy`.
//! Opens both stores by URL, runs the copy with the GIL released, and takes the GIL back only
//! to hand each page's progress and each problem to a Python callback. Pending signals are
//! checked before each call, so Ctrl-C (or a callback that raises) stops the copy and the
//! exception reaches the caller. Converts types only; the copy itself lives in `store/copy.rs`.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::client::wait;
use super::errors::config_err;
use crate::config;
use crate::store::copy::{copy_documents, CopyEvent, CopyOptions, Progress, DEFAULT_PAGE_SIZE};

/// Registers this file's functions in the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(copy_store, m)?)?;
    m.add_function(wrap_pyfunction!(redact_url, m)?)
}

/// `url` with any password replaced by `***`, for printing.
#[pyfunction]
pub fn redact_url(url: &str) -> String {
    crate::drivers::redact(url)
}

/// The counts, the resume point and the rate, as a dict.
fn progress_dict<'py>(py: Python<'py>, progress: &Progress) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("read", progress.read)?;
    d.set_item("copied", progress.copied)?;
    d.set_item("skipped", progress.skipped)?;
    d.set_item("conflicting", progress.conflicting)?;
    d.set_item("unreadable", progress.unreadable)?;
    d.set_item("refused", progress.refused)?;
    d.set_item("last_uuid", progress.last_uuid.as_deref())?;
    d.set_item("elapsed", progress.elapsed.as_secs_f64())?;
    d.set_item("rate", progress.rate())?;
    Ok(d)
}

/// An event as the dict the callback gets: `event` is "page" (with the progress) or
/// "problem" (with `uuid`, `kind` and `reason`).
fn event_dict<'py>(py: Python<'py>, event: &CopyEvent<'_>) -> PyResult<Bound<'py, PyDict>> {
    match event {
        CopyEvent::Page(progress) => {
            let d = progress_dict(py, progress)?;
            d.set_item("event", "page")?;
            Ok(d)
        }
        CopyEvent::Problem { uuid, kind, reason } => {
            let d = PyDict::new(py);
            d.set_item("event", "problem")?;
            d.set_item("uuid", *uuid)?;
            d.set_item("kind", kind.as_str())?;
            d.set_item("reason", *reason)?;
            Ok(d)
        }
    }
}

/// Copies every job document from the store at `from_url` to the store at `to_url` (see
/// `store/copy.rs`), calling `report(event)` after each page and for each document not
/// copied. Returns the final progress, with `error` set (and the copy stopped) when a store
/// failed; an exception of `report`, or a pending signal, stops the copy and is raised.
#[pyfunction]
#[pyo3(signature = (from_url, to_url, report, after=None, page_size=DEFAULT_PAGE_SIZE, overwrite=false))]
pub fn copy_store<'py>(
    py: Python<'py>,
    from_url: String,
    to_url: String,
    report: Py<PyAny>,
    after: Option<String>,
    page_size: usize,
    overwrite: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let from = wait(py, config::open_store(Some(&from_url))).map_err(config_err)?;
    let to = wait(py, config::open_store(Some(&to_url))).map_err(config_err)?;
    let options = CopyOptions { after, page_size, overwrite };
    let mut raised: Option<PyErr> = None;
    let mut on_event = |event: CopyEvent<'_>| {
        let called = Python::attach(|py| {
            py.check_signals()?;
            report.call1(py, (event_dict(py, &event)?,)).map(drop)
        });
        match called {
            Ok(()) => true,
            Err(e) => {
                raised = Some(e);
                false
            }
        }
    };
    let result = wait(py, copy_documents(from, to, &options, &mut on_event));
    if let Some(e) = raised {
        return Err(e);
    }
    match result {
        Ok(progress) => {
            let d = progress_dict(py, &progress)?;
            d.set_item("error", py.None())?;
            Ok(d)
        }
        Err(e) => {
            let d = progress_dict(py, e.progress())?;
            d.set_item("error", e.to_string())?;
            Ok(d)
        }
    }
}
