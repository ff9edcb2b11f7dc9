//! Rust futures as asyncio awaitables: pyo3-async-runtimes' generic bridge, run on the
//! shared tokio runtime, with one change: where a finished future is handed back.
//!
//! The bridge's stock tokio runtime resolves every future from its own `spawn_blocking`
//! thread, which takes the GIL to call `loop.call_soon_threadsafe`. Under load the
//! event-loop thread then queues for the GIL behind those threads. Here that call is
//! put on a completion queue instead; a socket pair signals that the queue is no longer
//! empty, and every event loop that awaits a Geyser future watches the socket
//! (`add_reader`) and runs the queue itself, on its own thread, where it holds the GIL.
//! A loop that cannot watch a socket gets the stock bridge.
//! May touch: the shared tokio runtime, event loops' readers, the GIL (on loop threads).

use std::cell::OnceCell;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use pyo3::conversion::IntoPyObject;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3_async_runtimes::generic::{self, ContextExt, Runtime};
use pyo3_async_runtimes::TaskLocals;

/// A Python awaitable that resolves to `fut`'s output, on the running event loop.
pub fn future_into_py<F, T>(py: Python<'_>, fut: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    let locals = generic::get_current_locals::<LoopDrained>(py)?;
    match watch_completions(py, &locals.event_loop(py)) {
        Ok(()) => generic::future_into_py_with_locals::<LoopDrained, _, T>(py, locals, fut),
        Err(e) => {
            log::debug!("this event loop cannot watch the completion queue ({e}); using the stock bridge");
            pyo3_async_runtimes::tokio::future_into_py(py, fut)
        }
    }
}

/// Tasks run on the shared tokio runtime. "Blocking" work — the bridge only uses it to
/// resolve a Python future under the GIL — goes on the completion queue.
struct LoopDrained;

/// A closure that takes the GIL and resolves one Python future.
type Completion = Box<dyn FnOnce() + Send>;

tokio::task_local! {
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

/// What `LoopDrained` hands back for spawned work. The bridge awaits a task's handle to
/// report panics; it never awaits the handle of a queued completion.
enum Spawned {
    Task(tokio::task::JoinHandle<()>),
    Queued,
}

impl Future for Spawned {
    type Output = Result<(), tokio::task::JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Spawned::Task(handle) => Pin::new(handle).poll(cx),
            Spawned::Queued => Poll::Ready(Ok(())),
        }
    }
}

impl Runtime for LoopDrained {
    type JoinError = tokio::task::JoinError;
    type JoinHandle = Spawned;

    fn spawn<F>(fut: F) -> Spawned
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Spawned::Task(pyo3_async_runtimes::tokio::get_runtime().spawn(fut))
    }

    fn spawn_blocking<F>(f: F) -> Spawned
    where
        F: FnOnce() + Send + 'static,
    {
        match completion_queue() {
            Some(queue) => {
                queue.push(Box::new(f));
                Spawned::Queued
            }
            None => Spawned::Task(pyo3_async_runtimes::tokio::get_runtime().spawn_blocking(f)),
        }
    }
}

impl ContextExt for LoopDrained {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS.try_with(|cell| cell.get().cloned()).unwrap_or_default()
    }
}

/// Completions waiting for an event loop, and the socket pair that says there are some.
struct CompletionQueue {
    pending: Mutex<Vec<Completion>>,
    /// One byte is written when `pending` stops being empty.
    signal: UnixStream,
    /// The end event loops watch; reading it empty re-arms the signal.
    watched: UnixStream,
}

impl CompletionQueue {
    fn open() -> std::io::Result<Self> {
        let (signal, watched) = UnixStream::pair()?;
        signal.set_nonblocking(true)?;
        watched.set_nonblocking(true)?;
        Ok(Self { pending: Mutex::new(Vec::new()), signal, watched })
    }

    fn push(&self, completion: Completion) {
        let was_empty = {
            let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            pending.push(completion);
            pending.len() == 1
        };
        // A full socket already holds a signal nobody has read; nothing is lost.
        if was_empty {
            if let Err(e) = (&self.signal).write(&[1]) {
                if e.kind() != ErrorKind::WouldBlock {
                    log::error!("cannot signal the completion queue: {e}; awaitables may not resolve");
                }
            }
        }
    }

    /// Everything queued so far. The signal is read first, so a push that lands after
    /// the take writes a new one.
    fn take(&self) -> Vec<Completion> {
        let mut sink = [0u8; 64];
        while matches!((&self.watched).read(&mut sink), Ok(n) if n > 0) {}
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// The process's completion queue, opened on first use; None if no socket pair could be
/// made, and then completions go to the runtime's blocking pool as in the stock bridge.
fn completion_queue() -> Option<&'static CompletionQueue> {
    static QUEUE: OnceLock<Option<CompletionQueue>> = OnceLock::new();
    QUEUE
        .get_or_init(|| match CompletionQueue::open() {
            Ok(queue) => Some(queue),
            Err(e) => {
                log::warn!("no completion queue ({e}); awaitables resolve from the blocking pool");
                None
            }
        })
        .as_ref()
}

/// Make sure `event_loop` runs the completion queue when it is signalled. Each loop is
/// registered once (a weak set remembers which); any watching loop may run any
/// completion, since each one hands its result to its own loop thread-safely.
fn watch_completions(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
    static WATCHING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let queue = completion_queue().ok_or_else(|| pyo3::exceptions::PyOSError::new_err("no completion queue"))?;
    let watching =
        WATCHING.get_or_try_init(py, || py.import("weakref")?.getattr("WeakSet")?.call0().map(Bound::unbind))?;
    let watching = watching.bind(py);
    if watching.contains(event_loop)? {
        return Ok(());
    }
    let run = wrap_pyfunction!(run_completions, py)?;
    event_loop.call_method1("add_reader", (queue.watched.as_raw_fd(), run))?;
    watching.call_method1("add", (event_loop,))?;
    Ok(())
}

/// The event loops' reader callback: run every queued completion.
#[pyfunction]
fn run_completions() {
    if let Some(queue) = completion_queue() {
        for completion in queue.take() {
            completion();
        }
    }
}
