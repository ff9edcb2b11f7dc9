//! Recording how a worker process died on the job it was running. The supervisor saw the
//! exit status (or signal); the job's document gets it in place of the generic
//! `worker-lost`, and the retry policy applies. Touches only the store, in one
//! `read_then_write` step; the queue entry comes back by itself once the dead process's
//! reservation is gone, and the triage of whoever reserves it settles it (runs the retry,
//! or deletes the entry of a job that failed).

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::outcome::{self, Outcome};
use crate::model::{JobDocument, Status, TransitionError};
use crate::store::{NextDocument, Store, StoreError};

/// The error code of an attempt whose worker process died under it.
pub const CRASH_CODE: &str = "worker-crashed";
/// The code a worker's triage records for an attempt it found abandoned (see `Outcome::worker_lost`).
const LOST_CODE: &str = "worker-lost";

#[derive(Debug, thiserror::Error)]
pub enum CrashError {
    #[error("recording the crash of job {uuid}'s attempt {attempt}: {source}")]
    Store {
        uuid: String,
        attempt: u32,
        #[source]
        source: StoreError,
    },
    #[error("recording the crash of job {uuid}'s attempt {attempt}: {source}")]
    Transition {
        uuid: String,
        attempt: u32,
        #[source]
        source: TransitionError,
    },
}

/// What `record_crash` did to the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashRecord {
    /// The attempt was still `running`: it failed with the cause; queued again for a retry.
    Retrying,
    /// The attempt was still `running` and no retries were left: the job failed.
    Failed,
    /// A worker had already found the attempt abandoned and recorded it as lost: that
    /// record now names the cause.
    Amended,
    /// The document had moved on otherwise (finished, or the attempt ended normally): left alone.
    Unchanged,
    /// No document with that uuid.
    Missing,
}

impl CrashRecord {
    pub fn as_str(self) -> &'static str {
        match self {
            CrashRecord::Retrying => "retrying",
            CrashRecord::Failed => "failed",
            CrashRecord::Amended => "amended",
            CrashRecord::Unchanged => "unchanged",
            CrashRecord::Missing => "missing",
        }
    }
}

/// Record on job `uuid` that its attempt number `attempt` (fencing token `fence`) ended
/// because its worker process died, as `reason` says ("worker process 12 died: killed by
/// SIGKILL"). Only the attempt that still owns the document is failed; an attempt another
/// worker already recorded as lost gets the cause added to that record.
pub async fn record_crash(
    store: &Arc<dyn Store>,
    uuid: &str,
    fence: &str,
    attempt: u32,
    reason: &str,
) -> Result<CrashRecord, CrashError> {
    let plan = Arc::new(Plan {
        fence: fence.to_owned(),
        attempt,
        msg: format!("attempt {attempt} did not finish: {reason}"),
        jitter: rand::random(),
        chosen: Mutex::new(None),
    });
    let next: NextDocument = {
        let plan = plan.clone();
        Arc::new(move |stored: &JobDocument| plan.decide(stored))
    };
    let (stored, _written) = store.read_then_write(uuid, next).await.map_err(|source| CrashError::Store {
        uuid: uuid.to_owned(),
        attempt,
        source,
    })?;
    if stored.is_none() {
        return Ok(CrashRecord::Missing);
    }
    match plan.chosen.lock().ok().and_then(|mut c| c.take()) {
        Some(Ok(record)) => Ok(record),
        Some(Err(source)) => Err(CrashError::Transition { uuid: uuid.to_owned(), attempt, source }),
        None => Ok(CrashRecord::Unchanged),
    }
}

/// The decision, made inside the store step (a store may ask again after a conflict).
struct Plan {
    fence: String,
    attempt: u32,
    msg: String,
    jitter: f64,
    chosen: Mutex<Option<Result<CrashRecord, TransitionError>>>,
}

