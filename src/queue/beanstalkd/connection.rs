//! One async TCP connection to one beanstalkd server: every command we use,
//! pipelined puts, reconnect with backoff replaying `use`/`watch`
//! (docs/beanstalkd-protocol.md §Reconnect), and the reply size bound read from the
//! server's `stats` on every connect (§Reply size), and a `reserve-with-timeout` that
//! may outlive the call that sent it (§Waiting reserve). Knows nothing of shards or the
//! `Queue` trait; touches only its own socket.

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::protocol::{
    decode, parse_yaml_list, parse_yaml_map, Command, Decoded, ProtocolError, Reply, ServerError, DEFAULT_MAX_JOB_SIZE,
    MAX_JOB_SIZE_CEILING,
};

/// Timeouts and backoff of a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Limit on opening the TCP connection.
    pub connect_timeout: Duration,
    /// Limit on any reply, beyond the server-side wait of `reserve-with-timeout`.
    pub io_timeout: Duration,
    /// First wait between reconnect attempts; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The configured maximum job body: caps the server's `max-job-size`, and stands in
    /// for it when the server does not report one (`DEFAULT_MAX_JOB_SIZE` when unset).
    pub max_job_size: Option<usize>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            io_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_job_size: None,
        }
    }
}

/// A job as reserve and peek return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: u64,
    pub body: Vec<u8>,
}

/// One job of a pipelined put.
#[derive(Debug, Clone, Copy)]
pub struct PutJob<'a> {
    pub pri: u32,
    pub delay: u32,
    pub ttr: u32,
    pub body: &'a [u8],
}

/// A pipelined put whose connection broke: the first jobs, as many as `answered` holds, got
/// their replies; the others may or may not be on the server.
#[derive(Debug)]
pub struct BrokenPut {
    pub answered: Vec<Result<u64, ClientError>>,
    pub error: ClientError,
}

impl From<BrokenPut> for ClientError {
    fn from(broken: BrokenPut) -> Self {
        broken.error
    }
}

