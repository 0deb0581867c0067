//! Builds a session manager from configuration: on Redis when the
//! configuration has Redis settings, on local (in-process) storage when it
//! has none.
//!
//! This is the crate applications depend on. It re-exports the contract
//! (`session-core`), the configuration (`session-config`) and the local
//! storage (`session-local`), and adds [`new_manager`], the one way from
//! configuration to a [`Manager`]. Swapping backends is therefore a change
//! of configuration, not of code.
//!
//! The Redis client is compiled only with this crate's `redis` cargo feature,
//! so applications that never use Redis never build it, nor any TLS library.
//! Without the feature, a configuration that asks for Redis fails with an
//! error that says how to enable it: it never falls back to local storage
//! silently, which would split a multi-replica deployment into islands.
//!
//! ```
//! use session_factory::{SessionConfig, SessionType, Ttl, new_manager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), session_factory::Error> {
//! // From code; `SessionConfig::load("sessions.toml")?` reads a file, and
//! // `.with_redis(RedisConfig::standalone("127.0.0.1:6379", "mcp:sessions:")?)`
//! // would keep the sessions in Redis (with the `redis` feature).
//! let config = SessionConfig::new(Ttl::from_secs(1800)?);
//! let manager = new_manager(&config, SessionType::Mcp).await?;
//! assert_eq!(manager.describe().backend, "local");
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub use session_config::{self, RedisConfig, SessionConfig};
pub use session_core::*;
pub use session_local::LocalStorage;

/// Builds the manager `config` describes, whose factory makes each new
/// session (a closure, or a [`SessionType`]): on Redis when `config` has
/// Redis settings (the TTL is then the Redis key TTL), on local storage
/// otherwise.
///
/// Fails when Redis cannot be reached with eager connect (the default),
/// within its connect timeout, or when rustls refuses a certificate. Without
/// the `redis` feature, a configuration with Redis settings is an
/// [`Error::Config`] that says how to enable the feature.
#[doc(
    alias = "NewManager",
    alias = "NewTypedManager",
    alias = "NewManagerWithRedis"
)]
pub async fn new_manager(config: &SessionConfig, factory: impl IntoFactory) -> Result<Manager> {
    match config.redis() {
        None => build(config, factory, LocalStorage::new()),
        Some(redis) => build(config, factory, redis_storage(redis).await?),
    }
}

/// The manager of `config` on `storage`.
fn build(
    config: &SessionConfig,
    factory: impl IntoFactory,
    storage: impl Storage,
) -> Result<Manager> {
    Manager::builder(storage, config.ttl())
        .factory(factory)
        .max_lifetime(config.expiry().max_lifetime())
        .cleanup_interval(config.cleanup_interval())
        .build()
}

/// Connects the Redis storage `config` describes.
#[cfg(feature = "redis")]
async fn redis_storage(config: &RedisConfig) -> Result<session_redis::RedisStorage> {
    session_redis::RedisStorage::connect(config).await
}

/// Without the `redis` feature: refuses, with an error that says how to
/// enable the feature. It never falls back to local storage (the return type
/// only makes both bodies fit `new_manager`).
#[cfg(not(feature = "redis"))]
async fn redis_storage(_config: &RedisConfig) -> Result<LocalStorage> {
    Err(Error::config(
        "redis",
        "Redis storage was requested but this build of session-factory has no Redis support: \
         enable its `redis` cargo feature (session-factory = { features = [\"redis\"] })",
    ))
}

/// The Redis backend, with the `redis` feature.
#[cfg(feature = "redis")]
pub use session_redis::{self, RedisStorage};
