//! A steady mixed load on one [`Manager`], with a record of every operation.
//!
//! Each of `tasks` tasks runs a loop of creates, reads, updates and deletes
//! of its own sessions (ids drawn from a generator seeded per task), pausing
//! `pace` between operations so the load is steady rather than saturating
//! the machine: a fault's effect then shows in the figures instead of being
//! lost in queueing. Every operation is recorded with its start, end and
//! result, so a scenario can ask what happened around a fault: how many
//! operations failed and how, the worst latency, when service recovered.
//!
//! The tasks keep an audit ledger: sessions whose create was acknowledged
//! and that were not deleted since ("live"), sessions whose fate is unknown
//! because a create or delete failed ("uncertain": a timed-out write may
//! still have been applied), and sessions that the store reported missing
//! although their create was acknowledged ("lost").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use session_core::{Error, Manager, Session, SessionId, SessionType};

use crate::rng::Rng;

/// How to load the manager.
#[derive(Clone, Copy, Debug)]
pub struct LoadSpec {
    /// Concurrent tasks.
    pub tasks: usize,
    /// Pause between two operations of one task.
    pub pace: Duration,
    /// Most sessions a task keeps alive at once; at the limit it deletes.
    pub max_owned: usize,
    /// The seed of every task's generator (task `i` uses stream `i`).
    pub seed: u64,
    /// Keep a record of every operation. When false (long soaks), only
    /// failed, anomalous or slow operations and each task's last 1000 are
    /// kept, so memory stays flat; [`LoadReport::total_ops`] counts all.
    pub record_all: bool,
}

impl LoadSpec {
    /// 64 tasks, one operation every 5 ms each (at most 12.8k ops/s), up to
    /// 40 live sessions per task.
    pub fn steady(seed: u64) -> Self {
        Self {
            tasks: 64,
            pace: Duration::from_millis(5),
            max_owned: 40,
            seed,
            record_all: true,
        }
    }
}

/// A kind of operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `create_with_id` of a fresh id.
    Create,
    /// `get` of a live session.
    Get,
    /// `update` of a live session.
    Update,
    /// `delete` of a live session.
    Delete,
}

/// What an operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// What the ledger expected.
    Ok,
    /// An error; `class` names its kind (`timeout`, `backend/io`, ...).
    Failed {
        /// The error's kind.
        class: &'static str,
        /// [`Error::is_retryable`].
        retryable: bool,
    },
    /// A success that contradicts the ledger.
    Anomaly(Anomaly),
}

/// A result that contradicts what the ledger knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Anomaly {
    /// `create_with_id` of a fresh random id said `AlreadyExists`.
    SpuriousAlreadyExists,
    /// `get` of a live session found nothing.
    MissingOnGet,
    /// `update` of a live session found nothing to update.
    UpdateFoundNothing,
    /// `delete` of a live session found nothing to delete.
    DeleteFoundNothing,
    /// `get` returned a session with another id.
    WrongSession,
}

/// One operation.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    /// The task that ran it.
    pub task: u32,
    /// What it was.
    pub op: Op,
    /// When it started, after the load's epoch.
    pub start: Duration,
    /// When it returned, after the load's epoch.
    pub end: Duration,
    /// What it returned.
    pub result: OpResult,
}

impl Record {
    /// How long it took.
    pub fn latency(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }

    /// Whether it failed or contradicted the ledger.
    pub fn is_bad(&self) -> bool {
        !matches!(self.result, OpResult::Ok)
    }
}

/// The class of an error, for the figures.
pub fn error_class(error: &Error) -> &'static str {
    match error {
        Error::Timeout { .. } => "timeout",
        Error::Backend { kind, .. } => match kind {
            session_core::BackendErrorKind::Unavailable => "backend/unavailable",
            session_core::BackendErrorKind::Auth => "backend/auth",
            session_core::BackendErrorKind::Tls => "backend/tls",
            session_core::BackendErrorKind::Io => "backend/io",
            session_core::BackendErrorKind::Routing => "backend/routing",
            session_core::BackendErrorKind::WrongType => "backend/wrongtype",
            session_core::BackendErrorKind::Protocol => "backend/protocol",
            _ => "backend/other",
        },
        Error::Codec(_) => "codec",
        Error::Config(_) => "config",
        Error::InvalidInput(_) => "invalid-input",
        Error::AlreadyExists(_) => "already-exists",
        Error::Conflict { .. } => "conflict",
        Error::Closed => "closed",
        _ => "other",
    }
}

