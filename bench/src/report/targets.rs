//! The targets of the benchmark issue, checked against this run.
//!
//! Every target is one row of [`TARGETS`]: what is measured, against which
//! baseline, how the two compare and at what threshold. [`evaluate`] is the
//! only code that turns a row and a run into a verdict, and [`table`] the
//! only code that writes verdicts down, so adding a target is adding a row.
//! A row's name and its "measured" column are one-line templates kept in
//! the row, beside the figures they describe; the section's own sentences
//! are in `templates/targets.md`.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use minijinja::{Value, context};

use super::Run;
use super::format::{bytes, find, p99, rate, ratio, table as markdown_table, times, tput, us};
use super::templates::Templates;
use crate::harness::{Row, median};

/// The concurrency (tasks) of the single-cell Redis targets.
const AT: usize = 64;

/// The "measured" column of a target read at every concurrency.
const EVERY_CONCURRENCY: &str = "by tasks: {{ each|join(', ') }}; lowest at {{ worst_at }}";

/// The least throughput of an owned create against a plain one: owner
/// bookkeeping may cost a create at most 15%.
const OWNED_CREATE: f64 = 1.0 / 1.15;

/// Which section of the report a target's figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Section {
    /// Section 1, the rows of `redis.json`.
    Redis,
    /// Section 2, the rows of `local.json`.
    Local,
    /// Section 3, the memory files and `sweep.json`.
    Memory,
    /// Section 6, the Redis rows of `owned.json`.
    OwnedRedis,
    /// Section 6, the local rows of `owned.json`.
    OwnedLocal,
    /// Section 7, the rows of `layer.json`.
    Layer,
}

/// Which cells of a section's table a figure is read at.
#[derive(Clone, Copy, Debug)]
pub(crate) enum At {
    /// One concurrency: tasks for Redis, threads for local.
    One(usize),
    /// Every concurrency the section measured; the figure is the worst
    /// ratio for a threshold (the lowest for [`Comparison::AtLeast`], the
    /// highest for [`Comparison::AtMost`]) and the geometric mean for a
    /// [`Comparison::Decide`].
    Every,
}

/// What a target measures.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Figure {
    /// The throughput of `store` for `op`, as the median of the per-round
    /// ratios to the baseline's.
    Throughput {
        store: &'static str,
        op: &'static str,
        at: At,
    },
    /// The throughput of `store` for `op`, as the ratio of the best rounds
    /// to the baseline's, unpaired: the figure the pool decision has always
    /// been made by.
    BestThroughput {
        store: &'static str,
        op: &'static str,
        at: At,
    },
    /// The p99 latency of `store` for `op`, as the median of the per-round
    /// ratios to the baseline's.
    P99 {
        store: &'static str,
        op: &'static str,
        at: At,
    },
    /// The Redis server's CPU time per operation of `store` for `op`, as
    /// the ratio of the best rounds' figures to the baseline's.
    ServerCpu {
        store: &'static str,
        op: &'static str,
        at: At,
    },
    /// The resident memory per session of one store.
    BytesPerSession { store: &'static str },
    /// The p99 of local loads while a sweep removes expired sessions, in
    /// microseconds; the ratio shown is to the loads without a sweep.
    SweepLoadP99,
}

/// What a figure is compared with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Baseline {
    /// The same figure of another store in the same section.
    Store(&'static str),
    /// Raw fred sending the mix of load-script runs (`EVALSHA`) and `GET`s
    /// that our loads sent, its rate weighted by our share of script runs
    /// (see [`same_commands_rate`]).
    SameCommandMix,
    /// Raw fred sending the one command (the load script or `GET`) that
    /// most of our loads sent.
    MostlySentCommand,
    /// The same loads without a sweep.
    NoSweep,
    /// A store of the local section at a number of threads: the in-process
    /// floor a cached Redis read is held against.
    Local { store: &'static str, threads: usize },
}

/// How the figure must compare with the threshold for the target to be met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Comparison {
    /// The ratio is at least the threshold (throughput).
    AtLeast,
    /// The ratio is at most the threshold (latency, memory).
    AtMost,
    /// The figure itself, not its ratio, is under the threshold.
    Below,
    /// No threshold to meet: the figure decides a design question, and
    /// ratios within `threshold` of 1 count as no difference.
    Decide,
}

impl Comparison {
    /// Whether `value` meets `threshold`; `None` for a decision.
    fn met(self, value: f64, threshold: f64) -> Option<bool> {
        match self {
            Self::AtLeast => Some(value >= threshold),
            Self::AtMost => Some(value <= threshold),
            Self::Below => Some(value < threshold),
            Self::Decide => None,
        }
    }
}

/// One target of the issue.
#[derive(Debug)]
pub(crate) struct Target {
    /// The target as the report states it (a one-line template).
    pub(crate) name: &'static str,
    pub(crate) measured: Figure,
    pub(crate) baseline: Baseline,
    pub(crate) comparison: Comparison,
    pub(crate) threshold: f64,
    /// Where its figures are; a missed Redis target adds the paragraph on
    /// what limits the Redis path.
    pub(crate) section: Section,
    /// The "measured" column: a one-line template over the figures the
    /// evaluator found (see [`evaluate`] for the names it provides).
    pub(crate) detail: &'static str,
}

