//! The session manager: lifecycle, timeouts and TTL cleanup over any storage.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::storage::{DynStorage, Expiry, LocalStorage, Storage, Ttl};
use crate::{Error, Result, Session, SessionId, SessionType, clock};

/// Makes the session for a new id (the Go package's `Factory`).
pub type Factory = Arc<dyn Fn(SessionId) -> Session + Send + Sync>;

/// Told which sessions the cleanup task removed, so their owner can close
/// whatever connections it keeps for them.
pub type ExpiredCallback = Arc<dyn Fn(&[SessionId]) + Send + Sync>;

/// The default timeout of one storage operation.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// The default timeout of one cleanup sweep.
pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates, finds, updates and expires sessions on top of a [`Storage`].
///
/// This is the Go package's `Manager`, with its flaws fixed:
///
/// - [`add_with_id`](Manager::add_with_id) is one atomic create, so two
///   replicas adding the same id cannot both succeed; the loser gets
///   [`Error::AlreadyExists`], never a silent overwrite.
/// - [`update`](Manager::update) writes only if the session still exists, so
///   it cannot resurrect a session that another replica deleted.
/// - [`count`](Manager::count) works on every backend.
/// - Every storage call runs under a timeout (5 s by default), and every
///   error is typed.
///
/// A cleanup task sweeps expired sessions every `ttl / 2` (configurable) and
/// reports what it removed to the callback given to
/// [`ManagerBuilder::on_expired`]. It starts with the manager (or, when the
/// manager is built outside a Tokio runtime, with its first operation), and
/// stops on [`shutdown`](Manager::shutdown) or when the last clone of the
/// manager is dropped.
///
/// `Manager` is cheap to clone; clones share the storage and the cleanup task.
/// It has no generic parameter: local storage is held directly and called
/// without boxing or timers (its operations never wait), any other storage is
/// held as a [`DynStorage`] trait object.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    expiry: Expiry,
    factory: Factory,
    operation_timeout: Duration,
    /// Whether the storage bounds its keyed operations within
    /// `operation_timeout` by itself, so the manager adds no timer to them
    /// (see `Storage::keyed_operation_bound`).
    keyed_self_bounded: bool,
    cleanup_timeout: Duration,
    cleanup_interval: Duration,
    on_expired: Option<ExpiredCallback>,
    closed: AtomicBool,
    /// Set once the cleanup task was started (or must never start), so the
    /// per-operation check is one atomic load.
    cleanup_armed: AtomicBool,
    /// A `std` mutex: it is never held across an `.await`.
    cleanup: Mutex<Cleanup>,
}

enum Cleanup {
    NotStarted,
    Running(AbortHandle),
    Stopped,
}

enum Backend {
    Local(LocalStorage),
    Dyn(Box<dyn DynStorage>),
}

impl Backend {
    fn from_storage<S: Storage>(storage: S) -> Self {
        let boxed: Box<dyn Any> = Box::new(storage);
        match boxed.downcast::<LocalStorage>() {
            Ok(local) => Self::Local(*local),
            Err(other) => match other.downcast::<S>() {
                Ok(storage) => Self::Dyn(storage),
                // The box was made from an `S` two lines above.
                Err(_) => unreachable!("a Box<S> downcasts to S"),
            },
        }
    }

    fn as_any(&self) -> &dyn Any {
        match self {
            Self::Local(local) => local,
            Self::Dyn(storage) => storage.as_any(),
        }
    }
}

impl Manager {
    /// A manager over local storage whose factory makes each new session
    /// (the Go `NewManager`).
    pub fn new(ttl: Ttl, factory: impl Fn(SessionId) -> Session + Send + Sync + 'static) -> Self {
        Self::with_storage(ttl, factory, LocalStorage::new())
    }

    /// A manager over local storage that makes sessions of one type (the Go
    /// `NewTypedManager`).
    pub fn typed(ttl: Ttl, session_type: SessionType) -> Self {
        Self::new(ttl, move |id| Session::new(id, session_type))
    }

    /// A manager over any storage (the Go `NewManagerWithStorage`).
    pub fn with_storage(
        ttl: Ttl,
        factory: impl Fn(SessionId) -> Session + Send + Sync + 'static,
        storage: impl Storage,
    ) -> Self {
        ManagerBuilder::new(ttl)
            .factory(factory)
            .storage(storage)
            .build_infallible()
    }

    /// A builder for every other setting: timeouts, cleanup interval, maximum
    /// lifetime, expiry callback.
    pub fn builder(ttl: Ttl) -> ManagerBuilder {
        ManagerBuilder::new(ttl)
    }

