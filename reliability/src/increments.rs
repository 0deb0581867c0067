//! Counters incremented through the atomic read-modify-write, and the audit
//! of what a fault did to them.
//!
//! Each counter is one session whose metadata key [`COUNT`] holds a number.
//! Several tasks per counter increment it with [`Manager::modify`] for as
//! long as the load runs, and tally every call by what it told the caller:
//!
//! - **acknowledged**: `modify` returned the new session, so the increment
//!   is stored;
//! - **unknown**: an error for which [`Error::is_outcome_unknown`] holds (a
//!   timeout, a connection lost with the reply): the increment may or may
//!   not have been applied, and the library did not re-send it;
//! - **refused**: any other error (conflicts past the attempts, a refused
//!   connection): nothing was written.
//!
//! Read back after the fault, a counter must therefore hold at least its
//! acknowledged increments (none lost) and at most its acknowledged plus
//! unknown ones (none applied twice, which a silently re-sent script or a
//! retry after a lost reply would do). A failover that loses acknowledged
//! writes (asynchronous replication) keeps only the floor of what `WAIT`
//! confirmed; [`check`] takes that floor as its own argument.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use session_core::{Error, Manager, Session, SessionId};

use crate::Outcome;
use crate::load::error_class;

/// The metadata key of the count.
pub const COUNT: &str = "count";

/// What the calls on one counter were told.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Increments `modify` acknowledged.
    pub acked: u64,
    /// Increments whose outcome the error reported unknown.
    pub unknown: u64,
    /// Increments refused with an error that wrote nothing.
    pub refused: u64,
    /// Calls that found the counter absent (it was never deleted: each is a
    /// lost session).
    pub absent: u64,
    /// Failed calls by error class.
    pub failures: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.acked += other.acked;
        self.unknown += other.unknown;
        self.refused += other.refused;
        self.absent += other.absent;
        for (class, count) in &other.failures {
            *self.failures.entry(*class).or_default() += count;
        }
    }
}

/// The tallies of every counter, by id.
#[derive(Clone, Debug, Default)]
pub struct Tallies {
    /// Each counter's tally.
    pub counters: BTreeMap<SessionId, Tally>,
    /// Tasks that did not return within the hang limit.
    pub hung: usize,
    /// Tasks that panicked.
    pub panicked: Vec<String>,
    /// One message per error class, for the notes.
    pub samples: BTreeMap<&'static str, String>,
}

impl Tallies {
    /// The sum over every counter.
    pub fn total(&self) -> Tally {
        let mut total = Tally::default();
        for tally in self.counters.values() {
            total.add(tally);
        }
        total
    }

    /// The tallies of `self` and `other` added, counter by counter.
    #[must_use]
    pub fn and(mut self, other: &Tallies) -> Tallies {
        for (id, tally) in &other.counters {
            self.counters.entry(*id).or_default().add(tally);
        }
        self.hung += other.hung;
        self.panicked.extend(other.panicked.iter().cloned());
        for (class, sample) in &other.samples {
            self.samples.entry(*class).or_insert_with(|| sample.clone());
        }
        self
    }
}

/// Creates `ids` as counters at 0 through `manager`; each create is tried a
/// few times, since the audit needs every counter to exist.
pub async fn create(manager: &Manager, ids: &[SessionId]) -> anyhow::Result<()> {
    for id in ids {
        let mut attempt = 0;
        loop {
            match manager.create_with_id(*id).await {
                Ok(_) => break,
                Err(error) if attempt < 5 && !matches!(error, Error::AlreadyExists(_)) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(error).context("creating a counter"),
            }
        }
    }
    Ok(())
}

