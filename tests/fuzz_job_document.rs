//! Property tests (fuzzing) of the job-document decoder, `JobDocument::from_json`, the one
//! way every store reads a document back: arbitrary bytes, arbitrary JSON values, and valid
//! documents with fields removed or given arbitrary values. Pure: no store, no queue.
//!
//! 10,000 cases per property on bytes, 2,000 on whole documents (`DOCUMENT_CASES`), unless
//! `PROPTEST_CASES` says otherwise.

use geyser::model::{JobDocument, INTERNAL_FIELDS, MAX_ERROR_LEN};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

#[path = "support/proptest_cases.rs"]
mod proptest_cases;
use proptest_cases::config;

/// Cases of a property that builds whole documents: 2,000 keep each such property to a
/// few seconds in a debug build (a case costs about 1 ms there, 10 times a decode of bytes).
const DOCUMENT_CASES: u32 = 2_000;

/// Any Unicode text of up to `max` characters (cheaper to make than a regex strategy).
fn text(max: usize) -> impl Strategy<Value = String> + Clone {
    vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

/// A name of 1 to `max` characters from `a..=z` and `_`.
fn name(max: usize) -> impl Strategy<Value = String> + Clone {
    vec(prop_oneof![b'a'..=b'z', Just(b'_')], 1..=max).prop_map(|b| b.into_iter().map(char::from).collect())
}

/// Any JSON value: every scalar kind (integers over the whole i64 and u64 ranges, any finite
/// float, any Unicode text), nested arrays and objects, keys that are field names or not.
fn any_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![proptest::sample::select(INTERNAL_FIELDS).prop_map(str::to_owned), name(12), text(12),];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
        text(24).prop_map(Value::from),
        proptest::sample::select(&["queued", "running", "succeeded", "failed", "cancelled"][..]).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `n` written as a UUID.
fn uuid_text(n: u128) -> String {
    let hex = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// A valid stored document with random values of the right types in every field, and
/// schema fields of any JSON value.
fn valid_document() -> impl Strategy<Value = Map<String, Value>> {
    let time = 0.0..4e9f64;
    let maybe_time = proptest::option::of(time.clone());
    let event =
        (text(30), name(8), time.clone()).prop_map(|(msg, action, at)| json!({"msg": msg, "action": action, "at": at}));
    let error = (any::<i64>(), text(30), time.clone(), any::<u32>(), proptest::option::of(text(60)))
        .prop_map(|(code, msg, at, attempt, tb)| json!({"errorCode": code, "msg": msg, "at": at, "attempt": attempt, "traceback": tb}));
    let status = proptest::sample::select(&["queued", "running", "succeeded", "failed", "cancelled"][..]);
    let lifecycle = (
        (name(20), time.clone(), time.clone(), any::<u128>().prop_map(uuid_text), status),
        (name(10), any::<u32>(), 0.001..1e6f64, 0.0..1e4f64, proptest::option::of(0.001..1e6f64)),
        (vec(event, 0..4), vec(error, 0..3), 0.0..=1.0f64, any::<u32>(), any::<u32>(), any::<u64>()),
        (maybe_time.clone(), maybe_time.clone(), maybe_time.clone(), maybe_time, proptest::option::of(name(20))),
    );
    let schema_fields = btree_map(name(15), any_json(), 0..5);
    (lifecycle, schema_fields).prop_map(|(((job_type, created, updated, uuid, status), kw, history, times), extra)| {
        let (queue, priority, ttr, retry_delay, timeout) = kw;
        let (events, errors, completeness, attempts, failures, version) = history;
        let (started, heartbeat, finished, expires, fence) = times;
        let mut doc = json!({
            "documentType": "job", "jobType": job_type, "schemaVersion": 1, "createdAt": created,
            "updatedAt": updated, "uuid": uuid, "logId": null,
            "queueKwargs": {"queue": queue, "priority": priority, "ttr": ttr, "retryDelay": retry_delay, "timeout": timeout},
            "queueJobId": "0:1", "events": events, "errors": errors, "completeness": completeness,
            "resultCode": null, "resultString": "", "status": status, "attempts": attempts, "failures": failures,
            "maxRetries": 3, "startedAt": started, "heartbeatAt": heartbeat, "finishedAt": finished,
            "nextRunAt": null, "worker": "host:1", "version": version, "fence": fence, "cancelRequested": false,
            "expiresAt": expires,
        });
        let Value::Object(map) = &mut doc else { unreachable!("json! of an object") };
        for (key, value) in extra {
            map.entry(key).or_insert(value);
        }
        std::mem::take(map)
    })
}

/// What must hold for a decoded document: it re-encodes to JSON that decodes to the same
/// document (and encodes to the same bytes again), and no top-level key of the input is lost.
fn check_round_trip(input: &Map<String, Value>, doc: &JobDocument) -> Result<(), TestCaseError> {
    let bytes = doc.to_json();
    let again =
        JobDocument::from_json(&bytes).map_err(|e| TestCaseError::fail(format!("re-encoded document refused: {e}")))?;
    prop_assert_eq!(&again, doc);
    prop_assert_eq!(again.to_json(), bytes.clone());
    let encoded: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (key, value) in input {
        prop_assert!(encoded.contains_key(key), "key {:?} lost", key);
        if !INTERNAL_FIELDS.contains(&key.as_str()) {
            prop_assert_eq!(&encoded[key], value, "schema field {:?} changed", key);
        }
    }
    Ok(())
}

/// An error is one line of text, without control characters, of bounded length; returns it.
fn check_error(error: &serde_json::Error) -> Result<String, TestCaseError> {
    let text = error.to_string();
    prop_assert!(!text.is_empty() && !text.chars().any(char::is_control), "{:?}", text);
    prop_assert!(text.chars().count() <= MAX_ERROR_LEN + 40, "{} characters: {:?}", text.len(), text);
    Ok(text)
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..400)) {
        if let Err(e) = JobDocument::from_json(&bytes) {
            check_error(&e)?;
        }
    }


    #[test]
    fn arbitrary_json_is_refused_or_round_trips(value in any_json()) {
        let bytes = serde_json::to_vec(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match (JobDocument::from_json(&bytes), value) {
            (Ok(doc), Value::Object(input)) => check_round_trip(&input, &doc)?,
            (Ok(doc), other) => prop_assert!(false, "{:?} decoded as {:?}", other, doc),
            (Err(e), _) => {
                check_error(&e)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(config(DOCUMENT_CASES))]

    /// Bytes of a valid document, cut or with one byte changed: decoded and round-tripped, or refused.
    #[test]
    fn a_damaged_document_is_refused_or_round_trips(doc in valid_document(), at in any::<usize>(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut bytes = serde_json::to_vec(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let at = at % bytes.len();
        if cut {
            bytes.truncate(at);
        } else {
            bytes[at] = byte;
        }
        match JobDocument::from_json(&bytes) {
            Ok(decoded) => {
                let input: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
                check_round_trip(&input, &decoded)?;
            }
            Err(e) => {
                check_error(&e)?;
            }
        }
    }

    #[test]
    fn a_valid_document_round_trips(doc in valid_document()) {
        let bytes = serde_json::to_vec(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decoded = JobDocument::from_json(&bytes).map_err(|e| TestCaseError::fail(format!("valid document refused: {e}")))?;
        check_round_trip(&doc, &decoded)?;
    }

    /// One field of a valid document removed or given any JSON value: either the document
    /// still decodes (and round-trips), or the error names that field.
    #[test]
    fn a_bad_value_is_refused_naming_its_field(
        mut doc in valid_document(),
        field in proptest::sample::select(INTERNAL_FIELDS),
        value in proptest::option::of(any_json()),
    ) {
        match value {
            Some(value) => doc.insert(field.to_owned(), value),
            None => doc.remove(field),
        };
        let bytes = serde_json::to_vec(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match JobDocument::from_json(&bytes) {
            Ok(decoded) => check_round_trip(&doc, &decoded)?,
            Err(e) => {
                let text = check_error(&e)?;
                prop_assert!(text.contains(&format!("`{field}`")), "the error does not name {}: {}", field, text);
            }
        }
    }
}

/// Regression case found by `a_bad_value_is_refused_naming_its_field`: a value of the wrong
/// type was refused with serde's "invalid type: integer `5`, expected a string at line 1
/// column N", which does not say which field held it.
#[test]
fn a_value_of_the_wrong_type_is_refused_naming_its_field() {
    let err = JobDocument::from_json(br#"{"jobType": 5}"#).unwrap_err().to_string();
    assert!(err.contains("`jobType`") && err.contains("expected a string"), "{err}");
    let doc = br#"{"jobType": "t", "createdAt": 1, "updatedAt": 1, "uuid": "u",
        "queueKwargs": {"queue": "q", "priority": 1, "ttr": 1}, "status": "queued", "events": null}"#;
    let err = JobDocument::from_json(doc).unwrap_err().to_string();
    assert!(err.contains("`events`"), "{err}");
}

/// Regression case found by `arbitrary_json_is_refused_or_round_trips`: serde quotes a refused
/// value as it is, so a line break in it broke the error (and a store's log line) in two, and
/// a long value made the error as long.
#[test]
fn an_error_is_one_short_line_whatever_the_value() {
    let err = JobDocument::from_json(br#"{"status": "\n"}"#).unwrap_err().to_string();
    assert!(err.contains("`status`") && err.contains("\\n") && !err.contains('\n'), "{err}");
    let long = format!(r#"{{"status": "{}"}}"#, "x".repeat(100_000));
    let err = JobDocument::from_json(long.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("`status`") && err.len() < MAX_ERROR_LEN + 40, "{err}");
}
