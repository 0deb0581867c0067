//! Section 3: scale and memory.
//!
//! - Resident bytes per session: one fresh process per store (so that
//!   allocations of one store never share pages with another's), which
//!   reads its resident set size from `/proc/self/statm` before and after
//!   inserting N sessions of the typical shape, all made from the same seed.
//! - The sweep: a local store holding N sessions that expired and a few
//!   thousand live ones that a task keeps loading; the manager's cleanup
//!   removes the N while the loads go on, and their latency is compared with
//!   the same loads without a sweep.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use session_core::{Manager, Session, SessionId, SyncStorage, Ttl};
use session_local::LocalStorage;
use tower_sessions_memory_store::MemoryStore;
use tsc_memory::SessionStore as _;
use tsc_memory::session::{Id, Record};

use std::future::Future as _;

use crate::harness::{self, Measurement};
use crate::shape::{self, Rng};

const TTL: Duration = Duration::from_secs(30 * 60);
const SEED: u64 = 0x3E30;

/// The stores measured, by the name the command line uses.
pub(crate) const VARIANTS: [&str; 4] = ["dashmap", "ours", "moka", "tower-sessions-memory-store"];

/// One store's memory figure.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MemoryResult {
    pub(crate) variant: String,
    pub(crate) sessions: usize,
    pub(crate) rss_before: u64,
    pub(crate) rss_after: u64,
    pub(crate) bytes_per_session: f64,
}

/// The sweep's figures.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SweepResult {
    pub(crate) expired: usize,
    pub(crate) live: usize,
    pub(crate) removed: usize,
    pub(crate) sweep_ms: f64,
    /// Loads of live sessions while the sweep ran.
    pub(crate) during: Measurement,
    /// The same loads, same length of time, without a sweep.
    pub(crate) baseline: Measurement,
}

/// The resident set size of this process, in bytes.
pub(crate) fn rss_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("cannot read statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("statm has no resident field")?
        .parse()?;
    // Linux on x86-64 and aarch64 (4 KiB pages; 64 KiB kernels would
    // under-report, and are rare).
    Ok(pages * page_size())
}

fn page_size() -> u64 {
    // The kernel's page size is what statm counts in; smaps gives it
    // without a libc call.
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|smaps| {
            smaps.lines().find_map(|line| {
                let rest = line.strip_prefix("KernelPageSize:")?;
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .map(|kib| kib * 1024)
        .unwrap_or(4096)
}

/// The sessions every store gets, one at a time, so that no second copy
/// of them is held while measuring.
struct Sessions {
    rng: Rng,
}

impl Iterator for Sessions {
    type Item = Session;

    fn next(&mut self) -> Option<Session> {
        let id = shape::session_id(self.rng.uuid());
        Some(shape::typical_session(id, &mut self.rng))
    }
}

/// Fills one store with `count` sessions in this process and measures it.
pub(crate) fn measure(variant: &str, count: usize) -> Result<MemoryResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sessions = Sessions {
        rng: Rng::new(SEED),
    }
    .take(count);
    let expiry = time::OffsetDateTime::now_utc() + TTL;
    let (before, after) = runtime.block_on(async {
        Ok::<_, anyhow::Error>(match variant {
            "ours" => {
                let manager = Manager::builder(LocalStorage::new(), Ttl::new(TTL)?)
                    .factory(session_core::SessionType::Streamable)
                    .build()?;
                let before = rss_bytes()?;
                for session in sessions {
                    manager.create_from(session).await?;
                }
                let after = rss_bytes()?;
                if manager.count().await? != count {
                    bail!("ours holds the wrong number of sessions");
                }
                (before, after)
            }
            "dashmap" => {
                let map: DashMap<SessionId, Arc<Session>> = DashMap::new();
                let before = rss_bytes()?;
                for session in sessions {
                    map.insert(session.id(), Arc::new(session));
                }
                let after = rss_bytes()?;
                if map.len() != count {
                    bail!("the map holds the wrong number of sessions");
                }
                (before, after)
            }
            "moka" => {
                let cache: moka::future::Cache<SessionId, Arc<Session>> =
                    moka::future::Cache::builder().time_to_idle(TTL).build();
                let before = rss_bytes()?;
                for session in sessions {
                    cache.insert(session.id(), Arc::new(session)).await;
                }
                cache.run_pending_tasks().await;
                let after = rss_bytes()?;
                if cache.entry_count() != count as u64 {
                    bail!("moka holds {} sessions", cache.entry_count());
                }
                (before, after)
            }
            "tower-sessions-memory-store" => {
                let store = MemoryStore::default();
                let before = rss_bytes()?;
                for session in sessions {
                    let mut record = Record {
                        id: Id(shape::raw_id(session.id()) as i128),
                        data: shape::tower_data(&session),
                        expiry_date: expiry,
                    };
                    drop(session);
                    store.create(&mut record).await?;
                }
                let after = rss_bytes()?;
                (before, after)
            }
            other => bail!("unknown memory variant {other:?}"),
        })
    })?;
    Ok(MemoryResult {
        variant: variant.to_owned(),
        sessions: count,
        rss_before: before,
        rss_after: after,
        bytes_per_session: after.saturating_sub(before) as f64 / count as f64,
    })
}

/// Loads random live sessions in a loop until `stop`, timing each one and
/// recording those that start while `record` is set.
fn load_loop(
    manager: &Manager,
    ids: &[SessionId],
    stop: &AtomicBool,
    record: &AtomicBool,
) -> Result<Measurement> {
    let mut hist = harness::histogram();
    let mut rng = Rng::new(SEED + 1);
    // The wall-clock span of the recorded loads.
    let mut span: Option<(Instant, Instant)> = None;
    let mut ops = 0u64;
    let mut misses = 0u64;
    // The manager's local loads complete without awaiting; polling the
    // future by hand keeps this loop on one OS thread, next to the sweep's.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    while !stop.load(Ordering::Relaxed) {
        let id = &ids[rng.below(ids.len())];
        let recording = record.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let mut load = std::pin::pin!(manager.get(id));
        let found = match load.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(result) => result?.is_some(),
            std::task::Poll::Pending => bail!("a local load did not complete at once"),
        };
        if recording {
            let now = Instant::now();
            let elapsed = now - t0;
            span = Some((span.map_or(t0, |(first, _)| first), now));
            let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            hist.saturating_record(ns.max(1));
            ops += 1;
            misses += u64::from(!found);
        }
    }
    let window = span.map_or(Duration::ZERO, |(first, last)| last - first);
    let mut m = harness::summarize(&hist, ops, window.as_secs_f64());
    m.misses = misses;
    Ok(m)
}

