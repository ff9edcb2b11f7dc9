//! `geyser._core.Worker`, `Attempt` and `sweep`: the Python worker loop reserves through these;
//! Rust keeps the reservation alive and applies outcomes. The GIL is released while waiting.

use std::future::Future;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;

use super::client::{parse_doc, wait, PyClient};
use super::errors::{client_err, json_err, store_err, sweep_err, worker_err, InvalidDocument};
use crate::client::secs;
use crate::worker::crash::{record_crash as record_crash_on, CrashError};
use crate::worker::{Attempt, Outcome, Worker, WorkerConfig};

#[pyclass(frozen, name = "Worker", module = "geyser._core")]
pub struct PyWorker {
    inner: Arc<Worker>,
}

#[pymethods]
impl PyWorker {
    #[new]
    /// `job_types`: the types this worker can run (None: any); entries of other types
    /// are released for a worker that knows them, and buried after a bounded number of tries.
    #[pyo3(signature = (client, queues, name, progress_interval=1.0, hard_stop_after=20.0, job_types=None))]
    fn new(
        py: Python<'_>,
        client: &PyClient,
        queues: Vec<String>,
        name: String,
        progress_interval: f64,
        hard_stop_after: f64,
        job_types: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let config = WorkerConfig {
            name,
            tubes: queues,
            progress_interval: secs(progress_interval),
            hard_stop_after: secs(hard_stop_after),
            job_types: job_types.map(|t| Arc::new(t.into_iter().collect())),
        };
        let heartbeat_on = pyo3_async_runtimes::tokio::get_runtime().handle();
        let worker = py.detach(|| Worker::open(client.geyser.clone(), config, heartbeat_on)).map_err(worker_err)?;
        Ok(Self { inner: Arc::new(worker) })
    }

    /// The next job to run, or None after `timeout` seconds with nothing to do.
    fn next(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<PyAttempt>> {
        let worker = &self.inner;
        let attempt = drive(py, worker, worker.next(secs(timeout))).map_err(worker_err)?;
        attempt.map(|a| PyAttempt::new(a, worker.clone())).transpose()
    }

    /// Whether finishing a job also reserves and starts the next one, writing both documents
    /// in one store call (off for a new worker). Turn it off before the worker stops
    /// reserving: a job started that way and never asked for by `next` is handed back by `close`.
    fn set_prefetch(&self, on: bool) {
        self.inner.set_prefetch(on);
    }

    /// Settle what the last job left to do on the queue; call before the worker stops.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        drive(py, &self.inner, self.inner.close()).map_err(worker_err)
    }

    /// True when the worker's queues hold no job it can run, ready or delayed, and none
    /// reserved (for `--burst`: a process running a job may yet die and give it back, so a
    /// burst worker waits for it). Entries of job types it does not know are not waited for.
    fn queues_idle(&self, py: Python<'_>, client: &PyClient) -> PyResult<bool> {
        let tubes = self.inner.tubes().to_vec();
        let job_types = self.inner.job_types();
        let geyser = client.geyser.clone();
        let backlog = wait(py, async move { geyser.backlog(&tubes, job_types.as_deref()).await });
        let backlog = backlog.map_err(client_err)?;
        Ok(backlog.runnable() == 0 && backlog.reserved == 0)
    }
}

/// Run `fut` on a worker's runtime, driven by this thread with the GIL released (see
/// `blocking.rs`).
fn drive<F>(py: Python<'_>, worker: &Worker, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    py.detach(|| worker.block_on(fut))
}

/// One job held by this worker; `finish` ends it exactly once.
#[pyclass(frozen, name = "Attempt", module = "geyser._core")]
pub struct PyAttempt {
    inner: Mutex<Option<Attempt>>,
    /// The worker, whose runtime `finish` drives (held here so that it is never dropped
    /// inside one of its own calls) and which may start its next job on the way.
    worker: Arc<Worker>,
    #[pyo3(get)]
    document: String,
    #[pyo3(get)]
    job_type: String,
    #[pyo3(get)]
    uuid: String,
}

impl PyAttempt {
    fn new(attempt: Attempt, worker: Arc<Worker>) -> PyResult<Self> {
        let document = String::from_utf8(attempt.doc.to_json()).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(Self {
            job_type: attempt.doc.job_type.clone(),
            uuid: attempt.doc.uuid.clone(),
            document,
            inner: Mutex::new(Some(attempt)),
            worker,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Attempt) -> T) -> PyResult<T> {
        let guard = self.inner.lock().map_err(|_| PyRuntimeError::new_err("attempt lock poisoned"))?;
        guard
            .as_ref()
            .map(f)
            .ok_or_else(|| PyRuntimeError::new_err(format!("job {}: attempt already finished", self.uuid)))
    }
}

fn outcome_from(
    kind: &str,
    at: Option<f64>,
    code_json: Option<&str>,
    msg: Option<String>,
    traceback: Option<String>,
) -> PyResult<Outcome> {
    let code = match code_json {
        Some(c) => serde_json::from_str(c).map_err(|e| json_err("bad error code", e))?,
        None => Value::Null,
    };
    let msg = msg.unwrap_or_default();
    Ok(match kind {
        "succeeded" => Outcome::Succeeded,
        "requeue" => Outcome::Requeue { at: at.unwrap_or_else(crate::model::now) },
        "finish" => Outcome::Finish { code, msg },
        "continue" => Outcome::Continue { code, msg, traceback },
        "reject" => Outcome::Reject { code, msg },
        "cancelled" => Outcome::Cancelled,
        "hand_back" => Outcome::HandBack,
        other => return Err(pyo3::exceptions::PyValueError::new_err(format!("unknown outcome {other:?}"))),
    })
}

#[pymethods]
impl PyAttempt {
    /// Report the job's latest document; saved within one progress interval.
    fn progress(&self, doc_json: &str) -> PyResult<()> {
        let doc = parse_doc(doc_json)?;
        self.with(|a| a.progress(doc))?.map_err(|e| InvalidDocument::new_err(e.to_string()))
    }

