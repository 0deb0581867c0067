//! A concurrent in-memory map whose entries expire: what [`LocalStorage`]
//! keeps sessions in.
//!
//! [`LocalStorage`]: crate::LocalStorage
//!
//! # Layout
//!
//! The map knows nothing about sessions. It holds values under keys, each
//! with an expiry deadline, and answers the questions a session store asks:
//! insert if absent, replace if present, read and push the deadline forward,
//! remove, sweep everything that expired, and count what is alive. It is
//! public because it is useful on its own: the Redis backend keeps its
//! refresh bookkeeping in one.
//!
//! # Concurrency
//!
//! The map is a [`DashMap`]: a fixed number of shards, each a hash map behind
//! its own reader-writer lock. Reads take a shard's read lock, so reads on
//! different cores never contend on a single lock. The deadline of an entry
//! lives in an [`AtomicU64`] inside the entry, so a read can push it forward
//! while holding only the read lock.
//!
//! Deadlines only ever move forward on a read: two readers of one entry
//! each compute `now + ttl` and store the later of theirs and the current
//! deadline (`fetch_max`). A plain store would let a reader that was
//! descheduled between reading the clock and storing overwrite the later
//! deadline another reader had just written, and the entry would expire
//! early by the time the first reader slept. Only [`ExpiringMap::cap_deadline`]
//! moves a deadline back, and only down to an absolute cap.
//!
//! The sweep finds expired entries under read locks, then removes each one
//! under its shard's write lock, checking its deadline again there. A read
//! that pushed a deadline forward either finished before the sweep took the
//! lock (and the sweep sees the new deadline) or starts after the sweep
//! released it (and finds the entry only if it was still alive). So the sweep
//! can never evict an entry that was read or written within its TTL, even when
//! both run at the same time; `tests/concurrent_sweep.rs` hammers exactly
//! that. Each write-lock hold covers one entry and frees nothing (removed
//! values are dropped after the lock is released), so a sweep of a million
//! entries never stalls readers for more than a moment.
//!
//! # Time
//!
//! Deadlines are [`tokio::time::Instant`]s, so tests that pause Tokio's clock
//! (`tokio::time::pause`) drive expiry deterministically.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::time::Instant;

/// The number of shards. A power of two well above the core count keeps
/// write-lock contention low, and keeps short the read-lock walk of one shard
/// in the sweep's first phase, during which writers of that shard wait (a
/// million entries over 256 shards is about four thousand per shard).
const SHARDS: usize = 256;

/// A concurrent map whose entries carry an expiry deadline.
///
/// Every operation that writes or reads an entry takes a `ttl` and moves the
/// entry's deadline to `now + ttl`: this is the sliding expiry of a session.
/// An entry whose deadline has passed is treated as absent by every operation
/// at once, even before [`ExpiringMap::sweep`] physically removes it.
pub struct ExpiringMap<K, V> {
    entries: DashMap<K, Slot<V>>,
    /// The instant that deadlines are measured from, in nanoseconds, so that a
    /// deadline fits in an `AtomicU64`.
    epoch: Instant,
}

struct Slot<V> {
    value: V,
    /// Nanoseconds after `epoch` at which the entry expires.
    deadline: AtomicU64,
}

