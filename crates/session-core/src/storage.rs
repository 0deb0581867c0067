//! The storage contract.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;

use crate::{Owner, Result, Revision, Session, SessionId, Ttl};

/// Where sessions are kept.
///
/// Every operation is atomic in what it means, on every backend; this is the
/// contract the conformance suite (crate `session-testkit`) checks:
///
/// - [`create`](Storage::create) inserts only if no live session has the id
///   (Redis `SET NX`), so two replicas can never both create one id;
/// - [`update`](Storage::update) writes only if the session is present, so an
///   update racing a delete never brings the session back;
/// - [`upsert`](Storage::upsert) writes whether or not the session exists;
/// - [`update_if`](Storage::update_if) writes only if the stored revision is
///   the one given: the compare-and-set that read-modify-write is built on;
/// - [`get`](Storage::get) reads and pushes the sliding TTL forward, and
///   returns `Ok(None)` for an absent or expired session: "not found" is never
///   an error, and "backend unavailable" is never `Ok(None)`;
/// - [`expire`](Storage::expire) only ever shortens a session's life;
/// - [`delete`](Storage::delete) is idempotent;
/// - [`list_owned`](Storage::list_owned) and
///   [`revoke_owned`](Storage::revoke_owned) find an owner's sessions in
///   O(sessions of that owner).
///
/// **Revisions and owners.** A create stores [`Revision::FIRST`]; every
/// successful write stores the next revision after the stored one, whatever
/// revision the written session carried, and returns the session as stored.
/// A session's owner never changes: a write whose session names another
/// owner than the stored one (or an owner where there was none, or none
/// where there was one) is refused with
/// [`Error::InvalidInput`](crate::Error::InvalidInput) and writes nothing.
///
/// Storages are policy-free: every write and read comes with the TTL to
/// apply, which the manager computed from its expiry policy (the sliding TTL,
/// capped by a maximum lifetime). Storage holds data, never live objects: a
/// session read is a snapshot, and only an explicit write changes what is
/// stored.
///
/// **Deadlines belong to the storage.** The manager adds no timer: each
/// operation must end by itself within a bound the storage documents and
/// enforces (Redis: its command timeout), failing with
/// [`Error::Timeout`](crate::Error::Timeout) when the backend does not answer
/// in time. Only the storage knows what one operation sends and how long each
/// step may take; a second timer around it would cost a timer registration
/// per call and could only disagree.
pub trait Storage: Send + Sync + 'static {
    /// Inserts `session` with `ttl` at [`Revision::FIRST`] if no live
    /// session has its id; returns whether it did. The manager hands it
    /// sessions already at [`Revision::FIRST`].
    fn create(&self, session: Arc<Session>, ttl: Ttl) -> impl Future<Output = Result<bool>> + Send;

    /// Replaces a live session at the next revision, giving it `ttl`;
    /// returns the session as stored, or `None` when none was there to
    /// replace.
    fn update(
        &self,
        session: Arc<Session>,
        ttl: Ttl,
    ) -> impl Future<Output = Result<Option<Arc<Session>>>> + Send;

    /// Inserts `session` (at [`Revision::FIRST`]) or replaces it (at the
    /// next revision), giving it `ttl`; returns the session as stored.
    #[doc(alias = "Store")]
    fn upsert(
        &self,
        session: Arc<Session>,
        ttl: Ttl,
    ) -> impl Future<Output = Result<Arc<Session>>> + Send;

    /// Replaces a live session only if its stored revision is `expected`,
    /// at the next revision, giving it `ttl`. One atomic step: no write can
    /// land between the comparison and the write.
    fn update_if(
        &self,
        session: Arc<Session>,
        expected: Revision,
        ttl: Ttl,
    ) -> impl Future<Output = Result<Conditional>> + Send;

    /// The live sessions of `owner`, in no particular order, without
    /// touching their TTLs. A session that expired or was deleted is never
    /// listed. O(sessions of that owner).
    fn list_owned(&self, owner: &Owner) -> impl Future<Output = Result<Vec<Arc<Session>>>> + Send;

    /// Removes every session of `owner` that was live when the call started,
    /// and returns their ids. A session of that owner created while the call
    /// runs may survive it; if it does, it is listed by
    /// [`list_owned`](Storage::list_owned) afterwards. O(sessions of that
    /// owner).
    fn revoke_owned(&self, owner: &Owner) -> impl Future<Output = Result<Vec<SessionId>>> + Send;

    /// Reads a live session and gives it `ttl` from now.
    #[doc(alias = "Load")]
    fn get(
        &self,
        id: &SessionId,
        ttl: Ttl,
    ) -> impl Future<Output = Result<Option<Arc<Session>>>> + Send;

    /// A read answered from this storage's memory without waiting, under
    /// the contract of [`get`](Storage::get) (the session was live, and
    /// still has at least what `get` would leave it to live), or `None`
    /// when only `get` can answer: the storage keeps no copy, or its copy
    /// may be out of date.
    ///
    /// The manager asks this first, so that a storage with a local cache in
    /// front of a server answers hot reads without a future to box. The
    /// default keeps no copy.
    fn get_cached(&self, id: &SessionId, ttl: Ttl) -> Option<Arc<Session>> {
        let _ = (id, ttl);
        None
    }

    /// Shortens a live session's remaining life to at most `ttl` (never
    /// lengthens it); returns whether the session is still alive.
    fn expire(&self, id: &SessionId, ttl: Ttl) -> impl Future<Output = Result<bool>> + Send;

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

    /// Counts the live sessions; [`Description::count_is_cheap`] says what it
    /// costs.
    fn count(&self) -> impl Future<Output = Result<usize>> + Send;

    /// Checks that the backend answers, without touching any session: a
    /// health check.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// What this storage is, for health checks, logs and `Debug` output.
    fn describe(&self) -> Description;

    /// Releases the storage's resources. Later operations fail with
    /// [`Error::Closed`](crate::Error::Closed). Idempotent.
    fn close(&self) -> impl Future<Output = Result<()>> + Send;

    /// The synchronous form of this storage, if its operations never wait.
    ///
    /// A storage that answers every operation without awaiting (an
    /// in-process map) returns itself here, and the manager then calls it
    /// directly: no future to box, nothing to poll. Storages that wait on a
    /// network keep the default, `None`.
    fn as_sync(&self) -> Option<&dyn SyncStorage> {
        None
    }

    /// Pushes the storage's own figures (a local cache's counters, say) to
    /// the `metrics` facade, as they are now. Called by
    /// [`Manager::record_metrics`](crate::Manager::record_metrics), which an
    /// application calls before each scrape; cheap, never touches a
    /// session. Nothing by default.
    fn record_metrics(&self) {}
}

