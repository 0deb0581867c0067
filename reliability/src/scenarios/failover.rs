//! Scenario 4: sentinel failover under load.
//!
//! A master, one replica and one sentinel (quorum 1) are started here;
//! `SENTINEL FAILOVER mymaster` promotes the replica while 64 tasks load
//! one manager configured with the sentinel only.
//!
//! # What Redis guarantees, and what is tested against it
//!
//! Redis replication is asynchronous: the master acknowledges a write
//! before any replica has it, so a failover can lose acknowledged writes
//! (the Redis Sentinel documentation says so in as many words). Worse,
//! `SENTINEL FAILOVER` does not pause the old master: until the sentinel
//! reconfigures it as a replica (several seconds later), clients still
//! connected to it keep writing there, with acknowledgements, and those
//! writes are discarded when it resynchronises from the new master. The
//! one tool Redis gives is `WAIT numreplicas timeout`: once it reports the
//! replica, every earlier write of that connection is on the replica.
//!
//! So the promises tested are:
//!
//! 1. every session acknowledged *and* confirmed on the replica with `WAIT`
//!    before the failover is readable after it: zero lost;
//! 2. the manager follows the new master by itself, within
//!    [`FOLLOW_BOUND`] of the switch: sessions created after
//!    the switch land on the promoted server and are confirmed by `WAIT`
//!    (so the old master has rejoined as a replica), and all are readable;
//! 3. errors during the switch are typed and retryable, nothing hangs, and
//!    service recovers within a bound.
//!
//! Sessions acknowledged during the switch but never confirmed may be lost,
//! as Redis allows; how many were is reported, not asserted.
//!
//! Counters incremented through the atomic read-modify-write
//! ([`increments`]) run in three phases: before the
//! failover (confirmed with `WAIT`), through it, and after the switch
//! (confirmed with `WAIT`). Each counter ends with at least the
//! acknowledged increments of the two confirmed phases, and at most every
//! acknowledged increment plus those whose outcome was reported unknown:
//! an increment acknowledged by the old master after the promotion may be
//! lost, one is never applied twice.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use session_config::{RedisConfig, SentinelConfig};
use session_core::SessionId;
use session_redis::RedisStorage;
use session_redis::fred::interfaces::ClientLike;
use session_redis::fred::prelude::Value;

use crate::load::{self, Anomaly, Load, LoadSpec, ms};
use crate::rng::Rng;
use crate::scenarios::cache_consistency::{self, Observer};
use crate::{Outcome, increments, scenarios};
use session_testenv::cli::info_field;
use session_testenv::{HOST, Programs, RedisProcess};

/// The figure's name.
pub const NAME: &str = "sentinel-failover";
/// The figure's name with caching managers.
pub const NAME_CACHED: &str = "sentinel-failover-cached";

const MASTER_NAME: &str = "mymaster";
/// Sessions created and confirmed with WAIT before the failover.
pub const CONFIRMED_BEFORE: usize = 2000;
/// Sessions created and confirmed with WAIT after the switch.
pub const CONFIRMED_AFTER: usize = 500;
/// How long after the sentinels switch the master the manager may take to
/// connect to the new one: the storage hears `+switch-master` from the
/// sentinels and reconnects at once (before it did, it took 11 s here, until
/// the old master was demoted and dropped its clients).
pub const FOLLOW_BOUND: Duration = Duration::from_secs(3);
/// The bound on the time from `SENTINEL FAILOVER` until operations stop
/// failing.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(30);

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

