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

/// Runs `redis-cli -h 127.0.0.1 -p <port>` with `input` on its standard
/// input, one command a line (killed after 10 s), and returns its trimmed
/// standard output: one reply a line. Hundreds of commands cost one
/// process instead of hundreds.
pub async fn cli_pipe(port: u16, input: String) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let run = async {
        let mut child = tokio::process::Command::new("redis-cli")
            .args(["-h", HOST, "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot run redis-cli")?;
        let mut stdin = child.stdin.take().context("redis-cli has no stdin")?;
        stdin.write_all(input.as_bytes()).await?;
        // Closing stdin tells redis-cli that the commands are over.
        drop(stdin);
        anyhow::Ok(child.wait_with_output().await?)
    };
    let output = tokio::time::timeout(CLI_TIMEOUT, run)
        .await
        .context("redis-cli with piped commands timed out")??;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Redis Cluster nodes also listen on their port + 10000: the cluster bus.
pub const CLUSTER_BUS_OFFSET: u16 = 10000;

/// A free port whose cluster bus port (port + 10000) is free too, and that
/// collides with neither the port nor the bus port of any port in `taken`.
pub fn free_cluster_port(taken: &[u16]) -> Result<u16> {
    let clashes = |port: u16| {
        taken
            .iter()
            .any(|&used| port == used || Some(port) == used.checked_add(CLUSTER_BUS_OFFSET))
    };
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        if clashes(port) || clashes(bus) {
            continue;
        }
        // Both listeners are held at once, so both ports were free at the
        // same moment.
        if TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port with a free cluster bus port after 1000 probes")
}

/// One line of `CLUSTER NODES`: a node as one member of the cluster sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node id.
    pub id: String,
    /// The client port.
    pub port: u16,
    /// Whether it is a master (otherwise a replica).
    pub master: bool,
    /// The id of its master, for a replica.
    pub master_id: Option<String>,
    /// Its slot ranges (`0-5460`, `5461`), for a master; migrating and
    /// importing markers are left out.
    pub slots: Vec<String>,
    /// Whether the line is the answering node itself.
    pub myself: bool,
    /// Whether the node is flagged `fail`, `fail?`, `handshake` or `noaddr`,
    /// or its link is not `connected`.
    pub unhealthy: bool,
}

impl ClusterNode {
    /// Whether the node serves `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|range| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            matches!(
                (low.parse::<u16>(), high.parse::<u16>()),
                (Ok(low), Ok(high)) if (low..=high).contains(&slot)
            )
        })
    }
}

/// Parses a `CLUSTER NODES` reply; lines that do not parse are skipped.
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            // `ip:port@cport[,hostname]`
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()?;
            let flags: Vec<&str> = fields[2].split(',').collect();
            let master = flags.contains(&"master");
            Some(ClusterNode {
                id: fields[0].to_owned(),
                port,
                master,
                master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots: fields[8..]
                    .iter()
                    .filter(|slot| !slot.starts_with('['))
                    .map(|slot| (*slot).to_owned())
                    .collect(),
                myself: flags.contains(&"myself"),
                unhealthy: fields[7] != "connected"
                    || flags
                        .iter()
                        .any(|flag| matches!(*flag, "fail" | "fail?" | "handshake" | "noaddr")),
            })
        })
        .collect()
}

