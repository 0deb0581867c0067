//! The event log of resumable streams against real servers, on every
//! topology: appends come back in order and bound to their session, the key
//! follows the session's TTL, the caps hold, a tail sees what another
//! client appends, and what the log did not write is refused, not replayed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Topology, config};
use session_config::RedisConfig;
use session_core::{BackendErrorKind, Error, SessionId, Storage, Ttl};
use session_redis::events::{EntryId, LoggedEvent, Record};
use session_redis::fred::bytes::Bytes;
use session_redis::fred::interfaces::{KeysInterface, StreamsInterface};
use session_redis::{EventLimits, EventLog, RedisStorage};

fn event(data: &str) -> Record {
    Record::Event {
        data: Some(Bytes::copy_from_slice(data.as_bytes())),
        retry: None,
    }
}

fn ttl() -> Ttl {
    Ttl::from_secs(60).unwrap()
}

async fn log(config: &RedisConfig, limits: EventLimits) -> EventLog {
    EventLog::connect(config, limits).await.expect("connect")
}

/// The data of `events`, as text, with `-` for a priming event and `end`.
fn texts(events: &[LoggedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| match &event.record {
            Record::Event {
                data: Some(data), ..
            } => String::from_utf8(data.to_vec()).unwrap(),
            Record::Event { data: None, .. } => "-".to_owned(),
            Record::End => "end".to_owned(),
        })
        .collect()
}

