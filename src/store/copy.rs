//! Copying every job document from one store to another (`python -m geyser.store copy`), so a
//! team can move from the embedded file to PostgreSQL or Redis. Reads the source through
//! `Store::list` in uuid order, a page at a time, and writes through `Store::import`, which
//! keeps each document exactly (version and timestamps included). Touches documents only:
//! never leases, never a queue.
//!
//! - **Idempotent.** A document the target already holds unchanged is skipped; one the target
//!   holds at a lower version is replaced (the source moved on since an earlier copy); one the
//!   target holds differently at the same or a higher version is a conflict, reported and left
//!   alone unless `overwrite` says to replace it. Every replace is a compare-and-swap on the
//!   version just read, so a worker writing to the target meanwhile is never overwritten blind.
//! - **Resumable.** Progress names the last uuid up to which every document is done; a copy
//!   started with `after` set to it carries on from there (and one started again from the
//!   beginning skips what is already there).
//! - **Unreadable documents** in the source are reported by uuid and skipped: a page that holds
//!   one is read again one document at a time. A document the target refuses (`Backend`: e.g.
//!   PostgreSQL cannot hold U+0000) is reported and skipped too. A store that is unavailable
//!   stops the copy with the resume point.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ListFilter, Page, Store, StoreError, StoreResult, MAX_CONFLICTS};
use crate::model::JobDocument;

/// Documents read from the source per `list` call unless told otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 500;
/// Documents written to the target at the same time (each a read and at most one write).
const IN_FLIGHT: usize = 16;

/// What to copy and how.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Start after this uuid (a resume point printed by an earlier copy); None: from the first.
    pub after: Option<String>,
    /// Documents per page read from the source (at least 1).
    pub page_size: usize,
    /// Replace a different document the target holds at the same or a higher version.
    pub overwrite: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self { after: None, page_size: DEFAULT_PAGE_SIZE, overwrite: false }
    }
}

/// How far a copy has come.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Documents read from the source, unreadable ones included.
    pub read: u64,
    /// Written to the target: new there, or replacing an older version.
    pub copied: u64,
    /// Already in the target, unchanged.
    pub skipped: u64,
    /// The target holds a different document at the same or a higher version; left alone.
    pub conflicting: u64,
    /// Unreadable in the source; skipped.
    pub unreadable: u64,
    /// Refused by the target; skipped.
    pub refused: u64,
    /// Every document up to this uuid (source order) is done: resume after it.
    pub last_uuid: Option<String>,
    /// Time since the copy started.
    pub elapsed: Duration,
}

impl Progress {
    /// Documents read per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.read as f64 / secs
        } else {
            0.0
        }
    }

    /// Documents that were not copied for a reason the user should look at.
    pub fn problems(&self) -> u64 {
        self.conflicting + self.unreadable + self.refused
    }
}

/// Why one document was not copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    Conflict,
    Unreadable,
    Refused,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Conflict => "conflict",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::Refused => "refused",
        }
    }
}

/// What the copy tells its caller as it goes.
#[derive(Debug)]
pub enum CopyEvent<'a> {
    /// A page is done; `last_uuid` is the resume point.
    Page(&'a Progress),
    /// One document was not copied, and why.
    Problem { uuid: &'a str, kind: ProblemKind, reason: &'a str },
}

/// Why a copy stopped before the end; each carries how far it came (resume after `last_uuid`).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("reading the source store: {source}")]
    Source { progress: Progress, source: StoreError },
    #[error("writing job {uuid} to the target store: {source}")]
    Target { progress: Progress, uuid: String, source: StoreError },
    #[error("stopped by the caller")]
    Stopped { progress: Progress },
}

impl CopyError {
    pub fn progress(&self) -> &Progress {
        match self {
            CopyError::Source { progress, .. }
            | CopyError::Target { progress, .. }
            | CopyError::Stopped { progress } => progress,
        }
    }
}

