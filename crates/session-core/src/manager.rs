//! The session manager: lifecycle, expiry policy and TTL cleanup over any
//! storage.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::clock::{Clock, SystemClock};
use crate::metrics::Handles;
use crate::{
    AnyStorage, BackendErrorKind, Conditional, Description, Error, Expiry, Operation, Owner,
    Result, Revision, Session, SessionId, SessionType, Storage, Ttl,
};

/// How many attempts a read-modify-write makes by default before it gives
/// up with [`Error::Conflict`].
pub const DEFAULT_MODIFY_ATTEMPTS: u32 = 16;
/// The first backoff after a conflict is drawn from zero to this; each
/// further conflict doubles the bound, up to [`MODIFY_BACKOFF_CAP`].
const MODIFY_BACKOFF_BASE: Duration = Duration::from_millis(1);
/// The largest backoff bound between two attempts.
const MODIFY_BACKOFF_CAP: Duration = Duration::from_millis(64);

/// Makes the session for a new id.
pub type Factory = Arc<dyn Fn(SessionId) -> Session + Send + Sync>;

/// What can make new sessions: a closure from id to [`Session`], or a
/// [`SessionType`] (every new session is `Session::new(id, that_type)`).
pub trait IntoFactory {
    /// The factory.
    fn into_factory(self) -> Factory;
}

impl IntoFactory for SessionType {
    fn into_factory(self) -> Factory {
        Arc::new(move |id| Session::new(id, self))
    }
}

impl<F> IntoFactory for F
where
    F: Fn(SessionId) -> Session + Send + Sync + 'static,
{
    fn into_factory(self) -> Factory {
        Arc::new(self)
    }
}

/// Told which sessions the cleanup task removed, so their owner can close
/// whatever connections it keeps for them.
pub type ExpiredCallback = Arc<dyn Fn(&[SessionId]) + Send + Sync>;

/// Creates, reads, updates and expires sessions on top of a [`Storage`].
///
/// - [`create_with_id`](Manager::create_with_id) is one atomic create, so two
///   replicas creating the same id cannot both succeed; the loser gets
///   [`Error::AlreadyExists`], never a silent overwrite.
/// - [`update`](Manager::update) writes only if the session still exists, so
///   it cannot resurrect a session that another replica deleted.
/// - The manager owns the expiry policy ([`Expiry`]): it hands each storage
///   call the TTL to apply, capped by the maximum lifetime, and stamps
///   `created_at` and `updated_at` from its [`Clock`].
/// - [`modify`](Manager::modify) is an atomic read-modify-write: optimistic,
///   retried on conflict with jittered backoff, never lost to a concurrent
///   writer on any replica; [`update_if`](Manager::update_if) is the
///   compare-and-set under it, for callers that hold a [`Revision`].
/// - Sessions may belong to an [`Owner`]: the `_as` methods act on behalf of
///   a principal and answer another owner's session exactly as an absent one;
///   [`list_owned`](Manager::list_owned) and
///   [`revoke_owned`](Manager::revoke_owned) find and end an owner's sessions.
/// - Every error is typed; timeouts are the storage's (see [`Storage`]).
///
/// A cleanup task sweeps expired sessions every `ttl / 2` (configurable) and
/// reports what it removed to the callback given to
/// [`ManagerBuilder::on_expired`]. It starts with the manager (or, when the
/// manager is built outside a Tokio runtime, with its first operation), and
/// stops on [`close`](Manager::close) or when the last clone of the manager
/// is dropped.
///
/// `Manager` is cheap to clone; clones share the storage and the cleanup task.
///
/// The storage parameter defaults to [`AnyStorage`]: [`Manager::builder`]
/// erases the storage's type, so one `Manager` type serves whatever backend
/// a configuration picks, at the price of one boxed future per call of a
/// storage that waits. [`Manager::typed_builder`] keeps the type (a
/// `Manager<RedisStorage>`, say) and polls the storage's futures in place.
/// A storage that never waits (see [`Storage::as_sync`]) is called directly
/// either way.
pub struct Manager<S = AnyStorage> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Manager<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// How many fresh ids a rotation draws before it gives up.
const ROTATE_ATTEMPTS: u32 = 3;

