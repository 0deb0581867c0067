//! Finding and ending an owner's sessions: `list_owned` and
//! `revoke_owned`, alone, after expiry, and racing concurrent creates.

use std::collections::BTreeSet;
use std::sync::Arc;

use session_core::{Session, SessionId, SessionType, Storage};

use crate::fixture::{assert_nothing_stored, manager, owner, ttl_times};
use crate::{Fixture, Harness};

/// Creates a session of `owner` through `store` and returns its id.
async fn create_owned<S: Storage>(store: &Fixture<S>, owner: &session_core::Owner) -> SessionId {
    let created = Session::new_owned(SessionId::new(), SessionType::Mcp, owner.clone());
    assert!(store.create(&created).await);
    created.id()
}

/// `list_owned` returns exactly the owner's live sessions: not another
/// owner's (nor that of an owner with the same subject at another issuer),
/// not a session without owner, not a deleted one; and through the
/// manager, the same.
pub async fn list_owned_lists_exactly_the_owners_sessions<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let other_replica = Fixture::open(harness).await;
    let alice = owner("alice");
    let bob = owner("bob");
    let alice_elsewhere = session_core::Owner::new("https://other-issuer.test", "alice").unwrap();
    let mut alices = BTreeSet::new();
    for _ in 0..4 {
        alices.insert(create_owned(&store, &alice).await);
    }
    let mut bobs = BTreeSet::new();
    for _ in 0..2 {
        bobs.insert(create_owned(&other_replica, &bob).await);
    }
    let elsewhere = create_owned(&store, &alice_elsewhere).await;
    assert!(
        store
            .create(&crate::fixture::session(SessionType::Mcp))
            .await
    );
    let deleted = *alices.first().unwrap();
    assert!(other_replica.delete(&deleted).await);
    alices.remove(&deleted);

    assert_eq!(store.owned_ids(&alice).await, alices);
    assert_eq!(other_replica.owned_ids(&alice).await, alices);
    assert_eq!(store.owned_ids(&bob).await, bobs);
    assert_eq!(store.owned_ids(&alice_elsewhere).await, [elsewhere].into());
    assert!(store.owned_ids(&owner("carol")).await.is_empty());

    let manager = manager(harness).await;
    let listed: BTreeSet<_> = manager
        .list_owned(&alice)
        .await
        .unwrap()
        .iter()
        .map(|session| session.id())
        .collect();
    assert_eq!(listed, alices);
    // A session created through the manager is listed as well.
    let by_manager = manager.create_owned(alice.clone()).await.unwrap().id();
    alices.insert(by_manager);
    assert_eq!(store.owned_ids(&alice).await, alices);
    manager.close().await.unwrap();
}

/// `revoke_owned` removes every live session of the owner and returns
/// their ids (not that of a session deleted before); afterwards none of
/// them reads, nothing of them is stored, the listing is empty, other
/// owners keep theirs, a second revoke removes nothing, and the owner can
/// start a new session, which is listed.
pub async fn revoke_owned_removes_every_session_of_the_owner<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let other_replica = Fixture::open(harness).await;
    let alice = owner("alice");
    let bob = owner("bob");
    let mut alices = BTreeSet::new();
    for _ in 0..5 {
        alices.insert(create_owned(&store, &alice).await);
    }
    let deleted = create_owned(&store, &alice).await;
    assert!(store.delete(&deleted).await);
    let bobs: BTreeSet<_> = [
        create_owned(&store, &bob).await,
        create_owned(&store, &bob).await,
    ]
    .into();

    assert_eq!(other_replica.revoke_owned(&alice).await, alices);
    for id in &alices {
        assert!(!store.exists(id).await, "revoked session {id} still reads");
        assert_nothing_stored(harness, id, "its owner's revocation").await;
    }
    assert!(store.owned_ids(&alice).await.is_empty());
    assert!(other_replica.owned_ids(&alice).await.is_empty());
    assert_eq!(store.owned_ids(&bob).await, bobs);
    for id in &bobs {
        assert!(
            store.exists(id).await,
            "another owner's session {id} was revoked"
        );
    }
    assert!(store.revoke_owned(&alice).await.is_empty());

    let manager = manager(harness).await;
    let again = manager.create_owned(alice.clone()).await.unwrap().id();
    assert_eq!(store.owned_ids(&alice).await, [again].into());
    let revoked: BTreeSet<_> = manager
        .revoke_owned(&alice)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(revoked, [again].into());
    assert!(manager.list_owned(&alice).await.unwrap().is_empty());
    manager.close().await.unwrap();
}

