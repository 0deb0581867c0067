//! The local cache: copies of hot sessions that answer reads without a
//! round trip, kept correct by the server's invalidations.
//!
//! # What makes a copy safe to serve
//!
//! A copy answers a read only while two bounds hold, both fixed when it was
//! filled:
//!
//! - **the refresh window.** A read must leave the session at least
//!   `ttl - refresh_window` to live (see the crate documentation). A copy
//!   filled by a read that learned the key's remaining life `R` at time `t`
//!   may answer until `t + R - (ttl - refresh_window)`; filled by a write,
//!   which sets the TTL to `ttl`, until `t + refresh_window`.
//! - **the staleness bound** (`CacheConfig::max_staleness`), counted from
//!   when the read or write that filled it was *sent*: what invalidations
//!   cannot report (a `FLUSHALL`, a connection that died without a word, a
//!   network partition) is over when it passes.
//!
//! Within those bounds a copy is dropped as soon as the server says the key
//! changed. The server sends an invalidation on the connection that read the
//! key (`CLIENT TRACKING`, with `NOLOOP` so that this client's own writes do
//! not invalidate its copies: it updates or drops them itself).
//!
//! # The fill race
//!
//! fred resolves a reply and delivers an invalidation on different tasks,
//! so the invalidation of a key can be handled before the reply of a read
//! that the server answered with the old value. A fill therefore takes a
//! [`Ticket`] before its read is sent: the counter of the key's stripe and
//! the cache's epoch. Every invalidation bumps its stripe's counter (under
//! the stripe's lock) and every flush the epoch; a fill is stored only if,
//! under the same lock, neither moved since its ticket. A dropped fill is
//! only a miss: the read's answer is still returned.
//!
//! # What fred leaves to us
//!
//! fred does not re-enable tracking after a reconnect, drops the server's
//! "invalidate everything" message (a `FLUSHALL`), and stops
//! `on_invalidation` at the first lagged message. So the storage's tracking
//! task (in the crate root) reads the invalidation channel itself and
//! flushes on `Lagged`, and on every reconnect or cluster change disarms
//! the cache (no fill is stored), flushes it, re-enables tracking and only
//! then arms it again. The staleness bound covers `FLUSHALL`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use session_config::{CacheCapacity, CacheConfig, TrackingMode};
use session_core::Session;

use crate::keys::Slot;
use tokio::time::Instant;

/// Fills and invalidations are serialized per stripe of ids, not per id: a
/// fill dropped because another id of its stripe was invalidated is a miss,
/// and 64 stripes keep that rare at the rates a replica sees.
const STRIPES: usize = 64;

/// What an entry costs beyond its stored bytes, for a cache bounded in
/// bytes: the decoded `Session` (a map node, and a heap string with its
/// header for every metadata key and value) and its `Arc`, the entry and
/// the cache's slot. Measured (`docs/benchmarks.md`): 1,217 bytes of
/// resident memory per cached session of 179 stored bytes with four
/// metadata pairs, so stored bytes plus this come within 2% of it.
pub(crate) const ENTRY_OVERHEAD: u64 = 1024;

/// One cached session.
#[derive(Debug)]
struct Entry {
    session: Arc<Session>,
    /// The copy answers reads until then (both bounds of the module docs).
    until: Instant,
    /// The session's stored size in bytes.
    bytes: u32,
}

/// Weighs entries by count or by bytes, as the capacity says.
#[derive(Clone, Copy)]
struct Weigher {
    by_bytes: bool,
}

impl quick_cache::Weighter<Slot, Arc<Entry>> for Weigher {
    fn weight(&self, _: &Slot, entry: &Arc<Entry>) -> u64 {
        if self.by_bytes {
            u64::from(entry.bytes) + ENTRY_OVERHEAD
        } else {
            1
        }
    }
}