/// The targets of the benchmark issue, in the order the report lists them.
pub(crate) const TARGETS: &[Target] = &[
    Target {
        name: "Cached Redis load at 64 tasks >= 10x raw fred GET",
        measured: Figure::Throughput {
            store: "ours-cached-tracking",
            op: "load",
            at: At::One(AT),
        },
        baseline: Baseline::Store("raw-fred-get"),
        comparison: Comparison::AtLeast,
        threshold: 10.0,
        section: Section::Redis,
        detail: "cached (tracking mode) {{ ours.rate }}/s, {{ ours.hits_pct }}% of reads from the \
                 cache; raw fred GET {{ base.rate }}/s",
    },
    Target {
        name: "Cached Redis load p99 at 64 tasks <= 0.2x raw fred GET",
        measured: Figure::P99 {
            store: "ours-cached-tracking",
            op: "load",
            at: At::One(AT),
        },
        baseline: Baseline::Store("raw-fred-get"),
        comparison: Comparison::AtMost,
        threshold: 0.2,
        section: Section::Redis,
        detail: "cached {{ ours.p99 }} us, raw fred GET {{ base.p99 }} us",
    },
    Target {
        name: "Cached Redis load at 64 tasks >= 0.3x the bare DashMap (local section, 2 threads)",
        measured: Figure::Throughput {
            store: "ours-cached-tracking",
            op: "load",
            at: At::One(AT),
        },
        baseline: Baseline::Local {
            store: "dashmap",
            threads: 2,
        },
        comparison: Comparison::AtLeast,
        threshold: 0.3,
        section: Section::Redis,
        detail: "cached {{ ours.rate }}/s (64 tasks on the Redis section's runtime), DashMap \
                 {{ base.rate }}/s (2 threads); best rounds",
    },
    Target {
        name: "Redis server CPU per cached load <= 0.2x per uncached load, 64 tasks",
        measured: Figure::ServerCpu {
            store: "ours-cached-tracking",
            op: "load",
            at: At::One(AT),
        },
        baseline: Baseline::Store("ours"),
        comparison: Comparison::AtMost,
        threshold: 0.2,
        section: Section::Redis,
        detail: "server CPU per load: cached {{ ours.server }} us, uncached {{ base.server }} us",
    },
    Target {
        name: "Invalidation mode, cached load at 64 tasks: broadcast against tracking (decide)",
        measured: Figure::Throughput {
            store: "ours-cached-broadcast",
            op: "load",
            at: At::One(AT),
        },
        baseline: Baseline::Store("ours-cached-tracking"),
        comparison: Comparison::Decide,
        threshold: 0.05,
        section: Section::Redis,
        detail: "broadcast {{ ours.rate }}/s ({{ ours.hits_pct }}% hits, server {{ ours.server }} \
                 us/op), tracking {{ base.rate }}/s ({{ base.hits_pct }}% hits, server \
                 {{ base.server }} us/op)",
    },
    Target {
        name: "Invalidation mode, mix at 64 tasks: broadcast against tracking (decide)",
        measured: Figure::Throughput {
            store: "ours-cached-broadcast",
            op: "mix",
            at: At::One(AT),
        },
        baseline: Baseline::Store("ours-cached-tracking"),
        comparison: Comparison::Decide,
        threshold: 0.05,
        section: Section::Redis,
        detail: "broadcast {{ ours.rate }}/s ({{ ours.hits_pct }}% hits), tracking \
                 {{ base.rate }}/s ({{ base.hits_pct }}% hits); uncached mix in the table below",
    },
    Target {
        name: "Cached mix at 64 tasks against the uncached mix",
        measured: Figure::Throughput {
            store: "ours-cached-tracking",
            op: "mix",
            at: At::One(AT),
        },
        baseline: Baseline::Store("ours"),
        comparison: Comparison::Decide,
        threshold: 0.05,
        section: Section::Redis,
        detail: "cached (tracking) {{ ours.rate }}/s, uncached {{ base.rate }}/s",
    },
    Target {
        name: "Redis load at 64 tasks >= 0.90x raw fred sending the same commands",
        measured: Figure::Throughput {
            store: "ours",
            op: "load",
            at: At::One(AT),
        },
        baseline: Baseline::SameCommandMix,
        comparison: Comparison::AtLeast,
        threshold: 0.90,
        section: Section::Redis,
        detail: "ours {{ ours.rate }}/s; raw fred {{ mix_rate }}/s for the same command mix \
                 ({{ ours.script_pct }}% load script, which raw fred sends as the same EVALSHA, {{ ours.get_pct }}% GET); \
                 against the raw load script alone {{ vs_script }}, raw GET alone {{ vs_get }}, raw GETEX alone \
                 {{ vs_getex }}; client CPU per load: ours {{ ours.cpu }} us, raw GET {{ get.cpu }} us, raw load \
                 script {{ script.cpu }} us",
    },
    Target {
        name: "Redis load p99 at 64 tasks <= 1.2x raw fred",
        measured: Figure::P99 {
            store: "ours",
            op: "load",
            at: At::One(AT),
        },
        baseline: Baseline::MostlySentCommand,
        comparison: Comparison::AtMost,
        threshold: 1.2,
        section: Section::Redis,
        detail: "ours {{ ours.p99 }} us; raw fred {{ command }} (the command ours mostly sent) \
                 {{ base.p99 }} us",
    },
    Target {
        name: "Redis create (SET NX) at 64 tasks >= 0.90x raw fred",
        measured: Figure::Throughput {
            store: "ours",
            op: "create",
            at: At::One(AT),
        },
        baseline: Baseline::Store("raw-fred"),
        comparison: Comparison::AtLeast,
        threshold: 0.90,
        section: Section::Redis,
        detail: "ours {{ ours.rate }}/s, raw fred {{ base.rate }}/s; client CPU per create: ours \
                 {{ ours.cpu }} us, raw fred {{ base.cpu }} us",
    },
    Target {
        name: "Redis create p99 at 64 tasks <= 1.2x raw fred",
        measured: Figure::P99 {
            store: "ours",
            op: "create",
            at: At::One(AT),
        },
        baseline: Baseline::Store("raw-fred"),
        comparison: Comparison::AtMost,
        threshold: 1.2,
        section: Section::Redis,
        detail: "ours {{ ours.p99 }} us, raw fred {{ base.p99 }} us",
    },
    Target {
        name: "Encrypted Redis load at 64 tasks >= 0.90x unencrypted (at most 10% slower)",
        measured: Figure::Throughput {
            store: "ours-sealed",
            op: "load",
            at: At::One(AT),
        },
        baseline: Baseline::Store("ours"),
        comparison: Comparison::AtLeast,
        threshold: 0.90,
        section: Section::Redis,
        detail: "encrypted {{ ours.rate }}/s, unencrypted {{ base.rate }}/s; client CPU per load: \
                 encrypted {{ ours.cpu }} us, unencrypted {{ base.cpu }} us",
    },
    Target {
        name: "Encrypted Redis create at 64 tasks >= 0.90x unencrypted (at most 10% slower)",
        measured: Figure::Throughput {
            store: "ours-sealed",
            op: "create",
            at: At::One(AT),
        },
        baseline: Baseline::Store("ours"),
        comparison: Comparison::AtLeast,
        threshold: 0.90,
        section: Section::Redis,
        detail: "encrypted {{ ours.rate }}/s, unencrypted {{ base.rate }}/s; client CPU per \
                 create: encrypted {{ ours.cpu }} us, unencrypted {{ base.cpu }} us",
    },
    Target {
        name: "Redis create >= 1.0x tower-sessions-redis-store create at every concurrency",
        measured: Figure::Throughput {
            store: "ours",
            op: "create",
            at: At::Every,
        },
        baseline: Baseline::Store("tower-sessions-redis-store"),
        comparison: Comparison::AtLeast,
        threshold: 1.0,
        section: Section::Redis,
        detail: EVERY_CONCURRENCY,
    },
    Target {
        name: "Redis update >= 1.0x tower-sessions-redis-store save at every concurrency",
        measured: Figure::Throughput {
            store: "ours",
            op: "update",
            at: At::Every,
        },
        baseline: Baseline::Store("tower-sessions-redis-store"),
        comparison: Comparison::AtLeast,
        threshold: 1.0,
        section: Section::Redis,
        detail: EVERY_CONCURRENCY,
    },
    Target {
        name: "Redis load at 64 tasks >= 1.0x tower-sessions-redis-store load, keeping the \
               sliding TTL",
        measured: Figure::Throughput {
            store: "ours",
            op: "load",
            at: At::One(AT),
        },
        baseline: Baseline::Store("tower-sessions-redis-store"),
        comparison: Comparison::AtLeast,
        threshold: 1.0,
        section: Section::Redis,
        detail: "ours {{ ours.rate }}/s ({{ ours.script_pct }}% of loads ran the load script, the \
                 rest were plain GETs inside the refresh window), tower {{ base.rate }}/s (plain GET, no refresh)",
    },
    Target {
        name: "Local load at 2 threads >= 2x tower-sessions MemoryStore",
        measured: Figure::Throughput {
            store: "ours",
            op: "load",
            at: At::One(2),
        },
        baseline: Baseline::Store("tower-sessions-memory-store"),
        comparison: Comparison::AtLeast,
        threshold: 2.0,
        section: Section::Local,
        detail: "ours {{ ours.rate }}/s, MemoryStore {{ base.rate }}/s",
    },
    Target {
        name: "Local load at 2 threads >= 0.5x a bare DashMap",
        measured: Figure::Throughput {
            store: "ours",
            op: "load",
            at: At::One(2),
        },
        baseline: Baseline::Store("dashmap"),
        comparison: Comparison::AtLeast,
        threshold: 0.5,
        section: Section::Local,
        detail: "ours {{ ours.rate }}/s, DashMap {{ base.rate }}/s",
    },
    Target {
        name: "Resident memory per session <= 1.25x the bare map holding the same data",
        measured: Figure::BytesPerSession { store: "ours" },
        baseline: Baseline::Store("dashmap"),
        comparison: Comparison::AtMost,
        threshold: 1.25,
        section: Section::Memory,
        detail: "{{ sessions }} sessions: ours {{ ours }} B, DashMap {{ base }} B",
    },
    Target {
        name: "Sweep of {{ expired }} expired sessions keeps concurrent-load p99 under 1 ms",
        measured: Figure::SweepLoadP99,
        baseline: Baseline::NoSweep,
        comparison: Comparison::Below,
        threshold: 1000.0,
        section: Section::Memory,
        detail: "sweep {{ sweep_ms }} ms; load p99 {{ during.p99 }} us during it ({{ base.p99 }} us \
                 without); p99.9 {{ during.p999 }} us ({{ base.p999 }} us without), max \
                 {{ during.max }} us; {{ loads }} of the loads/s",
    },
    Target {
        name: "One auto-pipelined client vs a pool of 4: decide by the figure",
        measured: Figure::BestThroughput {
            store: "raw-fred-pool4",
            op: "load",
            at: At::Every,
        },
        baseline: Baseline::Store("raw-fred"),
        comparison: Comparison::Decide,
        threshold: 0.05,
        section: Section::Redis,
        detail: "pool of 4 / one client, raw GETEX, by tasks: {{ each|join(', ') }}; geometric \
                 mean {{ ratio }}. Decision: {% if decision == 'above' %}a pool of 4 is faster \
                 across the concurrencies: worth offering{% elif decision == 'below' %}one \
                 auto-pipelined client is faster across the concurrencies: keep it{% else %}no \
                 difference beyond 5% across the concurrencies: keep one auto-pipelined client \
                 (one connection per node, simpler){% endif %}",
    },
    Target {
        name: "Redis modify >= 0.80x get + update at 1 and 64 tasks",
        measured: Figure::Throughput {
            store: "modify",
            op: "modify",
            at: At::Every,
        },
        baseline: Baseline::Store("get-update"),
        comparison: Comparison::AtLeast,
        threshold: 0.80,
        section: Section::OwnedRedis,
        detail: "modify / get + update by tasks: {{ each|join(', ') }}; lowest at {{ worst_at }}",
    },
    Target {
        name: "Local modify >= 0.80x get + update at 1 and 2 threads",
        measured: Figure::Throughput {
            store: "modify",
            op: "modify",
            at: At::Every,
        },
        baseline: Baseline::Store("get-update"),
        comparison: Comparison::AtLeast,
        threshold: 0.80,
        section: Section::OwnedLocal,
        detail: "modify / get + update by threads: {{ each|join(', ') }}; lowest at {{ worst_at }}",
    },
    Target {
        name: "Redis create_owned costs create at most 15% (>= 0.87x create) at 1 and 64 tasks",
        measured: Figure::Throughput {
            store: "create-owned",
            op: "create",
            at: At::Every,
        },
        baseline: Baseline::Store("create"),
        comparison: Comparison::AtLeast,
        threshold: OWNED_CREATE,
        section: Section::OwnedRedis,
        detail: "create_owned / create by tasks: {{ each|join(', ') }}; lowest at {{ worst_at }}",
    },
    Target {
        name: "Local create_owned costs create at most 15% (>= 0.87x create) at 1 and 2 threads",
        measured: Figure::Throughput {
            store: "create-owned",
            op: "create",
            at: At::Every,
        },
        baseline: Baseline::Store("create"),
        comparison: Comparison::AtLeast,
        threshold: OWNED_CREATE,
        section: Section::OwnedLocal,
        detail: "create_owned / create by threads: {{ each|join(', ') }}; lowest at {{ worst_at }}",
    },
    Target {
        name: "A request through session-axum on Redis, sliding TTL on, at 64 connections >= 1.0x \
               tower-sessions with its Redis store",
        measured: Figure::Throughput {
            store: "session-axum",
            op: "GET with a session",
            at: At::One(AT),
        },
        baseline: Baseline::Store("tower-sessions"),
        comparison: Comparison::AtLeast,
        threshold: 1.0,
        section: Section::Layer,
        detail: "session-axum {{ ours.rate }}/s, tower-sessions {{ base.rate }}/s; p99 \
                 {{ ours.p99 }} against {{ base.p99 }} us; client CPU per request {{ ours.cpu }} \
                 against {{ base.cpu }} us",
    },
];