/// What a conditional write ([`Storage::update_if`]) did: one of exactly
/// three outcomes (an error is the fourth, and says whether the write may
/// have been applied: [`Error::is_outcome_unknown`](crate::Error::is_outcome_unknown)).
#[derive(Clone, Debug, PartialEq)]
pub enum Conditional {
    /// The stored revision was the expected one: the session was written,
    /// and this is it as stored, at its new revision.
    Written(Arc<Session>),
    /// Another write came first: the session is stored at this revision,
    /// and nothing was written.
    Conflict(Revision),
    /// No live session has the id: nothing was written, and nothing was
    /// created.
    Absent,
}

/// A [`Storage`] whose operations complete without waiting, exposed through
/// [`Storage::as_sync`]: the same contract, method for method, called
/// synchronously.
pub trait SyncStorage: Send + Sync {
    /// [`Storage::create`], synchronously.
    fn create(&self, session: Arc<Session>, ttl: Ttl) -> Result<bool>;
    /// [`Storage::update`], synchronously.
    fn update(&self, session: Arc<Session>, ttl: Ttl) -> Result<Option<Arc<Session>>>;
    /// [`Storage::upsert`], synchronously.
    fn upsert(&self, session: Arc<Session>, ttl: Ttl) -> Result<Arc<Session>>;
    /// [`Storage::update_if`], synchronously.
    fn update_if(&self, session: Arc<Session>, expected: Revision, ttl: Ttl)
    -> Result<Conditional>;
    /// [`Storage::list_owned`], synchronously.
    fn list_owned(&self, owner: &Owner) -> Result<Vec<Arc<Session>>>;
    /// [`Storage::revoke_owned`], synchronously.
    fn revoke_owned(&self, owner: &Owner) -> Result<Vec<SessionId>>;
    /// [`Storage::get`], synchronously.
    fn get(&self, id: &SessionId, ttl: Ttl) -> Result<Option<Arc<Session>>>;
    /// [`Storage::expire`], synchronously.
    fn expire(&self, id: &SessionId, ttl: Ttl) -> Result<bool>;
    /// [`Storage::delete`], synchronously.
    fn delete(&self, id: &SessionId) -> Result<bool>;
    /// [`Storage::delete_expired`], synchronously. It may take milliseconds
    /// of CPU on a large store; the manager runs it on Tokio's blocking pool.
    fn delete_expired(&self, before: Instant) -> Result<Vec<SessionId>>;
    /// [`Storage::count`], synchronously.
    fn count(&self) -> Result<usize>;
    /// [`Storage::close`], synchronously.
    fn close(&self) -> Result<()>;
}