struct Inner<S> {
    /// In an `Arc` of its own so that a sweep on the blocking pool can hold
    /// it.
    storage: Arc<S>,
    expiry: Expiry,
    factory: Factory,
    clock: Arc<dyn Clock>,
    cleanup_interval: Duration,
    on_expired: Option<ExpiredCallback>,
    modify_attempts: u32,
    /// Reads on behalf of a principal that found another owner's session.
    foreign_reads: AtomicU64,
    closed: AtomicBool,
    /// Set once the cleanup task was started (or must never start), so the
    /// per-operation check is one atomic load.
    cleanup_armed: AtomicBool,
    /// A `std` mutex: it is never held across an `.await`.
    cleanup: Mutex<Cleanup>,
    /// The handles of what this manager records.
    metrics: Handles,
}

enum Cleanup {
    NotStarted,
    Running(AbortHandle),
    Stopped,
}

/// Calls one operation of the storage: directly when it never waits,
/// through its boxed future otherwise.
macro_rules! call {
    ($inner:expr, $method:ident($($arg:expr),*)) => {
        match Storage::as_sync(&*$inner.storage) {
            Some(storage) => storage.$method($($arg),*),
            None => Storage::$method(&*$inner.storage, $($arg),*).await,
        }
    };
}

/// [`call!`], recorded as `$operation` (see `metrics`); `$absent` says
/// whether a success found no session.
macro_rules! observed {
    ($inner:expr, $operation:expr, $method:ident($($arg:expr),*), $absent:expr) => {{
        let started = std::time::Instant::now();
        let span = $inner.metrics.span($operation);
        let result = call!($inner, $method($($arg),*));
        $inner.metrics.record(&span, $operation, started, &result, $absent);
        result
    }};
}

/// Successes that are never absent.
fn never<T>(_: &T) -> bool {
    false
}

impl Manager {
    /// A builder over `storage`, its type erased, with the sliding TTL
    /// `ttl`; see [`ManagerBuilder`] for the other settings.
    #[doc(alias = "NewManagerWithStorage")]
    pub fn builder(storage: impl Storage, ttl: Ttl) -> ManagerBuilder {
        ManagerBuilder::new(storage, ttl)
    }
}

impl<S: Storage> Manager<S> {
    /// A builder of a `Manager<S>`, which keeps the storage's type: no
    /// boxed future per call. For code that knows its backend when it is
    /// written; [`builder`](Manager::builder) is for a backend chosen at run
    /// time.
    pub fn typed_builder(storage: S, ttl: Ttl) -> ManagerBuilder<S> {
        ManagerBuilder::typed(storage, ttl)
    }

    /// The expiry policy this manager applies.
    pub fn expiry(&self) -> Expiry {
        self.inner.expiry
    }

    /// The sliding TTL.
    pub fn ttl(&self) -> Duration {
        self.inner.expiry.ttl().get()
    }

    /// What the storage is (backend, topology).
    pub fn describe(&self) -> Description {
        Storage::describe(&*self.inner.storage)
    }

    /// Whether [`close`](Manager::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Creates a session with a new random id from the factory.
    pub async fn create(&self) -> Result<Arc<Session>> {
        self.create_with_id(SessionId::new()).await
    }

    /// Creates a session with the given id from the factory, atomically.
    ///
    /// Fails with [`Error::AlreadyExists`] if a live session has the id, on
    /// this replica or any other sharing the storage.
    #[doc(alias = "AddWithID")]
    pub async fn create_with_id(&self, id: SessionId) -> Result<Arc<Session>> {
        self.create_new(id, None).await
    }

    /// Makes a session for `id` with the factory, owned by `owner` if given,
    /// stamps it and stores it.
    async fn create_new(&self, id: SessionId, owner: Option<Owner>) -> Result<Arc<Session>> {
        self.inner.check()?;
        let session = self.prepare_with_id(id, owner)?;
        self.create_from(session).await
    }

