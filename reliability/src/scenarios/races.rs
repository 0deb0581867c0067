//! Scenario 6: races.
//!
//! - **Create races**: two managers (two Redis clients, as two replicas
//!   would have) on one Redis, 64 tasks each, create overlapping ids at the
//!   same moment (a barrier per round). Exactly one create wins per id, and
//!   the stored session is the winner's.
//! - **Delete racing updates**: a delete on one manager races updates on
//!   the other; whatever the interleaving, the session stays deleted
//!   (`update` is write-if-present). On Redis and on local storage.
//! - **Sweep racing loads** (local storage): the cleanup sweep runs over
//!   and over while tasks keep loading a set of hot sessions; the sweep
//!   never evicts a session whose last load started within the TTL before
//!   the sweep.
//!
//! Schedules (ids, which task tries which id, delays) come from the seed in
//! the figure; `RELIABILITY_SEED=<seed>` replays them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use session_config::RedisConfig;
use session_core::{Error, Manager, Session, SessionId, SessionType, Ttl};
use session_local::LocalStorage;
use session_redis::RedisStorage;
use session_redis::fred::interfaces::KeysInterface;

use crate::Outcome;
use crate::load::ms;
use crate::rng::Rng;
use crate::scenarios;

/// Tasks per manager in the create race.
pub const TASKS_PER_MANAGER: usize = 64;
/// Ids contended in each round of the create race.
pub const IDS_PER_ROUND: usize = 16;
/// Creates each task attempts per round.
pub const ATTEMPTS_PER_TASK: usize = 3;

fn redis_config(addr: &str, scenario: &str) -> anyhow::Result<RedisConfig> {
    // No faults here: a generous timeout keeps a busy machine from turning
    // into spurious failures.
    Ok(
        RedisConfig::standalone(addr, &scenarios::unique_prefix(scenario))?.with_timeouts(
            session_config::redis::DEFAULT_CONNECT_TIMEOUT,
            Duration::from_secs(5),
        )?,
    )
}

/// Two managers on one Redis at `addr`, 64 tasks each, `rounds` rounds of
/// overlapping creates.
pub async fn create_race(addr: &str, rounds: usize, seed: u64) -> Outcome {
    let mut outcome = Outcome::new("race-create");
    if let Err(error) = try_create_race(addr, rounds, seed, &mut outcome).await {
        return Outcome::error("race-create", &error);
    }
    outcome
}