/// A target and what this run measured for it.
#[derive(Debug)]
pub(crate) struct Verdict {
    pub(crate) name: String,
    pub(crate) ratio: String,
    /// `Some(true)` met, `Some(false)` not met, `None` a decision rather
    /// than a threshold.
    pub(crate) met: Option<bool>,
    pub(crate) measured: String,
    pub(crate) section: Section,
}

/// The figures of one measured row, as the "measured" templates show them:
/// `rate`, `p99`, `cpu`, and `script_pct` and `get_pct`, the shares of loads
/// that ran the load script and sent a plain `GET` in percent (all script
/// when the row did not count them).
fn figures(row: &Row) -> Value {
    let share = row.script_share.unwrap_or(1.0);
    context! {
        rate => rate(row.m.ops_per_sec),
        p99 => us(row.m.p99_us),
        cpu => format!("{:.1}", row.m.cpu_us_per_op),
        script_pct => format!("{:.0}", share * 100.0),
        get_pct => format!("{:.0}", (1.0 - share) * 100.0),
        server => format!("{:.2}", row.m.server_cpu_us_per_op.unwrap_or(f64::NAN)),
        hits_pct => format!("{:.1}", row.hit_share.unwrap_or(f64::NAN) * 100.0),
    }
}

/// What the evaluator found for a target: the figure the comparison
/// checks, the ratio the report shows, and the named figures its templates
/// may use.
struct Evidence {
    value: f64,
    ratio: f64,
    vars: BTreeMap<&'static str, Value>,
}

