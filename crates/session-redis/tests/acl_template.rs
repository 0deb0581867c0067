//! The least-privilege ACL of docs/operations.md, read from that page, on
//! the test suite's ACL servers and clusters (Redis and Valkey): a user with
//! exactly those commands (and on a cluster the cluster's two grants), on
//! the storage's keys only, runs every operation of the storage, the owner
//! index, the local cache's tracking and the event log with a live tail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Topology, config, unique_prefix};
use session_config::{Auth, CacheConfig, RedisConfig};
use session_core::{Error, Manager, Owner, SessionType, Storage, Ttl};
use session_redis::events::{EntryId, Record};
use session_redis::fred::bytes::Bytes;
use session_redis::fred::interfaces::ClientLike;
use session_redis::fred::prelude::Value;
use session_redis::fred::types::{ClusterHash, CustomCommand};
use session_redis::{EventLimits, EventLog, RedisStorage};

/// The `ACL SETUSER` line of docs/operations.md.
fn template() -> String {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .unwrap();
    page.lines()
        .find(|line| line.starts_with("ACL SETUSER session-app "))
        .expect("docs/operations.md has the ACL line")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_is_enough_on_redis() {
    the_documented_acl_is_enough(Topology::Acl, session_testkit::env::REDIS_ACL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_is_enough_on_valkey() {
    the_documented_acl_is_enough(Topology::ValkeyAcl, session_testkit::env::VALKEY_ACL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_is_enough_on_a_redis_cluster() {
    the_documented_acl_is_enough_on_a_cluster(session_testkit::env::REDIS_CLUSTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_is_enough_on_a_valkey_cluster() {
    the_documented_acl_is_enough_on_a_cluster(session_testkit::env::VALKEY_CLUSTER).await;
}

/// The cluster's grants of docs/operations.md, added to the template's.
fn cluster_grants() -> String {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .unwrap();
    page.lines()
        .find_map(|line| line.strip_prefix("ACL SETUSER session-app (cluster) "))
        .expect("docs/operations.md has the cluster's ACL line")
        .to_owned()
}

/// The template and the cluster's grants, set on every node of the cluster
/// at `nodes_var` (ACL users are not shared between cluster nodes).
async fn the_documented_acl_is_enough_on_a_cluster(nodes_var: &str) {
    let Some(nodes) = common::env(nodes_var) else {
        return;
    };
    let prefix = unique_prefix();
    let user = format!(
        "session-app-{}",
        session_core::SessionId::new().as_uuid().simple()
    );
    let password = session_core::SessionId::new()
        .as_uuid()
        .simple()
        .to_string();
    let line = format!("{} {}", template(), cluster_grants())
        .replace("session-app", &user)
        .replace("<password>", &password)
        .replace("<prefix>", &prefix);
    let args: Vec<Value> = line
        .split_whitespace()
        .skip(1)
        .map(|word| Value::from(word.to_owned()))
        .collect();
    let mut admins = Vec::new();
    for node in nodes.split(',') {
        let admin = RedisStorage::connect(&RedisConfig::standalone(node, &prefix).unwrap())
            .await
            .unwrap();
        for command in [args.clone(), vec![Value::from("FLUSH")]] {
            let name = if command.len() == 1 { "SCRIPT" } else { "ACL" };
            let reply: Value = admin
                .client()
                .custom(
                    CustomCommand::new(name, ClusterHash::Random, false),
                    command,
                )
                .await
                .unwrap();
            assert_eq!(reply.as_str().as_deref(), Some("OK"), "{name} on {node}");
        }
        admins.push(admin);
    }
    let seed = nodes.split(',').next().unwrap();
    let config = RedisConfig::cluster(seed, &prefix)
        .unwrap()
        .with_auth(Auth::user(user.clone(), password.clone()))
        .with_cache(Some(CacheConfig::default()))
        .unwrap();
    exercise(&config).await;
    for admin in admins {
        let _: Value = admin
            .client()
            .custom(
                CustomCommand::new_static("ACL", ClusterHash::Random, false),
                vec![Value::from("DELUSER"), Value::from(user.clone())],
            )
            .await
            .unwrap();
        admin.close().await.unwrap();
    }
}

async fn the_documented_acl_is_enough(topology: Topology, addr_var: &str) {
    let Some(admin) = config(topology) else {
        return;
    };
    let admin = RedisStorage::connect(&admin).await.unwrap();
    let prefix = unique_prefix();
    let user = format!(
        "session-app-{}",
        session_core::SessionId::new().as_uuid().simple()
    );
    let password = session_core::SessionId::new()
        .as_uuid()
        .simple()
        .to_string();
    let line = template()
        .replace("session-app", &user)
        .replace("<password>", &password)
        .replace("<prefix>", &prefix);
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("ACL"));
    let args: Vec<Value> = words.map(|word| Value::from(word.to_owned())).collect();
    let reply: Value = admin
        .client()
        .custom(
            CustomCommand::new_static("ACL", ClusterHash::Random, false),
            args,
        )
        .await
        .unwrap();
    assert_eq!(reply.as_str().as_deref(), Some("OK"));

    // The scripts then go out whole once (`EVAL`, after `NOSCRIPT`), as on
    // a fresh server; other tests' scripts fall back the same way.
    let _: Value = admin
        .client()
        .custom(
            CustomCommand::new_static("SCRIPT", ClusterHash::Random, false),
            vec![Value::from("FLUSH")],
        )
        .await
        .unwrap();
    let addr = std::env::var(addr_var).unwrap();
    let config = RedisConfig::standalone(&addr, &prefix)
        .unwrap()
        .with_auth(Auth::user(user.clone(), password.clone()))
        .with_cache(Some(CacheConfig::default()))
        .unwrap();
    exercise(&config).await;

    let _: Value = admin
        .client()
        .custom(
            CustomCommand::new_static("ACL", ClusterHash::Random, false),
            vec![Value::from("DELUSER"), Value::from(user)],
        )
        .await
        .unwrap();
    admin.close().await.unwrap();
}

/// Runs every operation of the storage, the owner index, the local cache's
/// tracking and the event log with a live tail through `config`'s user, and
/// checks that a key outside the prefix is refused.
async fn exercise(config: &RedisConfig) {
    let storage = RedisStorage::connect(config).await.unwrap();
    // The cache's tracking is allowed: the storage arms it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !storage.cache_armed() {
        assert!(std::time::Instant::now() < deadline, "tracking never armed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let manager = Manager::builder(storage.clone(), Ttl::from_secs(60).unwrap())
        .factory(SessionType::Mcp)
        .build()
        .unwrap();
    let owner = Owner::new("https://issuer.test", "alice").unwrap();
    let session = manager.create().await.unwrap();
    let owned = manager.create_owned(owner.clone()).await.unwrap();
    assert!(manager.get(&session.id()).await.unwrap().is_some());
    let mut edited = (*session).clone();
    edited.set_metadata("k", "v");
    assert!(manager.update(edited.clone()).await.unwrap());
    manager.upsert(edited).await.unwrap();
    manager
        .modify(&session.id(), |session| {
            session.set_metadata("n", "1");
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
        .unwrap();
    // An expire that would lengthen the TTL sets nothing, and then asks
    // whether the session is still there.
    assert!(
        Storage::expire(&storage, &session.id(), Ttl::from_secs(3600).unwrap())
            .await
            .unwrap()
    );
    assert_eq!(manager.count().await.unwrap(), 2);
    assert_eq!(manager.list_owned(&owner).await.unwrap().len(), 1);
    assert_eq!(manager.revoke_owned(&owner).await.unwrap(), [owned.id()]);
    assert!(manager.delete(&session.id()).await.unwrap());
    manager.ping().await.unwrap();
    // Nothing was refused along the way: no error of any operation.
    let stats = storage.cache_stats().unwrap();
    assert_eq!(stats.tracking_refused, 0, "{stats:?}");

    // The event log, with a live tail on a connection of its own.
    let log = EventLog::connect(config, EventLimits::default())
        .await
        .unwrap();
    let id = session.id();
    let event = |text: &'static str| Record::Event {
        data: Some(Bytes::from_static(text.as_bytes())),
        retry: None,
    };
    let first = log
        .append(&id, "a", &event("1"), Ttl::from_secs(60).unwrap())
        .await
        .unwrap();
    assert!(log.find(&id, first).await.unwrap().is_some());
    let tail = {
        let log = log.clone();
        tokio::spawn(async move { log.wait_after(&id, first, Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    log.append_existing(&id, "a", &event("2"), Ttl::from_secs(60).unwrap())
        .await
        .unwrap()
        .unwrap();
    let tailed = tail.await.unwrap().unwrap().unwrap();
    assert_eq!(tailed.len(), 1);
    assert_eq!(log.after(&id, EntryId::ZERO, 10).await.unwrap().len(), 2);
    assert!(log.delete(&id).await.unwrap());
    log.close().await;
    // And nothing beyond its keys.
    let denied: Result<Value, _> = storage
        .client()
        .custom(
            CustomCommand::new_static("GET", ClusterHash::FirstKey, false),
            vec![Value::from("elsewhere:key")],
        )
        .await;
    assert!(denied.is_err(), "{denied:?}");
    manager.close().await.unwrap();
}
