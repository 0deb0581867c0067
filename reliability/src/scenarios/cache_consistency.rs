//! Scenario 12: the local cache keeps reads within their staleness bound,
//! under load and under faults, checked by a history checker.
//!
//! Three managers (three replicas, three clients) share one server of the
//! scenario's own and a hot set of sessions: two keep a local cache (the
//! mode under test), the third reads every session from the server. 64
//! tasks pick a replica and a session at random and read it (75%),
//! increment it through the atomic read-modify-write (13%), increment a
//! copy they just read through a conditional write (11%; a stale copy
//! conflicts), or delete it (1%, of a quarter of the sessions, once each).
//! Every operation is recorded with its invoke and complete times and its
//! result, and [`history::check`] holds each read against the writes that
//! completed before it began. While the load runs, one fault is injected:
//!
//! | fault | what happens |
//! |---|---|
//! | none | the load alone |
//! | connection-kill | `CLIENT KILL TYPE normal`, three times: every replica reconnects, and must re-enable tracking and flush |
//! | stall | `SIGSTOP` for 1.5 s, then `SIGCONT` |
//! | restart | `SIGKILL` and a restart with `appendfsync always` |
//! | flushall | `FLUSHALL`: every session is gone, by the server's "invalidate everything" message that fred drops, so the staleness bound must cover it |
//! | storm | an `MSET` of 20,000 keys a caching replica has read, several times: an invalidation burst meant to overflow the invalidation channel |
//!
//! Promised, whatever the fault: no read older than the staleness bound
//! after an acknowledged write, no read of a session more than the bound
//! after its delete (or the flush) was acknowledged, no session missing
//! that was never deleted, no lost update. The figure reports the
//! staleness of cross-replica reads (p50, p99, max), the hit ratio and what
//! the caches counted (invalidations, flushes by cause).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use session_config::{CacheCapacity, CacheConfig, TrackingMode};
use session_core::{Conditional, Error, Manager, SessionId};
use session_redis::{CacheStats, RedisStorage};
use session_testenv::{Programs, RedisProcess};
use tokio::time::Instant;

use crate::history::{self, Event, Kind};
use crate::rng::Rng;
use crate::{Outcome, scenarios};

/// The figure's name.
pub const NAME: &str = "cache-consistency";

/// The staleness bound of the caching replicas.
pub const BOUND: Duration = Duration::from_millis(500);
/// Concurrent tasks.
pub const TASKS: usize = 64;
/// Sessions in the hot set.
pub const SESSIONS: usize = 64;
/// Keys of one invalidation storm.
pub const STORM_KEYS: usize = 20_000;

/// The fault injected while the load runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The load alone.
    None,
    /// Every client connection killed, three times.
    ConnectionKill,
    /// The server stopped for 1.5 s.
    Stall,
    /// The server killed and restarted (it persists every write).
    Restart,
    /// Every key removed.
    FlushAll,
    /// Bursts of invalidations.
    Storm,
}

impl Fault {
    /// Every fault, in the order the full run takes them.
    pub const ALL: [Fault; 6] = [
        Fault::None,
        Fault::ConnectionKill,
        Fault::Stall,
        Fault::Restart,
        Fault::FlushAll,
        Fault::Storm,
    ];

    /// The fault's name in the figure.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ConnectionKill => "connection-kill",
            Self::Stall => "stall",
            Self::Restart => "restart",
            Self::FlushAll => "flushall",
            Self::Storm => "storm",
        }
    }
}

/// One run: the server programs, the cache's mode, the fault, how long the
/// load runs and the seed of its schedule.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The server and its client (Redis or Valkey).
    pub programs: Programs,
    /// How invalidations reach the caching replicas.
    pub mode: TrackingMode,
    /// The fault.
    pub fault: Fault,
    /// How long the load runs.
    pub duration: Duration,
    /// The schedule's seed.
    pub seed: u64,
}

/// Runs one scenario with its own server in `scratch`.
pub async fn run(scratch: &Path, spec: &Spec) -> Outcome {
    let name = format!(
        "{NAME}-{}-{}",
        spec.fault.name(),
        match spec.mode {
            TrackingMode::Broadcast => "broadcast",
            _ => "tracking",
        }
    );
    Outcome::or_error(name.clone(), try_run(scratch, spec, name).await)
}

