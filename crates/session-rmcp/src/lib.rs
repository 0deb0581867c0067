//! An [rmcp] `SessionStore` backed by a session [`Manager`], so that
//! every replica of a streamable-HTTP MCP server can restore a session that
//! another replica created.
//!
//! rmcp keeps live sessions in memory and, when a request names a session it
//! does not know, asks its `SessionStore` for the session's saved
//! `initialize` parameters and replays the handshake. It ships no shared
//! store; [`ManagerSessionStore`] is one, on whatever storage the manager has
//! (Redis for several replicas, local storage for one):
//!
//! ```no_run
//! # async fn example() -> Result<(), session_core::Error> {
//! use std::sync::Arc;
//! use session_core::{Manager, SessionType, Ttl};
//! use session_local::LocalStorage;
//! use session_rmcp::ManagerSessionStore;
//!
//! let manager = Manager::builder(LocalStorage::new(), Ttl::from_secs(1800)?)
//!     .factory(SessionType::Streamable)
//!     .build()?;
//! let store = Arc::new(ManagerSessionStore::new(manager));
//! // let mut config = StreamableHttpServerConfig::default();
//! // config.session_store = Some(store);
//! # let _ = store;
//! # Ok(())
//! # }
//! ```
//!
//! The rmcp `SessionState` is kept as the session's typed user data (JSON,
//! since it holds arbitrary JSON values); the session's metadata belongs to
//! the application and survives every write this store makes. Each load
//! refreshes the session's sliding TTL.
//!
//! # Owners
//!
//! rmcp's `SessionStore::store` sees a session id and rmcp's state, not the
//! HTTP request, so it cannot know who opened the session. A server that
//! binds sessions to users runs the request inside [`with_owner`]: a session
//! this store creates while that future runs is owned by the given owner
//! (rmcp saves a new session while it serves the `initialize` request, in
//! the request's own task, so the task-local value reaches it). Outside
//! [`with_owner`] sessions are created without owner, as before.
//!
//! Errors are the manager's typed
//! [`session_core::Error`], boxed as rmcp's `SessionStoreError`, so a caller
//! can downcast them; a session id that is not a UUID is
//! [`session_core::Error::InvalidInput`].

#![deny(missing_docs)]

#[cfg(feature = "redis")]
pub mod resumable;
#[cfg(feature = "redis")]
pub use resumable::{ResumableSessions, ResumeSettings, StreamError};

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};
use session_core::{Error, Manager, Owner, Session, SessionId, SessionType};

tokio::task_local! {
    /// The owner of the sessions created in the current request; see
    /// [`with_owner`].
    static OWNER: Owner;
}

/// Runs `future` (an rmcp request) so that a session a
/// [`ManagerSessionStore`] creates during it is owned by `owner`; see the
/// [crate documentation](crate#owners).
pub async fn with_owner<F: std::future::Future>(owner: Owner, future: F) -> F::Output {
    OWNER.scope(owner, future).await
}

/// An rmcp `SessionStore` on a session manager. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ManagerSessionStore {
    manager: Manager,
}

impl ManagerSessionStore {
    /// A store on `manager`.
    pub fn new(manager: Manager) -> Self {
        Self { manager }
    }

    /// The manager, for the application's own use of the same sessions.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Saves `state` in the session `id`, keeping whatever else the session
    /// record holds.
    async fn save(&self, id: SessionId, state: &SessionState) -> Result<(), Error> {
        // Two attempts: a session deleted between the read and the write is
        // created afresh, and a session created concurrently is updated.
        for _ in 0..2 {
            if let Some(existing) = self.manager.get(&id).await? {
                let mut session = Arc::unwrap_or_clone(existing);
                session.set_data(state)?;
                if self.manager.update(session).await? {
                    return Ok(());
                }
            }
            let mut session = match OWNER.try_with(Owner::clone) {
                Ok(owner) => Session::new_owned(id, SessionType::Streamable, owner),
                Err(_) => Session::new(id, SessionType::Streamable),
            };
            session.set_data(state)?;
            match self.manager.create_from(session).await {
                Ok(_) => return Ok(()),
                Err(Error::AlreadyExists(_)) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(Error::backend(
            session_core::BackendErrorKind::Other,
            format!("session {id} kept changing while its rmcp state was saved"),
        ))
    }
}

fn parse(session_id: &str) -> Result<SessionId, SessionStoreError> {
    SessionId::parse(session_id).map_err(Into::into)
}

#[async_trait::async_trait]
impl SessionStore for ManagerSessionStore {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let id = parse(session_id)?;
        let Some(session) = self.manager.get(&id).await? else {
            return Ok(None);
        };
        // A session record without rmcp state was made by other code; rmcp
        // cannot restore it, so to rmcp it does not exist.
        Ok(session.data::<SessionState>().map_err(Error::from)?)
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let id = parse(session_id)?;
        Ok(self.save(id, state).await?)
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        let id = parse(session_id)?;
        self.manager.delete(&id).await?;
        Ok(())
    }
}
