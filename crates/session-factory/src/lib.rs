//! Picks the session storage from configuration.
//!
//! This is the crate applications depend on. It re-exports the whole of
//! `session-core` and adds [`new_manager`], which builds a [`Manager`] on
//! Redis when given `Some(RedisConfig)` and on local (in-process) storage when
//! given `None`. Swapping backends is therefore a change of configuration,
//! not of code.
//!
//! The Redis client is compiled only with this crate's `redis` cargo feature,
//! so applications that never use Redis never build it, nor any TLS library.
//! Without the feature, a configuration that asks for Redis fails with an
//! error that says how to enable it: it never falls back to local storage
//! silently, which would split a multi-replica deployment into islands.
//!
//! ```
//! use std::time::Duration;
//! use session_factory::{new_manager, Session, SessionType};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), session_factory::Error> {
//! let redis = None; // or Some(RedisConfig::standalone("127.0.0.1:6379", "mcp:sessions:"))
//! let manager = new_manager(Duration::from_secs(1800), |id| Session::new(id, SessionType::Mcp), redis).await?;
//! assert!(manager.is_local());
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod file;

use std::time::Duration;

pub use file::SessionConfig;
pub use session_core::*;

/// Builds a manager with `ttl` as the sliding session TTL: on Redis when
/// `redis` is `Some` (the TTL is then the Redis key TTL), on local storage
/// when it is `None`.
///
/// The configuration is validated before anything else, without a network.
/// Without the `redis` feature, `Some(config)` is an [`Error::Config`] that
/// says how to enable it.
pub async fn new_manager(
    ttl: Duration,
    factory: impl Fn(SessionId) -> Session + Send + Sync + 'static,
    redis: Option<RedisConfig>,
) -> Result<Manager> {
    let ttl = Ttl::new(ttl)?;
    match redis {
        None => Ok(Manager::new(ttl, factory)),
        Some(config) => new_manager_with_redis(ttl, factory, config).await,
    }
}

/// Builds a manager on Redis (the Go `NewManagerWithRedis`), with `ttl` as
/// the sliding session TTL and the Redis key TTL.
///
/// Fails with a typed error when the configuration is invalid (before any
/// network access), when a PEM file cannot be read or parsed, and, with eager
/// connect (the default), when Redis cannot be reached within the connect
/// timeout. With lazy connect it succeeds while Redis is down. Without the
/// `redis` feature it validates `config` and then fails with an
/// [`Error::Config`] naming the missing feature.
pub async fn new_manager_with_redis(
    ttl: Ttl,
    factory: impl Fn(SessionId) -> Session + Send + Sync + 'static,
    config: RedisConfig,
) -> Result<Manager> {
    Ok(Manager::with_storage(
        ttl,
        factory,
        redis_storage(&config).await?,
    ))
}

/// Connects the Redis storage `config` describes.
#[cfg(feature = "redis")]
async fn redis_storage(config: &RedisConfig) -> Result<session_redis::RedisStorage> {
    session_redis::RedisStorage::connect(config).await
}

/// Without the `redis` feature: validates, then refuses with an error that
/// says how to enable the feature. It never falls back to local storage.
#[cfg(not(feature = "redis"))]
async fn redis_storage(config: &RedisConfig) -> Result<LocalStorage> {
    config.validate()?;
    Err(Error::config(
        "redis",
        "Redis storage was requested but this build of session-factory has no Redis support: \
         enable its `redis` cargo feature (session-factory = { features = [\"redis\"] })",
    ))
}

/// The Redis backend, with the `redis` feature.
#[cfg(feature = "redis")]
pub use session_redis::{self, RedisStorage};