    /// A new session with a new random id, made by the factory, owned by
    /// `owner` if given and stamped with the manager's clock, but not
    /// stored: for a caller that fills it in before it stores it with
    /// [`create_from`](Manager::create_from), so that a session is created
    /// with its first data in one write.
    pub fn prepare(&self, owner: Option<Owner>) -> Result<Session> {
        self.prepare_with_id(SessionId::new(), owner)
    }

    fn prepare_with_id(&self, id: SessionId, owner: Option<Owner>) -> Result<Session> {
        let mut session = (self.inner.factory)(id);
        if session.id() != id {
            return Err(Error::InvalidInput(format!(
                "the session factory returned a session with id {} for id {id}",
                session.id()
            )));
        }
        if let Some(owner) = owner {
            session.set_owner(owner);
        }
        session.stamp_new(self.inner.clock.now());
        Ok(session)
    }

    /// Stores a prepared session, atomically, if its id is free. Its
    /// timestamps are kept as they are.
    #[doc(alias = "AddSession")]
    pub async fn create_from(&self, mut session: Session) -> Result<Arc<Session>> {
        let inner = &self.inner;
        inner.check()?;
        let ttl = inner.ttl_for_new(&session)?;
        session.set_revision(Revision::FIRST);
        let id = session.id();
        let session = Arc::new(session);
        if observed!(
            inner,
            Operation::Create,
            create(Arc::clone(&session), ttl),
            |created: &bool| !created
        )? {
            Ok(session)
        } else {
            Err(Error::AlreadyExists(id))
        }
    }

    /// Creates a session with a new random id from the factory, owned by
    /// `owner` for its whole life.
    pub async fn create_owned(&self, owner: Owner) -> Result<Arc<Session>> {
        self.create_new(SessionId::new(), Some(owner)).await
    }

    /// Reads a session on behalf of `principal` (`None`: a caller with no
    /// authenticated principal): as [`get`](Manager::get), except that a
    /// session owned by anybody else is answered exactly as an absent one,
    /// `Ok(None)`, and counted ([`foreign_reads`](Manager::foreign_reads)).
    /// A session without owner is visible to every principal, as before
    /// owners existed.
    pub async fn get_as(
        &self,
        id: &SessionId,
        principal: Option<&Owner>,
    ) -> Result<Option<Arc<Session>>> {
        let session = self.get(id).await?;
        Ok(session.filter(|session| self.inner.visible(session, principal)))
    }

    /// How many reads on behalf of a principal found a session of another
    /// owner (and answered it as absent) since the manager was built: a
    /// figure to alert on, since a client presenting other users' session
    /// ids is either broken or probing.
    pub fn foreign_reads(&self) -> u64 {
        self.inner.foreign_reads.load(Ordering::Relaxed)
    }

    /// Reads a session and refreshes its TTL; `Ok(None)` when it does not
    /// exist or expired. A backend failure is an error, never `Ok(None)`.
    ///
    /// This read does not check the owner: it is for code that acts for the
    /// service itself. Code that acts for a user calls
    /// [`get_as`](Manager::get_as).
    #[doc(alias = "GetWithError")]
    pub async fn get(&self, id: &SessionId) -> Result<Option<Arc<Session>>> {
        let inner = &self.inner;
        inner.check()?;
        let ttl = inner.expiry.ttl();
        let started = std::time::Instant::now();
        let span = inner.metrics.span(Operation::Get);
        // A copy the storage holds answers without a boxed future.
        let session = match Storage::get_cached(&*inner.storage, id, ttl) {
            Some(session) => {
                inner.metrics.record_ok(&span, Operation::Get, started);
                session
            }
            None => {
                let result = call!(inner, get(id, ttl));
                inner
                    .metrics
                    .record(&span, Operation::Get, started, &result, Option::is_none);
                match result? {
                    Some(session) => session,
                    None => return Ok(None),
                }
            }
        };
        if inner.expiry.max_lifetime().is_none() {
            return Ok(Some(session));
        }
        // Boxed: awaited in place, these two rarer storage futures would
        // make every load's future copy more bytes.
        Box::pin(self.within_lifetime(id, session, ttl)).await
    }