impl Evidence {
    /// A figure that is its own ratio to the baseline.
    fn ratio(ratio: f64) -> Self {
        Self {
            value: ratio,
            ratio,
            vars: BTreeMap::new(),
        }
    }

    fn with(mut self, name: &'static str, value: Value) -> Self {
        self.vars.insert(name, value);
        self
    }
}

/// The throughput raw fred would have had sending the same mix of `GET`s
/// and load-script runs as our load did: time per operation weighted by
/// the mix.
fn same_commands_rate(get: f64, script: f64, script_share: f64) -> f64 {
    let share = script_share.clamp(0.0, 1.0);
    let time = share / script + (1.0 - share) / get;
    if time > 0.0 { 1.0 / time } else { 0.0 }
}

/// Our throughput over that of raw fred sending the same command mix,
/// paired by round.
fn same_commands_ratio(ours: &Row, get: &Row, script: &Row, share: f64) -> f64 {
    let paired = ours.rounds.len() == get.rounds.len() && ours.rounds.len() == script.rounds.len();
    if !paired || ours.rounds.is_empty() {
        return ours.m.ops_per_sec
            / same_commands_rate(get.m.ops_per_sec, script.m.ops_per_sec, share);
    }
    median(
        ours.rounds
            .iter()
            .zip(&get.rounds)
            .zip(&script.rounds)
            .map(|((o, g), x)| o.0 / same_commands_rate(g.0, x.0, share)),
    )
}

/// The best-round throughput ratio, unpaired.
fn best_tput(a: &Row, b: &Row) -> f64 {
    a.m.ops_per_sec / b.m.ops_per_sec
}

/// The server CPU per operation of `a` against `b`'s.
fn server_cpu(a: &Row, b: &Row) -> f64 {
    a.m.server_cpu_us_per_op.unwrap_or(f64::NAN) / b.m.server_cpu_us_per_op.unwrap_or(f64::NAN)
}