/// Records kept when not every record is: the last ones of each task.
const RECENT: usize = 1000;

struct TaskResult {
    spurious: Vec<Spurious>,
    records: Vec<Record>,
    recent: std::collections::VecDeque<Record>,
    total: usize,
    live: Vec<SessionId>,
    uncertain: Vec<SessionId>,
    lost: Vec<SessionId>,
    samples: Vec<(&'static str, String)>,
}

/// A running load; [`Load::stop`] ends it and returns the report.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<TaskResult>>,
    epoch: Instant,
}

impl Load {
    /// Starts the load on `manager`. Times in records are relative to
    /// `epoch`.
    pub fn start(manager: &Manager, spec: LoadSpec, epoch: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..spec.tasks)
            .map(|task| {
                tokio::spawn(run_task(
                    manager.clone(),
                    task as u32,
                    spec,
                    Arc::clone(&stop),
                    epoch,
                ))
            })
            .collect();
        Self { stop, tasks, epoch }
    }

    /// The epoch records are relative to.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Now, relative to the epoch.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Stops the tasks and collects their records. A task that has not
    /// returned within `hang_limit` (it is stuck in an operation) is aborted
    /// and counted in [`LoadReport::hung`].
    pub async fn stop(self, hang_limit: Duration) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + hang_limit;
        let mut report = LoadReport::default();
        for mut task in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(result)) => {
                    report.total_ops += result.total;
                    report.spurious.extend(result.spurious);
                    report.records.extend(result.records);
                    report.records.extend(result.recent);
                    report.live.extend(result.live);
                    report.uncertain.extend(result.uncertain);
                    report.lost.extend(result.lost);
                    for (class, message) in result.samples {
                        let entry = report.samples.entry(class).or_default();
                        if entry.len() < 2 {
                            entry.push(message);
                        }
                    }
                }
                Ok(Err(join)) => report.panicked.push(join.to_string()),
                Err(_) => {
                    task.abort();
                    report.hung += 1;
                }
            }
        }
        report.records.sort_by_key(|record| record.start);
        report
    }
}

