//! beanstalkd wire format (docs/beanstalkd-protocol.md): command encoding and
//! an incremental reply decoder over a byte buffer, plus the stats YAML subset,
//! and `excerpt`, the one way a payload is quoted in an error or log line.
//! Pure functions on bytes: no I/O, no sockets, no queue semantics.

use std::collections::HashMap;

/// Longest reply line we accept, `\r\n` included (§Framing).
pub const MAX_LINE: usize = 512;
/// beanstalkd's default `max-job-size` (`-z`), the body bound when neither the server's
/// `stats` nor the configuration names one (§Reply size).
pub const DEFAULT_MAX_JOB_SIZE: usize = 65_535;
/// beanstalkd's own ceiling for `-z`: a larger `max-job-size` in `stats` is not believed (§Reply size).
pub const MAX_JOB_SIZE_CEILING: usize = 1 << 30;
/// Longest `OK` chunk (stats YAML, tube lists) we accept (§Reply size).
pub const MAX_YAML_CHUNK: usize = 4 << 20;
/// How many characters of a payload an error or log line quotes (`excerpt`).
pub const EXCERPT_LEN: usize = 200;

/// A payload as an error or log line may quote it: escaped to printable ASCII (no line
/// break or control byte reaches a log), cut to at most `EXCERPT_LEN` characters, and,
/// when cut, followed by the payload's full length.
pub fn excerpt(payload: &[u8]) -> String {
    let mut shown = String::new();
    let mut used = 0;
    for byte in payload {
        let escaped = byte.escape_ascii().to_string();
        if shown.len() + escaped.len() > EXCERPT_LEN {
            break;
        }
        shown.push_str(&escaped);
        used += 1;
    }
    if used < payload.len() {
        format!("\"{shown}\"... ({} bytes in all)", payload.len())
    } else {
        format!("\"{shown}\"")
    }
}

