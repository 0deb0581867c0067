//! Revisions and the writes built on them: every write advances the stored
//! revision by exactly one, a conditional write compares it atomically, and
//! a read-modify-write loses nothing to concurrent writers on any replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use session_core::{Conditional, Error, Revision, Session, SessionId, SessionType, Storage};

use crate::fixture::{assert_nothing_stored, manager, session};
use crate::{Fixture, Harness};

/// Managers (replicas) in the read-modify-write contention case.
const REPLICAS: usize = 2;
/// Tasks per manager in the contention case.
const TASKS_PER_REPLICA: usize = 32;
/// Increments each task makes in the contention case.
const INCREMENTS_PER_TASK: u64 = 50;
/// How many times one increment may end in [`Error::Conflict`] before the
/// contention case calls it a livelock rather than bad luck: each conflict
/// already stands for a full round of jittered attempts.
const CONFLICTS_PER_INCREMENT: u32 = 100;

/// The counter the contention case keeps in the session's metadata.
fn counter(session: &Session) -> u64 {
    session
        .get_metadata("count")
        .map(|count| count.parse().expect("the counter is a number"))
        .unwrap_or(0)
}

/// 2 managers x 32 tasks x 50 increments of one session's counter through
/// `Manager::modify` end at exactly 3,200, and every increment saw a
/// different predecessor: no write was lost or applied twice, across
/// replicas. A task whose `modify` gave up with `Error::Conflict` tries that
/// increment again (nothing was written), and the conflicts are reported.
pub async fn concurrent_modify_loses_no_increment<H: Harness>(harness: &H) {
    let mut managers = Vec::new();
    for _ in 0..REPLICAS {
        managers.push(manager(harness).await);
    }
    let created = managers[0].create().await.unwrap();
    let id = created.id();
    let tasks = REPLICAS * TASKS_PER_REPLICA;
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks));
    // Every run of a change beyond the 3,200 that were written is a
    // conflict `modify` retried by itself; the count shows how much
    // contention the case really produced.
    let runs = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let manager = managers[task % REPLICAS].clone();
            let barrier = Arc::clone(&barrier);
            let runs = Arc::clone(&runs);
            tokio::spawn(async move {
                barrier.wait().await;
                let mut seen = Vec::new();
                let mut conflicts = 0;
                for _ in 0..INCREMENTS_PER_TASK {
                    let mut given_up = 0;
                    loop {
                        let outcome = manager
                            .modify(&id, |session| {
                                runs.fetch_add(1, Ordering::Relaxed);
                                let before = counter(session);
                                session.set_metadata("count", (before + 1).to_string());
                                Ok::<_, Error>(before)
                            })
                            .await;
                        match outcome {
                            Ok(Some((stored, before))) => {
                                assert_eq!(counter(&stored), before + 1);
                                // The session started at the first revision
                                // with no counter, and each increment is one
                                // write: revision and counter move together.
                                assert_eq!(
                                    stored.revision().get(),
                                    before + 2,
                                    "the revision did not advance with the counter"
                                );
                                seen.push(before);
                                break;
                            }
                            Ok(None) => panic!("session {id} vanished during the increments"),
                            Err(Error::Conflict { .. }) => {
                                conflicts += 1;
                                given_up += 1;
                                assert!(
                                    given_up < CONFLICTS_PER_INCREMENT,
                                    "one increment conflicted {given_up} times in a row"
                                );
                            }
                            Err(error) => panic!("modify failed: {error}"),
                        }
                    }
                }
                (seen, conflicts)
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut conflicts = 0;
    for handle in handles {
        let (task_seen, task_conflicts) = handle.await.expect("an incrementing task panicked");
        seen.extend(task_seen);
        conflicts += task_conflicts;
    }
    let expected = tasks as u64 * INCREMENTS_PER_TASK;
    let retried = runs.load(Ordering::Relaxed).saturating_sub(expected);
    let contention = format!(
        "{conflicts} modify calls gave up with Error::Conflict, {retried} attempts were retried"
    );
    let stored = managers[1].get(&id).await.unwrap().unwrap();
    assert_eq!(
        counter(&stored),
        expected,
        "the counter is off; {contention}"
    );
    assert_eq!(
        stored.revision(),
        Revision::new(expected + 1),
        "one revision per increment; {contention}"
    );
    seen.sort_unstable();
    assert!(
        seen.iter().copied().eq(0..expected),
        "some increments saw the same predecessor; {contention}"
    );
    eprintln!("{expected} increments over {REPLICAS} replicas: {contention}");
    for manager in managers {
        manager.close().await.unwrap();
    }
}

/// A create stores `Revision::FIRST`; every update, upsert and conditional
/// update of the storage advances the stored revision by exactly one, and
/// returns the session as stored, at that revision. The revision a written
/// session carries is ignored: the storage assigns its own.
pub async fn storage_writes_advance_the_revision_by_one<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let mut written = session(SessionType::Mcp);
    assert!(store.create(&written).await);
    assert_eq!(
        store.must_get(&written.id()).await.revision(),
        Revision::FIRST
    );

    // A revision far ahead of the stored one, to show that it is not used.
    written.set_revision(Revision::new(1_000));
    written.set_metadata("step", "update");
    let updated = store
        .storage
        .update(Arc::new(written.clone()), store.ttl)
        .await
        .unwrap()
        .expect("the session exists");
    assert_eq!(updated.revision(), Revision::new(2));
    assert_eq!(updated.get_metadata("step"), Some("update"));
    assert_eq!(*store.must_get(&written.id()).await, *updated);

    written.set_metadata("step", "upsert");
    let upserted = store
        .storage
        .upsert(Arc::new(written.clone()), store.ttl)
        .await
        .unwrap();
    assert_eq!(upserted.revision(), Revision::new(3));
    assert_eq!(*store.must_get(&written.id()).await, *upserted);

    written.set_metadata("step", "update_if");
    let Conditional::Written(conditional) = store.update_if(&written, Revision::new(3)).await
    else {
        panic!("a conditional write at the stored revision was refused");
    };
    assert_eq!(conditional.revision(), Revision::new(4));
    assert_eq!(conditional.get_metadata("step"), Some("update_if"));
    assert_eq!(*store.must_get(&written.id()).await, *conditional);

    // An upsert that creates starts at the first revision, whatever the
    // session carried.
    let mut fresh = session(SessionType::Sse);
    fresh.set_revision(Revision::new(9));
    let created = store
        .storage
        .upsert(Arc::new(fresh.clone()), store.ttl)
        .await
        .unwrap();
    assert_eq!(created.revision(), Revision::FIRST);
    assert_eq!(
        store.must_get(&fresh.id()).await.revision(),
        Revision::FIRST
    );
}