/// What a storage is: reported by [`Manager::describe`](crate::Manager::describe)
/// for health checks and logs. It names no address, user or secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Description {
    /// The backend's name: `"local"`, `"redis"`, or a custom storage's own.
    pub backend: &'static str,
    /// How the backend is deployed.
    pub topology: Topology,
    /// Whether [`Storage::count`] is cheap enough for a health check (an
    /// in-process count, not a scan of a server's key space).
    pub count_is_cheap: bool,
}

impl Description {
    /// A description of a storage named `backend` with `topology`.
    pub const fn new(backend: &'static str, topology: Topology, count_is_cheap: bool) -> Self {
        Self {
            backend,
            topology,
            count_is_cheap,
        }
    }
}

/// How a storage backend is deployed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Topology {
    /// In the memory of this process: nothing is shared with other replicas.
    InProcess,
    /// One server.
    Standalone,
    /// A sharded cluster.
    Cluster,
    /// A primary found and followed through sentinels.
    Sentinel,
}

impl Topology {
    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InProcess => "in-process",
            Self::Standalone => "standalone",
            Self::Cluster => "cluster",
            Self::Sentinel => "sentinel",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A boxed future: what the manager's type-erased storage returns.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe form of [`Storage`], implemented for every `Storage`.
///
/// [`AnyStorage`] keeps a storage behind this trait so that the default
/// `Manager` serves any backend; the cost is one boxed future per call of a
/// storage that waits. Storages that never wait are called through
/// [`SyncStorage`] instead and pay nothing.
pub(crate) trait DynStorage: Send + Sync + 'static {
    fn create(&self, session: Arc<Session>, ttl: Ttl) -> BoxFuture<'_, Result<bool>>;
    fn update(
        &self,
        session: Arc<Session>,
        ttl: Ttl,
    ) -> BoxFuture<'_, Result<Option<Arc<Session>>>>;
    fn upsert(&self, session: Arc<Session>, ttl: Ttl) -> BoxFuture<'_, Result<Arc<Session>>>;
    fn update_if(
        &self,
        session: Arc<Session>,
        expected: Revision,
        ttl: Ttl,
    ) -> BoxFuture<'_, Result<Conditional>>;
    fn list_owned<'a>(&'a self, owner: &'a Owner) -> BoxFuture<'a, Result<Vec<Arc<Session>>>>;
    fn revoke_owned<'a>(&'a self, owner: &'a Owner) -> BoxFuture<'a, Result<Vec<SessionId>>>;
    fn get<'a>(
        &'a self,
        id: &'a SessionId,
        ttl: Ttl,
    ) -> BoxFuture<'a, Result<Option<Arc<Session>>>>;
    fn get_cached(&self, id: &SessionId, ttl: Ttl) -> Option<Arc<Session>>;
    fn expire<'a>(&'a self, id: &'a SessionId, ttl: Ttl) -> BoxFuture<'a, Result<bool>>;
    fn delete<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<bool>>;
    fn delete_expired(&self, before: Instant) -> BoxFuture<'_, Result<Vec<SessionId>>>;
    fn count(&self) -> BoxFuture<'_, Result<usize>>;
    fn ping(&self) -> BoxFuture<'_, Result<()>>;
    fn close(&self) -> BoxFuture<'_, Result<()>>;
    fn describe(&self) -> Description;
    fn as_sync(&self) -> Option<&dyn SyncStorage>;
    fn record_metrics(&self);
}

