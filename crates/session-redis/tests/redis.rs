//! Redis-specific behaviour beyond the conformance suite: the key format,
//! TTLs as Redis sees them, connection modes, authentication and TLS
//! failures, foreign values, shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Topology, config, env, pem, unique_prefix};
use session_config::{
    Auth, ClientIdentity, ConnectMode, Pem, RedisConfig, SessionConfig, TlsConfig,
};
use session_core::codec::{FormatVersion, MAGIC};
use session_core::{
    BackendErrorKind, Description, Error, Manager, Owner, Session, SessionId, SessionType, Storage,
    Ttl,
};
use session_redis::RedisStorage;
use session_redis::fred::interfaces::{ClientLike, KeysInterface};
use session_redis::fred::prelude::Value;
use session_redis::fred::types::{ClusterHash, CustomCommand};

fn ttl(secs: u64) -> Ttl {
    Ttl::from_secs(secs).unwrap()
}

async fn pttl(storage: &RedisStorage, id: &SessionId) -> i64 {
    storage.client().pttl(storage.key(id)).await.unwrap()
}

/// A manager of MCP sessions over `storage` with the sliding TTL `secs`.
fn manager(storage: RedisStorage, secs: u64) -> Manager {
    Manager::builder(storage, ttl(secs))
        .factory(SessionType::Mcp)
        .build()
        .unwrap()
}

/// `config` with its connect timeout replaced, the command timeout kept.
fn with_connect_timeout(config: RedisConfig, connect: Duration) -> RedisConfig {
    let command = config.command_timeout();
    config.with_timeouts(connect, command).unwrap()
}

/// `config` with its command timeout replaced, the connect timeout kept.
fn with_command_timeout(config: RedisConfig, command: Duration) -> RedisConfig {
    let connect = config.connect_timeout();
    config.with_timeouts(connect, command).unwrap()
}

/// A port on 127.0.0.1 that refuses connections.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A standalone configuration for a local address nothing listens on.
fn refused(prefix: &str) -> RedisConfig {
    RedisConfig::standalone(&format!("127.0.0.1:{}", refused_port()), prefix).unwrap()
}

/// The error of a configuration that the storage refuses, as a
/// `(field, reason)` pair.
fn config_error(result: session_core::Result<RedisStorage>) -> (String, String) {
    match result {
        Err(Error::Config(error)) => (
            error.field().unwrap_or("<whole>").to_owned(),
            error.reason().to_owned(),
        ),
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(storage) => panic!("expected a config error, got {storage:?}"),
    }
}

#[tokio::test]
async fn a_valid_config_gives_a_redis_backed_manager() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage, 60);
    assert_eq!(
        manager.describe(),
        Description::new("redis", session_core::Topology::Standalone, false)
    );
    let id = SessionId::new();
    manager.create_with_id(id).await.unwrap();
    assert_eq!(manager.get(&id).await.unwrap().unwrap().id(), id);
    manager.close().await.unwrap();
}

#[tokio::test]
async fn keys_are_prefix_then_id_and_hold_the_versioned_format() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let storage = RedisStorage::connect(&config).await.unwrap();
    let session = Arc::new(Session::new(SessionId::new(), SessionType::Sse));
    storage.upsert(Arc::clone(&session), ttl(60)).await.unwrap();

    // Read the raw key with a second, plain client.
    let raw = RedisStorage::connect(&config).await.unwrap();
    let key = format!("{}{}", config.key_prefix(), session.id());
    assert_eq!(storage.key(&session.id()), key);
    let bytes: Option<Vec<u8>> = raw
        .client()
        .get::<Option<session_redis::fred::bytes::Bytes>, _>(key.as_str())
        .await
        .unwrap()
        .map(|b| b.to_vec());
    let bytes = bytes.expect("the key exists");
    assert_eq!(&bytes[..2], &MAGIC);
    assert_eq!(
        session_core::codec::decode_session(&bytes).unwrap(),
        *session
    );

    // Keys outside the prefix are not sessions.
    let _: () = raw
        .client()
        .set("unrelated:key", "x", None, None, false)
        .await
        .unwrap();
    assert_eq!(storage.count().await.unwrap(), 1);
}

