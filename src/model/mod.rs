//! The job model: the document every store keeps and the lifecycle it follows.
//! No I/O here; stores, queues and the worker build on it.

mod document;
mod status;

pub use document::{
    now, Event, InvalidJob, JobDocument, JobError, QueueKwargs, TransitionError, INTERNAL_FIELDS, MAX_ERROR_LEN,
};
pub use status::Status;
