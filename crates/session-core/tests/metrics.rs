//! What the manager reports through the `metrics` facade, counted exactly
//! after a scripted workload on local storage: operations by outcome,
//! errors by kind, latencies, read-modify-write retries, foreign reads and
//! swept sessions; and that no label carries a session id or a principal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use session_core::metrics::{
    DURATION, ERRORS, EXPIRED, FOREIGN_READS, LIVE, MODIFY_RETRIES, OPERATIONS,
};
use session_core::{Error, Manager, Owner, SessionId, SessionType, SyncStorage, Ttl};
use session_local::LocalStorage;

/// Runs `work` on a current-thread runtime (on paused time if `paused`)
/// with `recorder` as this thread's recorder, so that the managers it
/// builds register their handles there.
fn on_recorder<T>(recorder: &DebuggingRecorder, paused: bool, work: impl Future<Output = T>) -> T {
    metrics::with_local_recorder(recorder, || {
        let mut runtime = tokio::runtime::Builder::new_current_thread();
        runtime.enable_all();
        if paused {
            runtime.start_paused(true);
        }
        runtime.build().unwrap().block_on(work)
    })
}

/// What was recorded since the last snapshot (a snapshot takes it).
fn take(snapshotter: &Snapshotter) -> Vec<(CompositeKey, DebugValue)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

/// The value of the counter `name` with exactly `labels`, 0 if absent.
fn counter(snapshot: &[(CompositeKey, DebugValue)], name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .find(|(key, _)| {
            key.kind() == MetricKind::Counter
                && key.key().name() == name
                && key.key().labels().count() == labels.len()
                && labels.iter().all(|(label, value)| {
                    key.key()
                        .labels()
                        .any(|l| l.key() == *label && l.value() == *value)
                })
        })
        .map_or(0, |(_, value)| match value {
            DebugValue::Counter(count) => *count,
            _ => 0,
        })
}

/// How many latencies the histogram of `operation` holds.
fn latencies(snapshot: &[(CompositeKey, DebugValue)], operation: &str) -> usize {
    snapshot
        .iter()
        .filter(|(key, _)| {
            key.kind() == MetricKind::Histogram
                && key.key().name() == DURATION
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "operation" && l.value() == operation)
        })
        .map(|(_, value)| match value {
            DebugValue::Histogram(values) => values.len(),
            _ => 0,
        })
        .sum()
}

fn ops(snapshot: &[(CompositeKey, DebugValue)], operation: &str, outcome: &str) -> u64 {
    counter(
        snapshot,
        OPERATIONS,
        &[
            ("operation", operation),
            ("backend", "local"),
            ("outcome", outcome),
        ],
    )
}

