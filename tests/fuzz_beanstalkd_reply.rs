//! Property tests (fuzzing) of the beanstalkd reply decoder, `protocol::decode`, and the
//! stats YAML parsers: arbitrary bytes, reply-like lines, truncated and oversized replies,
//! and valid replies split at random points across reads the way `read_replies` in
//! connection.rs feeds them. Pure: no sockets, no servers.
//!
//! 10,000 cases per property (2,000 for long lines and YAML, `TEXT_CASES`) unless
//! `PROPTEST_CASES` says otherwise.

use geyser::queue::beanstalkd::protocol::{
    decode, parse_yaml_list, parse_yaml_map, Decoded, ProtocolError, Reply, ServerError, EXCERPT_LEN, MAX_LINE,
    MAX_YAML_CHUNK,
};
use proptest::collection::vec;
use proptest::prelude::*;

#[path = "support/proptest_cases.rs"]
mod proptest_cases;
use proptest_cases::config;

/// Cases of the properties whose inputs are long lines or YAML text: each costs 5 to 10
/// times a decode of a reply in a debug build, and 2,000 keep each to about a second.
const TEXT_CASES: u32 = 2_000;

/// The longest the reply at the front of `buf` may be for `decode(buf, max_body)` to accept
/// it: its line and its chunk with the chunk's `\r\n`, the chunk bounded by `max_body`, or
/// by `MAX_YAML_CHUNK` for `OK`.
fn longest_reply(buf: &[u8], max_body: usize) -> usize {
    MAX_LINE + if buf.starts_with(b"OK ") { MAX_YAML_CHUNK } else { max_body } + 2
}

/// What must hold for any `decode` answer on any input: a frame lies inside the buffer and
/// within the bound; "need more" is never said of a buffer already past the bound (the
/// reader would buffer without limit); an error is short printable text (it quotes at
/// most an excerpt of what the server sent).
fn check_answer(buf: &[u8], max_body: usize, answer: &Result<Decoded, ProtocolError>) -> Result<(), TestCaseError> {
    match answer {
        Ok(Decoded::Frame { len, reply }) => {
            prop_assert!(*len > 0 && *len <= buf.len(), "frame of {} bytes in a buffer of {}", len, buf.len());
            prop_assert!(*len <= longest_reply(buf, max_body), "frame of {} bytes is past the bound", len);
            if let Ok(Reply::Reserved { body, .. } | Reply::Found { body, .. }) = reply {
                prop_assert!(body.len() <= max_body, "a body of {} bytes over the bound {}", body.len(), max_body);
            }
        }
        Ok(Decoded::NeedMore) => {
            prop_assert!(buf.len() < longest_reply(buf, max_body), "need more after {} bytes", buf.len());
        }
        Err(error) => {
            let text = error.to_string();
            prop_assert!(!text.is_empty());
            prop_assert!(text.len() <= 2 * EXCERPT_LEN + 200, "an error of {} characters: {}", text.len(), text);
            prop_assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "unprintable error text {:?}", text);
        }
    }
    Ok(())
}

/// A chunked reply's wire form: `<line>\r\n<body>\r\n`.
fn chunked(line: String, body: &[u8]) -> Vec<u8> {
    let mut wire = line.into_bytes();
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(body);
    wire.extend_from_slice(b"\r\n");
    wire
}