impl<S: Storage> DynStorage for S {
    fn create(&self, session: Arc<Session>, ttl: Ttl) -> BoxFuture<'_, Result<bool>> {
        Box::pin(Storage::create(self, session, ttl))
    }
    fn update(
        &self,
        session: Arc<Session>,
        ttl: Ttl,
    ) -> BoxFuture<'_, Result<Option<Arc<Session>>>> {
        Box::pin(Storage::update(self, session, ttl))
    }
    fn upsert(&self, session: Arc<Session>, ttl: Ttl) -> BoxFuture<'_, Result<Arc<Session>>> {
        Box::pin(Storage::upsert(self, session, ttl))
    }
    fn update_if(
        &self,
        session: Arc<Session>,
        expected: Revision,
        ttl: Ttl,
    ) -> BoxFuture<'_, Result<Conditional>> {
        Box::pin(Storage::update_if(self, session, expected, ttl))
    }
    fn list_owned<'a>(&'a self, owner: &'a Owner) -> BoxFuture<'a, Result<Vec<Arc<Session>>>> {
        Box::pin(Storage::list_owned(self, owner))
    }
    fn revoke_owned<'a>(&'a self, owner: &'a Owner) -> BoxFuture<'a, Result<Vec<SessionId>>> {
        Box::pin(Storage::revoke_owned(self, owner))
    }
    fn get<'a>(
        &'a self,
        id: &'a SessionId,
        ttl: Ttl,
    ) -> BoxFuture<'a, Result<Option<Arc<Session>>>> {
        Box::pin(Storage::get(self, id, ttl))
    }
    fn get_cached(&self, id: &SessionId, ttl: Ttl) -> Option<Arc<Session>> {
        Storage::get_cached(self, id, ttl)
    }
    fn expire<'a>(&'a self, id: &'a SessionId, ttl: Ttl) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Storage::expire(self, id, ttl))
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
    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Storage::ping(self))
    }
    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Storage::close(self))
    }
    fn describe(&self) -> Description {
        Storage::describe(self)
    }
    fn as_sync(&self) -> Option<&dyn SyncStorage> {
        Storage::as_sync(self)
    }
    fn record_metrics(&self) {
        Storage::record_metrics(self);
    }
}

/// Any [`Storage`] behind one type, chosen at run time: the default
/// parameter of [`Manager`](crate::Manager), so that one manager type
/// serves every backend a configuration can pick.
///
/// Each operation of a storage that waits returns a boxed future (about
/// 7 KB for a Redis read, and an allocation that size on every call). Where
/// the storage type is known when the code is written,
/// [`Manager::typed_builder`](crate::Manager::typed_builder) keeps it and
/// the manager polls the storage's own futures in place. A storage that
/// never waits ([`Storage::as_sync`]) is called directly either way.
pub struct AnyStorage(Box<dyn DynStorage>);

impl AnyStorage {
    /// Erases `storage`'s type.
    pub fn new(storage: impl Storage) -> Self {
        Self(Box::new(storage))
    }
}

impl fmt::Debug for AnyStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AnyStorage")
            .field(&self.0.describe())
            .finish()
    }
}

impl Storage for AnyStorage {
    fn create(&self, session: Arc<Session>, ttl: Ttl) -> impl Future<Output = Result<bool>> + Send {
        self.0.create(session, ttl)
    }
    fn update(
        &self,
        session: Arc<Session>,
        ttl: Ttl,
    ) -> impl Future<Output = Result<Option<Arc<Session>>>> + Send {
        self.0.update(session, ttl)
    }
    fn upsert(
        &self,
        session: Arc<Session>,
        ttl: Ttl,
    ) -> impl Future<Output = Result<Arc<Session>>> + Send {
        self.0.upsert(session, ttl)
    }
    fn update_if(
        &self,
        session: Arc<Session>,
        expected: Revision,
        ttl: Ttl,
    ) -> impl Future<Output = Result<Conditional>> + Send {
        self.0.update_if(session, expected, ttl)
    }
    // The boxed future borrows both `self` and the argument under one
    // lifetime, which an opaque return type cannot name: awaiting it inside
    // an `async fn` is the way to return it.
    async fn list_owned(&self, owner: &Owner) -> Result<Vec<Arc<Session>>> {
        self.0.list_owned(owner).await
    }
    async fn revoke_owned(&self, owner: &Owner) -> Result<Vec<SessionId>> {
        self.0.revoke_owned(owner).await
    }
    async fn get(&self, id: &SessionId, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        self.0.get(id, ttl).await
    }
    fn get_cached(&self, id: &SessionId, ttl: Ttl) -> Option<Arc<Session>> {
        self.0.get_cached(id, ttl)
    }
    async fn expire(&self, id: &SessionId, ttl: Ttl) -> Result<bool> {
        self.0.expire(id, ttl).await
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.0.delete(id).await
    }
    fn delete_expired(
        &self,
        before: Instant,
    ) -> impl Future<Output = Result<Vec<SessionId>>> + Send {
        self.0.delete_expired(before)
    }
    fn count(&self) -> impl Future<Output = Result<usize>> + Send {
        self.0.count()
    }
    fn ping(&self) -> impl Future<Output = Result<()>> + Send {
        self.0.ping()
    }
    fn describe(&self) -> Description {
        self.0.describe()
    }
    fn close(&self) -> impl Future<Output = Result<()>> + Send {
        self.0.close()
    }
    fn as_sync(&self) -> Option<&dyn SyncStorage> {
        self.0.as_sync()
    }
    fn record_metrics(&self) {
        self.0.record_metrics();
    }
}