/// One command, as §Producer, §Worker and §Other list them.
/// Tube names are checked by the caller (`queue::check_tube`) before they get here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Put { pri: u32, delay: u32, ttr: u32, body: &'a [u8] },
    Use(&'a str),
    Reserve,
    ReserveWithTimeout(u32),
    ReserveJob(u64),
    Delete(u64),
    Release { id: u64, pri: u32, delay: u32 },
    Bury { id: u64, pri: u32 },
    Touch(u64),
    Watch(&'a str),
    Ignore(&'a str),
    Peek(u64),
    PeekReady,
    PeekDelayed,
    PeekBuried,
    Kick(u64),
    KickJob(u64),
    StatsJob(u64),
    StatsTube(&'a str),
    Stats,
    ListTubes,
    ListTubeUsed,
    ListTubesWatched,
    PauseTube { tube: &'a str, delay: u32 },
}

impl Command<'_> {
    /// The command's name, for error context.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put { .. } => "put",
            Command::Use(_) => "use",
            Command::Reserve => "reserve",
            Command::ReserveWithTimeout(_) => "reserve-with-timeout",
            Command::ReserveJob(_) => "reserve-job",
            Command::Delete(_) => "delete",
            Command::Release { .. } => "release",
            Command::Bury { .. } => "bury",
            Command::Touch(_) => "touch",
            Command::Watch(_) => "watch",
            Command::Ignore(_) => "ignore",
            Command::Peek(_) => "peek",
            Command::PeekReady => "peek-ready",
            Command::PeekDelayed => "peek-delayed",
            Command::PeekBuried => "peek-buried",
            Command::Kick(_) => "kick",
            Command::KickJob(_) => "kick-job",
            Command::StatsJob(_) => "stats-job",
            Command::StatsTube(_) => "stats-tube",
            Command::Stats => "stats",
            Command::ListTubes => "list-tubes",
            Command::ListTubeUsed => "list-tube-used",
            Command::ListTubesWatched => "list-tubes-watched",
            Command::PauseTube { .. } => "pause-tube",
        }
    }

    /// Whether sending it twice does no harm, so a stale connection may retry it once.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self,
            Command::Use(_)
                | Command::Watch(_)
                | Command::Ignore(_)
                | Command::Touch(_)
                | Command::Peek(_)
                | Command::PeekReady
                | Command::PeekDelayed
                | Command::PeekBuried
                | Command::StatsJob(_)
                | Command::StatsTube(_)
                | Command::Stats
                | Command::ListTubes
                | Command::ListTubeUsed
                | Command::ListTubesWatched
                | Command::PauseTube { .. }
        )
    }

    /// Appends the command's line (and, for put, its chunk) to `out` (§Framing).
    pub fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let name = self.name();
        // Writing to a Vec cannot fail.
        let _ = match self {
            Command::Put { pri, delay, ttr, body } => {
                write!(out, "{name} {pri} {delay} {ttr} {}\r\n", body.len())
            }
            Command::Use(t) | Command::Watch(t) | Command::Ignore(t) | Command::StatsTube(t) => {
                write!(out, "{name} {t}\r\n")
            }
            Command::ReserveWithTimeout(n) => write!(out, "{name} {n}\r\n"),
            Command::ReserveJob(id)
            | Command::Delete(id)
            | Command::Touch(id)
            | Command::Peek(id)
            | Command::KickJob(id)
            | Command::StatsJob(id)
            | Command::Kick(id) => write!(out, "{name} {id}\r\n"),
            Command::Release { id, pri, delay } => write!(out, "{name} {id} {pri} {delay}\r\n"),
            Command::Bury { id, pri } => write!(out, "{name} {id} {pri}\r\n"),
            Command::PauseTube { tube, delay } => write!(out, "{name} {tube} {delay}\r\n"),
            Command::Reserve
            | Command::PeekReady
            | Command::PeekDelayed
            | Command::PeekBuried
            | Command::Stats
            | Command::ListTubes
            | Command::ListTubeUsed
            | Command::ListTubesWatched => write!(out, "{name}\r\n"),
        };
        if let Command::Put { body, .. } = self {
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A normal (non-error) reply (§Producer, §Worker, §Other).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Inserted(u64),
    Using(String),
    Reserved {
        id: u64,
        body: Vec<u8>,
    },
    Found {
        id: u64,
        body: Vec<u8>,
    },
    Deleted,
    Released,
    /// `BURIED` with no id: success of `bury` (and out-of-memory for `release`).
    Buried,
    Touched,
    Watching(u64),
    Kicked(u64),
    /// `KICKED` with no count: success of `kick-job`.
    KickedJob,
    Ok(Vec<u8>),
    Paused,
}

impl Reply {
    /// The reply for an error or log line: its kind and an `excerpt` of any chunk.
    pub fn describe(&self) -> String {
        match self {
            Reply::Reserved { id, body } => format!("RESERVED {id} {}", excerpt(body)),
            Reply::Found { id, body } => format!("FOUND {id} {}", excerpt(body)),
            Reply::Ok(data) => format!("OK {}", excerpt(data)),
            Reply::Using(tube) => format!("USING {}", excerpt(tube.as_bytes())),
            other => format!("{other:?}"),
        }
    }
}

/// Error replies, typed (§Errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    #[error("OUT_OF_MEMORY")]
    OutOfMemory,
    #[error("INTERNAL_ERROR")]
    InternalError,
    #[error("BAD_FORMAT")]
    BadFormat,
    #[error("UNKNOWN_COMMAND")]
    UnknownCommand,
    #[error("JOB_TOO_BIG")]
    JobTooBig,
    #[error("DRAINING")]
    Draining,
    #[error("EXPECTED_CRLF")]
    ExpectedCrlf,
    #[error("NOT_FOUND")]
    NotFound,
    #[error("DEADLINE_SOON")]
    DeadlineSoon,
    #[error("TIMED_OUT")]
    TimedOut,
    /// `BURIED <id>` after put: out of memory, the job was created buried.
    #[error("BURIED {0} (server out of memory, job buried)")]
    BuriedJob(u64),
    #[error("NOT_IGNORED")]
    NotIgnored,
}