/// The callback a copy reports to; returning false stops the copy (`CopyError::Stopped`).
pub type Report<'r> = &'r mut (dyn FnMut(CopyEvent<'_>) -> bool + Send);

/// One entry of a source page.
enum Row {
    Doc(Box<JobDocument>),
    Unreadable { uuid: String, reason: String },
}

impl Row {
    fn uuid(&self) -> &str {
        match self {
            Row::Doc(doc) => &doc.uuid,
            Row::Unreadable { uuid, .. } => uuid,
        }
    }
}

/// What became of one document.
enum Outcome {
    Copied,
    Skipped,
    Problem(ProblemKind, String),
}

/// Copies every document of `from` (after `options.after`) into `to`; see the module notes.
/// Returns the final progress, or why it stopped and how far it came.
pub async fn copy_documents(
    from: Arc<dyn Store>,
    to: Arc<dyn Store>,
    options: &CopyOptions,
    report: Report<'_>,
) -> Result<Progress, CopyError> {
    let started = Instant::now();
    let limit = options.page_size.max(1);
    let mut progress = Progress { last_uuid: options.after.clone(), ..Progress::default() };
    loop {
        let rows = match read_page(from.as_ref(), progress.last_uuid.clone(), limit).await {
            Ok(rows) => rows,
            Err(source) => {
                progress.elapsed = started.elapsed();
                return Err(CopyError::Source { progress, source });
            }
        };
        if rows.is_empty() {
            progress.elapsed = started.elapsed();
            return Ok(progress);
        }
        for chunk in rows.chunks(IN_FLIGHT) {
            let outcomes = write_chunk(&to, chunk, options.overwrite).await;
            let mut go_on = true;
            for (row, outcome) in chunk.iter().zip(outcomes) {
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(source) => {
                        progress.elapsed = started.elapsed();
                        return Err(CopyError::Target { progress, uuid: row.uuid().to_owned(), source });
                    }
                };
                progress.read += 1;
                match outcome {
                    Outcome::Copied => progress.copied += 1,
                    Outcome::Skipped => progress.skipped += 1,
                    Outcome::Problem(kind, reason) => {
                        match kind {
                            ProblemKind::Conflict => progress.conflicting += 1,
                            ProblemKind::Unreadable => progress.unreadable += 1,
                            ProblemKind::Refused => progress.refused += 1,
                        }
                        go_on &= report(CopyEvent::Problem { uuid: row.uuid(), kind, reason: &reason });
                    }
                }
            }
            progress.last_uuid = chunk.last().map(|row| row.uuid().to_owned());
            if !go_on {
                progress.elapsed = started.elapsed();
                return Err(CopyError::Stopped { progress });
            }
        }
        progress.elapsed = started.elapsed();
        if !report(CopyEvent::Page(&progress)) {
            return Err(CopyError::Stopped { progress });
        }
    }
}

/// The next page of the source after `after`. A page holding an unreadable document fails
/// whole (`Corrupt`), so it is read again one document at a time, each unreadable one in its
/// place.
async fn read_page(from: &dyn Store, after: Option<String>, limit: usize) -> StoreResult<Vec<Row>> {
    let all = ListFilter::default();
    match from.list(&all, &Page { after: after.clone(), limit, newest_first: false }).await {
        Ok(docs) => return Ok(docs.into_iter().map(|doc| Row::Doc(Box::new(doc))).collect()),
        Err(StoreError::Corrupt { .. }) => {}
        Err(e) => return Err(e),
    }
    let mut rows = Vec::new();
    let mut after = after;
    while rows.len() < limit {
        let row = match from.list(&all, &Page { after: after.clone(), limit: 1, newest_first: false }).await {
            Ok(mut docs) => match docs.pop() {
                Some(doc) => Row::Doc(Box::new(doc)),
                None => break,
            },
            Err(e) => match &e {
                StoreError::Corrupt { uuid, .. } => Row::Unreadable { uuid: uuid.clone(), reason: e.to_string() },
                _ => return Err(e),
            },
        };
        after = Some(row.uuid().to_owned());
        rows.push(row);
    }
    Ok(rows)
}

/// A row's outcome: known without writing (unreadable), or a write under way.
enum Pending {
    Known(Outcome),
    Task(tokio::task::JoinHandle<StoreResult<Outcome>>),
}

/// Writes a chunk of rows to the target at the same time; outcomes in the rows' order.
async fn write_chunk(to: &Arc<dyn Store>, chunk: &[Row], overwrite: bool) -> Vec<StoreResult<Outcome>> {
    let pending: Vec<_> = chunk
        .iter()
        .map(|row| match row {
            Row::Doc(doc) => {
                let (to, doc) = (Arc::clone(to), doc.clone());
                Pending::Task(tokio::spawn(async move { copy_one(to.as_ref(), &doc, overwrite).await }))
            }
            Row::Unreadable { reason, .. } => Pending::Known(Outcome::Problem(ProblemKind::Unreadable, reason.clone())),
        })
        .collect();
    let mut outcomes = Vec::with_capacity(chunk.len());
    for (row, pending) in chunk.iter().zip(pending) {
        outcomes.push(match pending {
            Pending::Known(outcome) => Ok(outcome),
            Pending::Task(task) => task.await.unwrap_or_else(|e| {
                Err(StoreError::Unavailable(format!("copying job {}: the writing task failed: {e}", row.uuid())))
            }),
        });
    }
    outcomes
}

/// Puts one document into the target: inserted, replacing an older version (or any, with
/// `overwrite`), skipped when already there, or a problem. Each write names what it read, so
/// a concurrent writer makes it read again (at most `MAX_CONFLICTS` times). An error is the
/// target failing as a whole (it stops the copy).
async fn copy_one(to: &dyn Store, doc: &JobDocument, overwrite: bool) -> StoreResult<Outcome> {
    for _ in 0..MAX_CONFLICTS {
        let stored = match to.get(&doc.uuid).await {
            Ok(stored) => stored,
            Err(e @ (StoreError::Corrupt { .. } | StoreError::Inconsistent { .. })) => {
                let reason = format!("the target's document is unreadable, left alone: {e}");
                return Ok(Outcome::Problem(ProblemKind::Conflict, reason));
            }
            Err(e) => return Err(e),
        };
        let replacing = match stored {
            None => None,
            Some(stored) if stored == *doc => return Ok(Outcome::Skipped),
            Some(stored) if overwrite || stored.version < doc.version => Some(stored.version),
            Some(stored) => {
                let reason = format!(
                    "the target holds a different document at version {} (the source's is at version {}); \
                     left alone (--overwrite replaces it)",
                    stored.version, doc.version
                );
                return Ok(Outcome::Problem(ProblemKind::Conflict, reason));
            }
        };
        match to.import(doc, replacing).await {
            Ok(_) => return Ok(Outcome::Copied),
            Err(StoreError::AlreadyExists(_) | StoreError::Conflict { .. } | StoreError::NotFound(_)) => continue,
            Err(e @ (StoreError::Backend { .. } | StoreError::Corrupt { .. } | StoreError::Inconsistent { .. })) => {
                return Ok(Outcome::Problem(ProblemKind::Refused, e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    let reason = format!("the target's document kept changing under the copy ({MAX_CONFLICTS} tries); left alone");
    Ok(Outcome::Problem(ProblemKind::Conflict, reason))
}