impl Plan {
    fn decide(&self, stored: &JobDocument) -> Option<JobDocument> {
        let (record, doc) = match self.choose(stored) {
            Ok((record, doc)) => (Ok(record), doc),
            Err(refused) => (Err(refused), None),
        };
        if let Ok(mut chosen) = self.chosen.lock() {
            *chosen = Some(record);
        }
        doc
    }

    fn choose(&self, stored: &JobDocument) -> Result<(CrashRecord, Option<JobDocument>), TransitionError> {
        let mut doc = stored.clone();
        if doc.status == Status::Running && doc.fence.as_deref() == Some(self.fence.as_str()) {
            let crashed = Outcome::Continue { code: Value::from(CRASH_CODE), msg: self.msg.clone(), traceback: None };
            outcome::apply(&mut doc, crashed, self.jitter)?;
            if doc.status != Status::Failed {
                return Ok((CrashRecord::Retrying, Some(doc)));
            }
            // The entry comes back when the dead process's reservation ends; the failed
            // document names none (`outcome::apply`), so its triage buries it, not runs it.
            return Ok((CrashRecord::Failed, Some(doc)));
        }
        let lost =
            doc.errors.iter_mut().find(|e| e.attempt == self.attempt && e.error_code.as_str() == Some(LOST_CODE));
        match lost {
            Some(error) => {
                error.error_code = Value::from(CRASH_CODE);
                error.msg = self.msg.clone();
                Ok((CrashRecord::Amended, Some(doc)))
            }
            None => Ok((CrashRecord::Unchanged, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(max_retries: u32) -> JobDocument {
        let mut doc: JobDocument = serde_json::from_value(serde_json::json!({
            "jobType": "t", "createdAt": 1.0, "updatedAt": 1.0, "uuid": "u",
            "queueKwargs": {"queue": "q", "priority": 1, "ttr": 5.0, "retryDelay": 0.0},
            "status": "queued", "maxRetries": max_retries
        }))
        .unwrap();
        doc.start_attempt("w", "1:f").unwrap();
        doc
    }

    fn plan(fence: &str) -> Plan {
        Plan {
            fence: fence.into(),
            attempt: 1,
            msg: "attempt 1 did not finish: worker process 7 died: killed by SIGKILL".into(),
            jitter: 0.0,
            chosen: Mutex::new(None),
        }
    }

    #[test]
    fn the_running_attempt_fails_with_the_cause_and_is_retried() {
        let (record, doc) = plan("1:f").choose(&running(1)).unwrap();
        let doc = doc.unwrap();
        assert_eq!((record, doc.status, doc.failures), (CrashRecord::Retrying, Status::Queued, 1));
        assert_eq!(doc.errors[0].error_code, Value::from(CRASH_CODE));
        assert!(doc.errors[0].msg.ends_with("killed by SIGKILL"));
    }

    #[test]
    fn with_no_retries_left_the_job_fails() {
        let mut started = running(0);
        started.queue_job_id = Some("0:5".into());
        let (record, doc) = plan("1:f").choose(&started).unwrap();
        let doc = doc.unwrap();
        assert_eq!((record, doc.status, doc.queue_job_id), (CrashRecord::Failed, Status::Failed, None));
    }

    #[test]
    fn an_attempt_already_recorded_lost_gets_the_cause() {
        let mut doc = running(1);
        outcome::apply(&mut doc, Outcome::worker_lost(1, "its worker stopped"), 0.0).unwrap();
        doc.start_attempt("w2", "2:g").unwrap();
        let (record, amended) = plan("1:f").choose(&doc).unwrap();
        let amended = amended.unwrap();
        assert_eq!((record, amended.status, amended.failures), (CrashRecord::Amended, Status::Running, 1));
        assert_eq!(amended.errors[0].error_code, Value::from(CRASH_CODE));
    }

    #[test]
    fn another_attempt_is_left_alone() {
        let (record, doc) = plan("0:other").choose(&running(1)).unwrap();
        assert_eq!(record, CrashRecord::Unchanged);
        assert!(doc.is_none());
    }
}
