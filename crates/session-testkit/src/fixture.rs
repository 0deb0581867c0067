//! Small helpers that keep the cases short: one call per step, each failing
//! with a message that says which step failed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use session_core::{
    Conditional, Manager, Owner, Revision, Session, SessionId, SessionType, Storage, Ttl,
};

use crate::{Harness, TokioClock};

/// One storage handle of a harness, with the harness's TTL.
pub struct Fixture<S> {
    /// The storage.
    pub storage: S,
    /// The TTL every call applies.
    pub ttl: Ttl,
}

impl<S: Storage> Fixture<S> {
    /// A new handle on the harness's sessions.
    pub async fn open<H: Harness<Storage = S>>(harness: &H) -> Self {
        Self {
            storage: harness.open().await,
            ttl: harness.ttl(),
        }
    }

    /// Creates `session`; returns whether it was created.
    pub async fn create(&self, session: &Session) -> bool {
        self.storage
            .create(Arc::new(session.clone()), self.ttl)
            .await
            .expect("create failed")
    }

    /// Writes `session` if it exists; returns whether it did.
    pub async fn update(&self, session: &Session) -> bool {
        self.storage
            .update(Arc::new(session.clone()), self.ttl)
            .await
            .expect("update failed")
            .is_some()
    }

    /// Writes `session` whether or not it exists.
    pub async fn upsert(&self, session: &Session) {
        self.storage
            .upsert(Arc::new(session.clone()), self.ttl)
            .await
            .expect("upsert failed");
    }

    /// Reads session `id` (sliding its TTL).
    pub async fn get(&self, id: &SessionId) -> Option<Arc<Session>> {
        self.storage.get(id, self.ttl).await.expect("get failed")
    }

    /// Reads session `id`, which must exist.
    pub async fn must_get(&self, id: &SessionId) -> Arc<Session> {
        self.get(id)
            .await
            .unwrap_or_else(|| panic!("session {id} is missing"))
    }

    /// Whether session `id` exists (reading it slides its TTL).
    pub async fn exists(&self, id: &SessionId) -> bool {
        self.get(id).await.is_some()
    }

    /// Deletes session `id`; returns whether it existed.
    pub async fn delete(&self, id: &SessionId) -> bool {
        self.storage.delete(id).await.expect("delete failed")
    }

    /// Counts the live sessions.
    pub async fn count(&self) -> usize {
        self.storage.count().await.expect("count failed")
    }

    /// Writes `session` if it is stored at revision `expected`.
    pub async fn update_if(&self, session: &Session, expected: Revision) -> Conditional {
        self.storage
            .update_if(Arc::new(session.clone()), expected, self.ttl)
            .await
            .expect("update_if failed")
    }

    /// The ids of the live sessions of `owner`, after checking that each
    /// listed session does belong to `owner` and is listed once.
    pub async fn owned_ids(&self, owner: &Owner) -> BTreeSet<SessionId> {
        let listed = self
            .storage
            .list_owned(owner)
            .await
            .expect("list_owned failed");
        let ids: BTreeSet<SessionId> = listed.iter().map(|session| session.id()).collect();
        assert_eq!(ids.len(), listed.len(), "a session was listed twice");
        for session in &listed {
            assert_eq!(
                session.owner(),
                Some(owner),
                "list_owned of {owner} returned another owner's session {}",
                session.id()
            );
        }
        ids
    }

    /// Revokes every session of `owner`; returns the ids removed, after
    /// checking that none is reported twice.
    pub async fn revoke_owned(&self, owner: &Owner) -> BTreeSet<SessionId> {
        let removed = self
            .storage
            .revoke_owned(owner)
            .await
            .expect("revoke_owned failed");
        let ids: BTreeSet<SessionId> = removed.iter().copied().collect();
        assert_eq!(ids.len(), removed.len(), "a revoked id was reported twice");
        ids
    }
}

/// Panics if the harness can tell that a value is stored for `id`: the
/// check beneath the storage's reads that a refused or conditional write
/// left nothing behind. A harness that cannot tell answers `None`, and the
/// reads the caller makes are then the whole check.
pub(crate) async fn assert_nothing_stored<H: Harness>(harness: &H, id: &SessionId, after: &str) {
    assert_ne!(
        harness.raw_exists(id).await,
        Some(true),
        "a value is stored for session {id} after {after}"
    );
}

/// An owner with a fixed test issuer and the subject `subject`.
pub(crate) fn owner(subject: &str) -> Owner {
    Owner::new("https://issuer.test", subject).expect("a valid owner")
}

/// A new session of type `kind` with a random id.
pub(crate) fn session(kind: SessionType) -> Session {
    Session::new(SessionId::new(), kind)
}

/// A fraction of the harness TTL.
pub(crate) fn ttl_times<H: Harness>(harness: &H, factor: f64) -> Duration {
    harness.ttl().get().mul_f64(factor)
}

/// A manager on a new handle of the harness, whose factory makes streamable
/// sessions marked `made-by = factory`, with timestamps from Tokio's clock.
pub(crate) async fn manager<H: Harness>(harness: &H) -> Manager {
    Manager::builder(harness.open().await, harness.ttl())
        .factory(|id| {
            let mut session = Session::new(id, SessionType::Streamable);
            session.set_metadata("made-by", "factory");
            session
        })
        .clock(TokioClock::new())
        .build()
        .expect("the default settings are valid")
}