/// The stream is not beanstalkd's protocol (or is out of step): drop the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("reply line longer than {MAX_LINE} bytes, starting {0}")]
    LineTooLong(String),
    /// The line announces a chunk over the bound: it was not read (§Reply size).
    #[error(
        "{reply} reply announces a body of {size} bytes, over the bound of {limit} bytes \
         (the server's max-job-size, or the configured maximum); not read"
    )]
    ChunkTooBig { reply: &'static str, size: u64, limit: usize },
    #[error("chunk not followed by \\r\\n")]
    MissingChunkEnd,
    #[error("malformed reply line {0}")]
    BadLine(String),
    #[error("unknown reply {0}")]
    UnknownReply(String),
    #[error("malformed YAML: {0}")]
    BadYaml(String),
}

/// What the decoder made of the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The buffer holds only a prefix of a reply: read more and call again.
    NeedMore,
    /// One whole reply of `len` bytes (line and chunk) at the front of the buffer.
    Frame { len: usize, reply: Result<Reply, ServerError> },
}

/// Decodes the reply at the front of `buf` (§Framing). Never panics; a prefix
/// of a valid reply is `NeedMore`, anything else that is not a reply is an error.
/// `max_body` bounds the chunk of `RESERVED` and `FOUND` (a job body), `MAX_YAML_CHUNK`
/// that of `OK`; a line announcing more is an error at once, before any of it is read.
pub fn decode(buf: &[u8], max_body: usize) -> Result<Decoded, ProtocolError> {
    let Some(line_end) = find_crlf(buf) else {
        // No `\r\n` yet: too long already, or a bare `\r`/`\n` where text belongs?
        if buf.len() >= MAX_LINE {
            return Err(ProtocolError::LineTooLong(excerpt(&buf[..80])));
        }
        let (last, body) = match buf.split_last() {
            Some((last, body)) => (*last, body),
            None => return Ok(Decoded::NeedMore),
        };
        check_line_bytes(body)?;
        if last != b'\r' {
            check_line_bytes(&[last]).map_err(|_| bad_line(buf))?;
        }
        return Ok(Decoded::NeedMore);
    };
    if line_end + 2 > MAX_LINE {
        return Err(ProtocolError::LineTooLong(excerpt(&buf[..80])));
    }
    let line = &buf[..line_end];
    check_line_bytes(line)?;
    let text = std::str::from_utf8(line).map_err(|_| bad_line(line))?;
    let words: Vec<&str> = text.split(' ').collect();
    let head = line_end + 2;
    match words.as_slice() {
        ["RESERVED", id, n] => {
            let id = num(id, line)?;
            let at = Chunk { reply: "RESERVED", head, limit: max_body };
            at.decode(buf, n, line, |body| Reply::Reserved { id, body })
        }
        ["FOUND", id, n] => {
            let id = num(id, line)?;
            let at = Chunk { reply: "FOUND", head, limit: max_body };
            at.decode(buf, n, line, |body| Reply::Found { id, body })
        }
        ["OK", n] => Chunk { reply: "OK", head, limit: MAX_YAML_CHUNK }.decode(buf, n, line, Reply::Ok),
        _ => Ok(Decoded::Frame { len: head, reply: line_reply(&words, line)? }),
    }
}

/// Position of the first `\r\n`, looking no further than a line may be long.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf[..buf.len().min(MAX_LINE + 1)].windows(2).position(|w| w == b"\r\n")
}