/// Finds the figures of `target` in `run`; `Ok(None)` when the run did not
/// measure them, an error when the row asks for a comparison that means
/// nothing (a mistake in [`TARGETS`], which the tests catch).
fn evidence(target: &Target, run: &Run) -> Result<Option<Evidence>> {
    let (rows, concurrency): (&[Row], &[usize]) = match target.section {
        Section::Redis => (run.redis_rows(), &crate::redis::CONCURRENCY),
        Section::Local => (run.local_rows(), &crate::local::THREADS),
        Section::Memory => (&[], &[]),
        Section::OwnedRedis => (run.owned_redis_rows(), &crate::owned::TASKS),
        Section::OwnedLocal => (run.owned_local_rows(), &crate::owned::THREADS),
        Section::Layer => (run.layer_rows(), &crate::layer::CONCURRENCY),
    };
    // The two figures that are not cells of a section's table.
    match (target.measured, target.baseline) {
        (Figure::BytesPerSession { store }, Baseline::Store(base)) => {
            return Ok(memory(run, store, base));
        }
        (Figure::SweepLoadP99, Baseline::NoSweep) => return Ok(sweep(run)),
        _ => {}
    }
    let (store, op, at, pair): (_, _, _, fn(&Row, &Row) -> f64) = match target.measured {
        Figure::Throughput { store, op, at } => (store, op, at, tput),
        Figure::BestThroughput { store, op, at } => (store, op, at, best_tput),
        Figure::P99 { store, op, at } => (store, op, at, p99),
        Figure::ServerCpu { store, op, at } => (store, op, at, server_cpu),
        Figure::BytesPerSession { .. } | Figure::SweepLoadP99 => bail!(
            "target {:?}: {:?} cannot be compared with {:?}",
            target.name,
            target.measured,
            target.baseline
        ),
    };
    let throughput = matches!(target.measured, Figure::Throughput { .. });
    match (at, target.baseline) {
        (At::One(at), Baseline::Store(base)) => {
            let (Some(ours), Some(base)) = (find(rows, store, op, at), find(rows, base, op, at))
            else {
                return Ok(None);
            };
            Ok(Some(
                Evidence::ratio(pair(ours, base))
                    .with("ours", figures(ours))
                    .with("base", figures(base)),
            ))
        }
        (
            At::One(at),
            Baseline::Local {
                store: base,
                threads,
            },
        ) if throughput => {
            // Another section, other rounds: the best rounds compared.
            let (Some(ours), Some(base)) = (
                find(rows, store, op, at),
                find(run.local_rows(), base, op, threads),
            ) else {
                return Ok(None);
            };
            Ok(Some(
                Evidence::ratio(best_tput(ours, base))
                    .with("ours", figures(ours))
                    .with("base", figures(base)),
            ))
        }
        (At::One(at), Baseline::SameCommandMix) if throughput => {
            let (Some(ours), Some(script), Some(get), Some(getex)) = (
                find(rows, store, op, at),
                find(rows, "raw-fred-load-script", op, at),
                find(rows, "raw-fred-get", op, at),
                find(rows, "raw-fred", op, at),
            ) else {
                return Ok(None);
            };
            let share = ours.script_share.unwrap_or(1.0);
            let mix = same_commands_rate(get.m.ops_per_sec, script.m.ops_per_sec, share);
            Ok(Some(
                Evidence::ratio(same_commands_ratio(ours, get, script, share))
                    .with("ours", figures(ours))
                    .with("script", figures(script))
                    .with("get", figures(get))
                    .with("mix_rate", Value::from(rate(mix)))
                    .with("vs_script", Value::from(times(tput(ours, script))))
                    .with("vs_getex", Value::from(times(tput(ours, getex))))
                    .with("vs_get", Value::from(times(tput(ours, get)))),
            ))
        }
        (At::One(at), Baseline::MostlySentCommand) => {
            // Both commands must have been measured to say which one ours
            // mostly sent.
            let (Some(ours), Some(script), Some(get)) = (
                find(rows, store, op, at),
                find(rows, "raw-fred-load-script", op, at),
                find(rows, "raw-fred-get", op, at),
            ) else {
                return Ok(None);
            };
            let mostly_script = ours.script_share.unwrap_or(1.0) >= 0.5;
            let (command, base) = if mostly_script {
                ("load script", script)
            } else {
                ("GET", get)
            };
            Ok(Some(
                Evidence::ratio(pair(ours, base))
                    .with("ours", figures(ours))
                    .with("base", figures(base))
                    .with("command", Value::from(command)),
            ))
        }
        (At::Every, Baseline::Store(base)) => {
            let cells: Vec<(usize, f64)> = concurrency
                .iter()
                .filter_map(|&at| {
                    let ours = find(rows, store, op, at)?;
                    Some((at, pair(ours, find(rows, base, op, at)?)))
                })
                .collect();
            Ok(every(target.comparison, &cells))
        }
        (at, baseline) => bail!(
            "target {:?}: {:?} at {at:?} cannot be compared with {baseline:?}",
            target.name,
            target.measured
        ),
    }
}

/// The figure of a target read at every concurrency: the worst cell for a
/// threshold, the geometric mean for a decision.
fn every(comparison: Comparison, cells: &[(usize, f64)]) -> Option<Evidence> {
    if cells.is_empty() {
        return None;
    }
    let each: Vec<String> = cells
        .iter()
        .map(|(at, r)| format!("{at}: {r:.2}x"))
        .collect();
    let evidence = match comparison {
        Comparison::Decide => {
            let logs: f64 = cells.iter().map(|(_, r)| r.ln()).sum();
            Evidence::ratio((logs / cells.len() as f64).exp())
        }
        // The first cell among equals is the one named.
        Comparison::AtLeast | Comparison::AtMost | Comparison::Below => {
            let worse = |r: f64, w: f64| {
                if comparison == Comparison::AtLeast {
                    r < w
                } else {
                    r > w
                }
            };
            let mut worst: Option<(usize, f64)> = None;
            for &(at, r) in cells {
                if worst.is_none_or(|(_, w)| worse(r, w)) {
                    worst = Some((at, r));
                }
            }
            let (at, r) = worst?;
            Evidence::ratio(r).with("worst_at", Value::from(at))
        }
    };
    Some(evidence.with("each", Value::from(each)))
}