/// Why the cache was emptied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// A connection was re-established: tracking had to be enabled again.
    Reconnect,
    /// The cluster's slots moved.
    Topology,
    /// Invalidations came faster than they were read, and some were lost.
    Lagged,
    /// The storage was closed.
    Close,
}

/// The cache's counters, read by [`NearCache::stats`].
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    fills_dropped: AtomicU64,
    invalidations: AtomicU64,
    forgotten: AtomicU64,
    flush_reconnect: AtomicU64,
    flush_topology: AtomicU64,
    flush_lagged: AtomicU64,
    flush_close: AtomicU64,
    tracking_refused: AtomicU64,
}

/// What the local cache did since the storage was built: the counters a
/// metrics layer exports. Read with `RedisStorage::cache_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered from a local copy.
    pub hits: u64,
    /// Reads that went to Redis while the cache was on.
    pub misses: u64,
    /// Copies stored after a read or a write.
    pub fills: u64,
    /// Copies not stored because an invalidation or a flush came while
    /// their read was in flight.
    pub fills_dropped: u64,
    /// Invalidations the server sent for session keys.
    pub invalidations: u64,
    /// Copies dropped (with their fills in flight) around this client's own
    /// writes of the session.
    pub forgotten: u64,
    /// Flushes after a reconnect (tracking re-enabled).
    pub flushes_reconnect: u64,
    /// Flushes after the cluster's slots moved.
    pub flushes_topology: u64,
    /// Flushes after invalidations were lost (the channel lagged).
    pub flushes_lagged: u64,
    /// Flushes when the storage was closed.
    pub flushes_close: u64,
    /// Times the server refused `CLIENT TRACKING` (the storage then runs
    /// uncached).
    pub tracking_refused: u64,
    /// Sessions cached now.
    pub entries: u64,
    /// Their stored size in bytes, plus a fixed overhead per entry.
    pub bytes: u64,
}

impl CacheStats {
    /// Sets the `metrics` facade's cache figures to these (counters with
    /// `absolute`, since these are running totals): see `docs/metrics.md`.
    pub(crate) fn record(&self) {
        let counters = [
            ("session_cache_hits_total", self.hits),
            ("session_cache_misses_total", self.misses),
            ("session_cache_fills_total", self.fills),
            ("session_cache_fills_dropped_total", self.fills_dropped),
            ("session_cache_invalidations_total", self.invalidations),
            ("session_cache_forgotten_total", self.forgotten),
            (
                "session_cache_tracking_refused_total",
                self.tracking_refused,
            ),
        ];
        for (name, value) in counters {
            metrics::counter!(name, "backend" => "redis").absolute(value);
        }
        for (cause, value) in [
            ("reconnect", self.flushes_reconnect),
            ("topology", self.flushes_topology),
            ("lagged", self.flushes_lagged),
            ("close", self.flushes_close),
        ] {
            metrics::counter!("session_cache_flushes_total", "backend" => "redis", "cause" => cause)
                .absolute(value);
        }
        metrics::gauge!("session_cache_entries", "backend" => "redis").set(self.entries as f64);
        metrics::gauge!("session_cache_bytes", "backend" => "redis").set(self.bytes as f64);
    }
}

/// A fill's claim, taken before its read or write is sent: see "The fill
/// race" in the module documentation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    /// The slot the copy goes to.
    slot: Slot,
    stripe: usize,
    counter: u64,
    epoch: u64,
    sent: Instant,
}

impl Ticket {
    /// When the read or write that fills was sent.
    pub(crate) fn sent(&self) -> Instant {
        self.sent
    }
}

/// The local cache of one storage.
pub(crate) struct NearCache {
    entries: quick_cache::sync::Cache<Slot, Arc<Entry>, Weigher>,
    /// Invalidation counters, one per stripe of ids.
    stripes: Box<[Mutex<u64>]>,
    /// Bumped by every flush.
    epoch: AtomicU64,
    /// Whether tracking is known to be on for every connection: fills are
    /// stored only then.
    armed: AtomicBool,
    /// Whether the server refused tracking (warned about once).
    refused: AtomicBool,
    max_staleness: Duration,
    mode: TrackingMode,
    counters: Counters,
}

