//! Small helpers that keep the cases short: one call per step, each failing
//! with a message that says which step failed.

use std::sync::Arc;
use std::time::Duration;

use session_core::{Manager, Session, SessionId, SessionType, Storage, Ttl};

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
