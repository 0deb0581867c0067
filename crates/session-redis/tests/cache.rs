//! The local cache against real servers: hits without a round trip, another
//! replica's write seen through its invalidation (well before the staleness
//! bound), what fred leaves to us (tracking after a reconnect, `FLUSHDB`),
//! and the servers that cannot track (no `CLIENT TRACKING` permission, no
//! RESP3).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Topology, config, connect_armed};
use session_config::{CacheCapacity, CacheConfig, RedisConfig, TrackingMode};
use session_core::{Error, Manager, SessionType, Storage, Ttl};
use session_redis::RedisStorage;
use session_redis::fred::interfaces::ClientLike;
use session_redis::fred::prelude::Value;
use session_redis::fred::types::{ClusterHash, CustomCommand};
use tokio::time::Instant;

/// A staleness bound far longer than any test waits: what a test sees
/// before it passes came from an invalidation.
const LONG: Duration = Duration::from_secs(30);

fn cached(config: RedisConfig, staleness: Duration, mode: TrackingMode) -> RedisConfig {
    let cache = CacheConfig::new(CacheConfig::default().capacity(), staleness)
        .unwrap()
        .with_mode(mode);
    config.with_cache(Some(cache)).unwrap()
}

fn manager(storage: RedisStorage) -> Manager {
    Manager::builder(storage, Ttl::from_secs(60).unwrap())
        .factory(SessionType::Mcp)
        .build()
        .unwrap()
}

/// Polls `check` every millisecond until it holds; returns how long that
/// took, or panics after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends a command through `storage`'s client.
async fn command(storage: &RedisStorage, name: &'static str, args: Vec<Value>) -> Value {
    let command = CustomCommand::new_static(name, ClusterHash::Random, false);
    storage.client().custom(command, args).await.unwrap()
}