async fn run_task(
    manager: Manager,
    task: u32,
    spec: LoadSpec,
    stop: Arc<AtomicBool>,
    epoch: Instant,
) -> TaskResult {
    let mut rng = Rng::derive(spec.seed, crate::rng::LOAD_STREAMS + u64::from(task));
    let mut result = TaskResult {
        spurious: Vec::new(),
        records: Vec::new(),
        recent: std::collections::VecDeque::new(),
        total: 0,
        live: Vec::new(),
        uncertain: Vec::new(),
        lost: Vec::new(),
        samples: Vec::new(),
    };
    let mut counter = 0u64;
    // Spread the tasks' first operations over one pace interval.
    tokio::time::sleep(spec.pace.mul_f64(rng.below(1000) as f64 / 1000.0)).await;
    while !stop.load(Ordering::Relaxed) {
        let owned = result.live.len();
        let op = if owned == 0 {
            Op::Create
        } else {
            match rng.below(100) {
                0..25 if owned < spec.max_owned => Op::Create,
                0..25 => Op::Delete,
                25..70 => Op::Get,
                70..90 => Op::Update,
                _ => Op::Delete,
            }
        };
        let start = epoch.elapsed();
        let outcome = match op {
            Op::Create => {
                let id = rng.session_id();
                let called = std::time::SystemTime::now();
                match manager.create_with_id(id).await {
                    Ok(_) => {
                        result.live.push(id);
                        OpResult::Ok
                    }
                    Err(Error::AlreadyExists(_)) => {
                        // A fresh random id cannot exist: the create was
                        // applied and then reported as a duplicate (a
                        // retried write). The session exists; the caller
                        // was told it does not belong to it.
                        result.uncertain.push(id);
                        result.spurious.push(Spurious {
                            id,
                            called,
                            returned: std::time::SystemTime::now(),
                        });
                        OpResult::Anomaly(Anomaly::SpuriousAlreadyExists)
                    }
                    Err(error) => {
                        result.uncertain.push(id);
                        failed(&mut result.samples, &error)
                    }
                }
            }
            Op::Get => {
                let index = rng.below(owned as u64) as usize;
                let id = result.live[index];
                match manager.get(&id).await {
                    Ok(Some(session)) if session.id() == id => OpResult::Ok,
                    Ok(Some(_)) => OpResult::Anomaly(Anomaly::WrongSession),
                    Ok(None) => {
                        result.live.swap_remove(index);
                        result.lost.push(id);
                        OpResult::Anomaly(Anomaly::MissingOnGet)
                    }
                    Err(error) => failed(&mut result.samples, &error),
                }
            }
            Op::Update => {
                let index = rng.below(owned as u64) as usize;
                let id = result.live[index];
                counter += 1;
                let mut session = Session::new(id, SessionType::Streamable);
                session.set_metadata("task", task.to_string());
                session.set_metadata("n", counter.to_string());
                match manager.update(session).await {
                    Ok(true) => OpResult::Ok,
                    Ok(false) => {
                        result.live.swap_remove(index);
                        result.lost.push(id);
                        OpResult::Anomaly(Anomaly::UpdateFoundNothing)
                    }
                    Err(error) => failed(&mut result.samples, &error),
                }
            }
            Op::Delete => {
                let index = rng.below(owned as u64) as usize;
                let id = result.live.swap_remove(index);
                match manager.delete(&id).await {
                    Ok(true) => OpResult::Ok,
                    Ok(false) => OpResult::Anomaly(Anomaly::DeleteFoundNothing),
                    Err(error) => {
                        result.uncertain.push(id);
                        failed(&mut result.samples, &error)
                    }
                }
            }
        };
        let record = Record {
            task,
            op,
            start,
            end: epoch.elapsed(),
            result: outcome,
        };
        result.total += 1;
        if spec.record_all || record.is_bad() || record.latency() > Duration::from_millis(100) {
            result.records.push(record);
        } else {
            if result.recent.len() == RECENT {
                result.recent.pop_front();
            }
            result.recent.push_back(record);
        }
        if !spec.pace.is_zero() {
            tokio::time::sleep(spec.pace).await;
        }
    }
    result
}

fn failed(samples: &mut Vec<(&'static str, String)>, error: &Error) -> OpResult {
    let class = error_class(error);
    if samples.iter().filter(|(c, _)| *c == class).count() < 2 {
        samples.push((class, error.to_string()));
    }
    OpResult::Failed {
        class,
        retryable: error.is_retryable(),
    }
}

/// Everything a load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Every operation, by start time (see [`LoadSpec::record_all`]).
    pub records: Vec<Record>,
    /// How many operations ran.
    pub total_ops: usize,
    /// Sessions created (acknowledged) and not deleted.
    pub live: Vec<SessionId>,
    /// Sessions whose create or delete failed: they may or may not exist.
    pub uncertain: Vec<SessionId>,
    /// Sessions acknowledged as created that the store later reported
    /// missing.
    pub lost: Vec<SessionId>,
    /// Creates of fresh ids that were told `AlreadyExists`.
    pub spurious: Vec<Spurious>,
    /// Up to two error messages per error class.
    pub samples: BTreeMap<&'static str, Vec<String>>,
    /// Tasks that did not return within the hang limit.
    pub hung: usize,
    /// Tasks that panicked.
    pub panicked: Vec<String>,
}

impl LoadReport {
    /// The checks every failover scenario makes of the load that ran
    /// through the switch: no task hung or panicked, every failure was
    /// retryable, failures stopped within `bound` of the fault (`recovery`,
    /// from [`LoadReport::failures_recovery_after`]), and the last second of
    /// the load was clean.
    pub fn check_through_a_switch(
        &self,
        outcome: &mut crate::Outcome,
        recovery: Duration,
        bound: Duration,
    ) {
        let last = self.last_end();
        let (final_ops, final_failed) =
            self.failures_after(last.saturating_sub(Duration::from_secs(1)));
        outcome.check(
            self.hung == 0 && self.panicked.is_empty(),
            format!("no task hung ({}) or panicked", self.hung),
        );
        outcome.check(
            self.non_retryable() == 0,
            format!(
                "every failure during the switch is retryable ({} are not: {:?})",
                self.non_retryable(),
                self.samples
            ),
        );
        outcome.check(
            recovery <= bound,
            format!(
                "operations stop failing within {} of the failover ({})",
                ms(bound),
                ms(recovery)
            ),
        );
        outcome.check(
            final_ops > 0 && final_failed == 0,
            format!("the last second is clean: {final_failed} failed of {final_ops} ops"),
        );
    }

