//! Backend selection with the `redis` feature: the Go `NewManagerWithRedis`
//! tests, translated, against the server `cargo xtask test` starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "redis")]

use std::time::Duration;

use session_factory::session_config::{ConnectMode, Pem, TlsConfig};
use session_factory::session_redis::fred::interfaces::KeysInterface;
use session_factory::{
    Description, Error, RedisConfig, RedisStorage, Session, SessionConfig, SessionId, SessionType,
    Storage, Topology, Ttl, new_manager,
};
use session_testkit::env::var as test_env;

fn factory(id: SessionId) -> Session {
    Session::new(id, SessionType::Streamable)
}

fn settings(secs: u64) -> SessionConfig {
    SessionConfig::new(Ttl::from_secs(secs).unwrap())
}

fn live_config() -> Option<RedisConfig> {
    Some(
        RedisConfig::standalone(
            &test_env(session_testkit::env::REDIS)?,
            &format!("factory-test:{}:", SessionId::new()),
        )
        .unwrap(),
    )
}

fn unreachable() -> RedisConfig {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    RedisConfig::standalone(&listener.local_addr().unwrap().to_string(), "sessions:").unwrap()
}

const REDIS: Description = Description::new("redis", Topology::Standalone, false);

#[tokio::test]
async fn some_config_gives_redis_storage_with_the_ttl_as_key_ttl() {
    let Some(config) = live_config() else { return };
    let manager = new_manager(&settings(90).with_redis(config.clone()), factory)
        .await
        .unwrap();
    assert_eq!(manager.describe(), REDIS);
    let id = SessionId::new();
    manager.create_with_id(id).await.unwrap();
    let found = manager
        .get(&id)
        .await
        .unwrap()
        .expect("round trip through Redis");
    assert_eq!(found.session_type(), SessionType::Streamable);
    // The manager keeps its storage to itself: a second client on the same
    // key prefix reads the key's TTL as Redis holds it.
    let raw = RedisStorage::connect(&config).await.unwrap();
    let pttl: i64 = raw.client().pttl(raw.key(&id)).await.unwrap();
    assert!(
        (89_000..=90_000).contains(&pttl),
        "key TTL {pttl} ms, manager TTL 90 s"
    );
    manager.close().await.unwrap();
    assert!(matches!(manager.get(&id).await, Err(Error::Closed)));
    raw.close().await.unwrap();
}

#[tokio::test]
async fn none_still_gives_local_storage() {
    let manager = new_manager(&settings(60), factory).await.unwrap();
    assert_eq!(
        manager.describe(),
        Description::new("local", Topology::InProcess, true)
    );
    manager.close().await.unwrap();
}

#[tokio::test]
async fn lazy_connect_to_an_unreachable_address_constructs() {
    let config = unreachable().with_connect(ConnectMode::Lazy);
    let manager = new_manager(&settings(60).with_redis(config), factory)
        .await
        .unwrap();
    assert_eq!(manager.describe(), REDIS);
    manager.close().await.unwrap();
}

#[tokio::test]
async fn eager_connect_to_an_unreachable_address_is_a_typed_error() {
    let config = unreachable()
        .with_timeouts(Duration::from_secs(1), Duration::from_secs(3))
        .unwrap();
    let error = new_manager(&settings(60).with_redis(config), factory)
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn invalid_ca_pem_is_an_error() {
    let config = unreachable()
        .with_tls(TlsConfig::with_ca(Pem::new("garbage")))
        .unwrap();
    match new_manager(&settings(60).with_redis(config), factory).await {
        Err(Error::Config(error)) => assert_eq!(error.field(), Some("redis.tls.ca_cert")),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn delete_expired_on_redis_is_a_no_op() {
    let Some(config) = live_config() else { return };
    let manager = new_manager(&settings(60).with_redis(config), factory)
        .await
        .unwrap();
    manager.create().await.unwrap();
    assert_eq!(manager.delete_expired().await.unwrap(), 0);
    assert_eq!(manager.count().await.unwrap(), 1);
    manager.close().await.unwrap();
}