/// A reply line is printable ASCII: a lone `\r` or `\n`, or a control byte, means a broken stream.
fn check_line_bytes(line: &[u8]) -> Result<(), ProtocolError> {
    if line.iter().all(|b| (0x20..0x7f).contains(b)) {
        Ok(())
    } else {
        Err(bad_line(line))
    }
}

fn bad_line(line: &[u8]) -> ProtocolError {
    ProtocolError::BadLine(excerpt(line))
}

/// Strict unsigned decimal: digits only, no sign, fits in u64.
fn num(word: &str, line: &[u8]) -> Result<u64, ProtocolError> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_line(line));
    }
    word.parse().map_err(|_| bad_line(line))
}

/// Where a reply's chunk starts and how long it may be.
struct Chunk {
    reply: &'static str,
    /// Offset of the chunk in the buffer (just past the line's `\r\n`).
    head: usize,
    limit: usize,
}

impl Chunk {
    /// The line's chunk of `n` bytes and its `\r\n` (§Framing), checked against the
    /// bound before anything else (§Reply size).
    fn decode(
        &self,
        buf: &[u8],
        n: &str,
        line: &[u8],
        make: impl FnOnce(Vec<u8>) -> Reply,
    ) -> Result<Decoded, ProtocolError> {
        let n = num(n, line)?;
        if n > self.limit as u64 {
            return Err(ProtocolError::ChunkTooBig { reply: self.reply, size: n, limit: self.limit });
        }
        let n = n as usize;
        let (head, end) = (self.head, self.head + n);
        let rest = &buf[head.min(buf.len())..];
        if rest.len() < n + 2 {
            // Whatever of the `\r\n` already arrived must be right.
            let tail = rest.get(n..).unwrap_or(&[]);
            if !b"\r\n".starts_with(tail) {
                return Err(ProtocolError::MissingChunkEnd);
            }
            return Ok(Decoded::NeedMore);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingChunkEnd);
        }
        let reply = make(buf[head..end].to_vec());
        Ok(Decoded::Frame { len: end + 2, reply: Ok(reply) })
    }
}

/// Replies that are one line (§Errors, §Producer, §Worker, §Other).
fn line_reply(words: &[&str], line: &[u8]) -> Result<Result<Reply, ServerError>, ProtocolError> {
    use ServerError as E;
    let r = match words {
        ["INSERTED", id] => Ok(Reply::Inserted(num(id, line)?)),
        ["BURIED", id] => Err(E::BuriedJob(num(id, line)?)),
        ["BURIED"] => Ok(Reply::Buried),
        ["USING", tube] if !tube.is_empty() => Ok(Reply::Using((*tube).to_owned())),
        ["DELETED"] => Ok(Reply::Deleted),
        ["RELEASED"] => Ok(Reply::Released),
        ["TOUCHED"] => Ok(Reply::Touched),
        ["WATCHING", n] => Ok(Reply::Watching(num(n, line)?)),
        ["KICKED", n] => Ok(Reply::Kicked(num(n, line)?)),
        ["KICKED"] => Ok(Reply::KickedJob),
        ["PAUSED"] => Ok(Reply::Paused),
        ["OUT_OF_MEMORY"] => Err(E::OutOfMemory),
        ["INTERNAL_ERROR"] => Err(E::InternalError),
        ["BAD_FORMAT"] => Err(E::BadFormat),
        ["UNKNOWN_COMMAND"] => Err(E::UnknownCommand),
        ["JOB_TOO_BIG"] => Err(E::JobTooBig),
        ["DRAINING"] => Err(E::Draining),
        ["EXPECTED_CRLF"] => Err(E::ExpectedCrlf),
        ["NOT_FOUND"] => Err(E::NotFound),
        ["DEADLINE_SOON"] => Err(E::DeadlineSoon),
        ["TIMED_OUT"] => Err(E::TimedOut),
        ["NOT_IGNORED"] => Err(E::NotIgnored),
        _ => return Err(ProtocolError::UnknownReply(excerpt(line))),
    };
    Ok(r)
}