async fn workload(storage: LocalStorage) -> Vec<SessionId> {
    let manager: Manager = Manager::builder(storage.clone(), Ttl::from_secs(60).unwrap())
        .factory(SessionType::Streamable)
        .build()
        .unwrap();
    let owner = Owner::new("https://issuer.test", "alice").unwrap();
    let other = Owner::new("https://issuer.test", "mallory").unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(manager.create().await.unwrap().id());
    }
    let owned = manager.create_owned(owner.clone()).await.unwrap();
    ids.push(owned.id());
    // A duplicate id: an error of kind already_exists.
    let duplicate = manager.create_with_id(ids[0]).await.unwrap_err();
    assert!(matches!(duplicate, Error::AlreadyExists(_)));
    // Three found, one absent.
    for id in &ids[..3] {
        assert!(manager.get(id).await.unwrap().is_some());
    }
    assert!(manager.get(&SessionId::new()).await.unwrap().is_none());
    // Another principal's read of alice's session: absent to her, counted.
    assert!(
        manager
            .get_as(&owned.id(), Some(&other))
            .await
            .unwrap()
            .is_none()
    );
    // A read-modify-write whose first attempt loses to a write made from
    // inside it: one retry, then success.
    let mut first = true;
    let target = ids[1];
    let ttl = Ttl::from_secs(60).unwrap();
    let written = manager
        .modify(&target, |session| {
            if first {
                first = false;
                let mut rival = session.clone();
                rival.set_metadata("rival", "1");
                SyncStorage::update(&storage, Arc::new(rival), ttl).unwrap();
            }
            session.set_metadata("mine", "1");
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    assert!(written.is_some());
    // Deletes: one found, one not.
    assert!(manager.delete(&ids[2]).await.unwrap());
    assert!(!manager.delete(&ids[2]).await.unwrap());
    manager.close().await.unwrap();
    // After close: an error of kind closed.
    assert!(matches!(manager.get(&ids[0]).await, Err(Error::Closed)));
    ids
}

#[test]
fn the_manager_counts_each_operation_by_outcome() {
    let recorder = DebuggingRecorder::new();
    let snapshotter: Snapshotter = recorder.snapshotter();
    let storage = LocalStorage::new();
    let ids = on_recorder(&recorder, false, workload(storage.clone()));
    let snapshot = take(&snapshotter);

    // 4 creates and the duplicate.
    assert_eq!(ops(&snapshot, "create", "ok"), 4);
    assert_eq!(ops(&snapshot, "create", "absent"), 1);
    // Gets: 3 found, 1 absent, alice's session read for mallory (found,
    // then hidden), and the modify's two reads.
    assert_eq!(ops(&snapshot, "get", "ok"), 3 + 1 + 2);
    assert_eq!(ops(&snapshot, "get", "absent"), 1);
    // The closed manager fails before reaching the storage: not an
    // operation of the storage, so not counted.
    assert_eq!(ops(&snapshot, "get", "error"), 0);
    // The modify's conditional writes: the lost one and the one that won.
    assert_eq!(ops(&snapshot, "update_if", "ok"), 2);
    assert_eq!(
        counter(&snapshot, MODIFY_RETRIES, &[("backend", "local")]),
        1
    );
    assert_eq!(ops(&snapshot, "delete", "ok"), 1);
    assert_eq!(ops(&snapshot, "delete", "absent"), 1);
    assert_eq!(
        counter(&snapshot, FOREIGN_READS, &[("backend", "local")]),
        1
    );
    // Each call recorded one latency.
    assert_eq!(latencies(&snapshot, "create"), 5);
    assert_eq!(latencies(&snapshot, "get"), 7);
    assert_eq!(latencies(&snapshot, "update_if"), 2);
    assert_eq!(latencies(&snapshot, "delete"), 2);

    // No label carries a session id or a principal.
    for (key, _) in &snapshot {
        for label in key.key().labels() {
            for id in &ids {
                assert!(!label.value().contains(&id.to_string()), "{key:?}");
            }
            assert!(
                !label.value().contains("alice") && !label.value().contains("mallory"),
                "{key:?}"
            );
        }
    }
}

/// The duplicate create is counted as absent (its id was taken), not as an
/// error; an error of the storage is counted by kind.
#[test]
fn errors_are_counted_by_kind() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    on_recorder(&recorder, false, async {
        let storage = LocalStorage::new();
        let manager: Manager = Manager::builder(storage.clone(), Ttl::from_secs(60).unwrap())
            .build()
            .unwrap();
        let id = manager.create().await.unwrap().id();
        // The storage closed under the manager: its calls fail.
        SyncStorage::close(&storage).unwrap();
        assert!(manager.get(&id).await.is_err());
        assert!(manager.delete(&id).await.is_err());
    });
    let snapshot = take(&snapshotter);
    assert_eq!(ops(&snapshot, "get", "error"), 1);
    assert_eq!(ops(&snapshot, "delete", "error"), 1);
    assert_eq!(
        counter(
            &snapshot,
            ERRORS,
            &[
                ("operation", "get"),
                ("backend", "local"),
                ("error_type", "closed")
            ]
        ),
        1
    );
}

/// `record_metrics` sets the live-session gauge of local storage exactly,
/// and reading it touches no session.
#[test]
fn record_metrics_counts_live_local_sessions() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The gauge's value if it was set since the last snapshot, and the
    // operations counted since.
    let live_and_operations = || {
        let mut live = None;
        let mut operations = 0;
        for (key, value) in take(&snapshotter) {
            match value {
                DebugValue::Gauge(value) if key.key().name() == LIVE => live = Some(value.0),
                DebugValue::Counter(count) if key.key().name() == OPERATIONS => operations += count,
                _ => {}
            }
        }
        (live, operations)
    };
    on_recorder(&recorder, false, async {
        let manager: Manager = Manager::builder(LocalStorage::new(), Ttl::from_secs(60).unwrap())
            .build()
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(manager.create().await.unwrap().id());
        }
        manager.record_metrics();
        assert_eq!(live_and_operations(), (Some(3.0), 3));
        manager.delete(&ids[0]).await.unwrap();
        assert_eq!(live_and_operations().1, 1);
        manager.record_metrics();
        // Counting is no storage operation of the manager's: no
        // read, no TTL slid.
        assert_eq!(live_and_operations(), (Some(2.0), 0));
    });
}

/// The sweep counts what it removed (on paused time: the TTL passes
/// without waiting).
#[test]
fn the_sweep_counts_removed_sessions() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    on_recorder(&recorder, true, async {
        let manager: Manager = Manager::builder(
            LocalStorage::new(),
            Ttl::new(Duration::from_millis(20)).unwrap(),
        )
        .cleanup_interval(Some(Duration::from_secs(3600)))
        .build()
        .unwrap();
        for _ in 0..3 {
            manager.create().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(manager.delete_expired().await.unwrap(), 3);
    });
    let snapshot = take(&snapshotter);
    assert_eq!(counter(&snapshot, EXPIRED, &[("backend", "local")]), 3);
    assert_eq!(ops(&snapshot, "delete_expired", "ok"), 1);
}
