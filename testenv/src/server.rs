//! One redis-server or sentinel process started by the fixture.
//!
//! A [`RedisProcess`] runs on 127.0.0.1, in its own directory
//! `<parent>/<name>/` (data, `redis.log` or `sentinel.log`, and `stderr`),
//! as a child guarded by [`Guard`]: dropping the value kills and reaps the
//! process, and the signal handler stops it too. It can be stalled
//! (`SIGSTOP`/`SIGCONT`), killed (`SIGKILL`) and restarted on the same port
//! with the same options and directory, so a server with AOF on comes back
//! with its data. Signals go to the pid of the child this crate spawned,
//! never to a process found by name.
//!
//! Data servers run without persistence (`--save ""`, `--appendonly no`)
//! unless their extra arguments turn it on: the data is throwaway, and disk
//! writes only slow the tests down. Extra arguments come last, and
//! redis-server lets a later option override an earlier one.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::HOST;
use crate::certs::TestCerts;
use crate::cli::{self, Cli};
use crate::error::{Error, IoContext, Result};
use crate::ports::{free_cluster_port, free_port};
use crate::process::{Guard, tail};

/// How long a server may take to answer `PING` after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often startup checks whether the server is ready.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// A free port can be taken by someone else between our probe and the
/// server's bind, so a server that fails with EADDRINUSE is retried on a
/// new port, this many times in all.
const START_ATTEMPTS: u32 = 3;

/// The programs a fixture runs: a server and its command-line client.
///
/// Each is a name looked up on PATH when it runs, or a path. xtask passes
/// the paths it located (on PATH or through the Debian package's file
/// list); the reliability suite uses the names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programs {
    /// The server, e.g. `redis-server`; sentinels run from it too.
    pub server: PathBuf,
    /// The command-line client, e.g. `redis-cli`.
    pub cli: PathBuf,
}

impl Programs {
    /// The given server and client.
    pub fn new(server: impl Into<PathBuf>, cli: impl Into<PathBuf>) -> Programs {
        Programs {
            server: server.into(),
            cli: cli.into(),
        }
    }

    /// `redis-server` and `redis-cli`, found on PATH.
    pub fn redis() -> Programs {
        Programs::new("redis-server", "redis-cli")
    }
}

impl Default for Programs {
    fn default() -> Programs {
        Programs::redis()
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

/// How clients reach the server.
#[derive(Clone, Debug)]
enum Listen {
    Plain,
    /// TLS only: the plain-text port is off. `client_auth` makes the server
    /// demand a client certificate.
    Tls {
        certs: Box<TestCerts>,
        client_auth: bool,
    },
}

/// The settings of a process before it starts; see [`RedisProcess::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct Builder {
    parent: PathBuf,
    name: String,
    programs: Programs,
    port: Option<u16>,
    cluster_bus: bool,
    listen: Listen,
    args: Vec<OsString>,
    sentinel: Option<Vec<String>>,
}

impl Builder {
    /// Runs these programs instead of `redis-server` and `redis-cli`.
    pub fn programs(mut self, programs: &Programs) -> Builder {
        self.programs = programs.clone();
        self
    }

    /// Listens on this port; without it a free port is picked (and another
    /// one if that was taken meanwhile).
    pub fn port(mut self, port: u16) -> Builder {
        self.port = Some(port);
        self
    }

    /// Picks a port whose cluster bus port (port + 10000) is free too, for a
    /// node started with `--cluster-enabled yes`.
    pub fn cluster_bus(mut self) -> Builder {
        self.cluster_bus = true;
        self
    }

    /// Speaks TLS only, with the test certificates; `client_auth` demands a
    /// client certificate signed by the test CA.
    pub fn tls(mut self, certs: &TestCerts, client_auth: bool) -> Builder {
        self.listen = Listen::Tls {
            certs: Box::new(certs.clone()),
            client_auth,
        };
        self
    }

