//! Coalesced progress of one attempt: a running job may report progress as often as it
//! likes; the store sees at most one write per interval, always the latest state.
//! Bookkeeping only: the heartbeat does the writing.

use std::time::Duration;

use tokio::time::Instant;

use crate::model::JobDocument;

pub struct Coalescer {
    latest: Option<JobDocument>,
    next_write: Instant,
    interval: Duration,
}

impl Coalescer {
    /// The first state may be written as soon as it comes, from `now` on.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self { latest: None, next_write: now, interval }
    }

    /// Keep `doc` as the latest state. True when a write is due now and none was waiting,
    /// so the writer should be woken; otherwise it writes at the due time it already knows.
    pub fn submit(&mut self, doc: JobDocument, now: Instant) -> bool {
        let first = self.latest.replace(doc).is_none();
        first && now >= self.next_write
    }

    /// When the waiting state may be written, if one is waiting.
    pub fn due(&self) -> Option<Instant> {
        self.latest.as_ref().map(|_| self.next_write)
    }

    /// The state to write now, if one is waiting and the interval has passed.
    pub fn take_due(&mut self, now: Instant) -> Option<JobDocument> {
        if now < self.next_write {
            return None;
        }
        let doc = self.latest.take()?;
        self.next_write = now + self.interval;
        Some(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(attempts: u32) -> JobDocument {
        serde_json::from_value(serde_json::json!({
            "jobType": "t", "createdAt": 1.0, "updatedAt": 1.0, "uuid": "u",
            "queueKwargs": {"queue": "q", "priority": 1, "ttr": 5.0},
            "status": "running", "attempts": attempts
        }))
        .unwrap()
    }

    #[test]
    fn at_most_one_write_per_interval_and_always_the_latest() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(1), t0);
        assert!(c.submit(doc(1), t0), "the first state is due at once");
        assert_eq!(c.take_due(t0).map(|d| d.attempts), Some(1));
        assert!(!c.submit(doc(2), t0), "the next one waits for the interval");
        assert!(!c.submit(doc(3), t0));
        assert_eq!(c.due(), Some(t0 + Duration::from_secs(1)));
        assert!(c.take_due(t0 + Duration::from_millis(999)).is_none());
        assert_eq!(c.take_due(t0 + Duration::from_secs(1)).map(|d| d.attempts), Some(3));
        assert_eq!(c.due(), None);
    }
}