/// Resident memory per session of `store` against that of `base`.
fn memory(run: &Run, store: &str, base: &str) -> Option<Evidence> {
    let (ours, base) = (run.bytes_per_session(store)?, run.bytes_per_session(base)?);
    let sessions = run.memory.first().map(|m| m.sessions).unwrap_or_default();
    Some(
        Evidence::ratio(ours / base)
            .with("sessions", Value::from(sessions))
            .with("ours", Value::from(bytes(ours)))
            .with("base", Value::from(bytes(base))),
    )
}

/// Load p99 during the sweep, against the loads without one.
fn sweep(run: &Run) -> Option<Evidence> {
    let loads = |m: &crate::harness::Measurement| {
        context! {
            p99 => us(m.p99_us),
            p999 => us(m.p999_us),
            max => us(m.max_us),
        }
    };
    let sweep = run.sweep.as_ref()?;
    let (during, base) = (&sweep.during, &sweep.baseline);
    Some(
        Evidence {
            value: during.p99_us,
            ratio: during.p99_us / base.p99_us,
            vars: BTreeMap::new(),
        }
        .with("expired", Value::from(sweep.expired))
        .with("sweep_ms", Value::from(format!("{:.0}", sweep.sweep_ms)))
        .with("during", loads(during))
        .with("base", loads(base))
        .with(
            "loads",
            Value::from(ratio(during.ops_per_sec, base.ops_per_sec)),
        ),
    )
}

/// Evaluates one target on `run`: `Ok(None)` when the run did not measure
/// what it needs, as when a section was skipped.
///
/// A row's templates see `ratio` (as shown), `threshold`, `decision`
/// (`above`, `below` or `within` `threshold` of 1) and the figures the
/// evaluator found: `ours` and `base` (a row's `rate`, `p99`, `cpu`,
/// `script_pct`, `get_pct`), `script`, `get`, `mix_rate`, `vs_script`,
/// `vs_getex`, `vs_get` and `command` for the Redis loads, `each` and `worst_at` at
/// every concurrency, `sessions` for memory, and `expired`, `sweep_ms`,
/// `during` and `loads` for the sweep.
pub(crate) fn evaluate(
    target: &Target,
    run: &Run,
    templates: &Templates,
) -> Result<Option<Verdict>> {
    let Some(evidence) = evidence(target, run)? else {
        return Ok(None);
    };
    let met = target.comparison.met(evidence.value, target.threshold);
    let decision = if evidence.value > 1.0 + target.threshold {
        "above"
    } else if evidence.value < 1.0 - target.threshold {
        "below"
    } else {
        "within"
    };
    let ratio = times(evidence.ratio);
    let vars = context! {
        ratio => &ratio,
        threshold => target.threshold,
        decision => decision,
        ..Value::from(evidence.vars)
    };
    Ok(Some(Verdict {
        name: templates.render_line(target.name, vars.clone())?,
        ratio,
        met,
        measured: templates.render_line(target.detail, vars)?,
        section: target.section,
    }))
}

/// The targets table of the report.
pub(crate) fn table(verdicts: &[Verdict]) -> String {
    let rows: Vec<Vec<String>> = verdicts
        .iter()
        .map(|verdict| {
            let status = match verdict.met {
                Some(true) => "met",
                Some(false) => "**not met**",
                None => "decided",
            };
            vec![
                verdict.name.clone(),
                verdict.ratio.clone(),
                status.to_owned(),
                verdict.measured.clone(),
            ]
        })
        .collect();
    markdown_table(&["target", "ratio", "status", "measured"], &rows)
}

/// What this run's figures say about the Redis targets that were missed:
/// the client CPU per operation of ours and the baselines, and what the
/// manager layer costs.
fn limits(run: &Run) -> Value {
    let redis = run.redis_rows();
    let cpu = |target: &str, op: &str| {
        find(redis, target, op, AT)
            .map(|row| format!("{:.1} us", row.m.cpu_us_per_op))
            .unwrap_or_else(|| "n/a".to_owned())
    };
    let ratio_of = |ours: Option<&Row>, base: Option<&Row>| match (ours, base) {
        (Some(ours), Some(base)) => times(tput(ours, base)),
        _ => "n/a".to_owned(),
    };
    // Our loads are compared with plain GET, the command most of them sent.
    let against = |op: &str, raw: &str| {
        context! {
            ours => cpu("ours", op),
            raw => cpu(raw, op),
            tower => cpu("tower-sessions-redis-store", op),
        }
    };
    context! {
        at => AT,
        load => against("load", "raw-fred-get"),
        create => against("create", "raw-fred"),
        update => against("update", "raw-fred"),
        direct => ratio_of(
            find(redis, "ours", "load", AT),
            find(redis, "ours-any-storage", "load", AT),
        ),
        one => ratio_of(find(redis, "ours", "load", 1), find(redis, "raw-fred-get", "load", 1)),
    }
}

/// `n` tasks or threads, in the singular for one.
fn count(n: usize, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// One storage of section 6, as the paragraph on missed targets reads it.
struct OwnedStorage<'a> {
    section: Section,
    /// As the paragraph names it.
    name: &'static str,
    rows: &'a [Row],
    concurrency: &'static [usize],
    /// What its concurrency counts: tasks or threads.
    unit: &'static str,
}