#[tokio::test]
async fn reads_and_writes_refresh_the_key_ttl() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    // Every read refreshes: no refresh window.
    let config = config.with_refresh_window(Some(Duration::ZERO));
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage.clone(), 60);
    let session = manager.create().await.unwrap();
    let id = session.id();
    let remaining = pttl(&storage, &id).await;
    assert!(
        (59_000..=60_000).contains(&remaining),
        "PTTL after create: {remaining}"
    );

    let _: bool = storage
        .client()
        .pexpire(storage.key(&id), 5_000, None)
        .await
        .unwrap();
    assert!(pttl(&storage, &id).await <= 5_000);
    manager.get(&id).await.unwrap().unwrap();
    let remaining = pttl(&storage, &id).await;
    assert!(
        remaining > 55_000,
        "a read must refresh the TTL (GETEX PX), PTTL {remaining}"
    );

    let _: bool = storage
        .client()
        .pexpire(storage.key(&id), 5_000, None)
        .await
        .unwrap();
    assert!(manager.update((*session).clone()).await.unwrap());
    assert!(
        pttl(&storage, &id).await > 55_000,
        "update must refresh the TTL"
    );

    let _: bool = storage
        .client()
        .pexpire(storage.key(&id), 5_000, None)
        .await
        .unwrap();
    manager.upsert((*session).clone()).await.unwrap();
    assert!(
        pttl(&storage, &id).await > 55_000,
        "upsert must refresh the TTL"
    );
}

#[tokio::test]
async fn reads_within_the_refresh_window_read_without_refreshing() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let config = config.with_refresh_window(Some(Duration::from_secs(30)));
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage.clone(), 60);
    let id = manager.create().await.unwrap().id();
    let _: bool = storage
        .client()
        .pexpire(storage.key(&id), 40_000, None)
        .await
        .unwrap();
    // Within the window since the create: a plain GET, the TTL stays.
    manager.get(&id).await.unwrap().unwrap();
    let remaining = pttl(&storage, &id).await;
    assert!(
        remaining <= 40_000,
        "a read within the window must not refresh, PTTL {remaining}"
    );
    // Another client (another replica) has no recent refresh of its own:
    // it reads the remaining life with the load script, which leaves the
    // TTL alone while more than `ttl - window` (30 s) is left...
    let other = RedisStorage::connect(&config).await.unwrap();
    other
        .get(&id, manager.expiry().ttl())
        .await
        .unwrap()
        .unwrap();
    let remaining = pttl(&storage, &id).await;
    assert!(
        (30_000..=40_000).contains(&remaining),
        "a read with more than ttl - window left must not refresh, PTTL {remaining}"
    );
    // ...and refreshes it once less is left.
    let third = RedisStorage::connect(&config).await.unwrap();
    let _: bool = storage
        .client()
        .pexpire(storage.key(&id), 20_000, None)
        .await
        .unwrap();
    third
        .get(&id, manager.expiry().ttl())
        .await
        .unwrap()
        .unwrap();
    let remaining = pttl(&storage, &id).await;
    assert!(
        remaining > 55_000,
        "a read with less than ttl - window left must refresh, PTTL {remaining}"
    );
    // A deleted session is not kept alive by the bookkeeping.
    other.delete(&id).await.unwrap();
    assert!(manager.get(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn the_refresh_bookkeeping_forgets_sessions_once_their_window_passed() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let config = config.with_refresh_window(Some(Duration::from_millis(200)));
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage.clone(), 60);
    for _ in 0..100 {
        manager.create().await.unwrap();
    }
    assert_eq!(storage.refresh_tracked(), 100);
    // The manager's own cleanup runs only every half TTL (30 s here); the
    // storage's sweeper must free the entries within about a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while storage.refresh_tracked() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} entries still tracked after 5 s",
            storage.refresh_tracked()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(manager.count().await.unwrap(), 100, "the sessions stay");
}

