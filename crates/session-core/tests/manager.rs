//! Manager behaviour beyond the conformance suite: the cleanup task, its
//! expiry reports, its lifecycle, and settings validation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_core::{Error, LocalStorage, Manager, Session, SessionId, SessionType, Ttl};

const TTL: Duration = Duration::from_secs(60);

fn ttl() -> Ttl {
    Ttl::new(TTL).unwrap()
}

#[tokio::test(start_paused = true)]
async fn cleanup_task_sweeps_every_half_ttl_and_reports_expired_ids() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&expired);
    let manager = Manager::builder(ttl())
        .on_expired(move |ids| sink.lock().unwrap().extend_from_slice(ids))
        .build()
        .unwrap();
    let idle = manager.create().await.unwrap().id();
    let busy = manager.create().await.unwrap().id();
    let storage = manager.storage::<LocalStorage>().unwrap().clone();

    // Keep one session busy; let the other idle past the TTL. The sweep at
    // 1.5 TTL (the third tick) is the first to find it expired.
    for _ in 0..6 {
        tokio::time::sleep(TTL / 4).await;
        assert!(manager.get(&busy).await.unwrap().is_some());
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(*expired.lock().unwrap(), vec![idle]);
    assert_eq!(manager.count().await.unwrap(), 1);
    assert!(
        format!("{storage:?}").contains("entries: 1"),
        "the sweep freed the entry"
    );
    manager.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn cleanup_interval_is_configurable() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&expired);
    let manager = Manager::builder(ttl())
        .cleanup_interval(Duration::from_secs(1))
        .on_expired(move |ids| sink.lock().unwrap().extend_from_slice(ids))
        .build()
        .unwrap();
    let id = manager.create().await.unwrap().id();
    tokio::time::sleep(TTL + Duration::from_millis(1500)).await;
    assert_eq!(*expired.lock().unwrap(), vec![id]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_cleanup_task() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&expired);
    let storage = LocalStorage::new();
    let manager = Manager::builder(ttl())
        .storage(storage.clone())
        .on_expired(move |ids| sink.lock().unwrap().extend_from_slice(ids))
        .build()
        .unwrap();
    manager.create().await.unwrap();
    manager.shutdown().await.unwrap();
    tokio::time::sleep(TTL * 3).await;
    assert!(expired.lock().unwrap().is_empty());
    assert!(matches!(storage.count_now(), Err(Error::Closed)));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_manager_stops_the_cleanup_task() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&expired);
    let storage = LocalStorage::new();
    let manager = Manager::builder(ttl())
        .storage(storage.clone())
        .on_expired(move |ids| sink.lock().unwrap().extend_from_slice(ids))
        .build()
        .unwrap();
    let clone = manager.clone();
    manager.create().await.unwrap();
    drop(manager);
    // A clone keeps the task alive...
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(expired.lock().unwrap().len(), 1);
    clone.create().await.unwrap();
    drop(clone);
    // ...and the last drop ends it: the second session is never swept.
    tokio::time::sleep(TTL * 3).await;
    assert_eq!(expired.lock().unwrap().len(), 1);
    assert_eq!(
        storage.count_now().unwrap(),
        0,
        "expired, though never swept"
    );
}

#[test]
fn a_manager_built_outside_a_runtime_starts_cleanup_on_first_use() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&expired);
    // No runtime here: construction must neither panic nor fail.
    let manager = Manager::builder(ttl())
        .on_expired(move |ids| sink.lock().unwrap().extend_from_slice(ids))
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let id = manager.create().await.unwrap().id();
        tokio::time::sleep(TTL * 2).await;
        assert_eq!(*expired.lock().unwrap(), vec![id]);
    });
}

#[tokio::test]
async fn new_and_typed_use_local_storage() {
    let manager = Manager::new(ttl(), |id| Session::new(id, SessionType::Sse));
    assert!(manager.is_local());
    assert!(manager.storage::<LocalStorage>().is_some());
    assert_eq!(
        manager.create().await.unwrap().session_type(),
        SessionType::Sse
    );

    let typed = Manager::typed(ttl(), SessionType::Streamable);
    assert!(typed.is_local());
    assert_eq!(
        typed.create().await.unwrap().session_type(),
        SessionType::Streamable
    );

    // with_storage recognises local storage and keeps the direct path.
    let explicit = Manager::with_storage(
        ttl(),
        |id| Session::new(id, SessionType::Mcp),
        LocalStorage::new(),
    );
    assert!(explicit.is_local());
}

