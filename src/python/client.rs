//! `geyser._core.Client`: the producer/reader API for Python, sync (GIL released while
//! waiting) and async (awaitables on the shared tokio runtime). Documents cross as JSON text.

use std::future::Future;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::awaitable;
use super::errors::{client_err, config_err, json_err};
use crate::client::{secs, ClientResult, Geyser};
use crate::config;
use crate::model::{JobDocument, Status};
use crate::queue::TubeStats;
use crate::store::{ListFilter, Page, WorkerRecord};

/// Run a future on the shared runtime with the GIL released; this thread only waits
/// (see `blocking.rs`).
pub fn wait<F: Future + Send>(py: Python<'_>, fut: F) -> F::Output
where
    F::Output: Send,
{
    py.detach(|| crate::blocking::block_on(pyo3_async_runtimes::tokio::get_runtime(), fut))
}

/// `wait` for a call that only reads and writes through the open backends (get, save, list,
/// waiting for a job): on this thread's own lane (see `blocking.rs`), where a network store's
/// I/O runs on this thread. Not for calls that start tasks meant to outlive them.
pub fn wait_in_lane<F: Future + Send>(py: Python<'_>, fut: F) -> F::Output
where
    F::Output: Send,
{
    py.detach(|| crate::blocking::block_on_callers_lane(pyo3_async_runtimes::tokio::get_runtime(), fut))
}

pub fn parse_doc(doc_json: &str) -> PyResult<JobDocument> {
    JobDocument::from_json(doc_json.as_bytes()).map_err(|e| json_err("bad job document", e))
}

fn to_json(doc: JobDocument) -> String {
    String::from_utf8(doc.to_json()).unwrap_or_default()
}

fn doc_result(r: ClientResult<JobDocument>) -> PyResult<String> {
    r.map(to_json).map_err(client_err)
}

/// The documents of a batch; a bad one is named by its index.
fn parse_batch(docs_json: &[String]) -> PyResult<Vec<JobDocument>> {
    let parse = |(i, text): (usize, &String)| {
        JobDocument::from_json(text.as_bytes())
            .map_err(|e| json_err(&format!("job {i} of the batch: bad job document"), e))
    };
    docs_json.iter().enumerate().map(parse).collect()
}

/// Per job of a batch: (saved document, None) or (None, why it is not queued).
type BatchOutcome = Vec<(Option<String>, Option<String>)>;

fn batch_result(r: ClientResult<Vec<ClientResult<JobDocument>>>) -> PyResult<BatchOutcome> {
    let each = |r: ClientResult<JobDocument>| match r {
        Ok(doc) => (Some(to_json(doc)), None),
        Err(e) => (None, Some(e.to_string())),
    };
    r.map(|all| all.into_iter().map(each).collect()).map_err(client_err)
}

/// A document's JSON text as `JobDocument::to_json` wrote it (always UTF-8).
fn json_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_default()
}

fn json_result(r: ClientResult<Vec<u8>>) -> PyResult<String> {
    r.map(json_text).map_err(client_err)
}

fn maybe_json_result(r: ClientResult<Option<Vec<u8>>>) -> PyResult<Option<String>> {
    r.map(|json| json.map(json_text)).map_err(client_err)
}

fn maybe_doc_result(r: ClientResult<Option<JobDocument>>) -> PyResult<Option<String>> {
    r.map(|d| d.map(to_json)).map_err(client_err)
}

#[pyclass(frozen, name = "Client", module = "geyser._core")]
pub struct PyClient {
    pub geyser: Geyser,
}

#[pymethods]
impl PyClient {
    /// Open the queue and store the URLs name (None: the embedded default).
    #[new]
    #[pyo3(signature = (queue_url=None, store_url=None))]
    fn new(py: Python<'_>, queue_url: Option<String>, store_url: Option<String>) -> PyResult<Self> {
        let geyser = wait(py, config::open(queue_url.as_deref(), store_url.as_deref())).map_err(config_err)?;
        Ok(Self { geyser })
    }

    fn enqueue(&self, py: Python<'_>, doc_json: &str, delay: f64) -> PyResult<String> {
        let doc = parse_doc(doc_json)?;
        doc_result(wait(py, self.geyser.enqueue(doc, delay)))
    }

    fn enqueue_async<'py>(&self, py: Python<'py>, doc_json: &str, delay: f64) -> PyResult<Bound<'py, PyAny>> {
        let doc = parse_doc(doc_json)?;
        let geyser = self.geyser.clone();
        awaitable::future_into_py(py, async move { doc_result(geyser.enqueue(doc, delay).await) })
    }

    /// Enqueue new jobs in as few round trips as the backends allow; per job, in order,
    /// (saved document, None) or (None, why it was not queued).
    fn enqueue_many(&self, py: Python<'_>, docs_json: Vec<String>, delay: f64) -> PyResult<BatchOutcome> {
        let docs = parse_batch(&docs_json)?;
        batch_result(wait(py, self.geyser.enqueue_many(docs, delay)))
    }

    fn enqueue_many_async<'py>(
        &self,
        py: Python<'py>,
        docs_json: Vec<String>,
        delay: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let docs = parse_batch(&docs_json)?;
        let geyser = self.geyser.clone();
        awaitable::future_into_py(py, async move { batch_result(geyser.enqueue_many(docs, delay).await) })
    }

    fn get(&self, py: Python<'_>, uuid: &str) -> PyResult<Option<String>> {
        maybe_json_result(wait_in_lane(py, self.geyser.get_json(uuid)))
    }

    fn get_async<'py>(&self, py: Python<'py>, uuid: String) -> PyResult<Bound<'py, PyAny>> {
        let geyser = self.geyser.clone();
        awaitable::future_into_py(py, async move { maybe_json_result(geyser.get_json(&uuid).await) })
    }

    fn save(&self, py: Python<'_>, doc_json: &str) -> PyResult<String> {
        let doc = parse_doc(doc_json)?;
        json_result(wait_in_lane(py, self.geyser.save_json(&doc)))
    }

    fn save_async<'py>(&self, py: Python<'py>, doc_json: &str) -> PyResult<Bound<'py, PyAny>> {
        let doc = parse_doc(doc_json)?;
        let geyser = self.geyser.clone();
        awaitable::future_into_py(py, async move { json_result(geyser.save_json(&doc).await) })
    }

    fn cancel(&self, py: Python<'_>, uuid: &str) -> PyResult<String> {
        doc_result(wait(py, self.geyser.cancel(uuid)))
    }

    fn cancel_async<'py>(&self, py: Python<'py>, uuid: String) -> PyResult<Bound<'py, PyAny>> {
        let geyser = self.geyser.clone();
        awaitable::future_into_py(py, async move { doc_result(geyser.cancel(&uuid).await) })
    }

    /// Queue a failed (or buried) or cancelled job again, its retry budget renewed.
    fn retry(&self, py: Python<'_>, uuid: &str) -> PyResult<String> {
        doc_result(wait(py, self.geyser.retry(uuid)))
    }

    fn retry_async<'py>(&self, py: Python<'py>, uuid: String) -> PyResult<Bound<'py, PyAny>> {
        let geyser = self.geyser.clone();
        awaitable::future_into_py(py, async move { doc_result(geyser.retry(&uuid).await) })
    }

    /// Forget a finished job and its queue entry; returns its last document.
    fn delete(&self, py: Python<'_>, uuid: &str) -> PyResult<String> {
        doc_result(wait(py, self.geyser.delete(uuid)))
    }

    fn delete_async<'py>(&self, py: Python<'py>, uuid: String) -> PyResult<Bound<'py, PyAny>> {
        let geyser = self.geyser.clone();
        awaitable::future_into_py(py, async move { doc_result(geyser.delete(&uuid).await) })
    }

    /// Move up to `bound` buried (else delayed) entries of `queue` to ready; returns how many.
    fn kick(&self, py: Python<'_>, queue: &str, bound: u64) -> PyResult<u64> {
        wait(py, self.geyser.kick(queue, bound)).map_err(client_err)
    }

    fn kick_async<'py>(&self, py: Python<'py>, queue: String, bound: u64) -> PyResult<Bound<'py, PyAny>> {
        let geyser = self.geyser.clone();
        awaitable::future_into_py(py, async move { geyser.kick(&queue, bound).await.map_err(client_err) })
    }

    /// The job's document once it is finished, or None after `timeout` seconds; polls the
    /// store from `first_poll` seconds apart, slowing down to once a second.
    #[pyo3(signature = (uuid, timeout, first_poll=0.05))]
    fn wait(&self, py: Python<'_>, uuid: &str, timeout: f64, first_poll: f64) -> PyResult<Option<String>> {
        maybe_doc_result(wait_in_lane(py, self.geyser.wait(uuid, secs(timeout), secs(first_poll))))
    }

    #[pyo3(signature = (uuid, timeout, first_poll=0.05))]
    fn wait_async<'py>(
        &self,
        py: Python<'py>,
        uuid: String,
        timeout: f64,
        first_poll: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let geyser = self.geyser.clone();
        awaitable::future_into_py(py, async move {
            maybe_doc_result(geyser.wait(&uuid, secs(timeout), secs(first_poll)).await)
        })
    }

    /// Documents by status, job type and/or queue, ordered by uuid (descending, which for
    /// time-ordered uuids is newest first, with `newest_first`), `limit` after `after`.
    #[pyo3(signature = (status=None, job_type=None, after=None, limit=100, newest_first=false, queue=None))]
    #[allow(clippy::too_many_arguments)] // one per keyword argument of the Python method
    fn list(
        &self,
        py: Python<'_>,
        status: Option<&str>,
        job_type: Option<String>,
        after: Option<String>,
        limit: usize,
        newest_first: bool,
        queue: Option<String>,
    ) -> PyResult<Vec<String>> {
        let status =
            status.map(|s| s.parse::<Status>()).transpose().map_err(pyo3::exceptions::PyValueError::new_err)?;
        let filter = ListFilter { status, job_type, updated_before: None, queue };
        let page = Page { after, limit, newest_first };
        let docs = wait_in_lane(py, self.geyser.list(&filter, &page)).map_err(client_err)?;
        Ok(docs.into_iter().map(to_json).collect())
    }

    /// What `queues` hold for a worker running `job_types` (None: every type): `waiting`
    /// (ready or delayed), `reserved`, and `foreign` (waiting jobs of other types), in a dict.
    #[pyo3(signature = (queues, job_types=None))]
    fn backlog<'py>(
        &self,
        py: Python<'py>,
        queues: Vec<String>,
        job_types: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let known: Option<std::collections::HashSet<String>> = job_types.map(|t| t.into_iter().collect());
        let b = wait(py, self.geyser.backlog(&queues, known.as_ref())).map_err(client_err)?;
        let d = PyDict::new(py);
        d.set_item("waiting", b.waiting)?;
        d.set_item("reserved", b.reserved)?;
        d.set_item("foreign", b.foreign)?;
        Ok(d)
    }

    /// The live workers, each a dict: `id`, `host`, `pid`, `queues`, `started_at`,
    /// `heartbeat_at`, `job` (the uuid it runs, or None) and `expires_at`; by id.
    fn workers<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let workers = wait(py, self.geyser.workers()).map_err(client_err)?;
        workers.into_iter().map(|w| worker_dict(py, w)).collect()
    }

    /// `workers` as an awaitable, for event loops.
    fn workers_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let geyser = self.geyser.clone();
        awaitable::future_into_py(py, async move { geyser.workers().await.map(WorkerDicts).map_err(client_err) })
    }

    /// Stop every worker from reserving `queue`'s jobs until `resume` (running jobs go on).
    fn pause(&self, py: Python<'_>, queue: &str) -> PyResult<()> {
        wait(py, self.geyser.pause(queue)).map_err(client_err)
    }

    /// Let workers reserve `queue`'s jobs again; waiting workers get them at once.
    fn resume(&self, py: Python<'_>, queue: &str) -> PyResult<()> {
        wait(py, self.geyser.resume(queue)).map_err(client_err)
    }

    /// One queue: counts (ready, delayed, reserved, buried, total_jobs), `paused`,
    /// `oldest_ready_age` (seconds, or None) and `watching` (consumers, or None when unknown).
    fn stats_tube<'py>(&self, py: Python<'py>, tube: &str) -> PyResult<Bound<'py, PyDict>> {
        let s = wait(py, self.geyser.stats_tube(tube)).map_err(client_err)?;
        stats_dict(py, s)
    }

    /// `stats_tube` as an awaitable, for event loops.
    fn stats_tube_async<'py>(&self, py: Python<'py>, tube: String) -> PyResult<Bound<'py, PyAny>> {
        let geyser = self.geyser.clone();
        awaitable::future_into_py(py, async move { geyser.stats_tube(&tube).await.map(StatsDict).map_err(client_err) })
    }
}

