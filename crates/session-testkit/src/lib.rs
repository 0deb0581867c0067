//! The backend conformance suite, and the contract between the test
//! harnesses and the servers `cargo xtask test` starts.
//!
//! Every storage backend runs these cases unchanged, so a behaviour that
//! differs between backends shows up as a failing case in one of them. A
//! backend's test file implements [`Harness`] and expands
//! [`conformance_suite!`]:
//!
//! ```text
//! async fn harness() -> Option<MyHarness> { Some(MyHarness::new().await) }
//! session_testkit::conformance_suite!(harness, virtual_time);
//! ```
//!
//! `virtual_time` runs the time-based cases under a paused Tokio clock (for
//! in-process backends, whose expiry follows Tokio's clock); `real_time` runs
//! them against the wall clock (for servers such as Redis, whose expiry does
//! not), with a short TTL from [`Harness::ttl`]. The harness function returns
//! `None` to skip, after printing why; harnesses must refuse to skip when
//! [`env::REQUIRE_REDIS`] is set, as it is under `cargo xtask test`
//! ([`env::var`] does both).
//!
//! # Layout
//!
//! - [`cases`]: one function per case, in modules by concern (storage
//!   operations, atomicity, expiry, codec, manager, revisions, owners,
//!   listing and revocation, stored-format migration).
//! - [`env`](mod@env): the `SESSION_TEST_*` variables and how a harness reads them.
//! - [`TokioClock`]: session timestamps that follow Tokio's (pausable)
//!   clock, so that a maximum lifetime passes under virtual time too.

#![deny(missing_docs)]
// This crate is a test suite: failing loudly on an unexpected error is its job.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cases;
pub mod env;
mod fixture;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use session_core::clock::Clock;
use session_core::{SessionId, Storage, Ttl};

pub use fixture::Fixture;

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

    /// Whether a live value is stored where session `id` would be, looked up
    /// beneath the storage's own reads: without decoding it and without
    /// sliding its TTL (Redis: `EXISTS` on the session's key). `None` when
    /// the backend cannot tell; the cases then rely on reads alone.
    ///
    /// The cases use it to check that a refused or conditional write left
    /// nothing behind, not even a value that a read would not return.
    fn raw_exists(&self, id: &SessionId) -> impl Future<Output = Option<bool>> + Send;

    /// Waits until a write through one storage of this harness is seen by
    /// every other: at once for backends without copies (the default), and
    /// up to the staleness bound for storages with a local cache, which
    /// learn of another client's write from an invalidation that may still
    /// be on its way. The cases call it between a write on one replica and
    /// a read on another that must see it.
    fn settle(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
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
            storage::round_trip_of_every_session_type,
            storage::get_of_a_missing_session_is_none,
            storage::delete_is_idempotent,
            storage::invalid_ids_are_rejected,
            storage::upsert_replaces,
            storage::count_is_exact,
            storage::close_then_use_fails,
            storage::reads_are_snapshots,
            storage::describe_and_ping,
            atomicity::create_never_overwrites,
            atomicity::update_of_a_missing_session_writes_nothing,
            atomicity::update_after_delete_does_not_resurrect,
            atomicity::concurrent_creators_of_one_id_have_one_winner,
            codec::user_data_of_a_custom_type_round_trips,
            codec::corrupt_stored_value_is_a_codec_error,
            manager::manager_create_with_id_is_atomic,
            manager::manager_round_trip,
            manager::manager_close_then_use_fails,
            manager::two_managers_share_sessions,
            manager::rotation_moves_a_session_to_a_new_id,
            revisions::concurrent_modify_loses_no_increment,
            revisions::storage_writes_advance_the_revision_by_one,
            revisions::manager_writes_advance_the_revision_by_one,
            revisions::stale_update_if_conflicts_and_writes_nothing,
            revisions::update_if_at_the_stored_revision_writes,
            revisions::conditional_writes_of_a_deleted_session_write_nothing,
            revisions::out_of_range_revisions_are_invalid_input,
            owners::an_owned_session_is_seen_by_its_owner_only,
            owners::an_ownerless_session_is_seen_by_everyone,
            owners::a_write_that_changes_the_owner_is_refused,
            owners::modify_as_another_owner_does_not_run_the_change,
            owners::invalid_owners_name_the_bad_part,
            listing::list_owned_lists_exactly_the_owners_sessions,
            listing::revoke_owned_removes_every_session_of_the_owner,
            listing::revoke_owned_during_concurrent_creates_keeps_its_guarantee,
            migration::golden_format_1_values_read_and_migrate,
            migration::a_format_1_value_refuses_a_stale_conditional_write
        );
        $crate::conformance_suite!(@cases $harness, [$time],
            expiry::get_refreshes_the_ttl,
            expiry::writes_refresh_the_ttl,
            expiry::idle_session_expires,
            expiry::a_burst_of_reads_keeps_sliding_the_ttl,
            expiry::expire_only_shortens,
            expiry::delete_expired_leaves_live_sessions,
            expiry::max_lifetime_ends_a_busy_session,
            listing::list_and_revoke_skip_expired_sessions
        );
    };
    (@cases $harness:path, [$attr:meta], $($module:ident :: $case:ident),+ $(,)?) => {
        $(
            #[$attr]
            async fn $case() {
                let Some(harness) = $harness().await else { return };
                $crate::cases::$module::$case(&harness).await;
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

impl Profile {
    /// A profile with every field filled.
    pub fn sample() -> Self {
        Self {
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
}

/// Wall-clock time that follows Tokio's clock: the system time when the
/// clock was made, plus the Tokio time elapsed since.
///
/// Under `tokio::time::pause`, advancing Tokio's clock advances session
/// time with it, so a maximum lifetime ends under virtual time just as
/// local expiry does; under real time it agrees with the system clock to
/// within the drift since the clock was made.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    wall: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads the system time now.
    pub fn new() -> Self {
        Self {
            wall: SystemTime::now(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.wall + self.start.elapsed()
    }
}