async fn try_create_race(
    addr: &str,
    rounds: usize,
    seed: u64,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let config = redis_config(addr, "race-create")?;
    let managers = [
        scenarios::manager(&config).await?,
        scenarios::manager(&config).await?,
    ];
    let tasks = 2 * TASKS_PER_MANAGER;
    let ids: Arc<Vec<SessionId>> = Arc::new({
        let mut rng = Rng::derive(seed, 6_000);
        (0..rounds * IDS_PER_ROUND)
            .map(|_| rng.session_id())
            .collect()
    });
    let winners: Arc<Vec<AtomicU32>> =
        Arc::new((0..ids.len()).map(|_| AtomicU32::new(0)).collect());
    let owners: Arc<Vec<AtomicU32>> =
        Arc::new((0..ids.len()).map(|_| AtomicU32::new(u32::MAX)).collect());
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks));
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let manager = managers[task / TASKS_PER_MANAGER].clone();
        let (ids, winners, owners, errors, barrier) = (
            Arc::clone(&ids),
            Arc::clone(&winners),
            Arc::clone(&owners),
            Arc::clone(&errors),
            Arc::clone(&barrier),
        );
        handles.push(tokio::spawn(async move {
            let mut attempts = 0u64;
            for round in 0..rounds {
                let mut rng = Rng::derive(seed ^ ((round as u64) << 20), task as u64);
                barrier.wait().await;
                let mut picks = vec![task % IDS_PER_ROUND];
                picks.extend(
                    (1..ATTEMPTS_PER_TASK).map(|_| rng.below(IDS_PER_ROUND as u64) as usize),
                );
                for pick in picks {
                    let index = round * IDS_PER_ROUND + pick;
                    let mut session = Session::new(ids[index], SessionType::Mcp);
                    session.set_metadata("owner", task.to_string());
                    attempts += 1;
                    match manager.create_from(session).await {
                        Ok(_) => {
                            winners[index].fetch_add(1, Ordering::SeqCst);
                            owners[index].store(task as u32, Ordering::SeqCst);
                        }
                        Err(Error::AlreadyExists(id)) if id == ids[index] => {}
                        Err(other) => errors
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(format!("round {round} task {task}: {other}")),
                    }
                }
            }
            attempts
        }));
    }
    let mut attempts = 0;
    for handle in handles {
        attempts += handle.await?;
    }
    let elapsed = started.elapsed();

    // Every id had contenders (task t always tries id t % 16): exactly one
    // winner each, and the stored session is the winner's.
    let mut bad_winners = Vec::new();
    for (index, count) in winners.iter().enumerate() {
        let count = count.load(Ordering::SeqCst);
        if count != 1 {
            bad_winners.push(format!(
                "round {} id {}: {count} winners",
                index / IDS_PER_ROUND,
                ids[index]
            ));
        }
    }
    let mut wrong_owner = Vec::new();
    let verify = managers[1].clone();
    for (index, id) in ids.iter().enumerate() {
        let expected = owners[index].load(Ordering::SeqCst);
        match verify.get(id).await {
            Ok(Some(session)) => {
                if session.get_metadata("owner") != Some(expected.to_string().as_str()) {
                    wrong_owner.push(format!(
                        "{id}: stored owner {:?}, winner {expected}",
                        session.get_metadata("owner")
                    ));
                }
            }
            other => wrong_owner.push(format!("{id}: {other:?}")),
        }
    }
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(PoisonError::into_inner));
    outcome.figure(format!(
        "seed {seed}: {rounds} rounds x {IDS_PER_ROUND} ids, {attempts} creates from 2 managers x {TASKS_PER_MANAGER} tasks in {}; ids with != 1 winner: {}; stored owner != winner: {}; errors: {}",
        ms(elapsed),
        bad_winners.len(),
        wrong_owner.len(),
        errors.len()
    ));
    outcome.check(
        bad_winners.is_empty(),
        format!("exactly one winner per id: {:?}", first(&bad_winners)),
    );
    outcome.check(
        wrong_owner.is_empty(),
        format!(
            "the stored session is the winner's: {:?}",
            first(&wrong_owner)
        ),
    );
    outcome.check(
        errors.is_empty(),
        format!("no create fails otherwise: {:?}", first(&errors)),
    );
    for manager in managers {
        manager.close().await.ok();
    }
    Ok(())
}

fn first(list: &[String]) -> Vec<&String> {
    list.iter().take(3).collect()
}

/// Where the delete/update race runs.
#[derive(Clone, Copy, Debug)]
pub enum Backend<'a> {
    /// Two managers on the Redis server at this address.
    Redis(&'a str),
    /// One local store, shared by two clones of one manager.
    Local,
}

/// `rounds` rounds of one delete racing two updaters, 32 rounds at a time.
pub async fn delete_update_race(backend: Backend<'_>, rounds: usize, seed: u64) -> Outcome {
    let name = match backend {
        Backend::Redis(_) => "race-delete-update-redis",
        Backend::Local => "race-delete-update-local",
    };
    let mut outcome = Outcome::new(name);
    if let Err(error) = try_delete_update_race(backend, rounds, seed, &mut outcome).await {
        return Outcome::error(name, &error);
    }
    outcome
}

