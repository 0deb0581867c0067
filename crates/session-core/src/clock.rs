//! Where session timestamps come from.
//!
//! A session's `created_at` and `updated_at` are wall-clock times: they are
//! stored, compared across replicas, and `created_at` plus the maximum
//! lifetime is an absolute deadline that every replica must compute alike.
//! So the manager reads them from a [`Clock`], by default the system clock
//! ([`SystemClock`]), at the moment of each operation: never a time captured
//! at start-up and carried forward by a monotonic clock, which would leave a
//! replica's timestamps off by however far the system clock was stepped
//! (an NTP correction, a resumed VM) until the process restarts.
//!
//! What a step of the system clock does, then: timestamps written after it
//! follow the new time at once. A step forward brings every session closer
//! to its maximum lifetime by the size of the step, on every replica at
//! once; a step back gives it that much longer. `updated_at` may be earlier
//! than a previous `updated_at` (or than `created_at`) after a step back:
//! the timestamps are what the clock said, not a sequence. Sliding TTLs are
//! not affected at all: they are durations, measured by the storage (Redis
//! key TTLs, or Tokio's monotonic clock for local storage).
//!
//! Tests inject a [`ManualClock`] and move it by hand.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A source of wall-clock time for session timestamps.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system clock: [`SystemTime::now`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to: for tests.
///
/// Clones share one time, so a test can keep a clone and move the clock of a
/// manager it handed the other to.
#[derive(Clone, Debug)]
pub struct ManualClock {
    // A `std` mutex: it is held for a copy of the time, never across an await.
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock standing at `now`.
    pub fn new(now: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// A clock standing at the current system time.
    pub fn starting_now() -> Self {
        Self::new(SystemTime::now())
    }

    /// Sets the time, forward or back (a clock step).
    pub fn set(&self, now: SystemTime) {
        *self.now.lock().unwrap_or_else(|poison| poison.into_inner()) = now;
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|poison| poison.into_inner());
        *now += by;
    }

    /// Moves the time back by `by` (a backward step of the system clock).
    pub fn rewind(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|poison| poison.into_inner());
        *now -= by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = ManualClock::new(start);
        let other = clock.clone();
        assert_eq!(clock.now(), start);
        other.advance(Duration::from_secs(10));
        assert_eq!(clock.now(), start + Duration::from_secs(10));
        clock.rewind(Duration::from_secs(30));
        assert_eq!(other.now(), start - Duration::from_secs(20));
        clock.set(start);
        assert_eq!(other.now(), start);
    }
}
