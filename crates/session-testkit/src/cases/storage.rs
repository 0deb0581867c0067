//! The storage operations one by one.

use std::sync::Arc;

use session_core::{Error, SessionId, SessionType, Storage};

use crate::fixture::session;
use crate::{Fixture, Harness};

/// Each session type, with metadata, survives a write and a read.
pub async fn round_trip_of_every_session_type<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    for kind in [SessionType::Mcp, SessionType::Sse, SessionType::Streamable] {
        let mut written = session(kind);
        written.set_metadata("user", "alice");
        written.set_metadata("unicode", "grüße ✓");
        written.set_metadata("empty", "");
        store.upsert(&written).await;
        let read = store.get(&written.id()).await;
        assert_eq!(
            read.as_deref(),
            Some(&written),
            "{kind} session did not round-trip"
        );
    }
}

/// A session that was never stored reads as `Ok(None)`, not an error.
pub async fn get_of_a_missing_session_is_none<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    assert!(store.get(&SessionId::new()).await.is_none());
}

/// Deleting a missing session succeeds; deleting twice succeeds.
pub async fn delete_is_idempotent<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    assert!(!store.delete(&SessionId::new()).await);
    let written = session(SessionType::Mcp);
    store.upsert(&written).await;
    assert!(store.delete(&written.id()).await);
    assert!(!store.delete(&written.id()).await);
    assert!(!store.exists(&written.id()).await);
}

/// Empty and malformed ids never reach a backend: they do not parse.
pub async fn invalid_ids_are_rejected<H: Harness>(_harness: &H) {
    for bad in [
        "",
        "abc",
        "00000000-0000-0000-0000",
        "g0000000-0000-0000-0000-000000000000",
    ] {
        assert!(
            matches!(SessionId::parse(bad), Err(Error::InvalidInput(_))),
            "{bad:?} parsed"
        );
    }
}

/// `upsert` replaces: the second value wins.
pub async fn upsert_replaces<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let mut written = session(SessionType::Sse);
    written.set_metadata("version", "1");
    store.upsert(&written).await;
    written.set_metadata("version", "2");
    store.upsert(&written).await;
    let read = store.must_get(&written.id()).await;
    assert_eq!(read.get_metadata("version"), Some("2"));
}

/// `count` is exact after creates and deletes.
pub async fn count_is_exact<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    assert_eq!(store.count().await, 0);
    let sessions: Vec<_> = (0..25).map(|_| session(SessionType::Mcp)).collect();
    for written in &sessions {
        assert!(store.create(written).await);
    }
    assert_eq!(store.count().await, 25);
    for written in &sessions[..10] {
        store.delete(&written.id()).await;
    }
    assert_eq!(store.count().await, 15);
}

/// After `close`, every operation fails with `Closed`, and closing again
/// succeeds.
pub async fn close_then_use_fails<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let written = Arc::new(session(SessionType::Mcp));
    store.upsert(&written).await;
    let storage = &store.storage;
    let ttl = store.ttl;
    storage.close().await.unwrap();
    storage.close().await.unwrap();
    let id = written.id();
    let closed = |result: Result<(), Error>, what: &str| {
        assert!(
            matches!(result, Err(Error::Closed)),
            "{what} after close: {result:?}"
        );
    };
    closed(storage.get(&id, ttl).await.map(drop), "get");
    closed(
        storage.upsert(Arc::clone(&written), ttl).await.map(drop),
        "upsert",
    );
    closed(
        storage.create(Arc::clone(&written), ttl).await.map(drop),
        "create",
    );
    closed(
        storage.update(Arc::clone(&written), ttl).await.map(drop),
        "update",
    );
    closed(storage.expire(&id, ttl).await.map(drop), "expire");
    closed(storage.delete(&id).await.map(drop), "delete");
    closed(storage.count().await.map(drop), "count");
    closed(storage.ping().await, "ping");
}

/// A session read is a snapshot: changing a copy changes nothing stored
/// until it is written back.
pub async fn reads_are_snapshots<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let written = session(SessionType::Mcp);
    store.upsert(&written).await;
    let mut copy = Arc::unwrap_or_clone(store.must_get(&written.id()).await);
    copy.set_metadata("unsaved", "edit");
    let again = store.must_get(&written.id()).await;
    assert_eq!(again.get_metadata("unsaved"), None);
}

/// `ping` answers on an open storage, and `describe` names the backend
/// without any address or secret.
pub async fn describe_and_ping<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    store.storage.ping().await.expect("ping of an open storage");
    let description = store.storage.describe();
    assert!(!description.backend.is_empty());
    let text = format!("{description:?}");
    assert!(!text.contains("127.0.0.1"), "{text}");
}