#[tokio::test]
async fn a_factory_that_changes_the_id_is_refused() {
    let manager = Manager::new(ttl(), |_| Session::new(SessionId::new(), SessionType::Mcp));
    assert!(matches!(
        manager.add_with_id(SessionId::new()).await,
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn invalid_settings_are_config_errors() {
    for (builder, field) in [
        (
            Manager::builder(ttl()).operation_timeout(Duration::ZERO),
            "operation_timeout",
        ),
        (
            Manager::builder(ttl()).cleanup_timeout(Duration::ZERO),
            "cleanup_timeout",
        ),
        (
            Manager::builder(ttl()).cleanup_interval(Duration::ZERO),
            "cleanup_interval",
        ),
        (
            Manager::builder(ttl()).max_lifetime(Some(Duration::ZERO)),
            "max_lifetime",
        ),
    ] {
        match builder.build() {
            Err(Error::Config { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: expected a config error, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_past_its_lifetime_cannot_be_written() {
    let manager = Manager::builder(ttl())
        .max_lifetime(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let session = manager.create().await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(matches!(
        manager.upsert((*session).clone()).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(!manager.update((*session).clone()).await.unwrap());
    assert!(manager.get(&session.id()).await.unwrap().is_none());
}

/// A slow custom storage: every call must end at the operation timeout with a
/// typed error instead of hanging. `Stalled(Some(bound))` claims (falsely)
/// to bound its keyed operations by itself.
struct Stalled(Option<Duration>);

impl session_core::Storage for Stalled {
    async fn create(&self, _: Arc<Session>, _: session_core::Expiry) -> session_core::Result<bool> {
        std::future::pending().await
    }
    async fn update(&self, _: Arc<Session>, _: session_core::Expiry) -> session_core::Result<bool> {
        std::future::pending().await
    }
    async fn store(&self, _: Arc<Session>, _: session_core::Expiry) -> session_core::Result<()> {
        std::future::pending().await
    }
    async fn load(
        &self,
        _: &SessionId,
        _: session_core::Expiry,
    ) -> session_core::Result<Option<Arc<Session>>> {
        std::future::pending().await
    }
    async fn delete(&self, _: &SessionId) -> session_core::Result<bool> {
        std::future::pending().await
    }
    async fn delete_expired(
        &self,
        _: tokio::time::Instant,
    ) -> session_core::Result<Vec<SessionId>> {
        std::future::pending().await
    }
    async fn count(&self) -> session_core::Result<usize> {
        std::future::pending().await
    }
    async fn close(&self) -> session_core::Result<()> {
        Ok(())
    }
    fn keyed_operation_bound(&self) -> Option<Duration> {
        self.0
    }
}

#[tokio::test(start_paused = true)]
async fn operations_on_a_stalled_storage_time_out() {
    let manager = Manager::builder(ttl())
        .storage(Stalled(None))
        .operation_timeout(Duration::from_secs(2))
        .cleanup_timeout(Duration::from_secs(7))
        .build()
        .unwrap();
    assert!(!manager.is_local());
    let started = tokio::time::Instant::now();
    match manager.get(&SessionId::new()).await {
        Err(Error::Timeout { operation, after }) => {
            assert_eq!(operation, "load");
            assert_eq!(after, Duration::from_secs(2));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(manager.create().await.unwrap_err().is_retryable());
    assert!(matches!(
        manager.count().await,
        Err(Error::Timeout {
            operation: "count",
            ..
        })
    ));
    match manager.cleanup_expired().await {
        Err(Error::Timeout { operation, after }) => {
            assert_eq!((operation, after), ("cleanup", Duration::from_secs(7)));
        }
        other => panic!("expected a cleanup timeout, got {other:?}"),
    }
    manager.shutdown().await.unwrap();
}

/// A storage that bounds its keyed operations within the operation timeout
/// is trusted to: the manager adds no timer to them (this one lies, so a
/// load never ends), but still times `count`. A bound longer than the
/// operation timeout is not enough to skip the manager's timer.
#[tokio::test(start_paused = true)]
async fn a_storage_bounded_within_the_operation_timeout_is_not_timed_again() {
    let trusted = Manager::builder(ttl())
        .storage(Stalled(Some(Duration::from_secs(1))))
        .operation_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let id = SessionId::new();
    let load = tokio::time::timeout(Duration::from_secs(60), trusted.get(&id));
    assert!(load.await.is_err(), "the manager added a timer");
    assert!(matches!(
        trusted.count().await,
        Err(Error::Timeout {
            operation: "count",
            ..
        })
    ));

    let too_slow = Manager::builder(ttl())
        .storage(Stalled(Some(Duration::from_secs(3))))
        .operation_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert!(matches!(
        too_slow.get(&SessionId::new()).await,
        Err(Error::Timeout {
            operation: "load",
            ..
        })
    ));
}