impl NearCache {
    pub(crate) fn new(config: &CacheConfig) -> Self {
        let (items, weight, by_bytes) = match config.capacity() {
            CacheCapacity::Entries(entries) => {
                let entries = entries.get();
                (
                    usize::try_from(entries).unwrap_or(usize::MAX),
                    entries,
                    false,
                )
            }
            CacheCapacity::Bytes(bytes) => {
                let bytes = bytes.get();
                let items = bytes / (ENTRY_OVERHEAD + 256);
                (
                    usize::try_from(items.max(1)).unwrap_or(usize::MAX),
                    bytes,
                    true,
                )
            }
        };
        Self {
            entries: quick_cache::sync::Cache::with_weighter(items, weight, Weigher { by_bytes }),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            epoch: AtomicU64::new(0),
            armed: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            max_staleness: config.max_staleness(),
            mode: config.mode(),
            counters: Counters::default(),
        }
    }

    /// How invalidations arrive.
    pub(crate) fn mode(&self) -> TrackingMode {
        self.mode
    }

    /// Whether a write through this client may leave its result as the
    /// copy. Only in broadcast mode: in tracking mode the server stops
    /// tracking a key for the client that wrote it (`NOLOOP` or not), so a
    /// copy must come from a read, which tracks the key again.
    pub(crate) fn writes_through(&self) -> bool {
        self.mode == TrackingMode::Broadcast
    }