/// Through the manager: create is `Revision::FIRST`, and modify, upsert,
/// update and `update_if` each advance it by one, in what they return and
/// in what a later read (on another replica) finds.
pub async fn manager_writes_advance_the_revision_by_one<H: Harness>(harness: &H) {
    let manager = manager(harness).await;
    let other_replica = Fixture::open(harness).await;
    let created = manager.create().await.unwrap();
    let id = created.id();
    assert_eq!(created.revision(), Revision::FIRST);
    assert_eq!(
        other_replica.must_get(&id).await.revision(),
        Revision::FIRST
    );

    let (modified, ()) = manager
        .modify(&id, |session| {
            session.set_metadata("step", "modify");
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
        .expect("the session exists");
    assert_eq!(modified.revision(), Revision::new(2));
    harness.settle().await;
    assert_eq!(*other_replica.must_get(&id).await, *modified);

    let mut edited = (*modified).clone();
    edited.set_metadata("step", "upsert");
    let upserted = manager.upsert(edited.clone()).await.unwrap();
    assert_eq!(upserted.revision(), Revision::new(3));
    harness.settle().await;
    assert_eq!(*other_replica.must_get(&id).await, *upserted);

    edited.set_metadata("step", "update");
    assert!(manager.update(edited.clone()).await.unwrap());
    harness.settle().await;
    let read = other_replica.must_get(&id).await;
    assert_eq!(read.revision(), Revision::new(4));
    assert_eq!(read.get_metadata("step"), Some("update"));

    edited.set_metadata("step", "update_if");
    match manager.update_if(edited, Revision::new(4)).await.unwrap() {
        Conditional::Written(stored) => {
            assert_eq!(stored.revision(), Revision::new(5));
            harness.settle().await;
            assert_eq!(*other_replica.must_get(&id).await, *stored);
        }
        other => panic!("a conditional write at the stored revision gave {other:?}"),
    }
    manager.close().await.unwrap();
}

/// A conditional write with a stale revision (another replica wrote since
/// it was read) answers `Conflict` with the stored revision and changes
/// nothing: value and revision read back as the other replica left them.
/// A revision from the future conflicts just the same.
pub async fn stale_update_if_conflicts_and_writes_nothing<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let other_replica = Fixture::open(harness).await;
    let manager = manager(harness).await;
    let written = session(SessionType::Mcp);
    assert!(store.create(&written).await);
    let read = store.must_get(&written.id()).await;

    let mut theirs = (*read).clone();
    theirs.set_metadata("writer", "other replica");
    assert!(other_replica.update(&theirs).await);
    let current = other_replica.must_get(&written.id()).await;
    assert_eq!(current.revision(), Revision::new(2));

    let mut mine = (*read).clone();
    mine.set_metadata("writer", "stale");
    for (expected, what) in [
        (read.revision(), "the revision read before the other write"),
        (Revision::new(3), "a revision not reached yet"),
        (Revision::new(0), "revision zero"),
    ] {
        assert_eq!(
            store.update_if(&mine, expected).await,
            Conditional::Conflict(current.revision()),
            "storage update_if with {what}"
        );
        assert_eq!(
            manager.update_if(mine.clone(), expected).await.unwrap(),
            Conditional::Conflict(current.revision()),
            "manager update_if with {what}"
        );
        let after = store.must_get(&written.id()).await;
        assert_eq!(after.revision(), current.revision(), "after {what}");
        assert_eq!(after.get_metadata("writer"), Some("other replica"));
    }
    assert_eq!(*store.must_get(&written.id()).await, *current);
    manager.close().await.unwrap();
}

/// A conditional write at the revision that is stored writes, on another
/// replica than the one that read: the session as stored comes back at the
/// next revision, and both replicas read it.
pub async fn update_if_at_the_stored_revision_writes<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let other_replica = Fixture::open(harness).await;
    let written = session(SessionType::Streamable);
    assert!(store.create(&written).await);
    let mut edited = (*store.must_get(&written.id()).await).clone();
    edited.set_metadata("written", "conditionally");
    let Conditional::Written(stored) = other_replica.update_if(&edited, Revision::FIRST).await
    else {
        panic!("a conditional write at the stored revision was refused");
    };
    assert_eq!(stored.revision(), Revision::new(2));
    assert_eq!(stored.get_metadata("written"), Some("conditionally"));
    harness.settle().await;
    assert_eq!(*store.must_get(&written.id()).await, *stored);
    assert_eq!(*other_replica.must_get(&written.id()).await, *stored);
    // The revision it replaced is now stale.
    assert_eq!(
        store.update_if(&edited, Revision::FIRST).await,
        Conditional::Conflict(Revision::new(2))
    );
}

