//! Manager behaviour beyond the conformance suite: the cleanup task, its
//! expiry reports, its lifecycle, and settings validation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_core::clock::{Clock, ManualClock};
use session_core::{Error, Manager, Session, SessionId, SessionType, Storage, Topology, Ttl};
use session_local::LocalStorage;

const TTL: Duration = Duration::from_secs(60);

fn ttl() -> Ttl {
    Ttl::new(TTL).unwrap()
}

#[tokio::test(start_paused = true)]
async fn cleanup_task_sweeps_every_half_ttl_and_reports_expired_ids() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&expired);
    let storage = LocalStorage::new();
    let manager = Manager::builder(storage.clone(), ttl())
        .on_expired(move |ids| sink.lock().unwrap().extend_from_slice(ids))
        .build()
        .unwrap();
    sweep_the_idle_one(&manager, &storage, &expired).await;
    manager.close().await.unwrap();
}

/// Keeps one new session busy and lets another idle past the TTL; the
/// sweep at 1.5 TTL (the third tick) is the first to find it expired and
/// report it. Returns the busy one.
async fn sweep_the_idle_one<S: Storage>(
    manager: &Manager<S>,
    storage: &LocalStorage,
    expired: &Mutex<Vec<SessionId>>,
) -> SessionId {
    let idle = manager.create().await.unwrap().id();
    let busy = manager.create().await.unwrap().id();
    for _ in 0..6 {
        tokio::time::sleep(TTL / 4).await;
        assert!(manager.get(&busy).await.unwrap().is_some());
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(*expired.lock().unwrap(), vec![idle]);
    assert_eq!(manager.count().await.unwrap(), 1);
    assert_eq!(storage.entries(), 1, "the sweep freed the entry");
    busy
}

#[tokio::test(start_paused = true)]
async fn cleanup_interval_is_configurable() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&expired);
    let manager = Manager::builder(LocalStorage::new(), ttl())
        .cleanup_interval(Some(Duration::from_secs(1)))
        .on_expired(move |ids| sink.lock().unwrap().extend_from_slice(ids))
        .build()
        .unwrap();
    let id = manager.create().await.unwrap().id();
    tokio::time::sleep(TTL + Duration::from_millis(1500)).await;
    assert_eq!(*expired.lock().unwrap(), vec![id]);
}

#[tokio::test(start_paused = true)]
async fn close_stops_the_cleanup_task() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&expired);
    let storage = LocalStorage::new();
    let manager = Manager::builder(storage.clone(), ttl())
        .on_expired(move |ids| sink.lock().unwrap().extend_from_slice(ids))
        .build()
        .unwrap();
    manager.create().await.unwrap();
    manager.close().await.unwrap();
    tokio::time::sleep(TTL * 3).await;
    assert!(expired.lock().unwrap().is_empty());
    assert!(matches!(storage.count().await, Err(Error::Closed)));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_manager_stops_the_cleanup_task() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&expired);
    let storage = LocalStorage::new();
    let manager = Manager::builder(storage.clone(), ttl())
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
        storage.count().await.unwrap(),
        0,
        "expired, though never swept"
    );
    assert_eq!(storage.entries(), 1, "never swept");
}

#[test]
fn a_manager_built_outside_a_runtime_starts_cleanup_on_first_use() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&expired);
    // No runtime here: construction must neither panic nor fail.
    let manager = Manager::builder(LocalStorage::new(), ttl())
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

/// A factory may be a closure or a session type; the storage's description
/// reaches the manager's.
#[tokio::test]
async fn a_factory_is_a_closure_or_a_session_type() {
    let closure = Manager::builder(LocalStorage::new(), ttl())
        .factory(|id| Session::new(id, SessionType::Sse))
        .build()
        .unwrap();
    assert_eq!(
        closure.create().await.unwrap().session_type(),
        SessionType::Sse
    );
    let typed = Manager::builder(LocalStorage::new(), ttl())
        .factory(SessionType::Streamable)
        .build()
        .unwrap();
    assert_eq!(
        typed.create().await.unwrap().session_type(),
        SessionType::Streamable
    );
    let description = typed.describe();
    assert_eq!(description.backend, "local");
    assert_eq!(description.topology, Topology::InProcess);
    assert!(format!("{typed:?}").contains("\"local\""), "{typed:?}");
    typed.ping().await.unwrap();
}

