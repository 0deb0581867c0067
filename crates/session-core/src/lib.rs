//! Session management for horizontally scaled services: the core.
//!
//! # Layout
//!
//! - [`SessionId`], [`SessionType`] and [`Session`]: the data. A session is a
//!   plain serializable record; storage never holds live objects.
//! - [`Storage`]: the async contract every backend implements, with its
//!   atomicity spelled out (create = insert-if-absent, update =
//!   write-if-present, load refreshes the sliding TTL); [`DynStorage`] is its
//!   object-safe form. [`LocalStorage`] is the in-memory implementation, on
//!   the map of the `session-local` crate.
//! - [`Manager`]: the Go package's manager with its flaws fixed: atomic
//!   create, no resurrection by update, count on every backend, timeouts on
//!   every call, a cleanup task that reports what expired.
//! - [`codec`]: the versioned stored-value format (bincode or JSON bodies).
//! - [`config`]: `RedisConfig` as plain data, validated without a network, so
//!   that code without a Redis client can carry it.
//! - [`Error`]: one typed error for every layer.
//! - `testkit` (feature): the conformance suite every backend runs.
//!
//! # Example
//!
//! ```
//! use session_core::{Manager, SessionType, Ttl};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), session_core::Error> {
//! let manager = Manager::typed(Ttl::from_secs(30 * 60)?, SessionType::Streamable);
//! let session = manager.create().await?;
//!
//! let mut edited = (*session).clone();
//! edited.set_metadata("user", "alice");
//! assert!(manager.update(edited).await?);
//!
//! let found = manager.get(&session.id()).await?.expect("it exists");
//! assert_eq!(found.get_metadata("user"), Some("alice"));
//! manager.shutdown().await?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod clock;
pub mod codec;
pub mod config;
mod error;
mod id;
mod manager;
mod session;
mod storage;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use codec::{Codec, CodecError};
pub use config::RedisConfig;
pub use error::{BackendErrorKind, Error, Result};
pub use id::SessionId;
pub use manager::{
    DEFAULT_CLEANUP_TIMEOUT, DEFAULT_OPERATION_TIMEOUT, ExpiredCallback, Factory, Manager,
    ManagerBuilder,
};
pub use session::{Session, SessionType};
pub use storage::{BoxFuture, DynStorage, Expiry, LocalStorage, Storage, Ttl};
