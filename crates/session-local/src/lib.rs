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

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;
use session_core::{
    Conditional, Description, Error, Owner, Result, Revision, Session, SessionId, Storage,
    SyncStorage, Topology, Ttl,
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
///
/// Writes that compare (update, conditional update, upsert) run under the
/// entry's shard lock, so a revision is compared and advanced in one step.
/// Owned sessions are also indexed by owner: an owner's entry in the index
/// is locked while its session is inserted, so a listing or a revocation
/// sees a new owned session either in both the map and the index or in
/// neither. Deletes and sweeps take ids out of the index after the map.
#[derive(Clone, Default)]
pub struct LocalStorage {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    map: ExpiringMap<SessionId, Arc<Session>>,
    /// The ids of each owner's sessions. It may still hold an id whose
    /// session is gone (a delete between the map and the index); listing
    /// checks every id against the map and drops those.
    owners: DashMap<Owner, HashSet<SessionId>>,
    closed: AtomicBool,
}

/// Why a comparing write left the stored session as it was.
enum Refusal {
    Conflict(Revision),
    Invalid(Error),
}

/// The session as written over `current`: at the revision after it, and
/// only if it keeps the owner.
fn successor(current: &Session, mut session: Arc<Session>) -> Result<Arc<Session>> {
    if current.owner() != session.owner() {
        return Err(owner_change(&session));
    }
    let revision = current.revision().next()?;
    // The manager hands over the only reference, so this edits in place.
    Arc::make_mut(&mut session).set_revision(revision);
    Ok(session)
}

fn owner_change(session: &Session) -> Error {
    Error::InvalidInput(format!(
        "a write would change the owner of session {}; an owner is fixed when the session is created",
        session.id()
    ))
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

    /// Whether a live session is stored under `id`, found without reading
    /// it: its deadline does not slide. For tests and diagnostics, like
    /// [`entries`](LocalStorage::entries); it works on a closed store too
    /// (which holds nothing).
    pub fn contains(&self, id: &SessionId) -> bool {
        self.inner.map.peek(id).is_some()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Takes `id` out of the index of `owner`, and the owner out of the
    /// index when it has no session left.
    fn unindex(&self, owner: &Owner, id: &SessionId) {
        if let Some(mut ids) = self.inner.owners.get_mut(owner) {
            ids.remove(id);
        }
        self.inner.owners.remove_if(owner, |_, ids| ids.is_empty());
    }
}

impl SyncStorage for LocalStorage {
    fn create(&self, mut session: Arc<Session>, ttl: Ttl) -> Result<bool> {
        self.check_open()?;
        if session.revision() != Revision::FIRST {
            Arc::make_mut(&mut session).set_revision(Revision::FIRST);
        }
        let id = session.id();
        let Some(owner) = session.owner().cloned() else {
            return Ok(self.inner.map.insert_if_absent(id, session, ttl.get()));
        };
        // The owner's index entry stays locked until the session is in the
        // map: see the type's documentation.
        let mut ids = self.inner.owners.entry(owner.clone()).or_default();
        let created = self.inner.map.insert_if_absent(id, session, ttl.get());
        if created {
            ids.insert(id);
        } else {
            drop(ids);
            // The entry this call made for nothing.
            self.inner.owners.remove_if(&owner, |_, ids| ids.is_empty());
        }
        Ok(created)
    }

    fn update(&self, session: Arc<Session>, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        self.check_open()?;
        let id = session.id();
        self.inner
            .map
            .replace_with(&id, ttl.get(), |current| successor(current, session))
            .transpose()
    }

    fn upsert(&self, session: Arc<Session>, ttl: Ttl) -> Result<Arc<Session>> {
        self.check_open()?;
        let id = session.id();
        let write = |session: Arc<Session>| {
            self.inner
                .map
                .upsert_with(id, ttl.get(), |current| match current {
                    Some(current) => successor(current, session),
                    None => {
                        let mut session = session;
                        Arc::make_mut(&mut session).set_revision(Revision::FIRST);
                        Ok(session)
                    }
                })
        };
        let Some(owner) = session.owner().cloned() else {
            return write(session);
        };
        let mut ids = self.inner.owners.entry(owner.clone()).or_default();
        match write(session) {
            Ok(stored) => {
                ids.insert(id);
                Ok(stored)
            }
            Err(error) => {
                drop(ids);
                // A refused write (one that would change the owner) must not
                // leave behind the index entry this call made: each refusal
                // for a new owner would otherwise keep one for good.
                self.inner.owners.remove_if(&owner, |_, ids| ids.is_empty());
                Err(error)
            }
        }
    }

    fn update_if(
        &self,
        session: Arc<Session>,
        expected: Revision,
        ttl: Ttl,
    ) -> Result<Conditional> {
        self.check_open()?;
        let id = session.id();
        let outcome = self.inner.map.replace_with(&id, ttl.get(), |current| {
            if current.revision() != expected {
                return Err(Refusal::Conflict(current.revision()));
            }
            successor(current, session).map_err(Refusal::Invalid)
        });
        match outcome {
            None => Ok(Conditional::Absent),
            Some(Ok(stored)) => Ok(Conditional::Written(stored)),
            Some(Err(Refusal::Conflict(current))) => Ok(Conditional::Conflict(current)),
            Some(Err(Refusal::Invalid(error))) => Err(error),
        }
    }

    /// O(sessions of the owner), under the lock of the owner's index entry.
    fn list_owned(&self, owner: &Owner) -> Result<Vec<Arc<Session>>> {
        self.check_open()?;
        let mut live = Vec::new();
        if let Some(mut ids) = self.inner.owners.get_mut(owner) {
            ids.retain(|id| match self.inner.map.peek(id) {
                Some(session) if session.owner() == Some(owner) => {
                    live.push(session);
                    true
                }
                _ => false,
            });
        }
        self.inner.owners.remove_if(owner, |_, ids| ids.is_empty());
        Ok(live)
    }

    /// Takes the owner's whole index entry in one step, then removes each of
    /// its sessions: a session created after that step starts a new entry,
    /// survives, and is listed.
    fn revoke_owned(&self, owner: &Owner) -> Result<Vec<SessionId>> {
        self.check_open()?;
        let Some((_, ids)) = self.inner.owners.remove(owner) else {
            return Ok(Vec::new());
        };
        Ok(ids
            .into_iter()
            .filter(|id| {
                self.inner
                    .map
                    .remove_live_if(id, |session| session.owner() == Some(owner))
            })
            .collect())
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
        let Some((session, alive)) = self.inner.map.take(id) else {
            return Ok(false);
        };
        if let Some(owner) = session.owner() {
            self.unindex(owner, id);
        }
        Ok(alive)
    }

    fn delete_expired(&self, before: Instant) -> Result<Vec<SessionId>> {
        self.check_open()?;
        let swept = self.inner.map.sweep_entries(before);
        Ok(swept
            .into_iter()
            .map(|(id, session)| {
                if let Some(owner) = session.owner() {
                    self.unindex(owner, &id);
                }
                id
            })
            .collect())
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
        self.inner.owners.clear();
        Ok(())
    }
}

impl Storage for LocalStorage {
    async fn create(&self, session: Arc<Session>, ttl: Ttl) -> Result<bool> {
        SyncStorage::create(self, session, ttl)
    }
    async fn update(&self, session: Arc<Session>, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        SyncStorage::update(self, session, ttl)
    }
    async fn upsert(&self, session: Arc<Session>, ttl: Ttl) -> Result<Arc<Session>> {
        SyncStorage::upsert(self, session, ttl)
    }
    async fn update_if(
        &self,
        session: Arc<Session>,
        expected: Revision,
        ttl: Ttl,
    ) -> Result<Conditional> {
        SyncStorage::update_if(self, session, expected, ttl)
    }
    async fn list_owned(&self, owner: &Owner) -> Result<Vec<Arc<Session>>> {
        SyncStorage::list_owned(self, owner)
    }
    async fn revoke_owned(&self, owner: &Owner) -> Result<Vec<SessionId>> {
        SyncStorage::revoke_owned(self, owner)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use session_core::SessionType;

    /// An upsert refused for changing the owner leaves no entry in the owner
    /// index: before the fix, every refusal naming a new owner kept an empty
    /// entry until that owner was listed or revoked.
    #[tokio::test]
    async fn a_refused_upsert_leaves_no_owner_index_entry() {
        let storage = LocalStorage::new();
        let ttl = Ttl::from_secs(60).unwrap();
        let ownerless = Session::new(SessionId::new(), SessionType::Mcp);
        assert!(SyncStorage::create(&storage, Arc::new(ownerless.clone()), ttl).unwrap());
        for subject in ["a", "b", "c"] {
            let owner = Owner::new("https://issuer.test", subject).unwrap();
            let forged = Session::new_owned(ownerless.id(), SessionType::Mcp, owner);
            assert!(matches!(
                SyncStorage::upsert(&storage, Arc::new(forged), ttl),
                Err(Error::InvalidInput(_))
            ));
        }
        assert!(storage.inner.owners.is_empty());
    }
}
