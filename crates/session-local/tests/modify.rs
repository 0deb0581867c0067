//! The manager's read-modify-write beyond the conformance suite: the retry
//! budget and its jittered backoff under virtual time, a writer racing every
//! attempt, and a change that fails or oversteps, each ending with nothing
//! of the change written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_core::{
    BackendErrorKind, Conditional, DEFAULT_MODIFY_ATTEMPTS, Description, Error, Manager, Owner,
    Revision, Session, SessionId, SessionType, Storage, SyncStorage, Topology, Ttl,
};
use session_local::LocalStorage;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(60);

fn ttl() -> Ttl {
    Ttl::new(TTL).unwrap()
}

/// What [`Scripted::update_if`] answers instead of writing.
#[derive(Clone, Copy)]
enum Script {
    /// Another writer always came first: `Conflict` at the stored revision.
    Conflict,
    /// The backend is down.
    Unavailable,
}

/// Local storage whose conditional write never writes, as scripted, and
/// which records when each conditional write was called. It does not expose
/// `as_sync`, so the manager calls it through its boxed futures, as it calls
/// a network storage.
#[derive(Clone)]
struct Scripted {
    inner: LocalStorage,
    script: Script,
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    fn new(script: Script) -> Self {
        Self {
            inner: LocalStorage::new(),
            script,
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }
}

impl Storage for Scripted {
    async fn create(&self, session: Arc<Session>, ttl: Ttl) -> session_core::Result<bool> {
        Storage::create(&self.inner, session, ttl).await
    }
    async fn update(
        &self,
        session: Arc<Session>,
        ttl: Ttl,
    ) -> session_core::Result<Option<Arc<Session>>> {
        Storage::update(&self.inner, session, ttl).await
    }
    async fn upsert(&self, session: Arc<Session>, ttl: Ttl) -> session_core::Result<Arc<Session>> {
        Storage::upsert(&self.inner, session, ttl).await
    }
    async fn update_if(
        &self,
        session: Arc<Session>,
        _expected: Revision,
        ttl: Ttl,
    ) -> session_core::Result<Conditional> {
        self.calls.lock().unwrap().push(Instant::now());
        match self.script {
            Script::Conflict => {
                let stored = Storage::get(&self.inner, &session.id(), ttl).await?;
                Ok(stored.map_or(Conditional::Absent, |stored| {
                    Conditional::Conflict(stored.revision())
                }))
            }
            Script::Unavailable => Err(Error::backend(
                BackendErrorKind::Unavailable,
                "scripted outage",
            )),
        }
    }
    async fn list_owned(&self, owner: &Owner) -> session_core::Result<Vec<Arc<Session>>> {
        Storage::list_owned(&self.inner, owner).await
    }
    async fn revoke_owned(&self, owner: &Owner) -> session_core::Result<Vec<SessionId>> {
        Storage::revoke_owned(&self.inner, owner).await
    }
    async fn get(&self, id: &SessionId, ttl: Ttl) -> session_core::Result<Option<Arc<Session>>> {
        Storage::get(&self.inner, id, ttl).await
    }
    async fn expire(&self, id: &SessionId, ttl: Ttl) -> session_core::Result<bool> {
        Storage::expire(&self.inner, id, ttl).await
    }
    async fn delete(&self, id: &SessionId) -> session_core::Result<bool> {
        Storage::delete(&self.inner, id).await
    }
    async fn delete_expired(&self, before: Instant) -> session_core::Result<Vec<SessionId>> {
        Storage::delete_expired(&self.inner, before).await
    }
    async fn count(&self) -> session_core::Result<usize> {
        Storage::count(&self.inner).await
    }
    async fn ping(&self) -> session_core::Result<()> {
        Storage::ping(&self.inner).await
    }
    fn describe(&self) -> Description {
        Description::new("scripted", Topology::InProcess, true)
    }
    async fn close(&self) -> session_core::Result<()> {
        Storage::close(&self.inner).await
    }
}

/// A change that counts its runs and marks the session.
fn marking(runs: &AtomicU32) -> impl FnMut(&mut Session) -> Result<u32, Error> + '_ {
    move |session| {
        session.set_metadata("marked", "yes");
        Ok(runs.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Checks that the session is stored as created: first revision, unmarked.
async fn assert_untouched(storage: &LocalStorage, id: &SessionId) {
    let stored = Storage::get(storage, id, ttl()).await.unwrap().unwrap();
    assert_eq!(stored.revision(), Revision::FIRST, "something was written");
    assert_eq!(
        stored.get_metadata("marked"),
        None,
        "the change was written"
    );
}

/// When every conditional write conflicts, `modify` makes exactly the
/// configured number of attempts, running the change once per attempt, and
/// then fails with `Error::Conflict` naming the session and the attempts;
/// nothing is written, and the error is one worth retrying later.
#[tokio::test(start_paused = true)]
async fn modify_gives_up_with_conflict_after_its_attempts() {
    let storage = Scripted::new(Script::Conflict);
    let manager = Manager::builder(storage.clone(), ttl())
        .modify_attempts(5)
        .build()
        .unwrap();
    let id = manager.create().await.unwrap().id();
    let runs = AtomicU32::new(0);
    match manager.modify(&id, marking(&runs)).await {
        Err(Error::Conflict {
            id: conflicted,
            attempts,
        }) => {
            assert_eq!(conflicted, id);
            assert_eq!(attempts, 5);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::Relaxed), 5);
    assert_eq!(storage.calls().len(), 5);
    assert_untouched(&storage.inner, &id).await;
    let error = Error::Conflict { id, attempts: 5 };
    assert!(error.is_retryable());
    assert!(error.to_string().contains("5 attempts"), "{error}");
}

/// The backoff between attempts is full jitter under a bound that starts at
/// 1 ms and doubles up to 64 ms: each pause is at most its bound (plus the
/// 1 ms granularity of Tokio's timer), the later ones grow well beyond the
/// first bound, and the pauses differ from one call to the next. The default
/// budget is `DEFAULT_MODIFY_ATTEMPTS`. Virtual time makes the 20 exhausted
/// calls instant.
#[tokio::test(start_paused = true)]
async fn modify_backs_off_with_jitter_under_a_doubling_bound() {
    const CALLS: usize = 20;
    let storage = Scripted::new(Script::Conflict);
    let manager = Manager::builder(storage.clone(), ttl()).build().unwrap();
    let id = manager.create().await.unwrap().id();
    let timer_granularity = Duration::from_millis(1);
    let mut totals = Vec::new();
    let mut longest_late_pause = Duration::ZERO;
    for call in 0..CALLS {
        storage.calls.lock().unwrap().clear();
        let runs = AtomicU32::new(0);
        match manager.modify(&id, marking(&runs)).await {
            Err(Error::Conflict { attempts, .. }) => {
                assert_eq!(attempts, DEFAULT_MODIFY_ATTEMPTS);
            }
            other => panic!("call {call}: expected a conflict, got {other:?}"),
        }
        let calls = storage.calls();
        assert_eq!(calls.len(), DEFAULT_MODIFY_ATTEMPTS as usize);
        for (pause, pair) in calls.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let bound = Duration::from_millis(1 << pause.min(6));
            assert!(
                gap <= bound + timer_granularity,
                "call {call}: pause {pause} lasted {gap:?}, over its bound {bound:?}"
            );
            if bound == Duration::from_millis(64) {
                longest_late_pause = longest_late_pause.max(gap);
            }
        }
        totals.push(*calls.last().unwrap() - calls[0]);
    }
    // With 20 calls of 9 pauses each drawn up to 64 ms, none exceeding 8 ms
    // has probability (1/8)^180: a failure here means the bound does not
    // grow.
    assert!(
        longest_late_pause > Duration::from_millis(8),
        "the longest pause under the 64 ms bound was {longest_late_pause:?}"
    );
    // Identical totals over 20 calls would mean no jitter.
    totals.sort_unstable();
    totals.dedup();
    assert!(totals.len() > 1, "every call paused exactly as long");
    assert_untouched(&storage.inner, &id).await;
}

/// A writer on another replica that comes in between the read and the
/// conditional write of every attempt defeats a budget of one attempt:
/// `Error::Conflict` after one run, and what is stored is the other
/// writer's value, nothing of the change.
#[tokio::test(start_paused = true)]
async fn a_writer_racing_the_only_attempt_is_a_conflict() {
    let storage = LocalStorage::new();
    let other_replica = storage.clone();
    let manager = Manager::builder(storage.clone(), ttl())
        .modify_attempts(1)
        .build()
        .unwrap();
    let id = manager.create().await.unwrap().id();
    let mut runs = 0;
    let outcome = manager
        .modify(&id, |session| {
            runs += 1;
            race(&other_replica, &id);
            session.set_metadata("marked", "yes");
            Ok::<_, Error>(())
        })
        .await;
    assert!(
        matches!(outcome, Err(Error::Conflict { attempts: 1, .. })),
        "{outcome:?}"
    );
    assert_eq!(runs, 1);
    assert_only_the_race_landed(&storage, &id).await;
}

/// Once the racing writer stops, the next attempt goes through on the value
/// it left: both of its writes and the change are kept, at one revision
/// per write.
#[tokio::test(start_paused = true)]
async fn modify_succeeds_once_the_racing_writer_stops() {
    let storage = LocalStorage::new();
    let other_replica = storage.clone();
    let manager = Manager::builder(storage.clone(), ttl())
        .modify_attempts(3)
        .build()
        .unwrap();
    let id = manager.create().await.unwrap().id();
    let mut runs = 0;
    let (stored, seen) = manager
        .modify(&id, |session| {
            runs += 1;
            if runs < 3 {
                race(&other_replica, &id);
            }
            session.set_metadata("marked", "yes");
            Ok::<_, Error>(session.get_metadata("racer").map(str::to_owned))
        })
        .await
        .unwrap()
        .expect("the session exists");
    assert_eq!(runs, 3);
    // The third run read the value after the second race.
    assert_eq!(seen.as_deref(), Some("2"));
    assert_eq!(stored.revision(), Revision::new(4));
    assert_eq!(stored.get_metadata("racer"), Some("2"));
    assert_eq!(stored.get_metadata("marked"), Some("yes"));
    let read = Storage::get(&storage, &id, ttl()).await.unwrap().unwrap();
    assert_eq!(read, stored);
}

/// The stored session holds one racing write (revision 2, racer 1) and none
/// of the change's marks.
async fn assert_only_the_race_landed(storage: &LocalStorage, id: &SessionId) {
    let stored = Storage::get(storage, id, ttl()).await.unwrap().unwrap();
    assert_eq!(stored.revision(), Revision::new(2));
    assert_eq!(stored.get_metadata("racer"), Some("1"));
    assert_eq!(stored.get_metadata("marked"), None);
}

/// Writes from another replica, in the middle of an attempt: the racer
/// count goes up by one.
fn race(other_replica: &LocalStorage, id: &SessionId) {
    let current = SyncStorage::get(other_replica, id, ttl()).unwrap().unwrap();
    let mut theirs = (*current).clone();
    let races: u32 = theirs
        .get_metadata("racer")
        .map_or(0, |count| count.parse().unwrap());
    theirs.set_metadata("racer", (races + 1).to_string());
    assert!(
        SyncStorage::update(other_replica, Arc::new(theirs), ttl())
            .unwrap()
            .is_some()
    );
}

/// The caller's error type of the closure-error test.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// The change refused to apply.
    Refused,
    /// The manager failed.
    Store(String),
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Self::Store(error.to_string())
    }
}

