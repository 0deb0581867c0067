//! The deployments the integration tests run against, started together.
//!
//! [`Topologies::start`] starts, on 127.0.0.1 and free ports, one of each
//! deployment the Redis backend supports, all in one private scratch
//! directory: a plain server, an ACL server whose `default` user is off, a
//! TLS-only server, a mutual-TLS server, a three-master cluster and a
//! sentinel with its master. Given Valkey's programs too, it starts the
//! plain, ACL, cluster and sentinel deployments a second time from those,
//! by the same functions: a flavor only names the programs, the
//! directories and the contract variables. Valkey gets no TLS servers, since
//! the Valkey build the fixture installs has no TLS. [`Topologies::env`]
//! names them in the variables of the [`contract`](crate::contract).
//! Dropping the value kills the servers and removes the directory.

use std::path::Path;
use std::thread;
use std::time::Duration;

use crate::HOST;
use crate::certs::{self, TestCerts};
use crate::cli::Cli;
use crate::cluster::{self, Shape};
use crate::contract::{
    REDIS, REDIS_ACL, REDIS_ACL_PASSWORD, REDIS_ACL_USER, REDIS_CLUSTER, REDIS_MTLS,
    REDIS_MTLS_CERT, REDIS_MTLS_KEY, REDIS_SENTINEL, REDIS_SENTINEL_MASTER, REDIS_TLS,
    REDIS_TLS_CA, REDIS_TLS_WRONG_CA, VALKEY, VALKEY_ACL, VALKEY_ACL_PASSWORD, VALKEY_ACL_USER,
    VALKEY_CLUSTER, VALKEY_SENTINEL, VALKEY_SENTINEL_MASTER,
};
use crate::error::{Error, IoContext, Result, chain};
use crate::process::{ScratchDir, random_hex};
use crate::server::{Programs, RedisProcess, wait_until};

/// The ACL user that may do everything.
const ACL_USER: &str = "sessionuser";
/// The name the sentinel monitors its master under.
const SENTINEL_MASTER_NAME: &str = "mymaster";
/// The test cluster: three masters, no replicas. Failover is the reliability
/// suite's business; the tests need slots spread over several nodes.
const CLUSTER: Shape = Shape {
    masters: 3,
    replicas: 0,
    node_timeout_ms: 2000,
};
/// How long the sentinel may take to connect to its master.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(15);

/// One server implementation's deployments: the directory prefix of its
/// processes and the contract variables that name them.
#[derive(Clone, Copy, Debug)]
struct Flavor {
    /// Put before each process's directory name, so that two flavors share
    /// one scratch directory without clashing.
    dir_prefix: &'static str,
    plain: &'static str,
    acl: &'static str,
    acl_user: &'static str,
    acl_password: &'static str,
    cluster: &'static str,
    sentinel: &'static str,
    sentinel_master: &'static str,
}

impl Flavor {
    /// The name of a process directory of this flavor.
    fn dir(&self, name: &str) -> String {
        format!("{}{name}", self.dir_prefix)
    }
}

/// Redis, whose processes keep the directory names they always had.
const REDIS_FLAVOR: Flavor = Flavor {
    dir_prefix: "",
    plain: REDIS,
    acl: REDIS_ACL,
    acl_user: REDIS_ACL_USER,
    acl_password: REDIS_ACL_PASSWORD,
    cluster: REDIS_CLUSTER,
    sentinel: REDIS_SENTINEL,
    sentinel_master: REDIS_SENTINEL_MASTER,
};

/// Valkey, beside Redis in the same scratch directory.
const VALKEY_FLAVOR: Flavor = Flavor {
    dir_prefix: "valkey-",
    plain: VALKEY,
    acl: VALKEY_ACL,
    acl_user: VALKEY_ACL_USER,
    acl_password: VALKEY_ACL_PASSWORD,
    cluster: VALKEY_CLUSTER,
    sentinel: VALKEY_SENTINEL,
    sentinel_master: VALKEY_SENTINEL_MASTER,
};

