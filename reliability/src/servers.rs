//! redis-server and sentinel processes started by the suite.
//!
//! Each [`RedisProcess`] runs on 127.0.0.1 on an ephemeral port, in its own
//! scratch directory, and can be stalled (`SIGSTOP`/`SIGCONT`), killed
//! (`SIGKILL`) and restarted on the same port and directory. Signals go to
//! the pid of the child this crate spawned, never to a process found by
//! name. Dropping the value kills and reaps the process; [`kill_all`], for
//! the signal handler, kills every process still running.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The loopback address every server binds.
pub const HOST: &str = "127.0.0.1";

/// How long a server may take to answer `PING` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one `redis-cli` call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

static PIDS: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

fn pids() -> std::sync::MutexGuard<'static, Option<HashSet<u32>>> {
    PIDS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Kills every server this process started and has not stopped yet: for a
/// Ctrl-C/SIGTERM handler, where destructors do not run.
pub fn kill_all() {
    for pid in pids().take().unwrap_or_default() {
        let pid = Pid::from_raw(pid as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// Records a child process started elsewhere in this crate (a gateway), so
/// [`kill_all`] stops it too.
pub fn register(pid: u32) {
    pids().get_or_insert_with(HashSet::new).insert(pid);
}

/// Forgets a child recorded with [`register`] once it was reaped.
pub fn unregister(pid: u32) {
    if let Some(set) = pids().as_mut() {
        set.remove(&pid);
    }
}

/// A free loopback port (probed by binding port 0).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `$TMPDIR/<prefix>-<pid>-<nanos>`.
    pub fn new(prefix: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::env::var_os("RELIABILITY_KEEP_FILES").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What kind of process it is: a data server or a sentinel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `redis-server` with command-line options.
    Server,
    /// `redis-server <conf> --sentinel`: sentinels only run from a config
    /// file, which they rewrite.
    Sentinel,
}

/// One redis-server (or sentinel) process.
#[derive(Debug)]
pub struct RedisProcess {
    name: String,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    args: Vec<OsString>,
    role: Role,
    child: Option<Child>,
}

impl RedisProcess {
    /// Starts a data server in `parent/<name>` with `extra` options (after
    /// `--port`, `--bind`, `--dir`, `--logfile`; no persistence unless
    /// `extra` turns it on), and waits until it answers `PING`. A port taken
    /// between the probe and the bind is retried on another port.
    pub fn start(parent: &Path, name: &str, extra: &[&str]) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..3 {
            match Self::start_on(parent, name, free_port()?, extra) {
                Ok(process) => return Ok(process),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("{name} did not start")))
    }

    /// Like [`start`](Self::start), on a given port.
    pub fn start_on(parent: &Path, name: &str, port: u16, extra: &[&str]) -> Result<Self> {
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("redis.log");
        let mut args: Vec<OsString> = Vec::new();
        for arg in [
            "--port",
            &port.to_string(),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ] {
            args.push(arg.into());
        }
        args.push("--dir".into());
        args.push(dir.clone().into());
        args.push("--logfile".into());
        args.push(log.clone().into());
        args.extend(extra.iter().map(OsString::from));
        let mut process = Self {
            name: name.to_owned(),
            port,
            dir,
            log,
            args,
            role: Role::Server,
            child: None,
        };
        process.spawn_and_wait()?;
        Ok(process)
    }

    /// Starts a sentinel in `parent/<name>` whose config file holds `lines`
    /// after its port, bind, dir and logfile lines.
    pub fn start_sentinel(parent: &Path, name: &str, lines: &[String]) -> Result<Self> {
        let port = free_port()?;
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("sentinel.log");
        let config = dir.join("sentinel.conf");
        let mut text = format!(
            "port {port}\nbind {HOST}\ndaemonize no\nlogfile \"{}\"\ndir \"{}\"\n",
            log.display(),
            dir.display()
        );
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&config, text)?;
        let mut process = Self {
            name: name.to_owned(),
            port,
            dir,
            log,
            args: vec![config.into(), "--sentinel".into()],
            role: Role::Sentinel,
            child: None,
        };
        process.spawn_and_wait()?;
        Ok(process)
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let stderr = std::fs::File::create(self.dir.join("stderr"))?;
        let mut registry = pids();
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("cannot start redis-server (apt-get install -y redis-server redis-tools)")?;
        registry.get_or_insert_with(HashSet::new).insert(child.id());
        drop(registry);
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let pid = child.id();
                self.child = None;
                if let Some(set) = pids().as_mut() {
                    set.remove(&pid);
                }
                bail!(
                    "{} exited during startup with {status}: {}",
                    self.name,
                    self.log_tail(10)
                );
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} (port {}) not ready after {READY_TIMEOUT:?}: {}",
                    self.name,
                    self.port,
                    self.log_tail(10)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's name in this suite.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether it is a sentinel.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        kill(Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("kill -{signal} {pid} ({})", self.name))
    }

    /// `SIGSTOP`: the process stops answering, its sockets stay open.
    pub fn stall(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// `SIGCONT` after [`stall`](Self::stall).
    pub fn resume(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// `SIGKILL`, and reaps the process.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
            child.kill()?;
            child.wait()?;
            if let Some(set) = pids().as_mut() {
                set.remove(&pid);
            }
        }
        Ok(())
    }

    /// Starts the process again with the same port, options and directory
    /// (after [`kill`](Self::kill)), and waits until it answers `PING`.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn_and_wait()
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT <args>` and returns its output.
    pub async fn cli(&self, args: &[&str]) -> Result<String> {
        cli(self.port, args).await
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Runs `redis-cli -h 127.0.0.1 -p <port> <args>` (killed after 10 s) and
/// returns its trimmed standard output.
pub async fn cli(port: u16, args: &[&str]) -> Result<String> {
    let output = tokio::time::timeout(
        CLI_TIMEOUT,
        tokio::process::Command::new("redis-cli")
            .args(["-h", HOST, "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("redis-cli {} timed out", args.join(" ")))?
    .context("cannot run redis-cli")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Whether a server on `port` answers `PING` within half a second (a raw
/// RESP exchange: no client library, no redis-cli process).
pub fn ping(port: u16) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(
            &(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(500),
        )?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}

/// The value of `field` in an `INFO` reply (`field:value` lines).
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_owned)
}

/// Resident set size of process `pid` in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}
