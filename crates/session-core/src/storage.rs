//! The storage contract, and the in-memory implementation.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use session_local::ExpiringMap;
use tokio::time::Instant;

use crate::{Error, Result, Session, SessionId};

/// A validated session time-to-live: never zero.
///
/// Durations cannot be negative in Rust, so the negative TTLs the Go package
/// must check for are rejected where they can still arise: parsing
/// configuration and [`Ttl::from_secs_f64`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

impl Ttl {
    /// The longest TTL accepted: about 290 million years would overflow
    /// Redis's millisecond expiry arithmetic; a hundred years will not.
    pub const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    /// Validates a TTL: it must be at least one millisecond (the resolution of
    /// Redis expiry) and at most [`Ttl::MAX`].
    pub fn new(ttl: Duration) -> Result<Self> {
        if ttl < Duration::from_millis(1) {
            return Err(Error::InvalidInput(format!(
                "TTL must be at least 1 ms, got {ttl:?}"
            )));
        }
        if ttl > Self::MAX {
            return Err(Error::InvalidInput(format!(
                "TTL must be at most 100 years, got {ttl:?}"
            )));
        }
        Ok(Self(ttl))
    }

    /// A TTL of whole seconds.
    pub fn from_secs(secs: u64) -> Result<Self> {
        Self::new(Duration::from_secs(secs))
    }

