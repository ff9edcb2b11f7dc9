//! What one maintenance run did, and its problems: counted, and logged up to a bound per run
//! (each line cut to a bounded length), so a thousand bad documents make a few log lines and
//! a count, not a thousand lines. Pure bookkeeping; touches nothing else.

/// Problem lines logged (and kept in the report) per run; the rest are only counted.
pub const MAX_LOGGED: usize = 20;
/// Characters of one problem line kept; an error quoting a large payload is cut here.
const MAX_LINE: usize = 300;

/// What one run of the maintenance service did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SweepReport {
    /// This process held the lease and ran the tasks (false: another process leads).
    pub leader: bool,
    /// Who holds the lease, as last seen (None for a run without a lease).
    pub holder: Option<String>,
    /// The lease was lost during the run, which stopped early.
    pub lease_lost: bool,
    /// `queued` documents that had no queue entry and were put again.
    pub requeued: u64,
    /// `running` documents whose reservation was gone: failed or put again.
    pub recovered: u64,
    /// Documents past their `expiresAt` (the job class's LIFESPAN), forgotten.
    pub purged: u64,
    /// Stored documents that cannot be read, skipped.
    pub unreadable: u64,
    /// Documents not looked at because the queue server holding their entry is down.
    pub skipped: u64,
    /// Failures of single items (a document, a queue server, a store call), each skipped.
    pub errors: u64,
    /// The first `MAX_LOGGED` problem lines of the run, as logged.
    pub problems: Vec<String>,
}

/// A run's report while it is being filled in, and how many problem lines went unlogged.
#[derive(Debug, Default)]
pub struct Tally {
    pub report: SweepReport,
    unlogged: u64,
}

impl Tally {
    /// One failed item: counted in `errors` and noted.
    pub fn error(&mut self, problem: String) {
        self.report.errors += 1;
        self.note(problem);
    }

    /// One unreadable document, skipped: counted in `unreadable` and noted.
    pub fn unreadable(&mut self, uuid: &str, why: &dyn std::fmt::Display) {
        self.report.unreadable += 1;
        self.note(format!("job {uuid}: skipped: {why}"));
    }

    fn note(&mut self, mut problem: String) {
        if self.report.problems.len() >= MAX_LOGGED {
            self.unlogged += 1;
            return;
        }
        if let Some((cut, _)) = problem.char_indices().nth(MAX_LINE) {
            problem.truncate(cut);
            problem.push_str(" [cut]");
        }
        log::warn!("maintenance: {problem}");
        self.report.problems.push(problem);
    }

    /// The finished report; logs how many problem lines were left out.
    pub fn finish(self) -> SweepReport {
        if self.unlogged > 0 {
            log::warn!("maintenance: {} more problems in this run, counted but not logged", self.unlogged);
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_past_the_bound_are_counted_not_kept() {
        let mut tally = Tally::default();
        for i in 0..MAX_LOGGED + 5 {
            tally.error(format!("problem {i}"));
        }
        tally.unreadable("u-1", &"bad json");
        let report = tally.finish();
        assert_eq!((report.errors, report.unreadable), (MAX_LOGGED as u64 + 5, 1));
        assert_eq!(report.problems.len(), MAX_LOGGED);
        assert_eq!(report.problems[0], "problem 0");
    }

    #[test]
    fn a_long_problem_line_is_cut() {
        let mut tally = Tally::default();
        tally.error("é".repeat(10_000));
        let line = &tally.finish().problems[0];
        assert_eq!(line.chars().count(), MAX_LINE + " [cut]".len());
    }
}