/// The history of a run, shared by its tasks.
type Log = Arc<Mutex<Vec<Event>>>;

fn record(log: &Log, event: Event) {
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(event);
}

async fn try_run(scratch: &Path, spec: &Spec, name: String) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(name.clone());
    let dir = format!("cache-{}-{}", spec.fault.name(), spec.seed % 10_000);
    let mut server = RedisProcess::builder(scratch, &dir)
        .programs(&spec.programs)
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .start()?;
    let prefix = scenarios::unique_prefix("cache");
    let plain = scenarios::fault_config(&server.addr(), &prefix)?;
    let cache = CacheConfig::new(
        CacheCapacity::Entries(
            std::num::NonZeroU64::new(100_000).unwrap_or(std::num::NonZeroU64::MIN),
        ),
        BOUND,
    )?
    .with_mode(spec.mode);
    let cached = plain.clone().with_cache(Some(cache))?;
    let mut storages = Vec::new();
    let mut managers = Vec::new();
    for config in [&cached, &cached, &plain] {
        let (manager, storage) = scenarios::manager_and_storage(config).await?;
        managers.push(manager);
        storages.push(storage);
    }
    wait_armed(&storages[..2]).await?;

    // The hot set, each at revision 1.
    let mut ids = Vec::new();
    for _ in 0..SESSIONS {
        ids.push(managers[2].create().await?.id());
    }
    let ids = Arc::new(ids);
    let deletable = SESSIONS / 4;
    let deleted: Arc<Vec<std::sync::atomic::AtomicBool>> =
        Arc::new((0..deletable).map(|_| Default::default()).collect());
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let epoch = Instant::now();
    let deadline = epoch + spec.duration;
    let errors = Arc::new(Mutex::new(
        std::collections::BTreeMap::<&'static str, usize>::new(),
    ));

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let managers = managers.clone();
        let ids = ids.clone();
        let log = log.clone();
        let deleted = deleted.clone();
        let errors = errors.clone();
        let mut rng = Rng::derive(spec.seed, 100 + task as u64);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let replica = rng.below(3) as usize;
                let session = rng.below(SESSIONS as u64) as usize;
                let choice = rng.below(100);
                let step = Step {
                    manager: &managers[replica],
                    id: &ids[session],
                    session,
                    replica,
                    epoch,
                    log: &log,
                    errors: &errors,
                };
                match choice {
                    0..75 => drop(step.read().await),
                    75..88 => step.increment().await,
                    88..99 => step.increment_copy().await,
                    _ => {
                        if session < deletable
                            && !deleted[session].swap(true, std::sync::atomic::Ordering::AcqRel)
                        {
                            step.delete().await;
                        } else {
                            drop(step.read().await);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_micros(rng.below(1_000))).await;
            }
        }));
    }

    // The fault, a third of the way in.
    tokio::time::sleep(spec.duration / 3).await;
    let fault_at = epoch.elapsed();
    inject(
        spec.fault,
        &mut server,
        &storages,
        &ids,
        &log,
        epoch,
        &prefix,
    )
    .await?;
    let fault_took = epoch.elapsed() - fault_at;
    for task in tasks {
        task.await?;
    }

    // The end state, from a client of its own, once every bound passed.
    tokio::time::sleep(BOUND).await;
    let judge = scenarios::manager(&plain).await?;
    let mut finals = Vec::new();
    for id in ids.iter() {
        finals.push(read_retrying(&judge, id).await?.map(|s| s.revision().get()));
    }
    let events = std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));
    let verdict = history::check(&events, &finals, BOUND);
    let stats: Vec<CacheStats> = storages[..2]
        .iter()
        .filter_map(RedisStorage::cache_stats)
        .collect();
    let sum = |field: fn(&CacheStats) -> u64| stats.iter().map(field).sum::<u64>();
    let (hits, misses) = (sum(|s| s.hits), sum(|s| s.misses));

    outcome.check(
        verdict.count("stale") == 0,
        format!(
            "0 reads older than the {BOUND:?} bound ({})",
            verdict.count("stale")
        ),
    );
    outcome.check(
        verdict.count("resurrected") == 0,
        format!(
            "0 reads of a removed session past the bound ({})",
            verdict.count("resurrected")
        ),
    );
    outcome.check(
        verdict.count("lost update") == 0,
        format!("0 lost updates ({})", verdict.count("lost update")),
    );
    outcome.check(
        verdict.count("missing") == 0 && verdict.count("invented") == 0,
        format!(
            "no session missing or invented ({} missing, {} invented)",
            verdict.count("missing"),
            verdict.count("invented")
        ),
    );
    outcome.check(hits > 0, format!("the caches answered reads ({hits} hits)"));
    // Without invalidations every copy would live out the whole bound: the
    // checks above would pass, and only the staleness figure would show it.
    outcome.check(
        sum(|s| s.invalidations) > 0,
        format!(
            "other replicas' writes reached the caches as invalidations ({})",
            sum(|s| s.invalidations)
        ),
    );
    let writes = events
        .iter()
        .filter(|e| matches!(e.kind, Kind::Wrote(_)))
        .count();
    outcome.check(writes > 0, format!("{writes} increments acknowledged"));
    if spec.fault == Fault::Storm && spec.mode == TrackingMode::Tracking {
        // The storm was read by a caching replica first, so its writes must
        // reach that replica as invalidations.
        // Each burst either arrives whole or overflows the channel, which
        // must then have flushed the cache.
        outcome.check(
            sum(|s| s.invalidations) >= STORM_KEYS as u64 || sum(|s| s.flushes_lagged) > 0,
            format!(
                "the storm's invalidations arrived ({}) or the cache flushed on the lag ({})",
                sum(|s| s.invalidations),
                sum(|s| s.flushes_lagged)
            ),
        );
    }
    let unexpected = errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(kind, _)| **kind == "not retryable")
        .map(|(_, count)| *count)
        .sum::<usize>();
    outcome.check(
        unexpected == 0,
        format!("every failed operation was a retryable error ({unexpected} were not)"),
    );
    outcome.figure(format!(
        "{}; {} events; hit ratio {:.2}; invalidations {}; fills dropped {}; flushes: reconnect {}, topology {}, lagged {}; fault {} at {:.1?}, took {:.1?}; errors {:?}",
        verdict,
        events.len(),
        hits as f64 / (hits + misses).max(1) as f64,
        sum(|s| s.invalidations),
        sum(|s| s.fills_dropped),
        sum(|s| s.flushes_reconnect),
        sum(|s| s.flushes_topology),
        sum(|s| s.flushes_lagged),
        spec.fault.name(),
        fault_at,
        fault_took,
        errors.lock().unwrap_or_else(PoisonError::into_inner),
    ));
    if !verdict.holds() {
        outcome.note(format!("violations: {:?}", verdict.violations));
    }
    for manager in managers.iter().chain([&judge]) {
        let _ = manager.close().await;
    }
    drop(server);
    Ok(outcome)
}