/// Every reply the protocol defines, as sent on the wire, with what it decodes to. Bodies
/// are arbitrary bytes (CR and LF included) of at most 300 bytes; decode with a bound of 300.
fn any_reply() -> impl Strategy<Value = (Vec<u8>, Result<Reply, ServerError>)> {
    let id = any::<u64>;
    let body = vec(any::<u8>(), 0..300);
    let line = |text: &str, reply: Result<Reply, ServerError>| Just((format!("{text}\r\n").into_bytes(), reply));
    prop_oneof![
        id().prop_map(|i| (format!("INSERTED {i}\r\n").into_bytes(), Ok(Reply::Inserted(i)))),
        id().prop_map(|i| (format!("BURIED {i}\r\n").into_bytes(), Err(ServerError::BuriedJob(i)))),
        id().prop_map(|n| (format!("WATCHING {n}\r\n").into_bytes(), Ok(Reply::Watching(n)))),
        id().prop_map(|n| (format!("KICKED {n}\r\n").into_bytes(), Ok(Reply::Kicked(n)))),
        "[A-Za-z0-9+/;.$_()-]{1,200}".prop_map(|t| (format!("USING {t}\r\n").into_bytes(), Ok(Reply::Using(t)))),
        (id(), body.clone()).prop_map(|(i, b)| (
            chunked(format!("RESERVED {i} {}", b.len()), &b),
            Ok(Reply::Reserved { id: i, body: b })
        )),
        (id(), body.clone())
            .prop_map(|(i, b)| (chunked(format!("FOUND {i} {}", b.len()), &b), Ok(Reply::Found { id: i, body: b }))),
        body.prop_map(|b| (chunked(format!("OK {}", b.len()), &b), Ok(Reply::Ok(b)))),
        line("DELETED", Ok(Reply::Deleted)),
        line("RELEASED", Ok(Reply::Released)),
        line("BURIED", Ok(Reply::Buried)),
        line("TOUCHED", Ok(Reply::Touched)),
        line("KICKED", Ok(Reply::KickedJob)),
        line("PAUSED", Ok(Reply::Paused)),
        line("OUT_OF_MEMORY", Err(ServerError::OutOfMemory)),
        line("INTERNAL_ERROR", Err(ServerError::InternalError)),
        line("BAD_FORMAT", Err(ServerError::BadFormat)),
        line("UNKNOWN_COMMAND", Err(ServerError::UnknownCommand)),
        line("JOB_TOO_BIG", Err(ServerError::JobTooBig)),
        line("DRAINING", Err(ServerError::Draining)),
        line("EXPECTED_CRLF", Err(ServerError::ExpectedCrlf)),
        line("NOT_FOUND", Err(ServerError::NotFound)),
        line("DEADLINE_SOON", Err(ServerError::DeadlineSoon)),
        line("TIMED_OUT", Err(ServerError::TimedOut)),
        line("NOT_IGNORED", Err(ServerError::NotIgnored)),
    ]
}

/// The bound the valid replies of `any_reply` fit in.
const BODY_BOUND: usize = 300;

/// What a run of reads decoded to: the replies, in order.
type Replies = Vec<Result<Reply, ServerError>>;

/// Feeds `reads` to the decoder as `read_replies` does: append what one read brought, take
/// every whole reply at the front, keep the rest for the next read. Returns the replies and
/// what was left over, checking every answer on the way.
fn read_all(reads: &[&[u8]], max_body: usize) -> Result<(Replies, Vec<u8>), TestCaseError> {
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let answer = decode(&buf, max_body);
            check_answer(&buf, max_body, &answer)?;
            match answer {
                Ok(Decoded::Frame { len, reply }) => {
                    buf.drain(..len);
                    replies.push(reply);
                }
                Ok(Decoded::NeedMore) => break,
                Err(e) => return Err(TestCaseError::fail(format!("valid replies gave {e}"))),
            }
        }
    }
    Ok((replies, buf))
}