    /// The expiry policy this manager applies.
    pub fn expiry(&self) -> Expiry {
        self.inner.expiry
    }

    /// The sliding TTL.
    pub fn ttl(&self) -> Duration {
        self.inner.expiry.ttl()
    }

    /// Whether the manager keeps sessions in local (in-process) storage.
    pub fn is_local(&self) -> bool {
        matches!(self.inner.backend, Backend::Local(_))
    }

    /// The storage, if it is of type `S`.
    pub fn storage<S: 'static>(&self) -> Option<&S> {
        self.inner.backend.as_any().downcast_ref()
    }

    /// Whether [`shutdown`](Manager::shutdown) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Creates a session with the given id from the factory, atomically.
    ///
    /// Fails with [`Error::AlreadyExists`] if a live session has the id, on
    /// this replica or any other sharing the storage.
    pub async fn add_with_id(&self, id: SessionId) -> Result<Arc<Session>> {
        self.inner.check()?;
        let session = (self.inner.factory)(id);
        if session.id() != id {
            return Err(Error::InvalidInput(format!(
                "the session factory returned a session with id {} for id {id}",
                session.id()
            )));
        }
        self.add_session(session).await
    }

    /// Creates a session with a new random id from the factory.
    pub async fn create(&self) -> Result<Arc<Session>> {
        self.add_with_id(SessionId::new()).await
    }

    /// Stores a prepared session, atomically, if its id is free.
    pub async fn add_session(&self, session: Session) -> Result<Arc<Session>> {
        let inner = &self.inner;
        inner.check()?;
        inner.check_lifetime(&session)?;
        let id = session.id();
        let session = Arc::new(session);
        let created = match &inner.backend {
            Backend::Local(local) => local.create_now(Arc::clone(&session), inner.expiry)?,
            Backend::Dyn(storage) => {
                inner
                    .timed_keyed("create", storage.create(Arc::clone(&session), inner.expiry))
                    .await?
            }
        };
        if created {
            Ok(session)
        } else {
            Err(Error::AlreadyExists(id))
        }
    }

    /// Reads a session and refreshes its TTL; `Ok(None)` when it does not
    /// exist or expired. A backend failure is an error, never `Ok(None)`.
    pub async fn get(&self, id: &SessionId) -> Result<Option<Arc<Session>>> {
        let inner = &self.inner;
        inner.check()?;
        match &inner.backend {
            Backend::Local(local) => local.load_now(id, inner.expiry),
            Backend::Dyn(storage) => {
                inner
                    .timed_keyed("load", storage.load(id, inner.expiry))
                    .await
            }
        }
    }

    /// Writes a session whether or not it exists (the Go `UpsertSession`),
    /// setting its update time to now.
    pub async fn upsert(&self, mut session: Session) -> Result<Arc<Session>> {
        let inner = &self.inner;
        inner.check()?;
        inner.check_lifetime(&session)?;
        session.touch();
        let session = Arc::new(session);
        match &inner.backend {
            Backend::Local(local) => local.store_now(Arc::clone(&session), inner.expiry)?,
            Backend::Dyn(storage) => {
                inner
                    .timed_keyed("store", storage.store(Arc::clone(&session), inner.expiry))
                    .await?
            }
        }
        Ok(session)
    }

    /// Writes a session only if it still exists, setting its update time to
    /// now; returns whether it did. A session deleted (or expired) meanwhile
    /// stays deleted.
    pub async fn update(&self, mut session: Session) -> Result<bool> {
        let inner = &self.inner;
        inner.check()?;
        session.touch();
        let session = Arc::new(session);
        match &inner.backend {
            Backend::Local(local) => local.update_now(session, inner.expiry),
            Backend::Dyn(storage) => {
                inner
                    .timed_keyed("update", storage.update(session, inner.expiry))
                    .await
            }
        }
    }

    /// Removes a session; returns whether it existed. Removing a missing
    /// session is not an error.
    pub async fn delete(&self, id: &SessionId) -> Result<bool> {
        let inner = &self.inner;
        inner.check()?;
        match &inner.backend {
            Backend::Local(local) => local.delete_now(id),
            Backend::Dyn(storage) => inner.timed_keyed("delete", storage.delete(id)).await,
        }
    }

    /// The number of live sessions, on every backend (Redis scans its key
    /// space: O(keys)).
    pub async fn count(&self) -> Result<usize> {
        let inner = &self.inner;
        inner.check()?;
        match &inner.backend {
            Backend::Local(local) => local.count_now(),
            Backend::Dyn(storage) => inner.timed("count", storage.count()).await,
        }
    }

    /// Runs one cleanup sweep now and returns how many sessions it removed;
    /// the cleanup task calls the same code every interval.
    pub async fn cleanup_expired(&self) -> Result<usize> {
        self.inner.check()?;
        self.inner.sweep().await
    }

    /// Stops the cleanup task and closes the storage. Idempotent: a second
    /// call returns `Ok(())`. Every other operation fails with
    /// [`Error::Closed`] afterwards.
    pub async fn shutdown(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        inner.stop_cleanup();
        match &inner.backend {
            Backend::Local(local) => local.close_now(),
            Backend::Dyn(storage) => inner.timed("close", storage.close()).await,
        }
    }
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Manager")
            .field("storage", &if self.is_local() { "local" } else { "custom" })
            .field("expiry", &inner.expiry)
            .field("operation_timeout", &inner.operation_timeout)
            .field("cleanup_interval", &inner.cleanup_interval)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Fails once closed, and starts the cleanup task on first use if the
    /// manager was built outside a runtime.
    fn check(self: &Arc<Self>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if !self.cleanup_armed.load(Ordering::Acquire) {
            self.start_cleanup();
        }
        Ok(())
    }

    fn check_lifetime(&self, session: &Session) -> Result<()> {
        match self.expiry.ttl_for(session, clock::now()) {
            Some(_) => Ok(()),
            None => Err(Error::InvalidInput(format!(
                "session {} is older than the maximum lifetime",
                session.id()
            ))),
        }
    }

    /// [`Inner::timed`] for `create`, `update`, `store`, `load` and
    /// `delete`, unless the storage bounds those within the operation
    /// timeout by itself.
    async fn timed_keyed<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        if self.keyed_self_bounded {
            future.await
        } else {
            self.timed(operation, future).await
        }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(self.operation_timeout, future)
            .await
            .unwrap_or(Err(Error::Timeout {
                operation,
                after: self.operation_timeout,
            }))
    }

    fn start_cleanup(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime: the first operation (always inside one)
            // starts the task.
            return;
        };
        let mut cleanup = self
            .cleanup
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if matches!(*cleanup, Cleanup::NotStarted) {
            let task = runtime.spawn(cleanup_loop(Arc::downgrade(self), self.cleanup_interval));
            *cleanup = Cleanup::Running(task.abort_handle());
        }
        self.cleanup_armed.store(true, Ordering::Release);
    }

    fn stop_cleanup(&self) {
        let mut cleanup = self
            .cleanup
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Cleanup::Running(task) = std::mem::replace(&mut *cleanup, Cleanup::Stopped) {
            task.abort();
        }
        self.cleanup_armed.store(true, Ordering::Release);
    }

    async fn sweep(&self) -> Result<usize> {
        let before = Instant::now();
        let expired = match &self.backend {
            Backend::Local(local) => {
                // A sweep of a large store takes milliseconds of CPU; on the
                // blocking pool it does not stall the runtime's workers, which
                // keep serving loads (the map's shard locks keep them correct).
                let local = local.clone();
                match tokio::task::spawn_blocking(move || local.delete_expired_now(before)).await {
                    Ok(result) => result?,
                    Err(join) => {
                        return Err(Error::backend(
                            crate::BackendErrorKind::Other,
                            join.to_string(),
                        ));
                    }
                }
            }
            Backend::Dyn(storage) => {
                tokio::time::timeout(self.cleanup_timeout, storage.delete_expired(before))
                    .await
                    .unwrap_or(Err(Error::Timeout {
                        operation: "cleanup",
                        after: self.cleanup_timeout,
                    }))?
            }
        };
        if !expired.is_empty() {
            tracing::debug!(count = expired.len(), "removed expired sessions");
            if let Some(on_expired) = &self.on_expired {
                on_expired(&expired);
            }
        }
        Ok(expired.len())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the last manager stops the cleanup task: it holds only a
        // weak reference, so it would stop by itself at its next tick, but
        // aborting frees it at once.
        self.stop_cleanup();
    }
}