/// One operation of a task.
struct Step<'a> {
    manager: &'a Manager,
    id: &'a SessionId,
    session: usize,
    replica: usize,
    epoch: Instant,
    log: &'a Log,
    errors: &'a Mutex<std::collections::BTreeMap<&'static str, usize>>,
}

impl Step<'_> {
    fn event(&self, invoked: Duration, kind: Kind) {
        record(
            self.log,
            Event {
                session: self.session,
                replica: self.replica,
                invoked,
                completed: self.epoch.elapsed(),
                kind,
            },
        );
    }

    fn failed(&self, error: &Error) {
        let class = if error.is_retryable() {
            "retryable"
        } else {
            "not retryable"
        };
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(class)
            .or_default() += 1;
    }

    async fn read(&self) -> Option<std::sync::Arc<session_core::Session>> {
        let invoked = self.epoch.elapsed();
        match self.manager.get(self.id).await {
            Ok(found) => {
                self.event(
                    invoked,
                    Kind::Read(found.as_ref().map(|s| s.revision().get())),
                );
                found
            }
            Err(error) => {
                self.failed(&error);
                None
            }
        }
    }

    async fn increment(&self) {
        let invoked = self.epoch.elapsed();
        let result = self
            .manager
            .modify(self.id, |session| {
                bump(session);
                Ok::<_, Error>(())
            })
            .await;
        match result {
            Ok(Some((stored, ()))) => self.event(invoked, Kind::Wrote(stored.revision().get())),
            Ok(None) => {}
            Err(error) => self.written_or_not(invoked, &error),
        }
    }

    async fn increment_copy(&self) {
        let Some(copy) = self.read().await else {
            return;
        };
        let mut edited = (*copy).clone();
        bump(&mut edited);
        let invoked = self.epoch.elapsed();
        match self.manager.update_if(edited, copy.revision()).await {
            Ok(Conditional::Written(stored)) => {
                self.event(invoked, Kind::Wrote(stored.revision().get()));
            }
            Ok(Conditional::Conflict(_) | Conditional::Absent) => {}
            Err(error) => self.written_or_not(invoked, &error),
        }
    }

    async fn delete(&self) {
        let invoked = self.epoch.elapsed();
        match self.manager.delete(self.id).await {
            Ok(_) => self.event(invoked, Kind::Deleted),
            Err(error) => {
                self.failed(&error);
                self.event(invoked, Kind::MaybeDeleted);
            }
        }
    }

    fn written_or_not(&self, invoked: Duration, error: &Error) {
        self.failed(error);
        if error.is_outcome_unknown() {
            self.event(invoked, Kind::MaybeWrote);
        }
    }
}