    /// A session just read with the full sliding TTL, under a maximum
    /// lifetime: the TTL is pulled back to what remains of the session's
    /// lifetime, or the session ends if nothing remains.
    async fn within_lifetime(
        &self,
        id: &SessionId,
        session: Arc<Session>,
        ttl: Ttl,
    ) -> Result<Option<Arc<Session>>> {
        let inner = &self.inner;
        match inner.expiry.ttl_for(&session, inner.clock.now()) {
            Some(left) if left < ttl => Ok(observed!(
                inner,
                Operation::Expire,
                expire(id, left),
                |kept: &bool| !kept
            )?
            .then_some(session)),
            Some(_) => Ok(Some(session)),
            None => {
                self.delete(id).await?;
                Ok(None)
            }
        }
    }

    /// Writes a session whether or not it exists, setting its update time to
    /// now; returns it as stored, at its new revision. Last write wins: a
    /// concurrent change by another writer is overwritten (see
    /// [`modify`](Manager::modify) for a write that loses nothing).
    #[doc(alias = "UpsertSession")]
    pub async fn upsert(&self, mut session: Session) -> Result<Arc<Session>> {
        let inner = &self.inner;
        inner.check()?;
        session.touch(inner.clock.now());
        let ttl = inner.ttl_for_new(&session)?;
        observed!(
            inner,
            Operation::Upsert,
            upsert(Arc::new(session), ttl),
            never
        )
    }

    /// Writes a session only if it still exists, setting its update time to
    /// now; returns whether it did. A session deleted (or expired, or past
    /// its maximum lifetime) meanwhile stays deleted. Last write wins among
    /// concurrent updates; [`modify`](Manager::modify) and
    /// [`update_if`](Manager::update_if) do not lose any.
    pub async fn update(&self, mut session: Session) -> Result<bool> {
        let inner = &self.inner;
        inner.check()?;
        let now = inner.clock.now();
        session.touch(now);
        match inner.expiry.ttl_for(&session, now) {
            Some(ttl) => Ok(observed!(
                inner,
                Operation::Update,
                update(Arc::new(session), ttl),
                Option::is_none
            )?
            .is_some()),
            None => {
                // Past its lifetime: gone, as if it had expired.
                self.delete(&session.id()).await?;
                Ok(false)
            }
        }
    }

    /// Writes a session only if its stored revision is still `expected`
    /// (typically the [`Session::revision`] of the snapshot it was edited
    /// from), setting its update time to now. One atomic step on every
    /// backend: [`Conditional::Conflict`] when another write came first,
    /// [`Conditional::Absent`] when the session is gone (it is not created),
    /// and otherwise the session as stored at its new revision. TTL and
    /// maximum lifetime apply as in [`update`](Manager::update).
    pub async fn update_if(&self, mut session: Session, expected: Revision) -> Result<Conditional> {
        let inner = &self.inner;
        inner.check()?;
        let now = inner.clock.now();
        session.touch(now);
        match inner.expiry.ttl_for(&session, now) {
            Some(ttl) => observed!(
                inner,
                Operation::UpdateIf,
                update_if(Arc::new(session), expected, ttl),
                |written: &Conditional| matches!(written, Conditional::Absent)
            ),
            None => {
                self.delete(&session.id()).await?;
                Ok(Conditional::Absent)
            }
        }
    }

