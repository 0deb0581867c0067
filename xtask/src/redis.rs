//! Real Redis topologies for the integration tests.
//!
//! [`Topologies::start`] starts, on 127.0.0.1 and ephemeral ports, one of each
//! deployment the Redis backend supports, each as a child of xtask and all in
//! one private scratch directory. Dropping the [`Topologies`] kills the servers
//! and removes the directory.
//!
//! # Environment contract
//!
//! The tests find the servers through these variables ([`Topologies::env`]).
//! Their names are the contract between xtask and the test suites: renaming
//! one here means renaming it in the tests.
//!
//! | variable                             | value                                                        |
//! |--------------------------------------|--------------------------------------------------------------|
//! | `SESSION_TEST_REDIS`                 | `127.0.0.1:PORT` of a plain server, no auth                  |
//! | `SESSION_TEST_REDIS_ACL`             | `127.0.0.1:PORT` of a server whose `default` user is off     |
//! | `SESSION_TEST_REDIS_ACL_USER`        | the ACL user that may do everything (`sessionuser`)          |
//! | `SESSION_TEST_REDIS_ACL_PASSWORD`    | that user's password, random per run                         |
//! | `SESSION_TEST_REDIS_TLS`             | `127.0.0.1:PORT` of a TLS-only server (no client certs)      |
//! | `SESSION_TEST_REDIS_TLS_CA`          | path of the PEM CA that signed the TLS and mTLS servers      |
//! | `SESSION_TEST_REDIS_TLS_WRONG_CA`    | path of an unrelated PEM CA, for verification failures       |
//! | `SESSION_TEST_REDIS_MTLS`            | `127.0.0.1:PORT` of a TLS-only server requiring client certs |
//! | `SESSION_TEST_REDIS_MTLS_CERT`       | path of the PEM client certificate for it                    |
//! | `SESSION_TEST_REDIS_MTLS_KEY`        | path of that certificate's PKCS#8 PEM private key            |
//! | `SESSION_TEST_REDIS_CLUSTER`         | `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`, a 3-master cluster |
//! | `SESSION_TEST_REDIS_SENTINEL`        | `127.0.0.1:PORT` of a sentinel                               |
//! | `SESSION_TEST_REDIS_SENTINEL_MASTER` | the name the sentinel monitors its master under (`mymaster`) |
//!
//! The server certificate is valid for both `localhost` and `127.0.0.1`.
//! `cargo xtask test` also sets [`REQUIRE_REDIS`]`=1`, which tells the tests to
//! fail, instead of skip, when one of the variables above is missing.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::certs::{self, TestCerts};
use crate::proc::{Guard, ScratchDir, output_with_timeout, random_hex};

/// Address of the plain server.
pub(crate) const REDIS: &str = "SESSION_TEST_REDIS";
/// Address of the ACL server.
pub(crate) const REDIS_ACL: &str = "SESSION_TEST_REDIS_ACL";
/// User name for the ACL server.
pub(crate) const REDIS_ACL_USER: &str = "SESSION_TEST_REDIS_ACL_USER";
/// Password for the ACL server.
pub(crate) const REDIS_ACL_PASSWORD: &str = "SESSION_TEST_REDIS_ACL_PASSWORD";
/// Address of the TLS server.
pub(crate) const REDIS_TLS: &str = "SESSION_TEST_REDIS_TLS";
/// CA certificate that verifies the TLS and mTLS servers.
pub(crate) const REDIS_TLS_CA: &str = "SESSION_TEST_REDIS_TLS_CA";
/// CA certificate that verifies neither server.
pub(crate) const REDIS_TLS_WRONG_CA: &str = "SESSION_TEST_REDIS_TLS_WRONG_CA";
/// Address of the mutual-TLS server.
pub(crate) const REDIS_MTLS: &str = "SESSION_TEST_REDIS_MTLS";
/// Client certificate for the mutual-TLS server.
pub(crate) const REDIS_MTLS_CERT: &str = "SESSION_TEST_REDIS_MTLS_CERT";
/// Private key of the client certificate.
pub(crate) const REDIS_MTLS_KEY: &str = "SESSION_TEST_REDIS_MTLS_KEY";
/// Comma-separated addresses of the cluster's nodes.
pub(crate) const REDIS_CLUSTER: &str = "SESSION_TEST_REDIS_CLUSTER";
/// Address of the sentinel.
pub(crate) const REDIS_SENTINEL: &str = "SESSION_TEST_REDIS_SENTINEL";
/// Name of the master the sentinel monitors.
pub(crate) const REDIS_SENTINEL_MASTER: &str = "SESSION_TEST_REDIS_SENTINEL_MASTER";
/// Set to `1` by `cargo xtask test`: a missing address is then a test failure.
pub(crate) const REQUIRE_REDIS: &str = "SESSION_TEST_REQUIRE_REDIS";