/// Every running topology; dropping this stops them and removes their files.
#[derive(Debug)]
pub struct Topologies {
    // Fields drop in declaration order: the servers are killed and reaped
    // before the directory they write to is removed.
    servers: Vec<RedisProcess>,
    env: Vec<(&'static str, String)>,
    dir: ScratchDir,
}

/// What a topology thread hands back: its servers and its variables.
struct Started {
    servers: Vec<RedisProcess>,
    env: Vec<(&'static str, String)>,
}

impl Topologies {
    /// Starts every Redis topology with `programs` and, when `valkey` is
    /// given, the plain, ACL, cluster and sentinel topologies once more with
    /// Valkey's programs, and waits until each one serves requests.
    pub fn start(programs: &Programs, valkey: Option<&Programs>) -> Result<Topologies> {
        let dir = ScratchDir::new("testenv-redis")?;
        // Not "tls": that name belongs to the TLS server's own directory.
        let certs_dir = dir.path().join("certs");
        std::fs::create_dir(&certs_dir)
            .io(|| format!("failed to create {}", certs_dir.display()))?;
        let certs = certs::generate(&certs_dir)?;
        let parent = dir.path();

        // The topologies are independent, so each starts on its own thread and
        // the total time is that of the slowest one (a cluster), not the sum.
        let results: Vec<Result<Started>> = thread::scope(|scope| {
            let certs = &certs;
            let redis = &REDIS_FLAVOR;
            let mut handles = vec![
                scope.spawn(move || start_plain(programs, parent, redis)),
                scope.spawn(move || start_acl(programs, parent, redis)),
                scope.spawn(move || start_tls(programs, parent, certs, false)),
                scope.spawn(move || start_tls(programs, parent, certs, true)),
                scope.spawn(move || start_cluster(programs, parent, redis)),
                scope.spawn(move || start_sentinel(programs, parent, redis)),
            ];
            if let Some(valkey) = valkey {
                let flavor = &VALKEY_FLAVOR;
                handles.extend([
                    scope.spawn(move || start_plain(valkey, parent, flavor)),
                    scope.spawn(move || start_acl(valkey, parent, flavor)),
                    scope.spawn(move || start_cluster(valkey, parent, flavor)),
                    scope.spawn(move || start_sentinel(valkey, parent, flavor)),
                ]);
            }
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        Err(Error::Setup("a topology startup thread panicked".into()))
                    })
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
                Err(error) => errors.push(chain(&error)),
            }
        }
        if !errors.is_empty() {
            return Err(Error::Topologies {
                count: errors.len(),
                details: errors.join("\n\nalso: "),
            });
        }
        if let Some(valkey) = valkey {
            env.push((
                crate::contract::VALKEY_SERVER_BIN,
                valkey.server.display().to_string(),
            ));
            env.push((
                crate::contract::VALKEY_CLI_BIN,
                valkey.cli.display().to_string(),
            ));
        }
        Ok(Topologies { servers, env, dir })
    }

    /// The contract variables that point the tests at the servers, in the
    /// order of the contract's table.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.env.clone();
        env.sort_by_key(|(name, _)| crate::contract::ALL.iter().position(|known| known == name));
        env
    }

    /// The scratch directory holding certificates, logs and server data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `(name, pid, port)` of every server process, for diagnostics.
    pub fn processes(&self) -> Vec<(String, u32, u16)> {
        self.servers
            .iter()
            .map(|server| {
                (
                    server.name().to_owned(),
                    server.pid().unwrap_or_default(),
                    server.port(),
                )
            })
            .collect()
    }
}

fn start_plain(programs: &Programs, parent: &Path, flavor: &Flavor) -> Result<Started> {
    let server = RedisProcess::builder(parent, &flavor.dir("plain"))
        .programs(programs)
        .start()?;
    Ok(Started {
        env: vec![(flavor.plain, server.addr())],
        servers: vec![server],
    })
}