/// The documented guarantee under concurrency: while one replica revokes
/// an owner's sessions, creators on two replicas keep creating sessions for
/// that owner. Every session that existed before the revoke started is gone
/// afterwards (and was reported), the revoke reports only sessions of that
/// owner, and every session of that owner still alive afterwards is listed,
/// and nothing else is.
pub async fn revoke_owned_during_concurrent_creates_keeps_its_guarantee<H: Harness>(harness: &H) {
    const BEFORE: usize = 40;
    const CREATORS: usize = 4;
    const CREATES_PER_CREATOR: usize = 25;
    let alice = owner("alice");
    let revoker = Fixture::open(harness).await;
    let replicas = [
        Arc::new(Fixture::open(harness).await),
        Arc::new(Fixture::open(harness).await),
    ];
    for round in 0..3 {
        let mut before = BTreeSet::new();
        for _ in 0..BEFORE {
            before.insert(create_owned(&revoker, &alice).await);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(CREATORS + 1));
        let creators: Vec<_> = (0..CREATORS)
            .map(|creator| {
                let store = Arc::clone(&replicas[creator % replicas.len()]);
                let barrier = Arc::clone(&barrier);
                let alice = alice.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let mut created = Vec::new();
                    for _ in 0..CREATES_PER_CREATOR {
                        created.push(create_owned(&store, &alice).await);
                        // Give the revoke a chance to run between creates
                        // even on a runtime with one worker.
                        tokio::task::yield_now().await;
                    }
                    created
                })
            })
            .collect();
        barrier.wait().await;
        let revoked = revoker.revoke_owned(&alice).await;
        let mut during = BTreeSet::new();
        for creator in creators {
            during.extend(creator.await.expect("a creator task panicked"));
        }

        assert!(
            before.is_subset(&revoked),
            "round {round}: the revoke did not report {:?}, which existed before it",
            before.difference(&revoked).collect::<Vec<_>>()
        );
        let all: BTreeSet<_> = before.union(&during).copied().collect();
        assert!(
            revoked.is_subset(&all),
            "round {round}: the revoke reported ids that were never alice's"
        );
        for id in &before {
            assert!(
                !revoker.exists(id).await,
                "round {round}: {id} existed before the revoke and survived it"
            );
        }
        let mut alive = BTreeSet::new();
        for id in &during {
            let exists = revoker.exists(id).await;
            assert_ne!(
                exists,
                revoked.contains(id),
                "round {round}: {id} was reported revoked but exists, or neither"
            );
            if exists {
                alive.insert(*id);
            }
        }
        assert_eq!(
            revoker.owned_ids(&alice).await,
            alive,
            "round {round}: the listing after the revoke is not exactly the survivors \
             ({} of {} created during the revoke survived)",
            alive.len(),
            during.len()
        );
        // End the round with nothing of alice's, so the next starts clean.
        assert_eq!(revoker.revoke_owned(&alice).await, alive);
    }
}

/// An expired session of an owner is neither listed nor revoked, and
/// listing does not slide a session's TTL: a session listed just before
/// its TTL ran out still expires.
pub async fn list_and_revoke_skip_expired_sessions<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let alice = owner("alice");
    let old = create_owned(&store, &alice).await;
    tokio::time::sleep(ttl_times(harness, 0.7)).await;
    let young = create_owned(&store, &alice).await;
    assert_eq!(store.owned_ids(&alice).await, [old, young].into());
    tokio::time::sleep(ttl_times(harness, 0.5)).await;
    // `old` was listed at 0.7 TTL and is 1.2 TTL old now; a listing that
    // slid its TTL would have kept it until 1.7 TTL.
    assert_eq!(store.owned_ids(&alice).await, [young].into());
    assert_eq!(store.revoke_owned(&alice).await, [young].into());
    assert!(store.owned_ids(&alice).await.is_empty());
    assert!(!store.exists(&young).await);
}