#[tokio::test]
async fn an_idle_key_expires_in_redis() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage.clone(), 60);
    let id = manager.create().await.unwrap().id();
    let _: bool = storage
        .client()
        .pexpire(storage.key(&id), 100, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let exists: i64 = storage.client().exists(storage.key(&id)).await.unwrap();
    assert_eq!(exists, 0);
    assert!(manager.get(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn the_key_ttl_never_outlives_the_max_lifetime() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = Manager::builder(storage.clone(), ttl(60))
        .max_lifetime(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let id = manager.create().await.unwrap().id();
    let after_create = pttl(&storage, &id).await;
    assert!(
        (9_000..=10_000).contains(&after_create),
        "PTTL after create: {after_create}"
    );
    manager.get(&id).await.unwrap().unwrap();
    let after_read = pttl(&storage, &id).await;
    assert!(
        (8_000..=10_000).contains(&after_read),
        "PTTL after a read: {after_read}"
    );
}

#[tokio::test]
async fn a_foreign_value_is_a_codec_error_and_a_wrong_type_is_typed() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let storage = RedisStorage::connect(&config).await.unwrap();
    let ttl = ttl(60);
    let good = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
    storage.upsert(Arc::clone(&good), ttl).await.unwrap();

    let foreign = SessionId::new();
    let _: () = storage
        .client()
        .set(storage.key(&foreign), "plain text", None, None, false)
        .await
        .unwrap();
    assert!(matches!(
        storage.get(&foreign, ttl).await,
        Err(Error::Codec(_))
    ));

    let hash = SessionId::new();
    let hset = CustomCommand::new_static("HSET", ClusterHash::FirstKey, false);
    let _: i64 = storage
        .client()
        .custom(
            hset,
            vec![storage.key(&hash), "field".into(), "value".into()],
        )
        .await
        .unwrap();
    match storage.get(&hash, ttl).await {
        Err(error) => assert_eq!(
            error.backend_kind(),
            Some(BackendErrorKind::WrongType),
            "{error}"
        ),
        Ok(found) => panic!("a hash was read as {found:?}"),
    }
    // The read changed nothing of the hash: it was given no TTL. (A string
    // under the prefix is read, and its TTL slides like a session's.)
    assert_eq!(pttl(&storage, &hash).await, -1, "the hash keeps no TTL");
    // Other sessions are unaffected, and the foreign keys are counted under
    // the prefix, as SCAN sees them.
    assert!(storage.get(&good.id(), ttl).await.unwrap().is_some());
    assert_eq!(storage.count().await.unwrap(), 3);
}

#[tokio::test]
async fn eager_connect_to_a_refused_port_fails_fast_with_a_typed_error() {
    let config = with_connect_timeout(refused("s:"), Duration::from_secs(2));
    let started = Instant::now();
    let error = RedisStorage::connect(&config).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn eager_connect_to_a_silent_server_fails_within_the_connect_timeout() {
    // A listener that accepts TCP connections but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = RedisConfig::standalone(&silent.local_addr().unwrap().to_string(), "s:").unwrap();
    let config = with_connect_timeout(config, Duration::from_millis(500));
    let started = Instant::now();
    let error = RedisStorage::connect(&config).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn lazy_connect_succeeds_without_redis_and_operations_fail_typed_not_hang() {
    let config = with_command_timeout(
        refused("s:").with_connect(ConnectMode::Lazy),
        Duration::from_millis(300),
    );
    let storage = RedisStorage::connect(&config)
        .await
        .expect("lazy connect never touches the network");
    let manager = manager(storage, 60);
    let started = Instant::now();
    let error = manager.get(&SessionId::new()).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // Nothing listens: a refused connection is what a restarting server
    // looks like, so the answer stays retryable.
    assert!(error.is_retryable(), "{error:?}");
    manager.close().await.unwrap();
}

const WRONG_PASSWORD: &str = "definitely-wrong-password";

/// The ACL server's configuration with the right user and a wrong password.
fn wrong_password(config: &RedisConfig) -> RedisConfig {
    let user = config
        .auth()
        .and_then(|auth| auth.username.clone())
        .expect("the ACL configuration names its user");
    config.clone().with_auth(Auth::user(user, WRONG_PASSWORD))
}

/// Asserts that `error` is the server's refusal of the credentials: an
/// authentication error, not retryable, that does not quote the password.
fn assert_refused_credentials(error: &Error) {
    assert!(
        matches!(
            error,
            Error::Backend {
                kind: BackendErrorKind::Auth,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable(), "{error:?}");
    assert!(!error.to_string().contains(WRONG_PASSWORD), "{error}");
    assert!(!format!("{error:?}").contains(WRONG_PASSWORD), "{error:?}");
}

#[tokio::test]
async fn a_wrong_acl_password_is_an_auth_error_without_the_password() {
    let Some(config) = config(Topology::Acl) else {
        return;
    };
    let config = wrong_password(&config);
    let error = RedisStorage::connect(&config).await.unwrap_err();
    assert_refused_credentials(&error);
    assert!(!format!("{config:?}").contains(WRONG_PASSWORD));
}

#[tokio::test]
async fn lazy_connect_with_a_wrong_password_reports_the_refusal_not_a_timeout() {
    let Some(right) = config(Topology::Acl) else {
        return;
    };
    let lazy = |config: RedisConfig| {
        with_command_timeout(
            config.with_connect(ConnectMode::Lazy),
            Duration::from_secs(1),
        )
    };
    let storage = RedisStorage::connect(&lazy(wrong_password(&right)))
        .await
        .expect("lazy connect never touches the network");
    // A moment for the first attempts to connect to be refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = SessionId::new();
    let started = Instant::now();
    let error = storage.get(&id, ttl(60)).await.unwrap_err();
    assert_refused_credentials(&error);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // Seconds later, with the client still retrying under its backoff, the
    // answer is the same: a bad credential does not turn into a 503.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let session = Arc::new(Session::new(id, SessionType::Mcp));
    assert_refused_credentials(&storage.create(session, ttl(60)).await.unwrap_err());
    assert_refused_credentials(&storage.get(&id, ttl(60)).await.unwrap_err());
    storage.close().await.unwrap();

    // The same lazy settings with the right password work.
    let storage = RedisStorage::connect(&lazy(right)).await.unwrap();
    let session = Arc::new(Session::new(id, SessionType::Mcp));
    assert!(storage.create(Arc::clone(&session), ttl(60)).await.unwrap());
    assert_eq!(storage.get(&id, ttl(60)).await.unwrap(), Some(session));
    storage.close().await.unwrap();
}

#[tokio::test]
async fn tls_with_the_wrong_ca_fails() {
    let Some(config) = config(Topology::Tls) else {
        return;
    };
    let Some(wrong) = env(session_testkit::env::REDIS_TLS_WRONG_CA) else {
        return;
    };
    let config = with_connect_timeout(config, Duration::from_secs(2))
        .with_tls(TlsConfig::with_ca(pem(Path::new(&wrong))))
        .unwrap();
    let error = RedisStorage::connect(&config).await.unwrap_err();
    assert_eq!(
        error.backend_kind(),
        Some(BackendErrorKind::Tls),
        "{error:?}"
    );
}

#[tokio::test]
async fn tls_without_tls_configured_fails_instead_of_hanging() {
    let Some(addr) = env(session_testkit::env::REDIS_TLS) else {
        return;
    };
    let config = RedisConfig::standalone(&addr, &unique_prefix()).unwrap();
    let config = with_connect_timeout(config, Duration::from_secs(1));
    let started = Instant::now();
    assert!(RedisStorage::connect(&config).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn mutual_tls_without_a_client_certificate_fails() {
    let Some(addr) = env(session_testkit::env::REDIS_MTLS) else {
        return;
    };
    let Some(ca) = common::ca() else { return };
    let config = RedisConfig::standalone(&addr, &unique_prefix())
        .unwrap()
        .with_tls(TlsConfig::with_ca(pem(&ca)))
        .unwrap();
    let config = with_connect_timeout(config, Duration::from_secs(2));
    let error = RedisStorage::connect(&config).await.unwrap_err();
    assert!(
        matches!(
            error.backend_kind(),
            Some(BackendErrorKind::Tls | BackendErrorKind::Io | BackendErrorKind::Unavailable)
        ) || matches!(error, Error::Timeout { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn invalid_pem_is_a_config_error_naming_the_field() {
    let base = RedisConfig::standalone("127.0.0.1:1", "s:").unwrap();
    let cases = [
        (
            TlsConfig::with_ca(Pem::new("not a certificate")),
            "redis.tls.ca_cert",
        ),
        (
            TlsConfig::with_ca(Pem::new(SELF_SIGNED)).with_identity(ClientIdentity {
                cert_chain: Pem::new(SELF_SIGNED),
                key: Pem::new(
                    "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
                ),
            }),
            "redis.tls.client_key",
        ),
    ];
    for (tls, field) in cases {
        let config = base.clone().with_tls(tls).unwrap();
        let (got, reason) = config_error(RedisStorage::connect(&config).await);
        assert_eq!(got, field, "{reason}");
        assert!(!reason.contains("not base64"), "{reason}");
    }
}

#[test]
fn unreadable_pem_files_and_a_certificate_without_its_key_are_refused_before_any_network() {
    // Files are read, and the pairs of settings checked, when the settings
    // are resolved (session-config), before a storage exists; these are the
    // errors a Redis deployment meets first.
    let error = Pem::read("redis.tls.ca_cert", Path::new("/nonexistent/ca.pem")).unwrap_err();
    assert_eq!(error.field(), Some("redis.tls.ca_cert"));
    let error = SessionConfig::from_toml(
        &format!(
            "ttl = \"30m\"\n[redis]\naddr = \"127.0.0.1:1\"\nkey_prefix = \"s:\"\n\
             [redis.tls]\nclient_cert = {{ pem = \"\"\"{SELF_SIGNED}\"\"\" }}"
        ),
        "inline",
    )
    .unwrap_err();
    assert_eq!(error.field(), Some("redis.tls.client_key"), "{error}");
    assert_eq!(error.reason(), "a client certificate needs its private key");
}

#[tokio::test]
async fn an_x509_v1_client_certificate_is_named_as_ours_with_the_fix() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let identity = ClientIdentity {
        cert_chain: Pem::read("redis.tls.client_cert", &data.join("x509-v1-client.crt")).unwrap(),
        key: Pem::read("redis.tls.client_key", &data.join("x509-v1-client.key")).unwrap(),
    };
    let config = RedisConfig::standalone("127.0.0.1:1", "s:")
        .unwrap()
        .with_tls(TlsConfig::with_ca(Pem::new(SELF_SIGNED)).with_identity(identity))
        .unwrap();
    let (field, reason) = config_error(RedisStorage::connect(&config).await);
    assert_eq!(field, "redis.tls.client_cert", "{reason}");
    assert_eq!(
        reason,
        "our client certificate is unusable: Other(OtherError(UnsupportedCertVersion)); it is \
         not an X.509 v3 certificate: reissue it as X.509 v3 (for example `openssl x509 -req \
         ... -extfile` with at least one extension)"
    );
}

#[tokio::test]
async fn shutdown_closes_the_client_and_later_operations_fail() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage.clone(), 60);
    let id = manager.create().await.unwrap().id();
    manager.close().await.unwrap();
    assert!(matches!(manager.get(&id).await, Err(Error::Closed)));
    assert!(matches!(
        storage.get(&id, manager.expiry().ttl()).await,
        Err(Error::Closed)
    ));
    // QUIT closed the connection.
    for _ in 0..50 {
        if !storage.client().is_connected() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the Redis client is still connected after shutdown");
}

#[tokio::test]
async fn delete_expired_is_a_no_op_without_error() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage, 60);
    manager.create().await.unwrap();
    assert_eq!(manager.delete_expired().await.unwrap(), 0);
    assert_eq!(manager.count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_create_with_id_over_two_managers_has_one_winner() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let make = || async { manager(RedisStorage::connect(&config).await.unwrap(), 60) };
    let managers = [make().await, make().await];
    for _ in 0..20 {
        let id = SessionId::new();
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let manager = managers[i % 2].clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    manager.create_with_id(id).await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(Error::AlreadyExists(existing)) => assert_eq!(existing, id),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(wins, 1);
    }
}

#[tokio::test]
async fn debug_output_shows_no_secrets() {
    let Some(config) = config(Topology::Acl) else {
        return;
    };
    let password = config.auth().unwrap().password.expose().to_owned();
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage.clone(), 60);
    for text in [
        format!("{config:?}"),
        format!("{storage:?}"),
        format!("{manager:?}"),
    ] {
        assert!(!text.contains(&password), "{text}");
    }
    let raw: Value = storage.client().ping(None).await.unwrap();
    assert_eq!(raw.as_str().as_deref(), Some("PONG"));
}

/// A self-signed certificate, used where a syntactically valid PEM
/// certificate is needed and nothing connects.
const SELF_SIGNED: &str = "-----BEGIN CERTIFICATE-----
MIIBcjCCARmgAwIBAgIUX7DmoKsVWX6lwLdqIT4lFHX0jBEwCgYIKoZIzj0EAwIw
DzENMAsGA1UEAwwEdGVzdDAeFw0yNDAxMDEwMDAwMDBaFw0zNDAxMDEwMDAwMDBa
MA8xDTALBgNVBAMMBHRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ0bQXc
ZB2Yb7wM6jYkLM4vTBxp/ba9m04qD8T9M+nNpRWpM1F9FrJMjuoqJW2MEUgaBGZB
1y6kNf1rydEhrAWjo1MwUTAdBgNVHQ4EFgQU2gPvWq4aA2jL8FKa0JyJx5k3pBUw
HwYDVR0jBBgwFoAU2gPvWq4aA2jL8FKa0JyJx5k3pBUwDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNHADBEAiB2Mx6kDz0wZlYjXhRk7rZ3L3K2yvGm8N4J5rGZ
U6q7YgIgY0zqN6cZ2WmJfTz9xk9B8m8H5+8j3h1Qo5x6cMzH5tA=
-----END CERTIFICATE-----
";

/// Settings built in code can give the sentinels TLS without giving the data
/// nodes any (the file format refuses that). The client has one transport
/// for both, so dropping the sentinels' TLS would be a silent downgrade: it
/// is refused, naming the setting, before any network.
#[tokio::test]
async fn sentinel_tls_without_data_tls_from_code_is_refused() {
    let sentinel = session_config::SentinelConfig::new("mymaster", ["127.0.0.1:1"])
        .unwrap()
        .with_tls(TlsConfig::system());
    let config = RedisConfig::new(
        session_config::RedisTopology::Sentinel { sentinel, db: 0 },
        session_config::KeyPrefix::parse("redis.key_prefix", "s:").unwrap(),
    );
    match RedisStorage::connect(&config).await {
        Err(Error::Config(error)) => assert_eq!(error.field(), Some("redis.sentinel.tls")),
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// A key of another type where an owner's index belongs: the owned create is
/// refused with a wrong-type error that names the index, and nothing of it
/// stays behind (the session key its pipeline wrote is deleted again);
/// listing and revoking that owner are refused the same way, and the
/// foreign key is left as it was.
#[tokio::test]
async fn an_owner_index_key_of_the_wrong_type_is_a_typed_error_and_nothing_is_stored() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage.clone(), 60);
    let owner = Owner::new("https://issuer.example", "wrong-type").unwrap();
    let index = storage.owner_index_key(&owner);
    let _: () = storage
        .client()
        .set(index.as_str(), "not a sorted set", None, None, false)
        .await
        .unwrap();

    let error = manager.create_owned(owner.clone()).await.unwrap_err();
    assert_eq!(
        error.backend_kind(),
        Some(BackendErrorKind::WrongType),
        "{error}"
    );
    assert!(error.to_string().contains("index"), "{error}");
    // The prefix is this test's own: no session key is left under it.
    assert_eq!(
        manager.count().await.unwrap(),
        0,
        "the session of a refused owned create is gone"
    );

    for refused in [
        manager.list_owned(&owner).await.map(|_| ()),
        manager.revoke_owned(&owner).await.map(|_| ()),
    ] {
        let error = refused.unwrap_err();
        assert_eq!(
            error.backend_kind(),
            Some(BackendErrorKind::WrongType),
            "{error}"
        );
        assert!(error.to_string().contains("index"), "{error}");
    }
    let kept: Option<String> = storage.client().get(index.as_str()).await.unwrap();
    assert_eq!(kept.as_deref(), Some("not a sorted set"));
    // Another owner, and sessions without one, are unaffected.
    let other = Owner::new("https://issuer.example", "someone-else").unwrap();
    let theirs = manager.create_owned(other.clone()).await.unwrap();
    let listed = manager.list_owned(&other).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id(), theirs.id());
    manager.create().await.unwrap();
}

/// A user whose ACL forbids scripts (`-@scripting`), as some managed
/// services configure: every write that needs a script is refused with a
/// typed error that names the refusal, is not mistaken for a lost reply (it
/// is not retryable and its outcome is known), and changes nothing.
#[tokio::test]
async fn a_server_that_refuses_scripts_gives_a_typed_error_and_changes_nothing() {
    let Some(admin_config) = config(Topology::Standalone) else {
        return;
    };
    let admin = RedisStorage::connect(&admin_config).await.unwrap();
    let user = format!("noscript-{}", SessionId::new());
    let password = format!("pw-{}", SessionId::new());
    let pass = format!(">{password}");
    acl(
        &admin,
        &["SETUSER", &user, "on", &pass, "~*", "+@all", "-@scripting"],
    )
    .await;
    let config = admin_config
        .clone()
        .with_auth(Auth::user(user.clone(), password.clone()));
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage.clone(), 60);

    // A create without an owner needs no script and succeeds.
    let created = manager.create().await.unwrap();
    let before: Option<session_redis::fred::bytes::Bytes> = admin
        .client()
        .get(storage.key(&created.id()))
        .await
        .unwrap();
    let assert_refused = |error: &Error| {
        assert_eq!(
            error.backend_kind(),
            Some(BackendErrorKind::Auth),
            "{error:?}"
        );
        assert!(error.to_string().contains("NOPERM"), "{error}");
        assert!(!error.is_retryable(), "{error:?}");
        assert!(!error.is_outcome_unknown(), "{error:?}");
        assert!(!error.to_string().contains(&password), "{error}");
    };
    let mut changed = (*created).clone();
    changed.set_metadata("changed", "yes");
    assert_refused(&manager.update(changed).await.unwrap_err());
    let modified: Result<Option<_>, Error> = manager
        .modify(&created.id(), |session| {
            session.set_metadata("modified", "yes");
            Ok(())
        })
        .await;
    assert_refused(&modified.unwrap_err());
    let after: Option<session_redis::fred::bytes::Bytes> = admin
        .client()
        .get(storage.key(&created.id()))
        .await
        .unwrap();
    assert_eq!(before, after, "a refused write changes nothing");

    // An owned create needs the index script: refused, and no session key
    // and no index stay behind.
    let owner = Owner::new("https://issuer.example", "no-scripts").unwrap();
    assert_refused(&manager.create_owned(owner.clone()).await.unwrap_err());
    assert_eq!(
        manager.count().await.unwrap(),
        1,
        "no session of the refused owned create is left"
    );
    let index: i64 = admin
        .client()
        .exists(storage.owner_index_key(&owner))
        .await
        .unwrap();
    assert_eq!(index, 0, "no index of the refused owned create is left");

    manager.close().await.unwrap();
    acl(&admin, &["DELUSER", &user]).await;
}

/// Sends `ACL <args>` through `admin`.
async fn acl(admin: &RedisStorage, args: &[&str]) {
    let command = CustomCommand::new_static("ACL", ClusterHash::Random, false);
    let args: Vec<Value> = args.iter().map(|arg| Value::from(*arg)).collect();
    let _: Value = admin.client().custom(command, args).await.unwrap();
}

/// During a rolling deploy from the release before revisions the storage is
/// told to keep writing stored format 1: what it writes is format 1, which
/// that release reads, and what it reads of either format is served. An
/// owner cannot be written in format 1: an owned create is refused with a
/// codec error before anything is stored.
#[tokio::test]
async fn a_format_1_writer_writes_format_1_and_refuses_owners() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let config = config.with_stored_format(FormatVersion::V1);
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage.clone(), 60);
    let raw = |id: SessionId| {
        let storage = storage.clone();
        async move {
            let bytes: Option<session_redis::fred::bytes::Bytes> =
                storage.client().get(storage.key(&id)).await.unwrap();
            bytes.expect("the key exists")
        }
    };

    let created = manager.create().await.unwrap();
    let bytes = raw(created.id()).await;
    assert_eq!(&bytes[..2], &MAGIC);
    assert_eq!(bytes[2], FormatVersion::V1.number(), "{:?}", &bytes[..4]);
    let updated = manager
        .modify(&created.id(), |session| {
            session.set_metadata("step", "1");
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
        .unwrap()
        .0;
    assert_ne!(updated.revision(), created.revision());
    let bytes = raw(created.id()).await;
    assert_eq!(bytes[2], FormatVersion::V1.number());
    let read = manager.get(&created.id()).await.unwrap().unwrap();
    assert_eq!(read.get_metadata("step"), Some("1"));
    assert_eq!(read.revision(), updated.revision());

    let owner = Owner::new("https://issuer.example", "format-1").unwrap();
    let error = manager.create_owned(owner.clone()).await.unwrap_err();
    assert!(matches!(error, Error::Codec(_)), "{error:?}");
    assert_eq!(manager.count().await.unwrap(), 1, "only the first session");
    let index: i64 = storage
        .client()
        .exists(storage.owner_index_key(&owner))
        .await
        .unwrap();
    assert_eq!(index, 0, "no index of the refused owned create is left");
}

/// What a manager does over `storage` whether it keeps the storage's type or
/// erases it: the same answers, on the same keys.
async fn typed_and_erased_agree<S: Storage>(manager: Manager<S>, storage: &RedisStorage) {
    let owner = Owner::new("https://issuer.test", "alice").unwrap();
    let session = manager.create_owned(owner.clone()).await.unwrap();
    let id = session.id();
    assert!(
        pttl(storage, &id).await > 0,
        "stored under the storage's key"
    );
    let read = manager.get(&id).await.unwrap().expect("found");
    assert_eq!(read.revision(), session.revision());
    let (changed, ()) = manager
        .modify(&id, |session| {
            session
                .metadata_mut()
                .insert("k".to_owned(), "v".to_owned());
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
        .expect("still there");
    assert!(changed.revision() > session.revision());
    assert_eq!(
        manager.get(&id).await.unwrap().unwrap().metadata().get("k"),
        Some(&"v".to_owned())
    );
    let listed = manager.list_owned(&owner).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.id()).collect::<Vec<_>>(), vec![id]);
    assert!(manager.delete(&id).await.unwrap());
    assert!(manager.get(&id).await.unwrap().is_none());
    manager.close().await.unwrap();
    assert!(matches!(manager.get(&id).await, Err(Error::Closed)));
}

#[tokio::test]
async fn a_typed_manager_answers_as_the_erased_one() {
    for topology in [Topology::Standalone, Topology::Cluster] {
        let Some(config) = config(topology) else {
            return;
        };
        let storage = RedisStorage::connect(&config).await.unwrap();
        let typed: Manager<RedisStorage> = Manager::typed_builder(storage.clone(), ttl(60))
            .build()
            .unwrap();
        typed_and_erased_agree(typed, &storage).await;
        let storage = RedisStorage::connect(&config).await.unwrap();
        typed_and_erased_agree(manager(storage.clone(), 60), &storage).await;
    }
}
