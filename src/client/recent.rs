//! The documents a client last handed its callers, by uuid and version, so that
//! `Geyser::save` of one of them can take the lifecycle fields from here and write with one
//! compare-and-swap instead of a read and a swap. Bounded by entries and by bytes, least
//! recently handed out dropped first. Plain memory: touches no store, no queue.

use std::collections::{BTreeMap, HashMap};
use std::mem::size_of;
use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value};

use crate::model::{Event, JobDocument, JobError};

/// At most this many documents are remembered (docs/stores.md "Saving a document").
pub const MAX_ENTRIES: usize = 10_000;
/// At most this many bytes of documents, as `held_bytes` counts them.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// A document larger than this share of the byte bound is not remembered: it would push out
/// many small ones, and one more read is little beside writing it.
const LARGEST_SHARE: usize = 16;
/// What a map entry costs beside its key and value (the map's own bookkeeping), roughly.
const MAP_ENTRY: usize = 16;

/// How the memory is used and how often it answered, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecentStats {
    pub entries: usize,
    pub bytes: usize,
    /// `take` calls that found the document at the version asked for.
    pub hits: u64,
    /// `take` calls that did not.
    pub misses: u64,
}

/// Recently handed-out documents, at most one version per uuid (the highest seen).
pub struct Recent {
    max_entries: usize,
    max_bytes: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    docs: HashMap<String, Entry>,
    /// uuids by when they were last remembered, oldest first.
    order: BTreeMap<u64, String>,
    next_tick: u64,
    bytes: usize,
    hits: u64,
    misses: u64,
}

struct Entry {
    doc: JobDocument,
    bytes: usize,
    tick: u64,
}

impl State {
    fn remove(&mut self, uuid: &str) -> Option<Entry> {
        let entry = self.docs.remove(uuid)?;
        self.order.remove(&entry.tick);
        self.bytes -= entry.bytes;
        Some(entry)
    }
}

/// The memory a copy of `doc` holds, estimated without writing it out (a copy is made for
/// every document handed out, so this must cost far less than the copy): the document
/// itself, and every string and JSON value it owns with the fixed size of each.
fn held_bytes(doc: &JobDocument) -> usize {
    let owned = |s: &String| s.len();
    let optional = |s: &Option<String>| s.as_ref().map_or(0, owned);
    let event = |e: &Event| size_of::<Event>() + e.msg.len() + e.action.len();
    let error =
        |e: &JobError| size_of::<JobError>() + e.msg.len() + optional(&e.traceback) + value_bytes(&e.error_code);
    size_of::<JobDocument>()
        + [&doc.document_type, &doc.job_type, &doc.uuid, &doc.result_string, &doc.queue_kwargs.queue]
            .into_iter()
            .map(owned)
            .sum::<usize>()
        + [&doc.log_id, &doc.queue_job_id, &doc.worker, &doc.fence].into_iter().map(optional).sum::<usize>()
        + doc.events.iter().map(event).sum::<usize>()
        + doc.errors.iter().map(error).sum::<usize>()
        + doc.result_code.as_ref().map_or(0, value_bytes)
        + map_bytes(&doc.fields)
}