/// The YAML lines of a stats chunk, without the `---` header (§YAML).
fn yaml_lines(chunk: &[u8]) -> Result<impl Iterator<Item = &str>, ProtocolError> {
    let text = std::str::from_utf8(chunk).map_err(|_| ProtocolError::BadYaml("not UTF-8".into()))?;
    let text = text.strip_prefix("---\n").or_else(|| text.strip_prefix("---\r\n")).unwrap_or(text);
    Ok(text.lines().filter(|l| !l.trim().is_empty()))
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v)
}

/// A stats mapping: `key: value` lines (§YAML).
pub fn parse_yaml_map(chunk: &[u8]) -> Result<HashMap<String, String>, ProtocolError> {
    let mut map = HashMap::new();
    for line in yaml_lines(chunk)? {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| ProtocolError::BadYaml(format!("no `key:` in {}", excerpt(line.as_bytes()))))?;
        let k = k.trim();
        if k.is_empty() || k.starts_with('-') && k.len() == 1 {
            return Err(ProtocolError::BadYaml(format!("bad key in {}", excerpt(line.as_bytes()))));
        }
        map.insert(k.to_owned(), unquote(v).to_owned());
    }
    Ok(map)
}

/// A list: `- item` lines (§YAML).
pub fn parse_yaml_list(chunk: &[u8]) -> Result<Vec<String>, ProtocolError> {
    yaml_lines(chunk)?
        .map(|line| {
            line.strip_prefix("- ")
                .map(|item| unquote(item).to_owned())
                .ok_or_else(|| ProtocolError::BadYaml(format!("not a `- item` line: {}", excerpt(line.as_bytes()))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound the unit tests decode with.
    const BOUND: usize = 100;

    fn dec(buf: &[u8]) -> Result<Decoded, ProtocolError> {
        decode(buf, BOUND)
    }

    fn frame(buf: &[u8]) -> (usize, Result<Reply, ServerError>) {
        match dec(buf).unwrap() {
            Decoded::Frame { len, reply } => (len, reply),
            Decoded::NeedMore => panic!("need more for {buf:?}"),
        }
    }

    #[test]
    fn encodes_put_with_binary_body() {
        let mut out = Vec::new();
        Command::Put { pri: 1, delay: 2, ttr: 3, body: b" a\r\nb " }.encode(&mut out);
        assert_eq!(out, b"put 1 2 3 6\r\n a\r\nb \r\n");
    }

    #[test]
    fn encodes_line_commands() {
        let mut out = Vec::new();
        Command::Release { id: 5, pri: 9, delay: 0 }.encode(&mut out);
        Command::PauseTube { tube: "t", delay: 4 }.encode(&mut out);
        Command::ListTubesWatched.encode(&mut out);
        assert_eq!(out, b"release 5 9 0\r\npause-tube t 4\r\nlist-tubes-watched\r\n");
    }

    #[test]
    fn decodes_lines_and_errors() {
        assert_eq!(frame(b"INSERTED 7\r\nxx"), (12, Ok(Reply::Inserted(7))));
        assert_eq!(frame(b"BURIED 7\r\n").1, Err(ServerError::BuriedJob(7)));
        assert_eq!(frame(b"BURIED\r\n").1, Ok(Reply::Buried));
        assert_eq!(frame(b"KICKED\r\n").1, Ok(Reply::KickedJob));
        assert_eq!(frame(b"KICKED 3\r\n").1, Ok(Reply::Kicked(3)));
        assert_eq!(frame(b"TIMED_OUT\r\n").1, Err(ServerError::TimedOut));
        assert_eq!(frame(b"JOB_TOO_BIG\r\n").1, Err(ServerError::JobTooBig));
        assert_eq!(frame(b"USING a-b\r\n").1, Ok(Reply::Using("a-b".into())));
    }

    #[test]
    fn decodes_binary_chunks_by_length() {
        let buf = b"RESERVED 3 6\r\n\r\n  \r\n\r\nNEXT";
        assert_eq!(frame(buf), (22, Ok(Reply::Reserved { id: 3, body: b"\r\n  \r\n".to_vec() })));
        assert_eq!(dec(b"FOUND 1 4\r\nab").unwrap(), Decoded::NeedMore);
        assert_eq!(dec(b"FOUND 1 2\r\nab\r").unwrap(), Decoded::NeedMore);
        assert_eq!(dec(b"FOUND 1 2\r\nabX"), Err(ProtocolError::MissingChunkEnd));
        assert_eq!(dec(b"FOUND 1 2\r\nab\rX"), Err(ProtocolError::MissingChunkEnd));
    }

    #[test]
    fn rejects_garbage() {
        assert!(dec(b"HELLO\r\n").is_err());
        assert!(dec(b"INSERTED -1\r\n").is_err());
        assert!(dec(b"INSERTED  1\r\n").is_err());
        assert!(dec(b"INSERTED 99999999999999999999999\r\n").is_err());
        assert!(dec(b"OK 2000000000\r\n").is_err());
        assert!(dec(b"INSER\nTED").is_err());
        assert!(matches!(dec(&[b'A'; MAX_LINE]), Err(ProtocolError::LineTooLong(_))));
        assert_eq!(dec(b"").unwrap(), Decoded::NeedMore);
        assert_eq!(dec(b"INSERTED 1\r").unwrap(), Decoded::NeedMore);
    }

    #[test]
    fn a_body_over_the_bound_is_refused_from_its_line_alone() {
        let line = format!("RESERVED 1 {}\r\n", BOUND + 1);
        let refused = ProtocolError::ChunkTooBig { reply: "RESERVED", size: BOUND as u64 + 1, limit: BOUND };
        assert_eq!(dec(line.as_bytes()), Err(refused));
        let err = dec(b"FOUND 1 1073741824\r\nab").unwrap_err().to_string();
        assert!(err.contains("1073741824") && err.contains(&format!("bound of {BOUND} bytes")), "{err}");
        assert!(dec(format!("RESERVED 1 {BOUND}\r\n").as_bytes()).is_ok(), "the bound itself is allowed");
        // OK chunks (stats, tube lists) have their own bound.
        assert!(dec(format!("OK {}\r\n", BOUND + 1).as_bytes()).is_ok());
        assert!(matches!(
            dec(format!("OK {}\r\n", MAX_YAML_CHUNK + 1).as_bytes()),
            Err(ProtocolError::ChunkTooBig { reply: "OK", .. })
        ));
    }

    #[test]
    fn excerpts_are_short_printable_and_say_the_full_length() {
        assert_eq!(excerpt(b"abc"), "\"abc\"");
        assert_eq!(excerpt(b"a\r\nb\x00"), "\"a\\r\\nb\\x00\"");
        let long = excerpt(&[b'x'; 100_000]);
        assert!(long.len() < EXCERPT_LEN + 40 && long.ends_with("(100000 bytes in all)"), "{long}");
        let reply = Reply::Reserved { id: 7, body: vec![0xff; 1 << 20] };
        assert!(reply.describe().len() < EXCERPT_LEN + 60, "{}", reply.describe());
    }

    #[test]
    fn parses_yaml() {
        let map = parse_yaml_map(b"---\nid: 5\ntube: \"my tube\"\nstate: ready\n").unwrap();
        assert_eq!(map["id"], "5");
        assert_eq!(map["tube"], "my tube");
        assert_eq!(map["state"], "ready");
        assert_eq!(parse_yaml_list(b"---\n- default\n- a(b)\n").unwrap(), vec!["default", "a(b)"]);
        assert!(parse_yaml_list(b"---\nnope\n").is_err());
        assert!(parse_yaml_map(b"---\nnope\n").is_err());
    }
}