/// What this run's figures say about the section 6 targets in `missed`:
/// the CPU per operation of the new call and of its baseline at every
/// concurrency, and for the Redis create what its second command costs.
/// `None` when none of them was missed.
fn owned_limits(run: &Run, missed: &[&Target]) -> Option<Value> {
    let missed_op = |section: Section, op: &str| {
        missed.iter().any(|target| {
            target.section == section
                && matches!(target.measured, Figure::Throughput { op: measured, .. } if measured == op)
        })
    };
    let figure = |rows: &[Row], target: &str, op: &str, at: usize, pick: fn(&Row) -> f64| {
        find(rows, target, op, at)
            .map(|row| format!("{} us", us(pick(row))))
            .unwrap_or_else(|| "n/a".to_owned())
    };
    let cpu = |row: &Row| row.m.cpu_us_per_op;
    let storages = [
        OwnedStorage {
            section: Section::OwnedRedis,
            name: "Redis",
            rows: run.owned_redis_rows(),
            concurrency: &crate::owned::TASKS,
            unit: "task",
        },
        OwnedStorage {
            section: Section::OwnedLocal,
            name: "local storage",
            rows: run.owned_local_rows(),
            concurrency: &crate::owned::THREADS,
            unit: "thread",
        },
    ];
    // The new call and its baseline at every concurrency of a storage.
    let cells = |storage: &OwnedStorage<'_>, op: &str, ours, base| {
        storage
            .concurrency
            .iter()
            .map(|&at| {
                context! {
                    at => count(at, storage.unit),
                    ours => figure(storage.rows, ours, op, at, cpu),
                    base => figure(storage.rows, base, op, at, cpu),
                }
            })
            .collect::<Vec<_>>()
    };
    let mut modify = Vec::new();
    for storage in &storages {
        if missed_op(storage.section, "modify") {
            let cells = cells(storage, "modify", "modify", "get-update");
            modify.push(context! { storage => storage.name, cells });
        }
    }
    let redis = run.owned_redis_rows();
    let redis_create = missed_op(Section::OwnedRedis, "create").then(|| {
        let server = |row: &Row| row.m.server_cpu_us_per_op.unwrap_or(f64::NAN);
        let p50 = |row: &Row| row.m.p50_us;
        context! {
            at => count(AT, "task"),
            client_owned => figure(redis, "create-owned", "create", AT, cpu),
            client_plain => figure(redis, "create", "create", AT, cpu),
            server_owned => figure(redis, "create-owned", "create", AT, server),
            server_plain => figure(redis, "create", "create", AT, server),
            p50_owned => figure(redis, "create-owned", "create", 1, p50),
            p50_plain => figure(redis, "create", "create", 1, p50),
        }
    });
    let local_create = missed_op(Section::OwnedLocal, "create")
        .then(|| cells(&storages[1], "create", "create-owned", "create"));
    let any = !modify.is_empty() || redis_create.is_some() || local_create.is_some();
    any.then(|| {
        context! {
            modify => (!modify.is_empty()).then_some(modify),
            redis_create,
            local_create,
        }
    })
}