/// Every failure names the server and the command.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("beanstalkd {addr}: {command} got {error}")]
    Reply { addr: String, command: &'static str, error: ServerError },
    #[error("beanstalkd {addr}: {command}: {source}")]
    Io {
        addr: String,
        command: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("beanstalkd {addr}: {command}: {source}")]
    Protocol {
        addr: String,
        command: &'static str,
        #[source]
        source: ProtocolError,
    },
    #[error("beanstalkd {addr}: {command}: unexpected reply {reply}")]
    Unexpected { addr: String, command: &'static str, reply: String },
    #[error("beanstalkd {addr}: {command}: no reply within {after:?}")]
    Timeout { addr: String, command: &'static str, after: Duration },
    #[error("beanstalkd {addr} unavailable: {reason}")]
    Unavailable { addr: String, reason: String },
    #[error("beanstalkd {addr}: {command} {id}: the reservation was lost with the old connection")]
    ReservationLost { addr: String, command: &'static str, id: u64 },
}

impl ClientError {
    /// The server said NOT_FOUND, or the reservation died with a previous connection.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Reply { error: ServerError::NotFound, .. } | ClientError::ReservationLost { .. })
    }

    /// The server could not be reached or the connection broke: another server may do.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            ClientError::Io { .. }
                | ClientError::Timeout { .. }
                | ClientError::Unavailable { .. }
                | ClientError::Protocol { .. }
        )
    }

    /// The typed error reply, when the server sent one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            ClientError::Reply { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Why a round trip failed, before the server and command are attached.
#[derive(Debug)]
enum WireError {
    Io(io::Error),
    Closed,
    Protocol(ProtocolError),
    Timeout(Duration),
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

impl From<ProtocolError> for WireError {
    fn from(e: ProtocolError) -> Self {
        WireError::Protocol(e)
    }
}

type Answer = Result<Reply, ServerError>;

/// A connection; reconnects on the next command after a failure.
#[derive(Debug)]
pub struct Connection {
    addr: String,
    opts: ConnectOptions,
    stream: Option<TcpStream>,
    rbuf: Vec<u8>,
    used: String,
    watched: Vec<String>,
    /// Jobs reserved on the current TCP connection.
    reserved: HashSet<u64>,
    /// Jobs reserved on a previous TCP connection: the server took them back.
    lost: HashSet<u64>,
    /// A command was sent and its reply not read (its future was dropped): the stream is out of step.
    in_flight: bool,
    /// A `reserve-with-timeout` is out and its reply not read yet; the server answers by
    /// this time (its timeout plus the I/O limit) or the stream is taken as broken (§Waiting reserve).
    waiting: Option<Instant>,
    /// A job whose reservation arrived after the call that waited for it had given up:
    /// the next reserve on this connection hands it out.
    held: Option<Job>,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// A command got its replies on the current socket. A socket that breaks before that
    /// (a server that answers garbage, or a job it cannot hand over) waits out the backoff
    /// before the next connect, so a fault that repeats is met with a growing delay.
    proven: bool,
    last_error: String,
    sessions: u64,
    /// Longest job body a reply may carry (§Reply size).
    max_body: usize,
}

/// Lost reservations remembered at most (a consumer acts on its few jobs soon after).
const MAX_LOST: usize = 10_000;

impl Connection {
    /// A connection that opens its socket on first use.
    pub fn new(addr: &str, opts: ConnectOptions) -> Self {
        Self {
            addr: addr.to_owned(),
            backoff: opts.backoff_min,
            stream: None,
            rbuf: Vec::with_capacity(4096),
            used: "default".to_owned(),
            watched: vec!["default".to_owned()],
            reserved: HashSet::new(),
            lost: HashSet::new(),
            in_flight: false,
            waiting: None,
            held: None,
            retry_at: None,
            proven: false,
            last_error: String::new(),
            sessions: 0,
            max_body: body_bound(None, opts.max_job_size),
            opts,
        }
    }

    /// A connection opened now (fails if the server cannot be reached).
    pub async fn connect(addr: &str, opts: ConnectOptions) -> Result<Self, ClientError> {
        let mut conn = Self::new(addr, opts);
        conn.ensure_connected("connect").await?;
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// How many TCP connections this client has opened so far.
    pub fn sessions(&self) -> u64 {
        self.sessions
    }

    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Whether a `reserve-with-timeout` sent by `reserve_until` still awaits its reply.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// The longest job body this connection accepts in a reply (and so the longest one
    /// worth putting): the server's `max-job-size` as of the last connect, capped by the
    /// configured maximum (§Reply size).
    pub fn max_job_size(&self) -> usize {
        self.max_body
    }

    /// The tube puts go to (kept across reconnects).
    pub fn used(&self) -> &str {
        &self.used
    }

    /// The watch list (kept across reconnects).
    pub fn watched(&self) -> &[String] {
        &self.watched
    }

    /// Sets the watch list a (re)connection establishes; an open socket is
    /// closed so the next command replays it. For setting up consumers offline.
    pub fn set_watch_list(&mut self, tubes: &[String]) {
        self.watched = tubes.to_vec();
        self.disconnect();
    }

    /// Opens the socket now if it is not open (within the backoff rules).
    pub async fn ensure_open(&mut self) -> Result<(), ClientError> {
        self.ensure_connected("connect").await.map(|_| ())
    }

    /// Closes the socket; the next command reconnects at once. Reservations are lost.
    pub fn disconnect(&mut self) {
        self.drop_stream("closed by the client");
        self.retry_at = None;
    }

    // ---- §Producer ----

    /// `put`; the job goes to the used tube.
    pub async fn put(&mut self, pri: u32, delay: u32, ttr: u32, body: &[u8]) -> Result<u64, ClientError> {
        let cmd = Command::Put { pri, delay, ttr, body };
        match self.request(&cmd).await? {
            Reply::Inserted(id) => Ok(id),
            other => Err(self.unexpected(&cmd, other)),
        }
    }

    /// Sends all the puts, then reads all the replies (the two overlap, so a
    /// large batch cannot deadlock on full socket buffers). Inner errors are per-job
    /// error replies; the outer error is a broken connection, with the replies read
    /// before it (§Bulk put).
    pub async fn put_pipelined(&mut self, jobs: &[PutJob<'_>]) -> Result<Vec<Result<u64, ClientError>>, BrokenPut> {
        let cmds: Vec<Command<'_>> =
            jobs.iter().map(|j| Command::Put { pri: j.pri, delay: j.delay, ttr: j.ttr, body: j.body }).collect();
        let mut answers = Vec::with_capacity(cmds.len());
        let broken = self.pipeline_into(&cmds, &mut answers).await.err();
        let results = answers
            .into_iter()
            .zip(&cmds)
            .map(|(answer, cmd)| match answer {
                Ok(Reply::Inserted(id)) => Ok(id),
                Ok(other) => Err(self.unexpected(cmd, other)),
                Err(error) => Err(ClientError::Reply { addr: self.addr.clone(), command: "put", error }),
            })
            .collect();
        match broken {
            None => Ok(results),
            Some(error) => Err(BrokenPut { answered: results, error }),
        }
    }

    /// `use`; skipped when the tube is already in use.
    pub async fn use_tube(&mut self, tube: &str) -> Result<(), ClientError> {
        if self.used == tube && self.is_connected() {
            return Ok(());
        }
        let cmd = Command::Use(tube);
        match self.request(&cmd).await? {
            Reply::Using(t) if t == tube => {
                self.used = t;
                Ok(())
            }
            other => Err(self.unexpected(&cmd, other)),
        }
    }

    // ---- §Worker ----

    /// `reserve`: waits without limit.
    pub async fn reserve(&mut self) -> Result<Job, ClientError> {
        if let Some(job) = self.held_job().await {
            return Ok(job);
        }
        let reply = self.request(&Command::Reserve).await?;
        self.reserved_job(&Command::Reserve, reply)
    }

    /// `reserve-with-timeout`; `None` on TIMED_OUT. DEADLINE_SOON is an error.
    pub async fn reserve_with_timeout(&mut self, secs: u32) -> Result<Option<Job>, ClientError> {
        if let Some(job) = self.held_job().await {
            return Ok(Some(job));
        }
        let cmd = Command::ReserveWithTimeout(secs);
        match self.request(&cmd).await {
            Ok(reply) => self.reserved_job(&cmd, reply).map(Some),
            Err(e) if e.server_error() == Some(&ServerError::TimedOut) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for a job until `deadline`, which may be shorter than the server's whole
    /// seconds (§Waiting reserve): sends `reserve-with-timeout secs` unless one is out
    /// already, and reads its reply until `deadline`. `None` when the server timed out or
    /// the deadline came first; in the latter case the wait stays out, and the next call
    /// (or any other command on this connection) reads its reply, so a job the server
    /// hands over late is kept and handed out by the next reserve. DEADLINE_SOON is an error.
    pub async fn reserve_until(&mut self, secs: u32, deadline: Instant) -> Result<Option<Job>, ClientError> {
        if let Some(job) = self.held.take() {
            return Ok(Some(job));
        }
        if self.waiting.is_none() {
            self.send_wait(secs).await?;
        }
        self.read_wait(Some(deadline)).await
    }

    /// `reserve-job`.
    pub async fn reserve_job(&mut self, id: u64) -> Result<Job, ClientError> {
        let cmd = Command::ReserveJob(id);
        let reply = self.request(&cmd).await?;
        self.reserved_job(&cmd, reply)
    }

    /// `delete` of a job reserved here, or of any ready, delayed or buried job.
    pub async fn delete(&mut self, id: u64) -> Result<(), ClientError> {
        let cmd = Command::Delete(id);
        self.check_not_lost(&cmd, id)?;
        let result = self.request(&cmd).await;
        self.end_reservation(id, &result);
        self.expect(&cmd, result?, Reply::Deleted)
    }

    /// `delete` then `reserve-with-timeout`, written together and answered in one round
    /// trip (§Framing: replies come in order): a worker's "done with this one, next please".
    /// The outer error is the connection's; the delete's own outcome comes back beside the
    /// reservation's (`None` on TIMED_OUT, as `reserve_with_timeout`).
    pub async fn delete_then_reserve_with_timeout(
        &mut self,
        id: u64,
        secs: u32,
    ) -> Result<(Result<(), ClientError>, Result<Option<Job>, ClientError>), ClientError> {
        let delete = Command::Delete(id);
        if let Err(lost) = self.check_not_lost(&delete, id) {
            return Ok((Err(lost), self.reserve_with_timeout(secs).await));
        }
        if let Some(job) = self.held_job().await {
            return Ok((self.delete(id).await, Ok(Some(job))));
        }
        let reserve = Command::ReserveWithTimeout(secs);
        let mut answers = self.pipeline(&[delete.clone(), reserve.clone()]).await?.into_iter();
        let deleted = self.answer(&delete, answers.next());
        self.end_reservation(id, &deleted);
        let deleted = deleted.and_then(|reply| self.expect(&delete, reply, Reply::Deleted));
        let job = match self.answer(&reserve, answers.next()) {
            Ok(reply) => self.reserved_job(&reserve, reply).map(Some),
            Err(e) if e.server_error() == Some(&ServerError::TimedOut) => Ok(None),
            Err(e) => Err(e),
        };
        Ok((deleted, job))
    }

    /// `release`; BURIED (out of memory) comes back as an error.
    pub async fn release(&mut self, id: u64, pri: u32, delay: u32) -> Result<(), ClientError> {
        let cmd = Command::Release { id, pri, delay };
        self.check_not_lost(&cmd, id)?;
        let result = self.request(&cmd).await;
        self.end_reservation(id, &result);
        match result? {
            Reply::Released => Ok(()),
            Reply::Buried => {
                Err(ClientError::Reply { addr: self.addr.clone(), command: "release", error: ServerError::OutOfMemory })
            }
            other => Err(self.unexpected(&cmd, other)),
        }
    }

    /// `bury`.
    pub async fn bury(&mut self, id: u64, pri: u32) -> Result<(), ClientError> {
        let cmd = Command::Bury { id, pri };
        self.check_not_lost(&cmd, id)?;
        let result = self.request(&cmd).await;
        self.end_reservation(id, &result);
        self.expect(&cmd, result?, Reply::Buried)
    }

    /// `touch`.
    pub async fn touch(&mut self, id: u64) -> Result<(), ClientError> {
        let cmd = Command::Touch(id);
        self.check_not_lost(&cmd, id)?;
        let reply = self.request(&cmd).await?;
        self.expect(&cmd, reply, Reply::Touched)
    }

    /// `watch`; returns the size of the watch list.
    pub async fn watch(&mut self, tube: &str) -> Result<u64, ClientError> {
        let cmd = Command::Watch(tube);
        let count = self.watching(&cmd).await?;
        if !self.watched.iter().any(|t| t == tube) {
            self.watched.push(tube.to_owned());
        }
        Ok(count)
    }

    /// `ignore`; NOT_IGNORED (the last tube) is an error.
    pub async fn ignore(&mut self, tube: &str) -> Result<u64, ClientError> {
        let cmd = Command::Ignore(tube);
        let count = self.watching(&cmd).await?;
        self.watched.retain(|t| t != tube);
        Ok(count)
    }

    // ---- §Other ----

    pub async fn peek(&mut self, id: u64) -> Result<Option<Job>, ClientError> {
        self.peek_cmd(Command::Peek(id)).await
    }

    pub async fn peek_ready(&mut self) -> Result<Option<Job>, ClientError> {
        self.peek_cmd(Command::PeekReady).await
    }

    pub async fn peek_delayed(&mut self) -> Result<Option<Job>, ClientError> {
        self.peek_cmd(Command::PeekDelayed).await
    }

    pub async fn peek_buried(&mut self) -> Result<Option<Job>, ClientError> {
        self.peek_cmd(Command::PeekBuried).await
    }

    /// `kick` on the used tube: buried jobs if any, else delayed ones.
    pub async fn kick(&mut self, bound: u64) -> Result<u64, ClientError> {
        let cmd = Command::Kick(bound);
        match self.request(&cmd).await? {
            Reply::Kicked(n) => Ok(n),
            other => Err(self.unexpected(&cmd, other)),
        }
    }

    pub async fn kick_job(&mut self, id: u64) -> Result<(), ClientError> {
        let cmd = Command::KickJob(id);
        let reply = self.request(&cmd).await?;
        self.expect(&cmd, reply, Reply::KickedJob)
    }

    pub async fn stats_job(&mut self, id: u64) -> Result<HashMap<String, String>, ClientError> {
        self.yaml_map(Command::StatsJob(id)).await
    }

    pub async fn stats_tube(&mut self, tube: &str) -> Result<HashMap<String, String>, ClientError> {
        self.yaml_map(Command::StatsTube(tube)).await
    }

    pub async fn stats(&mut self) -> Result<HashMap<String, String>, ClientError> {
        self.yaml_map(Command::Stats).await
    }

    pub async fn list_tubes(&mut self) -> Result<Vec<String>, ClientError> {
        self.yaml_list(Command::ListTubes).await
    }

    pub async fn list_tubes_watched(&mut self) -> Result<Vec<String>, ClientError> {
        self.yaml_list(Command::ListTubesWatched).await
    }

    pub async fn list_tube_used(&mut self) -> Result<String, ClientError> {
        let cmd = Command::ListTubeUsed;
        match self.request(&cmd).await? {
            Reply::Using(t) => Ok(t),
            other => Err(self.unexpected(&cmd, other)),
        }
    }

    pub async fn pause_tube(&mut self, tube: &str, delay: u32) -> Result<(), ClientError> {
        let cmd = Command::PauseTube { tube, delay };
        let reply = self.request(&cmd).await?;
        self.expect(&cmd, reply, Reply::Paused)
    }

    // ---- reply shapes ----

    fn reserved_job(&mut self, cmd: &Command<'_>, reply: Reply) -> Result<Job, ClientError> {
        match reply {
            Reply::Reserved { id, body } => {
                self.lost.remove(&id);
                self.reserved.insert(id);
                Ok(Job { id, body })
            }
            other => Err(self.unexpected(cmd, other)),
        }
    }

    async fn peek_cmd(&mut self, cmd: Command<'_>) -> Result<Option<Job>, ClientError> {
        match self.request(&cmd).await {
            Ok(Reply::Found { id, body }) => Ok(Some(Job { id, body })),
            Ok(other) => Err(self.unexpected(&cmd, other)),
            Err(e) if e.server_error() == Some(&ServerError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn watching(&mut self, cmd: &Command<'_>) -> Result<u64, ClientError> {
        match self.request(cmd).await? {
            Reply::Watching(n) => Ok(n),
            other => Err(self.unexpected(cmd, other)),
        }
    }

    async fn chunk(&mut self, cmd: &Command<'_>) -> Result<Vec<u8>, ClientError> {
        match self.request(cmd).await? {
            Reply::Ok(data) => Ok(data),
            other => Err(self.unexpected(cmd, other)),
        }
    }

    async fn yaml_map(&mut self, cmd: Command<'_>) -> Result<HashMap<String, String>, ClientError> {
        let data = self.chunk(&cmd).await?;
        parse_yaml_map(&data).map_err(|source| self.protocol_error(&cmd, source))
    }

    async fn yaml_list(&mut self, cmd: Command<'_>) -> Result<Vec<String>, ClientError> {
        let data = self.chunk(&cmd).await?;
        parse_yaml_list(&data).map_err(|source| self.protocol_error(&cmd, source))
    }

    fn expect(&self, cmd: &Command<'_>, reply: Reply, want: Reply) -> Result<(), ClientError> {
        if reply == want {
            Ok(())
        } else {
            Err(self.unexpected(cmd, reply))
        }
    }

    fn unexpected(&self, cmd: &Command<'_>, reply: Reply) -> ClientError {
        ClientError::Unexpected { addr: self.addr.clone(), command: cmd.name(), reply: reply.describe() }
    }

    fn protocol_error(&self, cmd: &Command<'_>, source: ProtocolError) -> ClientError {
        ClientError::Protocol { addr: self.addr.clone(), command: cmd.name(), source }
    }

    // ---- reservations across reconnects (§Reconnect) ----

    fn check_not_lost(&self, cmd: &Command<'_>, id: u64) -> Result<(), ClientError> {
        if self.lost.contains(&id) {
            return Err(ClientError::ReservationLost { addr: self.addr.clone(), command: cmd.name(), id });
        }
        Ok(())
    }

    /// After delete/release/bury: the reservation is over whether it worked or the job was gone.
    fn end_reservation(&mut self, id: u64, result: &Result<Reply, ClientError>) {
        let over = match result {
            Ok(_) => true,
            Err(e) => e.is_not_found(),
        };
        if over {
            self.reserved.remove(&id);
        }
    }

    // ---- a reserve that outlives its call (§Waiting reserve) ----

    /// Writes `reserve-with-timeout secs` without reading its reply.
    async fn send_wait(&mut self, secs: u32) -> Result<(), ClientError> {
        let cmd = Command::ReserveWithTimeout(secs);
        self.ensure_connected(cmd.name()).await?;
        let mut out = Vec::new();
        cmd.encode(&mut out);
        let limit = self.opts.io_timeout;
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.unavailable("not connected"));
        };
        self.in_flight = true;
        let written = match timeout(limit, stream.write_all(&out)).await {
            Ok(result) => result.map_err(WireError::Io),
            Err(_) => Err(WireError::Timeout(limit)),
        };
        self.in_flight = false;
        if let Err(wire) = written {
            return Err(self.fail(cmd.name(), wire));
        }
        self.waiting = Some(Instant::now() + Duration::from_secs(u64::from(secs)) + limit);
        Ok(())
    }

    /// Reads the reply of the wait that is out, until `deadline` (None: until the server
    /// must have answered). `None` on TIMED_OUT, or when `deadline` came first (the wait
    /// stays out; reading is cancel-safe, so a partly read reply is kept in the buffer).
    async fn read_wait(&mut self, deadline: Option<Instant>) -> Result<Option<Job>, ClientError> {
        let Some(reply_by) = self.waiting else { return Ok(None) };
        let cmd = Command::ReserveWithTimeout(0);
        let until = deadline.map_or(reply_by, |d| d.min(reply_by));
        let Some(stream) = self.stream.as_mut() else {
            self.waiting = None;
            return Err(self.unavailable("not connected"));
        };
        let mut answers = Vec::with_capacity(1);
        let read = read_replies(stream, &mut self.rbuf, &mut answers, 1, self.max_body);
        let result = match tokio::time::timeout_at(until, read).await {
            Ok(result) => result,
            Err(_) if Instant::now() < reply_by => return Ok(None),
            Err(_) => Err(WireError::Timeout(self.opts.io_timeout)),
        };
        self.waiting = None;
        result.map_err(|wire| self.fail(cmd.name(), wire))?;
        self.proven = true;
        self.backoff = self.opts.backoff_min;
        match self.answer(&cmd, answers.into_iter().next()) {
            Ok(reply) => self.reserved_job(&cmd, reply).map(Some),
            Err(e) if e.server_error() == Some(&ServerError::TimedOut) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Before any other command: reads the reply of a wait that is out. A job it brings
    /// is held for the next reserve; a failure has dropped the socket, and the command
    /// reconnects as after any failure.
    async fn settle_wait(&mut self) {
        if self.waiting.is_none() {
            return;
        }
        match self.read_wait(None).await {
            Ok(Some(job)) => self.held = Some(job),
            Ok(None) => {}
            Err(e) => log::debug!("a reserve that was out ended without a job: {e}"),
        }
    }

    /// A job held from an earlier wait, once any wait that is out has been read.
    async fn held_job(&mut self) -> Option<Job> {
        self.settle_wait().await;
        self.held.take()
    }

    /// Drops the socket after a wire failure (with the backoff when it never served a command).
    fn fail(&mut self, command: &'static str, wire: WireError) -> ClientError {
        let err = self.wire_error(command, wire);
        let proven = self.proven;
        self.drop_stream(&err.to_string());
        if !proven {
            self.hold_off();
        }
        err
    }

    // ---- the wire ----

    /// One command, one reply. Error replies become `ClientError::Reply`.
    async fn request(&mut self, cmd: &Command<'_>) -> Result<Reply, ClientError> {
        let answers = self.pipeline(std::slice::from_ref(cmd)).await?;
        self.answer(cmd, answers.into_iter().next())
    }

    /// One command's reply out of a pipeline: error replies become `ClientError::Reply`.
    fn answer(&self, cmd: &Command<'_>, answer: Option<Answer>) -> Result<Reply, ClientError> {
        match answer {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(error)) => Err(ClientError::Reply { addr: self.addr.clone(), command: cmd.name(), error }),
            None => {
                Err(ClientError::Unexpected { addr: self.addr.clone(), command: cmd.name(), reply: "nothing".into() })
            }
        }
    }

    /// Sends the commands and reads one reply each (§Framing: replies come in order).
    /// A stale connection is retried once for a single idempotent command.
    async fn pipeline(&mut self, cmds: &[Command<'_>]) -> Result<Vec<Answer>, ClientError> {
        let mut answers = Vec::with_capacity(cmds.len());
        self.pipeline_into(cmds, &mut answers).await?;
        Ok(answers)
    }

    /// `pipeline`, leaving in `answers` the replies read before a failure: those commands
    /// took effect, and the ones after them may or may not have (§Bulk put).
    async fn pipeline_into(&mut self, cmds: &[Command<'_>], answers: &mut Vec<Answer>) -> Result<(), ClientError> {
        let name = cmds.first().map_or("pipeline", Command::name);
        let limit = self.reply_limit(cmds);
        let retry_ok = cmds.len() == 1 && cmds[0].is_idempotent();
        let mut out = Vec::new();
        for cmd in cmds {
            cmd.encode(&mut out);
        }
        self.settle_wait().await;
        for attempt in 0..2 {
            let reused = self.ensure_connected(name).await?;
            let Some(stream) = self.stream.as_mut() else {
                return Err(self.unavailable("not connected"));
            };
            self.in_flight = true;
            answers.clear();
            let result = exchange(stream, &mut self.rbuf, &out, cmds.len(), answers, limit, self.max_body).await;
            self.in_flight = false;
            match result {
                Ok(()) => {
                    self.proven = true;
                    self.backoff = self.opts.backoff_min;
                    return Ok(());
                }
                Err(wire) => {
                    let err = self.fail(name, wire);
                    if !(reused && retry_ok && attempt == 0) {
                        return Err(err);
                    }
                    log::debug!("{err}; retrying once on a new connection");
                }
            }
        }
        Err(self.unavailable("retry failed"))
    }

    /// How long to wait for the replies: reserve waits on the server first.
    fn reply_limit(&self, cmds: &[Command<'_>]) -> Option<Duration> {
        let mut limit = self.opts.io_timeout;
        for cmd in cmds {
            match cmd {
                Command::Reserve => return None,
                Command::ReserveWithTimeout(s) => limit += Duration::from_secs(u64::from(*s)),
                _ => {}
            }
        }
        Some(limit)
    }

    fn wire_error(&self, command: &'static str, wire: WireError) -> ClientError {
        let addr = self.addr.clone();
        match wire {
            WireError::Io(source) => ClientError::Io { addr, command, source },
            WireError::Closed => ClientError::Io {
                addr,
                command,
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"),
            },
            WireError::Protocol(source) => ClientError::Protocol { addr, command, source },
            WireError::Timeout(after) => ClientError::Timeout { addr, command, after },
        }
    }

    fn unavailable(&self, reason: &str) -> ClientError {
        ClientError::Unavailable { addr: self.addr.clone(), reason: reason.to_owned() }
    }

    /// Forgets the socket; reservations on it are lost (the server gives them back).
    fn drop_stream(&mut self, why: &str) {
        if self.stream.take().is_some() {
            log::info!("beanstalkd {}: connection dropped: {why}", self.addr);
        }
        self.rbuf.clear();
        self.in_flight = false;
        self.waiting = None;
        self.held = None;
        if self.lost.len() > MAX_LOST {
            self.lost.clear();
        }
        self.lost.extend(self.reserved.drain());
        self.last_error = why.to_owned();
    }

    /// Makes sure there is a live socket; returns whether it is an older one (maybe stale).
    async fn ensure_connected(&mut self, command: &'static str) -> Result<bool, ClientError> {
        if self.in_flight {
            self.drop_stream("a previous command was cancelled before its reply");
        }
        if let Some(stream) = &self.stream {
            match peer_state(stream) {
                Ok(()) => return Ok(true),
                Err(why) => self.drop_stream(&why),
            }
        }
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return Err(self.unavailable(&format!("{command}: waiting to reconnect ({})", self.last_error)));
            }
        }
        match self.open().await {
            Ok(stream) => {
                self.stream = Some(stream);
                self.sessions += 1;
                self.retry_at = None;
                self.proven = false;
                Ok(false)
            }
            Err(e) => {
                self.last_error = e.to_string();
                self.hold_off();
                Err(e)
            }
        }
    }

    /// No reconnect before the backoff has passed; the next wait is twice as long, up to
    /// `backoff_max`. A command that gets its replies resets it.
    fn hold_off(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.opts.backoff_max);
    }

    /// Opens a socket, replays `use` and the watch list on it (§Reconnect), and reads the
    /// server's `max-job-size` (§Reply size), all in one round trip.
    async fn open(&mut self) -> Result<TcpStream, ClientError> {
        let connecting = timeout(self.opts.connect_timeout, TcpStream::connect(&self.addr));
        let mut stream = match connecting.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(self.unavailable(&format!("connect: {e}"))),
            Err(_) => {
                return Err(self.unavailable(&format!("connect: no answer within {:?}", self.opts.connect_timeout)))
            }
        };
        stream.set_nodelay(true).map_err(|e| self.unavailable(&format!("set TCP_NODELAY: {e}")))?;
        self.rbuf.clear();
        let state = self.state_commands();
        let mut cmds: Vec<Command<'_>> = state.iter().map(StateCmd::command).collect();
        cmds.push(Command::Stats);
        let mut out = Vec::new();
        for cmd in &cmds {
            cmd.encode(&mut out);
        }
        let limit = Some(self.opts.io_timeout);
        let mut answers = Vec::with_capacity(cmds.len());
        exchange(&mut stream, &mut self.rbuf, &out, cmds.len(), &mut answers, limit, self.max_body)
            .await
            .map_err(|w| self.wire_error("connect", w))?;
        let stats = answers.pop();
        if let Some((cmd, bad)) = cmds.iter().zip(&answers).find(|(_, a)| a.is_err()) {
            return Err(self.unavailable(&format!("replaying {}: {bad:?}", cmd.name())));
        }
        self.max_body = body_bound(self.server_max_job_size(stats)?, self.opts.max_job_size);
        Ok(stream)
    }

    /// `max-job-size` from the answer to `stats`; None when the server does not say.
    fn server_max_job_size(&self, stats: Option<Answer>) -> Result<Option<usize>, ClientError> {
        match stats {
            Some(Ok(Reply::Ok(yaml))) => {
                let map = parse_yaml_map(&yaml).map_err(|e| self.protocol_error(&Command::Stats, e))?;
                Ok(map.get("max-job-size").and_then(|v| v.parse().ok()))
            }
            // A server without `stats` (or one that refuses it) gets the configured bound.
            _ => Ok(None),
        }
    }

    /// The commands that bring a fresh connection to our `use`/`watch` state.
    fn state_commands(&self) -> Vec<StateCmd> {
        let mut cmds = Vec::new();
        if self.used != "default" {
            cmds.push(StateCmd::Use(self.used.clone()));
        }
        for t in self.watched.iter().filter(|t| *t != "default") {
            cmds.push(StateCmd::Watch(t.clone()));
        }
        if !self.watched.iter().any(|t| t == "default") && !self.watched.is_empty() {
            cmds.push(StateCmd::Ignore("default".to_owned()));
        }
        cmds
    }
}

/// An owned state command, so replay does not borrow the connection.
enum StateCmd {
    Use(String),
    Watch(String),
    Ignore(String),
}

impl StateCmd {
    fn command(&self) -> Command<'_> {
        match self {
            StateCmd::Use(t) => Command::Use(t),
            StateCmd::Watch(t) => Command::Watch(t),
            StateCmd::Ignore(t) => Command::Ignore(t),
        }
    }
}

/// The reply body bound (§Reply size): the server's `max-job-size` (never above beanstalkd's
/// own ceiling), capped by the configured maximum, which also stands in for the server's
/// when it reports none; `DEFAULT_MAX_JOB_SIZE` when neither is known.
fn body_bound(server: Option<usize>, configured: Option<usize>) -> usize {
    match (server.map(|s| s.min(MAX_JOB_SIZE_CEILING)), configured) {
        (Some(server), Some(configured)) => server.min(configured),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => DEFAULT_MAX_JOB_SIZE,
    }
}

/// Whether an idle socket is still open: with no command in flight, readable means closed or garbage.
fn peer_state(stream: &TcpStream) -> Result<(), String> {
    let mut probe = [0u8; 1];
    match stream.try_read(&mut probe) {
        Ok(0) => Err("server closed the connection".to_owned()),
        Ok(_) => Err("unexpected bytes from the server between replies".to_owned()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(format!("socket error: {e}")),
    }
}

/// Writes `out` while reading `n` replies into `answers`, within `limit`; a job body in them
/// is at most `max_body`. On failure `answers` keeps the replies read so far.
async fn exchange(
    stream: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    out: &[u8],
    n: usize,
    answers: &mut Vec<Answer>,
    limit: Option<Duration>,
    max_body: usize,
) -> Result<(), WireError> {
    let (mut reader, mut writer) = stream.split();
    let write = async {
        writer.write_all(out).await?;
        writer.flush().await.map_err(WireError::Io)
    };
    let read = read_replies(&mut reader, rbuf, answers, n, max_body);
    let both = async { tokio::try_join!(write, read).map(|((), ())| ()) };
    match limit {
        None => both.await,
        Some(after) => timeout(after, both).await.map_err(|_| WireError::Timeout(after))?,
    }
}

/// Reads whole replies into `answers` until it holds `n`. The buffer grows only with bytes
/// the server sent, and a reply announcing a body over `max_body` fails before its body is read.
async fn read_replies<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut Vec<u8>,
    answers: &mut Vec<Answer>,
    n: usize,
    max_body: usize,
) -> Result<(), WireError> {
    let mut start = 0;
    while answers.len() < n {
        match decode(&rbuf[start..], max_body)? {
            Decoded::Frame { len, reply } => {
                start += len;
                answers.push(reply);
            }
            Decoded::NeedMore => {
                rbuf.drain(..start);
                start = 0;
                if rbuf.capacity() - rbuf.len() < 4096 {
                    rbuf.reserve(64 * 1024);
                }
                if reader.read_buf(rbuf).await? == 0 {
                    return Err(WireError::Closed);
                }
            }
        }
    }
    rbuf.drain(..start);
    Ok(())
}
