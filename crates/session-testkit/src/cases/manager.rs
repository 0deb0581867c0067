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

/// `rotate_as` moves a session to a fresh id: the old id is absent on every
/// replica, the new one holds the same type, metadata, data and creation
/// time; an anonymous session can become an owner's, an owned one keeps its
/// owner, and a foreign or absent session is not moved.
pub async fn rotation_moves_a_session_to_a_new_id<H: Harness>(harness: &H) {
    let manager = manager(harness).await;
    let other_replica = crate::Fixture::open(harness).await;
    let created = manager.create().await.unwrap();
    let id = created.id();
    let (edited, ()) = manager
        .modify(&id, |session| {
            session.set_metadata("step", "before login");
            session.set_data(&crate::Profile::sample())?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
        .unwrap();

    let alice = crate::fixture::owner("alice");
    let rotated = manager
        .rotate_as(&id, None, Some(alice.clone()))
        .await
        .unwrap()
        .expect("the session exists");
    assert_ne!(rotated.id(), id);
    assert_eq!(rotated.owner(), Some(&alice));
    assert_eq!(rotated.session_type(), edited.session_type());
    assert_eq!(rotated.created_at(), edited.created_at());
    assert_eq!(rotated.metadata(), edited.metadata());
    assert_eq!(
        rotated.data::<crate::Profile>().unwrap(),
        Some(crate::Profile::sample())
    );
    harness.settle().await;
    assert!(other_replica.get(&id).await.is_none(), "the old id is gone");
    let stored = other_replica.must_get(&rotated.id()).await;
    assert_eq!(stored.metadata(), edited.metadata());
    assert_eq!(stored.owner(), Some(&alice));
    assert!(
        other_replica
            .owned_ids(&alice)
            .await
            .contains(&rotated.id())
    );

    // Owned now: another principal cannot move it, nor hand it on.
    let bob = crate::fixture::owner("bob");
    assert!(
        manager
            .rotate_as(&rotated.id(), Some(&bob), None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        manager
            .rotate_as(&rotated.id(), Some(&alice), Some(bob))
            .await,
        Err(Error::InvalidInput(_))
    ));
    assert!(
        other_replica.exists(&rotated.id()).await,
        "nothing was moved"
    );
    let again = manager
        .rotate_as(&rotated.id(), Some(&alice), None)
        .await
        .unwrap()
        .expect("the owner moves it");
    assert_eq!(again.owner(), Some(&alice));
    assert_eq!(again.created_at(), edited.created_at());
    assert!(manager.get(&rotated.id()).await.unwrap().is_none());

    assert!(
        manager
            .rotate_as(&SessionId::new(), None, None)
            .await
            .unwrap()
            .is_none()
    );
    manager.close().await.unwrap();
}