    /// Operations that failed (errors), by class.
    pub fn failures_by_class(&self) -> BTreeMap<&'static str, usize> {
        let mut map = BTreeMap::new();
        for record in &self.records {
            if let OpResult::Failed { class, .. } = record.result {
                *map.entry(class).or_default() += 1;
            }
        }
        map
    }

    /// Operations that returned an error.
    pub fn failed(&self) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r.result, OpResult::Failed { .. }))
            .count()
    }

    /// Errors that are not [`Error::is_retryable`].
    pub fn non_retryable(&self) -> usize {
        self.records
            .iter()
            .filter(|r| {
                matches!(
                    r.result,
                    OpResult::Failed {
                        retryable: false,
                        ..
                    }
                )
            })
            .count()
    }

    /// Anomalies by kind.
    pub fn anomalies(&self) -> BTreeMap<Anomaly, usize> {
        let mut map = BTreeMap::new();
        for record in &self.records {
            if let OpResult::Anomaly(anomaly) = record.result {
                *map.entry(anomaly).or_default() += 1;
            }
        }
        map
    }

    /// The longest operation.
    pub fn worst_latency(&self) -> Duration {
        self.records
            .iter()
            .map(Record::latency)
            .max()
            .unwrap_or_default()
    }

    /// Operations that were running at some point of `[from, to]`.
    pub fn overlapping(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Record> {
        self.records
            .iter()
            .filter(move |r| r.start <= to && r.end >= from)
    }

    /// How long after `fault` service was disrupted: the end of the last
    /// operation that ended after `fault` and failed, contradicted the
    /// ledger or took longer than `slow`, minus `fault`. Zero when nothing
    /// was disrupted.
    pub fn recovery_after(&self, fault: Duration, slow: Duration) -> Duration {
        self.records
            .iter()
            .filter(|r| r.end >= fault && (r.is_bad() || r.latency() > slow))
            .map(|r| r.end.saturating_sub(fault))
            .max()
            .unwrap_or_default()
    }

    /// Like [`recovery_after`](Self::recovery_after), counting only errors
    /// and slow operations, not anomalies (which a later read of a session
    /// lost long before can reveal at any time).
    pub fn failures_recovery_after(&self, fault: Duration, slow: Duration) -> Duration {
        self.records
            .iter()
            .filter(|r| {
                r.end >= fault
                    && (matches!(r.result, OpResult::Failed { .. }) || r.latency() > slow)
            })
            .map(|r| r.end.saturating_sub(fault))
            .max()
            .unwrap_or_default()
    }

    /// `(operations, failed operations)` among those that started at or
    /// after `from`, anomalies not counted.
    pub fn failures_after(&self, from: Duration) -> (usize, usize) {
        let mut ops = 0;
        let mut failed = 0;
        for record in self.records.iter().filter(|r| r.start >= from) {
            ops += 1;
            failed += usize::from(matches!(record.result, OpResult::Failed { .. }));
        }
        (ops, failed)
    }

    /// `(operations, bad operations)` among those that started at or after
    /// `from`.
    pub fn after(&self, from: Duration) -> (usize, usize) {
        let mut ops = 0;
        let mut bad = 0;
        for record in self.records.iter().filter(|r| r.start >= from) {
            ops += 1;
            bad += usize::from(record.is_bad());
        }
        (ops, bad)
    }

    /// The time of the last operation's end.
    pub fn last_end(&self) -> Duration {
        self.records.iter().map(|r| r.end).max().unwrap_or_default()
    }

    /// A short description of the failures, e.g. `timeout 12, backend/io 3`.
    pub fn failure_text(&self) -> String {
        let by_class = self.failures_by_class();
        if by_class.is_empty() {
            return "none".into();
        }
        by_class
            .iter()
            .map(|(class, count)| format!("{class} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A create of a fresh id that was told `AlreadyExists`, with the wall
/// clock around the call, to find out who wrote the session that exists.
#[derive(Clone, Copy, Debug)]
pub struct Spurious {
    /// The id.
    pub id: SessionId,
    /// When `create_with_id` was called.
    pub called: std::time::SystemTime,
    /// When it returned.
    pub returned: std::time::SystemTime,
}

impl Spurious {
    /// Whether the stored session was created during this very call: its
    /// `created_at` lies between the call and its return (give or take
    /// `slack`), so the call that was told `AlreadyExists` wrote it.
    pub fn written_by_the_call(&self, session: &Session, slack: Duration) -> bool {
        let created = session.created_at();
        created + slack >= self.called && created <= self.returned + slack
    }
}

/// What an audit found.
#[derive(Debug, Default)]
pub struct Audit {
    /// Sessions read back.
    pub present: usize,
    /// Sessions the store reported missing.
    pub missing: Vec<SessionId>,
    /// Reads that failed (errors), with one sample message.
    pub errors: usize,
    /// The first error message.
    pub first_error: Option<String>,
}

impl Audit {
    /// Checks that every audited session was read back: none missing, no
    /// read failed. `promise` states it in the outcome.
    pub fn check_all_read(&self, outcome: &mut crate::Outcome, promise: &str) {
        outcome.check(
            self.missing.is_empty() && self.errors == 0,
            format!(
                "{promise}: {} missing (e.g. {:?}), {} read errors ({:?})",
                self.missing.len(),
                self.missing.iter().take(3).collect::<Vec<_>>(),
                self.errors,
                self.first_error
            ),
        );
    }
}

/// Reads every session in `ids` through `manager`, 64 at a time.
pub async fn audit(manager: &Manager, ids: &[SessionId]) -> Audit {
    let ids: Arc<Vec<SessionId>> = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (manager, ids, next) = (manager.clone(), Arc::clone(&ids), Arc::clone(&next));
        workers.spawn(async move {
            let mut audit = Audit::default();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(index) else { break };
                // A read that fails is retried a few times: the audit asks
                // what the store kept, not whether it answers at once.
                let mut attempt = 0;
                loop {
                    match manager.get(id).await {
                        Ok(Some(_)) => audit.present += 1,
                        Ok(None) => audit.missing.push(*id),
                        Err(error) if attempt < 5 => {
                            attempt += 1;
                            let _ = error;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        Err(error) => {
                            audit.errors += 1;
                            audit.first_error.get_or_insert(error.to_string());
                        }
                    }
                    break;
                }
            }
            audit
        });
    }
    let mut total = Audit::default();
    while let Some(joined) = workers.join_next().await {
        if let Ok(part) = joined {
            total.present += part.present;
            total.missing.extend(part.missing);
            total.errors += part.errors;
            if total.first_error.is_none() {
                total.first_error = part.first_error;
            }
        }
    }
    total
}

/// Creates `count` sessions through `manager`, `concurrency` at a time, and
/// returns the ids whose create was acknowledged.
pub async fn create_many(
    manager: &Manager,
    count: usize,
    concurrency: usize,
    rng: &mut Rng,
) -> (Vec<SessionId>, usize) {
    let ids: Arc<Vec<SessionId>> = Arc::new((0..count).map(|_| rng.session_id()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (manager, ids, next) = (manager.clone(), Arc::clone(&ids), Arc::clone(&next));
        workers.spawn(async move {
            let mut acked = Vec::new();
            let mut failed = 0;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(index) else { break };
                match manager.create_with_id(*id).await {
                    Ok(_) => acked.push(*id),
                    Err(_) => failed += 1,
                }
            }
            (acked, failed)
        });
    }
    let mut acked = Vec::with_capacity(count);
    let mut failed = 0;
    while let Some(joined) = workers.join_next().await {
        if let Ok((part, part_failed)) = joined {
            acked.extend(part);
            failed += part_failed;
        }
    }
    (acked, failed)
}

/// Milliseconds with one decimal, for figures.
pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}