async fn cleanup_loop(inner: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    // After a slow sweep, wait a full interval instead of sweeping in a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(error) = inner.sweep().await {
            tracing::warn!(%error, "session cleanup failed; retrying at the next interval");
        }
    }
}

/// Builds a [`Manager`] with settings beyond the TTL and factory.
pub struct ManagerBuilder {
    ttl: Ttl,
    factory: Option<Factory>,
    backend: Option<Backend>,
    max_lifetime: Option<Duration>,
    operation_timeout: Duration,
    cleanup_timeout: Duration,
    cleanup_interval: Option<Duration>,
    on_expired: Option<ExpiredCallback>,
}

impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("ttl", &self.ttl)
            .field("max_lifetime", &self.max_lifetime)
            .field("operation_timeout", &self.operation_timeout)
            .field("cleanup_timeout", &self.cleanup_timeout)
            .field("cleanup_interval", &self.cleanup_interval)
            .finish_non_exhaustive()
    }
}

impl ManagerBuilder {
    /// A builder with the defaults: local storage, sessions of type
    /// [`SessionType::Mcp`], 5 s operation timeout, 30 s cleanup timeout,
    /// cleanup every `ttl / 2`, no maximum lifetime.
    pub fn new(ttl: Ttl) -> Self {
        Self {
            ttl,
            factory: None,
            backend: None,
            max_lifetime: None,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            cleanup_timeout: DEFAULT_CLEANUP_TIMEOUT,
            cleanup_interval: None,
            on_expired: None,
        }
    }

