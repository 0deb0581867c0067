//! The limits on session creation: a cap on the sessions one owner holds,
//! and a rate of anonymous creations per client address, so that a flood
//! of requests cannot fill the store.
//!
//! The cap is checked when a session becomes an owner's ([`Session::login`]
//! (crate::Session::login)), with one listing of the owner's sessions; two
//! logins racing past the check together may overshoot it by one each. The
//! rate is a GCRA (the `governor` crate) per address, kept in this
//! replica's memory: behind a balancer each replica allows the rate, so the
//! fleet allows it times the replicas. Only anonymous creations count; a
//! request that reads or changes an existing session never does.

use std::net::{IpAddr, Ipv4Addr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use session_core::{ConfigError, Manager, Owner, Storage};

use crate::SessionError;

/// The limits a [`SessionLayer`](crate::SessionLayer) enforces; none by
/// default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The most live sessions one owner may hold: a login beyond it is
    /// refused with [`SessionError::OwnerLimit`] (429).
    pub per_owner: Option<NonZeroUsize>,
    /// How fast one client address may create anonymous sessions: a
    /// creation beyond it is refused with [`SessionError::CreationRate`]
    /// (429 with `Retry-After`).
    pub anonymous_creations: Option<Rate>,
}

impl Limits {
    /// These limits with a cap of `cap` sessions per owner.
    pub fn per_owner(mut self, cap: NonZeroUsize) -> Self {
        self.per_owner = Some(cap);
        self
    }

    /// These limits with anonymous creations at `rate` per client address.
    pub fn anonymous_creations(mut self, rate: Rate) -> Self {
        self.anonymous_creations = Some(rate);
        self
    }
}

/// A rate: `burst` at once, then one more every `period / burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    burst: NonZeroU32,
    period: Duration,
}

impl Rate {
    /// `count` per `period`, all of them allowed at once.
    pub fn per(count: NonZeroU32, period: Duration) -> Result<Self, ConfigError> {
        if period.is_zero() || (period / count.get()).is_zero() {
            return Err(ConfigError::new(
                "limits.anonymous_creations",
                "the period must be longer than zero, and than a nanosecond per creation",
            ));
        }
        Ok(Self {
            burst: count,
            period,
        })
    }

    fn quota(self) -> Quota {
        // `per` made sure the replenishment interval is not zero.
        Quota::with_period(self.period / self.burst.get())
            .unwrap_or_else(|| Quota::per_second(self.burst))
            .allow_burst(self.burst)
    }
}

/// How many rate checks go between two sweeps of addresses whose state is
/// back to full: the limiter's memory stays bounded by the addresses seen
/// recently.
const SWEEP_EVERY: u64 = 4096;

/// The limits, ready to check.
pub(crate) struct Limiter {
    per_owner: Option<NonZeroUsize>,
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
}

impl Limiter {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            per_owner: limits.per_owner,
            rate: limits
                .anonymous_creations
                .map(|rate| RateLimiter::keyed(rate.quota())),
            checks: AtomicU64::new(0),
        }
    }

    /// Whether `address` may create one more anonymous session now. A
    /// request whose address is unknown (a server without `ConnectInfo`)
    /// counts with every other such request, under one key.
    pub(crate) fn allow_anonymous(&self, address: Option<IpAddr>) -> Result<(), SessionError> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
        let address = address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        rate.check_key(&address).map_err(|not_until| {
            tracing::warn!(
                "anonymous session creation refused: rate exceeded for a client address"
            );
            SessionError::CreationRate {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }
        })
    }

    /// Whether `owner` may hold one more session.
    pub(crate) async fn allow_owner<S: Storage>(
        &self,
        manager: &Manager<S>,
        owner: &Owner,
    ) -> Result<(), SessionError> {
        let Some(cap) = self.per_owner else {
            return Ok(());
        };
        let held = manager.list_owned(owner).await?.len();
        if held >= cap.get() {
            tracing::warn!(held, "login refused: the owner is at its cap of sessions");
            return Err(SessionError::OwnerLimit { held });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_allows_its_burst_then_says_when_to_retry() {
        let rate = Rate::per(NonZeroU32::new(3).unwrap(), Duration::from_secs(60)).unwrap();
        let limiter = Limiter::new(Limits::default().anonymous_creations(rate));
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            limiter.allow_anonymous(Some(one)).unwrap();
        }
        match limiter.allow_anonymous(Some(one)) {
            Err(SessionError::CreationRate { retry_after }) => {
                assert!(retry_after > Duration::from_secs(15), "{retry_after:?}");
                assert!(retry_after <= Duration::from_secs(20), "{retry_after:?}");
            }
            other => panic!("{other:?}"),
        }
        // Another address has its own allowance.
        limiter.allow_anonymous(Some(two)).unwrap();
    }

    #[test]
    fn no_limits_allow_everything_and_bad_rates_are_refused() {
        let limiter = Limiter::new(Limits::default());
        for _ in 0..1000 {
            limiter.allow_anonymous(None).unwrap();
        }
        let error = Rate::per(NonZeroU32::new(1).unwrap(), Duration::ZERO).unwrap_err();
        assert_eq!(error.field(), Some("limits.anonymous_creations"));
    }
}