impl<K: Eq + Hash, V> std::fmt::Debug for ExpiringMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are session ids, which act as bearer credentials for a
        // session: they are deliberately not printed.
        f.debug_struct("ExpiringMap")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl<K, V> Default for ExpiringMap<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> ExpiringMap<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    /// Creates an empty map.
    pub fn new() -> Self {
        Self {
            entries: DashMap::with_shard_amount(SHARDS),
            epoch: Instant::now(),
        }
    }

    /// Converts an instant to nanoseconds after the epoch. Instants before the
    /// epoch clamp to zero, which only ever makes an entry look older.
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn deadline_after(&self, now: Instant, ttl: Duration) -> u64 {
        self.nanos(now)
            .saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
    }

    fn slot(&self, value: V, now: Instant, ttl: Duration) -> Slot<V> {
        Slot {
            value,
            deadline: AtomicU64::new(self.deadline_after(now, ttl)),
        }
    }

    /// Inserts `value` unless a live entry already holds `key`; returns whether
    /// it inserted. An expired entry that the sweep has not removed yet counts
    /// as absent and is replaced.
    pub fn insert_if_absent(&self, key: K, value: V, ttl: Duration) -> bool {
        // The entry API holds the shard's write lock from the check to the
        // insert, which is what makes this an atomic insert-if-absent.
        match self.entries.entry(key) {
            Entry::Occupied(mut occupied) => {
                let now = Instant::now();
                if occupied.get().deadline.load(Ordering::Acquire) > self.nanos(now) {
                    return false;
                }
                occupied.insert(self.slot(value, now, ttl));
                true
            }
            Entry::Vacant(vacant) => {
                vacant.insert(self.slot(value, Instant::now(), ttl));
                true
            }
        }
    }

    /// Replaces the value of a live entry; returns whether it did. An absent or
    /// expired key is left absent, so a write can never bring back an entry
    /// that was removed or that expired.
    pub fn replace_if_present<Q>(&self, key: &Q, value: V, ttl: Duration) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(mut slot) = self.entries.get_mut(key) else {
            return false;
        };
        let now = Instant::now();
        if slot.deadline.load(Ordering::Acquire) <= self.nanos(now) {
            // Removing it here would need the key by value; the sweep will.
            return false;
        }
        *slot = self.slot(value, now, ttl);
        true
    }

    /// Replaces the value of a live entry with what `replace` makes of it, in
    /// one step under the shard's write lock: no other write of the entry
    /// can land between the read and the write. `replace` may refuse with an
    /// error, and the entry is left as it was. `None` when the key is absent
    /// or expired (`replace` does not run).
    pub fn replace_with<Q, E>(
        &self,
        key: &Q,
        ttl: Duration,
        replace: impl FnOnce(&V) -> Result<V, E>,
    ) -> Option<Result<V, E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut slot = self.entries.get_mut(key)?;
        let now = Instant::now();
        if slot.deadline.load(Ordering::Acquire) <= self.nanos(now) {
            return None;
        }
        Some(replace(&slot.value).inspect(|value| {
            *slot = self.slot(value.clone(), now, ttl);
        }))
    }

    /// Inserts or replaces the value under `key` with what `make` makes of
    /// the live value (`None` when there is none), in one step under the
    /// shard's write lock. `make` may refuse with an error, and the entry is
    /// left as it was.
    pub fn upsert_with<E>(
        &self,
        key: K,
        ttl: Duration,
        make: impl FnOnce(Option<&V>) -> Result<V, E>,
    ) -> Result<V, E> {
        match self.entries.entry(key) {
            Entry::Occupied(mut occupied) => {
                let now = Instant::now();
                let alive = occupied.get().deadline.load(Ordering::Acquire) > self.nanos(now);
                let value = make(alive.then_some(&occupied.get().value))?;
                occupied.insert(self.slot(value.clone(), now, ttl));
                Ok(value)
            }
            Entry::Vacant(vacant) => {
                let value = make(None)?;
                vacant.insert(self.slot(value.clone(), Instant::now(), ttl));
                Ok(value)
            }
        }
    }

    /// Removes the entry under `key` if it is live and `condition` holds for
    /// its value; returns whether it did.
    pub fn remove_live_if<Q>(&self, key: &Q, condition: impl FnOnce(&V) -> bool) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.nanos(Instant::now());
        self.entries
            .remove_if(key, |_, slot| {
                slot.deadline.load(Ordering::Acquire) > now && condition(&slot.value)
            })
            .is_some()
    }

    /// Removes `key` and returns its value, live or not, with whether it was
    /// live.
    pub fn take<Q>(&self, key: &Q) -> Option<(V, bool)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (_, slot) = self.entries.remove(key)?;
        let alive = slot.deadline.load(Ordering::Acquire) > self.nanos(Instant::now());
        Some((slot.value, alive))
    }

    /// Inserts or replaces the value under `key` unconditionally.
    pub fn upsert(&self, key: K, value: V, ttl: Duration) {
        // The clock is read under the shard's write lock, as in every other
        // write: a writer that read it before taking the lock, and was
        // descheduled in between, would store a deadline older than a write
        // or read that went before it, and the entry would expire early by
        // the time the writer slept.
        match self.entries.entry(key) {
            Entry::Occupied(mut occupied) => {
                occupied.insert(self.slot(value, Instant::now(), ttl));
            }
            Entry::Vacant(vacant) => {
                vacant.insert(self.slot(value, Instant::now(), ttl));
            }
        }
    }

    /// Returns a clone of the live value under `key` and moves its deadline to
    /// `now + ttl`; `None` when the key is absent or expired.
    pub fn get_and_refresh<Q>(&self, key: &Q, ttl: Duration) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.entries.get(key)?;
        // The clock is read while the shard's read lock is held, so a sweep
        // (which needs the write lock) is either entirely before or entirely
        // after this read: see the module documentation.
        self.refresh(&slot, Instant::now(), ttl)
            .then(|| slot.value.clone())
    }

    /// Moves a live slot's deadline to at least `now + ttl`; returns whether
    /// the slot was alive at `now`. `now` is a parameter so that a test can
    /// replay the interleaving of two readers exactly.
    fn refresh(&self, slot: &Slot<V>, now: Instant, ttl: Duration) -> bool {
        if slot.deadline.load(Ordering::Acquire) <= self.nanos(now) {
            return false;
        }
        // Never backwards: a reader that read the clock before another one
        // but stores after it must not undo the later deadline (see
        // "Concurrency" in the module documentation).
        slot.deadline
            .fetch_max(self.deadline_after(now, ttl), Ordering::AcqRel);
        true
    }

    /// Returns a clone of the live value under `key` without touching its
    /// deadline.
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.entries.get(key)?;
        let alive = slot.deadline.load(Ordering::Acquire) > self.nanos(Instant::now());
        alive.then(|| slot.value.clone())
    }

    /// Caps the deadline of a live entry at `now + ttl` if that is earlier than
    /// its current deadline; returns whether the entry is still alive.
    pub fn cap_deadline<Q>(&self, key: &Q, ttl: Duration) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(slot) = self.entries.get(key) else {
            return false;
        };
        let now = Instant::now();
        if slot.deadline.load(Ordering::Acquire) <= self.nanos(now) {
            return false;
        }
        slot.deadline
            .fetch_min(self.deadline_after(now, ttl), Ordering::AcqRel);
        !ttl.is_zero()
    }

    /// Removes `key`; returns whether a live entry was removed. Removing an
    /// absent key is not an error.
    pub fn remove<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.entries.remove(key) {
            Some((_, slot)) => slot.deadline.load(Ordering::Acquire) > self.nanos(Instant::now()),
            None => false,
        }
    }

    /// Removes every entry whose deadline is at or before `before` and returns
    /// their keys.
    ///
    /// The sweep runs in two phases so that no lock is held for long, however
    /// many entries expired. First it walks the shards under their read locks
    /// (readers are never blocked) and notes the keys that look expired. Then
    /// it removes each of them with its own short write-lock hold, checking the
    /// deadline again under that lock: a read that refreshed the entry in
    /// between is seen, so a live entry is never removed. The removed values
    /// are dropped after the lock is released, because freeing a session's
    /// allocations under the lock is what used to stall readers of the shard.
    pub fn sweep(&self, before: Instant) -> Vec<K> {
        self.sweep_entries(before)
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }

    /// [`ExpiringMap::sweep`], returning the removed values with their keys
    /// (for a caller that keeps an index of them). The values are handed out
    /// after every lock is released.
    pub fn sweep_entries(&self, before: Instant) -> Vec<(K, V)> {
        let cutoff = self.nanos(before);
        let expired = |slot: &Slot<V>| slot.deadline.load(Ordering::Acquire) <= cutoff;
        let candidates: Vec<K> = self
            .entries
            .iter()
            .filter(|entry| expired(entry.value()))
            .map(|entry| entry.key().clone())
            .collect();
        let mut removed = Vec::with_capacity(candidates.len());
        for key in candidates {
            // `remove_if` holds the shard's write lock only for this entry;
            // the value it hands back is dropped outside the lock.
            if let Some((key, slot)) = self.entries.remove_if(&key, |_, slot| expired(slot)) {
                removed.push((key, slot.value));
            }
        }
        removed
    }

    /// Counts the live entries. Entries that expired but were not swept yet are
    /// not counted, so the figure is exact at the moment each shard is read.
    pub fn count_live(&self) -> usize {
        let now = self.nanos(Instant::now());
        self.entries
            .iter()
            .filter(|slot| slot.deadline.load(Ordering::Acquire) > now)
            .count()
    }

    /// The number of entries held, including expired ones not yet swept. This
    /// is constant time; [`ExpiringMap::count_live`] is the exact figure.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map holds no entries at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn insert_if_absent_inserts_once() {
        let map = ExpiringMap::new();
        assert!(map.insert_if_absent("a", 1, TTL));
        assert!(!map.insert_if_absent("a", 2, TTL));
        assert_eq!(map.peek("a"), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entry_is_absent_before_the_sweep() {
        let map = ExpiringMap::new();
        map.upsert("a", 1, TTL);
        tokio::time::advance(TTL).await;
        assert_eq!(map.get_and_refresh("a", TTL), None);
        assert_eq!(map.count_live(), 0);
        assert_eq!(map.len(), 1, "the expired entry waits for the sweep");
        // A create may take the place of an expired entry...
        assert!(map.insert_if_absent("a", 2, TTL));
        assert_eq!(map.peek("a"), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn replace_never_revives_an_expired_entry() {
        let map = ExpiringMap::new();
        map.upsert("a", 1, TTL);
        tokio::time::advance(TTL + Duration::from_millis(1)).await;
        assert!(!map.replace_if_present("a", 2, TTL));
        assert_eq!(map.peek("a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_slide_the_deadline() {
        let map = ExpiringMap::new();
        map.upsert("a", 1, TTL);
        for _ in 0..5 {
            tokio::time::advance(TTL / 2).await;
            assert_eq!(map.get_and_refresh("a", TTL), Some(1));
        }
        tokio::time::advance(TTL / 2).await;
        assert!(map.sweep(Instant::now()).is_empty());
        tokio::time::advance(TTL / 2).await;
        assert_eq!(map.sweep(Instant::now()), vec!["a"]);
        assert!(map.is_empty());
    }

    /// A reader that read the clock first but stores its deadline last must
    /// not move the deadline back: the entry would expire early by the time
    /// that reader was descheduled, although another read pushed it forward.
    /// With a plain store of the deadline, this test fails.
    #[tokio::test(start_paused = true)]
    async fn a_late_reader_never_moves_the_deadline_back() {
        let map = ExpiringMap::new();
        map.upsert("a", 1, TTL);
        let early = Instant::now();
        tokio::time::advance(TTL / 2).await;
        let late = Instant::now();
        {
            let slot = map.entries.get("a").unwrap();
            // The reader that came second in time stores first...
            assert!(map.refresh(&slot, late, TTL));
            // ...and the one that read the clock earlier stores after it.
            assert!(map.refresh(&slot, early, TTL));
        }
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert_eq!(
            map.peek("a"),
            Some(1),
            "alive until TTL after the later read"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(map.peek("a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn peek_does_not_slide_the_deadline() {
        let map = ExpiringMap::new();
        map.upsert("a", 1, TTL);
        tokio::time::advance(TTL / 2).await;
        assert_eq!(map.peek("a"), Some(1));
        tokio::time::advance(TTL / 2).await;
        assert_eq!(map.peek("a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn cap_deadline_only_shortens() {
        let map = ExpiringMap::new();
        map.upsert("a", 1, TTL);
        assert!(map.cap_deadline("a", TTL * 2));
        tokio::time::advance(TTL).await;
        assert_eq!(
            map.peek("a"),
            None,
            "a longer cap must not extend the deadline"
        );
        map.upsert("b", 1, TTL);
        assert!(map.cap_deadline("b", Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(map.peek("b"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn remove_reports_liveness_and_is_idempotent() {
        let map = ExpiringMap::new();
        map.upsert("a", 1, TTL);
        assert!(map.remove("a"));
        assert!(!map.remove("a"));
        assert!(!map.remove("never"));
    }

    #[tokio::test(start_paused = true)]
    async fn count_live_is_exact() {
        let map = ExpiringMap::new();
        for i in 0..100 {
            map.upsert(i, i, if i % 2 == 0 { TTL } else { TTL * 2 });
        }
        assert_eq!(map.count_live(), 100);
        tokio::time::advance(TTL).await;
        assert_eq!(map.count_live(), 50);
        map.clear();
        assert_eq!(map.count_live(), 0);
    }
}