async fn round_trip(topology: Topology) {
    let Some(config) = config(topology) else {
        return;
    };
    let log = log(&config, EventLimits::default()).await;
    let (session, other) = (SessionId::new(), SessionId::new());

    let priming = log
        .append(
            &session,
            "a",
            &Record::Event {
                data: None,
                retry: Some(Duration::from_millis(3000)),
            },
            ttl(),
        )
        .await
        .unwrap();
    let first = log
        .append(&session, "a", &event("one"), ttl())
        .await
        .unwrap();
    log.append(&session, "b", &event("elsewhere"), ttl())
        .await
        .unwrap();
    log.append(&session, "a", &event("two"), ttl())
        .await
        .unwrap();
    log.append(&session, "a", &Record::End, ttl())
        .await
        .unwrap();
    assert!(priming < first);

    let all = log.after(&session, EntryId::ZERO, 100).await.unwrap();
    assert_eq!(texts(&all), ["-", "one", "elsewhere", "two", "end"]);
    assert_eq!(
        all[0].record,
        Record::Event {
            data: None,
            retry: Some(Duration::from_millis(3000))
        }
    );
    assert_eq!(
        all.iter().map(|e| e.stream.as_str()).collect::<Vec<_>>(),
        ["a", "a", "b", "a", "a"]
    );
    // Strictly after: the id itself is not replayed.
    let later = log.after(&session, first, 100).await.unwrap();
    assert_eq!(texts(&later), ["elsewhere", "two", "end"]);
    assert_eq!(
        texts(&log.after(&session, first, 1).await.unwrap()),
        ["elsewhere"]
    );

    // An id is found in its own session's log only.
    let found = log.find(&session, first).await.unwrap().unwrap();
    assert_eq!((found.id, found.stream.as_str()), (first, "a"));
    assert_eq!(log.find(&other, first).await.unwrap(), None);
    assert!(
        log.after(&other, EntryId::ZERO, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // The key lives as long as the session it belongs to.
    let storage = RedisStorage::connect(&config).await.unwrap();
    let left: i64 = storage.client().pttl(log.key(&session)).await.unwrap();
    assert!((50_000..=60_000).contains(&left), "{left} ms left");

    assert!(log.delete(&session).await.unwrap());
    assert!(
        log.after(&session, EntryId::ZERO, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(log.find(&session, first).await.unwrap(), None);
    assert!(!log.delete(&session).await.unwrap());

    // A deleted log stays deleted for appends that may not create it: a
    // producer still running after its session's delete writes nothing.
    assert_eq!(
        log.append_existing(&session, "a", &event("late"), ttl())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        log.append_existing(&session, "a", &Record::End, ttl())
            .await
            .unwrap(),
        None
    );
    let exists: i64 = storage.client().exists(log.key(&session)).await.unwrap();
    assert_eq!(exists, 0);
    // Once a stream's first event created it, later ones are appended.
    let created = log
        .append(&session, "b", &event("new"), ttl())
        .await
        .unwrap();
    let next = log
        .append_existing(&session, "b", &event("next"), ttl())
        .await
        .unwrap()
        .expect("the log exists");
    assert!(next > created);
    assert_eq!(
        texts(&log.after(&session, EntryId::ZERO, 10).await.unwrap()),
        ["new", "next"]
    );
    assert!(log.delete(&session).await.unwrap());
    storage.close().await.unwrap();
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_standalone() {
    round_trip(Topology::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_acl() {
    round_trip(Topology::Acl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_tls() {
    round_trip(Topology::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_mtls() {
    round_trip(Topology::Mtls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_cluster() {
    round_trip(Topology::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_sentinel() {
    round_trip(Topology::Sentinel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_valkey() {
    round_trip(Topology::ValkeyStandalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_valkey_cluster() {
    round_trip(Topology::ValkeyCluster).await;
}

/// A tail on one client sees what another client appends while it waits;
/// a wait with nothing to see ends empty; with no tail allowed it answers
/// at once.
async fn tails(topology: Topology) {
    let Some(config) = config(topology) else {
        return;
    };
    let writer = log(&config, EventLimits::default()).await;
    let reader = log(&config, EventLimits::default()).await;
    let session = SessionId::new();
    let start = writer
        .append(&session, "a", &event("before"), ttl())
        .await
        .unwrap();

    let appended = {
        let writer = writer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            writer
                .append(&session, "a", &event("during"), ttl())
                .await
                .unwrap()
        })
    };
    let seen = reader
        .wait_after(&session, start, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("a tail is free");
    assert_eq!(texts(&seen), ["during"]);
    assert_eq!(seen[0].id, appended.await.unwrap());

    let started = tokio::time::Instant::now();
    let nothing = reader
        .wait_after(&session, seen[0].id, Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert!(nothing.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));

    let no_tails = log(&config, EventLimits::default().max_tails(0)).await;
    assert_eq!(
        no_tails
            .wait_after(&session, start, Duration::from_secs(10))
            .await
            .unwrap(),
        None
    );
    writer.delete(&session).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_standalone() {
    tails(Topology::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_tls() {
    tails(Topology::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_cluster() {
    tails(Topology::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_sentinel() {
    tails(Topology::Sentinel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_valkey() {
    tails(Topology::ValkeyStandalone).await;
}

/// The per-session cap trims the oldest events, whose ids are then
/// unknown; an event over the size cap is refused and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_hold() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let limits = EventLimits::default()
        .max_events_per_session(10)
        .max_event_bytes(64);
    let log = log(&config, limits).await;
    let session = SessionId::new();
    let first = log.append(&session, "a", &event("0"), ttl()).await.unwrap();
    for n in 1..1000 {
        log.append(&session, "a", &event(&n.to_string()), ttl())
            .await
            .unwrap();
    }
    let kept = log.after(&session, EntryId::ZERO, 2000).await.unwrap();
    // `MAXLEN ~` trims whole nodes of the stream (100 entries by default).
    assert!(kept.len() >= 10 && kept.len() <= 110, "{} kept", kept.len());
    assert_eq!(texts(&kept).last().map(String::as_str), Some("999"));
    assert_eq!(log.find(&session, first).await.unwrap(), None);

    let big = Record::Event {
        data: Some(Bytes::from(vec![b'x'; 65])),
        retry: None,
    };
    match log.append(&session, "a", &big, ttl()).await {
        Err(Error::InvalidInput(message)) => assert!(message.contains("65 bytes"), "{message}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    let after = log.after(&session, EntryId::ZERO, 2000).await.unwrap();
    assert_eq!(after.len(), kept.len());
    log.delete(&session).await.unwrap();
}

/// A log that confirms appends on a replica, on a server that has none:
/// each append fails within the confirmation's timeout, with an unknown
/// outcome (the entry is on the master), and the other sessions' appends
/// on the same connection go on. The positive case, a replica confirming
/// through a failover, is the reliability scenario
/// `stream-events-failover`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_appends_fail_with_an_unknown_outcome() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let limits = EventLimits::default().confirm_on_replicas(1, Duration::from_millis(50));
    assert_eq!(
        limits.confirmation().map(|confirm| confirm.replicas),
        Some(1)
    );
    assert_eq!(
        EventLimits::default()
            .confirm_on_replicas(0, Duration::from_secs(1))
            .confirmation(),
        None
    );
    let confirming = log(&config, limits).await;
    let plain = log(&config, EventLimits::default()).await;
    let session = SessionId::new();
    let started = std::time::Instant::now();
    let error = confirming
        .append(&session, "a", &event("1"), ttl())
        .await
        .expect_err("no replica can confirm");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.backend_kind(), Some(BackendErrorKind::Unavailable));
    assert!(error.is_outcome_unknown(), "{error}");
    assert!(error.to_string().contains("0 of 1 replicas"), "{error}");
    // Unknown, and here applied: the master has the entry.
    let stored = plain.after(&session, EntryId::ZERO, 10).await.unwrap();
    assert_eq!(texts(&stored), ["1"]);
    // The log without confirmation appends to the same key at once.
    plain
        .append(&session, "a", &event("2"), ttl())
        .await
        .unwrap();
    let stored = plain.after(&session, EntryId::ZERO, 10).await.unwrap();
    assert_eq!(texts(&stored), ["1", "2"]);
    plain.delete(&session).await.unwrap();
    confirming.close().await;
    plain.close().await;
}

/// An entry the log did not write is an error, not an event or a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_entries_are_refused() {
    let Some(config) = config(Topology::Standalone) else {
        return;
    };
    let log = log(&config, EventLimits::default()).await;
    let storage = RedisStorage::connect(&config).await.unwrap();
    let session = SessionId::new();
    let _: String = storage
        .client()
        .xadd(
            log.key(&session),
            false,
            None,
            "*",
            vec![("who", "someone else")],
        )
        .await
        .unwrap();
    match log.after(&session, EntryId::ZERO, 10).await {
        Err(Error::Backend {
            kind: BackendErrorKind::Protocol,
            message,
        }) => assert!(message.contains("never writes"), "{message}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    // A key of another type is the server's WRONGTYPE.
    let wrong = SessionId::new();
    let _: () = storage
        .client()
        .set(log.key(&wrong), "text", None, None, false)
        .await
        .unwrap();
    match log.append(&wrong, "a", &event("x"), ttl()).await {
        Err(Error::Backend {
            kind: BackendErrorKind::WrongType,
            ..
        }) => {}
        other => panic!("expected WRONGTYPE, got {other:?}"),
    }
    let _: i64 = storage
        .client()
        .del(vec![log.key(&session), log.key(&wrong)])
        .await
        .unwrap();
    storage.close().await.unwrap();
}
