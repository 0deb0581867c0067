//! The backend conformance suite (feature `testkit`).
//!
//! Every storage backend runs these cases unchanged, so a behaviour that
//! differs between backends shows up as a failing case in one of them. A
//! backend's test file implements [`Harness`] and expands
//! [`conformance_suite!`](crate::conformance_suite):
//!
//! ```text
//! async fn harness() -> Option<MyHarness> { Some(MyHarness::new().await) }
//! session_core::conformance_suite!(harness, virtual_time);
//! ```
//!
//! `virtual_time` runs the time-based cases under a paused Tokio clock (for
//! in-process backends, whose expiry follows Tokio's clock); `real_time` runs
//! them against the wall clock (for servers such as Redis, whose expiry does
//! not), with a short TTL from [`Harness::ttl`]. The harness function returns
//! `None` to skip, after printing why; harnesses must refuse to skip when
//! `SESSION_TEST_REQUIRE_REDIS` is set, as it is under `cargo xtask test`.
//!
//! The cases cover every storage and manager test of the Go package (round
//! trips of each session type with metadata, not found, deleting a missing
//! id, invalid ids, upsert replaces, load refreshes the TTL, idle sessions
//! expire, no use after shutdown) and the guarantees the Go package lacks
//! (atomic create under contention, no resurrection by update, exact count,
//! user data of a custom type, typed codec errors, maximum lifetime).

// This module is a test suite: failing loudly on an unexpected error is its job.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::{Codec, CodecError};
use crate::{Error, Expiry, Manager, Session, SessionId, SessionType, Storage, Ttl};

/// Reads a test server address (or other harness-provided setting) from the
/// environment.
///
/// When it is missing: panics if `SESSION_TEST_REQUIRE_REDIS` is set (as it
/// is under `cargo xtask test` and in CI), so a misconfigured harness can
/// never pass by skipping; otherwise prints one loud line and returns `None`,
/// so a bare `cargo test` without servers still runs everything else.
pub fn test_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var_os("SESSION_TEST_REQUIRE_REDIS").is_some() => {
            panic!(
                "{name} is not set, but SESSION_TEST_REQUIRE_REDIS is: the test harness must provide it"
            )
        }
        _ => {
            eprintln!(
                "SKIPPED: {name} is not set; run `cargo xtask test` (or `cargo xtask redis` and export its variables)"
            );
            None
        }
    }
}

/// A backend under test.
///
/// Each test builds its own harness, so a harness can give each test a fresh
/// namespace (for Redis, a unique key prefix).
pub trait Harness: Send + Sync + 'static {
    /// The storage under test.
    type Storage: Storage;

    /// A new handle on this harness's sessions: for a server, a new client
    /// with the same address and key prefix, as a second replica would have;
    /// for local storage, a clone sharing the same map.
    fn open(&self) -> impl Future<Output = Self::Storage> + Send;

    /// The sliding TTL for time-based cases: long under virtual time, about a
    /// second against a real server.
    fn ttl(&self) -> Ttl;

    /// Stores raw bytes where session `id` would be stored and returns
    /// `true`; returns `false` for backends that keep values rather than
    /// bytes (local storage), where a corrupt stored value cannot exist.
    fn write_raw(&self, id: &SessionId, bytes: &[u8]) -> impl Future<Output = bool> + Send;
}

