//! The sweep must never evict an entry that was read within its TTL, even
//! while sweeps and reads run at the same time on different cores.
//!
//! Reader threads read a set of hot keys in a loop, recording when each read
//! started. A sweeper thread sweeps with the current time as cutoff, over and
//! over. An entry read at time `t` has its deadline at `t + ttl` or later, so
//! a sweep at `s` may evict it only if its last read started at or before
//! `s - ttl`. Every eviction of a hot key is checked against that bound,
//! using the read times recorded before the sweep started. The
//! TTL is a few milliseconds of real time, so legitimate evictions (a reader
//! descheduled for longer than the TTL) happen too, and are allowed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use session_local::map::ExpiringMap;
use tokio::time::Instant;

const TTL: Duration = Duration::from_millis(5);
const HOT: usize = 64;
const RUN: Duration = Duration::from_millis(1500);
/// How many sweeps and reads a run needs, at the least, to mean something.
/// On a loaded machine the run goes on past `RUN` until it has them, up to
/// `LIMIT`: the test checks an interleaving, not a speed.
const MIN_SWEEPS: usize = 1000;
const MIN_READS: usize = 10_000;
const LIMIT: Duration = Duration::from_secs(30);
/// How far two readings of the monotonic clock may disagree between threads.
/// On this project's virtual machines, under a competing CPU load, two runs
/// in a hundred saw an eviction inside the strict bound, by 1.5 us and by
/// 50.1 us; no code path was found that explains them (every write reads the
/// clock under the shard lock, every read only moves a deadline forward), so
/// they are taken for the vCPUs' clocks disagreeing. The defects this test
/// guards against move deadlines by the time a thread was descheduled:
/// 4.9 ms in the run that found the last one, ten times this allowance.
const CLOCK_SKEW: Duration = Duration::from_micros(500);

#[test]
fn sweep_never_evicts_an_entry_read_within_its_ttl() {
    let map: Arc<ExpiringMap<usize, usize>> = Arc::new(ExpiringMap::new());
    let epoch = Instant::now();
    let nanos = move |at: Instant| at.duration_since(epoch).as_nanos() as u64;
    // When the last read of each hot key started, in nanoseconds after `epoch`.
    let last_read: Arc<Vec<AtomicU64>> = Arc::new((0..HOT).map(|_| AtomicU64::new(0)).collect());
    for key in 0..HOT {
        map.upsert(key, key, TTL);
        last_read[key].store(nanos(Instant::now()), Ordering::SeqCst);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));

    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let (map, last_read, stop, reads) =
                (map.clone(), last_read.clone(), stop.clone(), reads.clone());
            thread::spawn(move || {
                let mut key = reader;
                while !stop.load(Ordering::Relaxed) {
                    key = (key + 7) % HOT;
                    let started = nanos(Instant::now());
                    if map.get_and_refresh(&key, TTL).is_none() {
                        // Evicted while this reader was descheduled for longer
                        // than the TTL (the sweeper checked it was legitimate):
                        // put it back.
                        map.upsert(key, key, TTL);
                    }
                    last_read[key].fetch_max(started, Ordering::SeqCst);
                    reads.fetch_add(1, Ordering::Relaxed);
                    // Cold keys with a tiny TTL give the sweep real work.
                    map.upsert(
                        HOT + (started as usize % 10_000),
                        0,
                        Duration::from_micros(50),
                    );
                }
            })
        })
        .collect();

    let started = std::time::Instant::now();
    let mut sweeps = 0usize;
    let mut cold_evictions = 0usize;
    let mut hot_evictions = 0usize;
    let enough = |sweeps: usize| sweeps >= MIN_SWEEPS && reads.load(Ordering::Relaxed) >= MIN_READS;
    while started.elapsed() < LIMIT && (started.elapsed() < RUN || !enough(sweeps)) {
        let cutoff = Instant::now();
        // Snapshot the read times before sweeping: a reader that finds its
        // key legitimately evicted puts it back and records a fresh read,
        // which must not be mistaken for a read the sweep ignored.
        let reads_before: Vec<u64> = last_read
            .iter()
            .map(|read| read.load(Ordering::SeqCst))
            .collect();
        let evicted = map.sweep(cutoff);
        sweeps += 1;
        let bound =
            nanos(cutoff).saturating_sub(TTL.as_nanos() as u64) + CLOCK_SKEW.as_nanos() as u64;
        for key in evicted {
            if key >= HOT {
                cold_evictions += 1;
                continue;
            }
            hot_evictions += 1;
            let read = reads_before[key];
            assert!(
                read <= bound,
                "sweep at {cutoff:?} evicted hot key {key} whose last read started {} ns after the cutoff bound",
                read - bound
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().expect("reader thread");
    }
    let reads = reads.load(Ordering::Relaxed);
    eprintln!(
        "{sweeps} sweeps, {reads} reads, {cold_evictions} cold and {hot_evictions} hot evictions"
    );
    assert!(
        sweeps >= MIN_SWEEPS,
        "only {sweeps} sweeps ran in {LIMIT:?}"
    );
    assert!(reads >= MIN_READS, "only {reads} reads ran in {LIMIT:?}");
    assert!(cold_evictions > 0, "the sweep never had anything to do");
}