#[tokio::test]
async fn a_factory_that_changes_the_id_is_refused() {
    let manager = Manager::builder(LocalStorage::new(), ttl())
        .factory(|_| Session::new(SessionId::new(), SessionType::Mcp))
        .build()
        .unwrap();
    assert!(matches!(
        manager.create_with_id(SessionId::new()).await,
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn invalid_settings_are_config_errors() {
    let builder = || Manager::builder(LocalStorage::new(), ttl());
    for (builder, field) in [
        (
            builder().cleanup_interval(Some(Duration::ZERO)),
            "cleanup_interval",
        ),
        (builder().max_lifetime(Some(Duration::ZERO)), "max_lifetime"),
    ] {
        match builder.build() {
            Err(Error::Config(error)) => assert_eq!(error.field(), Some(field)),
            other => panic!("{field}: expected a config error, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_past_its_lifetime_cannot_be_written() {
    let clock = ManualClock::starting_now();
    let manager = Manager::builder(LocalStorage::new(), ttl())
        .max_lifetime(Some(Duration::from_secs(10)))
        .clock(clock.clone())
        .build()
        .unwrap();
    let session = manager.create().await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    clock.advance(Duration::from_secs(11));
    assert!(matches!(
        manager.upsert((*session).clone()).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(!manager.update((*session).clone()).await.unwrap());
    assert!(manager.get(&session.id()).await.unwrap().is_none());
}

/// Session timestamps follow the manager's clock at the moment of each
/// operation, so a step of the system clock (an NTP correction, a resumed VM)
/// takes effect at once: forward, a session comes closer to its maximum
/// lifetime by the size of the step; back, it gets that much longer. The
/// sliding TTL is a duration measured by the storage and is not affected.
#[tokio::test(start_paused = true)]
async fn a_clock_step_forward_and_back_keeps_timestamps_on_the_clock() {
    let clock = ManualClock::starting_now();
    let lifetime = Duration::from_secs(30 * 60);
    let manager = Manager::builder(LocalStorage::new(), ttl())
        .max_lifetime(Some(lifetime))
        .clock(clock.clone())
        .build()
        .unwrap();
    let created = manager.create().await.unwrap();
    assert_eq!(created.created_at(), clock.now());
    assert_eq!(created.updated_at(), clock.now());

    // A step forward of 20 minutes: the next write is stamped with the new
    // time, and creation stays where it was.
    clock.advance(Duration::from_secs(20 * 60));
    let mut edited = (*created).clone();
    edited.set_metadata("step", "forward");
    assert!(manager.update(edited).await.unwrap());
    let read = manager.get(&created.id()).await.unwrap().unwrap();
    assert_eq!(read.created_at(), created.created_at());
    assert_eq!(read.updated_at(), clock.now());

    // A step back of 15 minutes: the write is stamped with what the clock
    // says now, earlier than the previous stamp.
    clock.rewind(Duration::from_secs(15 * 60));
    let mut edited = (*read).clone();
    edited.set_metadata("step", "back");
    assert!(manager.update(edited).await.unwrap());
    let read = manager.get(&created.id()).await.unwrap().unwrap();
    assert_eq!(read.updated_at(), clock.now());
    assert_eq!(read.created_at(), created.created_at());

    // The lifetime is measured on the clock: 5 minutes after creation by the
    // clock, 25 minutes remain, and a step forward of 26 minutes ends it at
    // once although the session was used a moment ago.
    clock.advance(Duration::from_secs(24 * 60));
    assert!(manager.get(&created.id()).await.unwrap().is_some());
    clock.advance(Duration::from_secs(2 * 60));
    assert!(
        manager.get(&created.id()).await.unwrap().is_none(),
        "30 minutes after creation by the clock, the lifetime is over"
    );
}

/// Deadlines belong to the storage: the manager adds no timer of its own, so
/// a storage that never answers is not cut short by the manager (Redis bounds
/// every operation by its command timeout; see `Storage`).
#[tokio::test(start_paused = true)]
async fn the_manager_adds_no_timer_to_a_storage() {
    let manager = Manager::builder(Stalled, ttl()).build().unwrap();
    let id = SessionId::new();
    let get = tokio::time::timeout(Duration::from_secs(3600), manager.get(&id));
    assert!(get.await.is_err(), "the manager ended the call itself");
    assert_eq!(manager.describe().backend, "stalled");
}

/// A storage that never answers.
struct Stalled;

impl Storage for Stalled {
    async fn create(&self, _: Arc<Session>, _: Ttl) -> session_core::Result<bool> {
        std::future::pending().await
    }
    async fn update(&self, _: Arc<Session>, _: Ttl) -> session_core::Result<Option<Arc<Session>>> {
        std::future::pending().await
    }
    async fn upsert(&self, _: Arc<Session>, _: Ttl) -> session_core::Result<Arc<Session>> {
        std::future::pending().await
    }
    async fn update_if(
        &self,
        _: Arc<Session>,
        _: session_core::Revision,
        _: Ttl,
    ) -> session_core::Result<session_core::Conditional> {
        std::future::pending().await
    }
    async fn list_owned(&self, _: &session_core::Owner) -> session_core::Result<Vec<Arc<Session>>> {
        std::future::pending().await
    }
    async fn revoke_owned(&self, _: &session_core::Owner) -> session_core::Result<Vec<SessionId>> {
        std::future::pending().await
    }
    async fn get(&self, _: &SessionId, _: Ttl) -> session_core::Result<Option<Arc<Session>>> {
        std::future::pending().await
    }
    async fn expire(&self, _: &SessionId, _: Ttl) -> session_core::Result<bool> {
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
    async fn ping(&self) -> session_core::Result<()> {
        std::future::pending().await
    }
    fn describe(&self) -> session_core::Description {
        session_core::Description::new("stalled", Topology::Standalone, false)
    }
    async fn close(&self) -> session_core::Result<()> {
        Ok(())
    }
}

// A manager that keeps the storage's type sweeps, reports and answers as
// the erased one does.
#[tokio::test(start_paused = true)]
async fn a_typed_manager_sweeps_and_answers_like_the_erased_one() {
    let expired = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&expired);
    let storage = LocalStorage::new();
    let manager: Manager<LocalStorage> = Manager::typed_builder(storage.clone(), ttl())
        .on_expired(move |ids| sink.lock().unwrap().extend_from_slice(ids))
        .build()
        .unwrap();
    assert_eq!(manager.describe(), Storage::describe(&storage));
    let busy = sweep_the_idle_one(&manager, &storage, &expired).await;
    // A clone shares the storage and the cleanup task.
    let clone = manager.clone();
    assert!(clone.delete(&busy).await.unwrap());
    assert!(manager.get(&busy).await.unwrap().is_none());
    manager.close().await.unwrap();
    assert!(matches!(clone.get(&busy).await, Err(Error::Closed)));
    assert!(format!("{manager:?}").starts_with("Manager {"));
}
