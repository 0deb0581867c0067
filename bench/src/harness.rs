//! The load loop every throughput figure comes from.
//!
//! A [`Workload`] is run by a fixed number of Tokio tasks for a warmup and
//! then a fixed measurement window. Every task counts the operations it
//! completes inside the window and records their latency in its own
//! HDR histogram (merged at the end), so the tasks never share a counter.
//! For in-process stores, where an operation takes about as long as reading
//! the clock, only every `sample_every`-th operation is timed and the clock is
//! read for the deadline only every `check_every` operations.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency resolution: two significant figures (1%).
const SIGFIG: u8 = 2;
/// The largest latency recorded; longer ones are clamped (10 s).
const MAX_NS: u64 = 10_000_000_000;

/// One benchmark's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Measurement {
    /// Operations completed inside the measurement window.
    pub(crate) ops: u64,
    /// The window, in seconds.
    pub(crate) secs: f64,
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    /// Operations that found nothing to act on (a load of a missing key, an
    /// update of a missing session): reported so a broken setup shows.
    pub(crate) misses: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Operations including the warmup: what the CPU figures divide by.
    #[serde(default)]
    pub(crate) total_ops: u64,
    /// CPU time of this process (every thread: the tasks, the Redis
    /// client's connection tasks, the runtime) per operation, warmup
    /// included. Unlike throughput it does not depend on how much of the
    /// machine the run got, so it is the steadier figure on a busy machine.
    #[serde(default)]
    pub(crate) cpu_us_per_op: f64,
    /// For Redis runs: the server's CPU time per operation (from `INFO cpu`).
    #[serde(default)]
    pub(crate) server_cpu_us_per_op: Option<f64>,
}

/// CPU time used so far by every thread of this process, in nanoseconds,
/// from `/proc/self/task/*/schedstat` (nanosecond resolution, no unsafe
/// code). Threads that exited are not counted; the runtimes here keep
/// their threads.
pub(crate) fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|task| task.ok())
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// What the tasks run.
pub(crate) trait Workload: Send + Sync + 'static {
    /// Per-task state (a seeded random source, the ids it created, ...).
    type State: Send + 'static;

    fn state(&self, task: usize, tasks: usize) -> Self::State;

    /// Whether this task has nothing left to do (checked with the clock):
    /// a delete that used up the sessions create made, a create that made
    /// as many as it may keep in memory. The task then stops early, and its
    /// rate is taken over the time it ran.
    fn exhausted(&self, _state: &Self::State) -> bool {
        false
    }

    /// One operation; `Ok(false)` is a miss.
    fn op(&self, state: &mut Self::State) -> impl Future<Output = Result<bool>> + Send;

    /// Called with each task's state when the run ends.
    fn done(&self, _state: Self::State) {}
}

/// How to run a workload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) tasks: usize,
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
    pub(crate) sample_every: u64,
    pub(crate) check_every: u64,
}

impl Plan {
    /// Every operation timed: for operations that take microseconds.
    pub(crate) fn timed(tasks: usize, warmup: Duration, measure: Duration) -> Self {
        Self {
            tasks,
            warmup,
            measure,
            sample_every: 1,
            check_every: 1,
        }
    }

    /// Sampled timing: for in-process operations of tens of nanoseconds.
    pub(crate) fn sampled(tasks: usize, warmup: Duration, measure: Duration) -> Self {
        Self {
            tasks,
            warmup,
            measure,
            sample_every: 32,
            check_every: 64,
        }
    }
}

/// A new latency histogram in nanoseconds.
pub(crate) fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    match Histogram::new_with_bounds(1, MAX_NS, SIGFIG) {
        Ok(histogram) => histogram,
        Err(error) => unreachable!("constant histogram bounds rejected: {error}"),
    }
}

/// Turns a histogram and counts into a [`Measurement`].
pub(crate) fn summarize(hist: &Histogram<u64>, ops: u64, secs: f64) -> Measurement {
    let us = |ns: u64| ns as f64 / 1000.0;
    Measurement {
        ops,
        secs,
        ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
        p50_us: us(hist.value_at_quantile(0.50)),
        p99_us: us(hist.value_at_quantile(0.99)),
        p999_us: us(hist.value_at_quantile(0.999)),
        max_us: us(hist.max()),
        ..Measurement::default()
    }
}