/// Generates one `#[tokio::test]` per conformance case for a harness.
///
/// `$harness` is a path to an `async fn() -> Option<H>` where `H: Harness`.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:path, virtual_time) => {
        $crate::conformance_suite!(@emit $harness, [tokio::test(start_paused = true)]);
    };
    ($harness:path, real_time) => {
        $crate::conformance_suite!(@emit $harness, [tokio::test(flavor = "multi_thread", worker_threads = 2)]);
    };
    (@emit $harness:path, [$time:meta]) => {
        $crate::conformance_suite!(@cases $harness, [tokio::test(flavor = "multi_thread", worker_threads = 2)],
            round_trip_of_every_session_type,
            load_of_a_missing_session_is_none,
            delete_is_idempotent,
            invalid_ids_are_rejected,
            store_replaces,
            create_never_overwrites,
            update_of_a_missing_session_writes_nothing,
            update_after_delete_does_not_resurrect,
            count_is_exact,
            close_then_use_fails,
            concurrent_creators_of_one_id_have_one_winner,
            user_data_of_a_custom_type_round_trips,
            corrupt_stored_value_is_a_codec_error,
            loads_are_snapshots,
            manager_add_with_id_is_atomic,
            manager_round_trip,
            manager_shutdown_then_use_fails,
            two_managers_share_sessions
        );
        $crate::conformance_suite!(@cases $harness, [$time],
            load_refreshes_the_ttl,
            store_refreshes_the_ttl,
            idle_session_expires,
            a_burst_of_loads_keeps_sliding_the_ttl,
            delete_expired_leaves_live_sessions,
            max_lifetime_ends_a_busy_session
        );
    };
    (@cases $harness:path, [$attr:meta], $($case:ident),+ $(,)?) => {
        $(
            #[$attr]
            async fn $case() {
                let Some(harness) = $harness().await else { return };
                $crate::testkit::cases::$case(&harness).await;
            }
        )+
    };
}

/// A custom user-data type for the round-trip case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// A string.
    pub name: String,
    /// A number.
    pub visits: u64,
    /// A nested collection.
    pub scopes: BTreeSet<String>,
    /// An optional nested struct.
    pub parent: Option<Box<Profile>>,
}

fn profile() -> Profile {
    Profile {
        name: "alice".into(),
        visits: 42,
        scopes: ["read".to_owned(), "write".to_owned()].into(),
        parent: Some(Box::new(Profile {
            name: "org".into(),
            visits: 0,
            scopes: BTreeSet::new(),
            parent: None,
        })),
    }
}

fn expiry<H: Harness>(harness: &H) -> Expiry {
    Expiry::new(harness.ttl())
}

/// A fraction of the harness TTL.
fn ttl_times<H: Harness>(harness: &H, factor: f64) -> Duration {
    harness.ttl().get().mul_f64(factor)
}

/// The cases, one function each; see the module documentation.
pub mod cases {
    use super::*;