async fn try_delete_update_race(
    backend: Backend<'_>,
    rounds: usize,
    seed: u64,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    // On Redis, a handle on the first manager's storage, to look at its
    // keys behind the manager's back.
    let (managers, redis) = match backend {
        Backend::Redis(addr) => {
            let config = redis_config(addr, "race-delete")?;
            let (first, storage) = scenarios::manager_and_storage(&config).await?;
            ([first, scenarios::manager(&config).await?], Some(storage))
        }
        Backend::Local => {
            let manager = Manager::builder(LocalStorage::new(), scenarios::ttl())
                .factory(SessionType::Mcp)
                .build()?;
            ([manager.clone(), manager], None)
        }
    };
    const WORKERS: usize = 32;
    let started = Instant::now();
    let mut handles = Vec::new();
    for worker in 0..WORKERS {
        let managers = managers.clone();
        let redis = redis.clone();
        handles.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for round in (worker..rounds).step_by(WORKERS) {
                if let Err(error) =
                    one_round(&managers, redis.as_ref(), round, seed, &mut tally).await
                {
                    tally.errors.push(format!("round {round}: {error}"));
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for handle in handles {
        let part = handle.await?;
        tally.updates_applied += part.updates_applied;
        tally.updates_refused += part.updates_refused;
        tally.resurrected.extend(part.resurrected);
        tally.errors.extend(part.errors);
    }
    outcome.figure(format!(
        "seed {seed}: {rounds} rounds in {}; updates applied before the delete {}, refused after it {}; resurrected: {}; errors: {}",
        ms(started.elapsed()),
        tally.updates_applied,
        tally.updates_refused,
        tally.resurrected.len(),
        tally.errors.len()
    ));
    outcome.check(
        tally.resurrected.is_empty(),
        format!(
            "a deleted session is never resurrected by a racing update: {:?}",
            first(&tally.resurrected)
        ),
    );
    outcome.check(
        tally.errors.is_empty(),
        format!("no operation fails: {:?}", first(&tally.errors)),
    );
    outcome.check(
        tally.updates_applied > 0 && tally.updates_refused > 0,
        "the race really interleaves (updates land on both sides of the delete)",
    );
    for manager in managers {
        manager.close().await.ok();
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    updates_applied: usize,
    updates_refused: usize,
    resurrected: Vec<String>,
    errors: Vec<String>,
}

async fn yields(count: u64) {
    for _ in 0..count {
        tokio::task::yield_now().await;
    }
}

async fn one_round(
    managers: &[Manager; 2],
    redis: Option<&RedisStorage>,
    round: usize,
    seed: u64,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let mut rng = Rng::derive(seed ^ 0xDE1E7E, round as u64);
    let id = rng.session_id();
    managers[0].create_with_id(id).await?;
    let deleter = {
        let manager = managers[rng.below(2) as usize].clone();
        let delay = rng.below(24);
        tokio::spawn(async move {
            yields(delay).await;
            manager.delete(&id).await
        })
    };
    let updaters: Vec<_> = (0..2)
        .map(|updater| {
            let manager = managers[updater].clone();
            let delays: Vec<u64> = (0..4).map(|_| rng.below(12)).collect();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for (n, delay) in delays.into_iter().enumerate() {
                    yields(delay).await;
                    let mut session = Session::new(id, SessionType::Mcp);
                    session.set_metadata("update", format!("{updater}-{n}"));
                    results.push(manager.update(session).await);
                }
                results
            })
        })
        .collect();
    let deleted = deleter.await??;
    anyhow::ensure!(deleted, "the delete found nothing to delete");
    for updater in updaters {
        for result in updater.await? {
            if result? {
                tally.updates_applied += 1;
            } else {
                tally.updates_refused += 1;
            }
        }
    }
    for manager in managers {
        if let Some(session) = manager.get(&id).await? {
            tally.resurrected.push(format!(
                "round {round}: {id} readable after its delete, with {:?}",
                session.metadata()
            ));
        }
    }
    if let Some(storage) = redis {
        let exists: i64 = storage.client().exists(storage.key(&id)).await?;
        if exists != 0 {
            tally
                .resurrected
                .push(format!("round {round}: key of {id} exists in Redis"));
        }
    }
    Ok(())
}

/// Local storage: sweeps race loads of hot sessions for `run_for`.
pub async fn sweep_load_race(run_for: Duration, seed: u64) -> Outcome {
    let mut outcome = Outcome::new("race-sweep-load-local");
    if let Err(error) = try_sweep_load_race(run_for, seed, &mut outcome).await {
        return Outcome::error("race-sweep-load-local", &error);
    }
    outcome
}

/// The TTL of the sweep race: long enough that a reader is rarely
/// descheduled for longer, short enough that cold sessions expire and give
/// every sweep work.
pub const SWEEP_TTL: Duration = Duration::from_millis(20);
const HOT: usize = 64;
/// Sweeps the race runs at least.
pub const MIN_SWEEPS: u64 = 1000;
const READERS: usize = 4;

async fn try_sweep_load_race(
    run_for: Duration,
    seed: u64,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let evicted: Arc<Mutex<Vec<SessionId>>> = Arc::default();
    let manager = {
        let evicted = Arc::clone(&evicted);
        Manager::builder(LocalStorage::new(), Ttl::new(SWEEP_TTL)?)
            .factory(SessionType::Mcp)
            // The test drives the sweeps itself.
            .cleanup_interval(Some(Duration::from_secs(3600)))
            .on_expired(move |ids| {
                evicted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(ids)
            })
            .build()?
    };
    let epoch = Instant::now();
    let nanos = move |at: Instant| at.duration_since(epoch).as_nanos() as u64;
    let mut rng = Rng::derive(seed, 0x5EE9);
    let hot: Arc<Vec<SessionId>> = Arc::new((0..HOT).map(|_| rng.session_id()).collect());
    let last_read: Arc<Vec<AtomicU64>> = Arc::new((0..HOT).map(|_| AtomicU64::new(0)).collect());
    for (index, id) in hot.iter().enumerate() {
        manager.create_with_id(*id).await?;
        last_read[index].store(nanos(Instant::now()), Ordering::SeqCst);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for reader in 0..READERS {
        let (manager, hot, last_read, stop) = (
            manager.clone(),
            Arc::clone(&hot),
            Arc::clone(&last_read),
            Arc::clone(&stop),
        );
        let mut rng = Rng::derive(seed, reader as u64);
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            let mut recreated = 0u64;
            let mut cold = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let index = rng.below(HOT as u64) as usize;
                let started = nanos(Instant::now());
                match manager.get(&hot[index]).await {
                    Ok(Some(_)) => last_read[index].fetch_max(started, Ordering::SeqCst),
                    Ok(None) => {
                        // Evicted (legitimately, if this reader was away for
                        // a whole TTL: the sweeper checks): bring it back.
                        let _ = manager.create_with_id(hot[index]).await;
                        recreated += 1;
                        last_read[index].fetch_max(nanos(Instant::now()), Ordering::SeqCst)
                    }
                    Err(_) => 0,
                };
                reads += 1;
                // Cold sessions, never read again: the sweep's real work.
                if rng.percent(10) {
                    let _ = manager.create().await;
                    cold += 1;
                }
                if reads.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            (reads, recreated, cold)
        }));
    }

    let mut sweeps = 0u64;
    let mut swept = 0usize;
    let mut hot_evictions = 0usize;
    let mut violations = Vec::new();
    // At least `run_for`, and at least MIN_SWEEPS sweeps (a busy machine
    // sweeps slower), but never more than a minute.
    let started = Instant::now();
    let hot_set: std::collections::HashMap<SessionId, usize> =
        hot.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    while (started.elapsed() < run_for || sweeps < MIN_SWEEPS)
        && started.elapsed() < Duration::from_secs(60)
    {
        let reads_before: Vec<u64> = last_read
            .iter()
            .map(|read| read.load(Ordering::SeqCst))
            .collect();
        swept += manager.delete_expired().await?;
        let after = nanos(Instant::now());
        sweeps += 1;
        let bound = after.saturating_sub(SWEEP_TTL.as_nanos() as u64);
        let ids: Vec<SessionId> =
            std::mem::take(&mut *evicted.lock().unwrap_or_else(PoisonError::into_inner));
        for id in ids {
            let Some(&index) = hot_set.get(&id) else {
                continue;
            };
            hot_evictions += 1;
            if reads_before[index] > bound {
                violations.push(format!(
                    "sweep {sweeps} evicted hot session {id} read {} before the sweep ended (TTL {})",
                    ms(Duration::from_nanos(after - reads_before[index])),
                    ms(SWEEP_TTL)
                ));
            }
        }
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut reads = 0;
    let mut recreated = 0;
    let mut cold = 0;
    for reader in readers {
        let (r, c, k) = reader.await?;
        reads += r;
        recreated += c;
        cold += k;
    }
    outcome.figure(format!(
        "seed {seed}: {sweeps} sweeps removed {swept} sessions while {READERS} tasks made {reads} loads of {HOT} hot sessions (TTL {}) and {cold} cold creates; hot sessions evicted after a reader stalled a whole TTL: {hot_evictions}; evicted although read within the TTL: {}",
        ms(SWEEP_TTL),
        violations.len()
    ));
    let _ = recreated;
    outcome.check(
        violations.is_empty(),
        format!(
            "no session loaded within its TTL is evicted: {:?}",
            first(&violations)
        ),
    );
    outcome.check(
        sweeps >= 1000,
        format!("at least 1000 sweeps ran ({sweeps})"),
    );
    outcome.check(swept > 0, "the sweeps had work (expired cold sessions)");
    manager.close().await.ok();
    Ok(())
}
