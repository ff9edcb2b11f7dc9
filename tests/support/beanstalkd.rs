//! Test harness: runs a real /usr/bin/beanstalkd on a free 127.0.0.1 port
//! (optionally with a binlog dir and a job size limit) and kills it by PID on
//! drop; and `HostileBeanstalkd`, a fake server on loopback that answers reserves
//! with hostile bytes. Touches only the processes, sockets and temp dirs it creates.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ports::free_port;

/// How to start the server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `-b DIR`: write-ahead log, so jobs survive a restart.
    pub binlog: Option<PathBuf>,
    /// `-z BYTES`: max job size.
    pub max_job_size: Option<usize>,
}

/// A running beanstalkd; stopped when dropped.
pub struct Beanstalkd {
    child: Option<Child>,
    port: u16,
    opts: Options,
}

impl Beanstalkd {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Self {
        let mut server = Self { child: None, port: free_port(), opts };
        server.spawn();
        server
    }

    /// With a binlog in `dir`.
    pub fn with_binlog(dir: &Path) -> Self {
        Self::start_with(Options { binlog: Some(dir.to_owned()), ..Options::default() })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("/usr/bin/beanstalkd");
        cmd.args(["-l", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(dir) = &self.opts.binlog {
            cmd.arg("-b").arg(dir);
        }
        if let Some(z) = self.opts.max_job_size {
            cmd.args(["-z", &z.to_string()]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().expect("start /usr/bin/beanstalkd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(self.addr()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("beanstalkd on {} did not start", self.addr());
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill, then start again on the same port with the same options.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Start again after `kill`.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }
}

impl Drop for Beanstalkd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the fake server sends in answer to a reserve on its first `bad_connections` connections.
#[derive(Debug, Clone, Copy)]
pub enum Hostile {
    /// `RESERVED 1 1073741824\r\n`, then up to `streamed` bytes of body, then silence.
    Oversized { streamed: usize },
    /// A 100 KB line with no `\r\n`, then silence.
    GarbageLine,
}

/// A fake beanstalkd on 127.0.0.1: answers `stats` (max-job-size 65535), `use`, `watch`,
/// `ignore` and `delete` as the real one does; a reserve on one of its first
/// `bad_connections` connections gets the hostile reply, on a later one the job
/// `RESERVED 2 5\r\nhello\r\n`. Each connection is served by its own thread.
pub struct HostileBeanstalkd {
    addr: String,
    accepted: Arc<AtomicUsize>,
}

impl HostileBeanstalkd {
    pub fn start(hostile: Hostile, bad_connections: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake server");
        let addr = listener.local_addr().expect("local addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let bad = counter.fetch_add(1, Ordering::SeqCst) < bad_connections;
                std::thread::spawn(move || serve(stream, bad.then_some(hostile)));
            }
        });
        Self { addr, accepted }
    }

    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Answers one connection's commands until the client goes away.
fn serve(stream: TcpStream, hostile: Option<Hostile>) {
    let Ok(mut out) = stream.try_clone() else { return };
    let mut lines = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if !matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
            return;
        }
        let words: Vec<&str> = line.trim_end().split(' ').collect();
        let reply: Vec<u8> = match words.as_slice() {
            ["stats"] => {
                let yaml = "---\nmax-job-size: 65535\n";
                format!("OK {}\r\n{yaml}\r\n", yaml.len()).into_bytes()
            }
            ["use", tube] => format!("USING {tube}\r\n").into_bytes(),
            ["watch", _] => b"WATCHING 2\r\n".to_vec(),
            ["ignore", _] => b"WATCHING 1\r\n".to_vec(),
            ["delete", _] => b"DELETED\r\n".to_vec(),
            [cmd, ..] if cmd.starts_with("reserve") => match hostile {
                Some(hostile) => return send_hostile(&mut out, &mut lines, hostile),
                None => b"RESERVED 2 5\r\nhello\r\n".to_vec(),
            },
            _ => b"UNKNOWN_COMMAND\r\n".to_vec(),
        };
        if out.write_all(&reply).is_err() {
            return;
        }
    }
}

/// Sends the hostile reply, then holds the connection open until the client closes it.
fn send_hostile(out: &mut TcpStream, lines: &mut BufReader<TcpStream>, hostile: Hostile) {
    let sent = match hostile {
        Hostile::Oversized { streamed } => out.write_all(b"RESERVED 1 1073741824\r\n").and_then(|()| {
            let block = vec![b'x'; 64 * 1024];
            let mut left = streamed;
            while left > 0 {
                let n = left.min(block.len());
                out.write_all(&block[..n])?;
                left -= n;
            }
            Ok(())
        }),
        Hostile::GarbageLine => out.write_all(&vec![b'A'; 100_000]),
    };
    if sent.is_ok() {
        let mut sink = [0u8; 1024];
        while matches!(lines.read(&mut sink), Ok(n) if n > 0) {}
    }
}