    /// The factory that makes each new session.
    pub fn factory(
        mut self,
        factory: impl Fn(SessionId) -> Session + Send + Sync + 'static,
    ) -> Self {
        self.factory = Some(Arc::new(factory));
        self
    }

    /// Makes new sessions of one type.
    pub fn session_type(self, session_type: SessionType) -> Self {
        self.factory(move |id| Session::new(id, session_type))
    }

    /// The storage; local storage when not set.
    pub fn storage(mut self, storage: impl Storage) -> Self {
        self.backend = Some(Backend::from_storage(storage));
        self
    }

    /// An absolute lifetime on top of the sliding TTL: a session older than
    /// this is gone, however recently it was used.
    pub fn max_lifetime(mut self, max_lifetime: Option<Duration>) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// The timeout of each storage operation (default 5 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// The timeout of each cleanup sweep (default 30 s).
    pub fn cleanup_timeout(mut self, timeout: Duration) -> Self {
        self.cleanup_timeout = timeout;
        self
    }

    /// How often the cleanup task sweeps (default `ttl / 2`).
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = Some(interval);
        self
    }

    /// Called with the ids of the sessions each sweep removed, so that a
    /// transport can close their connections. It runs on the cleanup task:
    /// keep it short, or hand the ids to a channel.
    pub fn on_expired(mut self, callback: impl Fn(&[SessionId]) + Send + Sync + 'static) -> Self {
        self.on_expired = Some(Arc::new(callback));
        self
    }

    /// Builds the manager, validating the settings.
    pub fn build(self) -> Result<Manager> {
        for (field, value) in [
            ("operation_timeout", Some(self.operation_timeout)),
            ("cleanup_timeout", Some(self.cleanup_timeout)),
            ("cleanup_interval", self.cleanup_interval),
        ] {
            if value.is_some_and(|value| value.is_zero()) {
                return Err(Error::config(field, "must be greater than zero"));
            }
        }
        Expiry::new(self.ttl)
            .with_max_lifetime(self.max_lifetime)
            .map_err(|err| Error::config("max_lifetime", err.to_string()))?;
        Ok(self.build_infallible())
    }

    /// Builds without validation; only for settings that cannot be invalid
    /// (the defaults plus a TTL, factory and storage).
    fn build_infallible(self) -> Manager {
        let expiry = Expiry::new(self.ttl)
            .with_max_lifetime(self.max_lifetime)
            .unwrap_or(Expiry::new(self.ttl));
        let cleanup_interval = self
            .cleanup_interval
            .unwrap_or_else(|| (self.ttl.get() / 2).max(Duration::from_millis(1)));
        let backend = self
            .backend
            .unwrap_or_else(|| Backend::Local(LocalStorage::new()));
        let keyed_self_bounded = match &backend {
            Backend::Local(_) => true,
            Backend::Dyn(storage) => storage
                .keyed_operation_bound()
                .is_some_and(|bound| bound <= self.operation_timeout),
        };
        let inner = Arc::new(Inner {
            backend,
            expiry,
            factory: self
                .factory
                .unwrap_or_else(|| Arc::new(|id| Session::new(id, SessionType::default()))),
            operation_timeout: self.operation_timeout,
            keyed_self_bounded,
            cleanup_timeout: self.cleanup_timeout,
            cleanup_interval,
            on_expired: self.on_expired,
            closed: AtomicBool::new(false),
            cleanup_armed: AtomicBool::new(false),
            cleanup: Mutex::new(Cleanup::NotStarted),
        });
        inner.start_cleanup();
        Manager { inner }
    }
}
