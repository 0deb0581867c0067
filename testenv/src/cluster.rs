//! A Redis Cluster of test nodes, and the check that its nodes agree.
//!
//! [`start`] starts the nodes, joins them with `redis-cli --cluster create`
//! and returns once the cluster is usable from any node: clients may contact
//! any node first, so every node must see the whole cluster with all slots
//! served, not just the node that was asked to create it, and a replica must
//! hold its master's data before anything is asked of it.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::cli::{Cli, info_field};
use crate::error::{Error, Result};
use crate::process::output_with_timeout;
use crate::server::{Programs, RedisProcess};

/// How long `redis-cli --cluster create` may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a new cluster may take to agree on its slots and replicas.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The shape of a cluster to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Masters, among which the 16384 slots are split.
    pub masters: usize,
    /// Replicas of each master.
    pub replicas: usize,
    /// `cluster-node-timeout` in milliseconds: how long a node may be
    /// unreachable before it is considered failing.
    pub node_timeout_ms: u32,
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
            Some(ClusterNode {
                id: fields[0].to_owned(),
                port,
                master: flags.contains(&"master"),
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
pub fn agreement(nodes: &[RedisProcess]) -> Result<Option<Vec<ClusterNode>>> {
    let clis: Vec<Cli> = nodes.iter().map(RedisProcess::cli).collect();
    agreement_of(&clis)
}

/// [`agreement`] on a blocking thread, for a caller whose runtime serves
/// load meanwhile.
#[cfg(feature = "tokio")]
pub async fn agreement_async(nodes: &[RedisProcess]) -> Result<Option<Vec<ClusterNode>>> {
    let clis: Vec<Cli> = nodes.iter().map(RedisProcess::cli).collect();
    tokio::task::spawn_blocking(move || agreement_of(&clis)).await?
}

fn agreement_of(nodes: &[Cli]) -> Result<Option<Vec<ClusterNode>>> {
    let mut common: Option<Vec<ClusterNode>> = None;
    for node in nodes {
        let info = node.run(&["CLUSTER", "INFO"])?;
        if info_field(&info, "cluster_state").as_deref() != Some("ok")
            || info_field(&info, "cluster_slots_ok").as_deref() != Some("16384")
            || info_field(&info, "cluster_known_nodes") != Some(nodes.len().to_string())
        {
            return Ok(None);
        }
        let mut view = parse_cluster_nodes(&node.run(&["CLUSTER", "NODES"])?);
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

/// Starts a cluster of `shape` in `parent/<prefix>-<n>` (n from 1), on free
/// ports whose bus ports are free too: the nodes run with
/// `--cluster-enabled yes` and the shape's node timeout, are joined with
/// `redis-cli --cluster create`, and are returned once every node agrees on
/// the whole cluster (see [`agreement`]) and every replica's link to its
/// master is up.
pub fn start(
    programs: &Programs,
    parent: &Path,
    prefix: &str,
    shape: Shape,
) -> Result<Vec<RedisProcess>> {
    let count = shape.masters * (1 + shape.replicas);
    let node_timeout = shape.node_timeout_ms.to_string();
    let mut nodes = Vec::with_capacity(count);
    for index in 1..=count {
        let name = format!("{prefix}-{index}");
        let config_file = parent.join(&name).join("nodes.conf");
        nodes.push(
            RedisProcess::builder(parent, &name)
                .programs(programs)
                .cluster_bus()
                .args([
                    "--cluster-enabled".as_ref(),
                    "yes".as_ref(),
                    "--cluster-config-file".as_ref(),
                    config_file.as_os_str(),
                    "--cluster-node-timeout".as_ref(),
                    node_timeout.as_ref(),
                ] as [&std::ffi::OsStr; 6])
                .start()?,
        );
    }
    let addrs: Vec<String> = nodes.iter().map(RedisProcess::addr).collect();
    let output = output_with_timeout(
        std::process::Command::new(&programs.cli)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args([
                "--cluster-replicas",
                &shape.replicas.to_string(),
                "--cluster-yes",
            ]),
        None,
        CREATE_TIMEOUT,
    )?;
    if !output.status.success() {
        return Err(create_failed(&addrs, &output));
    }
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Some(view) = agreement(&nodes)? {
            let mut synced = true;
            for node in &nodes {
                if view
                    .iter()
                    .any(|line| line.port == node.port() && !line.master)
                {
                    let info = node.cli().run(&["INFO", "replication"])?;
                    synced &= info_field(&info, "master_link_status").as_deref() == Some("up");
                }
            }
            let roles_ok = view.iter().filter(|line| line.master).count() == shape.masters;
            if synced && roles_ok {
                return Ok(nodes);
            }
        }
        if Instant::now() >= deadline {
            let mut state = String::new();
            for node in &nodes {
                let view = node.cli().run(&["CLUSTER", "NODES"]).unwrap_or_default();
                state.push_str(&format!("{} ({}):\n{view}\n", node.name(), node.addr()));
            }
            return Err(Error::Setup(format!(
                "the cluster did not settle within {SETTLE_TIMEOUT:?}:\n{state}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn create_failed(addrs: &[String], output: &Output) -> Error {
    Error::Setup(format!(
        "`redis-cli --cluster create {}` failed with {}:\n{}{}",
        addrs.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004 replica e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@40002,host master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@40003 master,fail? - 1426238316232 0 3 connected 10923-16383
";

    #[test]
    fn parses_roles_slots_and_health() {
        let nodes = parse_cluster_nodes(NODES);
        assert_eq!(nodes.len(), 4);
        let replica = &nodes[0];
        assert!(!replica.master && !replica.unhealthy);
        assert_eq!(replica.port, 30004);
        assert_eq!(
            replica.master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(
            nodes[1].port, 30002,
            "a hostname after the bus port is ignored"
        );
        let me = &nodes[2];
        assert!(me.myself && me.master);
        assert_eq!(me.slots, ["0-5460"], "migration markers are left out");
        assert!(me.owns(0) && me.owns(5460) && !me.owns(5461));
        assert!(nodes[3].unhealthy, "fail? marks a node unhealthy");
    }

    #[test]
    fn short_lines_are_skipped() {
        assert!(parse_cluster_nodes("garbage\n\nabc 1 2").is_empty());
    }
}