    /// A TTL of fractional seconds; negative, NaN and infinite values are
    /// rejected.
    pub fn from_secs_f64(secs: f64) -> Result<Self> {
        let ttl = Duration::try_from_secs_f64(secs).map_err(|_| {
            Error::InvalidInput(format!(
                "TTL must be a positive number of seconds, got {secs}"
            ))
        })?;
        Self::new(ttl)
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<Duration> for Ttl {
    type Error = Error;

    fn try_from(ttl: Duration) -> Result<Self> {
        Self::new(ttl)
    }
}

impl From<Ttl> for Duration {
    fn from(ttl: Ttl) -> Self {
        ttl.0
    }
}

/// How long a stored session lives: the policy a manager passes to every
/// storage call.
///
/// The sliding `ttl` is pushed forward by every read and write. The optional
/// `max_lifetime` is absolute, counted from the session's creation time: a
/// session older than it is gone however recently it was used, and no backend
/// keeps it past that point (a Redis key's TTL is capped to the remaining
/// lifetime). Passing the policy with each call, instead of configuring each
/// storage with it, keeps storages policy-free and guarantees that the TTL the
/// manager was given is the TTL every backend applies.
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

    /// Adds an absolute lifetime on top of the sliding TTL.
    pub fn with_max_lifetime(mut self, max_lifetime: Option<Duration>) -> Result<Self> {
        if let Some(max) = max_lifetime
            && max < Duration::from_millis(1)
        {
            return Err(Error::InvalidInput(format!(
                "max_lifetime must be at least 1 ms, got {max:?}"
            )));
        }
        self.max_lifetime = max_lifetime;
        Ok(self)
    }

    /// The sliding TTL.
    pub const fn ttl(&self) -> Duration {
        self.ttl.0
    }

    /// The absolute lifetime, if any.
    pub const fn max_lifetime(&self) -> Option<Duration> {
        self.max_lifetime
    }

    /// The TTL to give `session` when it is read or written at `now`: the
    /// sliding TTL, capped by what remains of its lifetime. `None` when the
    /// session has outlived its maximum lifetime and must be treated as gone.
    pub fn ttl_for(&self, session: &Session, now: SystemTime) -> Option<Duration> {
        let Some(max) = self.max_lifetime else {
            return Some(self.ttl.0);
        };
        let deadline = session.created_at() + max;
        let remaining = deadline.duration_since(now).ok()?;
        // Below a millisecond Redis cannot express the TTL: treat it as gone,
        // the same on every backend.
        (remaining >= Duration::from_millis(1)).then(|| remaining.min(self.ttl.0))
    }
}

/// A boxed future, for [`DynStorage`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where sessions are kept.
///
/// Every operation is atomic in what it means, on every backend; this is the
/// contract the conformance suite (feature `testkit`) checks:
///
/// - [`create`](Storage::create) inserts only if no live session has the id
///   (Redis `SET NX`), so two replicas can never both create one id;
/// - [`update`](Storage::update) writes only if the session is present (Redis
///   `SET XX`), so an update racing a delete never brings the session back;
/// - [`store`](Storage::store) writes unconditionally (the Go `UpsertSession`);
/// - [`load`](Storage::load) reads and pushes the sliding TTL forward, and
///   returns `Ok(None)` for an absent or expired session: "not found" is never
///   an error, and "backend unavailable" is never `Ok(None)`;
/// - [`delete`](Storage::delete) is idempotent.
///
/// Storage holds data, never live objects: a loaded session is a snapshot,
/// and only an explicit write changes what is stored.
pub trait Storage: Send + Sync + 'static {
    /// Inserts `session` if no live session has its id; returns whether it did.
    fn create(
        &self,
        session: Arc<Session>,
        expiry: Expiry,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Replaces a live session; returns whether one was there to replace.
    fn update(
        &self,
        session: Arc<Session>,
        expiry: Expiry,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Inserts or replaces `session`.
    fn store(
        &self,
        session: Arc<Session>,
        expiry: Expiry,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Reads a live session and refreshes its TTL.
    fn load(
        &self,
        id: &SessionId,
        expiry: Expiry,
    ) -> impl Future<Output = Result<Option<Arc<Session>>>> + Send;

    /// Removes a session; returns whether a live one was removed. Removing an
    /// absent session succeeds.
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<bool>> + Send;

    /// Removes every session that expired at or before `before` and returns
    /// their ids. Backends that expire sessions by themselves (Redis) return
    /// an empty list.
    fn delete_expired(
        &self,
        before: Instant,
    ) -> impl Future<Output = Result<Vec<SessionId>>> + Send;

    /// Counts the live sessions. On Redis this scans the key space.
    fn count(&self) -> impl Future<Output = Result<usize>> + Send;

    /// Releases the storage's resources. Later operations fail with
    /// [`Error::Closed`].
    fn close(&self) -> impl Future<Output = Result<()>> + Send;

    /// The longest that `create`, `update`, `store`, `load` or `delete` can
    /// take before returning (with [`Error::Timeout`] if need be), when the
    /// storage enforces such a bound itself; `None`, the default, when it
    /// does not.
    ///
    /// The manager runs every call of a storage under its
    /// `operation_timeout`. A storage whose own bound is no longer than that
    /// timeout is called without the manager's timer on these five
    /// operations: one timer registration less per request, on the hottest
    /// path. `count` and `close` are always timed by the manager.
    fn keyed_operation_bound(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The object-safe form of [`Storage`], implemented for every `Storage`.
///
/// The manager keeps custom storages behind this trait so that its own type
/// carries no generic parameter; the cost is one boxed future per call, which
/// is noise next to a network round trip. Local storage skips it entirely.
pub trait DynStorage: Send + Sync + 'static {
    /// See [`Storage::create`].
    fn create(&self, session: Arc<Session>, expiry: Expiry) -> BoxFuture<'_, Result<bool>>;
    /// See [`Storage::update`].
    fn update(&self, session: Arc<Session>, expiry: Expiry) -> BoxFuture<'_, Result<bool>>;
    /// See [`Storage::store`].
    fn store(&self, session: Arc<Session>, expiry: Expiry) -> BoxFuture<'_, Result<()>>;
    /// See [`Storage::load`].
    fn load<'a>(
        &'a self,
        id: &'a SessionId,
        expiry: Expiry,
    ) -> BoxFuture<'a, Result<Option<Arc<Session>>>>;
    /// See [`Storage::delete`].
    fn delete<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<bool>>;
    /// See [`Storage::delete_expired`].
    fn delete_expired(&self, before: Instant) -> BoxFuture<'_, Result<Vec<SessionId>>>;
    /// See [`Storage::count`].
    fn count(&self) -> BoxFuture<'_, Result<usize>>;
    /// See [`Storage::close`].
    fn close(&self) -> BoxFuture<'_, Result<()>>;
    /// See [`Storage::keyed_operation_bound`].
    fn keyed_operation_bound(&self) -> Option<std::time::Duration>;
    /// The concrete storage, for downcasting.
    fn as_any(&self) -> &dyn Any;
}

impl<S: Storage> DynStorage for S {
    fn create(&self, session: Arc<Session>, expiry: Expiry) -> BoxFuture<'_, Result<bool>> {
        Box::pin(Storage::create(self, session, expiry))
    }
    fn update(&self, session: Arc<Session>, expiry: Expiry) -> BoxFuture<'_, Result<bool>> {
        Box::pin(Storage::update(self, session, expiry))
    }
    fn store(&self, session: Arc<Session>, expiry: Expiry) -> BoxFuture<'_, Result<()>> {
        Box::pin(Storage::store(self, session, expiry))
    }
    fn load<'a>(
        &'a self,
        id: &'a SessionId,
        expiry: Expiry,
    ) -> BoxFuture<'a, Result<Option<Arc<Session>>>> {
        Box::pin(Storage::load(self, id, expiry))
    }
    fn delete<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Storage::delete(self, id))
    }
    fn delete_expired(&self, before: Instant) -> BoxFuture<'_, Result<Vec<SessionId>>> {
        Box::pin(Storage::delete_expired(self, before))
    }
    fn count(&self) -> BoxFuture<'_, Result<usize>> {
        Box::pin(Storage::count(self))
    }
    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Storage::close(self))
    }
    fn keyed_operation_bound(&self) -> Option<std::time::Duration> {
        Storage::keyed_operation_bound(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// In-memory storage for a single process: the embedded default.
///
/// Sessions are kept as `Arc<Session>` in a sharded concurrent map
/// ([`session_local::ExpiringMap`]), so a load costs a shard read lock and a
/// reference count, and returns an immutable snapshot. The storage owns each
/// session's expiry deadline and pushes it forward on every load and write;
/// an expired session is invisible at once, and [`Storage::delete_expired`]
/// frees its memory. Clones share the same sessions.
///
/// Every operation completes without awaiting, so the manager calls the
/// synchronous methods directly, with no boxed future and no timer.
#[derive(Clone, Default)]
pub struct LocalStorage {
    inner: Arc<LocalInner>,
}

#[derive(Default)]
struct LocalInner {
    map: ExpiringMap<SessionId, Arc<Session>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for LocalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStorage")
            .field("entries", &self.inner.map.len())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl LocalStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The TTL for a write, or `None` when the session is past its lifetime
    /// (and is then removed, so it is gone on this backend as on Redis).
    fn write_ttl(&self, session: &Session, expiry: Expiry) -> Option<Duration> {
        let ttl = expiry.ttl_for(session, crate::clock::now());
        if ttl.is_none() {
            self.inner.map.remove(&session.id());
        }
        ttl
    }

    /// [`Storage::create`], synchronously.
    pub fn create_now(&self, session: Arc<Session>, expiry: Expiry) -> Result<bool> {
        self.check_open()?;
        let Some(ttl) = self.write_ttl(&session, expiry) else {
            return Ok(false);
        };
        Ok(self.inner.map.insert_if_absent(session.id(), session, ttl))
    }

    /// [`Storage::update`], synchronously.
    pub fn update_now(&self, session: Arc<Session>, expiry: Expiry) -> Result<bool> {
        self.check_open()?;
        let Some(ttl) = self.write_ttl(&session, expiry) else {
            return Ok(false);
        };
        let id = session.id();
        Ok(self.inner.map.replace_if_present(&id, session, ttl))
    }

    /// [`Storage::store`], synchronously.
    pub fn store_now(&self, session: Arc<Session>, expiry: Expiry) -> Result<()> {
        self.check_open()?;
        if let Some(ttl) = self.write_ttl(&session, expiry) {
            self.inner.map.upsert(session.id(), session, ttl);
        }
        Ok(())
    }

    /// [`Storage::load`], synchronously.
    pub fn load_now(&self, id: &SessionId, expiry: Expiry) -> Result<Option<Arc<Session>>> {
        self.check_open()?;
        let Some(session) = self.inner.map.get_and_refresh(id, expiry.ttl()) else {
            return Ok(None);
        };
        if expiry.max_lifetime().is_none() {
            return Ok(Some(session));
        }
        // The load above slid the deadline by the full TTL; pull it back to
        // what remains of the session's lifetime, or drop the session if
        // nothing remains.
        match expiry.ttl_for(&session, crate::clock::now()) {
            Some(ttl) if ttl < expiry.ttl() => {
                Ok(self.inner.map.cap_deadline(id, ttl).then_some(session))
            }
            Some(_) => Ok(Some(session)),
            None => {
                self.inner.map.remove(id);
                Ok(None)
            }
        }
    }

    /// [`Storage::delete`], synchronously.
    pub fn delete_now(&self, id: &SessionId) -> Result<bool> {
        self.check_open()?;
        Ok(self.inner.map.remove(id))
    }

    /// [`Storage::delete_expired`], synchronously.
    pub fn delete_expired_now(&self, before: Instant) -> Result<Vec<SessionId>> {
        self.check_open()?;
        Ok(self.inner.map.sweep(before))
    }

    /// [`Storage::count`], synchronously: exact, O(sessions).
    pub fn count_now(&self) -> Result<usize> {
        self.check_open()?;
        Ok(self.inner.map.count_live())
    }

    /// [`Storage::close`], synchronously: empties the store. Idempotent.
    pub fn close_now(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.map.clear();
        Ok(())
    }
}

impl Storage for LocalStorage {
    async fn create(&self, session: Arc<Session>, expiry: Expiry) -> Result<bool> {
        self.create_now(session, expiry)
    }
    async fn update(&self, session: Arc<Session>, expiry: Expiry) -> Result<bool> {
        self.update_now(session, expiry)
    }
    async fn store(&self, session: Arc<Session>, expiry: Expiry) -> Result<()> {
        self.store_now(session, expiry)
    }
    async fn load(&self, id: &SessionId, expiry: Expiry) -> Result<Option<Arc<Session>>> {
        self.load_now(id, expiry)
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.delete_now(id)
    }
    async fn delete_expired(&self, before: Instant) -> Result<Vec<SessionId>> {
        self.delete_expired_now(before)
    }
    async fn count(&self) -> Result<usize> {
        self.count_now()
    }
    async fn close(&self) -> Result<()> {
        self.close_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_negative_ttls_are_rejected() {
        assert!(matches!(
            Ttl::new(Duration::ZERO),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            Ttl::new(Duration::from_micros(999)),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(Ttl::from_secs(0), Err(Error::InvalidInput(_))));
        assert!(matches!(
            Ttl::from_secs_f64(-1.0),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            Ttl::from_secs_f64(f64::NAN),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            Ttl::new(Duration::MAX),
            Err(Error::InvalidInput(_))
        ));
        assert_eq!(Ttl::from_secs(30).unwrap().get(), Duration::from_secs(30));
    }

    #[test]
    fn ttl_for_caps_by_the_remaining_lifetime() {
        let ttl = Ttl::from_secs(60).unwrap();
        let session = Session::new(SessionId::new(), crate::SessionType::Mcp);
        let created = session.created_at();
        let plain = Expiry::new(ttl);
        assert_eq!(
            plain.ttl_for(&session, created + Duration::from_secs(1_000_000)),
            Some(ttl.get())
        );
        let capped = plain
            .with_max_lifetime(Some(Duration::from_secs(100)))
            .unwrap();
        assert_eq!(
            capped.ttl_for(&session, created),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            capped.ttl_for(&session, created + Duration::from_secs(70)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            capped.ttl_for(&session, created + Duration::from_secs(100)),
            None
        );
        assert!(plain.with_max_lifetime(Some(Duration::ZERO)).is_err());
    }
}