    /// Reads a session, changes it with `change` and writes it back, as one
    /// atomic step: no concurrent write, on this replica or another, is lost
    /// or overwritten. Returns the session as stored and what `change`
    /// returned; `Ok(None)` when the session does not exist (it is never
    /// created).
    ///
    /// The write is conditional on the revision that was read
    /// ([`update_if`](Manager::update_if)). When another writer came first,
    /// the session is read again and `change` runs again on the new value,
    /// after a jittered backoff, up to the configured number of attempts
    /// ([`ManagerBuilder::modify_attempts`]); then the call fails with
    /// [`Error::Conflict`] having written nothing. So `change` may run
    /// several times and must only edit the session it is given. An error
    /// from `change` ends the call at once, with nothing written.
    ///
    /// A backend failure is returned as it is, never retried: a write whose
    /// reply was lost may have been applied ([`Error::is_outcome_unknown`]),
    /// and sending it again could apply it twice.
    ///
    /// `change` must not replace the session's id or owner; doing so is
    /// [`Error::InvalidInput`], with nothing written.
    pub async fn modify<T, E, F>(
        &self,
        id: &SessionId,
        change: F,
    ) -> std::result::Result<Option<(Arc<Session>, T)>, E>
    where
        F: FnMut(&mut Session) -> std::result::Result<T, E>,
        E: From<Error>,
    {
        self.modify_checked(id, None, change).await
    }

    /// [`modify`](Manager::modify) on behalf of `principal`: another owner's
    /// session is answered as absent, as by [`get_as`](Manager::get_as), and
    /// `change` does not run.
    pub async fn modify_as<T, E, F>(
        &self,
        id: &SessionId,
        principal: Option<&Owner>,
        change: F,
    ) -> std::result::Result<Option<(Arc<Session>, T)>, E>
    where
        F: FnMut(&mut Session) -> std::result::Result<T, E>,
        E: From<Error>,
    {
        self.modify_checked(id, Some(principal), change).await
    }