/// An error from the change ends `modify` at once with that error, in the
/// caller's own error type: no retry, and nothing written, although the
/// change had edited its copy before failing. After a conflict, an error on
/// the retry is final too, and the stored value is the other writer's.
#[tokio::test(start_paused = true)]
async fn an_error_from_the_change_ends_modify_with_nothing_written() {
    let storage = LocalStorage::new();
    let manager = Manager::builder(storage.clone(), ttl()).build().unwrap();
    let id = manager.create().await.unwrap().id();
    let mut runs = 0;
    let outcome = manager
        .modify(&id, |session| {
            runs += 1;
            session.set_metadata("marked", "yes");
            Err::<(), _>(Refusal::Refused)
        })
        .await;
    assert_eq!(outcome, Err(Refusal::Refused));
    assert_eq!(runs, 1, "a failed change was retried");
    assert_untouched(&storage, &id).await;

    let other_replica = storage.clone();
    let mut runs = 0;
    let outcome = manager
        .modify(&id, |session| {
            runs += 1;
            session.set_metadata("marked", "yes");
            if runs == 1 {
                race(&other_replica, &id);
                Ok(())
            } else {
                Err(Refusal::Refused)
            }
        })
        .await;
    assert_eq!(outcome, Err(Refusal::Refused));
    assert_eq!(runs, 2);
    assert_only_the_race_landed(&storage, &id).await;
}

