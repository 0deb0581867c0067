//! The expiry policy: a sliding TTL and an optional absolute lifetime.

use std::time::{Duration, SystemTime};

use crate::{ConfigError, Result, Session};

/// A validated session time-to-live: at least 1 ms, at most [`Ttl::MAX`].
///
/// Durations cannot be negative in Rust, so the negative TTLs the Go package
/// must check for are rejected where they can still arise: parsing
/// configuration and [`Ttl::from_secs_f64`]. Every invalid TTL is the same
/// error, [`Error::Config`](crate::Error::Config) for the setting `ttl`,
/// whether it came from code or from a configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

impl Ttl {
    /// The longest TTL accepted: about 290 million years would overflow
    /// Redis's millisecond expiry arithmetic; a hundred years will not.
    pub const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    /// The shortest TTL: one millisecond, the resolution of Redis expiry.
    pub const MIN: Duration = Duration::from_millis(1);

    /// Validates a TTL.
    pub fn new(ttl: Duration) -> Result<Self> {
        Self::checked(ttl).ok_or_else(|| {
            ConfigError::new(
                "ttl",
                format!("must be between 1 ms and 100 years, got {ttl:?}"),
            )
            .into()
        })
    }

    /// A TTL of whole seconds.
    pub fn from_secs(secs: u64) -> Result<Self> {
        Self::new(Duration::from_secs(secs))
    }

    /// A TTL of fractional seconds; negative, NaN and infinite values are
    /// rejected.
    pub fn from_secs_f64(secs: f64) -> Result<Self> {
        let ttl = Duration::try_from_secs_f64(secs).map_err(|_| {
            ConfigError::new(
                "ttl",
                format!("must be a positive number of seconds, got {secs}"),
            )
        })?;
        Self::new(ttl)
    }

    /// The TTL, if `ttl` is within bounds.
    const fn checked(ttl: Duration) -> Option<Self> {
        if ttl.as_nanos() < Self::MIN.as_nanos() || ttl.as_nanos() > Self::MAX.as_nanos() {
            None
        } else {
            Some(Self(ttl))
        }
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<Duration> for Ttl {
    type Error = crate::Error;

    fn try_from(ttl: Duration) -> Result<Self> {
        Self::new(ttl)
    }
}

impl From<Ttl> for Duration {
    fn from(ttl: Ttl) -> Self {
        ttl.0
    }
}

/// How long a session lives: the policy a manager applies.
///
/// The sliding `ttl` is pushed forward by every read and write. The optional
/// `max_lifetime` is absolute, counted from the session's creation time: a
/// session older than it is gone however recently it was used. The manager
/// turns the policy into one TTL per storage call ([`Expiry::ttl_for`]), so
/// storages never see the policy and every backend applies the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    ttl: Ttl,
    max_lifetime: Option<Duration>,
}

impl Expiry {
    /// A sliding TTL with no absolute lifetime.
    pub const fn new(ttl: Ttl) -> Self {
        Self {
            ttl,
            max_lifetime: None,
        }
    }

    /// Adds an absolute lifetime on top of the sliding TTL; it must be at
    /// least 1 ms.
    pub fn with_max_lifetime(mut self, max_lifetime: Option<Duration>) -> Result<Self> {
        if let Some(max) = max_lifetime
            && max < Ttl::MIN
        {
            return Err(ConfigError::new(
                "max_lifetime",
                format!("must be at least 1 ms, got {max:?}"),
            )
            .into());
        }
        self.max_lifetime = max_lifetime;
        Ok(self)
    }

    /// The sliding TTL.
    pub const fn ttl(&self) -> Ttl {
        self.ttl
    }

    /// The absolute lifetime, if any.
    pub const fn max_lifetime(&self) -> Option<Duration> {
        self.max_lifetime
    }

    /// The TTL to give `session` when it is read or written at `now`: the
    /// sliding TTL, capped by what remains of its lifetime. `None` when the
    /// session has outlived its maximum lifetime (or has less than 1 ms of it
    /// left, which Redis cannot express) and must be treated as gone, the
    /// same on every backend.
    pub fn ttl_for(&self, session: &Session, now: SystemTime) -> Option<Ttl> {
        let Some(max) = self.max_lifetime else {
            return Some(self.ttl);
        };
        let deadline = session.created_at() + max;
        let remaining = deadline.duration_since(now).ok()?;
        Ttl::checked(remaining.min(self.ttl.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, SessionId, SessionType};

    fn field_of(result: Result<Ttl>) -> Option<String> {
        match result {
            Err(Error::Config(error)) => error.field().map(str::to_owned),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn zero_negative_and_huge_ttls_are_one_config_error() {
        for result in [
            Ttl::new(Duration::ZERO),
            Ttl::new(Duration::from_micros(999)),
            Ttl::from_secs(0),
            Ttl::from_secs_f64(-1.0),
            Ttl::from_secs_f64(f64::NAN),
            Ttl::new(Duration::MAX),
        ] {
            assert_eq!(field_of(result).as_deref(), Some("ttl"));
        }
        assert_eq!(Ttl::from_secs(30).unwrap().get(), Duration::from_secs(30));
        assert_eq!(Ttl::new(Ttl::MAX).unwrap().get(), Ttl::MAX);
    }

    #[test]
    fn ttl_for_caps_by_the_remaining_lifetime() {
        let ttl = Ttl::from_secs(60).unwrap();
        let session = Session::new(SessionId::new(), SessionType::Mcp);
        let created = session.created_at();
        let plain = Expiry::new(ttl);
        assert_eq!(
            plain.ttl_for(&session, created + Duration::from_secs(1_000_000)),
            Some(ttl)
        );
        let capped = plain
            .with_max_lifetime(Some(Duration::from_secs(100)))
            .unwrap();
        assert_eq!(capped.ttl_for(&session, created), Some(ttl));
        assert_eq!(
            capped.ttl_for(&session, created + Duration::from_secs(70)),
            Some(Ttl::from_secs(30).unwrap())
        );
        assert_eq!(
            capped.ttl_for(&session, created + Duration::from_secs(100)),
            None
        );
        assert_eq!(
            capped.ttl_for(
                &session,
                created + Duration::from_secs(100) - Duration::from_micros(500)
            ),
            None,
            "under a millisecond left counts as gone"
        );
        assert!(plain.with_max_lifetime(Some(Duration::ZERO)).is_err());
    }
}