const HOST: &str = "127.0.0.1";
const ACL_USER: &str = "sessionuser";
const SENTINEL_MASTER_NAME: &str = "mymaster";
const CLUSTER_NODES: usize = 3;
/// Redis cluster nodes also listen on their port + 10000 (the cluster bus).
const CLUSTER_BUS_OFFSET: u16 = 10000;

/// How long one server may take to answer PING after being started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new cluster may take to agree on its slots.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long any single redis-cli call may take; they are all local and tiny.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// A free port can be taken by someone else between our probe and the
/// server's bind, so a server that fails with EADDRINUSE is retried on a new port.
const START_ATTEMPTS: u32 = 3;
const INSTALL_HINT: &str = "install it with `apt-get install -y redis-server redis-tools`";

/// Fails with an install hint unless `redis-server` and `redis-cli` are on PATH.
pub(crate) fn check_installed() -> Result<()> {
    for program in ["redis-server", "redis-cli"] {
        if find_on_path(program).is_none() {
            bail!("{program} not found: {INSTALL_HINT}");
        }
    }
    Ok(())
}

pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// All running topologies; dropping this stops them and removes their files.
#[derive(Debug)]
pub(crate) struct Topologies {
    // Fields drop in declaration order: the servers are killed and reaped
    // before the directory they write to is removed.
    servers: Vec<Server>,
    env: Vec<(String, String)>,
    dir: ScratchDir,
}

impl Topologies {
    /// Starts every topology and waits until each one serves requests.
    pub(crate) fn start() -> Result<Topologies> {
        check_installed()?;
        let dir = ScratchDir::new("xtask-redis")?;
        // Not "tls": that name belongs to the TLS server's own directory.
        let certs_dir = dir.path().join("certs");
        fs::create_dir(&certs_dir)?;
        let certs = certs::generate(&certs_dir).context("failed to generate test certificates")?;
        let ctx = Ctx {
            dir: dir.path(),
            ports: Ports::default(),
        };

        // The topologies are independent, so each starts on its own thread and
        // the total time is that of the slowest one (the cluster), not the sum.
        let results: Vec<Result<Started>> = thread::scope(|scope| {
            let ctx = &ctx;
            let certs = &certs;
            let handles = vec![
                scope.spawn(move || start_plain(ctx)),
                scope.spawn(move || start_acl(ctx)),
                scope.spawn(move || start_tls(ctx, certs, false)),
                scope.spawn(move || start_tls(ctx, certs, true)),
                scope.spawn(move || start_cluster(ctx)),
                scope.spawn(move || start_sentinel(ctx)),
            ];
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(anyhow!("a topology startup thread panicked")))
                })
                .collect()
        });

        let mut servers = Vec::new();
        let mut env = Vec::new();
        let mut errors = Vec::new();
        for result in results {
            match result {
                Ok(started) => {
                    servers.extend(started.servers);
                    env.extend(started.env);
                }
                Err(error) => errors.push(error),
            }
        }
        if let Some(first) = errors.first() {
            // Every failure is reported, since one broken setup (say, TLS
            // support missing) often explains the others.
            let details: Vec<String> = errors.iter().map(|error| format!("{error:#}")).collect();
            bail!(
                "failed to start Redis topologies ({} failed): {first:#}{}",
                errors.len(),
                details[1..]
                    .iter()
                    .map(|detail| format!("\n\nalso: {detail}"))
                    .collect::<String>()
            );
        }
        Ok(Topologies { servers, env, dir })
    }

    /// The `SESSION_TEST_REDIS*` variables that point the tests at the servers.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    /// The scratch directory holding certificates, logs and server data.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `(name, pid, port)` of every server process, for diagnostics.
    pub(crate) fn processes(&self) -> Vec<(String, u32, u16)> {
        self.servers
            .iter()
            .map(|server| (server.name.clone(), server.guard.pid(), server.port))
            .collect()
    }
}

/// What a topology thread hands back: its servers and its variables.
struct Started {
    servers: Vec<Server>,
    env: Vec<(String, String)>,
}

struct Ctx<'a> {
    dir: &'a Path,
    ports: Ports,
}

