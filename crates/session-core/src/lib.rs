//! Session management for horizontally scaled services: the contract.
//!
//! This crate holds what every backend and every caller agree on, and
//! nothing else: no storage implementation, no configuration format, no
//! network client.
//!
//! # Layout
//!
//! - [`SessionId`], [`SessionType`] and [`Session`]: the data. A session is a
//!   plain serializable record; storage never holds live objects. A session
//!   may belong to an [`Owner`] (fixed at creation) and is stored at a
//!   [`Revision`] that every write advances.
//! - [`Ttl`] and [`Expiry`]: the expiry policy (a sliding TTL, an optional
//!   absolute lifetime).
//! - [`Storage`]: the async contract every backend implements, with its
//!   atomicity spelled out (create = insert-if-absent, update =
//!   write-if-present, get refreshes the sliding TTL); [`SyncStorage`] is the
//!   capability of a storage that never waits. The in-memory backend is the
//!   `session-local` crate, Redis is `session-redis`.
//! - [`Manager`]: creates, reads, updates and expires sessions over any
//!   storage, with atomic create, no resurrection by update, timestamps from
//!   an injectable [`clock`], and a cleanup task that reports what expired.
//! - [`codec`]: the versioned stored-value format (bincode or JSON bodies);
//!   [`seal`]: the encrypted envelope around a stored body, and the
//!   [`seal::Keyring`] that rotates its keys.
//! - [`Error`]: one typed error for every layer.
//!
//! # Example
//!
//! With the in-memory storage of the `session-local` crate (applications
//! usually build their manager from configuration with `session-factory`):
//!
//! ```
//! use session_core::{Manager, SessionType, Ttl};
//! use session_local::LocalStorage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), session_core::Error> {
//! let manager = Manager::builder(LocalStorage::new(), Ttl::from_secs(30 * 60)?)
//!     .factory(SessionType::Streamable)
//!     .build()?;
//! let session = manager.create().await?;
//!
//! let mut edited = (*session).clone();
//! edited.set_metadata("user", "alice");
//! assert!(manager.update(edited).await?);
//!
//! let found = manager.get(&session.id()).await?.expect("it exists");
//! assert_eq!(found.get_metadata("user"), Some("alice"));
//! manager.close().await?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod clock;
pub mod codec;
mod error;
mod expiry;
mod id;
mod manager;
mod metadata;
pub mod metrics;
mod owner;
pub mod seal;
mod session;
mod storage;

pub use codec::{Codec, CodecError};
pub use error::{BackendErrorKind, ConfigError, Error, Operation, Result};
pub use expiry::{Expiry, Ttl};
pub use id::SessionId;
pub use manager::{
    DEFAULT_MODIFY_ATTEMPTS, ExpiredCallback, Factory, IntoFactory, Manager, ManagerBuilder,
};
pub use owner::{MAX_OWNER_PART_LEN, Owner, Revision};
pub use session::{Session, SessionType};
pub use storage::{AnyStorage, Conditional, Description, Storage, SyncStorage, Topology};