    /// Appends options for redis-server, after the fixture's own.
    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Builder {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// Starts the process and waits until it answers `PING`.
    pub fn start(self) -> Result<RedisProcess> {
        let dir = self.parent.join(&self.name);
        let log = dir.join(match self.sentinel {
            Some(_) => "sentinel.log",
            None => "redis.log",
        });
        let mut process = RedisProcess {
            stderr: dir.join("stderr"),
            dir,
            log,
            name: self.name,
            port: 0,
            programs: self.programs,
            listen: self.listen,
            role: if self.sentinel.is_some() {
                Role::Sentinel
            } else {
                Role::Server
            },
            extra: self.args,
            sentinel_lines: self.sentinel.unwrap_or_default(),
            guard: None,
        };
        let mut attempt = 1;
        loop {
            process.port = match self.port {
                Some(port) => port,
                None if self.cluster_bus => free_cluster_port()?,
                None => free_port()?,
            };
            // A retry starts from scratch: a stale nodes.conf, sentinel.conf
            // or log from the failed attempt would name the old port.
            if process.dir.exists() && attempt > 1 {
                fs::remove_dir_all(&process.dir)
                    .io(|| format!("failed to remove {}", process.dir.display()))?;
            }
            fs::create_dir_all(&process.dir)
                .io(|| format!("failed to create {}", process.dir.display()))?;
            if process.role == Role::Sentinel {
                process.write_sentinel_config()?;
            }
            match process.spawn_and_wait() {
                Ok(()) => return Ok(process),
                Err(StartError::PortTaken(_))
                    if self.port.is_none() && attempt < START_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(StartError::PortTaken(error) | StartError::Failed(error)) => return Err(error),
            }
        }
    }
}

/// Why a server did not come up.
enum StartError {
    /// Its port was taken after we probed it; worth retrying on another port.
    PortTaken(Error),
    Failed(Error),
}

impl From<Error> for StartError {
    fn from(error: Error) -> StartError {
        StartError::Failed(error)
    }
}

/// One redis-server (or sentinel) process.
#[derive(Debug)]
pub struct RedisProcess {
    name: String,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    stderr: PathBuf,
    programs: Programs,
    listen: Listen,
    role: Role,
    extra: Vec<OsString>,
    sentinel_lines: Vec<String>,
    guard: Option<Guard>,
}

impl RedisProcess {
    /// The settings for a data server called `name`, in `parent/<name>`:
    /// plain text on a free port, `redis-server`, no extra options.
    pub fn builder(parent: &Path, name: &str) -> Builder {
        Builder {
            parent: parent.to_owned(),
            name: name.to_owned(),
            programs: Programs::default(),
            port: None,
            cluster_bus: false,
            listen: Listen::Plain,
            args: Vec::new(),
            sentinel: None,
        }
    }

    /// The settings for a sentinel called `name`, in `parent/<name>`, whose
    /// config file holds `lines` after its port, bind, dir and logfile lines
    /// (typically `sentinel monitor ...`).
    pub fn sentinel_builder(parent: &Path, name: &str, lines: &[String]) -> Builder {
        Builder {
            sentinel: Some(lines.to_vec()),
            ..RedisProcess::builder(parent, name)
        }
    }

    /// Starts a data server with `extra` options on a free port and waits
    /// until it answers `PING`.
    pub fn start(parent: &Path, name: &str, extra: &[&str]) -> Result<RedisProcess> {
        RedisProcess::builder(parent, name).args(extra).start()
    }

    /// Like [`start`](Self::start), on a given port.
    pub fn start_on(parent: &Path, name: &str, port: u16, extra: &[&str]) -> Result<RedisProcess> {
        RedisProcess::builder(parent, name)
            .port(port)
            .args(extra)
            .start()
    }

    /// Starts a sentinel; see [`sentinel_builder`](Self::sentinel_builder).
    pub fn start_sentinel(parent: &Path, name: &str, lines: &[String]) -> Result<RedisProcess> {
        RedisProcess::sentinel_builder(parent, name, lines).start()
    }

    fn write_sentinel_config(&self) -> Result<()> {
        let mut text = format!(
            "port {}\nbind {HOST}\ndaemonize no\nlogfile \"{}\"\ndir \"{}\"\n",
            self.port,
            self.log.display(),
            self.dir.display()
        );
        for line in &self.sentinel_lines {
            text.push_str(line);
            text.push('\n');
        }
        let config = self.sentinel_config();
        fs::write(&config, text).io(|| format!("failed to write {}", config.display()))
    }

    fn sentinel_config(&self) -> PathBuf {
        self.dir.join("sentinel.conf")
    }