/// `update_if` and `modify` of a deleted (or never created) session answer
/// `Absent` and `None`, never run the change, and store nothing: a
/// conditional write never creates.
pub async fn conditional_writes_of_a_deleted_session_write_nothing<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let manager = manager(harness).await;
    let deleted = session(SessionType::Mcp);
    assert!(store.create(&deleted).await);
    assert!(store.delete(&deleted.id()).await);
    let never = session(SessionType::Mcp);
    for (gone, what) in [
        (&deleted, "a deleted session"),
        (&never, "a session never created"),
    ] {
        let id = gone.id();
        assert_eq!(
            store.update_if(gone, Revision::FIRST).await,
            Conditional::Absent,
            "storage update_if of {what}"
        );
        assert_eq!(
            manager
                .update_if(gone.clone(), Revision::FIRST)
                .await
                .unwrap(),
            Conditional::Absent,
            "manager update_if of {what}"
        );
        let mut runs = 0;
        let modified = manager
            .modify(&id, |session| {
                runs += 1;
                session.set_metadata("resurrected", "yes");
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
        assert!(modified.is_none(), "modify of {what} gave {modified:?}");
        assert_eq!(runs, 0, "modify of {what} ran the change");
        assert!(!store.exists(&id).await, "{what} exists after the writes");
        assert_nothing_stored(harness, &id, &format!("conditional writes of {what}")).await;
    }
    assert_eq!(store.count().await, 0);
    manager.close().await.unwrap();
}

/// A revision that does not fit in 64 bits, or is not a number, does not
/// parse: it is `InvalidInput`, as a client's `If-Match` value must be.
pub async fn out_of_range_revisions_are_invalid_input<H: Harness>(_harness: &H) {
    for bad in ["18446744073709551616", "-1", "", "1.5", "0x10", " 7"] {
        assert!(
            matches!(bad.parse::<Revision>(), Err(Error::InvalidInput(_))),
            "{bad:?} parsed"
        );
    }
    assert_eq!(
        "18446744073709551615".parse::<Revision>().unwrap(),
        Revision::new(u64::MAX)
    );
    assert!(matches!(
        Revision::new(u64::MAX).next(),
        Err(Error::InvalidInput(_))
    ));
    // A session id is no revision either.
    assert!(SessionId::new().to_string().parse::<Revision>().is_err());
}