/// The one change every write makes: one more increment.
fn bump(session: &mut session_core::Session) {
    let n: u64 = session
        .get_metadata("n")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    session.set_metadata("n", (n + 1).to_string());
}

async fn wait_armed(storages: &[RedisStorage]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !storages.iter().all(RedisStorage::cache_armed) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "tracking was not confirmed within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A read by the judge, retried while the server recovers from the fault.
async fn read_retrying(
    manager: &Manager,
    id: &SessionId,
) -> anyhow::Result<Option<std::sync::Arc<session_core::Session>>> {
    let mut attempts = 0;
    loop {
        match manager.get(id).await {
            Ok(found) => return Ok(found),
            Err(error) if error.is_retryable() && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

async fn inject(
    fault: Fault,
    server: &mut RedisProcess,
    storages: &[RedisStorage],
    ids: &[SessionId],
    log: &Log,
    epoch: Instant,
    prefix: &str,
) -> anyhow::Result<()> {
    match fault {
        Fault::None => {}
        Fault::ConnectionKill => {
            for _ in 0..3 {
                server
                    .cli()
                    .run_async(&["CLIENT", "KILL", "TYPE", "normal"])
                    .await?;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        }
        Fault::Stall => {
            server.stall()?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            server.resume()?;
        }
        Fault::Restart => {
            // Blocking: the restart waits for the server to answer again.
            tokio::task::block_in_place(|| server.restart())?;
        }
        Fault::FlushAll => {
            let invoked = epoch.elapsed();
            server.cli().run_async(&["FLUSHALL"]).await?;
            let completed = epoch.elapsed();
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            for session in 0..ids.len() {
                log.push(Event {
                    session,
                    replica: usize::MAX,
                    invoked,
                    completed,
                    kind: Kind::Flushed,
                });
            }
        }
        Fault::Storm => storm(&storages[0], &storages[2], prefix).await?,
    }
    Ok(())
}

/// Keys a caching replica (`reader`) has read, then rewritten in bulk by
/// another client (`writer`: a client's own writes send it no
/// invalidation): each `MSET` makes the server push one invalidation per
/// key at once.
async fn storm(reader: &RedisStorage, writer: &RedisStorage, prefix: &str) -> anyhow::Result<()> {
    use session_redis::fred::interfaces::KeysInterface;
    let keys: Vec<String> = (0..STORM_KEYS)
        .map(|_| format!("{prefix}{}", SessionId::new()))
        .collect();
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), "x".to_owned())).collect();
    for chunk in pairs.chunks(5_000) {
        let _: () = writer.client().mset(chunk.to_vec()).await?;
    }
    for _ in 0..3 {
        // Reading them tracks them for the caching replica (the values are
        // not sessions: a raw read tracks them just as a session read would).
        for chunk in keys.chunks(5_000) {
            let _: Vec<Option<String>> = reader.client().mget(chunk.to_vec()).await?;
        }
        for chunk in pairs.chunks(10_000) {
            let _: () = writer.client().mset(chunk.to_vec()).await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The staleness bound of the failover scenarios' caching managers: far
/// longer than they wait, so that what they see in time came from an
/// invalidation.
pub const FAILOVER_BOUND: Duration = Duration::from_secs(30);

/// `config` with a cache in tracking mode and [`FAILOVER_BOUND`].
pub fn cached(config: session_config::RedisConfig) -> anyhow::Result<session_config::RedisConfig> {
    let cache = CacheConfig::new(CacheConfig::default().capacity(), FAILOVER_BOUND)?;
    Ok(config.with_cache(Some(cache))?)
}

/// A second caching replica in a failover scenario: it holds copies of
/// some sessions through the failover and, after the switch, must see
/// another replica's writes to them through invalidations from the new
/// master, well before its staleness bound.
pub struct Observer {
    manager: Manager,
    storage: RedisStorage,
    watched: Vec<SessionId>,
}

impl Observer {
    /// Connects to `config` (with a cache) and reads each of `watched`, so
    /// that it holds their copies.
    pub async fn start(
        config: &session_config::RedisConfig,
        watched: &[SessionId],
    ) -> anyhow::Result<Self> {
        let (manager, storage) = scenarios::manager_and_storage(config).await?;
        wait_armed(std::slice::from_ref(&storage)).await?;
        for id in watched {
            anyhow::ensure!(
                manager.get(id).await?.is_some(),
                "a watched session is missing"
            );
        }
        Ok(Self {
            manager,
            storage,
            watched: watched.to_vec(),
        })
    }

    /// After the switch: the cache flushed and re-armed, and each watched
    /// session written by `writer` is seen within 2 s.
    pub async fn check_after_switch(
        &self,
        writer: &Manager,
        outcome: &mut Outcome,
    ) -> anyhow::Result<()> {
        let armed = tokio::time::timeout(Duration::from_secs(10), async {
            while !self.storage.cache_armed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok();
        let mut slowest = Duration::ZERO;
        let mut unseen = 0;
        for id in &self.watched {
            // A copy filled on the new connections, then written elsewhere.
            let _ = read_retrying(&self.manager, id).await?;
            let _ = read_retrying(&self.manager, id).await?;
            let Some((written, ())) = writer
                .modify(id, |session| {
                    bump(session);
                    Ok::<_, Error>(())
                })
                .await?
            else {
                continue;
            };
            let started = Instant::now();
            loop {
                let seen = self.manager.get(id).await.ok().flatten();
                if seen.is_some_and(|s| s.revision() == written.revision()) {
                    slowest = slowest.max(started.elapsed());
                    break;
                }
                if started.elapsed() > Duration::from_secs(2) {
                    unseen += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let stats = self.storage.cache_stats().unwrap_or_default();
        outcome.figure(format!(
            "caching replica: flushes reconnect {}, topology {}; after the switch {} writes of another replica seen, the slowest after {slowest:?}",
            stats.flushes_reconnect,
            stats.flushes_topology,
            self.watched.len() - unseen
        ));
        outcome.check(
            stats.flushes_reconnect + stats.flushes_topology >= 1 && armed,
            format!(
                "the caching replica flushed when it followed the new master and tracks again (flushes: reconnect {}, topology {}; armed {armed})",
                stats.flushes_reconnect, stats.flushes_topology
            ),
        );
        outcome.check(
            unseen == 0,
            format!(
                "after the switch, another replica's writes reach the caching replica as invalidations: {} of {} seen within 2 s (bound {FAILOVER_BOUND:?}), slowest {slowest:?}",
                self.watched.len() - unseen,
                self.watched.len()
            ),
        );
        Ok(())
    }

    /// Closes the observer's client.
    pub async fn close(self) {
        let _ = self.manager.close().await;
    }
}
