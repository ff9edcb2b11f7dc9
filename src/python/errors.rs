//! Python exceptions raised by the native module, and the mapping from engine errors.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

use crate::client::ClientError;
use crate::config;
use crate::maintenance::SweepError;
use crate::queue::QueueError;
use crate::store::StoreError;
use crate::worker::WorkerError;

create_exception!(_core, GeyserError, PyException, "Base class of every error Geyser raises.");
create_exception!(_core, ConfigError, GeyserError, "A queue or store URL is wrong or cannot be opened.");
create_exception!(_core, ConflictError, GeyserError, "The job changed since it was read; reload() and try again.");
create_exception!(_core, JobNotFound, GeyserError, "No job with that uuid.");
create_exception!(_core, BackendError, GeyserError, "The queue or store failed or went away.");
create_exception!(_core, StoreUnavailable, BackendError, "The store failed or went away.");
create_exception!(_core, QueueUnavailable, BackendError, "The queue failed or went away.");
create_exception!(_core, InvalidDocument, GeyserError, "A job document is not valid.");
create_exception!(
    _core,
    InvalidTransition,
    GeyserError,
    "The job's status does not allow this operation (e.g. retrying a job that succeeded)."
);

pub fn store_err(e: StoreError) -> PyErr {
    match e {
        StoreError::Conflict { .. } | StoreError::Contended { .. } => ConflictError::new_err(e.to_string()),
        StoreError::NotFound(_) => JobNotFound::new_err(e.to_string()),
        StoreError::AlreadyExists(_)
        | StoreError::Corrupt { .. }
        | StoreError::Inconsistent { .. }
        | StoreError::FixedField { .. } => InvalidDocument::new_err(e.to_string()),
        _ => StoreUnavailable::new_err(e.to_string()),
    }
}

pub fn queue_err(e: QueueError) -> PyErr {
    match e {
        QueueError::JobTooBig { .. } | QueueError::BadTube(_) | QueueError::BadJobId(_) => {
            InvalidDocument::new_err(e.to_string())
        }
        QueueError::UnknownTube(_) => GeyserError::new_err(e.to_string()),
        _ => QueueUnavailable::new_err(e.to_string()),
    }
}

pub fn client_err(e: ClientError) -> PyErr {
    match e {
        ClientError::Store(e) => store_err(e),
        ClientError::Queue(e) => queue_err(e),
        ClientError::Transition(_) | ClientError::WrongStatus { .. } => InvalidTransition::new_err(e.to_string()),
        ClientError::Invalid { .. } | ClientError::InvalidJob(_) | ClientError::InBatch { .. } => {
            InvalidDocument::new_err(e.to_string())
        }
    }
}

pub fn worker_err(e: WorkerError) -> PyErr {
    match e {
        WorkerError::Store(e) => store_err(e),
        WorkerError::Queue(e) => queue_err(e),
        WorkerError::Fence(e) => ConflictError::new_err(e.to_string()),
        WorkerError::Transition(e) => InvalidTransition::new_err(e.to_string()),
        WorkerError::InvalidJob(e) => InvalidDocument::new_err(e.to_string()),
        WorkerError::Runtime(_) => GeyserError::new_err(e.to_string()),
    }
}

pub fn sweep_err(e: SweepError) -> PyErr {
    BackendError::new_err(e.to_string())
}

/// A server that did not answer is the backend's error (a worker tries again later); a URL
/// or a backend that cannot be used as configured is a `ConfigError`.
pub fn config_err(e: config::ConfigError) -> PyErr {
    match e {
        config::ConfigError::Unreachable { role: "queue", .. } => QueueUnavailable::new_err(e.to_string()),
        config::ConfigError::Unreachable { .. } => StoreUnavailable::new_err(e.to_string()),
        _ => ConfigError::new_err(e.to_string()),
    }
}

pub fn json_err(what: &str, e: serde_json::Error) -> PyErr {
    InvalidDocument::new_err(format!("{what}: {e}"))
}
