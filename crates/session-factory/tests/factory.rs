//! Backend selection without the `redis` feature.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use session_factory::{Error, LocalStorage, RedisConfig, Session, SessionType, new_manager};

fn factory(id: session_factory::SessionId) -> Session {
    Session::new(id, SessionType::Mcp)
}

#[tokio::test]
async fn none_gives_local_storage() {
    let manager = new_manager(Duration::from_secs(60), factory, None)
        .await
        .unwrap();
    assert!(manager.is_local());
    assert!(manager.storage::<LocalStorage>().is_some());
    let session = manager.create().await.unwrap();
    assert!(manager.get(&session.id()).await.unwrap().is_some());
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn zero_ttl_is_rejected() {
    let error = new_manager(Duration::ZERO, factory, None)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidInput(_)), "{error:?}");
}

#[tokio::test]
async fn invalid_redis_config_is_a_config_error_before_anything_else() {
    let config = RedisConfig::standalone("127.0.0.1:6379", "no-colon");
    match new_manager(Duration::from_secs(60), factory, Some(config)).await {
        Err(Error::Config { field, .. }) => assert_eq!(field, "redis.key_prefix"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn redis_without_the_feature_says_how_to_enable_it() {
    let config = RedisConfig::standalone("127.0.0.1:6379", "sessions:");
    let error = new_manager(Duration::from_secs(60), factory, Some(config))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Config { .. }), "{error:?}");
    assert!(message.contains("`redis` cargo feature"), "{message}");
}
