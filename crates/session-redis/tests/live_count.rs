//! The sampled count of live sessions (`[redis.live_count]`) against real
//! servers: exact within its bound, a flagged lower bound past it, blind to
//! owner indexes and event logs, with plain or hashed key names, and never
//! touching a session's TTL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Topology, config, hashing};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use session_config::{HashPhase, LiveCount, RedisConfig};
use session_core::{Owner, Session, SessionId, SessionType, Storage, Ttl};
use session_redis::events::Record;
use session_redis::fred::bytes::Bytes;
use session_redis::fred::interfaces::KeysInterface;
use session_redis::{EventLimits, EventLog, LIVE_CAPPED, RedisStorage};

const SESSIONS: u64 = 12;

fn ttl() -> Ttl {
    Ttl::from_secs(60).unwrap()
}

/// Waits until `storage` has finished a count that gives `expected`.
async fn counted(storage: &RedisStorage, expected: (u64, bool)) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let live = storage.live_sessions();
        if live == Some(expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the count is {live:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pttl(storage: &RedisStorage, id: &SessionId) -> i64 {
    storage.client().pttl(storage.key(id)).await.unwrap()
}

async fn live_sessions_are_counted(topology: Topology, configure: fn(RedisConfig) -> RedisConfig) {
    let Some(base) = config(topology) else { return };
    let base = configure(base);
    let with = |max_keys| {
        base.clone().with_live_count(Some(
            LiveCount::new(Duration::from_millis(50), max_keys).unwrap(),
        ))
    };
    let writer = RedisStorage::connect(&base).await.unwrap();
    assert_eq!(writer.live_sessions(), None, "off unless configured");
    let owner = Owner::new("https://issuer.example", "alice").unwrap();
    let mut ids = Vec::new();
    for index in 0..SESSIONS {
        let id = SessionId::new();
        let session = if index % 3 == 0 {
            Session::new_owned(id, SessionType::Mcp, owner.clone())
        } else {
            Session::new(id, SessionType::Mcp)
        };
        assert!(writer.create(Arc::new(session), ttl()).await.unwrap());
        ids.push(id);
    }
    // An owner index and an event log share the namespace and must not
    // count.
    let log = EventLog::connect(&base, EventLimits::default())
        .await
        .unwrap();
    let record = Record::Event {
        data: Some(Bytes::from_static(b"x")),
        retry: None,
    };
    log.append(&ids[0], "s", &record, ttl()).await.unwrap();
    let before = pttl(&writer, &ids[1]).await;

    let exact = RedisStorage::connect(&with(1_000)).await.unwrap();
    counted(&exact, (SESSIONS, false)).await;
    let capped = RedisStorage::connect(&with(5)).await.unwrap();
    counted(&capped, (5, true)).await;
    // Counting read names only: the TTL went on running down.
    assert!(pttl(&writer, &ids[1]).await <= before);

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || Storage::record_metrics(&capped));
    let snapshot = snapshotter.snapshot().into_vec();
    let gauge = |name: &str| {
        snapshot
            .iter()
            .find(|(key, ..)| key.key().name() == name)
            .map(|(.., value)| value)
    };
    assert_eq!(
        gauge(session_core::metrics::LIVE),
        Some(&DebugValue::Gauge(5.0.into()))
    );
    assert_eq!(gauge(LIVE_CAPPED), Some(&DebugValue::Gauge(1.0.into())));

    // A deleted session leaves the next count.
    assert!(writer.delete(&ids[1]).await.unwrap());
    counted(&exact, (SESSIONS - 1, false)).await;
    log.close().await;
    for storage in [writer, exact, capped] {
        storage.close().await.unwrap();
    }
}

fn plain(config: RedisConfig) -> RedisConfig {
    config
}

fn hashed(config: RedisConfig) -> RedisConfig {
    hashing(config, HashPhase::Hashed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone() {
    live_sessions_are_counted(Topology::Standalone, plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_hashed() {
    live_sessions_are_counted(Topology::Standalone, hashed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster() {
    live_sessions_are_counted(Topology::Cluster, plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_cluster_hashed() {
    live_sessions_are_counted(Topology::ValkeyCluster, hashed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_sentinel() {
    live_sessions_are_counted(Topology::ValkeySentinel, plain).await;
}
