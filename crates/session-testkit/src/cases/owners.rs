//! Owned sessions: who sees them, and that no write changes an owner.

use std::sync::Arc;

use session_core::{Error, MAX_OWNER_PART_LEN, Owner, Revision, Session, SessionType, Storage};

use crate::fixture::{manager, owner, session};
use crate::{Fixture, Harness};

/// `create_owned` stores the owner with the session; `get_as` by the owner
/// sees it, while another owner and a caller with no principal get `None`,
/// exactly as for an absent session, and each such read is counted in
/// `foreign_reads`. The service's own `get` still sees it.
pub async fn an_owned_session_is_seen_by_its_owner_only<H: Harness>(harness: &H) {
    let manager = manager(harness).await;
    let other_replica = Fixture::open(harness).await;
    let alice = owner("alice");
    let bob = owner("bob");
    let created = manager.create_owned(alice.clone()).await.unwrap();
    let id = created.id();
    assert_eq!(created.owner(), Some(&alice));
    assert_eq!(created.revision(), Revision::FIRST);
    // The factory still made the session; the owner came on top.
    assert_eq!(created.get_metadata("made-by"), Some("factory"));
    assert_eq!(other_replica.must_get(&id).await.owner(), Some(&alice));

    let seen = manager.get_as(&id, Some(&alice)).await.unwrap();
    assert_eq!(seen.as_deref(), Some(&*created));
    assert_eq!(manager.foreign_reads(), 0);

    assert!(manager.get_as(&id, Some(&bob)).await.unwrap().is_none());
    assert_eq!(manager.foreign_reads(), 1);
    assert!(manager.get_as(&id, None).await.unwrap().is_none());
    assert_eq!(manager.foreign_reads(), 2);
    // Same subject, another issuer: another principal.
    let impostor = Owner::new("https://other-issuer.test", "alice").unwrap();
    assert!(
        manager
            .get_as(&id, Some(&impostor))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(manager.foreign_reads(), 3);

    // The refusals changed nothing, and the service still sees the session.
    let read = manager.get(&id).await.unwrap().expect("the session exists");
    assert_eq!(*read, *created);
    // An absent session is not a foreign read.
    assert!(
        manager
            .get_as(&session(SessionType::Mcp).id(), Some(&bob))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(manager.foreign_reads(), 3);
    manager.close().await.unwrap();
}

/// A session without owner is visible to every principal and to none, as
/// before owners existed, and reading it is never a foreign read; a
/// `modify_as` by anybody changes it.
pub async fn an_ownerless_session_is_seen_by_everyone<H: Harness>(harness: &H) {
    let manager = manager(harness).await;
    let created = manager.create().await.unwrap();
    let id = created.id();
    assert_eq!(created.owner(), None);
    let alice = owner("alice");
    let bob = owner("bob");
    for principal in [Some(&alice), Some(&bob), None] {
        let seen = manager.get_as(&id, principal).await.unwrap();
        assert_eq!(seen.as_deref(), Some(&*created), "as {principal:?}");
    }
    let (stored, ()) = manager
        .modify_as(&id, Some(&bob), |session| {
            session.set_metadata("edited-by", "bob");
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
        .expect("bob may edit a session without owner");
    assert_eq!(stored.owner(), None, "an edit gave the session an owner");
    assert_eq!(stored.revision(), Revision::new(2));
    assert_eq!(manager.foreign_reads(), 0);
    manager.close().await.unwrap();
}

/// Every write that would change a session's owner (to another owner, to
/// none, or from none to one) is `InvalidInput` on the storage and on the
/// manager, and writes nothing: owner, value and revision read back as they
/// were, and the would-be owner lists nothing.
pub async fn a_write_that_changes_the_owner_is_refused<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let manager = manager(harness).await;
    let alice = owner("alice");
    let bob = owner("bob");
    let owned = Session::new_owned(
        session(SessionType::Mcp).id(),
        SessionType::Mcp,
        alice.clone(),
    );
    let ownerless = session(SessionType::Mcp);
    assert!(store.create(&owned).await);
    assert!(store.create(&ownerless).await);

    let hijack = |id, owner: Option<&Owner>| {
        let mut forged = match owner {
            Some(owner) => Session::new_owned(id, SessionType::Mcp, owner.clone()),
            None => Session::new(id, SessionType::Mcp),
        };
        forged.set_metadata("hijacked", "yes");
        forged
    };
    let attempts = [
        (&owned, hijack(owned.id(), Some(&bob)), "to another owner"),
        (&owned, hijack(owned.id(), None), "to no owner"),
        (
            &ownerless,
            hijack(ownerless.id(), Some(&bob)),
            "from no owner",
        ),
    ];
    for (original, forged, what) in &attempts {
        let invalid = |result: Result<(), Error>, how: &str| {
            assert!(
                matches!(result, Err(Error::InvalidInput(_))),
                "{how} changing the owner {what} gave {result:?}"
            );
        };
        // The conditional writes name the stored revision (nothing is ever
        // written here, so it stays the first), so that only the owner check
        // can refuse them.
        let ttl = store.ttl;
        let forged_arc = || Arc::new(forged.clone());
        invalid(
            store.storage.update(forged_arc(), ttl).await.map(drop),
            "storage update",
        );
        invalid(
            store.storage.upsert(forged_arc(), ttl).await.map(drop),
            "storage upsert",
        );
        invalid(
            store
                .storage
                .update_if(forged_arc(), Revision::FIRST, ttl)
                .await
                .map(drop),
            "storage update_if",
        );
        invalid(
            manager.update(forged.clone()).await.map(drop),
            "manager update",
        );
        invalid(
            manager.upsert(forged.clone()).await.map(drop),
            "manager upsert",
        );
        invalid(
            manager
                .update_if(forged.clone(), Revision::FIRST)
                .await
                .map(drop),
            "manager update_if",
        );
        // A change that replaces the whole session is the only way a
        // closure could change the owner; modify refuses it before writing.
        invalid(
            manager
                .modify(&original.id(), |session| {
                    *session = forged.clone();
                    Ok::<_, Error>(())
                })
                .await
                .map(drop),
            "modify",
        );
        let read = store.must_get(&original.id()).await;
        assert_eq!(read.owner(), original.owner(), "after changing it {what}");
        assert_eq!(read.revision(), Revision::FIRST, "after changing it {what}");
        assert_eq!(
            read.get_metadata("hijacked"),
            None,
            "after changing it {what}"
        );
    }
    assert!(store.owned_ids(&bob).await.is_empty());
    assert_eq!(store.owned_ids(&alice).await, [owned.id()].into());
    manager.close().await.unwrap();
}

/// `modify_as` on behalf of another owner, or of no principal, answers
/// `None` as for an absent session, does not run the change, writes
/// nothing, and counts a foreign read; on behalf of the owner it writes.
pub async fn modify_as_another_owner_does_not_run_the_change<H: Harness>(harness: &H) {
    let manager = manager(harness).await;
    let alice = owner("alice");
    let bob = owner("bob");
    let created = manager.create_owned(alice.clone()).await.unwrap();
    let id = created.id();
    for (principal, reads) in [(Some(&bob), 1), (None, 2)] {
        let mut runs = 0;
        let outcome = manager
            .modify_as(&id, principal, |session| {
                runs += 1;
                session.set_metadata("edited-by", "intruder");
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
        assert!(
            outcome.is_none(),
            "modify_as {principal:?} gave {outcome:?}"
        );
        assert_eq!(runs, 0, "modify_as {principal:?} ran the change");
        assert_eq!(manager.foreign_reads(), reads);
    }
    let read = manager.get(&id).await.unwrap().unwrap();
    assert_eq!(*read, *created, "a refused modify_as changed the session");

    let (stored, runs) = manager
        .modify_as(&id, Some(&alice), |session| {
            session.set_metadata("edited-by", "alice");
            Ok::<_, Error>(1)
        })
        .await
        .unwrap()
        .expect("the owner may modify");
    assert_eq!(runs, 1);
    assert_eq!(stored.get_metadata("edited-by"), Some("alice"));
    assert_eq!(stored.owner(), Some(&alice));
    assert_eq!(stored.revision(), Revision::new(2));
    assert_eq!(manager.foreign_reads(), 2);
    manager.close().await.unwrap();
}

/// An owner needs a non-empty issuer and subject of bounded length; the
/// error is `InvalidInput` and names the part that is wrong.
pub async fn invalid_owners_name_the_bad_part<H: Harness>(_harness: &H) {
    let long = "x".repeat(MAX_OWNER_PART_LEN + 1);
    for (issuer, subject, part) in [
        ("", "alice", "issuer"),
        ("https://issuer.test", "", "subject"),
        ("", "", "issuer"),
        (long.as_str(), "alice", "issuer"),
        ("https://issuer.test", long.as_str(), "subject"),
    ] {
        match Owner::new(issuer, subject) {
            Err(Error::InvalidInput(message)) => {
                assert!(
                    message.contains(part),
                    "{message:?} does not name the {part}"
                );
            }
            other => panic!("an owner with a bad {part} gave {other:?}"),
        }
    }
    let longest = "x".repeat(MAX_OWNER_PART_LEN);
    assert!(Owner::new(longest.as_str(), longest.as_str()).is_ok());
}