    /// Each session type, with metadata, survives a store and load.
    pub async fn round_trip_of_every_session_type<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        for kind in [SessionType::Mcp, SessionType::Sse, SessionType::Streamable] {
            let mut session = Session::new(SessionId::new(), kind);
            session.set_metadata("user", "alice");
            session.set_metadata("unicode", "grüße ✓");
            session.set_metadata("empty", "");
            let session = Arc::new(session);
            storage
                .store(Arc::clone(&session), expiry(harness))
                .await
                .unwrap();
            let loaded = storage.load(&session.id(), expiry(harness)).await.unwrap();
            assert_eq!(
                loaded.as_deref(),
                Some(&*session),
                "{kind} session did not round-trip"
            );
        }
    }

    /// A session that was never stored loads as `Ok(None)`, not an error.
    pub async fn load_of_a_missing_session_is_none<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        assert!(
            storage
                .load(&SessionId::new(), expiry(harness))
                .await
                .unwrap()
                .is_none()
        );
    }

    /// Deleting a missing session succeeds; deleting twice succeeds.
    pub async fn delete_is_idempotent<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        assert!(!storage.delete(&SessionId::new()).await.unwrap());
        let session = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
        storage
            .store(Arc::clone(&session), expiry(harness))
            .await
            .unwrap();
        assert!(storage.delete(&session.id()).await.unwrap());
        assert!(!storage.delete(&session.id()).await.unwrap());
        assert!(
            storage
                .load(&session.id(), expiry(harness))
                .await
                .unwrap()
                .is_none()
        );
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

    /// `store` is an upsert: the second value replaces the first.
    pub async fn store_replaces<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let mut session = Session::new(SessionId::new(), SessionType::Sse);
        session.set_metadata("version", "1");
        storage
            .store(Arc::new(session.clone()), expiry(harness))
            .await
            .unwrap();
        session.set_metadata("version", "2");
        storage
            .store(Arc::new(session.clone()), expiry(harness))
            .await
            .unwrap();
        let loaded = storage
            .load(&session.id(), expiry(harness))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(loaded.get_metadata("version"), Some("2"));
    }

    /// `create` inserts only if absent and leaves the existing value alone.
    pub async fn create_never_overwrites<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let id = SessionId::new();
        let mut first = Session::new(id, SessionType::Mcp);
        first.set_metadata("writer", "first");
        let mut second = first.clone();
        second.set_metadata("writer", "second");
        assert!(
            storage
                .create(Arc::new(first), expiry(harness))
                .await
                .unwrap()
        );
        assert!(
            !storage
                .create(Arc::new(second), expiry(harness))
                .await
                .unwrap()
        );
        let loaded = storage.load(&id, expiry(harness)).await.unwrap().unwrap();
        assert_eq!(loaded.get_metadata("writer"), Some("first"));
    }

    /// `update` of a session that does not exist returns false and creates
    /// nothing.
    pub async fn update_of_a_missing_session_writes_nothing<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let session = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
        assert!(
            !storage
                .update(Arc::clone(&session), expiry(harness))
                .await
                .unwrap()
        );
        assert!(
            storage
                .load(&session.id(), expiry(harness))
                .await
                .unwrap()
                .is_none()
        );
    }

    /// A concurrent delete must not be undone by an update: the Go package's
    /// Redis store writes unconditionally and resurrects deleted sessions.
    pub async fn update_after_delete_does_not_resurrect<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let other_replica = harness.open().await;
        let session = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
        assert!(
            storage
                .create(Arc::clone(&session), expiry(harness))
                .await
                .unwrap()
        );
        let mut edited = (*storage
            .load(&session.id(), expiry(harness))
            .await
            .unwrap()
            .unwrap())
        .clone();
        assert!(other_replica.delete(&session.id()).await.unwrap());
        edited.set_metadata("late", "write");
        assert!(
            !storage
                .update(Arc::new(edited), expiry(harness))
                .await
                .unwrap()
        );
        assert!(
            storage
                .load(&session.id(), expiry(harness))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            other_replica
                .load(&session.id(), expiry(harness))
                .await
                .unwrap()
                .is_none()
        );
    }

    /// `count` is exact after creates and deletes.
    pub async fn count_is_exact<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        assert_eq!(storage.count().await.unwrap(), 0);
        let mut ids = Vec::new();
        for _ in 0..25 {
            let session = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
            ids.push(session.id());
            storage.create(session, expiry(harness)).await.unwrap();
        }
        assert_eq!(storage.count().await.unwrap(), 25);
        for id in &ids[..10] {
            storage.delete(id).await.unwrap();
        }
        assert_eq!(storage.count().await.unwrap(), 15);
    }

    /// After `close`, every operation fails with `Closed`, and closing again
    /// succeeds.
    pub async fn close_then_use_fails<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let session = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
        storage
            .store(Arc::clone(&session), expiry(harness))
            .await
            .unwrap();
        storage.close().await.unwrap();
        storage.close().await.unwrap();
        let id = session.id();
        assert!(matches!(
            storage.load(&id, expiry(harness)).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            storage.store(Arc::clone(&session), expiry(harness)).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            storage.create(Arc::clone(&session), expiry(harness)).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            storage.update(session, expiry(harness)).await,
            Err(Error::Closed)
        ));
        assert!(matches!(storage.delete(&id).await, Err(Error::Closed)));
        assert!(matches!(storage.count().await, Err(Error::Closed)));
    }

    /// 32 concurrent creators of one id, spread over two handles (two
    /// replicas): exactly one wins.
    pub async fn concurrent_creators_of_one_id_have_one_winner<H: Harness>(harness: &H) {
        let replicas = [
            Arc::new(harness.open().await),
            Arc::new(harness.open().await),
        ];
        let ttl = expiry(harness);
        for _round in 0..10 {
            let id = SessionId::new();
            let barrier = Arc::new(tokio::sync::Barrier::new(32));
            let tasks: Vec<_> = (0..32)
                .map(|writer| {
                    let storage = Arc::clone(&replicas[writer % 2]);
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        let mut session = Session::new(id, SessionType::Mcp);
                        session.set_metadata("writer", writer.to_string());
                        barrier.wait().await;
                        storage
                            .create(Arc::new(session), ttl)
                            .await
                            .map(|won| won.then_some(writer))
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                if let Some(writer) = task.await.unwrap().unwrap() {
                    winners.push(writer);
                }
            }
            assert_eq!(winners.len(), 1, "winners: {winners:?}");
            let stored = replicas[0].load(&id, ttl).await.unwrap().unwrap();
            assert_eq!(
                stored.get_metadata("writer"),
                Some(winners[0].to_string().as_str())
            );
        }
    }

    /// User data of a caller's own type round-trips with both codecs.
    pub async fn user_data_of_a_custom_type_round_trips<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        for codec in [Codec::Bincode, Codec::Json] {
            let mut session = Session::new(SessionId::new(), SessionType::Streamable);
            session.set_data_with(codec, &profile()).unwrap();
            storage
                .store(Arc::new(session.clone()), expiry(harness))
                .await
                .unwrap();
            let loaded = storage
                .load(&session.id(), expiry(harness))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                loaded.data::<Profile>().unwrap(),
                Some(profile()),
                "{codec}"
            );
        }
    }

    /// A stored value that is not in the session format gives a typed codec
    /// error and leaves other sessions alone; user data read as the wrong
    /// type gives a codec error on every backend.
    pub async fn corrupt_stored_value_is_a_codec_error<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let mut session = Session::new(SessionId::new(), SessionType::Mcp);
        session.set_data(&"not a profile").unwrap();
        storage
            .store(Arc::new(session.clone()), expiry(harness))
            .await
            .unwrap();
        let loaded = storage
            .load(&session.id(), expiry(harness))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            loaded.data::<Profile>(),
            Err(CodecError::Decode { .. })
        ));

        let valid = Codec::Bincode.encode_session(&session).unwrap();
        let corrupt: [(&str, Vec<u8>); 4] = [
            ("foreign", b"{\"some\":\"json\"}".to_vec()),
            ("truncated", valid[..valid.len() / 2].to_vec()),
            (
                "future version",
                [&[0xC5, 0x53, 99, 1][..], &valid[4..]].concat(),
            ),
            ("empty", Vec::new()),
        ];
        for (what, bytes) in corrupt {
            let id = SessionId::new();
            if !harness.write_raw(&id, &bytes).await {
                // This backend stores values, not bytes: no corrupt value can
                // exist in it, and the user-data check above is the case.
                return;
            }
            match storage.load(&id, expiry(harness)).await {
                Err(Error::Codec(_)) => {}
                other => panic!("{what} value gave {other:?}, expected a codec error"),
            }
        }
        assert!(
            storage
                .load(&session.id(), expiry(harness))
                .await
                .unwrap()
                .is_some()
        );
    }

    /// A loaded session is a snapshot: changing a copy changes nothing stored
    /// until it is written back.
    pub async fn loads_are_snapshots<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let session = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
        storage
            .store(Arc::clone(&session), expiry(harness))
            .await
            .unwrap();
        let loaded = storage
            .load(&session.id(), expiry(harness))
            .await
            .unwrap()
            .unwrap();
        let mut copy = Arc::unwrap_or_clone(loaded);
        copy.set_metadata("unsaved", "edit");
        let again = storage
            .load(&session.id(), expiry(harness))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.get_metadata("unsaved"), None);
    }

    fn manager<H: Harness>(harness: &H, storage: H::Storage) -> Manager {
        Manager::with_storage(
            harness.ttl(),
            |id| {
                let mut session = Session::new(id, SessionType::Streamable);
                session.set_metadata("made-by", "factory");
                session
            },
            storage,
        )
    }

    /// `add_with_id` uses the factory and never overwrites: a duplicate is
    /// `AlreadyExists` (the Go `AddWithID` loads then stores, and two
    /// replicas can both "win").
    pub async fn manager_add_with_id_is_atomic<H: Harness>(harness: &H) {
        let manager = manager(harness, harness.open().await);
        let id = SessionId::new();
        let session = manager.add_with_id(id).await.unwrap();
        assert_eq!(session.session_type(), SessionType::Streamable);
        assert_eq!(session.get_metadata("made-by"), Some("factory"));
        match manager.add_with_id(id).await {
            Err(Error::AlreadyExists(existing)) => assert_eq!(existing, id),
            other => panic!("duplicate add gave {other:?}"),
        }
        manager.shutdown().await.unwrap();
    }

    /// The manager's operations, end to end.
    pub async fn manager_round_trip<H: Harness>(harness: &H) {
        let manager = manager(harness, harness.open().await);
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
        assert_eq!(
            manager
                .get(&id)
                .await
                .unwrap()
                .unwrap()
                .get_metadata("step"),
            Some("upserted")
        );
        let fresh = Session::new(SessionId::new(), SessionType::Sse);
        manager.upsert(fresh.clone()).await.unwrap();
        assert_eq!(manager.count().await.unwrap(), 2);

        assert!(manager.delete(&id).await.unwrap());
        assert!(!manager.delete(&id).await.unwrap());
        assert!(manager.get(&id).await.unwrap().is_none());
        assert!(
            !manager
                .update(Session::new(id, SessionType::Mcp))
                .await
                .unwrap()
        );
        assert_eq!(manager.count().await.unwrap(), 1);
        manager.shutdown().await.unwrap();
    }

    /// `shutdown` is idempotent and every later call fails with `Closed`.
    pub async fn manager_shutdown_then_use_fails<H: Harness>(harness: &H) {
        let manager = manager(harness, harness.open().await);
        let session = manager.create().await.unwrap();
        manager.shutdown().await.unwrap();
        manager.shutdown().await.unwrap();
        assert!(manager.is_closed());
        let id = session.id();
        assert!(matches!(manager.get(&id).await, Err(Error::Closed)));
        assert!(matches!(
            manager.add_with_id(SessionId::new()).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            manager.upsert((*session).clone()).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            manager.update((*session).clone()).await,
            Err(Error::Closed)
        ));
        assert!(matches!(manager.delete(&id).await, Err(Error::Closed)));
        assert!(matches!(manager.count().await, Err(Error::Closed)));
        assert!(matches!(
            manager.cleanup_expired().await,
            Err(Error::Closed)
        ));
    }

    /// Two managers on one store: what one creates, the other reads, updates
    /// and deletes.
    pub async fn two_managers_share_sessions<H: Harness>(harness: &H) {
        let a = manager(harness, harness.open().await);
        let b = manager(harness, harness.open().await);
        let id = a.create().await.unwrap().id();
        let seen = b
            .get(&id)
            .await
            .unwrap()
            .expect("replica B must see A's session");
        let mut edited = Arc::unwrap_or_clone(seen);
        edited.set_metadata("by", "b");
        assert!(b.update(edited).await.unwrap());
        assert_eq!(
            a.get(&id).await.unwrap().unwrap().get_metadata("by"),
            Some("b")
        );
        assert!(matches!(
            b.add_with_id(id).await,
            Err(Error::AlreadyExists(_))
        ));
        assert!(b.delete(&id).await.unwrap());
        assert!(a.get(&id).await.unwrap().is_none());
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }

    /// Each load pushes expiry a full TTL forward.
    pub async fn load_refreshes_the_ttl<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let session = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
        storage
            .store(Arc::clone(&session), expiry(harness))
            .await
            .unwrap();
        for step in 0..3 {
            tokio::time::sleep(ttl_times(harness, 0.6)).await;
            assert!(
                storage
                    .load(&session.id(), expiry(harness))
                    .await
                    .unwrap()
                    .is_some(),
                "session expired at step {step} although it was loaded {:?} before",
                ttl_times(harness, 0.6)
            );
        }
        tokio::time::sleep(ttl_times(harness, 1.3)).await;
        assert!(
            storage
                .load(&session.id(), expiry(harness))
                .await
                .unwrap()
                .is_none()
        );
    }

    /// Each write pushes expiry a full TTL forward.
    pub async fn store_refreshes_the_ttl<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let session = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
        storage
            .store(Arc::clone(&session), expiry(harness))
            .await
            .unwrap();
        tokio::time::sleep(ttl_times(harness, 0.6)).await;
        storage
            .store(Arc::clone(&session), expiry(harness))
            .await
            .unwrap();
        tokio::time::sleep(ttl_times(harness, 0.6)).await;
        assert!(
            storage
                .update(Arc::clone(&session), expiry(harness))
                .await
                .unwrap()
        );
        tokio::time::sleep(ttl_times(harness, 0.6)).await;
        assert!(
            storage
                .load(&session.id(), expiry(harness))
                .await
                .unwrap()
                .is_some()
        );
    }

    /// A session idle longer than the TTL is gone for every operation, even
    /// before a sweep.
    pub async fn idle_session_expires<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let session = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
        storage
            .create(Arc::clone(&session), expiry(harness))
            .await
            .unwrap();
        tokio::time::sleep(ttl_times(harness, 1.3)).await;
        assert!(
            storage
                .load(&session.id(), expiry(harness))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(storage.count().await.unwrap(), 0);
        assert!(
            !storage
                .update(Arc::clone(&session), expiry(harness))
                .await
                .unwrap()
        );
        // An expired id is free again.
        assert!(storage.create(session, expiry(harness)).await.unwrap());
    }

    /// Loads closer together than a backend's refresh window (Redis reads
    /// with a plain GET within it) still keep the session alive, for as long
    /// as they go on, and it expires about a TTL after they stop.
    pub async fn a_burst_of_loads_keeps_sliding_the_ttl<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let session = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
        storage
            .store(Arc::clone(&session), expiry(harness))
            .await
            .unwrap();
        let until = tokio::time::Instant::now() + ttl_times(harness, 2.5);
        let mut loads = 0;
        while tokio::time::Instant::now() < until {
            assert!(
                storage
                    .load(&session.id(), expiry(harness))
                    .await
                    .unwrap()
                    .is_some(),
                "expired after {loads} loads in quick succession"
            );
            loads += 1;
            tokio::time::sleep(ttl_times(harness, 0.01)).await;
        }
        tokio::time::sleep(ttl_times(harness, 1.2)).await;
        assert!(
            storage
                .load(&session.id(), expiry(harness))
                .await
                .unwrap()
                .is_none()
        );
    }

    /// `delete_expired` removes only expired sessions; it reports exactly
    /// those it removed (backends that expire by themselves report none).
    pub async fn delete_expired_leaves_live_sessions<H: Harness>(harness: &H) {
        let storage = harness.open().await;
        let old = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
        storage
            .store(Arc::clone(&old), expiry(harness))
            .await
            .unwrap();
        tokio::time::sleep(ttl_times(harness, 0.7)).await;
        let young = Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
        storage
            .store(Arc::clone(&young), expiry(harness))
            .await
            .unwrap();
        tokio::time::sleep(ttl_times(harness, 0.5)).await;
        let removed = storage
            .delete_expired(tokio::time::Instant::now())
            .await
            .unwrap();
        assert!(
            removed.is_empty() || removed == [old.id()],
            "removed {removed:?}"
        );
        assert!(
            storage
                .load(&old.id(), expiry(harness))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            storage
                .load(&young.id(), expiry(harness))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(storage.count().await.unwrap(), 1);
    }

    /// A session used continuously still ends at its maximum lifetime.
    pub async fn max_lifetime_ends_a_busy_session<H: Harness>(harness: &H) {
        let max_lifetime = ttl_times(harness, 2.0);
        let manager = Manager::builder(harness.ttl())
            .storage(harness.open().await)
            .max_lifetime(Some(max_lifetime))
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
        // 1.5 TTL old, loaded just now: the sliding TTL alone would keep it
        // until 2.5 TTL, the lifetime ends it at 2 TTL.
        tokio::time::sleep(ttl_times(harness, 0.7)).await;
        assert!(
            manager.get(&id).await.unwrap().is_none(),
            "outlived its maximum lifetime"
        );
        manager.shutdown().await.unwrap();
    }
}
