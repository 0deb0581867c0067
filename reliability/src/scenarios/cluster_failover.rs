//! Scenario 4b: Redis Cluster manual failover under load.
//!
//! A cluster of three masters with one replica each is started here; while
//! 64 tasks load one manager configured with one seed node, `CLUSTER
//! FAILOVER` is sent to the replica of one master, which swaps the two.
//!
//! # What Redis guarantees, and what is tested against it
//!
//! `CLUSTER FAILOVER` without `FORCE` or `TAKEOVER` is a *manual* failover,
//! which the Redis documentation describes as swapping a master with its
//! replica "in a safe way, without any window for data loss": the replica
//! asks its master to stop processing writes, waits until its replication
//! offset matches the master's, only then takes over the slots with a new
//! configuration epoch, and the old master, once it sees the new
//! configuration, releases the writes it held and answers them with `MOVED`
//! to the new master. No write can be acknowledged by the old master after
//! the replica's last byte, so, unlike a sentinel failover (see
//! [`failover`](super::failover)), nothing acknowledged can be lost. If the
//! handshake does not finish within Redis's manual-failover timeout (5 s),
//! the failover is abandoned instead, and the old master resumes.
//!
//! So the promises tested are:
//!
//! 1. every session acknowledged *and* confirmed on the replicas with `WAIT`
//!    before the failover is readable after it: zero lost;
//! 2. every session whose create the load saw acknowledged, before or
//!    during the switch, and did not delete, is readable after it: zero
//!    lost, and no read, update or delete during the load finds a live
//!    session missing;
//! 3. the manager follows the new slot owner by itself (fred follows the
//!    `MOVED` redirections and refreshes its slot map): sessions created
//!    after the switch succeed, those in the moved slots are on the
//!    promoted node, `WAIT` on the promoted node sees the old master as its
//!    replica, and all are readable;
//! 4. errors during the switch are typed and retryable, nothing hangs, no
//!    fresh create is told `AlreadyExists`, and service recovers within a
//!    bound;
//! 5. counters incremented through the atomic read-modify-write during the
//!    switch ([`increments`]), two of them in the moved
//!    slots, end with at least their acknowledged increments and at most
//!    those plus the ones whose outcome was reported unknown.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use session_config::RedisConfig;
use session_core::SessionId;
use session_redis::RedisStorage;
use session_redis::fred::interfaces::ClientLike;
use session_redis::fred::prelude::{Server, Value};
use session_redis::fred::util::redis_keyslot;

use crate::load::{self, Anomaly, Load, LoadReport, LoadSpec, OpResult, ms};
use crate::rng::Rng;
use crate::scenarios::cache_consistency::{self, Observer};
use crate::{Outcome, increments, scenarios};
use session_testenv::cluster::{self, ClusterNode, Shape};
use session_testenv::{Cli, HOST, Programs, RedisProcess};

/// The figure's name.
pub const NAME: &str = "cluster-failover";
/// The figure's name with caching managers.
pub const NAME_CACHED: &str = "cluster-failover-cached";

/// Masters in the cluster; each has one replica.
pub const MASTERS: usize = 3;
/// Sessions created and confirmed with WAIT before the failover.
pub const CONFIRMED_BEFORE: usize = 2000;
/// Sessions created and confirmed with WAIT after the switch.
pub const CONFIRMED_AFTER: usize = 500;
/// The bound on the time from `CLUSTER FAILOVER` until operations stop
/// failing or being slow. The old master holds writes for at most twice
/// Redis's manual-failover timeout of 5 s before it gives up and resumes,
/// so a switch that disrupts service for longer is not the failover.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// How long the replica may take to report itself master: the manual
/// failover's own timeout is 5 s, after which Redis abandons it.
pub const PROMOTION_BOUND: Duration = Duration::from_secs(10);
/// The cluster's node timeout: long enough that a node starved of CPU by a
/// build on the same two cores is not failed over automatically, which would
/// mix an unplanned failover into the measured one.
const NODE_TIMEOUT_MS: u32 = 5000;