    /// The body of both `modify` methods; `principal` is `None` when the
    /// owner is not checked.
    async fn modify_checked<T, E, F>(
        &self,
        id: &SessionId,
        principal: Option<Option<&Owner>>,
        mut change: F,
    ) -> std::result::Result<Option<(Arc<Session>, T)>, E>
    where
        F: FnMut(&mut Session) -> std::result::Result<T, E>,
        E: From<Error>,
    {
        let attempts = self.inner.modify_attempts;
        let mut backoff = MODIFY_BACKOFF_BASE;
        for attempt in 1..=attempts {
            let Some(current) = self.get(id).await? else {
                return Ok(None);
            };
            if let Some(principal) = principal
                && !self.inner.visible(&current, principal)
            {
                return Ok(None);
            }
            let mut edited = (*current).clone();
            let answer = change(&mut edited)?;
            if edited.id() != current.id() || edited.owner() != current.owner() {
                return Err(Error::InvalidInput(format!(
                    "a read-modify-write of session {id} changed its id or owner"
                ))
                .into());
            }
            match self.update_if(edited, current.revision()).await? {
                Conditional::Written(stored) => return Ok(Some((stored, answer))),
                Conditional::Absent => return Ok(None),
                Conditional::Conflict(_) if attempt < attempts => {
                    self.inner.metrics.modify_retries.increment(1);
                    // Full jitter: contenders that collided spread out
                    // instead of colliding again in lockstep.
                    let bound = u64::try_from(backoff.as_micros()).unwrap_or(u64::MAX);
                    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=bound))).await;
                    backoff = (backoff * 2).min(MODIFY_BACKOFF_CAP);
                }
                Conditional::Conflict(_) => {}
            }
        }
        Err(Error::Conflict { id: *id, attempts }.into())
    }

    /// Moves a session to a new random id, as a service does when its
    /// user's privileges change (a login, say), so that an id seen before
    /// the change is worth nothing after it. Reads the session on behalf of
    /// `principal` (another owner's session is absent, as for
    /// [`get_as`](Manager::get_as)), creates the copy under the new id with
    /// create semantics (it never overwrites a live session: an id that is
    /// taken is drawn again), then deletes the old id. Returns the new
    /// session, or `Ok(None)` when there was none to move.
    ///
    /// The copy keeps the type, metadata, data and timestamps: its creation
    /// time, and so what is left of a maximum lifetime, is the original's,
    /// and its sliding TTL is the full TTL that the read just gave the
    /// original. With `owner`, a session without owner becomes `owner`'s
    /// (an anonymous session at login); an owned session keeps its owner,
    /// and passing it to another is [`Error::InvalidInput`] with nothing
    /// written. A write to the old id that lands between the read and the
    /// delete is not carried over; after the delete the old id is absent
    /// everywhere.
    pub async fn rotate_as(
        &self,
        id: &SessionId,
        principal: Option<&Owner>,
        owner: Option<Owner>,
    ) -> Result<Option<Arc<Session>>> {
        let Some(current) = self.get_as(id, principal).await? else {
            return Ok(None);
        };
        if let (Some(held), Some(owner)) = (current.owner(), owner.as_ref())
            && held != owner
        {
            return Err(Error::InvalidInput(
                "a rotation cannot pass an owned session to another owner".into(),
            ));
        }
        // A fresh id is taken about never; create semantics say what happens
        // if one is, and a few draws make the chance of failing nil.
        let mut attempt = 0;
        let rotated = loop {
            attempt += 1;
            match self
                .create_from(current.reissued(SessionId::new(), owner.clone()))
                .await
            {
                Err(Error::AlreadyExists(_)) if attempt < ROTATE_ATTEMPTS => continue,
                other => break other?,
            }
        };
        self.delete(id).await?;
        Ok(Some(rotated))
    }

    /// The live sessions of `owner` (within their maximum lifetime), in no
    /// particular order, without refreshing their TTLs. O(sessions of that
    /// owner) on every backend.
    pub async fn list_owned(&self, owner: &Owner) -> Result<Vec<Arc<Session>>> {
        let inner = &self.inner;
        inner.check()?;
        let mut sessions = observed!(inner, Operation::ListOwned, list_owned(owner), never)?;
        if inner.expiry.max_lifetime().is_some() {
            let now = inner.clock.now();
            sessions.retain(|session| inner.expiry.ttl_for(session, now).is_some());
        }
        Ok(sessions)
    }

    /// Ends every session of `owner` ("log out everywhere", or a revocation
    /// on password change) and returns their ids. Every session the owner
    /// had when the call started is removed; one created while it runs may
    /// survive, and is then listed by [`list_owned`](Manager::list_owned).
    pub async fn revoke_owned(&self, owner: &Owner) -> Result<Vec<SessionId>> {
        let inner = &self.inner;
        inner.check()?;
        observed!(inner, Operation::RevokeOwned, revoke_owned(owner), never)
    }

    /// Removes a session; returns whether it existed. Removing a missing
    /// session is not an error.
    #[doc(alias = "DeleteSession")]
    pub async fn delete(&self, id: &SessionId) -> Result<bool> {
        let inner = &self.inner;
        inner.check()?;
        observed!(inner, Operation::Delete, delete(id), |found: &bool| !found)
    }

    /// The number of live sessions, on every backend (Redis scans its key
    /// space: O(keys); see [`Description::count_is_cheap`]).
    pub async fn count(&self) -> Result<usize> {
        let inner = &self.inner;
        inner.check()?;
        observed!(inner, Operation::Count, count(), never)
    }

    /// Pushes the figures that are sampled rather than counted to the
    /// `metrics` facade: the number of live sessions where counting them is
    /// cheap (local storage, exact; never a TTL touched), and the storage's
    /// own (a Redis cache's counters). Call it before each scrape (the
    /// gateway's `/metrics` does); see `docs/metrics.md`.
    pub fn record_metrics(&self) {
        let inner = &self.inner;
        let description = inner.storage.describe();
        if description.count_is_cheap
            && let Some(storage) = Storage::as_sync(&*inner.storage)
            && let Ok(live) = storage.count()
        {
            inner.metrics.live.set(live as f64);
        }
        Storage::record_metrics(&*inner.storage);
    }

    /// Checks that the storage answers, without touching any session.
    pub async fn ping(&self) -> Result<()> {
        let inner = &self.inner;
        inner.check()?;
        let started = std::time::Instant::now();
        let span = inner.metrics.span(Operation::Ping);
        let result = Storage::ping(&*inner.storage).await;
        inner
            .metrics
            .record(&span, Operation::Ping, started, &result, never);
        result
    }

    /// Runs one cleanup sweep now and returns how many sessions it removed;
    /// the cleanup task calls the same code every interval.
    #[doc(alias = "cleanup_expired")]
    pub async fn delete_expired(&self) -> Result<usize> {
        self.inner.check()?;
        self.inner.sweep().await
    }

    /// Stops the cleanup task and closes the storage. Idempotent: a second
    /// call returns `Ok(())`. Every other operation fails with
    /// [`Error::Closed`] afterwards.
    #[doc(alias = "shutdown", alias = "Stop")]
    pub async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        inner.stop_cleanup();
        call!(inner, close())
    }
}