/// `wire` cut at `cuts` (positions, in any order, duplicates allowed) into successive reads.
fn split_at<'a>(wire: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.sort_unstable();
    let mut reads = Vec::new();
    let mut from = 0;
    for point in points.into_iter().chain([wire.len()]) {
        reads.push(&wire[from..point]);
        from = point;
    }
    reads
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_within_the_bounds(
        buf in vec(any::<u8>(), 0..1200),
        max_body in 0usize..2000,
    ) {
        let answer = decode(&buf, max_body);
        check_answer(&buf, max_body, &answer)?;
    }

    #[test]
    fn reply_like_lines_never_panic_and_stay_within_the_bounds(
        word in prop_oneof![
            Just("RESERVED"), Just("FOUND"), Just("OK"), Just("INSERTED"), Just("BURIED"), Just("KICKED"),
            Just("WATCHING"), Just("USING"), Just("TIMED_OUT"),
        ],
        rest in "[ 0-9a-z\r\n+-]{0,40}",
        tail in vec(any::<u8>(), 0..400),
        max_body in 0usize..400,
    ) {
        let mut buf = format!("{word}{rest}").into_bytes();
        buf.extend_from_slice(&tail);
        let answer = decode(&buf, max_body);
        check_answer(&buf, max_body, &answer)?;
    }

    /// However a run of valid replies is split across reads, the same replies come out, in order.
    #[test]
    fn valid_replies_decode_the_same_however_they_are_split(
        replies in vec(any_reply(), 1..6),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let wire: Vec<u8> = replies.iter().flat_map(|(w, _)| w.iter().copied()).collect();
        let expected: Vec<_> = replies.into_iter().map(|(_, r)| r).collect();
        let (whole, rest) = read_all(&[&wire], BODY_BOUND)?;
        prop_assert_eq!(&whole, &expected);
        prop_assert!(rest.is_empty());
        let (split, rest) = read_all(&split_at(&wire, &cuts), BODY_BOUND)?;
        prop_assert_eq!(&split, &expected);
        prop_assert!(rest.is_empty());
    }

    /// A reply cut short (the server closed, or has not sent the rest) is never taken for a
    /// whole one, nor for an error: the decoder waits for more.
    #[test]
    fn a_truncated_reply_is_never_a_reply((wire, _) in any_reply(), cut in any::<usize>()) {
        let short = &wire[..cut % wire.len()];
        let answer = decode(short, BODY_BOUND);
        check_answer(short, BODY_BOUND, &answer)?;
        prop_assert_eq!(answer, Ok(Decoded::NeedMore));
    }

    /// One byte of a valid reply changed: never a panic, never a frame past the buffer.
    #[test]
    fn a_corrupted_reply_is_decoded_or_refused_within_the_bounds(
        (wire, _) in any_reply(),
        at in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let mut buf = wire.clone();
        let at = at % buf.len();
        buf[at] = byte;
        let answer = decode(&buf, BODY_BOUND);
        check_answer(&buf, BODY_BOUND, &answer)?;
    }

    /// A chunk not followed by `\r\n` is an error, never a reply one byte off.
    #[test]
    fn a_chunk_without_its_crlf_is_refused(
        word in prop_oneof![Just("RESERVED 1"), Just("FOUND 1"), Just("OK")],
        body in vec(any::<u8>(), 0..BODY_BOUND),
        end in any::<[u8; 2]>(),
    ) {
        prop_assume!(&end != b"\r\n");
        let mut buf = chunked(format!("{word} {}", body.len()), &body);
        let at = buf.len() - 2;
        buf[at..].copy_from_slice(&end);
        let answer = decode(&buf, BODY_BOUND);
        check_answer(&buf, BODY_BOUND, &answer)?;
        prop_assert_eq!(answer, Err(ProtocolError::MissingChunkEnd));
    }

    /// A line announcing a body over the bound is refused at once, whatever follows it and
    /// however little of it has arrived: the decoder never waits to read such a body.
    #[test]
    fn an_oversized_body_is_refused_from_its_line_alone(
        word in prop_oneof![Just("RESERVED 7 "), Just("FOUND 7 "), Just("OK ")],
        over in 1u64..u64::MAX / 2,
        max_body in 0usize..100_000,
        sent in vec(any::<u8>(), 0..200),
    ) {
        let limit = if word == "OK " { MAX_YAML_CHUNK } else { max_body };
        let size = limit as u64 + over;
        let mut buf = format!("{word}{size}\r\n").into_bytes();
        buf.extend_from_slice(&sent);
        let answer = decode(&buf, max_body);
        check_answer(&buf, max_body, &answer)?;
        prop_assert!(
            matches!(answer, Err(ProtocolError::ChunkTooBig { size: s, limit: l, .. }) if s == size && l == limit),
            "{:?}", answer
        );
    }

    #[test]
    fn yaml_parsers_never_panic(chunk in vec(any::<u8>(), 0..600)) {
        for error in [parse_yaml_map(&chunk).err(), parse_yaml_list(&chunk).err()].into_iter().flatten() {
            prop_assert!(error.to_string().len() <= EXCERPT_LEN + 200, "{}", error);
        }
    }
}

proptest! {
    #![proptest_config(config(TEXT_CASES))]

    /// A line longer than `MAX_LINE` is refused once `MAX_LINE` bytes have come, not buffered on.
    #[test]
    fn an_overlong_line_is_refused(mut buf in vec(0x20u8..0x7f, MAX_LINE..2 * MAX_LINE), crlf in any::<bool>()) {
        if crlf {
            buf.extend_from_slice(b"\r\n");
        }
        let answer = decode(&buf, BODY_BOUND);
        check_answer(&buf, BODY_BOUND, &answer)?;
        prop_assert!(matches!(answer, Err(ProtocolError::LineTooLong(_))), "{:?}", answer);
    }

    /// What `stats` and `list-tubes` send parses back to what was sent.
    #[test]
    fn yaml_of_any_keys_and_tubes_parses_back(
        map in proptest::collection::btree_map("[a-z][a-z0-9-]{0,12}", "[!-~]([ -~]{0,12}[!-~])?", 0..8),
        tubes in vec("[A-Za-z0-9+/;.$_()][A-Za-z0-9+/;.$_()-]{0,12}", 0..8),
    ) {
        let yaml: String = map.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        let parsed = parse_yaml_map(format!("---\n{yaml}").as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (k, v) in &map {
            let unquoted = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v);
            prop_assert_eq!(parsed.get(k).map(String::as_str), Some(unquoted));
        }
        let list: String = tubes.iter().map(|t| format!("- {t}\n")).collect();
        prop_assert_eq!(parse_yaml_list(format!("---\n{list}").as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?, tubes);
    }
}