/// One running redis-server (or sentinel) process.
#[derive(Debug)]
struct Server {
    name: String,
    port: u16,
    log: PathBuf,
    stderr: PathBuf,
    guard: Guard,
}

impl Server {
    fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// The end of the server's log and stderr, for error messages.
    fn diagnostics(&self) -> String {
        format!(
            "last lines of {}:\n{}\nstderr ({}):\n{}",
            self.log.display(),
            tail(&self.log, 20),
            self.stderr.display(),
            tail(&self.stderr, 10),
        )
    }
}

fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("<cannot read: {error}>"),
    }
}

/// Why a server did not come up.
enum StartError {
    /// Its port was taken after we probed it; worth retrying on another port.
    PortTaken(anyhow::Error),
    Failed(anyhow::Error),
}

/// Hands out free loopback ports, never the same one twice in a run.
#[derive(Default)]
struct Ports {
    taken: Mutex<HashSet<u16>>,
}

impl Ports {
    /// A port that is free now; for cluster nodes, port + 10000 is free too.
    fn pick(&self, cluster: bool) -> Result<u16> {
        for _ in 0..1000 {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            let port = listener.local_addr()?.port();
            let mut taken = self
                .taken
                .lock()
                .map_err(|_| anyhow!("port list poisoned"))?;
            if taken.contains(&port) {
                continue;
            }
            if cluster {
                let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
                    continue;
                };
                // Both listeners are held at once so that the two checks see
                // the same moment.
                if taken.contains(&bus) || TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_err() {
                    continue;
                }
                taken.insert(bus);
            }
            taken.insert(port);
            return Ok(port);
        }
        bail!("no free port found on {HOST}")
    }
}

/// Arguments every data server gets after its listening options.
fn common_args(dir: &Path, log: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    for (key, value) in [
        ("--bind", HOST),
        // No persistence: the data is throwaway and disk writes only slow CI.
        ("--save", ""),
        ("--appendonly", "no"),
        ("--daemonize", "no"),
    ] {
        args.push(key.into());
        args.push(value.into());
    }
    args.push("--dir".into());
    args.push(dir.into());
    args.push("--logfile".into());
    args.push(log.into());
    args
}

fn plain_listen(port: u16) -> Vec<OsString> {
    vec!["--port".into(), port.to_string().into()]
}

/// Starts one redis-server and waits until `ready` says it serves requests.
///
/// `args` gets the port, the server's own directory and its logfile, and
/// returns the full argument list. The server is retried on a new port if
/// its port was taken in the meantime.
fn launch(
    ctx: &Ctx<'_>,
    name: &str,
    cluster_port: bool,
    args: impl Fn(u16, &Path, &Path) -> Result<Vec<OsString>>,
    ready: impl Fn(u16) -> Result<bool>,
) -> Result<Server> {
    let mut attempt = 1;
    loop {
        let port = ctx.ports.pick(cluster_port)?;
        let dir = ctx.dir.join(name);
        let log = ctx.dir.join(format!("{name}.log"));
        let stderr = ctx.dir.join(format!("{name}.stderr"));
        // A retry starts from scratch: a stale nodes.conf or log from the
        // failed attempt would name the old port.
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir(&dir)?;
        let _ = fs::remove_file(&log);
        let mut command = Command::new("redis-server");
        command
            .args(args(port, &dir, &log)?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Config errors are printed before the logfile is opened, so
            // stderr goes to a file of its own rather than nowhere.
            .stderr(fs::File::create(&stderr)?);
        let server = Server {
            name: name.to_owned(),
            port,
            log,
            stderr,
            guard: Guard::spawn(&mut command)?,
        };
        match wait_ready(&server, &ready) {
            Ok(()) => return Ok(server),
            Err(StartError::PortTaken(_)) if attempt < START_ATTEMPTS => attempt += 1,
            Err(StartError::PortTaken(error) | StartError::Failed(error)) => return Err(error),
        }
    }
}

fn wait_ready(server: &Server, ready: &impl Fn(u16) -> Result<bool>) -> Result<(), StartError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = server.guard.try_wait().map_err(StartError::Failed)? {
            let error = anyhow!(
                "{} (port {}) exited during startup with {status}; {}",
                server.name,
                server.port,
                server.diagnostics()
            );
            let log = fs::read_to_string(&server.log).unwrap_or_default();
            return Err(if log.contains("Address already in use") {
                StartError::PortTaken(error)
            } else {
                StartError::Failed(error)
            });
        }
        if ready(server.port).map_err(StartError::Failed)? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StartError::Failed(anyhow!(
                "{} (port {}) was not ready after {READY_TIMEOUT:?}; {}",
                server.name,
                server.port,
                server.diagnostics()
            )));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// How redis-cli reaches one server.
