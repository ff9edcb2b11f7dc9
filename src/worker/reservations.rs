//! The worker's consumer and the runtime its connections belong to. A worker drives its
//! own current-thread runtime from the thread that waits on it (the Python thread, GIL
//! released), so a reply wakes that thread directly instead of a runtime thread that then
//! wakes it. The heartbeat runs elsewhere and borrows the runtime, from a blocking thread,
//! for its rare calls. Touches the consumer only.

use std::future::Future;
use std::sync::{Arc, Weak};

use tokio::runtime::Runtime;
use tokio::sync::Mutex;

use crate::queue::{Consumer, QueueError};

pub type SharedConsumer = Arc<Mutex<Box<dyn Consumer>>>;

#[derive(Debug, thiserror::Error)]
pub enum OutsideError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the worker is gone")]
    WorkerGone,
    #[error("the call on the worker's runtime did not complete: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A handle on a worker's consumer for code that runs outside the worker's runtime.
#[derive(Clone)]
pub struct Reservations {
    consumer: SharedConsumer,
    runtime: Weak<Runtime>,
}

impl Reservations {
    pub fn new(consumer: SharedConsumer, runtime: &Arc<Runtime>) -> Self {
        Self { consumer, runtime: Arc::downgrade(runtime) }
    }

    /// Run `op` on the consumer from a task of another runtime: a blocking thread drives
    /// the worker's runtime for it (its connections answer only there). If the worker's
    /// thread is driving it at that moment, the call waits its turn.
    pub async fn call_from_outside<T, F, Fut>(&self, op: F) -> Result<T, OutsideError>
    where
        T: Send + 'static,
        F: FnOnce(SharedConsumer) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, QueueError>>,
    {
        let consumer = self.consumer.clone();
        let runtime = self.runtime.clone();
        let call = move || {
            let runtime = runtime.upgrade().ok_or(OutsideError::WorkerGone)?;
            Ok(runtime.block_on(op(consumer))?)
        };
        tokio::task::spawn_blocking(call).await?
    }
}
