//! What makes the storage safe under concurrency: create is
//! insert-if-absent, update is write-if-present.

use std::sync::Arc;

use session_core::{Session, SessionId, SessionType, Storage};

use crate::fixture::session;
use crate::{Fixture, Harness};

/// `create` inserts only if absent and leaves the existing value alone.
pub async fn create_never_overwrites<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let mut first = session(SessionType::Mcp);
    first.set_metadata("writer", "first");
    let mut second = first.clone();
    second.set_metadata("writer", "second");
    assert!(store.create(&first).await);
    assert!(!store.create(&second).await);
    let read = store.must_get(&first.id()).await;
    assert_eq!(read.get_metadata("writer"), Some("first"));
}

/// `update` of a session that does not exist returns false and creates
/// nothing.
pub async fn update_of_a_missing_session_writes_nothing<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let absent = session(SessionType::Mcp);
    assert!(!store.update(&absent).await);
    assert!(!store.exists(&absent.id()).await);
}

/// A concurrent delete must not be undone by an update: the Go package's
/// Redis store writes unconditionally and resurrects deleted sessions.
pub async fn update_after_delete_does_not_resurrect<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let other_replica = Fixture::open(harness).await;
    let written = session(SessionType::Mcp);
    assert!(store.create(&written).await);
    let mut edited = (*store.must_get(&written.id()).await).clone();
    assert!(other_replica.delete(&written.id()).await);
    edited.set_metadata("late", "write");
    assert!(!store.update(&edited).await);
    assert!(!store.exists(&written.id()).await);
    assert!(!other_replica.exists(&written.id()).await);
}

/// 32 concurrent creators of one id, spread over two handles (two
/// replicas): exactly one wins, and its value is the one stored.
pub async fn concurrent_creators_of_one_id_have_one_winner<H: Harness>(harness: &H) {
    let replicas = [
        Arc::new(harness.open().await),
        Arc::new(harness.open().await),
    ];
    let ttl = harness.ttl();
    for _round in 0..10 {
        let id = SessionId::new();
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|writer| {
                let storage = Arc::clone(&replicas[writer % 2]);
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    let mut candidate = Session::new(id, SessionType::Mcp);
                    candidate.set_metadata("writer", writer.to_string());
                    barrier.wait().await;
                    let won = storage.create(Arc::new(candidate), ttl).await;
                    won.expect("create failed").then_some(writer)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            winners.extend(task.await.expect("creator task panicked"));
        }
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        let stored = replicas[0].get(&id, ttl).await.unwrap().unwrap();
        assert_eq!(
            stored.get_metadata("writer"),
            Some(winners[0].to_string().as_str())
        );
    }
}