fn start_acl(programs: &Programs, parent: &Path, flavor: &Flavor) -> Result<Started> {
    let server = RedisProcess::builder(parent, &flavor.dir("acl"))
        .programs(programs)
        .start()?;
    // The user is created over the still-open default user, which keeps the
    // health check of the startup simple; only then is the default user
    // switched off.
    let password = random_hex(16)?;
    let cli = server.cli();
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
        return Err(Error::Setup(format!(
            "the ACL server rejects {ACL_USER} with its password"
        )));
    }
    if cli.ping()? {
        return Err(Error::Setup(
            "the ACL server still accepts unauthenticated clients".into(),
        ));
    }
    Ok(Started {
        env: vec![
            (flavor.acl, server.addr()),
            (flavor.acl_user, ACL_USER.to_owned()),
            (flavor.acl_password, password),
        ],
        servers: vec![server],
    })
}

fn start_tls(
    programs: &Programs,
    parent: &Path,
    certs: &TestCerts,
    mutual: bool,
) -> Result<Started> {
    let server = RedisProcess::builder(parent, if mutual { "mtls" } else { "tls" })
        .programs(programs)
        .tls(certs, mutual)
        .start()?;
    let env = if mutual {
        vec![
            (REDIS_MTLS, server.addr()),
            (REDIS_MTLS_CERT, path_string(&certs.client_cert)?),
            (REDIS_MTLS_KEY, path_string(&certs.client_key)?),
        ]
    } else {
        vec![
            (REDIS_TLS, server.addr()),
            (REDIS_TLS_CA, path_string(&certs.ca_cert)?),
            (REDIS_TLS_WRONG_CA, path_string(&certs.wrong_ca_cert)?),
        ]
    };
    Ok(Started {
        env,
        servers: vec![server],
    })
}

fn start_cluster(programs: &Programs, parent: &Path, flavor: &Flavor) -> Result<Started> {
    let nodes = cluster::start(programs, parent, &flavor.dir("cluster"), CLUSTER)?;
    let addrs: Vec<String> = nodes.iter().map(RedisProcess::addr).collect();
    Ok(Started {
        env: vec![(flavor.cluster, addrs.join(","))],
        servers: nodes,
    })
}

fn start_sentinel(programs: &Programs, parent: &Path, flavor: &Flavor) -> Result<Started> {
    let master = RedisProcess::builder(parent, &flavor.dir("sentinel-master"))
        .programs(programs)
        .start()?;
    let master_port = master.port().to_string();
    let sentinel = RedisProcess::sentinel_builder(
        parent,
        &flavor.dir("sentinel"),
        &[
            "sentinel resolve-hostnames no".to_owned(),
            format!("sentinel monitor {SENTINEL_MASTER_NAME} {HOST} {master_port} 1"),
            format!("sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} 5000"),
        ],
    )
    .programs(programs)
    .start()?;
    // Until the sentinel has connected to the master, the master's flags
    // include "disconnected"; tests should not race that first link.
    let cli = sentinel.cli();
    wait_until("the sentinel monitors its master", SENTINEL_TIMEOUT, || {
        sentinel_sees_master(&cli, &master_port)
    })
    .map_err(|error| Error::Setup(format!("{}; {}", chain(&error), sentinel.diagnostics())))?;
    Ok(Started {
        env: vec![
            (flavor.sentinel, sentinel.addr()),
            (flavor.sentinel_master, SENTINEL_MASTER_NAME.to_owned()),
        ],
        servers: vec![master, sentinel],
    })
}

/// Whether the sentinel names the master at `127.0.0.1:master_port` and is
/// connected to it (its flags are exactly `master`).
fn sentinel_sees_master(cli: &Cli, master_port: &str) -> Result<bool> {
    let addr = cli.run(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME])?;
    if addr.lines().map(str::trim).collect::<Vec<_>>() != [HOST, master_port] {
        return Ok(false);
    }
    let details = cli.run(&["SENTINEL", "MASTER", SENTINEL_MASTER_NAME])?;
    let details: Vec<&str> = details.lines().map(str::trim).collect();
    let flags = details
        .chunks(2)
        .find(|pair| pair.first() == Some(&"flags"))
        .and_then(|pair| pair.get(1).copied());
    Ok(flags == Some("master"))
}

/// Paths go into environment variables, which the tests read as UTF-8.
fn path_string(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Setup(format!("path is not UTF-8: {}", path.display())))
}