/// On each topology and in each mode: a read after a fill is a hit; a
/// write by another replica is seen through its invalidation; a delete by
/// another replica too; this replica's own write is read back at once.
async fn hits_and_invalidations(topology: Topology, mode: TrackingMode) {
    let Some(config) = config(topology) else {
        return;
    };
    let config = cached(config, LONG, mode);
    let a = connect_armed(&config).await;
    let b = connect_armed(&config).await;
    let (ma, mb) = (manager(a.clone()), manager(b.clone()));

    let id = ma.create().await.unwrap().id();
    if mode == TrackingMode::Broadcast {
        // In broadcast mode A's create is announced to B as well. Had it
        // come in after B's first read below, it would have dropped that
        // read's fill (or its copy), and one of the counted reads would
        // have been a miss; CI saw exactly that once.
        within(Duration::from_secs(2), "B hears of A's create", || async {
            b.cache_stats().unwrap().invalidations >= 1
        })
        .await;
    }
    let first = mb.get(&id).await.unwrap().unwrap();
    let before = b.cache_stats().unwrap();
    for _ in 0..100 {
        assert_eq!(mb.get(&id).await.unwrap().unwrap(), first);
    }
    let after = b.cache_stats().unwrap();
    assert_eq!(
        after.hits - before.hits,
        100,
        "{topology:?} {mode:?}: {after:?}"
    );
    assert_eq!(after.entries, 1);

    // Another replica's write: B sees it long before the staleness bound.
    let (written, ()) = ma
        .modify(&id, |session| {
            session.set_metadata("by", "a");
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
        .unwrap();
    let took = within(Duration::from_secs(2), "B sees A's write", || async {
        mb.get(&id).await.unwrap().unwrap().revision() == written.revision()
    })
    .await;
    assert!(
        b.cache_stats().unwrap().invalidations > after.invalidations,
        "{topology:?} {mode:?}: the write reached B as an invalidation"
    );
    eprintln!("{topology:?} {mode:?}: A's write seen by B after {took:?}");

    // B's own write is read back at once (read-your-writes), and A sees it.
    let (mine, ()) = mb
        .modify(&id, |session| {
            session.set_metadata("by", "b");
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        mb.get(&id).await.unwrap().unwrap().revision(),
        mine.revision()
    );
    within(Duration::from_secs(2), "A sees B's write", || async {
        ma.get(&id).await.unwrap().unwrap().revision() == mine.revision()
    })
    .await;

    // A read-modify-write decides on Redis: B's copy is refilled, A
    // increments from it, and no update is lost.
    for round in 0..20 {
        let replica = if round % 2 == 0 { &ma } else { &mb };
        replica
            .modify(&id, |session| {
                let n: u32 = session.get_metadata("n").map_or(0, |n| n.parse().unwrap());
                session.set_metadata("n", (n + 1).to_string());
                Ok::<_, Error>(())
            })
            .await
            .unwrap()
            .unwrap();
    }
    within(Duration::from_secs(2), "both see 20 increments", || async {
        let n = |s: std::sync::Arc<session_core::Session>| s.get_metadata("n").map(str::to_owned);
        n(ma.get(&id).await.unwrap().unwrap()).as_deref() == Some("20")
            && n(mb.get(&id).await.unwrap().unwrap()).as_deref() == Some("20")
    })
    .await;

    // A delete by A: B answers "gone" within the same short time.
    assert!(ma.delete(&id).await.unwrap());
    within(Duration::from_secs(2), "B sees the delete", || async {
        mb.get(&id).await.unwrap().is_none()
    })
    .await;
    ma.close().await.unwrap();
    mb.close().await.unwrap();
}

/// `record_metrics` hands the cache's counters to the metrics facade as
/// they are: the scrape sees exactly what `cache_stats` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_counters_reach_the_metrics_facade() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let storage = connect_armed(&cached(config, LONG, TrackingMode::Tracking)).await;
    let manager = manager(storage.clone());
    let id = manager.create().await.unwrap().id();
    for _ in 0..5 {
        manager.get(&id).await.unwrap().unwrap();
    }
    let stats = storage.cache_stats().unwrap();
    assert!(stats.hits >= 4, "{stats:?}");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || Storage::record_metrics(&storage));
    // One snapshot: each takes what changed since the one before.
    let snapshot = snapshotter.snapshot().into_vec();
    let value = |name: &str| {
        snapshot
            .iter()
            .find(|(key, ..)| key.key().name() == name)
            .map(|(.., value)| value)
    };
    assert_eq!(
        value("session_cache_hits_total"),
        Some(&DebugValue::Counter(stats.hits))
    );
    assert_eq!(
        value("session_cache_misses_total"),
        Some(&DebugValue::Counter(stats.misses))
    );
    assert_eq!(
        value("session_cache_fills_total"),
        Some(&DebugValue::Counter(stats.fills))
    );
    assert_eq!(
        value("session_cache_entries"),
        Some(&DebugValue::Gauge((stats.entries as f64).into()))
    );
    manager.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_tracking() {
    hits_and_invalidations(Topology::Standalone, TrackingMode::Tracking).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_broadcast() {
    hits_and_invalidations(Topology::Standalone, TrackingMode::Broadcast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tracking() {
    hits_and_invalidations(Topology::Cluster, TrackingMode::Tracking).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_tracking() {
    hits_and_invalidations(Topology::Sentinel, TrackingMode::Tracking).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_tracking() {
    hits_and_invalidations(Topology::ValkeyStandalone, TrackingMode::Tracking).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_broadcast() {
    hits_and_invalidations(Topology::ValkeyStandalone, TrackingMode::Broadcast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_cluster_tracking() {
    hits_and_invalidations(Topology::ValkeyCluster, TrackingMode::Tracking).await;
}

/// fred does not re-enable tracking after a reconnect: the storage does,
/// and flushes what it held, so another replica's write after the
/// reconnect is still seen through an invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_survives_a_killed_connection() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    for mode in [TrackingMode::Tracking, TrackingMode::Broadcast] {
        let config = cached(config.clone(), LONG, mode);
        let a = connect_armed(&config).await;
        let b = connect_armed(&config).await;
        let (ma, mb) = (manager(a.clone()), manager(b.clone()));
        let id = ma.create().await.unwrap().id();
        // In broadcast mode the invalidation of A's create may reach B
        // while B's first read is in flight, and then rightly voids its
        // fill: B reads until a copy is kept.
        within(Duration::from_secs(5), "B keeps a copy", || async {
            mb.get(&id).await.unwrap().unwrap();
            b.cache_stats().unwrap().entries == 1
        })
        .await;

        let Value::Integer(connection) = command(&b, "CLIENT", vec!["ID".into()]).await else {
            panic!("CLIENT ID answers an integer");
        };
        command(
            &a,
            "CLIENT",
            vec!["KILL".into(), "ID".into(), connection.into()],
        )
        .await;
        within(Duration::from_secs(5), "B flushes and re-arms", || async {
            let stats = b.cache_stats().unwrap();
            stats.flushes_reconnect >= 1 && b.cache_armed()
        })
        .await;
        assert_eq!(b.cache_stats().unwrap().entries, 0, "{mode:?}: flushed");

        // Tracking is on again: a copy filled now is invalidated by A.
        mb.get(&id).await.unwrap().unwrap();
        mb.get(&id).await.unwrap().unwrap();
        let hits = b.cache_stats().unwrap().hits;
        assert!(hits >= 1, "{mode:?}: B caches again");
        let (written, ()) = ma
            .modify(&id, |session| {
                session.set_metadata("after", "reconnect");
                Ok::<_, Error>(())
            })
            .await
            .unwrap()
            .unwrap();
        within(
            Duration::from_secs(2),
            "B sees A's write after the reconnect",
            || async { mb.get(&id).await.unwrap().unwrap().revision() == written.revision() },
        )
        .await;
        ma.close().await.unwrap();
        mb.close().await.unwrap();
    }
}

/// `FLUSHDB` invalidates "everything" with a message fred drops: the
/// staleness bound covers it. The test runs in a database of its own, so
/// that the flush touches no other test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_of_the_database_is_covered_by_the_staleness_bound() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let bound = Duration::from_millis(300);
    let config = cached(config.with_db(9).unwrap(), bound, TrackingMode::Tracking);
    let a = connect_armed(&config).await;
    let ma = manager(a.clone());
    let id = ma.create().await.unwrap().id();
    ma.get(&id).await.unwrap().unwrap();
    let flushed = Instant::now();
    command(&a, "FLUSHDB", vec![]).await;
    let took = within(
        Duration::from_secs(2),
        "the flushed session is gone",
        || async { ma.get(&id).await.unwrap().is_none() },
    )
    .await;
    assert!(
        flushed.elapsed() <= bound + Duration::from_millis(100) || took <= bound,
        "gone after {took:?}, bound {bound:?}"
    );
    ma.close().await.unwrap();
}

/// A user whose ACL forbids `CLIENT TRACKING`: the storage runs uncached,
/// counts the refusal once, and every read still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_tracking_leaves_the_storage_uncached() {
    let Some(admin_config) = config(Topology::Acl) else {
        return;
    };
    let admin = RedisStorage::connect(&admin_config).await.unwrap();
    let user = format!("cacheless-{}", std::process::id());
    let password = "cacheless-password-0123456789";
    let acl = |args: Vec<&str>| {
        let args: Vec<Value> = args.into_iter().map(Value::from).collect();
        command(&admin, "ACL", args)
    };
    acl(vec![
        "SETUSER",
        &user,
        "reset",
        "on",
        &format!(">{password}"),
        "~*",
        "+@all",
        "-client|tracking",
    ])
    .await;
    let config = cached(
        RedisConfig::standalone(
            &common::env(session_testkit::env::REDIS_ACL).unwrap(),
            admin_config.key_prefix(),
        )
        .unwrap()
        .with_auth(session_config::Auth::user(&user, password)),
        LONG,
        TrackingMode::Tracking,
    );
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = manager(storage.clone());
    within(Duration::from_secs(5), "the refusal is noted", || async {
        storage.cache_stats().unwrap().tracking_refused == 1
    })
    .await;
    let id = manager.create().await.unwrap().id();
    for _ in 0..10 {
        assert!(manager.get(&id).await.unwrap().is_some());
    }
    let stats = storage.cache_stats().unwrap();
    assert!(!storage.cache_armed());
    assert_eq!(
        (stats.hits, stats.fills, stats.entries),
        (0, 0, 0),
        "{stats:?}"
    );
    manager.close().await.unwrap();
    acl(vec!["DELUSER", &user]).await;
}

/// A server that speaks only RESP2 cannot send invalidations: asking for a
/// cache there is a configuration error naming the table. The server is a
/// stand-in that answers `HELLO` as Redis 5 did.
#[tokio::test]
async fn a_resp2_only_server_with_a_cache_is_a_config_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    let reply: &[u8] = if buffer[..n].windows(5).any(|w| w == b"HELLO") {
                        b"-ERR unknown command 'HELLO'\r\n"
                    } else {
                        b"+PONG\r\n"
                    };
                    if socket.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = cached(
        RedisConfig::standalone(&addr.to_string(), "s:").unwrap(),
        LONG,
        TrackingMode::Tracking,
    );
    match RedisStorage::connect(&config).await {
        Err(Error::Config(error)) => {
            assert_eq!(error.field(), Some("redis.cache"), "{error}");
            assert!(error.reason().contains("RESP3"), "{error}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    // Without the cache the same server is fine for the client (RESP2).
    let plain = RedisConfig::standalone(&addr.to_string(), "s:").unwrap();
    let storage = RedisStorage::connect(&plain).await.unwrap();
    storage.close().await.unwrap();
}

/// A cache bounded in bytes stays within its bound; one in entries too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_capacity() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    for capacity in [
        CacheCapacity::Entries(std::num::NonZeroU64::new(50).unwrap()),
        CacheCapacity::Bytes(std::num::NonZeroU64::new(40_000).unwrap()),
    ] {
        let cache = CacheConfig::new(capacity, LONG).unwrap();
        let config = config.clone().with_cache(Some(cache)).unwrap();
        let storage = connect_armed(&config).await;
        let manager = manager(storage.clone());
        for _ in 0..300 {
            let id = manager.create().await.unwrap().id();
            manager.get(&id).await.unwrap().unwrap();
        }
        let stats = storage.cache_stats().unwrap();
        match capacity {
            CacheCapacity::Entries(entries) => assert!(stats.entries <= entries.get(), "{stats:?}"),
            CacheCapacity::Bytes(bytes) => assert!(stats.bytes <= bytes.get(), "{stats:?}"),
        }
        assert!(stats.entries > 0 && stats.fills >= 300, "{stats:?}");
        manager.close().await.unwrap();
    }
}