    /// The full argument list for the current port.
    fn command_args(&self) -> Vec<OsString> {
        if self.role == Role::Sentinel {
            return vec![self.sentinel_config().into(), "--sentinel".into()];
        }
        let port = self.port.to_string();
        let mut args: Vec<OsString> = match &self.listen {
            Listen::Plain => vec!["--port".into(), port.into()],
            Listen::Tls { certs, client_auth } => vec![
                // Port 0 turns the plain-text listener off: the server speaks TLS only.
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.into(),
                "--tls-cert-file".into(),
                certs.server_cert.clone().into(),
                "--tls-key-file".into(),
                certs.server_key.clone().into(),
                "--tls-ca-cert-file".into(),
                certs.ca_cert.clone().into(),
                "--tls-auth-clients".into(),
                if *client_auth { "yes" } else { "no" }.into(),
            ],
        };
        for (key, value) in [
            ("--bind", HOST),
            ("--save", ""),
            ("--appendonly", "no"),
            ("--daemonize", "no"),
        ] {
            args.push(key.into());
            args.push(value.into());
        }
        args.push("--dir".into());
        args.push(self.dir.clone().into());
        args.push("--logfile".into());
        args.push(self.log.clone().into());
        args.extend(self.extra.iter().cloned());
        args
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let stderr = fs::File::create(&self.stderr)
            .io(|| format!("failed to create {}", self.stderr.display()))?;
        let mut command = Command::new(&self.programs.server);
        command
            .args(self.command_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Config errors are printed before the logfile is opened, so
            // stderr goes to a file of its own rather than nowhere.
            .stderr(stderr);
        let guard = Guard::spawn(&mut command).map_err(|error| {
            StartError::Failed(Error::Start(format!(
                "{}: {} (is it installed? `cargo xtask` installs it when run as root)",
                self.name,
                crate::error::chain(&error)
            )))
        })?;
        self.guard = Some(guard);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = match self.guard.as_mut() {
                Some(guard) => guard.try_wait()?,
                None => return Err(Error::NotRunning(self.name.clone()).into()),
            };
            if let Some(status) = exited {
                self.guard = None;
                let error = Error::Start(format!(
                    "{} (port {}) exited during startup with {status}; {}",
                    self.name,
                    self.port,
                    self.diagnostics()
                ));
                let said = format!(
                    "{}{}",
                    fs::read_to_string(&self.log).unwrap_or_default(),
                    fs::read_to_string(&self.stderr).unwrap_or_default()
                );
                return Err(if said.contains("Address already in use") {
                    StartError::PortTaken(error)
                } else {
                    StartError::Failed(error)
                });
            }
            if self.ready()? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::Failed(Error::Start(format!(
                    "{} (port {}) was not ready after {READY_TIMEOUT:?}; {}",
                    self.name,
                    self.port,
                    self.diagnostics()
                ))));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether the server answers `PING`: a raw exchange on a plain port,
    /// redis-cli with the test certificates on a TLS one.
    fn ready(&self) -> Result<bool> {
        match &self.listen {
            Listen::Plain => Ok(cli::ping(self.port)),
            Listen::Tls { .. } => self.cli().ping(),
        }
    }

    /// The process's name in the fixture.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port clients connect to (the TLS port of a TLS server).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// The process's own directory: data, log and stderr.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether it is a sentinel.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The programs it runs.
    pub fn programs(&self) -> &Programs {
        &self.programs
    }

    /// The pid of the running process; `None` after [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.guard.as_ref().map(Guard::pid)
    }

    /// A redis-cli connection to this server: with the test CA (and, for
    /// mutual TLS, the client certificate) on a TLS server.
    pub fn cli(&self) -> Cli {
        match &self.listen {
            Listen::Plain => Cli::new(&self.programs, self.port),
            Listen::Tls { certs, client_auth } => {
                Cli::tls(&self.programs, self.port, certs, *client_auth)
            }
        }
    }

    fn guard(&self) -> Result<&Guard> {
        self.guard
            .as_ref()
            .ok_or_else(|| Error::NotRunning(self.name.clone()))
    }

    /// `SIGSTOP`: the process stops answering, its sockets stay open.
    pub fn stall(&self) -> Result<()> {
        self.guard()?.signal(Signal::SIGSTOP)
    }

    /// `SIGCONT` after [`stall`](Self::stall).
    pub fn resume(&self) -> Result<()> {
        self.guard()?.signal(Signal::SIGCONT)
    }

    /// `SIGKILL`, and reaps the process. Does nothing if it is not running.
    pub fn kill(&mut self) -> Result<()> {
        match self.guard.take() {
            Some(mut guard) => guard.kill(),
            None => Ok(()),
        }
    }

    /// Starts the process again with the same port, options and directory
    /// (after [`kill`](Self::kill) if it still runs), and waits until it
    /// answers `PING`.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn_and_wait()
            .map_err(|(StartError::PortTaken(error) | StartError::Failed(error))| error)
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The end of the server's log and stderr, for error messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "last lines of {}:\n{}\nstderr ({}):\n{}",
            self.log.display(),
            tail(&self.log, 20),
            self.stderr.display(),
            tail(&self.stderr, 10),
        )
    }
}

/// Polls `check` until it returns `true`, failing with `what` and the last
/// state after `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Setup(format!("{what}: not so after {timeout:?}")));
        }
        thread::sleep(Duration::from_millis(50));
    }
}