    #[getter]
    fn cancel_requested(&self) -> PyResult<bool> {
        self.with(|a| a.cancel_requested())
    }

    #[getter]
    fn lost(&self) -> PyResult<bool> {
        self.with(|a| a.is_lost())
    }

    /// End the attempt: save the final document, then settle the queue entry; returns the
    /// job's status as saved ("queued" when it will run again).
    #[pyo3(signature = (doc_json, outcome, at=None, code_json=None, msg=None, traceback=None))]
    #[allow(clippy::too_many_arguments)] // one per keyword argument of the Python method
    fn finish(
        &self,
        py: Python<'_>,
        doc_json: &str,
        outcome: &str,
        at: Option<f64>,
        code_json: Option<&str>,
        msg: Option<String>,
        traceback: Option<String>,
    ) -> PyResult<&'static str> {
        let doc = parse_doc(doc_json)?;
        let outcome = outcome_from(outcome, at, code_json, msg, traceback)?;
        let attempt = self
            .inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("attempt lock poisoned"))?
            .take()
            .ok_or_else(|| PyRuntimeError::new_err(format!("job {}: attempt already finished", self.uuid)))?;
        let worker = &self.worker;
        let saved = drive(py, worker, worker.finish(attempt, doc, outcome)).map_err(worker_err)?;
        Ok(saved.status.as_str())
    }
}

/// Run the maintenance sweep once, as `holder` of the maintenance lease (taken or renewed
/// for `lease_ttl` seconds; given up afterwards with `release`), or without the lease with
/// `force`. Returns the report: `leader` (false: another process, `holder`, leads and
/// nothing was done), `lease_lost`, the counts `requeued`, `recovered`, `purged`,
/// `unreadable`, `skipped`, `errors`, and the first `problems` as logged.
#[pyfunction]
#[pyo3(signature = (
    client,
    holder,
    min_age=crate::maintenance::DEFAULT_MIN_AGE,
    lease_ttl=crate::maintenance::DEFAULT_LEASE_TTL,
    force=false,
    release=false,
))]
pub fn sweep<'py>(
    py: Python<'py>,
    client: &PyClient,
    holder: String,
    min_age: f64,
    lease_ttl: f64,
    force: bool,
    release: bool,
) -> PyResult<Bound<'py, PyDict>> {
    use crate::maintenance::{LeaseTerms, Service};
    let terms = LeaseTerms { holder, ttl: lease_ttl, release_after: release };
    let lease = (!force).then_some(&terms);
    let report = wait(py, Service::sweep(min_age).run(&client.geyser, lease)).map_err(sweep_err)?;
    let d = PyDict::new(py);
    d.set_item("leader", report.leader)?;
    d.set_item("holder", report.holder)?;
    d.set_item("lease_lost", report.lease_lost)?;
    d.set_item("requeued", report.requeued)?;
    d.set_item("recovered", report.recovered)?;
    d.set_item("purged", report.purged)?;
    d.set_item("unreadable", report.unreadable)?;
    d.set_item("skipped", report.skipped)?;
    d.set_item("errors", report.errors)?;
    d.set_item("problems", report.problems)?;
    Ok(d)
}

/// Give up the maintenance lease if `holder` holds it; returns whether it did.
#[pyfunction]
pub fn release_maintenance_lease(py: Python<'_>, client: &PyClient, holder: String) -> PyResult<bool> {
    wait(py, crate::maintenance::release_lease(&client.geyser, &holder)).map_err(sweep_err)
}

/// Record on job `uuid` that its attempt number `attempt` (fencing token `fence`) ended
/// because its worker process died, as `reason` says (the supervisor saw the exit status).
/// Returns what was done: "retrying", "failed", "amended" (a worker had recorded the
/// attempt as lost already; that record now names the cause), "unchanged" or "missing".
#[pyfunction]
pub fn record_crash(
    py: Python<'_>,
    client: &PyClient,
    uuid: String,
    fence: String,
    attempt: u32,
    reason: String,
) -> PyResult<&'static str> {
    let store = client.geyser.store.clone();
    let done = wait(py, async move { record_crash_on(&store, &uuid, &fence, attempt, &reason).await });
    match done {
        Ok(record) => Ok(record.as_str()),
        Err(e @ CrashError::Transition { .. }) => Err(InvalidDocument::new_err(e.to_string())),
        Err(CrashError::Store { uuid, attempt, source }) => {
            let err = store_err(source);
            let msg = format!("recording the crash of job {uuid}'s attempt {attempt}: {}", err.value(py));
            Err(PyErr::from_type(err.get_type(py), msg))
        }
    }
}
