//! The manager over the storage: the factory, atomic create, the whole
//! lifecycle, and two managers (two replicas) on one store.

use std::sync::Arc;

use session_core::{Error, Session, SessionId, SessionType};

use crate::Harness;
use crate::fixture::manager;

/// `create_with_id` uses the factory and never overwrites: a duplicate is
/// `AlreadyExists` (the Go `AddWithID` loads then stores, and two replicas
/// can both "win").
pub async fn manager_create_with_id_is_atomic<H: Harness>(harness: &H) {
    let manager = manager(harness).await;
    let id = SessionId::new();
    let session = manager.create_with_id(id).await.unwrap();
    assert_eq!(session.session_type(), SessionType::Streamable);
    assert_eq!(session.get_metadata("made-by"), Some("factory"));
    match manager.create_with_id(id).await {
        Err(Error::AlreadyExists(existing)) => assert_eq!(existing, id),
        other => panic!("duplicate create gave {other:?}"),
    }
    manager.close().await.unwrap();
}

/// The manager's operations, end to end.
pub async fn manager_round_trip<H: Harness>(harness: &H) {
    let manager = manager(harness).await;
    let created = manager.create().await.unwrap();
    let id = created.id();
    let fetched = manager.get(&id).await.unwrap().unwrap();
    assert_eq!(*fetched, *created);

    let mut edited = Arc::unwrap_or_clone(fetched);
    edited.set_metadata("step", "updated");
    assert!(manager.update(edited.clone()).await.unwrap());
    let fetched = manager.get(&id).await.unwrap().unwrap();
    assert_eq!(fetched.get_metadata("step"), Some("updated"));
    assert!(fetched.updated_at() >= created.updated_at());
    assert_eq!(fetched.created_at(), created.created_at());

    edited.set_metadata("step", "upserted");
    manager.upsert(edited).await.unwrap();
    let fetched = manager.get(&id).await.unwrap().unwrap();
    assert_eq!(fetched.get_metadata("step"), Some("upserted"));
    let fresh = Session::new(SessionId::new(), SessionType::Sse);
    manager.upsert(fresh).await.unwrap();
    assert_eq!(manager.count().await.unwrap(), 2);

    assert!(manager.delete(&id).await.unwrap());
    assert!(!manager.delete(&id).await.unwrap());
    assert!(manager.get(&id).await.unwrap().is_none());
    let stale = Session::new(id, SessionType::Mcp);
    assert!(!manager.update(stale).await.unwrap());
    assert_eq!(manager.count().await.unwrap(), 1);
    manager.ping().await.unwrap();
    manager.close().await.unwrap();
}

/// `close` is idempotent and every later call fails with `Closed`.
pub async fn manager_close_then_use_fails<H: Harness>(harness: &H) {
    let manager = manager(harness).await;
    let session = manager.create().await.unwrap();
    manager.close().await.unwrap();
    manager.close().await.unwrap();
    assert!(manager.is_closed());
    let id = session.id();
    let closed = |result: Result<(), Error>, what: &str| {
        assert!(
            matches!(result, Err(Error::Closed)),
            "{what} after close: {result:?}"
        );
    };
    closed(manager.get(&id).await.map(drop), "get");
    closed(
        manager.create_with_id(SessionId::new()).await.map(drop),
        "create_with_id",
    );
    closed(manager.upsert((*session).clone()).await.map(drop), "upsert");
    closed(manager.update((*session).clone()).await.map(drop), "update");
    closed(manager.delete(&id).await.map(drop), "delete");
    closed(manager.count().await.map(drop), "count");
    closed(manager.ping().await, "ping");
    closed(manager.delete_expired().await.map(drop), "delete_expired");
}

/// Two managers on one store: what one creates, the other reads, updates
/// and deletes.
pub async fn two_managers_share_sessions<H: Harness>(harness: &H) {
    let a = manager(harness).await;
    let b = manager(harness).await;
    let id = a.create().await.unwrap().id();
    let seen = b
        .get(&id)
        .await
        .unwrap()
        .expect("replica B must see A's session");
    let mut edited = Arc::unwrap_or_clone(seen);
    edited.set_metadata("by", "b");
    assert!(b.update(edited).await.unwrap());
    harness.settle().await;
    let from_a = a.get(&id).await.unwrap().unwrap();
    assert_eq!(from_a.get_metadata("by"), Some("b"));
    assert!(matches!(
        b.create_with_id(id).await,
        Err(Error::AlreadyExists(_))
    ));
    assert!(b.delete(&id).await.unwrap());
    harness.settle().await;
    assert!(a.get(&id).await.unwrap().is_none());
    a.close().await.unwrap();
    b.close().await.unwrap();
}