struct Tally {
    hist: Histogram<u64>,
    ops: u64,
    /// Operations including the warmup.
    all_ops: u64,
    /// How long this task measured.
    secs: f64,
    misses: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `work` as `plan` says, on the current runtime.
pub(crate) async fn run<W: Workload>(work: &Arc<W>, plan: Plan) -> Result<Measurement> {
    let cpu_before = process_cpu_ns();
    let start = Instant::now();
    let warm_end = start + plan.warmup;
    let end = warm_end + plan.measure;
    let sample = plan.sample_every.max(1);
    let check = plan.check_every.max(1);
    let tasks = plan.tasks;
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let work = Arc::clone(work);
        handles.push(tokio::spawn(async move {
            let mut state = work.state(task, tasks);
            let mut tally = Tally {
                hist: histogram(),
                ops: 0,
                all_ops: 0,
                secs: 0.0,
                misses: 0,
                errors: 0,
                first_error: None,
            };
            let mut measuring_since: Option<Instant> = None;
            let mut i: u64 = 0;
            loop {
                let check_now = i.is_multiple_of(check);
                let timed = i.is_multiple_of(sample);
                let t0 = (check_now || (measuring_since.is_some() && timed)).then(Instant::now);
                if let (true, Some(now)) = (check_now, t0) {
                    if now >= end || work.exhausted(&state) {
                        if let Some(since) = measuring_since {
                            tally.secs = (now - since).as_secs_f64();
                        }
                        break;
                    }
                    if measuring_since.is_none() && now >= warm_end {
                        measuring_since = Some(now);
                    }
                }
                let outcome = work.op(&mut state).await;
                tally.all_ops += 1;
                if measuring_since.is_some() {
                    tally.ops += 1;
                    if let (true, Some(t0)) = (timed, t0) {
                        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(MAX_NS);
                        tally.hist.saturating_record(ns.clamp(1, MAX_NS));
                    }
                    match outcome {
                        Ok(true) => {}
                        Ok(false) => tally.misses += 1,
                        Err(error) => {
                            tally.errors += 1;
                            if tally.first_error.is_none() {
                                tally.first_error = Some(format!("{error:#}"));
                            }
                        }
                    }
                }
                i += 1;
            }
            work.done(state);
            tally
        }));
    }
    let mut hist = histogram();
    let (mut ops, mut all_ops, mut rate, mut secs) = (0, 0, 0.0, 0.0_f64);
    let (mut misses, mut errors, mut first_error) = (0, 0, None);
    for handle in handles {
        let tally = handle.await?;
        hist.add(&tally.hist)?;
        ops += tally.ops;
        all_ops += tally.all_ops;
        // Each task's own rate over the time it measured, summed: the same
        // as ops / window when every task ran the whole window.
        if tally.secs > 0.0 {
            rate += tally.ops as f64 / tally.secs;
        }
        secs = secs.max(tally.secs);
        misses += tally.misses;
        errors += tally.errors;
        if first_error.is_none() {
            first_error = tally.first_error;
        }
    }
    let mut measurement = summarize(&hist, ops, secs);
    measurement.ops_per_sec = rate;
    measurement.misses = misses;
    measurement.errors = errors;
    measurement.first_error = first_error;
    measurement.total_ops = all_ops;
    let cpu = process_cpu_ns().saturating_sub(cpu_before);
    measurement.cpu_us_per_op = cpu as f64 / 1000.0 / all_ops.max(1) as f64;
    Ok(measurement)
}

/// One measured (target, operation, concurrency) cell of a table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) target: String,
    pub(crate) op: String,
    /// Concurrent tasks (Redis) or worker threads (local).
    pub(crate) concurrency: usize,
    pub(crate) m: Measurement,
    /// For our Redis loads: the share of load-script runs (`EVALSHA`, a
    /// read that refreshed the TTL or had to check it) among the `GET` and
    /// `EVALSHA` commands the server received during the run.
    #[serde(default)]
    pub(crate) script_share: Option<f64>,
    /// For our loads with the local cache: the share of reads it answered
    /// (since the storage was built, warmups included).
    #[serde(default)]
    pub(crate) hit_share: Option<f64>,
    /// Throughput and p99 of every round, in round order, for paired ratios.
    #[serde(default)]
    pub(crate) rounds: Vec<(f64, f64)>,
}

/// The warmup and measurement window of every run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
    /// Each comparison runs this many times, the stores interleaved, and the
    /// round with the highest throughput is kept: on a shared machine the
    /// noise only ever slows a run down.
    pub(crate) rounds: usize,
    pub(crate) quick: bool,
}

impl Timing {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Self {
                warmup: Duration::from_millis(100),
                measure: Duration::from_millis(300),
                rounds: 1,
                quick,
            }
        } else {
            Self {
                warmup: Duration::from_millis(100),
                measure: Duration::from_millis(300),
                rounds: 5,
                quick,
            }
        }
    }
}

/// Adds `row` to `rows`, or replaces the row of the same cell if `row` had
/// the higher throughput (best of the rounds).
pub(crate) fn keep_best(rows: &mut Vec<Row>, mut row: Row) {
    let round = (row.m.ops_per_sec, row.m.p99_us);
    match rows
        .iter_mut()
        .find(|r| r.target == row.target && r.op == row.op && r.concurrency == row.concurrency)
    {
        Some(existing) if existing.m.ops_per_sec >= row.m.ops_per_sec => {
            existing.rounds.push(round);
        }
        Some(existing) => {
            row.rounds = std::mem::take(&mut existing.rounds);
            row.rounds.push(round);
            *existing = row;
        }
        None => {
            row.rounds = vec![round];
            rows.push(row);
        }
    }
}

/// The median of the per-round ratios `a / b` of a figure (`pick` chooses
/// it from a round), pairing the rounds in order: each round measured both
/// seconds apart, so the machine's slow swings cancel out. Falls back to the
/// ratio of the best rounds when the rows do not have the same rounds.
pub(crate) fn paired_ratio(a: &Row, b: &Row, pick: fn(&(f64, f64)) -> f64) -> f64 {
    if a.rounds.len() != b.rounds.len() || a.rounds.is_empty() {
        return pick(&(a.m.ops_per_sec, a.m.p99_us)) / pick(&(b.m.ops_per_sec, b.m.p99_us));
    }
    median(
        a.rounds
            .iter()
            .zip(&b.rounds)
            .map(|(x, y)| pick(x) / pick(y)),
    )
}

/// The median of some values (the mean of the middle two for an even count).
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}