/// `WAIT 1 500` on the manager's own connection (through `storage`, a
/// handle on the manager's storage) until it reports a replica or `limit`
/// passes: see [`scenarios::wait_replicated`].
async fn wait_replicated(storage: &RedisStorage, limit: Duration) -> anyhow::Result<i64> {
    let client = storage.client();
    scenarios::wait_replicated(limit, |args| {
        client.custom::<Value, _>(scenarios::wait_command(), args)
    })
    .await
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    loop {
        if check().await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("{what}: not after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn try_run(scratch: &Path, seed: u64, cached: bool) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(if cached { NAME_CACHED } else { NAME });
    // Each run starts from empty servers in directories of its own.
    let dir = |name: &str| format!("{}{name}", if cached { "cached-" } else { "" });
    let set = SentinelSet::start(scratch, &dir("failover"), &Programs::default()).await?;
    let replica = &set.replica;
    let mut config = scenarios::tune(RedisConfig::sentinel(
        set.config()?,
        &scenarios::unique_prefix("failover"),
    )?)?;
    if cached {
        config = cache_consistency::cached(config)?;
    }
    let (manager, storage) = scenarios::manager_and_storage(&config).await?;

    // 1. Confirmed before the failover.
    let mut rng = Rng::derive(seed, 4);
    let (confirmed, failed) = load::create_many(&manager, CONFIRMED_BEFORE, 32, &mut rng).await;
    anyhow::ensure!(failed == 0, "{failed} creates failed before the failover");
    let observer = match cached {
        true => Some(Observer::start(&config, &confirmed[..16.min(confirmed.len())]).await?),
        false => None,
    };
    let (counters, running) = increments::start_counters(&manager, &mut rng).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = running.stop(Duration::from_secs(10)).await;
    let replicas = wait_replicated(&storage, Duration::from_secs(5)).await?;
    anyhow::ensure!(
        replicas >= 1,
        "WAIT 1 5000 reported {replicas} replicas before the failover"
    );

    // 2. The failover, under load.
    let load = Load::start(&manager, LoadSpec::steady(seed), Instant::now());
    let running = increments::Increments::start(
        &manager,
        &counters,
        increments::PER_COUNTER,
        increments::PACE,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failover_at = load.now();
    // When does the manager's client show up on the promoted server? Its
    // other normal clients are the sentinel's (named `sentinel-...`) and the
    // polling redis-cli itself.
    let follow_cli = replica.cli();
    let follow = tokio::spawn(async move {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(40) {
            if let Ok(list) = follow_cli
                .run_async(&["CLIENT", "LIST", "TYPE", "normal"])
                .await
                && list
                    .lines()
                    .filter(|line| !line.contains("cmd=client") && !line.contains("name=sentinel-"))
                    .count()
                    >= 1
            {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    });
    let (switch, demoted) = set.fail_over().await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = load.stop(Duration::from_secs(10)).await;
    let through = running.stop(Duration::from_secs(10)).await;
    let followed = follow.await.ok().flatten();

    // 3. Confirmed after the switch (the WAIT below covers the increments
    // too).
    let running = increments::Increments::start(
        &manager,
        &counters,
        increments::PER_COUNTER,
        increments::PACE,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_switch = running.stop(Duration::from_secs(10)).await;
    let (after, failed_after) = load::create_many(&manager, CONFIRMED_AFTER, 32, &mut rng).await;
    let replicas_after = wait_replicated(&storage, Duration::from_secs(30)).await;
    let on_new_master = match after.first() {
        Some(id) => key_exists(replica, config.key_prefix(), id).await?,
        None => false,
    };

    let confirmed_audit = load::audit(&manager, &confirmed).await;
    let after_audit = load::audit(&manager, &after).await;
    let live_audit = load::audit(&manager, &report.live).await;
    let counts = increments::read(&manager, &counters, increments::READ_LIMIT).await?;
    let unconfirmed_lost = report.lost.len() + live_audit.missing.len();
    let unconfirmed_total = report.live.len() + report.lost.len();
    let recovery = report.failures_recovery_after(failover_at, scenarios::SLOW);
    let spurious = report
        .anomalies()
        .get(&Anomaly::SpuriousAlreadyExists)
        .copied()
        .unwrap_or(0);

    outcome.figure(format!(
        "{} of {} WAIT-confirmed sessions lost across the failover; {} of {} confirmed after the switch lost; sentinel switched in {}, old master demoted after {}, manager on the new master after {}; {} of {} ops failed during the switch ({}), worst latency {}, operations back to normal {} after SENTINEL FAILOVER; acknowledged but unconfirmed sessions lost: {} of {} (written to the old master after the promotion)",
        confirmed_audit.missing.len(),
        confirmed.len(),
        after_audit.missing.len(),
        after.len(),
        ms(switch),
        demoted
            .as_ref()
            .map(|d| ms(*d + switch))
            .unwrap_or_else(|e| e.to_string()),
        followed.map(ms).unwrap_or_else(|| "never (40 s)".into()),
        report.failed(),
        report.total_ops,
        report.failure_text(),
        ms(report.worst_latency()),
        ms(recovery),
        unconfirmed_lost,
        unconfirmed_total,
    ));
    let floor = before.clone().and(&after_switch);
    let all = before.and(&through).and(&after_switch);
    increments::check(&mut outcome, &floor, &all, &counts);
    outcome.figure(format!(
        "acknowledged increments lost with the old master's unconfirmed writes: {} (through the switch: {} acknowledged)",
        all.total()
            .acked
            .saturating_sub(counts.values().sum::<u64>()),
        through.total().acked,
    ));
    confirmed_audit.check_all_read(
        &mut outcome,
        "every session confirmed with WAIT before the failover is readable",
    );
    outcome.check(
        failed_after == 0,
        format!("creates after the switch succeed: {failed_after} failed"),
    );
    outcome.check(
        matches!(replicas_after, Ok(n) if n >= 1),
        format!("WAIT after the switch sees the demoted master as a replica: {replicas_after:?}"),
    );
    outcome.check(
        on_new_master,
        "the manager writes to the promoted server after the switch",
    );
    after_audit.check_all_read(
        &mut outcome,
        "every session confirmed after the switch is readable",
    );
    outcome.check(
        followed.is_some_and(|followed| followed <= switch + FOLLOW_BOUND),
        format!(
            "the manager's client connects to the promoted server within {} of the sentinel's switch (it hears +switch-master), not when the old master drops it",
            ms(FOLLOW_BOUND)
        ),
    );
    outcome.check(
        demoted.is_ok(),
        format!("the sentinel demotes the old master: {demoted:?}"),
    );
    report.check_through_a_switch(&mut outcome, recovery, RECOVERY_BOUND);
    if let Some(observer) = observer {
        observer.check_after_switch(&manager, &mut outcome).await?;
        observer.close().await;
    }
    outcome.note(format!(
        "anomalies during the load (expected from asynchronous replication): {:?}; spurious AlreadyExists: {spurious}",
        report.anomalies()
    ));
    for (class, samples) in &report.samples {
        outcome.note(format!("{class}: {}", samples.join(" | ")));
    }
    manager.close().await.ok();
    drop(set);
    Ok(outcome)
}

/// A master, one replica and one sentinel (quorum 1) monitoring them under
/// `mymaster`, each in a directory of its own.
pub struct SentinelSet {
    /// The first master, a replica after [`SentinelSet::fail_over`].
    pub master: RedisProcess,
    /// The replica the failover promotes.
    pub replica: RedisProcess,
    /// The sentinel.
    pub sentinel: RedisProcess,
}

impl SentinelSet {
    /// Starts the three servers of `programs` under `scratch` (directories
    /// named after `prefix`) and returns once the replica is in sync and the
    /// sentinel knows it.
    pub async fn start(scratch: &Path, prefix: &str, programs: &Programs) -> anyhow::Result<Self> {
        let master = RedisProcess::builder(scratch, &format!("{prefix}-master"))
            .programs(programs)
            .start()?;
        let master_port = master.port().to_string();
        let replica = RedisProcess::builder(scratch, &format!("{prefix}-replica"))
            .programs(programs)
            .args(["--replicaof", HOST, &master_port])
            .start()?;
        wait_until("the replica syncs", Duration::from_secs(20), || async {
            let info = replica.cli().run_async(&["INFO", "replication"]).await?;
            Ok(info_field(&info, "master_link_status").as_deref() == Some("up"))
        })
        .await?;
        let sentinel = RedisProcess::sentinel_builder(
            scratch,
            &format!("{prefix}-sentinel"),
            &[
                "sentinel resolve-hostnames no".into(),
                format!("sentinel monitor {MASTER_NAME} {HOST} {master_port} 1"),
                format!("sentinel down-after-milliseconds {MASTER_NAME} 2000"),
                format!("sentinel failover-timeout {MASTER_NAME} 10000"),
            ],
        )
        .programs(programs)
        .start()?;
        let replica_port = replica.port().to_string();
        // The sentinel must know the replica (it learns it from the master's
        // INFO) before it can promote it.
        wait_until(
            "the sentinel sees the replica",
            Duration::from_secs(30),
            || async {
                let replicas = sentinel
                    .cli()
                    .run_async(&["SENTINEL", "REPLICAS", MASTER_NAME])
                    .await?;
                let lines: Vec<&str> = replicas.lines().map(str::trim).collect();
                let flags = lines
                    .windows(2)
                    .find(|pair| pair[0] == "flags")
                    .map(|pair| pair[1]);
                Ok(lines.contains(&replica_port.as_str()) && flags == Some("slave"))
            },
        )
        .await?;
        Ok(Self {
            master,
            replica,
            sentinel,
        })
    }

    /// Waits until the old master, demoted by [`SentinelSet::fail_over`],
    /// is in sync with the promoted server (`master_link_status:up`), for
    /// at most `limit`; how long that took.
    pub async fn wait_rejoined(&self, limit: Duration) -> anyhow::Result<Duration> {
        wait_until("the old master syncs as a replica", limit, || async {
            let info = self
                .master
                .cli()
                .run_async(&["INFO", "replication"])
                .await?;
            Ok(info_field(&info, "role").as_deref() == Some("slave")
                && info_field(&info, "master_link_status").as_deref() == Some("up"))
        })
        .await
    }

    /// The sentinel settings of a client of this set.
    pub fn config(&self) -> anyhow::Result<SentinelConfig> {
        Ok(SentinelConfig::new(MASTER_NAME, [self.sentinel.addr()])?)
    }

    /// `SENTINEL FAILOVER`: returns when the sentinel names the replica
    /// as master (how long that took), and how long after that the old
    /// master became a replica (an error if it did not within 40 s). The
    /// old master keeps accepting writes until the sentinel demotes it.
    pub async fn fail_over(&self) -> anyhow::Result<(Duration, anyhow::Result<Duration>)> {
        let reply = self
            .sentinel
            .cli()
            .run_async(&["SENTINEL", "FAILOVER", MASTER_NAME])
            .await?;
        anyhow::ensure!(reply == "OK", "SENTINEL FAILOVER replied {reply:?}");
        let replica_port = self.replica.port().to_string();
        let switch = wait_until("the sentinel switches", Duration::from_secs(30), || async {
            let addr = self
                .sentinel
                .cli()
                .run_async(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                .await?;
            Ok(addr.lines().nth(1).map(str::trim) == Some(replica_port.as_str()))
        })
        .await?;
        let demoted = wait_until(
            "the old master becomes a replica",
            Duration::from_secs(40),
            || async {
                let info = self
                    .master
                    .cli()
                    .run_async(&["INFO", "replication"])
                    .await?;
                Ok(info_field(&info, "role").as_deref() == Some("slave"))
            },
        )
        .await;
        Ok((switch, demoted))
    }
}

async fn key_exists(server: &RedisProcess, prefix: &str, id: &SessionId) -> anyhow::Result<bool> {
    let key = format!("{prefix}{id}");
    Ok(server.cli().run_async(&["EXISTS", &key]).await? == "1")
}