/// Runs the scenario with its own servers in `scratch`.
pub async fn run(scratch: &Path, seed: u64) -> Outcome {
    Outcome::or_error(NAME, try_run(scratch, seed, false).await)
}

/// The same with the manager and a second replica keeping a local cache
/// (tracking mode, staleness bound 30 s): every promise above holds
/// through the cache, and after the switch the second replica sees the
/// first one's writes through the new master's invalidations
/// ([`Observer`]).
pub async fn run_cached(scratch: &Path, seed: u64) -> Outcome {
    Outcome::or_error(NAME_CACHED, try_run(scratch, seed, true).await)
}

/// `WAIT 1 500` on the manager's own connection to the master on `port`,
/// repeated until it reports a replica or `limit` passes. `WAIT` covers the
/// earlier writes of the connection it is sent on, and the client keeps one
/// connection per master, which carried every write to that master's
/// slots: once it reports a replica, all of them are on the replica. Each
/// WAIT stays under the client's command timeout (1 s), which applies to
/// WAIT too.
async fn wait_replicated(
    storage: &RedisStorage,
    port: u16,
    limit: Duration,
) -> anyhow::Result<i64> {
    let client = storage.client();
    // `with_cluster_node` takes precedence over the hash: the command goes
    // over the existing connection to that node.
    scenarios::wait_replicated(limit, |args| {
        let node = client.with_cluster_node(Server::new(HOST, port));
        async move {
            node.custom::<Value, _>(scenarios::wait_command(), args)
                .await
        }
    })
    .await
}