/// The targets section: every target met or not, and when a target was
/// missed, what limits it.
pub(crate) fn section(run: &Run, templates: &Templates) -> Result<String> {
    let mut verdicts = Vec::new();
    let mut owned_missed = Vec::new();
    for target in TARGETS {
        let Some(verdict) = evaluate(target, run, templates)? else {
            continue;
        };
        if verdict.met == Some(false)
            && matches!(target.section, Section::OwnedRedis | Section::OwnedLocal)
        {
            owned_missed.push(target);
        }
        verdicts.push(verdict);
    }
    let redis_missed = verdicts
        .iter()
        .any(|verdict| verdict.met == Some(false) && verdict.section == Section::Redis);
    templates.render(
        "targets.md",
        context! {
            table => table(&verdicts),
            limits => redis_missed.then(|| limits(run)),
            owned => owned_limits(run, &owned_missed),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Measurement;
    use crate::memory::SweepResult;
    use crate::redis::RedisResults;

    fn row(target: &str, op: &str, at: usize, ops_per_sec: f64, p99_us: f64) -> Row {
        Row {
            target: target.to_owned(),
            op: op.to_owned(),
            concurrency: at,
            m: Measurement {
                ops_per_sec,
                p99_us,
                ..Measurement::default()
            },
            script_share: None,
            hit_share: None,
            rounds: Vec::new(),
        }
    }

    fn redis_run(rows: Vec<Row>) -> Run {
        Run {
            redis: Some(RedisResults {
                redis_version: "7.0.15".to_owned(),
                value_bytes: 162,
                tower_value_bytes: 212,
                keyspace: 50_000,
                rows,
                refresh: None,
                cache_bytes_per_entry: None,
                instructions: None,
                event_memory: None,
            }),
            ..Run::default()
        }
    }

    /// The row of [`TARGETS`] whose name starts with `prefix`.
    fn target(prefix: &str) -> &'static Target {
        TARGETS
            .iter()
            .find(|target| target.name.starts_with(prefix))
            .expect("no such target")
    }

    fn verdict(prefix: &str, run: &Run) -> Option<Verdict> {
        let templates = Templates::new().expect("templates compile");
        evaluate(target(prefix), run, &templates).expect("the target evaluates")
    }

    #[test]
    fn a_ratio_over_its_threshold_is_met() {
        let run = Run {
            local: Some(vec![
                row("ours", "load", 2, 2_400_000.0, 1.56),
                row("tower-sessions-memory-store", "load", 2, 360_800.0, 17.7),
            ]),
            ..Run::default()
        };
        let verdict = verdict("Local load at 2 threads >= 2x", &run).expect("measured");
        assert_eq!(verdict.met, Some(true));
        assert_eq!(verdict.ratio, "6.65x");
        assert_eq!(verdict.measured, "ours 2.40M/s, MemoryStore 360.8k/s");
        assert_eq!(verdict.section, Section::Local);
    }

    #[test]
    fn a_ratio_under_its_threshold_is_missed() {
        let run = redis_run(vec![
            row("ours", "create", AT, 170_200.0, 696.0),
            row("raw-fred", "create", AT, 207_000.0, 627.0),
        ]);
        let throughput = verdict("Redis create (SET NX)", &run).expect("measured");
        assert_eq!(throughput.met, Some(false));
        assert_eq!(throughput.ratio, "0.82x");
        // The p99 of the same rows is within its 1.2x.
        let latency = verdict("Redis create p99", &run).expect("measured");
        assert_eq!(latency.met, Some(true));
        assert_eq!(latency.ratio, "1.11x");
        assert_eq!(latency.measured, "ours 696 us, raw fred 627 us");
    }

    #[test]
    fn a_missing_measurement_gives_no_verdict() {
        let templates = Templates::new().expect("templates compile");
        for target in TARGETS {
            let verdict = evaluate(target, &Run::default(), &templates).expect("evaluates");
            assert!(verdict.is_none(), "{} has a verdict", target.name);
        }
        // Our figure alone, without its baseline, is no verdict either.
        let run = redis_run(vec![row("ours", "create", AT, 170_200.0, 696.0)]);
        assert!(verdict("Redis create (SET NX)", &run).is_none());
    }

    #[test]
    fn every_concurrency_is_judged_by_its_worst_cell() {
        let mut rows = Vec::new();
        for (at, ours) in [
            (1, 10_800.0),
            (16, 94_000.0),
            (64, 196_000.0),
            (256, 206_000.0),
        ] {
            rows.push(row("ours", "create", at, ours, 0.0));
            rows.push(row(
                "tower-sessions-redis-store",
                "create",
                at,
                100_000.0,
                0.0,
            ));
        }
        // At one task both stores did about a tenth of the work: 1.08x.
        rows[1].m.ops_per_sec = 10_000.0;
        let verdict = verdict("Redis create >= 1.0x", &redis_run(rows)).expect("measured");
        assert_eq!(verdict.met, Some(false));
        assert_eq!(verdict.ratio, "0.94x");
        assert_eq!(
            verdict.measured,
            "by tasks: 1: 1.08x, 16: 0.94x, 64: 1.96x, 256: 2.06x; lowest at 16"
        );
    }

    #[test]
    fn our_load_is_compared_with_raw_fred_sending_our_command_mix() {
        let mut ours = row("ours", "load", AT, 202_700.0, 573.0);
        ours.script_share = Some(0.01);
        ours.m.cpu_us_per_op = 6.3;
        let run = redis_run(vec![
            ours,
            row("raw-fred", "load", AT, 169_800.0, 967.0),
            row("raw-fred-load-script", "load", AT, 150_000.0, 1_100.0),
            row("raw-fred-get", "load", AT, 283_300.0, 354.0),
        ]);
        // 1% script runs at 150.0k/s and 99% GET at 283.3k/s take as long as
        // 280.8k loads a second.
        let mix = verdict("Redis load at 64 tasks >= 0.90x", &run).expect("measured");
        assert_eq!(mix.met, Some(false));
        assert_eq!(mix.ratio, "0.72x");
        assert!(
            mix.measured.starts_with(
                "ours 202.7k/s; raw fred 280.8k/s for the same command mix (1% load script, \
                 which raw fred sends as the same EVALSHA, 99% GET); against the raw load script \
                 alone 1.35x, raw GET alone 0.72x, raw GETEX alone 1.19x"
            ),
            "{}",
            mix.measured
        );
        // Most loads sent GET, so the p99 is compared with raw GET's.
        let latency = verdict("Redis load p99", &run).expect("measured");
        assert_eq!(latency.ratio, "1.62x");
        assert_eq!(
            latency.measured,
            "ours 573 us; raw fred GET (the command ours mostly sent) 354 us"
        );
    }

    #[test]
    fn the_sweep_is_judged_by_its_p99_not_by_its_ratio() {
        let loads = |p99_us: f64| Measurement {
            ops_per_sec: 3_000_000.0,
            p99_us,
            ..Measurement::default()
        };
        let run = |during: f64| Run {
            sweep: Some(SweepResult {
                expired: 1_000_000,
                live: 10_000,
                removed: 1_000_000,
                sweep_ms: 1000.1,
                during: loads(during),
                baseline: loads(0.5),
            }),
            ..Run::default()
        };
        // Three times the p99 without a sweep is still far under 1 ms.
        let fast = verdict("Sweep", &run(1.5)).expect("measured");
        assert_eq!(fast.met, Some(true));
        assert_eq!(fast.ratio, "3.00x");
        assert_eq!(
            fast.name,
            "Sweep of 1000000 expired sessions keeps concurrent-load p99 under 1 ms"
        );
        let slow = verdict("Sweep", &run(1500.0)).expect("measured");
        assert_eq!(slow.met, Some(false));
    }

    #[test]
    fn the_pool_decision_follows_the_geometric_mean() {
        let mut rows = Vec::new();
        for (at, pool) in [(1, 94.0), (16, 68.0), (64, 100.0), (256, 101.0)] {
            rows.push(row("raw-fred", "load", at, 100.0, 0.0));
            rows.push(row("raw-fred-pool4", "load", at, pool, 0.0));
        }
        let verdict = verdict("One auto-pipelined client", &redis_run(rows)).expect("measured");
        assert_eq!(verdict.met, None);
        assert_eq!(verdict.ratio, "0.90x");
        assert_eq!(
            verdict.measured,
            "pool of 4 / one client, raw GETEX, by tasks: 1: 0.94x, 16: 0.68x, 64: 1.00x, \
             256: 1.01x; geometric mean 0.90x. Decision: one auto-pipelined client is faster \
             across the concurrencies: keep it"
        );
    }

    #[test]
    fn a_comparison_that_means_nothing_is_an_error() {
        let wrong = Target {
            name: "p99 against a command mix",
            measured: Figure::P99 {
                store: "ours",
                op: "load",
                at: At::One(AT),
            },
            baseline: Baseline::SameCommandMix,
            comparison: Comparison::AtMost,
            threshold: 1.2,
            section: Section::Redis,
            detail: "",
        };
        let templates = Templates::new().expect("templates compile");
        let error = evaluate(&wrong, &Run::default(), &templates).expect_err("rejected");
        assert!(error.to_string().contains("cannot be compared"), "{error}");
    }
}
