//! Wall-clock time derived from Tokio's clock.
//!
//! Session timestamps are wall-clock times (they are stored and compared
//! across processes), but tests must be able to move time with
//! `tokio::time::pause` and `advance`, which only move Tokio's monotonic
//! clock. So the wall clock used for sessions is the system time captured
//! once per process plus the monotonic time elapsed since, read from Tokio.
//! In production the two agree to within the drift of the monotonic clock
//! against the system clock since the process started (NTP slews, not steps,
//! so that is small); in tests, advancing Tokio's clock advances session time
//! with it.

use std::sync::OnceLock;
use std::time::{Instant as StdInstant, SystemTime};

static BASE: OnceLock<(SystemTime, StdInstant)> = OnceLock::new();

/// The current time for session timestamps: see the module documentation.
pub fn now() -> SystemTime {
    let (wall, mono) = *BASE.get_or_init(|| (SystemTime::now(), StdInstant::now()));
    let now = tokio::time::Instant::now().into_std();
    match now.checked_duration_since(mono) {
        Some(elapsed) => wall + elapsed,
        // A paused Tokio clock can stand before the base was captured.
        None => wall - mono.duration_since(now),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn advancing_tokio_time_advances_session_time() {
        let before = super::now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let after = super::now();
        let elapsed = after.duration_since(before).unwrap();
        assert!(elapsed >= Duration::from_secs(3600));
        assert!(elapsed < Duration::from_secs(3601));
    }
}