/// Runs the sweep measurement in this process.
pub(crate) fn sweep(expired: usize, live: usize) -> Result<SweepResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _guard = runtime.enter();
    let storage = LocalStorage::new();
    let manager = Manager::builder(storage.clone(), Ttl::new(TTL)?)
        // Only the explicit sweep below runs.
        .cleanup_interval(Some(Duration::from_secs(24 * 3600)))
        .build()?;
    let tiny = Ttl::new(Duration::from_millis(1))?;
    let mut sessions = Sessions {
        rng: Rng::new(SEED + 2),
    };
    eprintln!("sweep: inserting {expired} sessions with a 1 ms TTL and {live} live ones");
    for session in sessions.by_ref().take(expired) {
        if !SyncStorage::create(&storage, Arc::new(session), tiny)? {
            bail!("duplicate session id");
        }
    }
    let mut ids = Vec::with_capacity(live);
    for session in sessions.take(live) {
        let session = runtime.block_on(manager.create_from(session))?;
        ids.push(session.id());
    }
    std::thread::sleep(Duration::from_millis(10));

    // Baseline: the loads alone, for about as long as a sweep takes.
    let stop = AtomicBool::new(false);
    let always = AtomicBool::new(true);
    let baseline_window = Duration::from_millis(500);
    let baseline = std::thread::scope(|scope| {
        let loads = scope.spawn(|| load_loop(&manager, &ids, &stop, &always));
        std::thread::sleep(baseline_window);
        stop.store(true, Ordering::Relaxed);
        loads.join()
    })
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;

    // The sweep, through the manager (it runs on Tokio's blocking pool),
    // with the same loads beside it.
    let stop = AtomicBool::new(false);
    let sweeping = AtomicBool::new(false);
    let (during, removed, sweep_ms) = std::thread::scope(|scope| {
        let loads = scope.spawn(|| load_loop(&manager, &ids, &stop, &sweeping));
        // Let the load thread get going first.
        std::thread::sleep(Duration::from_millis(20));
        sweeping.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let removed = runtime.block_on(manager.delete_expired());
        let sweep_ms = started.elapsed().as_secs_f64() * 1000.0;
        sweeping.store(false, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let during = loads.join();
        (during, removed, sweep_ms)
    });
    let during = during.map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let removed = removed?;
    if removed != expired {
        bail!("the sweep removed {removed} sessions, expected {expired}");
    }
    if during.misses > 0 || baseline.misses > 0 {
        bail!("live sessions went missing during the sweep");
    }
    runtime.block_on(manager.close())?;
    Ok(SweepResult {
        expired,
        live,
        removed,
        sweep_ms,
        during,
        baseline,
    })
}
