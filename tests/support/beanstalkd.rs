//! Test harness: runs a real /usr/bin/beanstalkd on a free 127.0.0.1 port
//! (optionally with a binlog dir and a job size limit) and kills it by PID on
//! drop. Touches only the processes and temp dirs it creates.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
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
