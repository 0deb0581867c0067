//! In-memory session storage: the embedded default backend.
//!
//! [`LocalStorage`] keeps sessions in the memory of one process, for
//! single-replica deployments and tests. It implements the storage contract
//! of `session-core` ([`Storage`]) and exposes its synchronous form
//! ([`SyncStorage`]): every operation completes without waiting, so the
//! manager calls it directly, with no boxed future and no timer.
//!
//! # Layout
//!
//! - [`LocalStorage`]: the storage, on
//! - [`map::ExpiringMap`]: a concurrent map whose entries carry a sliding
//!   expiry deadline. Its module documentation is the concurrency argument
//!   (reads take only a shard read lock; a sweep never evicts an entry read
//!   within its TTL).
//!
//! ```
//! use session_core::{Manager, SessionType, Ttl};
//! use session_local::LocalStorage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), session_core::Error> {
//! let manager = Manager::builder(LocalStorage::new(), Ttl::from_secs(60)?)
//!     .factory(SessionType::Mcp)
//!     .build()?;
//! let id = manager.create().await?.id();
//! assert!(manager.get(&id).await?.is_some());
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod map;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use session_core::{
    Description, Error, Result, Session, SessionId, Storage, SyncStorage, Topology, Ttl,
};
use tokio::time::Instant;

use crate::map::ExpiringMap;

/// In-memory storage for a single process: the embedded default.
///
/// Sessions are kept as `Arc<Session>` in a sharded concurrent map
/// ([`ExpiringMap`]), so a read costs a shard read lock and a reference
/// count, and returns an immutable snapshot. The storage owns each session's
/// expiry deadline (on Tokio's monotonic clock) and pushes it forward on
/// every read and write; an expired session is invisible at once, and
/// [`Storage::delete_expired`] frees its memory. Clones share the same
/// sessions.
#[derive(Clone, Default)]
pub struct LocalStorage {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
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

    /// The number of entries held, including expired ones the sweep has not
    /// freed yet: constant time, for diagnostics (the live count is
    /// [`Storage::count`]).
    pub fn entries(&self) -> usize {
        self.inner.map.len()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl SyncStorage for LocalStorage {
    fn create(&self, session: Arc<Session>, ttl: Ttl) -> Result<bool> {
        self.check_open()?;
        Ok(self
            .inner
            .map
            .insert_if_absent(session.id(), session, ttl.get()))
    }

    fn update(&self, session: Arc<Session>, ttl: Ttl) -> Result<bool> {
        self.check_open()?;
        let id = session.id();
        Ok(self.inner.map.replace_if_present(&id, session, ttl.get()))
    }

    fn upsert(&self, session: Arc<Session>, ttl: Ttl) -> Result<()> {
        self.check_open()?;
        self.inner.map.upsert(session.id(), session, ttl.get());
        Ok(())
    }

    fn get(&self, id: &SessionId, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        self.check_open()?;
        Ok(self.inner.map.get_and_refresh(id, ttl.get()))
    }

    fn expire(&self, id: &SessionId, ttl: Ttl) -> Result<bool> {
        self.check_open()?;
        Ok(self.inner.map.cap_deadline(id, ttl.get()))
    }

    fn delete(&self, id: &SessionId) -> Result<bool> {
        self.check_open()?;
        Ok(self.inner.map.remove(id))
    }

    fn delete_expired(&self, before: Instant) -> Result<Vec<SessionId>> {
        self.check_open()?;
        Ok(self.inner.map.sweep(before))
    }

    /// Exact, O(sessions).
    fn count(&self) -> Result<usize> {
        self.check_open()?;
        Ok(self.inner.map.count_live())
    }

    /// Empties the store; every clone is closed. Idempotent.
    fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.map.clear();
        Ok(())
    }
}

impl Storage for LocalStorage {
    async fn create(&self, session: Arc<Session>, ttl: Ttl) -> Result<bool> {
        SyncStorage::create(self, session, ttl)
    }
    async fn update(&self, session: Arc<Session>, ttl: Ttl) -> Result<bool> {
        SyncStorage::update(self, session, ttl)
    }
    async fn upsert(&self, session: Arc<Session>, ttl: Ttl) -> Result<()> {
        SyncStorage::upsert(self, session, ttl)
    }
    async fn get(&self, id: &SessionId, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        SyncStorage::get(self, id, ttl)
    }
    async fn expire(&self, id: &SessionId, ttl: Ttl) -> Result<bool> {
        SyncStorage::expire(self, id, ttl)
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        SyncStorage::delete(self, id)
    }
    async fn delete_expired(&self, before: Instant) -> Result<Vec<SessionId>> {
        SyncStorage::delete_expired(self, before)
    }
    async fn count(&self) -> Result<usize> {
        SyncStorage::count(self)
    }
    async fn ping(&self) -> Result<()> {
        self.check_open()
    }
    fn describe(&self) -> Description {
        Description::new("local", Topology::InProcess, true)
    }
    async fn close(&self) -> Result<()> {
        SyncStorage::close(self)
    }
    fn as_sync(&self) -> Option<&dyn SyncStorage> {
        Some(self)
    }
}
