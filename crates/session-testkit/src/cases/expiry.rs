//! The sliding TTL and the maximum lifetime, in virtual time for in-process
//! backends and in real time against servers.

use session_core::{Manager, SessionType, Storage, Ttl};

use crate::fixture::{session, ttl_times};
use crate::{Fixture, Harness, TokioClock};

/// Each read pushes expiry a full TTL forward.
pub async fn get_refreshes_the_ttl<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let written = session(SessionType::Mcp);
    store.upsert(&written).await;
    for step in 0..3 {
        tokio::time::sleep(ttl_times(harness, 0.6)).await;
        assert!(
            store.exists(&written.id()).await,
            "session expired at step {step} although it was read {:?} before",
            ttl_times(harness, 0.6)
        );
    }
    tokio::time::sleep(ttl_times(harness, 1.3)).await;
    assert!(!store.exists(&written.id()).await);
}

/// Each write pushes expiry a full TTL forward.
pub async fn writes_refresh_the_ttl<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let written = session(SessionType::Mcp);
    store.upsert(&written).await;
    tokio::time::sleep(ttl_times(harness, 0.6)).await;
    store.upsert(&written).await;
    tokio::time::sleep(ttl_times(harness, 0.6)).await;
    assert!(store.update(&written).await);
    tokio::time::sleep(ttl_times(harness, 0.6)).await;
    assert!(store.exists(&written.id()).await);
}

/// A session idle longer than the TTL is gone for every operation, even
/// before a sweep.
pub async fn idle_session_expires<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let written = session(SessionType::Mcp);
    assert!(store.create(&written).await);
    tokio::time::sleep(ttl_times(harness, 1.3)).await;
    assert!(!store.exists(&written.id()).await);
    assert_eq!(store.count().await, 0);
    assert!(!store.update(&written).await);
    // An expired id is free again.
    assert!(store.create(&written).await);
}

/// Reads closer together than a backend's refresh window (Redis reads with
/// a plain GET within it) still keep the session alive, for as long as they
/// go on, and it expires about a TTL after they stop.
pub async fn a_burst_of_reads_keeps_sliding_the_ttl<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let written = session(SessionType::Mcp);
    store.upsert(&written).await;
    let until = tokio::time::Instant::now() + ttl_times(harness, 2.5);
    let mut reads = 0;
    while tokio::time::Instant::now() < until {
        assert!(
            store.exists(&written.id()).await,
            "expired after {reads} reads in quick succession"
        );
        reads += 1;
        tokio::time::sleep(ttl_times(harness, 0.01)).await;
    }
    tokio::time::sleep(ttl_times(harness, 1.2)).await;
    assert!(!store.exists(&written.id()).await);
}

/// `expire` shortens a session's life and never lengthens it; it reports
/// whether the session lives, and is `false` for an absent one.
pub async fn expire_only_shortens<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let short = session(SessionType::Mcp);
    store.upsert(&short).await;
    let half = Ttl::new(ttl_times(harness, 0.5)).unwrap();
    assert!(store.storage.expire(&short.id(), half).await.unwrap());
    let longer = session(SessionType::Mcp);
    store.upsert(&longer).await;
    let double = Ttl::new(ttl_times(harness, 2.0)).unwrap();
    assert!(store.storage.expire(&longer.id(), double).await.unwrap());
    assert!(
        !store
            .storage
            .expire(&session(SessionType::Mcp).id(), half)
            .await
            .unwrap()
    );
    tokio::time::sleep(ttl_times(harness, 0.7)).await;
    // Peeking through `get` would slide the TTL, so the count tells.
    assert_eq!(
        store.count().await,
        1,
        "only the session not shortened lives"
    );
    tokio::time::sleep(ttl_times(harness, 0.5)).await;
    assert_eq!(
        store.count().await,
        0,
        "a longer expire must not extend a session"
    );
}

/// `delete_expired` removes only expired sessions; it reports exactly those
/// it removed (backends that expire by themselves report none).
pub async fn delete_expired_leaves_live_sessions<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let old = session(SessionType::Mcp);
    store.upsert(&old).await;
    tokio::time::sleep(ttl_times(harness, 0.7)).await;
    let young = session(SessionType::Mcp);
    store.upsert(&young).await;
    tokio::time::sleep(ttl_times(harness, 0.5)).await;
    let removed = store
        .storage
        .delete_expired(tokio::time::Instant::now())
        .await
        .unwrap();
    assert!(
        removed.is_empty() || removed == [old.id()],
        "removed {removed:?}"
    );
    assert!(!store.exists(&old.id()).await);
    assert!(store.exists(&young.id()).await);
    assert_eq!(store.count().await, 1);
}

/// A session used continuously still ends at its maximum lifetime.
pub async fn max_lifetime_ends_a_busy_session<H: Harness>(harness: &H) {
    let max_lifetime = ttl_times(harness, 2.0);
    let manager = Manager::builder(harness.open().await, harness.ttl())
        .max_lifetime(Some(max_lifetime))
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let id = manager.create().await.unwrap().id();
    for step in 1..=3 {
        tokio::time::sleep(ttl_times(harness, 0.5)).await;
        assert!(
            manager.get(&id).await.unwrap().is_some(),
            "gone early at step {step}"
        );
    }
    // 1.5 TTL old, read just now: the sliding TTL alone would keep it until
    // 2.5 TTL, the lifetime ends it at 2 TTL.
    tokio::time::sleep(ttl_times(harness, 0.7)).await;
    assert!(
        manager.get(&id).await.unwrap().is_none(),
        "outlived its maximum lifetime"
    );
    manager.close().await.unwrap();
}
