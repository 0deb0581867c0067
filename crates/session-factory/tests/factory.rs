//! Backend selection, with and without the `redis` feature.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use session_factory::{Error, RedisConfig, SessionConfig, SessionType, Topology, Ttl, new_manager};

fn config() -> SessionConfig {
    SessionConfig::new(Ttl::from_secs(60).unwrap())
}

#[tokio::test]
async fn no_redis_settings_give_local_storage() {
    let manager = new_manager(&config(), SessionType::Mcp).await.unwrap();
    let description = manager.describe();
    assert_eq!(description.backend, "local");
    assert_eq!(description.topology, Topology::InProcess);
    let session = manager.create().await.unwrap();
    assert!(manager.get(&session.id()).await.unwrap().is_some());
    manager.close().await.unwrap();
}

#[tokio::test]
async fn the_settings_reach_the_manager() {
    let config = SessionConfig::from_toml(
        "ttl = \"90s\"\nmax_lifetime = \"1h\"\ncleanup_interval = \"5s\"",
        "inline",
    )
    .unwrap();
    let manager = new_manager(&config, |id| {
        session_factory::Session::new(id, SessionType::Sse)
    })
    .await
    .unwrap();
    assert_eq!(manager.ttl().as_secs(), 90);
    assert_eq!(
        manager.expiry().max_lifetime().map(|max| max.as_secs()),
        Some(3600)
    );
    assert_eq!(
        manager.create().await.unwrap().session_type(),
        SessionType::Sse
    );
}

#[test]
fn an_invalid_redis_setting_is_a_config_error_naming_it() {
    let error = RedisConfig::standalone("127.0.0.1:6379", "no-colon").unwrap_err();
    assert_eq!(error.field(), Some("redis.key_prefix"));
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn redis_without_the_feature_says_how_to_enable_it() {
    let redis = RedisConfig::standalone("127.0.0.1:6379", "sessions:").unwrap();
    let error = new_manager(&config().with_redis(redis), SessionType::Mcp)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, Error::Config(config) if config.field() == Some("redis")),
        "{error:?}"
    );
    assert!(message.contains("`redis` cargo feature"), "{message}");
}

#[cfg(feature = "redis")]
#[test]
fn the_error_type_is_shared() {
    // With the feature the Redis path is tested in tests/redis.rs; this keeps
    // `Error` used in both builds.
    let _: fn(Error) -> bool = |error| error.is_retryable();
}
