//! How an attempt ends: the lifecycle table of docs/lifecycle.md, row by row.
//! Decides the document's next state and the queue action; writes nothing itself.

use std::time::Duration;

use serde_json::Value;

use crate::client::secs;
use crate::model::{now, JobDocument, TransitionError};

/// What `run()` came to, as the Python side reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `run()` returned `(t, False)`.
    Succeeded,
    /// `run()` returned `(t, True)`: run again at `t` (epoch seconds); not a failure.
    Requeue { at: f64 },
    /// `WFErrorFinish`: record the error and stop for good.
    Finish { code: Value, msg: String },
    /// `WFErrorContinue` or any other exception: retry while retries remain.
    Continue { code: Value, msg: String, traceback: Option<String> },
    /// The job cannot run here (unknown type, document that does not fit its schema):
    /// record why, fail, and bury so an operator can kick it once it is fixed.
    Reject { code: Value, msg: String },
    /// The job saw its cancel request and stopped.
    Cancelled,
    /// The worker is shutting down: hand the job back, not counted as a failure.
    HandBack,
}

impl Outcome {
    /// A previous attempt ended without an outcome (its worker died or lost the job):
    /// it counts as a failure under the retry policy.
    pub fn worker_lost(attempt: u32, how: &str) -> Self {
        Outcome::Continue {
            code: Value::from("worker-lost"),
            msg: format!("attempt {attempt} did not finish: {how}"),
            traceback: None,
        }
    }
}

/// What to do with the queue entry once the document is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QueueAction {
    Delete,
    Release { delay: Duration },
    Bury,
}

/// Apply `outcome` to the attempt's document; returns the queue action to take
/// after the document is saved. A document whose entry is to be deleted or buried names
/// no entry: a failed document names its entry only once the entry is buried (the worker
/// writes the id after the bury), so that a kicked entry is told from one that came back
/// because the bury never happened.
pub fn apply(doc: &mut JobDocument, outcome: Outcome, jitter: f64) -> Result<QueueAction, TransitionError> {
    let action = queue_action(doc, outcome, jitter)?;
    if matches!(action, QueueAction::Delete | QueueAction::Bury) {
        doc.queue_job_id = None;
    }
    Ok(action)
}

fn queue_action(doc: &mut JobDocument, outcome: Outcome, jitter: f64) -> Result<QueueAction, TransitionError> {
    Ok(match outcome {
        Outcome::Succeeded => {
            doc.succeed()?;
            QueueAction::Delete
        }
        Outcome::Requeue { at } => {
            doc.requeue(at)?;
            QueueAction::Release { delay: secs(at - now()) }
        }
        Outcome::Finish { code, msg } => {
            doc.record_error(code, &msg, None);
            doc.fail()?;
            QueueAction::Delete
        }
        Outcome::Continue { code, msg, traceback } => {
            doc.record_error(code, &msg, traceback);
            fail_or_retry(doc, jitter)?
        }
        Outcome::Reject { code, msg } => {
            doc.record_error(code, &msg, None);
            doc.fail()?;
            QueueAction::Bury
        }
        Outcome::Cancelled => {
            doc.cancel()?;
            QueueAction::Delete
        }
        Outcome::HandBack => {
            doc.requeue(now())?;
            doc.attempts = doc.attempts.saturating_sub(1);
            QueueAction::Release { delay: Duration::ZERO }
        }
    })
}

/// A failed attempt: retry after a backoff while retries remain, else fail and bury.
fn fail_or_retry(doc: &mut JobDocument, jitter: f64) -> Result<QueueAction, TransitionError> {
    doc.failures += 1;
    if doc.retries_left() {
        let delay = doc.retry_backoff(jitter);
        doc.requeue(now() + delay)?;
        Ok(QueueAction::Release { delay: secs(delay) })
    } else {
        doc.fail()?;
        Ok(QueueAction::Bury)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn running(max_retries: u32, retry_delay: f64) -> JobDocument {
        let mut doc: JobDocument = serde_json::from_value(serde_json::json!({
            "jobType": "t", "createdAt": 1.0, "updatedAt": 1.0, "uuid": "u",
            "queueKwargs": {"queue": "q", "priority": 1, "ttr": 5.0, "retryDelay": retry_delay},
            "status": "queued", "maxRetries": max_retries
        }))
        .unwrap();
        doc.start_attempt("w", "f").unwrap();
        doc
    }

    #[test]
    fn success_deletes() {
        let mut doc = running(3, 1.0);
        assert_eq!(apply(&mut doc, Outcome::Succeeded, 0.0).unwrap(), QueueAction::Delete);
        assert_eq!((doc.status, doc.completeness), (Status::Succeeded, 1.0));
    }

    #[test]
    fn requeue_releases_with_the_delay_and_is_no_failure() {
        let mut doc = running(0, 1.0);
        let action = apply(&mut doc, Outcome::Requeue { at: now() + 30.0 }, 0.0).unwrap();
        let QueueAction::Release { delay } = action else { panic!("{action:?}") };
        assert!(delay > Duration::from_secs(28) && delay <= Duration::from_secs(30), "{delay:?}");
        assert_eq!((doc.status, doc.failures), (Status::Queued, 0));
        assert!(doc.next_run_at.is_some());
    }

    #[test]
    fn finish_fails_at_once() {
        let mut doc = running(3, 1.0);
        let action = apply(&mut doc, Outcome::Finish { code: 7.into(), msg: "no".into() }, 0.0).unwrap();
        assert_eq!(action, QueueAction::Delete);
        assert_eq!(doc.status, Status::Failed);
        assert_eq!(doc.errors[0].msg, "no");
    }

    #[test]
    fn continue_retries_then_buries() {
        let mut doc = running(1, 0.0);
        doc.queue_job_id = Some("0:7".into());
        let err = || Outcome::Continue { code: 1.into(), msg: "x".into(), traceback: Some("tb".into()) };
        assert_eq!(apply(&mut doc, err(), 0.0).unwrap(), QueueAction::Release { delay: Duration::ZERO });
        assert_eq!((doc.status, doc.queue_job_id.as_deref()), (Status::Queued, Some("0:7")));
        doc.start_attempt("w", "g").unwrap();
        assert_eq!(apply(&mut doc, err(), 0.0).unwrap(), QueueAction::Bury);
        // Named again only once the entry is buried: see `worker::bury_and_name`.
        assert_eq!(doc.queue_job_id, None);
        assert_eq!((doc.status, doc.failures, doc.errors.len()), (Status::Failed, 2, 2));
        assert_eq!(doc.errors[1].traceback.as_deref(), Some("tb"));
        assert_eq!(doc.errors[1].attempt, 2);
    }

    #[test]
    fn hand_back_does_not_count_the_attempt() {
        let mut doc = running(0, 1.0);
        assert_eq!(apply(&mut doc, Outcome::HandBack, 0.0).unwrap(), QueueAction::Release { delay: Duration::ZERO });
        assert_eq!((doc.status, doc.attempts, doc.failures), (Status::Queued, 0, 0));
    }
}