/// What one task returns: its tally and one error message per class.
type TaskTally = (Tally, Vec<(&'static str, String)>);

/// The running increments; [`Increments::stop`] ends them.
pub struct Increments {
    stop: Arc<AtomicBool>,
    tasks: Vec<(SessionId, tokio::task::JoinHandle<TaskTally>)>,
}

impl Increments {
    /// Starts `per_counter` tasks on each of `ids`, each pausing `pace`
    /// between two increments.
    pub fn start(manager: &Manager, ids: &[SessionId], per_counter: usize, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = ids
            .iter()
            .flat_map(|id| std::iter::repeat_n(*id, per_counter))
            .map(|id| {
                let (manager, stop) = (manager.clone(), Arc::clone(&stop));
                (id, tokio::spawn(increment(manager, id, pace, stop)))
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the tasks and returns their tallies. A task that has not
    /// returned within `hang_limit` is aborted and counted as hung (its
    /// call in flight then counts nowhere, and the audit says so).
    pub async fn stop(self, hang_limit: Duration) -> Tallies {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + hang_limit;
        let mut tallies = Tallies::default();
        for (id, mut task) in self.tasks {
            let tally = tallies.counters.entry(id).or_default();
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok((part, samples))) => {
                    tally.add(&part);
                    for (class, sample) in samples {
                        tallies.samples.entry(class).or_insert(sample);
                    }
                }
                Ok(Err(join)) => tallies.panicked.push(join.to_string()),
                Err(_) => {
                    task.abort();
                    tallies.hung += 1;
                }
            }
        }
        tallies
    }
}

/// One task's loop of increments of counter `id`.
async fn increment(
    manager: Manager,
    id: SessionId,
    pace: Duration,
    stop: Arc<AtomicBool>,
) -> TaskTally {
    let mut tally = Tally::default();
    let mut samples = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match manager.modify(&id, bump).await {
            Ok(Some(_)) => tally.acked += 1,
            Ok(None) => tally.absent += 1,
            Err(error) => {
                let class = error_class(&error);
                if error.is_outcome_unknown() {
                    tally.unknown += 1;
                } else {
                    tally.refused += 1;
                }
                *tally.failures.entry(class).or_default() += 1;
                if !samples.iter().any(|(seen, _)| *seen == class) {
                    samples.push((class, error.to_string()));
                }
            }
        }
        tokio::time::sleep(pace).await;
    }
    (tally, samples)
}

/// The change of one increment: the count plus one. A count that is not a
/// number is refused rather than restarted at 0, so that the audit sees it.
fn bump(session: &mut Session) -> Result<u64, Error> {
    let count = match session.get_metadata(COUNT) {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| Error::InvalidInput(format!("the count {text:?} is not a number")))?,
    };
    session.set_metadata(COUNT, (count + 1).to_string());
    Ok(count + 1)
}

/// Reads each counter's count through `manager`, retrying a failed read for
/// up to `limit` (the audit asks what the store kept, not whether it
/// answers at once). A counter that is absent is an error.
pub async fn read(
    manager: &Manager,
    ids: &[SessionId],
    limit: Duration,
) -> anyhow::Result<BTreeMap<SessionId, u64>> {
    let started = std::time::Instant::now();
    let mut counts = BTreeMap::new();
    for id in ids {
        let session = loop {
            match manager.get(id).await {
                Ok(found) => break found,
                Err(error) if started.elapsed() < limit => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(error).context("reading a counter back"),
            }
        };
        let session = session.with_context(|| format!("counter {id} is missing"))?;
        let count = match session.get_metadata(COUNT) {
            None => 0,
            Some(text) => text.parse().context("a count that is not a number")?,
        };
        counts.insert(*id, count);
    }
    Ok(counts)
}

/// Adds the increments' figure to `outcome` and checks, per counter, that
/// the count read back is at least `floor`'s acknowledged increments and at
/// most `all`'s acknowledged plus unknown ones; that no task hung or
/// panicked; and that no call found a counter absent. `floor` is `all`
/// where every acknowledged write must survive; where the fault may lose
/// acknowledged writes, it holds the increments confirmed on a replica.
pub fn check(
    outcome: &mut Outcome,
    floor: &Tallies,
    all: &Tallies,
    counts: &BTreeMap<SessionId, u64>,
) {
    let total = all.total();
    let floor_total = floor.total();
    let final_total: u64 = counts.values().sum();
    outcome.figure(format!(
        "increments on {} counters: {} acknowledged, {} unknown, {} refused ({:?}); read back {} (floor {}, ceiling {})",
        counts.len(),
        total.acked,
        total.unknown,
        total.refused,
        total.failures,
        final_total,
        floor_total.acked,
        total.acked + total.unknown,
    ));
    let outside: Vec<String> = all
        .counters
        .iter()
        .filter_map(|(id, tally)| {
            let low = floor.counters.get(id).map_or(0, |floor| floor.acked);
            let high = tally.acked + tally.unknown;
            let count = counts.get(id).copied();
            match count {
                Some(count) if (low..=high).contains(&count) => None,
                _ => Some(format!("{id}: {count:?} not in {low}..={high}")),
            }
        })
        .collect();
    outcome.check(
        outside.is_empty(),
        format!(
            "every counter holds at least its acknowledged increments and at most those plus the ones reported unknown: {outside:?}"
        ),
    );
    outcome.check(
        total.absent == 0,
        format!("no increment found its counter absent: {}", total.absent),
    );
    outcome.check(
        all.hung == 0 && all.panicked.is_empty(),
        format!(
            "no increment task hung ({}) or panicked ({:?})",
            all.hung, all.panicked
        ),
    );
    for (class, sample) in &all.samples {
        outcome.note(format!("increment {class}: {sample}"));
    }
}

/// Counters of a fault scenario.
pub const COUNTERS: usize = 4;
/// Tasks per counter: enough that increments conflict and are retried.
pub const PER_COUNTER: usize = 4;
/// The pause between two increments of one task.
pub const PACE: Duration = Duration::from_millis(2);
/// How long the audit retries a failed read of a counter.
pub const READ_LIMIT: Duration = Duration::from_secs(10);

/// Creates [`COUNTERS`] counters with ids from `rng` and starts
/// [`PER_COUNTER`] tasks on each.
pub async fn start_counters(
    manager: &Manager,
    rng: &mut crate::rng::Rng,
) -> anyhow::Result<(Vec<SessionId>, Increments)> {
    let ids: Vec<SessionId> = (0..COUNTERS).map(|_| rng.session_id()).collect();
    create(manager, &ids).await?;
    let increments = Increments::start(manager, &ids, PER_COUNTER, PACE);
    Ok((ids, increments))
}

/// Stops `increments`, reads the counters back and checks them into
/// `outcome` with every acknowledged increment as the floor: for faults
/// after which Redis keeps every acknowledged write.
pub async fn stop_and_check(
    outcome: &mut Outcome,
    manager: &Manager,
    ids: &[SessionId],
    increments: Increments,
) -> anyhow::Result<()> {
    let tallies = increments.stop(Duration::from_secs(10)).await;
    let counts = read(manager, ids, READ_LIMIT).await?;
    check(outcome, &tallies, &tallies, &counts);
    Ok(())
}