#[derive(Clone)]
struct Cli {
    args: Vec<OsString>,
}

impl Cli {
    fn new(port: u16) -> Cli {
        Cli {
            args: vec![
                "-h".into(),
                HOST.into(),
                "-p".into(),
                port.to_string().into(),
            ],
        }
    }

    fn tls(port: u16, certs: &TestCerts, client_cert: bool) -> Cli {
        let mut cli = Cli::new(port);
        cli.args.push("--tls".into());
        cli.args.push("--cacert".into());
        cli.args.push(certs.ca_cert.clone().into());
        if client_cert {
            cli.args.push("--cert".into());
            cli.args.push(certs.client_cert.clone().into());
            cli.args.push("--key".into());
            cli.args.push(certs.client_key.clone().into());
        }
        cli
    }

    fn user(mut self, user: &str, password: &str) -> Cli {
        for arg in ["--user", user, "--pass", password, "--no-auth-warning"] {
            self.args.push(arg.into());
        }
        self
    }

    /// Runs one command; returns its stdout whatever the exit status, since
    /// redis-cli prints error replies there too and callers check the text.
    fn run(&self, command: &[&str]) -> Result<String> {
        let output = output_with_timeout(
            Command::new("redis-cli").args(&self.args).args(command),
            CLI_TIMEOUT,
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn ping(&self) -> Result<bool> {
        Ok(self.run(&["PING"])? == "PONG")
    }

    /// Runs a command that must reply `OK`.
    fn expect_ok(&self, command: &[&str]) -> Result<()> {
        let reply = self.run(command)?;
        if reply != "OK" {
            bail!("`redis-cli {}` replied {reply:?}", command.join(" "));
        }
        Ok(())
    }
}

fn start_plain(ctx: &Ctx<'_>) -> Result<Started> {
    let server = launch(
        ctx,
        "plain",
        false,
        |port, dir, log| Ok([plain_listen(port), common_args(dir, log)].concat()),
        |port| Cli::new(port).ping(),
    )?;
    Ok(Started {
        env: vec![(REDIS.to_owned(), server.addr())],
        servers: vec![server],
    })
}

fn start_acl(ctx: &Ctx<'_>) -> Result<Started> {
    let server = launch(
        ctx,
        "acl",
        false,
        |port, dir, log| Ok([plain_listen(port), common_args(dir, log)].concat()),
        |port| Cli::new(port).ping(),
    )?;
    // The user is created over the still-open default user, which keeps the
    // health check above simple; only then is the default user switched off.
    let password = random_hex(16)?;
    let cli = Cli::new(server.port);
    cli.expect_ok(&[
        "ACL",
        "SETUSER",
        ACL_USER,
        "reset",
        "on",
        &format!(">{password}"),
        "~*",
        "&*",
        "+@all",
    ])?;
    cli.expect_ok(&["ACL", "SETUSER", "default", "off"])?;
    if !cli.clone().user(ACL_USER, &password).ping()? {
        bail!("the ACL server rejects {ACL_USER} with its password");
    }
    if cli.ping()? {
        bail!("the ACL server still accepts unauthenticated clients");
    }
    Ok(Started {
        env: vec![
            (REDIS_ACL.to_owned(), server.addr()),
            (REDIS_ACL_USER.to_owned(), ACL_USER.to_owned()),
            (REDIS_ACL_PASSWORD.to_owned(), password),
        ],
        servers: vec![server],
    })
}

fn start_tls(ctx: &Ctx<'_>, certs: &TestCerts, mutual: bool) -> Result<Started> {
    let server = launch(
        ctx,
        if mutual { "mtls" } else { "tls" },
        false,
        |port, dir, log| {
            let mut args: Vec<OsString> = vec![
                // Port 0 turns the plain-text listener off: the server speaks TLS only.
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string().into(),
                "--tls-cert-file".into(),
                certs.server_cert.clone().into(),
                "--tls-key-file".into(),
                certs.server_key.clone().into(),
                "--tls-ca-cert-file".into(),
                certs.ca_cert.clone().into(),
                "--tls-auth-clients".into(),
                if mutual { "yes" } else { "no" }.into(),
            ];
            args.extend(common_args(dir, log));
            Ok(args)
        },
        |port| Cli::tls(port, certs, mutual).ping(),
    )?;
    let env = if mutual {
        vec![
            (REDIS_MTLS.to_owned(), server.addr()),
            (REDIS_MTLS_CERT.to_owned(), path_string(&certs.client_cert)?),
            (REDIS_MTLS_KEY.to_owned(), path_string(&certs.client_key)?),
        ]
    } else {
        vec![
            (REDIS_TLS.to_owned(), server.addr()),
            (REDIS_TLS_CA.to_owned(), path_string(&certs.ca_cert)?),
            (
                REDIS_TLS_WRONG_CA.to_owned(),
                path_string(&certs.wrong_ca_cert)?,
            ),
        ]
    };
    Ok(Started {
        env,
        servers: vec![server],
    })
}

fn start_cluster(ctx: &Ctx<'_>) -> Result<Started> {
    let mut nodes = Vec::new();
    for index in 1..=CLUSTER_NODES {
        nodes.push(launch(
            ctx,
            &format!("cluster-{index}"),
            true,
            |port, dir, log| {
                let mut args = plain_listen(port);
                args.extend([
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.join("nodes.conf").into(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ]);
                args.extend(common_args(dir, log));
                Ok(args)
            },
            |port| Cli::new(port).ping(),
        )?);
    }
    let addrs: Vec<String> = nodes.iter().map(Server::addr).collect();

    let output = output_with_timeout(
        Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .arg("--cluster-yes"),
        Duration::from_secs(60),
    )?;
    if !output.status.success() {
        bail!(
            "`redis-cli --cluster create {}` failed with {}:\n{}{}",
            addrs.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // Clients may contact any node first, so every node must see the whole
    // cluster with all slots served, not just the node that was asked to create it.
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    for node in &nodes {
        loop {
            let info = Cli::new(node.port).run(&["CLUSTER", "INFO"])?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
                    .map(str::to_owned)
            };
            if field("cluster_state").as_deref() == Some("ok")
                && field("cluster_slots_ok").as_deref() == Some("16384")
                && field("cluster_known_nodes").as_deref() == Some(&CLUSTER_NODES.to_string())
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "cluster node {} not ready after {CLUSTER_TIMEOUT:?}; CLUSTER INFO:\n{info}\n{}",
                    node.addr(),
                    node.diagnostics()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
    Ok(Started {
        env: vec![(REDIS_CLUSTER.to_owned(), addrs.join(","))],
        servers: nodes,
    })
}

fn start_sentinel(ctx: &Ctx<'_>) -> Result<Started> {
    let master = launch(
        ctx,
        "sentinel-master",
        false,
        |port, dir, log| Ok([plain_listen(port), common_args(dir, log)].concat()),
        |port| Cli::new(port).ping(),
    )?;
    let master_port = master.port.to_string();
    let sentinel = launch(
        ctx,
        "sentinel",
        false,
        |port, dir, log| {
            // Sentinel only runs from a config file, which it also rewrites,
            // so the file lives in the sentinel's own directory.
            let config = dir.join("sentinel.conf");
            let text = format!(
                "port {port}\n\
                 bind {HOST}\n\
                 daemonize no\n\
                 logfile \"{log}\"\n\
                 dir \"{dir}\"\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {SENTINEL_MASTER_NAME} {HOST} {master_port} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} 5000\n",
                log = log.display(),
                dir = dir.display(),
            );
            fs::write(&config, text)?;
            Ok(vec![config.into(), "--sentinel".into()])
        },
        |port| {
            let cli = Cli::new(port);
            let addr = cli.run(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME])?;
            if addr.lines().map(str::trim).collect::<Vec<_>>() != [HOST, master_port.as_str()] {
                return Ok(false);
            }
            // Until the sentinel has connected to the master, the master's flags
            // include "disconnected"; tests should not race that first link.
            let details = cli.run(&["SENTINEL", "MASTER", SENTINEL_MASTER_NAME])?;
            let details: Vec<&str> = details.lines().map(str::trim).collect();
            let flags = details
                .chunks(2)
                .find(|pair| pair.first() == Some(&"flags"))
                .and_then(|pair| pair.get(1).copied());
            Ok(flags == Some("master"))
        },
    )?;
    Ok(Started {
        env: vec![
            (REDIS_SENTINEL.to_owned(), sentinel.addr()),
            (
                REDIS_SENTINEL_MASTER.to_owned(),
                SENTINEL_MASTER_NAME.to_owned(),
            ),
        ],
        servers: vec![master, sentinel],
    })
}

/// Paths go into environment variables, which the tests read as UTF-8.
fn path_string(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("path is not UTF-8: {}", path.display()))
}