/// The cluster as every node in `nodes` sees it, when they all agree: each
/// reports `cluster_state:ok` with all 16384 slots served and knows
/// `nodes.len()` nodes, every line is healthy, and every node has the same
/// view of who is master of which slots and who replicates whom. `None`
/// while they do not (yet) agree.
pub async fn cluster_agreement(nodes: &[RedisProcess]) -> Result<Option<Vec<ClusterNode>>> {
    let mut common: Option<Vec<ClusterNode>> = None;
    for node in nodes {
        let info = node.cli(&["CLUSTER", "INFO"]).await?;
        if info_field(&info, "cluster_state").as_deref() != Some("ok")
            || info_field(&info, "cluster_slots_ok").as_deref() != Some("16384")
            || info_field(&info, "cluster_known_nodes") != Some(nodes.len().to_string())
        {
            return Ok(None);
        }
        let mut view = parse_cluster_nodes(&node.cli(&["CLUSTER", "NODES"]).await?);
        if view.len() != nodes.len() || view.iter().any(|line| line.unhealthy) {
            return Ok(None);
        }
        // `myself` differs from node to node by design: it is not part of
        // the view compared.
        for line in &mut view {
            line.myself = false;
        }
        view.sort_by(|a, b| a.id.cmp(&b.id));
        match &common {
            Some(seen) if *seen != view => return Ok(None),
            Some(_) => {}
            None => common = Some(view),
        }
    }
    Ok(common)
}

/// Starts a Redis Cluster of `masters` masters with `replicas` replicas
/// each, in `parent/<prefix>-<n>`, on free ports whose bus ports are free
/// too: the nodes are started with `--cluster-enabled yes` and
/// `--cluster-node-timeout <node_timeout_ms>`, joined with `redis-cli
/// --cluster create`, and returned once every node agrees on the whole
/// cluster (see [`cluster_agreement`]) and every replica's link to its
/// master is up. The processes are registered like every other, and are
/// stopped when the values are dropped.
pub async fn start_cluster(
    parent: &Path,
    prefix: &str,
    masters: usize,
    replicas: usize,
    node_timeout_ms: u32,
) -> Result<Vec<RedisProcess>> {
    let count = masters * (1 + replicas);
    let node_timeout = node_timeout_ms.to_string();
    let mut nodes: Vec<RedisProcess> = Vec::with_capacity(count);
    for index in 1..=count {
        let name = format!("{prefix}-{index}");
        let config_file = parent.join(&name).join("nodes.conf");
        let config_file = config_file.to_string_lossy().into_owned();
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            config_file.as_str(),
            "--cluster-node-timeout",
            node_timeout.as_str(),
        ];
        let mut last_error = None;
        // A port (or bus port) taken between the probe and the bind is
        // retried on another one; a half-written nodes.conf is removed
        // first, as it would make the next node believe it was a member.
        for _ in 0..3 {
            let taken: Vec<u16> = nodes.iter().map(RedisProcess::port).collect();
            let _ = std::fs::remove_file(&config_file);
            match RedisProcess::start_on(parent, &name, free_cluster_port(&taken)?, &extra) {
                Ok(node) => {
                    last_error = None;
                    nodes.push(node);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        if let Some(error) = last_error {
            return Err(error);
        }
    }
    let addrs: Vec<String> = nodes.iter().map(RedisProcess::addr).collect();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("redis-cli --cluster create timed out")?
    .context("cannot run redis-cli")?;
    if !output.status.success() {
        bail!(
            "`redis-cli --cluster create {}` failed with {}:\n{}{}",
            addrs.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Clients may reach any node first, so every node must see the whole
    // cluster, not just the one that was asked to create it; and a replica
    // must hold its master's data before anything is asked of it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(view) = cluster_agreement(&nodes).await? {
            let mut synced = true;
            for node in &nodes {
                if view
                    .iter()
                    .any(|line| line.port == node.port() && !line.master)
                {
                    let info = node.cli(&["INFO", "replication"]).await?;
                    synced &= info_field(&info, "master_link_status").as_deref() == Some("up");
                }
            }
            let roles_ok = view.iter().filter(|line| line.master).count() == masters;
            if synced && roles_ok {
                return Ok(nodes);
            }
        }
        if Instant::now() >= deadline {
            let mut state = String::new();
            for node in &nodes {
                let view = node.cli(&["CLUSTER", "NODES"]).await.unwrap_or_default();
                state.push_str(&format!("{} ({}):\n{view}\n", node.name(), node.addr()));
            }
            bail!("the cluster did not settle within 30 s:\n{state}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
