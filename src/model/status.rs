//! The job lifecycle, written down once (see docs/lifecycle.md).
//! Pure data and rules: touches no store, queue or Python.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a job stands. `queued` → `running` → one terminal state;
/// `running` → `queued` again on requeue or retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] =
        [Status::Queued, Status::Running, Status::Succeeded, Status::Failed, Status::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// A terminal document is never run again; a reservation of it is just deleted.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }

    /// The lifecycle table's edges. Every status write goes through this check.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        match (self, next) {
            (Queued, Running) | (Queued, Cancelled) | (Queued, Queued) => true,
            // No worker can start it (its type is unknown everywhere it was reserved).
            (Queued, Failed) => true,
            (Running, Queued) | (Running, Running) => true,
            (Running, Succeeded) | (Running, Failed) | (Running, Cancelled) => true,
            // A sweep or a manual retry may put a finished job back in line.
            (Failed, Queued) | (Cancelled, Queued) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            format!("unknown job status {s:?} (expected one of queued, running, succeeded, failed, cancelled)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_do_not_run_again() {
        for st in [Status::Succeeded, Status::Failed, Status::Cancelled] {
            assert!(st.is_terminal());
            assert!(!st.can_become(Status::Running), "{st} -> running");
        }
        assert!(!Status::Queued.is_terminal());
        assert!(!Status::Running.is_terminal());
    }

    #[test]
    fn queued_cannot_succeed_without_running() {
        assert!(!Status::Queued.can_become(Status::Succeeded));
        assert!(Status::Queued.can_become(Status::Cancelled));
    }

    #[test]
    fn parses_its_own_names_only() {
        for st in Status::ALL {
            assert_eq!(st.as_str().parse::<Status>().unwrap(), st);
        }
        assert!("done".parse::<Status>().unwrap_err().contains("done"));
    }
}
