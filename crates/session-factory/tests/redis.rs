//! Backend selection with the `redis` feature: the Go `NewManagerWithRedis`
//! tests, translated, against the server `cargo xtask test` starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "redis")]

use std::time::Duration;

use session_factory::config::{ConnectMode, PemSource, TlsConfig};
use session_factory::testkit::test_env;
use session_factory::{
    Error, LocalStorage, Manager, RedisConfig, RedisStorage, Session, SessionId, SessionType, Ttl,
    new_manager, new_manager_with_redis,
};

fn factory(id: SessionId) -> Session {
    Session::new(id, SessionType::Streamable)
}

fn live_config() -> Option<RedisConfig> {
    Some(RedisConfig::standalone(
        test_env("SESSION_TEST_REDIS")?,
        format!("factory-test:{}:", SessionId::new()),
    ))
}

fn unreachable() -> RedisConfig {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    RedisConfig::standalone(listener.local_addr().unwrap().to_string(), "sessions:")
}

#[tokio::test]
async fn some_config_gives_redis_storage_with_the_ttl_as_key_ttl() {
    let Some(config) = live_config() else { return };
    let manager = new_manager(Duration::from_secs(90), factory, Some(config))
        .await
        .unwrap();
    assert!(!manager.is_local());
    let storage = manager
        .storage::<RedisStorage>()
        .expect("Redis storage")
        .clone();
    let id = SessionId::new();
    manager.add_with_id(id).await.unwrap();
    let found = manager
        .get(&id)
        .await
        .unwrap()
        .expect("round trip through Redis");
    assert_eq!(found.session_type(), SessionType::Streamable);
    let pttl: i64 = session_factory::session_redis::fred::interfaces::KeysInterface::pttl(
        storage.client(),
        storage.key(&id),
    )
    .await
    .unwrap();
    assert!(
        (89_000..=90_000).contains(&pttl),
        "key TTL {pttl} ms, manager TTL 90 s"
    );
    manager.shutdown().await.unwrap();
    assert!(matches!(manager.get(&id).await, Err(Error::Closed)));
}

#[tokio::test]
async fn none_still_gives_local_storage() {
    let manager = new_manager(Duration::from_secs(60), factory, None)
        .await
        .unwrap();
    assert!(manager.storage::<LocalStorage>().is_some());
    assert!(Manager::new(Ttl::from_secs(1).unwrap(), factory).is_local());
    assert!(Manager::typed(Ttl::from_secs(1).unwrap(), SessionType::Sse).is_local());
}

#[tokio::test]
async fn lazy_connect_to_an_unreachable_address_constructs() {
    let mut config = unreachable();
    config.connect = ConnectMode::Lazy;
    let manager = new_manager_with_redis(Ttl::from_secs(60).unwrap(), factory, config)
        .await
        .unwrap();
    assert!(manager.storage::<RedisStorage>().is_some());
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn eager_connect_to_an_unreachable_address_is_a_typed_error() {
    let mut config = unreachable();
    config.connect_timeout = Duration::from_secs(1);
    let error = new_manager(Duration::from_secs(60), factory, Some(config))
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn invalid_ca_pem_is_an_error() {
    let mut config = unreachable();
    config.tls = Some(TlsConfig::with_ca(PemSource::Pem("garbage".into())));
    match new_manager(Duration::from_secs(60), factory, Some(config)).await {
        Err(Error::Config { field, .. }) => assert_eq!(field, "redis.tls.ca_cert"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn delete_expired_on_redis_is_a_no_op() {
    let Some(config) = live_config() else { return };
    let manager = new_manager(Duration::from_secs(60), factory, Some(config))
        .await
        .unwrap();
    manager.create().await.unwrap();
    assert_eq!(manager.cleanup_expired().await.unwrap(), 0);
    manager.shutdown().await.unwrap();
}