/// Tube counts that become a dict where the awaitable is resolved, under the GIL the
/// event loop already holds (not on a runtime thread).
struct StatsDict(TubeStats);

impl<'py> IntoPyObject<'py> for StatsDict {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, self.0)
    }
}

/// A new job uuid: UUIDv7, whose first 48 bits are the time in milliseconds, so that uuid
/// order is creation order (`geyser jobs ls` lists newest first by it); uuids made by one
/// process are strictly increasing.
#[pyfunction]
pub fn new_uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Jobs this process enqueued (through any client) whose queue entries are not put yet.
#[pyfunction]
pub fn pending() -> usize {
    crate::enqueue::pending_everywhere()
}

/// Jobs this process put on their queues whose queue ids are not noted in their documents
/// yet (a `flush` waits for those notes too).
#[pyfunction]
pub fn unnoted() -> usize {
    crate::enqueue::unnoted_everywhere()
}

/// Wait until every job this process enqueued is on its queue, or `timeout` seconds have
/// passed; returns how many are still not put (0: all delivered).
#[pyfunction]
pub fn flush(py: Python<'_>, timeout: f64) -> usize {
    wait(py, crate::enqueue::flush_everywhere(secs(timeout)))
}

/// `flush` as an awaitable, for event loops.
#[pyfunction]
pub fn flush_async(py: Python<'_>, timeout: f64) -> PyResult<Bound<'_, PyAny>> {
    awaitable::future_into_py(py, async move { Ok(crate::enqueue::flush_everywhere(secs(timeout)).await) })
}

/// Worker records that become a list of dicts where the awaitable is resolved.
struct WorkerDicts(Vec<WorkerRecord>);

impl<'py> IntoPyObject<'py> for WorkerDicts {
    type Target = PyList;
    type Output = Bound<'py, PyList>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let dicts = self.0.into_iter().map(|w| worker_dict(py, w)).collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, dicts)
    }
}

fn worker_dict(py: Python<'_>, w: WorkerRecord) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", w.id)?;
    d.set_item("host", w.host)?;
    d.set_item("pid", w.pid)?;
    d.set_item("queues", w.queues)?;
    d.set_item("started_at", w.started_at)?;
    d.set_item("heartbeat_at", w.heartbeat_at)?;
    d.set_item("job", w.job)?;
    d.set_item("expires_at", w.expires_at)?;
    Ok(d)
}

fn stats_dict(py: Python<'_>, s: TubeStats) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", s.name)?;
    d.set_item("ready", s.ready)?;
    d.set_item("delayed", s.delayed)?;
    d.set_item("reserved", s.reserved)?;
    d.set_item("buried", s.buried)?;
    d.set_item("total_jobs", s.total_jobs)?;
    d.set_item("paused", s.paused)?;
    d.set_item("oldest_ready_age", s.oldest_ready_age.map(|age| age.as_secs_f64()))?;
    d.set_item("watching", s.watching)?;
    Ok(d)
}