impl<S: Storage> fmt::Debug for Manager<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Manager")
            .field("storage", &self.describe())
            .field("expiry", &inner.expiry)
            .field("cleanup_interval", &inner.cleanup_interval)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Inner<S> {
    /// Whether `principal` may see `session`; counts the refusals.
    fn visible(&self, session: &Session, principal: Option<&Owner>) -> bool {
        let visible = session.is_visible_to(principal);
        if !visible {
            self.foreign_reads.fetch_add(1, Ordering::Relaxed);
            self.metrics.foreign_reads.increment(1);
            // The session id is a bearer credential and stays out of logs.
            tracing::debug!("a read on behalf of a principal found another owner's session");
        }
        visible
    }

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

    /// The TTL of a session written as new (create, upsert): refused when
    /// the session has already outlived its maximum lifetime, since writing
    /// it would store something that is gone.
    fn ttl_for_new(&self, session: &Session) -> Result<Ttl> {
        self.expiry
            .ttl_for(session, self.clock.now())
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "session {} is older than the maximum lifetime",
                    session.id()
                ))
            })
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

    async fn sweep(&self) -> Result<usize> {
        let started = std::time::Instant::now();
        let span = self.metrics.span(Operation::DeleteExpired);
        let result = self.sweep_unrecorded().await;
        self.metrics
            .record(&span, Operation::DeleteExpired, started, &result, never);
        if let Ok(removed) = &result {
            self.metrics.expired.increment(*removed as u64);
        }
        result
    }

    async fn sweep_unrecorded(&self) -> Result<usize> {
        let before = Instant::now();
        let expired = if Storage::as_sync(&*self.storage).is_some() {
            // A sweep of a large in-process store takes milliseconds of CPU;
            // on the blocking pool it does not stall the runtime's workers,
            // which keep serving reads (the storage stays correct under
            // concurrent use).
            let storage = Arc::clone(&self.storage);
            let sweep = move || match Storage::as_sync(&*storage) {
                Some(storage) => storage.delete_expired(before),
                None => Ok(Vec::new()),
            };
            tokio::task::spawn_blocking(sweep)
                .await
                .map_err(|join| Error::backend(BackendErrorKind::Other, join.to_string()))??
        } else {
            Storage::delete_expired(&*self.storage, before).await?
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

impl<S> Inner<S> {
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
}

impl<S> Drop for Inner<S> {
    fn drop(&mut self) {
        // Dropping the last manager stops the cleanup task: it holds only a
        // weak reference, so it would stop by itself at its next tick, but
        // aborting frees it at once.
        self.stop_cleanup();
    }
}

async fn cleanup_loop<S: Storage>(inner: Weak<Inner<S>>, interval: Duration) {
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

/// Builds a [`Manager`]: the storage and TTL, and optional settings.
pub struct ManagerBuilder<S = AnyStorage> {
    storage: S,
    ttl: Ttl,
    factory: Option<Factory>,
    max_lifetime: Option<Duration>,
    cleanup_interval: Option<Duration>,
    on_expired: Option<ExpiredCallback>,
    clock: Arc<dyn Clock>,
    modify_attempts: u32,
}

impl<S: Storage> fmt::Debug for ManagerBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("storage", &Storage::describe(&self.storage))
            .field("ttl", &self.ttl)
            .field("max_lifetime", &self.max_lifetime)
            .field("cleanup_interval", &self.cleanup_interval)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl ManagerBuilder {
    /// A builder with the defaults: sessions of type [`SessionType::Mcp`],
    /// cleanup every `ttl / 2`, no maximum lifetime, the system clock. The
    /// storage's type is erased ([`AnyStorage`]).
    pub fn new(storage: impl Storage, ttl: Ttl) -> Self {
        Self::typed(AnyStorage::new(storage), ttl)
    }
}

impl<S: Storage> ManagerBuilder<S> {
    /// A builder with the defaults of [`new`](ManagerBuilder::new) that
    /// keeps the storage's type (see [`Manager::typed_builder`]).
    pub fn typed(storage: S, ttl: Ttl) -> Self {
        Self {
            storage,
            ttl,
            factory: None,
            max_lifetime: None,
            cleanup_interval: None,
            on_expired: None,
            clock: Arc::new(SystemClock),
            modify_attempts: DEFAULT_MODIFY_ATTEMPTS,
        }
    }

    /// How many attempts [`Manager::modify`] makes before it fails with
    /// [`Error::Conflict`] (default [`DEFAULT_MODIFY_ATTEMPTS`]); at least 1.
    pub fn modify_attempts(mut self, attempts: u32) -> Self {
        self.modify_attempts = attempts;
        self
    }

    /// What makes each new session: a closure from id to [`Session`], or a
    /// [`SessionType`].
    pub fn factory(mut self, factory: impl IntoFactory) -> Self {
        self.factory = Some(factory.into_factory());
        self
    }

    /// An absolute lifetime on top of the sliding TTL: a session older than
    /// this is gone, however recently it was used.
    pub fn max_lifetime(mut self, max_lifetime: Option<Duration>) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// How often the cleanup task sweeps (default `ttl / 2`).
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Called with the ids of the sessions each sweep removed, so that a
    /// transport can close their connections. It runs on the cleanup task:
    /// keep it short, or hand the ids to a channel.
    pub fn on_expired(mut self, callback: impl Fn(&[SessionId]) + Send + Sync + 'static) -> Self {
        self.on_expired = Some(Arc::new(callback));
        self
    }

    /// The clock that session timestamps come from (default: the system
    /// clock). Tests inject a [`ManualClock`](crate::clock::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the manager; a setting out of range is an [`Error::Config`]
    /// naming it.
    pub fn build(self) -> Result<Manager<S>> {
        if self
            .cleanup_interval
            .is_some_and(|interval| interval.is_zero())
        {
            return Err(Error::config(
                "cleanup_interval",
                "must be greater than zero",
            ));
        }
        if self.modify_attempts == 0 {
            return Err(Error::config("modify_attempts", "must be at least 1"));
        }
        let expiry = Expiry::new(self.ttl).with_max_lifetime(self.max_lifetime)?;
        let cleanup_interval = self
            .cleanup_interval
            .unwrap_or_else(|| (self.ttl.get() / 2).max(Duration::from_millis(1)));
        let metrics = Handles::new(self.storage.describe().backend);
        let inner = Arc::new(Inner {
            metrics,
            storage: Arc::new(self.storage),
            expiry,
            factory: self
                .factory
                .unwrap_or_else(|| SessionType::default().into_factory()),
            clock: self.clock,
            cleanup_interval,
            on_expired: self.on_expired,
            modify_attempts: self.modify_attempts,
            foreign_reads: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            cleanup_armed: AtomicBool::new(false),
            cleanup: Mutex::new(Cleanup::NotStarted),
        });
        inner.start_cleanup();
        Ok(Manager { inner })
    }
}