/// A change that replaces the session by one with another id is
/// `InvalidInput`, and neither id is written.
#[tokio::test(start_paused = true)]
async fn a_change_of_the_id_is_invalid_input() {
    let storage = LocalStorage::new();
    let manager = Manager::builder(storage.clone(), ttl()).build().unwrap();
    let id = manager.create().await.unwrap().id();
    let other = SessionId::new();
    let outcome = manager
        .modify(&id, |session| {
            *session = Session::new(other, SessionType::Mcp);
            Ok::<_, Error>(())
        })
        .await;
    assert!(
        matches!(outcome, Err(Error::InvalidInput(_))),
        "{outcome:?}"
    );
    assert_untouched(&storage, &id).await;
    assert!(!storage.contains(&other));
}

/// A session deleted between the read and the conditional write is not
/// brought back: `modify` answers `None` after one run.
#[tokio::test(start_paused = true)]
async fn a_session_deleted_during_modify_stays_deleted() {
    let storage = LocalStorage::new();
    let other_replica = storage.clone();
    let manager = Manager::builder(storage.clone(), ttl()).build().unwrap();
    let id = manager.create().await.unwrap().id();
    let mut runs = 0;
    let outcome = manager
        .modify(&id, |session| {
            runs += 1;
            assert!(SyncStorage::delete(&other_replica, &id).unwrap());
            session.set_metadata("marked", "yes");
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    assert!(outcome.is_none(), "{outcome:?}");
    assert_eq!(runs, 1);
    assert!(!storage.contains(&id));
}

/// A backend failure of the conditional write is returned as it is, after
/// one attempt: its outcome may be unknown, and sending it again could
/// apply it twice.
#[tokio::test(start_paused = true)]
async fn a_backend_failure_is_not_retried() {
    let storage = Scripted::new(Script::Unavailable);
    let manager = Manager::builder(storage.clone(), ttl()).build().unwrap();
    let id = manager.create().await.unwrap().id();
    let runs = AtomicU32::new(0);
    let outcome = manager.modify(&id, marking(&runs)).await;
    assert!(
        matches!(
            outcome,
            Err(Error::Backend {
                kind: BackendErrorKind::Unavailable,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(runs.load(Ordering::Relaxed), 1);
    assert_eq!(storage.calls().len(), 1);
    assert_untouched(&storage.inner, &id).await;
}

/// A budget of zero attempts is a configuration error naming the setting.
#[test]
fn zero_modify_attempts_is_a_config_error() {
    match Manager::builder(LocalStorage::new(), ttl())
        .modify_attempts(0)
        .build()
    {
        Err(Error::Config(error)) => assert_eq!(error.field(), Some("modify_attempts")),
        other => panic!("expected a config error, got {other:?}"),
    }
}