/// Polls `check` every 10 ms until it holds, and returns how long after
/// `since` that was; fails after `limit`.
async fn poll_until<F, Fut>(
    what: &str,
    since: Instant,
    limit: Duration,
    mut check: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    loop {
        if check().await? {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            bail!("{what}: not after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The first line of `ROLE` (`master` or `slave`) and, for a replica, its
/// master's port.
async fn role(node: &RedisProcess) -> anyhow::Result<(String, Option<u16>)> {
    let reply = node.cli().run_async(&["ROLE"]).await?;
    let lines: Vec<&str> = reply.lines().map(str::trim).collect();
    let role = lines.first().copied().unwrap_or_default().to_owned();
    let master_port = (role == "slave")
        .then(|| lines.get(2).and_then(|port| port.parse().ok()))
        .flatten();
    Ok((role, master_port))
}

/// Which of `ids` are in the slots `owner` served, by the key's hash slot.
fn in_slots(storage: &RedisStorage, owner: &ClusterNode, ids: &[SessionId]) -> Vec<SessionId> {
    ids.iter()
        .filter(|id| owner.owns(redis_keyslot(storage.key(id).as_bytes())))
        .copied()
        .collect()
}

/// How many of `ids` the node on `port` holds itself, asked directly with
/// `redis-cli` (which does not follow `MOVED`, so a key the node does not
/// serve counts as absent).
async fn held_by(port: u16, storage: &RedisStorage, ids: &[SessionId]) -> anyhow::Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let input: String = ids
        .iter()
        .map(|id| format!("EXISTS {}\n", storage.key(id)))
        .collect();
    let output = Cli::new(&Programs::default(), port)
        .pipe_async(input)
        .await?;
    Ok(output.lines().filter(|line| line.trim() == "1").count())
}

/// Which operations failed, and when relative to the failover: evidence of
/// what the failures were (operations that met the switch, or something
/// lasting).
fn failure_spread(report: &LoadReport, failover_at: Duration) -> String {
    let failed: Vec<_> = report
        .records
        .iter()
        .filter(|record| matches!(record.result, OpResult::Failed { .. }))
        .collect();
    let (Some(first), Some(last)) = (
        failed.iter().map(|record| record.start).min(),
        failed.iter().map(|record| record.end).max(),
    ) else {
        return "no operation failed".into();
    };
    let mut by_op = std::collections::BTreeMap::new();
    for record in &failed {
        *by_op.entry(format!("{:?}", record.op)).or_insert(0usize) += 1;
    }
    let offset = |at: Duration| {
        if at >= failover_at {
            format!("+{}", ms(at - failover_at))
        } else {
            format!("-{}", ms(failover_at - at))
        }
    };
    format!(
        "failed operations by kind: {by_op:?}; they started from {} and ended by {} relative to CLUSTER FAILOVER",
        offset(first),
        offset(last)
    )
}

async fn try_run(scratch: &Path, seed: u64, cached: bool) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(if cached { NAME_CACHED } else { NAME });
    let nodes = cluster::start(
        &Programs::default(),
        scratch,
        // Each run starts from empty nodes: a node directory holds its
        // cluster state.
        if cached { "cluster-cached" } else { "cluster" },
        Shape {
            masters: MASTERS,
            replicas: 1,
            node_timeout_ms: NODE_TIMEOUT_MS,
        },
    )?;
    let view = cluster::agreement_async(&nodes)
        .await?
        .context("the cluster settled, then disagreed")?;
    let master_ports = |view: &[ClusterNode]| -> Vec<u16> {
        view.iter()
            .filter(|line| line.master)
            .map(|line| line.port)
            .collect()
    };
    // The master on the lowest port is swapped with its replica.
    let old_master_line = view
        .iter()
        .filter(|line| line.master)
        .min_by_key(|line| line.port)
        .cloned()
        .context("the cluster has no master")?;
    let replica_line = view
        .iter()
        .find(|line| line.master_id.as_deref() == Some(old_master_line.id.as_str()))
        .cloned()
        .context("the master has no replica")?;
    let node = |port: u16| nodes.iter().find(|node| node.port() == port);
    let old_master = node(old_master_line.port).context("no process for the old master")?;
    let replica = node(replica_line.port).context("no process for the replica")?;

    // The old master is the seed node: the manager must not depend on its
    // seed keeping its role.
    let mut config = scenarios::tune(RedisConfig::cluster(
        &old_master.addr(),
        &scenarios::unique_prefix("cluster-failover"),
    )?)?;
    if cached {
        config = cache_consistency::cached(config)?;
    }
    // `storage` shares the manager's client, and so its connections.
    let (manager, storage) = scenarios::manager_and_storage(&config).await?;
    let storage = &storage;

    // 1. Confirmed before the failover, on every master.
    let mut rng = Rng::derive(seed, 5);
    let (confirmed, failed) = load::create_many(&manager, CONFIRMED_BEFORE, 32, &mut rng).await;
    ensure!(failed == 0, "{failed} creates failed before the failover");
    for port in master_ports(&view) {
        let replicas = wait_replicated(storage, port, Duration::from_secs(5)).await?;
        ensure!(
            replicas >= 1,
            "WAIT 1 500 on master {port} reported {replicas} replicas before the failover"
        );
    }
    let confirmed_moved = in_slots(storage, &old_master_line, &confirmed);
    // Watched by a second caching replica: sessions in the slots that move
    // and elsewhere.
    let observer = match cached {
        true => {
            let mut watched: Vec<SessionId> = confirmed_moved.iter().take(8).copied().collect();
            watched.extend(
                confirmed
                    .iter()
                    .filter(|id| !confirmed_moved.contains(id))
                    .take(8),
            );
            Some(Observer::start(&config, &watched).await?)
        }
        false => None,
    };

    // Counters: two in the slots that move, two elsewhere.
    let mut counters = Vec::new();
    let (mut moved, mut kept) = (0, 0);
    while moved + kept < increments::COUNTERS {
        let id = rng.session_id();
        let slot = redis_keyslot(storage.key(&id).as_bytes());
        if old_master_line.owns(slot) && moved < increments::COUNTERS / 2 {
            moved += 1;
            counters.push(id);
        } else if !old_master_line.owns(slot)
            && kept < increments::COUNTERS - increments::COUNTERS / 2
        {
            kept += 1;
            counters.push(id);
        }
    }
    increments::create(&manager, &counters).await?;

    // 2. The failover, under load.
    let load = Load::start(&manager, LoadSpec::steady(seed), Instant::now());
    let running = increments::Increments::start(
        &manager,
        &counters,
        increments::PER_COUNTER,
        increments::PACE,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // When does the manager's client connect to the promoted node? fred
    // connects to masters only, so before the failover it has no
    // connection there.
    let client = storage.client().clone();
    let replica_port = replica.port();
    let connected_before = client
        .active_connections()
        .iter()
        .any(|server| server.port == replica_port);
    let failover_at = load.now();
    let started = Instant::now();
    let follow = tokio::spawn(async move {
        while started.elapsed() < Duration::from_secs(40) {
            if client
                .active_connections()
                .iter()
                .any(|server| server.port == replica_port)
            {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    });
    let reply = replica.cli().run_async(&["CLUSTER", "FAILOVER"]).await?;
    ensure!(reply == "OK", "CLUSTER FAILOVER replied {reply:?}");
    let promoted = poll_until(
        "the replica reports role master",
        started,
        PROMOTION_BOUND,
        || async { Ok(role(replica).await?.0 == "master") },
    )
    .await;
    let demoted = poll_until(
        "the old master reports role slave of the promoted node",
        started,
        Duration::from_secs(30),
        || async { Ok(role(old_master).await? == ("slave".into(), Some(replica_port))) },
    )
    .await;
    let agreed = poll_until(
        "every node agrees on the new master",
        started,
        Duration::from_secs(30),
        || async {
            let Some(view) = cluster::agreement_async(&nodes).await? else {
                return Ok(false);
            };
            Ok(view.iter().any(|line| {
                line.port == replica_port && line.master && line.slots == old_master_line.slots
            }) && view.iter().any(|line| {
                line.port == old_master_line.port
                    && !line.master
                    && line.master_id.as_deref() == Some(replica_line.id.as_str())
            }))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = load.stop(Duration::from_secs(10)).await;
    let tallies = running.stop(Duration::from_secs(10)).await;
    let followed = follow.await.ok().flatten();

    // 3. Confirmed after the switch, on every master of the new view.
    let (after, failed_after) = load::create_many(&manager, CONFIRMED_AFTER, 32, &mut rng).await;
    let new_view = cluster::agreement_async(&nodes).await?.unwrap_or_default();
    let mut waits_after = Vec::new();
    for port in master_ports(&new_view) {
        waits_after.push((
            port,
            wait_replicated(storage, port, Duration::from_secs(30)).await,
        ));
    }
    let promoted_waited = waits_after
        .iter()
        .any(|(port, replicas)| *port == replica_port && matches!(replicas, Ok(n) if *n >= 1));
    let waits_ok = !waits_after.is_empty()
        && waits_after
            .iter()
            .all(|(_, replicas)| matches!(replicas, Ok(n) if *n >= 1));
    let after_moved = in_slots(storage, &old_master_line, &after);
    let after_on_new = held_by(replica_port, storage, &after_moved).await?;
    let confirmed_on_new = held_by(replica_port, storage, &confirmed_moved).await?;

    // 4. The audit of everything acknowledged.
    let confirmed_audit = load::audit(&manager, &confirmed).await;
    let after_audit = load::audit(&manager, &after).await;
    let live_audit = load::audit(&manager, &report.live).await;
    let counts = increments::read(&manager, &counters, increments::READ_LIMIT).await?;
    let acknowledged_lost = report.lost.len() + live_audit.missing.len();
    let acknowledged_total = report.live.len() + report.lost.len();
    let anomalies = report.anomalies();
    let anomaly = |kind: Anomaly| anomalies.get(&kind).copied().unwrap_or(0);
    let found_missing = anomaly(Anomaly::MissingOnGet)
        + anomaly(Anomaly::UpdateFoundNothing)
        + anomaly(Anomaly::DeleteFoundNothing)
        + anomaly(Anomaly::WrongSession);
    let spurious = anomaly(Anomaly::SpuriousAlreadyExists);
    let recovery = report.failures_recovery_after(failover_at, scenarios::SLOW);
    let shown = |result: &anyhow::Result<Duration>| match result {
        Ok(after) => ms(*after),
        Err(error) => error.to_string(),
    };

    outcome.figure(format!(
        "{} of {} WAIT-confirmed sessions lost across the failover ({} in the moved slots, {} of them held by the promoted node); {} of {} acknowledged sessions of the load lost; replica reported master after {}, old master a replica of it after {}, all {} nodes agreed after {}, manager connected to the promoted node after {}; {} of {} ops failed during the switch ({}), worst latency {}, operations back to normal {} after CLUSTER FAILOVER; {} of {} created after the switch lost, {} of {} in the moved slots held by the promoted node",
        confirmed_audit.missing.len(),
        confirmed.len(),
        confirmed_moved.len(),
        confirmed_on_new,
        acknowledged_lost,
        acknowledged_total,
        shown(&promoted),
        shown(&demoted),
        nodes.len(),
        shown(&agreed),
        followed.map(ms).unwrap_or_else(|| "never (40 s)".into()),
        report.failed(),
        report.total_ops,
        report.failure_text(),
        ms(report.worst_latency()),
        ms(recovery),
        after_audit.missing.len(),
        after.len(),
        after_on_new,
        after_moved.len(),
    ));
    outcome.check(
        promoted.is_ok(),
        format!("the replica becomes master: {promoted:?}"),
    );
    outcome.check(
        demoted.is_ok(),
        format!("the old master becomes a replica of the promoted node: {demoted:?}"),
    );
    outcome.check(
        agreed.is_ok(),
        format!("every node agrees on the new master: {agreed:?}"),
    );
    // A manual failover loses no acknowledged write: every acknowledged
    // increment is the floor.
    increments::check(&mut outcome, &tallies, &tallies, &counts);
    confirmed_audit.check_all_read(
        &mut outcome,
        "every session confirmed with WAIT before the failover is readable",
    );
    outcome.check(
        confirmed_on_new == confirmed_moved.len(),
        format!(
            "the promoted node holds every confirmed session of its slots: {confirmed_on_new} of {}",
            confirmed_moved.len()
        ),
    );
    outcome.check(
        acknowledged_lost == 0 && live_audit.errors == 0,
        format!(
            "no session acknowledged by the load is lost (a manual failover loses no acknowledged write): {acknowledged_lost} lost, {} audit errors ({:?})",
            live_audit.errors, live_audit.first_error
        ),
    );
    outcome.check(
        found_missing == 0,
        format!(
            "no operation of the load finds a live session missing or another in its place: {found_missing} ({anomalies:?})"
        ),
    );
    outcome.check(
        spurious == 0,
        format!("no create of a fresh id is told AlreadyExists: {spurious}"),
    );
    outcome.check(
        failed_after == 0,
        format!("creates after the switch succeed: {failed_after} failed"),
    );
    outcome.check(
        waits_ok && promoted_waited,
        format!(
            "WAIT after the switch sees a replica on every master, the old master replicating the promoted one: {waits_after:?}"
        ),
    );
    outcome.check(
        !after_moved.is_empty() && after_on_new == after_moved.len(),
        format!(
            "sessions created after the switch in the moved slots land on the promoted node: {after_on_new} of {}",
            after_moved.len()
        ),
    );
    after_audit.check_all_read(
        &mut outcome,
        "every session created after the switch is readable",
    );
    outcome.check(
        followed.is_some() && !connected_before,
        format!(
            "the manager's client connects to the promoted node (connected before the failover: {connected_before})"
        ),
    );
    report.check_through_a_switch(&mut outcome, recovery, RECOVERY_BOUND);
    if let Some(observer) = observer {
        observer.check_after_switch(&manager, &mut outcome).await?;
        observer.close().await;
    }
    outcome.note(format!(
        "sessions of the load whose create or delete failed (fate unknown, not audited): {}; anomalies: {anomalies:?}",
        report.uncertain.len()
    ));
    outcome.note(failure_spread(&report, failover_at));
    for (class, samples) in &report.samples {
        outcome.note(format!("{class}: {}", samples.join(" | ")));
    }
    manager.close().await.ok();
    drop(nodes);
    Ok(outcome)
}