    /// The copy of `id`, if one may answer a read now. A miss is counted by
    /// [`note_miss`](Self::note_miss) when the read goes to Redis: the
    /// manager looks a session up before it calls the storage's read, which
    /// looks again.
    pub(crate) fn lookup(&self, slot: &Slot) -> Option<Arc<Session>> {
        let entry = self
            .entries
            .get(slot)
            .filter(|entry| entry.until > Instant::now())?;
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry.session.clone())
    }

    /// A read found no copy and goes to Redis.
    pub(crate) fn note_miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Claims a fill of `id` before its command is sent; `None` while the
    /// cache is disarmed.
    pub(crate) fn ticket(&self, slot: Slot) -> Option<Ticket> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let stripe = stripe_of(slot);
        let counter = *self.lock(stripe);
        Some(Ticket {
            slot,
            stripe,
            counter,
            epoch,
            sent: Instant::now(),
        })
    }

    /// Stores `session` as the copy of its id, answering reads until
    /// `until` (capped by the staleness bound), unless an invalidation or a
    /// flush came since `ticket` was taken.
    pub(crate) fn fill(&self, ticket: Ticket, session: Arc<Session>, until: Instant, bytes: usize) {
        let until = until.min(ticket.sent + self.max_staleness);
        if until <= Instant::now() {
            return;
        }
        let stripe = self.lock(ticket.stripe);
        if *stripe != ticket.counter
            || self.epoch.load(Ordering::Acquire) != ticket.epoch
            || !self.armed.load(Ordering::Acquire)
        {
            drop(stripe);
            self.counters.fills_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let entry = Arc::new(Entry {
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            session,
            until,
        });
        self.entries.insert(ticket.slot, entry);
        drop(stripe);
        self.counters.fills.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops the copy of `id` and every fill of it in flight: the server
    /// said the key changed.
    pub(crate) fn invalidate(&self, slot: Slot) {
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        self.drop_copy(slot);
    }

    /// Drops the copy of `id` and every fill of it in flight: this client
    /// is writing it.
    pub(crate) fn forget(&self, slot: Slot) {
        self.counters.forgotten.fetch_add(1, Ordering::Relaxed);
        self.drop_copy(slot);
    }

    /// Drops the copy and voids the fills in flight of `id`'s stripe: the
    /// epoch moves on, so a reply that was read before now is never stored.
    fn drop_copy(&self, slot: Slot) {
        let mut stripe = self.lock(stripe_of(slot));
        *stripe = stripe.wrapping_add(1);
        self.entries.remove(&slot);
    }

    /// Drops every copy and every fill in flight.
    pub(crate) fn flush(&self, cause: Flush) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // A fill that read the old epoch holds its stripe's lock until it
        // has stored its copy: passing every lock once waits for those, so
        // that the clear below removes what they stored.
        for stripe in 0..STRIPES {
            drop(self.lock(stripe));
        }
        self.entries.clear();
        let counter = match cause {
            Flush::Reconnect => &self.counters.flush_reconnect,
            Flush::Topology => &self.counters.flush_topology,
            Flush::Lagged => &self.counters.flush_lagged,
            Flush::Close => &self.counters.flush_close,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops storing fills (until [`arm`](Self::arm)) and flushes: a
    /// connection may have come back without tracking.
    pub(crate) fn disarm(&self, cause: Flush) {
        self.armed.store(false, Ordering::Release);
        self.flush(cause);
    }

    /// Tracking is on for every connection: fills may be stored again.
    pub(crate) fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    /// Whether fills are stored now.
    pub(crate) fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    /// Records that the server refused tracking; returns whether this is
    /// the first time (the one time to warn).
    pub(crate) fn note_refused(&self) -> bool {
        self.counters
            .tracking_refused
            .fetch_add(1, Ordering::Relaxed);
        !self.refused.swap(true, Ordering::AcqRel)
    }

    /// The counters, and the cache's size now.
    pub(crate) fn stats(&self) -> CacheStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        let entries = self.entries.len() as u64;
        let bytes = self
            .entries
            .iter()
            .map(|(_, entry)| u64::from(entry.bytes) + ENTRY_OVERHEAD)
            .sum();
        CacheStats {
            hits: read(&counters.hits),
            misses: read(&counters.misses),
            fills: read(&counters.fills),
            fills_dropped: read(&counters.fills_dropped),
            invalidations: read(&counters.invalidations),
            forgotten: read(&counters.forgotten),
            flushes_reconnect: read(&counters.flush_reconnect),
            flushes_topology: read(&counters.flush_topology),
            flushes_lagged: read(&counters.flush_lagged),
            flushes_close: read(&counters.flush_close),
            tracking_refused: read(&counters.tracking_refused),
            entries,
            bytes,
        }
    }

    fn lock(&self, stripe: usize) -> MutexGuard<'_, u64> {
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The stripe of a slot: its low bits, random for generated ids and for
/// hashes.
fn stripe_of(slot: Slot) -> usize {
    (slot.0 % STRIPES as u128) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::SessionId;

    /// The slot of a session in a cache without hashed ids.
    fn slot(session: &Session) -> Slot {
        Slot(session.id().as_uuid().as_u128())
    }
    use std::num::NonZeroU64;

    fn cache(entries: u64) -> NearCache {
        let config = CacheConfig::new(
            CacheCapacity::Entries(NonZeroU64::new(entries).unwrap()),
            Duration::from_secs(10),
        )
        .unwrap();
        let cache = NearCache::new(&config);
        cache.arm();
        cache
    }

    fn session() -> Arc<Session> {
        Arc::new(Session::new(
            SessionId::new(),
            session_core::SessionType::Mcp,
        ))
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn a_fill_answers_until_its_bound() {
        let cache = cache(10);
        let session = session();
        let id = slot(&session);
        assert!(cache.lookup(&id).is_none());
        cache.note_miss();
        let ticket = cache.ticket(id).unwrap();
        cache.fill(
            ticket,
            session.clone(),
            Instant::now() + Duration::from_millis(30),
            10,
        );
        assert_eq!(cache.lookup(&id).as_deref(), Some(&*session));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(cache.lookup(&id).is_none(), "the bound passed");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.fills), (1, 1, 1));
    }

    #[tokio::test]
    async fn an_invalidation_during_a_fill_drops_it() {
        let cache = cache(10);
        let session = session();
        let id = slot(&session);
        let ticket = cache.ticket(id).unwrap();
        cache.invalidate(id);
        cache.fill(ticket, session.clone(), later(), 10);
        assert!(cache.lookup(&id).is_none());
        // A flush, too, and a write of this client.
        let ticket = cache.ticket(id).unwrap();
        cache.flush(Flush::Lagged);
        cache.fill(ticket, session.clone(), later(), 10);
        assert!(cache.lookup(&id).is_none());
        let ticket = cache.ticket(id).unwrap();
        cache.forget(id);
        cache.fill(ticket, session.clone(), later(), 10);
        assert!(cache.lookup(&id).is_none());
        let stats = cache.stats();
        assert_eq!((stats.fills, stats.fills_dropped), (0, 3));
        assert_eq!((stats.invalidations, stats.flushes_lagged), (1, 1));
        // The client's own write is counted apart from the server's word.
        assert_eq!(stats.forgotten, 1);
        // A fill with nothing in between is stored.
        let ticket = cache.ticket(id).unwrap();
        cache.fill(ticket, session, later(), 10);
        assert!(cache.lookup(&id).is_some());
    }

    #[tokio::test]
    async fn a_disarmed_cache_stores_nothing() {
        let cache = cache(10);
        let session = session();
        let id = slot(&session);
        let ticket = cache.ticket(id).unwrap();
        cache.fill(ticket, session.clone(), later(), 10);
        cache.disarm(Flush::Reconnect);
        assert!(cache.lookup(&id).is_none(), "the flush emptied it");
        assert!(cache.ticket(id).is_none());
        cache.arm();
        let ticket = cache.ticket(id).unwrap();
        cache.disarm(Flush::Topology);
        cache.arm();
        cache.fill(ticket, session, later(), 10);
        assert!(
            cache.lookup(&id).is_none(),
            "a ticket from before a flush is void"
        );
    }

    #[tokio::test]
    async fn the_staleness_bound_caps_every_copy() {
        let config = CacheConfig::new(
            CacheCapacity::Entries(NonZeroU64::new(4).unwrap()),
            Duration::from_millis(20),
        )
        .unwrap();
        let cache = NearCache::new(&config);
        cache.arm();
        let session = session();
        let ticket = cache.ticket(slot(&session)).unwrap();
        cache.fill(ticket, session.clone(), later(), 10);
        assert!(cache.lookup(&slot(&session)).is_some());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(cache.lookup(&slot(&session)).is_none());
    }

    #[tokio::test]
    async fn the_capacity_bounds_the_entries() {
        let cache = cache(100);
        for _ in 0..1_000 {
            let session = session();
            let ticket = cache.ticket(slot(&session)).unwrap();
            cache.fill(ticket, session, later(), 100);
        }
        let stats = cache.stats();
        assert!(stats.entries <= 100, "{stats:?}");
        assert!(stats.entries > 0, "{stats:?}");
        assert_eq!(stats.bytes, stats.entries * (100 + ENTRY_OVERHEAD));
    }

    #[tokio::test]
    async fn a_byte_capacity_bounds_the_bytes() {
        let config = CacheConfig::new(
            CacheCapacity::Bytes(NonZeroU64::new(100_000).unwrap()),
            Duration::from_secs(10),
        )
        .unwrap();
        let cache = NearCache::new(&config);
        cache.arm();
        for _ in 0..1_000 {
            let session = session();
            let ticket = cache.ticket(slot(&session)).unwrap();
            cache.fill(ticket, session, later(), 1_000);
        }
        let stats = cache.stats();
        assert!(stats.bytes <= 100_000, "{stats:?}");
        assert!(stats.entries > 0, "{stats:?}");
    }
}
