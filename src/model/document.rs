//! The job document: one JSON object per job, the same in every store (docs/lifecycle.md).
//! Pure data plus the lifecycle transitions of docs/lifecycle.md; no I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::status::Status;

/// Seconds since the Unix epoch, as every timestamp in the document is.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// How the job is put on its queue; kept so a sweep or a retry can put it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueKwargs {
    /// The queue (beanstalkd tube) the job lives on.
    pub queue: String,
    /// Lower runs first, as in beanstalkd.
    pub priority: u32,
    /// Seconds a reservation lasts without a heartbeat.
    pub ttr: f64,
    /// Seconds between retries grow from this base.
    #[serde(default = "default_retry_delay")]
    pub retry_delay: f64,
    /// Hard limit on one attempt, in seconds; none by default.
    #[serde(default)]
    pub timeout: Option<f64>,
}

fn default_retry_delay() -> f64 {
    10.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub msg: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub at: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobError {
    pub error_code: Value,
    pub msg: String,
    #[serde(default)]
    pub at: f64,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

/// Fields a client may never set through job values: the engine owns them.
pub const INTERNAL_FIELDS: &[&str] = &[
    "documentType",
    "jobType",
    "schemaVersion",
    "createdAt",
    "updatedAt",
    "uuid",
    "logId",
    "queueKwargs",
    "queueJobId",
    "events",
    "errors",
    "completeness",
    "resultCode",
    "resultString",
    "status",
    "attempts",
    "failures",
    "maxRetries",
    "startedAt",
    "heartbeatAt",
    "finishedAt",
    "nextRunAt",
    "worker",
    "version",
    "fence",
    "cancelRequested",
    "expiresAt",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDocument {
    #[serde(default = "default_document_type")]
    pub document_type: String,
    pub job_type: String,
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
    pub created_at: f64,
    pub updated_at: f64,
    pub uuid: String,
    #[serde(default)]
    pub log_id: Option<String>,
    pub queue_kwargs: QueueKwargs,
    #[serde(default)]
    pub queue_job_id: Option<String>,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default)]
    pub errors: Vec<JobError>,
    #[serde(default)]
    pub completeness: f64,
    #[serde(default)]
    pub result_code: Option<Value>,
    #[serde(default)]
    pub result_string: String,
    pub status: Status,
    /// Attempts started so far; inside `run()` this is the 1-based number of the current one.
    #[serde(default)]
    pub attempts: u32,
    /// Attempts that ended in an error; retries are counted against these, not requeues.
    #[serde(default)]
    pub failures: u32,
    /// Re-runs allowed after the first attempt.
    #[serde(default)]
    pub max_retries: u32,
    #[serde(default)]
    pub started_at: Option<f64>,
    /// The running attempt's last sign of life: its worker's heartbeat stamps it at most
    /// every TTR/3. A `running` job stamped within its TTR still has a live owner.
    #[serde(default)]
    pub heartbeat_at: Option<f64>,
    #[serde(default)]
    pub finished_at: Option<f64>,
    #[serde(default)]
    pub next_run_at: Option<f64>,
    #[serde(default)]
    pub worker: Option<String>,
    /// Compare-and-swap version: every store write must name the version it read.
    #[serde(default)]
    pub version: u64,
    /// Fencing token of the attempt that owns the document while it runs.
    #[serde(default)]
    pub fence: Option<String>,
    #[serde(default)]
    pub cancel_requested: bool,
    /// When the store may forget the document (LIFESPAN); none by default.
    #[serde(default)]
    pub expires_at: Option<f64>,
    /// The job's own schema fields.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

fn default_document_type() -> String {
    "job".to_owned()
}

fn default_schema_version() -> u32 {
    1
}

/// A transition the lifecycle table does not allow.
#[derive(Debug, thiserror::Error)]
#[error("job {uuid}: cannot go from {from} to {to}")]
pub struct TransitionError {
    pub uuid: String,
    pub from: Status,
    pub to: Status,
}

/// A job's own write (progress, save, enqueue) that breaks the document's rules; names the field.
#[derive(Debug, thiserror::Error)]
#[error("job {uuid}: {field}: {reason}")]
pub struct InvalidJob {
    pub uuid: String,
    pub field: &'static str,
    pub reason: String,
}

/// `error`, from decoding `bytes` as a document, naming the field whose value was refused:
/// serde says what was wrong with a value ("invalid type: integer `5`, expected a string")
/// but not where. Each field of the JSON object is tried alone in a valid document; the
/// first refused is named. `error` as it is when `bytes` are not a JSON object, or when
/// no single value is to blame (a missing or duplicate field, which serde names itself).
fn name_the_field(bytes: &[u8], error: serde_json::Error) -> serde_json::Error {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(bytes) else {
        return error;
    };
    let valid = serde_json::json!({
        "jobType": "t", "createdAt": 0.0, "updatedAt": 0.0, "uuid": "u",
        "queueKwargs": {"queue": "q", "priority": 0, "ttr": 1.0}, "status": "queued",
    });
    for (field, value) in fields {
        let mut probe = valid.clone();
        probe[&field] = value;
        if let Err(refused) = serde_json::from_value::<JobDocument>(probe) {
            return serde::de::Error::custom(format!("field `{field}`: {refused}"));
        }
    }
    error
}

/// Longest message `JobDocument::from_json` gives, in characters (before its length note).
pub const MAX_ERROR_LEN: usize = 300;

/// `error` as one line of at most `MAX_ERROR_LEN` characters: serde quotes a refused value
/// as it is (a line break or a megabyte of it), and a store's errors go to logs.
fn one_line(error: serde_json::Error) -> serde_json::Error {
    let text = error.to_string();
    if text.chars().count() <= MAX_ERROR_LEN && !text.chars().any(char::is_control) {
        return error;
    }
    let mut escaped = String::new();
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    let length = escaped.chars().count();
    if length > MAX_ERROR_LEN {
        escaped = escaped.chars().take(MAX_ERROR_LEN).collect();
        escaped.push_str(&format!("... ({length} characters in all)"));
    }
    serde::de::Error::custom(escaped)
}

/// Checks that `new` only appends to `old` (the engine's history of events or errors).
fn appended<'a, T: PartialEq>(uuid: &str, field: &'static str, old: &[T], new: &'a [T]) -> Result<&'a [T], InvalidJob> {
    match new.get(..old.len()) {
        Some(prefix) if prefix == old => Ok(&new[old.len()..]),
        _ => Err(InvalidJob {
            uuid: uuid.to_owned(),
            field,
            reason: format!(
                "entries may only be appended: the stored document has {} that this write changes or drops",
                old.len()
            ),
        }),
    }
}

impl JobDocument {
    /// Parse a document, saying what is wrong with it, and in which field, when it is not one.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes).map_err(|error| one_line(name_the_field(bytes, error)))
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A document is plain data: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The first field that `new` changes of those fixed at creation (they are what the
    /// store indexes by type and expiry), or None. Stores refuse such a write.
    pub fn changed_fixed_field(&self, new: &JobDocument) -> Option<&'static str> {
        if new.job_type != self.job_type {
            return Some("jobType");
        }
        if new.expires_at != self.expires_at {
            return Some("expiresAt");
        }
        None
    }

    /// How a stored row's indexed columns contradict this document read from the same row
    /// (a hand edit, a bug, a migration), as a sentence; None when they agree. Such a row can
    /// never be written by compare-and-swap, so stores report it instead of retrying.
    pub fn disagreement_with_columns(&self, version: i64, job_type: &str, expires_at: Option<f64>) -> Option<String> {
        let (field, column, json) = if i64::try_from(self.version).ok() != Some(version) {
            ("version", version.to_string(), self.version.to_string())
        } else if self.job_type != job_type {
            ("jobType", format!("{job_type:?}"), format!("{:?}", self.job_type))
        } else if self.expires_at != expires_at {
            ("expiresAt", format!("{expires_at:?}"), format!("{:?}", self.expires_at))
        } else {
            return None;
        };
        Some(format!("its row says {field} {column} but its JSON says {json}; fix or delete the row"))
    }

    fn set_status(&mut self, to: Status) -> Result<(), TransitionError> {
        if !self.status.can_become(to) {
            return Err(TransitionError { uuid: self.uuid.clone(), from: self.status, to });
        }
        self.status = to;
        self.updated_at = now();
        Ok(())
    }

    /// A worker took the job: a new attempt with its own fencing token.
    pub fn start_attempt(&mut self, worker: &str, fence: &str) -> Result<(), TransitionError> {
        self.set_status(Status::Running)?;
        self.attempts += 1;
        self.started_at = Some(self.updated_at);
        self.heartbeat_at = self.started_at;
        self.finished_at = None;
        self.next_run_at = None;
        self.worker = Some(worker.to_owned());
        self.fence = Some(fence.to_owned());
        Ok(())
    }

    pub fn succeed(&mut self) -> Result<(), TransitionError> {
        self.set_status(Status::Succeeded)?;
        self.completeness = 1.0;
        self.finished_at = Some(self.updated_at);
        Ok(())
    }

    /// `run()` asked to run again at `at`: not a failure, the attempt is not held against it.
    pub fn requeue(&mut self, at: f64) -> Result<(), TransitionError> {
        self.set_status(Status::Queued)?;
        self.next_run_at = Some(at);
        Ok(())
    }

    pub fn fail(&mut self) -> Result<(), TransitionError> {
        self.set_status(Status::Failed)?;
        self.finished_at = Some(self.updated_at);
        Ok(())
    }

    /// Engine operation `give up`: a queued job that no worker can start (its type is
    /// unknown to every worker that reserved it) fails without running, with the reason.
    pub fn give_up(&mut self, code: Value, msg: &str) -> Result<(), TransitionError> {
        if self.status != Status::Queued {
            return Err(TransitionError { uuid: self.uuid.clone(), from: self.status, to: Status::Failed });
        }
        self.record_error(code, msg, None);
        self.fail()
    }

    pub fn cancel(&mut self) -> Result<(), TransitionError> {
        self.set_status(Status::Cancelled)?;
        self.finished_at = Some(self.updated_at);
        Ok(())
    }

    /// Whether the job may run again after `failures` failed attempts.
    pub fn retries_left(&self) -> bool {
        self.failures <= self.max_retries
    }

    /// Seconds to wait before retry number `self.failures`: exponential with jitter.
    pub fn retry_backoff(&self, jitter: f64) -> f64 {
        let base = self.queue_kwargs.retry_delay.max(0.0);
        let exp = 2f64.powi(self.failures.saturating_sub(1).min(20) as i32);
        base * exp * (1.0 + jitter.clamp(0.0, 1.0) * 0.25)
    }

    /// Take what the job itself owns (progress, events, errors, results, schema fields)
    /// from `job`'s copy; lifecycle fields stay as the engine has them. Events and errors
    /// may only be appended to (new errors are stamped with the running attempt), and
    /// completeness stays within 0..=1; a write that breaks a rule changes nothing.
    pub fn take_progress_from(&mut self, job: JobDocument) -> Result<(), InvalidJob> {
        if !(0.0..=1.0).contains(&job.completeness) {
            return Err(InvalidJob {
                uuid: self.uuid.clone(),
                field: "completeness",
                reason: format!("must be a number from 0 to 1, got {}", job.completeness),
            });
        }
        appended(&self.uuid, "events", &self.events, &job.events)?;
        let new_errors = appended(&self.uuid, "errors", &self.errors, &job.errors)?.len();
        let attempt = self.attempts;
        self.events = job.events;
        self.errors = job.errors;
        let first_new = self.errors.len() - new_errors;
        for error in &mut self.errors[first_new..] {
            error.attempt = attempt;
        }
        self.completeness = job.completeness;
        self.result_code = job.result_code;
        self.result_string = job.result_string;
        self.log_id = job.log_id;
        self.fields = job.fields;
        self.updated_at = now();
        Ok(())
    }

    /// Engine operation `enqueue`: a new job's lifecycle fields as the engine sets them,
    /// whatever the caller sent; only the job's own fields, progress and options are kept.
    pub fn reset_for_enqueue(&mut self, delay: f64) -> Result<(), InvalidJob> {
        let invalid = |field, reason: String| InvalidJob { uuid: self.uuid.clone(), field, reason };
        if uuid::Uuid::parse_str(&self.uuid).is_err() {
            return Err(invalid("uuid", "must be a UUID (a new job gets one from make_base_job)".into()));
        }
        if !(self.queue_kwargs.ttr.is_finite() && self.queue_kwargs.ttr > 0.0) {
            return Err(invalid(
                "queueKwargs.ttr",
                format!("must be a number of seconds > 0, got {}", self.queue_kwargs.ttr),
            ));
        }
        if !delay.is_finite() || delay < 0.0 {
            return Err(invalid("delay", format!("must be a finite number of seconds >= 0, got {delay}")));
        }
        let at = now();
        let expires_in = self.expires_at.map(|e| e - self.created_at);
        if let Some(lifespan) = expires_in.filter(|l| !l.is_finite() || *l < 0.0) {
            return Err(invalid(
                "expiresAt",
                format!("LIFESPAN must be a finite number of seconds >= 0, got {lifespan}"),
            ));
        }
        self.document_type = default_document_type();
        self.schema_version = default_schema_version();
        self.created_at = at;
        self.updated_at = at;
        self.expires_at = expires_in.map(|l| at + l);
        self.queue_job_id = None;
        self.status = Status::Queued;
        self.attempts = 0;
        self.failures = 0;
        self.started_at = None;
        self.heartbeat_at = None;
        self.finished_at = None;
        self.next_run_at = (delay > 0.0).then_some(at + delay);
        self.worker = None;
        self.version = 0;
        self.fence = None;
        self.cancel_requested = false;
        for error in &mut self.errors {
            error.attempt = 0;
        }
        Ok(())
    }

    /// Engine operation `retry`: a failed or cancelled job goes back in line with its retry
    /// budget renewed; its attempts, events and errors are kept as history.
    pub fn retry(&mut self) -> Result<(), TransitionError> {
        if !matches!(self.status, Status::Failed | Status::Cancelled) {
            return Err(TransitionError { uuid: self.uuid.clone(), from: self.status, to: Status::Queued });
        }
        self.set_status(Status::Queued)?;
        self.failures = 0;
        self.finished_at = None;
        self.next_run_at = None;
        self.fence = None;
        self.worker = None;
        self.cancel_requested = false;
        self.events.push(Event {
            msg: format!("retried after attempt {}", self.attempts),
            action: "retry".into(),
            at: self.updated_at,
        });
        Ok(())
    }

    pub fn record_error(&mut self, code: Value, msg: &str, traceback: Option<String>) {
        self.errors.push(JobError {
            error_code: code,
            msg: msg.to_owned(),
            at: now(),
            attempt: self.attempts,
            traceback,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> JobDocument {
        let raw = serde_json::json!({
            "jobType": "my_job_type", "createdAt": 1.0, "updatedAt": 1.0,
            "uuid": "u-1", "queueKwargs": {"queue": "my_job", "priority": 10, "ttr": 30.0},
            "status": "queued", "maxRetries": 3, "fieldOne": "hello"
        });
        serde_json::from_value(raw).unwrap()
    }

    #[test]
    fn round_trips_with_schema_fields_kept() {
        let doc = sample();
        assert_eq!(doc.fields.get("fieldOne"), Some(&Value::from("hello")));
        let back = JobDocument::from_json(&doc.to_json()).unwrap();
        assert_eq!(back, doc);
        let v: Value = serde_json::from_slice(&doc.to_json()).unwrap();
        assert_eq!(v["fieldOne"], "hello");
        assert_eq!(v["jobType"], "my_job_type");
        assert_eq!(v["documentType"], "job");
    }

    #[test]
    fn timestamps_survive_the_store_exactly() {
        let mut doc = sample();
        doc.updated_at = 1_796_002_004.226_930_1;
        doc.started_at = Some(1_796_002_004.226_930_1);
        let back = JobDocument::from_json(&doc.to_json()).unwrap();
        assert_eq!(back.updated_at.to_bits(), doc.updated_at.to_bits());
        assert_eq!(back, doc);
    }

    #[test]
    fn attempt_then_success() {
        let mut doc = sample();
        doc.start_attempt("w1", "f1").unwrap();
        assert_eq!((doc.status, doc.attempts), (Status::Running, 1));
        assert_eq!(doc.fence.as_deref(), Some("f1"));
        doc.succeed().unwrap();
        assert_eq!(doc.completeness, 1.0);
        assert!(doc.finished_at.is_some());
        assert!(doc.start_attempt("w2", "f2").is_err());
    }

    #[test]
    fn retries_follow_max_retries() {
        let mut doc = sample();
        doc.max_retries = 1;
        doc.start_attempt("w", "a").unwrap();
        doc.failures = 1;
        assert!(doc.retries_left());
        doc.requeue(0.0).unwrap();
        doc.start_attempt("w", "b").unwrap();
        doc.failures = 2;
        assert!(!doc.retries_left());
    }

    #[test]
    fn backoff_grows_and_zero_means_now() {
        let mut doc = sample();
        doc.queue_kwargs.retry_delay = 2.0;
        doc.failures = 1;
        assert_eq!(doc.retry_backoff(0.0), 2.0);
        doc.failures = 3;
        assert_eq!(doc.retry_backoff(0.0), 8.0);
        assert!(doc.retry_backoff(1.0) <= 10.0);
        doc.queue_kwargs.retry_delay = 0.0;
        assert_eq!(doc.retry_backoff(1.0), 0.0);
    }

    #[test]
    fn progress_from_the_job_cannot_touch_lifecycle_fields() {
        let mut engine = sample();
        engine.start_attempt("w", "f").unwrap();
        let mut job = engine.clone();
        job.status = Status::Succeeded;
        job.attempts = 99;
        job.fence = Some("forged".into());
        job.completeness = 0.5;
        job.fields.insert("fieldOne".into(), Value::from("changed"));
        engine.take_progress_from(job).unwrap();
        assert_eq!((engine.status, engine.attempts), (Status::Running, 1));
        assert_eq!(engine.fence.as_deref(), Some("f"));
        assert_eq!(engine.completeness, 0.5);
        assert_eq!(engine.fields["fieldOne"], "changed");
    }

    #[test]
    fn progress_may_only_append_to_the_history() {
        let mut engine = sample();
        engine.start_attempt("w", "f").unwrap();
        engine.record_error(Value::from("worker-lost"), "attempt 0 did not finish", None);
        let mut job = engine.clone();
        job.errors.clear();
        let err = engine.take_progress_from(job).unwrap_err();
        assert_eq!(err.field, "errors");
        assert_eq!(engine.errors.len(), 1);

        let mut job = engine.clone();
        job.errors.push(JobError { error_code: 1.into(), msg: "mine".into(), at: 0.0, attempt: 99, traceback: None });
        job.events.push(Event { msg: "half way".into(), action: String::new(), at: 0.0 });
        engine.take_progress_from(job).unwrap();
        assert_eq!((engine.errors.len(), engine.errors[1].attempt, engine.events.len()), (2, 1, 1));

        let mut job = engine.clone();
        job.completeness = f64::NAN;
        assert_eq!(engine.take_progress_from(job).unwrap_err().field, "completeness");
    }

    #[test]
    fn enqueue_sets_every_lifecycle_field_itself() {
        let mut doc = sample();
        doc.uuid = "7f1c1a52-52a4-4bb5-9d25-55f3ab0e3a39".into();
        doc.status = Status::Succeeded;
        doc.attempts = 7;
        doc.fence = Some("forged".into());
        doc.version = 9;
        doc.created_at = 100.0;
        doc.expires_at = Some(160.0);
        doc.reset_for_enqueue(0.0).unwrap();
        assert_eq!((doc.status, doc.attempts, doc.version, doc.fence.clone()), (Status::Queued, 0, 0, None));
        assert_eq!(doc.expires_at, Some(doc.created_at + 60.0));
        doc.uuid = "u-1".into();
        assert_eq!(doc.reset_for_enqueue(0.0).unwrap_err().field, "uuid");
    }

    #[test]
    fn retry_renews_the_budget_of_a_failed_job_only() {
        let mut doc = sample();
        assert!(doc.retry().is_err());
        doc.start_attempt("w", "f").unwrap();
        doc.failures = 4;
        doc.fail().unwrap();
        doc.retry().unwrap();
        assert_eq!((doc.status, doc.failures, doc.attempts), (Status::Queued, 0, 1));
        assert_eq!(doc.events.last().map(|e| e.action.as_str()), Some("retry"));
        doc.start_attempt("w", "g").unwrap();
        doc.succeed().unwrap();
        assert!(doc.retry().is_err());
    }

    #[test]
    fn malformed_document_names_the_field() {
        let err = JobDocument::from_json(br#"{"jobType": 5}"#).unwrap_err();
        assert!(err.to_string().contains("jobType") || err.to_string().contains("string"), "{err}");
    }
}