fn value_bytes(value: &Value) -> usize {
    size_of::<Value>()
        + match value {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(value_bytes).sum(),
            Value::Object(map) => map_bytes(map),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
}

fn map_bytes(map: &Map<String, Value>) -> usize {
    map.iter().map(|(key, value)| MAP_ENTRY + size_of::<String>() + key.len() + value_bytes(value)).sum()
}

impl Default for Recent {
    fn default() -> Self {
        Self::new(MAX_ENTRIES, MAX_BYTES)
    }
}

impl Recent {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self { max_entries, max_bytes, state: Mutex::default() }
    }

    /// The state; a panic elsewhere while it was held left every entry whole (each change
    /// below is a few map operations that do not panic but on allocation failure).
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remember `doc` as the store holds it at `doc.version`, unless a higher version of the
    /// job is remembered already; drops the least recently remembered documents beyond the
    /// bounds. Only a document exactly as a store returned or wrote it may be remembered.
    pub fn remember(&self, doc: JobDocument) {
        let bytes = held_bytes(&doc);
        if bytes > self.max_bytes / LARGEST_SHARE {
            self.forget(&doc.uuid); // an older version is of no use either
            return;
        }
        if self.max_entries == 0 {
            return;
        }
        let mut state = self.state();
        if state.docs.get(&doc.uuid).is_some_and(|old| old.doc.version > doc.version) {
            return;
        }
        state.remove(&doc.uuid);
        while state.docs.len() >= self.max_entries || state.bytes + bytes > self.max_bytes {
            let Some((_, oldest)) = state.order.pop_first() else { break };
            if let Some(entry) = state.docs.remove(&oldest) {
                state.bytes -= entry.bytes;
            }
        }
        let tick = state.next_tick;
        state.next_tick += 1;
        state.order.insert(tick, doc.uuid.clone());
        state.bytes += bytes;
        state.docs.insert(doc.uuid.clone(), Entry { doc, bytes, tick });
    }

    /// The remembered document of job `uuid` at `version`, taken out (a save moves the job
    /// past it either way); None if that version is not remembered.
    pub fn take(&self, uuid: &str, version: u64) -> Option<JobDocument> {
        let mut state = self.state();
        let found = state.docs.get(uuid).is_some_and(|e| e.doc.version == version);
        let taken = if found { state.remove(uuid).map(|e| e.doc) } else { None };
        match taken {
            Some(_) => state.hits += 1,
            None => state.misses += 1,
        }
        taken
    }

    /// Forget job `uuid` (it was deleted).
    pub fn forget(&self, uuid: &str) {
        self.state().remove(uuid);
    }

    pub fn stats(&self) -> RecentStats {
        let state = self.state();
        RecentStats { entries: state.docs.len(), bytes: state.bytes, hits: state.hits, misses: state.misses }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(uuid: &str, version: u64, padding: usize) -> JobDocument {
        let mut doc: JobDocument = serde_json::from_value(serde_json::json!({
            "documentType": "job", "jobType": "t", "schemaVersion": 1, "uuid": uuid,
            "createdAt": 1.0, "updatedAt": 1.0, "status": "queued", "queueKwargs": {"queue": "q", "priority": 1, "ttr": 30.0}, "pad": "x".repeat(padding),
        }))
        .expect("a job document");
        doc.version = version;
        doc
    }

    #[test]
    fn takes_only_the_version_remembered() {
        let recent = Recent::default();
        recent.remember(doc("a", 3, 0));
        assert!(recent.take("a", 2).is_none());
        assert!(recent.take("b", 3).is_none());
        assert_eq!(recent.take("a", 3).map(|d| d.version), Some(3));
        assert!(recent.take("a", 3).is_none(), "taken out");
        let stats = recent.stats();
        assert_eq!((stats.entries, stats.bytes, stats.hits, stats.misses), (0, 0, 1, 3));
    }

    #[test]
    fn keeps_the_highest_version_of_a_job() {
        let recent = Recent::default();
        recent.remember(doc("a", 3, 0));
        recent.remember(doc("a", 2, 0));
        assert!(recent.take("a", 2).is_none());
        recent.remember(doc("a", 4, 0));
        assert_eq!(recent.stats().entries, 1);
        assert_eq!(recent.take("a", 4).map(|d| d.version), Some(4));
    }

    #[test]
    fn stays_within_its_entry_bound_dropping_the_oldest() {
        let recent = Recent::new(100, MAX_BYTES);
        for i in 0..1000 {
            recent.remember(doc(&format!("u{i}"), 1, 0));
            assert!(recent.stats().entries <= 100);
        }
        assert_eq!(recent.stats().entries, 100);
        assert!(recent.take("u899", 1).is_none());
        assert!(recent.take("u900", 1).is_some());
        assert!(recent.take("u999", 1).is_some());
    }

    #[test]
    fn stays_within_its_byte_bound() {
        let one = held_bytes(&doc("u0000", 1, 1000));
        let bound = one * 16 * 3 / 2;
        let recent = Recent::new(MAX_ENTRIES, bound);
        for i in 0..1000 {
            recent.remember(doc(&format!("u{i:04}"), 1, 1000));
            let stats = recent.stats();
            assert!(stats.bytes <= bound, "{stats:?}");
        }
        let stats = recent.stats();
        assert_eq!((stats.entries, stats.bytes), (24, 24 * one));
        // Taking and forgetting give their bytes back.
        assert!(recent.take("u0999", 1).is_some());
        recent.forget("u0998");
        assert_eq!(recent.stats().bytes, 22 * one);
    }

    #[test]
    fn counts_every_string_and_value_the_document_holds() {
        let small = held_bytes(&doc("a", 1, 0));
        assert!(held_bytes(&doc("a", 1, 5000)) >= small + 5000, "a field's text");
        let mut d = doc("a", 1, 0);
        d.events.push(Event { msg: "m".repeat(3000), action: String::new(), at: 0.0 });
        d.errors.push(JobError {
            error_code: Value::from("e".repeat(2000)),
            msg: String::new(),
            at: 0.0,
            attempt: 1,
            traceback: Some("t".repeat(1000)),
        });
        d.result_string = "r".repeat(500);
        d.fields.insert("nested".into(), serde_json::json!({"deep": ["x".repeat(700)]}));
        assert!(held_bytes(&d) >= small + 3000 + 2000 + 1000 + 500 + 700);
    }

    #[test]
    fn does_not_remember_a_document_too_large_for_its_share() {
        let recent = Recent::new(MAX_ENTRIES, 16 * 1024);
        recent.remember(doc("a", 1, 10));
        recent.remember(doc("a", 2, 2000));
        assert_eq!(recent.stats().entries, 0, "the large one is not kept, nor the older version");
    }
}
