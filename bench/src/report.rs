//! `session-bench report`: turns the JSON files of one run into
//! `docs/benchmarks.md` and the plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

use crate::codec::CodecResult;
use crate::gateway::GatewayResults;
use crate::harness::{Measurement, Row, median, paired_ratio};
use crate::memory::{MemoryResult, SweepResult, VARIANTS};
use crate::redis::RedisResults;

mod plot;

/// Where to read and write.
pub(crate) struct Options {
    /// The directory of the run's JSON and CSV files.
    pub(crate) results: PathBuf,
    /// Where `benchmarks.md` and the plots go.
    pub(crate) docs: PathBuf,
    /// The workspace root (for `Cargo.lock`).
    pub(crate) root: PathBuf,
    /// The command that made the run, quoted in the report.
    pub(crate) command: String,
    /// How long the run took until the report, build included.
    pub(crate) wall_secs: Option<u64>,
    pub(crate) quick: bool,
}

/// A `redis-benchmark --csv` line.
#[derive(Clone, Debug)]
pub(crate) struct RedisBenchmark {
    pub(crate) clients: usize,
    pub(crate) pipeline: usize,
    pub(crate) test: String,
    pub(crate) rps: f64,
    pub(crate) p99_ms: f64,
}

/// Everything a run produced; a missing section is `None`.
pub(crate) struct Run {
    pub(crate) redis: Option<RedisResults>,
    pub(crate) redis_benchmark: Vec<RedisBenchmark>,
    pub(crate) local: Option<Vec<Row>>,
    pub(crate) memory: Vec<MemoryResult>,
    pub(crate) sweep: Option<SweepResult>,
    pub(crate) codec: Option<Vec<CodecResult>>,
    pub(crate) gateway: Vec<GatewayResults>,
    /// Why the gateway was not measured, when it was not.
    pub(crate) gateway_skipped: Option<String>,
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("cannot parse {}", path.display())
            })?))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Parses `redis-benchmark -q --csv` output.
fn parse_redis_benchmark(text: &str, clients: usize, pipeline: usize) -> Vec<RedisBenchmark> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
        // "p95_latency_ms","p99_latency_ms","max_latency_ms"
        if fields.len() < 7 || fields[0] == "test" {
            continue;
        }
        let number = |i: usize| fields[i].parse::<f64>().unwrap_or(f64::NAN);
        out.push(RedisBenchmark {
            clients,
            pipeline,
            test: fields[0].to_owned(),
            rps: number(1),
            p99_ms: number(6),
        });
    }
    out
}

impl Run {
    fn load(dir: &Path) -> Result<Self> {
        let mut redis_benchmark = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        entries.sort();
        for path in &entries {
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default();
            // redis-benchmark-c64-p16.csv
            let parsed = name
                .strip_prefix("redis-benchmark-c")
                .and_then(|rest| rest.strip_suffix(".csv"))
                .and_then(|rest| rest.split_once("-p"))
                .and_then(|(clients, pipeline)| {
                    Some((clients.parse().ok()?, pipeline.parse().ok()?))
                });
            if let Some((clients, pipeline)) = parsed {
                let text = std::fs::read_to_string(path)?;
                redis_benchmark.extend(parse_redis_benchmark(&text, clients, pipeline));
            }
        }
        let mut memory = Vec::new();
        for variant in VARIANTS {
            if let Some(result) = read_json(&dir.join(format!("memory-{variant}.json")))? {
                memory.push(result);
            }
        }
        let mut gateway = Vec::new();
        for storage in ["local", "redis"] {
            if let Some(result) = read_json(&dir.join(format!("gateway-{storage}.json")))? {
                gateway.push(result);
            }
        }
        let gateway_skipped = std::fs::read_to_string(dir.join("gateway-skipped.txt"))
            .ok()
            .map(|text| text.trim().to_owned());
        Ok(Self {
            redis: read_json(&dir.join("redis.json"))?,
            redis_benchmark,
            local: read_json(&dir.join("local.json"))?,
            memory,
            sweep: read_json(&dir.join("sweep.json"))?,
            codec: read_json(&dir.join("codec.json"))?,
            gateway,
            gateway_skipped,
        })
    }
}

/// Finds one measurement.
pub(crate) fn find<'a>(rows: &'a [Row], target: &str, op: &str, at: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|row| row.target == target && row.op == op && row.concurrency == at)
}

fn rate(ops: f64) -> String {
    if ops >= 1e6 {
        format!("{:.2}M", ops / 1e6)
    } else if ops >= 1e3 {
        format!("{:.1}k", ops / 1e3)
    } else {
        format!("{ops:.0}")
    }
}

fn us(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn ratio(ours: f64, base: f64) -> String {
    if base > 0.0 {
        times(ours / base)
    } else {
        "n/a".to_owned()
    }
}

/// Paired throughput ratio `a / b` (median over the rounds).
fn tput(a: &Row, b: &Row) -> f64 {
    paired_ratio(a, b, |round| round.0)
}

/// Paired p99 ratio `a / b` (median over the rounds).
fn p99(a: &Row, b: &Row) -> f64 {
    paired_ratio(a, b, |round| round.1)
}

fn times(r: f64) -> String {
    if !r.is_finite() {
        "n/a".to_owned()
    } else if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

fn bytes(n: f64) -> String {
    format!("{n:.0}")
}

/// Today's date (UTC) from the system clock, as YYYY-MM-DD.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The machine the run was on.
fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "unknown".to_owned());
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    vec![
        ("CPUs (nproc)".to_owned(), nproc),
        ("CPU model".to_owned(), model),
        ("memory".to_owned(), memory),
        ("kernel".to_owned(), kernel),
        ("compiler".to_owned(), rustc),
    ]
}

/// The versions of the crates compared, from `Cargo.lock`.
fn crate_versions(root: &Path) -> Vec<(String, String)> {
    const NAMES: [&str; 13] = [
        "session-core",
        "fred",
        "tokio",
        "tower-sessions-redis-store",
        "tower-sessions-memory-store",
        "tower-sessions-core",
        "moka",
        "dashmap",
        "bincode",
        "serde_json",
        "rmp-serde",
        "hdrhistogram",
        "reqwest",
    ];
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let mut found: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut name: Option<String> = None;
    for line in lock.lines() {
        if let Some(value) = line.strip_prefix("name = ") {
            name = Some(value.trim_matches('"').to_owned());
        } else if let Some(value) = line.strip_prefix("version = ") {
            let current = name.take().unwrap_or_default();
            if let Some(known) = NAMES.iter().find(|known| **known == current) {
                found
                    .entry(known)
                    .or_default()
                    .push(value.trim_matches('"').to_owned());
            }
        }
    }
    NAMES
        .iter()
        .filter_map(|name| {
            found
                .get(name)
                .map(|versions| ((*name).to_owned(), versions.join(", ")))
        })
        .collect()
}

/// A target of the issue and what this run measured for it.
pub(crate) struct Target {
    pub(crate) target: String,
    pub(crate) measured: String,
    pub(crate) ratio: String,
    /// `Some(true)` met, `Some(false)` not met, `None` a decision rather
    /// than a threshold.
    pub(crate) met: Option<bool>,
}

fn rows_of(run: &Run) -> (&[Row], &[Row]) {
    (
        run.redis.as_ref().map(|r| r.rows.as_slice()).unwrap_or(&[]),
        run.local.as_deref().unwrap_or(&[]),
    )
}

/// The throughput raw fred would have had sending the same mix of GET and
/// GETEX as our load did: time per operation weighted by the mix.
fn same_commands_rate(get: f64, getex: f64, getex_share: f64) -> f64 {
    let share = getex_share.clamp(0.0, 1.0);
    let time = share / getex + (1.0 - share) / get;
    if time > 0.0 { 1.0 / time } else { 0.0 }
}

/// Our throughput over that of raw fred sending the same command mix,
/// paired by round.
fn same_commands_ratio(ours: &Row, get: &Row, getex: &Row, share: f64) -> f64 {
    let paired = ours.rounds.len() == get.rounds.len() && ours.rounds.len() == getex.rounds.len();
    if !paired || ours.rounds.is_empty() {
        return ours.m.ops_per_sec
            / same_commands_rate(get.m.ops_per_sec, getex.m.ops_per_sec, share);
    }
    median(
        ours.rounds
            .iter()
            .zip(&get.rounds)
            .zip(&getex.rounds)
            .map(|((o, g), x)| o.0 / same_commands_rate(g.0, x.0, share)),
    )
}

fn targets(run: &Run) -> Vec<Target> {
    let (redis, local) = rows_of(run);
    let mut out = Vec::new();
    let at = 64;
    // 1. Load and create at 64 tasks against raw fred.
    if let (Some(ours), Some(getex), Some(get)) = (
        find(redis, "ours", "load", at),
        find(redis, "raw-fred", "load", at),
        find(redis, "raw-fred-get", "load", at),
    ) {
        let share = ours.getex_share.unwrap_or(1.0);
        let r = same_commands_ratio(ours, get, getex, share);
        out.push(Target {
            target: "Redis load at 64 tasks >= 0.90x raw fred sending the same commands".to_owned(),
            measured: format!(
                "ours {}/s; raw fred {}/s for the same command mix ({:.0}% GETEX, {:.0}% GET); \
                 against raw GETEX alone {}, raw GET alone {}; client CPU per load: ours {:.1} us, \
                 raw GET {:.1} us, raw GETEX {:.1} us",
                rate(ours.m.ops_per_sec),
                rate(same_commands_rate(
                    get.m.ops_per_sec,
                    getex.m.ops_per_sec,
                    share
                )),
                share * 100.0,
                (1.0 - share) * 100.0,
                times(tput(ours, getex)),
                times(tput(ours, get)),
                ours.m.cpu_us_per_op,
                get.m.cpu_us_per_op,
                getex.m.cpu_us_per_op,
            ),
            ratio: times(r),
            met: Some(r >= 0.90),
        });
        let base = if share >= 0.5 { getex } else { get };
        let r = p99(ours, base);
        out.push(Target {
            target: "Redis load p99 at 64 tasks <= 1.2x raw fred".to_owned(),
            measured: format!(
                "ours {} us; raw fred {} (the command ours mostly sent) {} us",
                us(ours.m.p99_us),
                if share >= 0.5 { "GETEX" } else { "GET" },
                us(base.m.p99_us)
            ),
            ratio: times(r),
            met: Some(r <= 1.2),
        });
    }
    if let (Some(ours), Some(raw)) = (
        find(redis, "ours", "create", at),
        find(redis, "raw-fred", "create", at),
    ) {
        out.push(Target {
            target: "Redis create (SET NX) at 64 tasks >= 0.90x raw fred".to_owned(),
            measured: format!(
                "ours {}/s, raw fred {}/s; client CPU per create: ours {:.1} us, raw fred {:.1} us",
                rate(ours.m.ops_per_sec),
                rate(raw.m.ops_per_sec),
                ours.m.cpu_us_per_op,
                raw.m.cpu_us_per_op,
            ),
            ratio: times(tput(ours, raw)),
            met: Some(tput(ours, raw) >= 0.90),
        });
        out.push(Target {
            target: "Redis create p99 at 64 tasks <= 1.2x raw fred".to_owned(),
            measured: format!(
                "ours {} us, raw fred {} us",
                us(ours.m.p99_us),
                us(raw.m.p99_us)
            ),
            ratio: times(p99(ours, raw)),
            met: Some(p99(ours, raw) <= 1.2),
        });
    }
    // 2. Create and update against tower-sessions at every concurrency.
    for (op, theirs) in [("create", "create"), ("update", "save")] {
        let mut worst: Option<(usize, f64)> = None;
        let mut each = Vec::new();
        for tasks in crate::redis::CONCURRENCY {
            if let (Some(ours), Some(tower)) = (
                find(redis, "ours", op, tasks),
                find(redis, "tower-sessions-redis-store", op, tasks),
            ) {
                let r = tput(ours, tower);
                each.push(format!("{tasks}: {r:.2}x"));
                if worst.is_none_or(|(_, w)| r < w) {
                    worst = Some((tasks, r));
                }
            }
        }
        if let Some((tasks, worst)) = worst {
            out.push(Target {
                target: format!(
                    "Redis {op} >= 1.0x tower-sessions-redis-store {theirs} at every concurrency"
                ),
                measured: format!("by tasks: {}; lowest at {tasks}", each.join(", ")),
                ratio: format!("{worst:.2}x"),
                met: Some(worst >= 1.0),
            });
        }
    }
    if let (Some(ours), Some(tower)) = (
        find(redis, "ours", "load", at),
        find(redis, "tower-sessions-redis-store", "load", at),
    ) {
        out.push(Target {
            target: "Redis load at 64 tasks >= 1.0x tower-sessions-redis-store load, \
                     keeping the sliding TTL"
                .to_owned(),
            measured: format!(
                "ours {}/s ({:.0}% of loads refreshed the TTL with GETEX), tower {}/s (plain GET, \
                 no refresh)",
                rate(ours.m.ops_per_sec),
                ours.getex_share.unwrap_or(1.0) * 100.0,
                rate(tower.m.ops_per_sec)
            ),
            ratio: times(tput(ours, tower)),
            met: Some(tput(ours, tower) >= 1.0),
        });
    }
    // 3. Local load at 2 threads.
    if let Some(ours) = find(local, "ours", "load", 2) {
        if let Some(memory) = find(local, "tower-sessions-memory-store", "load", 2) {
            out.push(Target {
                target: "Local load at 2 threads >= 2x tower-sessions MemoryStore".to_owned(),
                measured: format!(
                    "ours {}/s, MemoryStore {}/s",
                    rate(ours.m.ops_per_sec),
                    rate(memory.m.ops_per_sec)
                ),
                ratio: times(tput(ours, memory)),
                met: Some(tput(ours, memory) >= 2.0),
            });
        }
        if let Some(map) = find(local, "dashmap", "load", 2) {
            out.push(Target {
                target: "Local load at 2 threads >= 0.5x a bare DashMap".to_owned(),
                measured: format!(
                    "ours {}/s, DashMap {}/s",
                    rate(ours.m.ops_per_sec),
                    rate(map.m.ops_per_sec)
                ),
                ratio: times(tput(ours, map)),
                met: Some(tput(ours, map) >= 0.5),
            });
        }
    }
    // 4. Memory and the sweep.
    let per = |variant: &str| {
        run.memory
            .iter()
            .find(|m| m.variant == variant)
            .map(|m| m.bytes_per_session)
    };
    if let (Some(ours), Some(map)) = (per("ours"), per("dashmap")) {
        let sessions = run.memory.first().map(|m| m.sessions).unwrap_or_default();
        out.push(Target {
            target: "Resident memory per session <= 1.25x the bare map holding the same data"
                .to_owned(),
            measured: format!(
                "{sessions} sessions: ours {} B, DashMap {} B",
                bytes(ours),
                bytes(map)
            ),
            ratio: ratio(ours, map),
            met: Some(ours <= 1.25 * map),
        });
    }
    if let Some(sweep) = &run.sweep {
        out.push(Target {
            target: format!(
                "Sweep of {} expired sessions keeps concurrent-load p99 under 1 ms",
                sweep.expired
            ),
            measured: format!(
                "sweep {:.0} ms; load p99 {} us during it ({} us without); p99.9 {} us \
                 ({} us without), max {} us; {} of the loads/s",
                sweep.sweep_ms,
                us(sweep.during.p99_us),
                us(sweep.baseline.p99_us),
                us(sweep.during.p999_us),
                us(sweep.baseline.p999_us),
                us(sweep.during.max_us),
                ratio(sweep.during.ops_per_sec, sweep.baseline.ops_per_sec),
            ),
            ratio: ratio(sweep.during.p99_us, sweep.baseline.p99_us),
            met: Some(sweep.during.p99_us < 1000.0),
        });
    }
    // 5. Single client vs pool.
    let mut each = Vec::new();
    let mut log_sum = 0.0;
    for tasks in crate::redis::CONCURRENCY {
        if let (Some(single), Some(pool)) = (
            find(redis, "raw-fred", "load", tasks),
            find(redis, "raw-fred-pool4", "load", tasks),
        ) {
            let r = pool.m.ops_per_sec / single.m.ops_per_sec;
            log_sum += r.ln();
            each.push(format!("{tasks}: {r:.2}x"));
        }
    }
    if !each.is_empty() {
        let mean = (log_sum / each.len() as f64).exp();
        let decision = if mean > 1.05 {
            "a pool of 4 is faster across the concurrencies: worth offering"
        } else if mean < 0.95 {
            "one auto-pipelined client is faster across the concurrencies: keep it"
        } else {
            "no difference beyond 5% across the concurrencies: keep one auto-pipelined client \
             (one connection per node, simpler)"
        };
        out.push(Target {
            target: "One auto-pipelined client vs a pool of 4: decide by the figure".to_owned(),
            measured: format!(
                "pool of 4 / one client, raw GETEX, by tasks: {}; geometric mean {mean:.2}x. \
                 Decision: {decision}",
                each.join(", "),
            ),
            ratio: format!("{mean:.2}x"),
            met: None,
        });
    }
    out
}

/// What this run's figures say about the Redis targets that were missed.
fn limits(out: &mut String, run: &Run) {
    let (redis, _) = rows_of(run);
    let at = 64;
    let cpu = |target: &str, op: &str| {
        find(redis, target, op, at)
            .map(|row| format!("{:.1} us", row.m.cpu_us_per_op))
            .unwrap_or_else(|| "n/a".to_owned())
    };
    let direct = match (
        find(redis, "ours-storage-direct", "load", at),
        find(redis, "ours", "load", at),
    ) {
        (Some(direct), Some(ours)) => times(tput(ours, direct)),
        _ => "n/a".to_owned(),
    };
    let one = match (
        find(redis, "ours", "load", 1),
        find(redis, "raw-fred-get", "load", 1),
    ) {
        (Some(ours), Some(get)) => times(tput(ours, get)),
        _ => "n/a".to_owned(),
    };
    let _ = writeln!(
        out,
        "**What limits the Redis targets missed here.** With 16 tasks and more, the client \
         process and `redis-server` compete for the machine's 2 cores, so throughput follows the \
         client's CPU time per operation. At {at} tasks, client CPU per operation: load ours {} \
         against raw fred GET {} and tower-sessions {}; create ours {} against raw fred {} and \
         tower-sessions {}; update ours {} against raw fred {} and tower-sessions {}. The \
         difference is the library's own work per call: the manager layer (it boxes each call's \
         future, about 7 KB, one fred command future; in this run the manager's loads reached \
         {direct} of the throughput of `RedisStorage` called directly), building the key, the \
         refresh-window bookkeeping, encoding or decoding the whole `Session` and allocating it \
         (tower-sessions decodes into a map too; raw fred does neither), and for create building \
         a new session (id, timestamps, metadata map) before encoding it. At 1 task, where latency rather than CPU sets the pace, our load ran at \
         {one} of raw fred GET. On this shared machine the Redis ratios above 1 task also move by 10-25% \
         from run to run, so a miss by a few percent is within the noise.\n",
        cpu("ours", "load"),
        cpu("raw-fred-get", "load"),
        cpu("tower-sessions-redis-store", "load"),
        cpu("ours", "create"),
        cpu("raw-fred", "create"),
        cpu("tower-sessions-redis-store", "create"),
        cpu("ours", "update"),
        cpu("raw-fred", "update"),
        cpu("tower-sessions-redis-store", "update"),
    );
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    // Text columns align left, figures right.
    const TEXT: [&str; 10] = [
        "item", "value", "store", "target", "status", "measured", "codec", "shape", "loads",
        "storage",
    ];
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        header
            .iter()
            .map(|name| if TEXT.contains(name) { "---" } else { "---:" })
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.push('\n');
}

fn redis_section(out: &mut String, run: &Run) {
    let _ = writeln!(out, "## 1. Redis path\n");
    let Some(redis) = &run.redis else {
        let _ = writeln!(out, "Not measured in this run.\n");
        return;
    };
    let _ = writeln!(
        out,
        "One `Manager::with_storage` over `RedisStorage` shared by all tasks, on one \
         auto-pipelined fred client, against the Redis server the run started (redis-server {}, \
         persistence off, on the same machine). {} sessions per store are loaded and updated \
         at random; create makes new ones, delete removes what create made. Our stored value \
         is {} bytes (4-byte header + bincode); tower-sessions stores the same data in {} bytes \
         of MessagePack. The baselines use the same fred client and connection:\n\n\
         - **raw-fred**: the same commands (`GETEX key PX ttl`, `SET NX PX`, `SET XX PX`, `DEL`) \
         with the same value bytes, no encoding, no decoding: the floor for any library. fred \
         has no typed `GETEX`; as a custom command it is flushed to the socket on its own (a \
         write call per command), so it costs more client CPU than a pipelined `GET`.\n\
         - **raw-fred-get**: plain `GET`, for reference (no TTL refresh).\n\
         - **raw-fred-pool4**: a fred pool of 4 clients sending the raw `GETEX`.\n\
         - **ours-storage-direct**: `RedisStorage::load` called without the manager (no boxed \
         future), to show what the manager layer costs.\n\
         - **tower-sessions-redis-store**: its `load` (plain `GET`, never refreshes the TTL), \
         `save` (`SET XX EXAT`), `create` (`SET NX EXAT`) and `delete`.\n\n\
         The mix is 90% load, 5% update, 4% create and 1% delete (of a session the task \
         created); raw fred's mix loads with `GETEX`. \"getex\" is the share of our loads that \
         refreshed the TTL with `GETEX` (the rest were plain `GET`s inside the refresh window), \
         counted by the server (`INFO commandstats`). CPU columns: the benchmark process's CPU \
         time (all threads, the Redis client's included) and the server's (`INFO cpu`) per \
         operation, warmup included: steadier than throughput when other work shares the \
         machine.\n",
        redis.redis_version, redis.keyspace, redis.value_bytes, redis.tower_value_bytes
    );
    let rows = &redis.rows;
    for op in ["load", "update", "create", "delete", "mix"] {
        let _ = writeln!(out, "### {op}\n");
        let mut table_rows = Vec::new();
        for tasks in crate::redis::CONCURRENCY {
            let raw = find(rows, "raw-fred", op, tasks);
            let tower = find(rows, "tower-sessions-redis-store", op, tasks);
            for row in rows.iter().filter(|r| r.op == op && r.concurrency == tasks) {
                let m = &row.m;
                let vs = |base: Option<&Row>| match base {
                    Some(base) if !std::ptr::eq(base, row) => times(tput(row, base)),
                    _ => String::new(),
                };
                let vs_p99 = |base: Option<&Row>| match base {
                    Some(base) if !std::ptr::eq(base, row) => times(p99(row, base)),
                    _ => String::new(),
                };
                let mut target = if row.target == "ours" {
                    "**ours**".to_owned()
                } else {
                    row.target.clone()
                };
                if let Some(share) = row.getex_share {
                    let _ = write!(target, " (getex {:.0}%)", share * 100.0);
                }
                table_rows.push(vec![
                    tasks.to_string(),
                    target,
                    rate(m.ops_per_sec),
                    us(m.p50_us),
                    us(m.p99_us),
                    us(m.p999_us),
                    format!("{:.1}", m.cpu_us_per_op),
                    m.server_cpu_us_per_op
                        .map(|cpu| format!("{cpu:.1}"))
                        .unwrap_or_default(),
                    vs(raw),
                    vs_p99(raw),
                    if row.target == "ours" {
                        vs(tower)
                    } else {
                        String::new()
                    },
                ]);
            }
        }
        table(
            out,
            &[
                "tasks",
                "store",
                "ops/s",
                "p50 us",
                "p99 us",
                "p99.9 us",
                "client CPU us/op",
                "server CPU us/op",
                "ops/s vs raw fred",
                "p99 vs raw fred",
                "ops/s vs tower-sessions",
            ],
            &table_rows,
        );
    }

    let _ = writeln!(out, "### redis-benchmark: the server's ceiling\n");
    if run.redis_benchmark.is_empty() {
        let _ = writeln!(out, "Not measured in this run.\n");
        return;
    }
    let _ = writeln!(
        out,
        "`redis-benchmark -t get,set -c N -n ... -r {} -d {} -q --csv`, without and with `-P 16` \
         (16 commands pipelined per client: the server's ceiling here), against the same \
         server. The last columns put our load and create next to it.\n",
        redis.keyspace, redis.value_bytes
    );
    let mut table_rows = Vec::new();
    for tasks in crate::redis::CONCURRENCY {
        let find_rb = |test: &str, pipeline: usize| {
            run.redis_benchmark
                .iter()
                .find(|r| r.clients == tasks && r.pipeline == pipeline && r.test == test)
        };
        let cell = |r: Option<&RedisBenchmark>| r.map(|r| rate(r.rps)).unwrap_or_default();
        let p99 = |r: Option<&RedisBenchmark>| r.map(|r| us(r.p99_ms * 1000.0)).unwrap_or_default();
        let ours_load = find(rows, "ours", "load", tasks);
        let ours_create = find(rows, "ours", "create", tasks);
        table_rows.push(vec![
            tasks.to_string(),
            cell(find_rb("GET", 1)),
            p99(find_rb("GET", 1)),
            cell(find_rb("SET", 1)),
            cell(find_rb("GET", 16)),
            cell(find_rb("SET", 16)),
            match (ours_load, find_rb("GET", 1)) {
                (Some(ours), Some(rb)) => ratio(ours.m.ops_per_sec, rb.rps),
                _ => String::new(),
            },
            match (ours_create, find_rb("SET", 1)) {
                (Some(ours), Some(rb)) => ratio(ours.m.ops_per_sec, rb.rps),
                _ => String::new(),
            },
        ]);
    }
    table(
        out,
        &[
            "clients",
            "GET/s",
            "GET p99 us",
            "SET/s",
            "GET/s -P 16",
            "SET/s -P 16",
            "our load vs GET",
            "our create vs SET",
        ],
        &table_rows,
    );
    let _ = writeln!(
        out,
        "redis-benchmark opens one connection per client and waits for each reply (without \
         `-P`), while fred pipelines every task's commands over one connection, so above one \
         client our figures can exceed its non-pipelined ones; `-P 16` is the ceiling neither \
         can pass.\n\n![Redis: throughput and p99 against concurrency](bench-redis.svg)\n"
    );
}

fn local_section(out: &mut String, run: &Run) {
    let _ = writeln!(out, "## 2. Local path\n");
    let Some(rows) = &run.local else {
        let _ = writeln!(out, "Not measured in this run.\n");
        return;
    };
    let _ = writeln!(
        out,
        "A Tokio runtime of 1 or 2 worker threads, one task per thread, each store prefilled \
         with the same sessions. **ours**: `Manager::new` (local storage: a 256-shard DashMap \
         with a sliding deadline per entry). **dashmap**: a bare `DashMap<SessionId, \
         Arc<Session>>`, no expiry: the floor. **moka**: `moka::future::Cache` with \
         `time_to_idle`. **tower-sessions-memory-store**: `MemoryStore`, a `HashMap` behind one \
         async mutex, whose `load` returns a deep copy of the record. An update writes back a \
         modified copy of a session (ours and the map only if it is still there; moka and \
         MemoryStore unconditionally). Creates make a random UUID v4 per session in every \
         store. Create runs stop after 1,000,000 sessions (100,000 in a quick run) and delete \
         runs when create's sessions are gone, both without warmup. Latency is sampled (one \
         operation in 32). CPU ns/op is the process's CPU time \
         per operation (all threads), which does not depend on how much of the machine the \
         run got.\n"
    );
    for op in ["load", "update", "create", "delete", "mix"] {
        let _ = writeln!(out, "### {op}\n");
        let mut table_rows = Vec::new();
        for threads in crate::local::THREADS {
            let map = find(rows, "dashmap", op, threads);
            let ours = find(rows, "ours", op, threads);
            for row in rows
                .iter()
                .filter(|r| r.op == op && r.concurrency == threads)
            {
                let m = &row.m;
                let is_ours = row.target == "ours";
                table_rows.push(vec![
                    threads.to_string(),
                    if is_ours {
                        "**ours**".to_owned()
                    } else {
                        row.target.clone()
                    },
                    rate(m.ops_per_sec),
                    us(m.p50_us),
                    us(m.p99_us),
                    format!("{:.0}", m.cpu_us_per_op * 1000.0),
                    map.map(|map| times(tput(row, map))).unwrap_or_default(),
                    match ours {
                        Some(ours) if !is_ours => times(tput(ours, row)),
                        _ => String::new(),
                    },
                ]);
            }
        }
        table(
            out,
            &[
                "threads",
                "store",
                "ops/s",
                "p50 us",
                "p99 us",
                "CPU ns/op",
                "ops/s vs dashmap",
                "ours vs this store",
            ],
            &table_rows,
        );
    }
    let _ = writeln!(
        out,
        "![Local: throughput by operation at 1 and 2 threads](bench-local.svg)\n"
    );
}

fn memory_section(out: &mut String, run: &Run) {
    let _ = writeln!(out, "## 3. Scale and memory\n");
    if run.memory.is_empty() {
        let _ = writeln!(out, "Memory not measured in this run.\n");
    } else {
        let map = run
            .memory
            .iter()
            .find(|m| m.variant == "dashmap")
            .map(|m| m.bytes_per_session);
        let sessions = run.memory[0].sessions;
        let _ = writeln!(
            out,
            "Resident set growth (from `/proc/self/statm`) per session, after inserting \
             {sessions} sessions of the typical shape (UUID id, type, two timestamps, four \
             metadata pairs of 14-27 bytes), each store in a fresh process of its own, all from \
             the same seed. MemoryStore holds the same data in its own model (a map of JSON \
             values).\n"
        );
        let rows: Vec<Vec<String>> = run
            .memory
            .iter()
            .map(|m| {
                vec![
                    if m.variant == "ours" {
                        "**ours**".to_owned()
                    } else {
                        m.variant.clone()
                    },
                    bytes(m.bytes_per_session),
                    map.map(|map| ratio(m.bytes_per_session, map))
                        .unwrap_or_default(),
                    format!("{:.0}", m.rss_after as f64 / 1024.0 / 1024.0),
                ]
            })
            .collect();
        table(
            out,
            &[
                "store",
                "bytes per session",
                "vs dashmap",
                "RSS after (MiB)",
            ],
            &rows,
        );
    }
    let _ = writeln!(out, "### The sweep\n");
    match &run.sweep {
        None => {
            let _ = writeln!(out, "Not measured in this run.\n");
        }
        Some(sweep) => {
            let _ = writeln!(
                out,
                "A local store with {} sessions whose 1 ms TTL has passed and {} live ones. One \
                 thread loads random live sessions through the manager, timing each load, while \
                 `Manager::cleanup_expired` removes the expired ones (on Tokio's blocking pool: \
                 it finds them under read locks, then removes each under its own short \
                 write-lock hold and frees it after the lock is released). The baseline is the same loads for 500 ms without a sweep, in \
                 the same process just before.\n",
                sweep.expired, sweep.live
            );
            let row = |name: &str, m: &Measurement| {
                vec![
                    name.to_owned(),
                    m.ops.to_string(),
                    rate(m.ops_per_sec),
                    us(m.p50_us),
                    us(m.p99_us),
                    us(m.p999_us),
                    us(m.max_us),
                ]
            };
            table(
                out,
                &[
                    "loads", "count", "loads/s", "p50 us", "p99 us", "p99.9 us", "max us",
                ],
                &[
                    row("during the sweep", &sweep.during),
                    row("without a sweep", &sweep.baseline),
                ],
            );
            let _ = writeln!(
                out,
                "The sweep removed {} sessions in {:.1} ms ({:.0} ns per session). During it, \
                 load p99 was {} and p99.9 {} the baseline's, and the loading thread completed \
                 {} of the loads per second it completes without a sweep (the sweep takes the \
                 other core). A load waits at most for one removal, never for a shard: an \
                 earlier sweep that removed a shard's expired sessions under one write-lock \
                 hold, freeing them there, held each lock about 5 ms in this test.\n",
                sweep.removed,
                sweep.sweep_ms,
                sweep.sweep_ms * 1e6 / sweep.removed.max(1) as f64,
                ratio(sweep.during.p99_us, sweep.baseline.p99_us),
                ratio(sweep.during.p999_us, sweep.baseline.p999_us),
                ratio(sweep.during.ops_per_sec, sweep.baseline.ops_per_sec),
            );
        }
    }
}

fn codec_section(out: &mut String, run: &Run) {
    let _ = writeln!(out, "## 4. Codec\n");
    let Some(results) = &run.codec else {
        let _ = writeln!(out, "Not measured in this run.\n");
        return;
    };
    let _ = writeln!(
        out,
        "One encode plus one decode of a whole session, single thread. Small: the typical \
         shape. Large: plus about 4 KiB of user data (a struct of strings) set with the same \
         codec. Ours include the 4-byte format header; user data is stored as bytes, so JSON \
         writes it as an array of numbers. The baseline is MessagePack (`rmp-serde`, what \
         tower-sessions-redis-store stores) on the same `Session`.\n"
    );
    let mut rows = Vec::new();
    for shape in ["small", "large"] {
        let base = results
            .iter()
            .find(|r| r.shape == shape && r.codec == "messagepack");
        for r in results.iter().filter(|r| r.shape == shape) {
            rows.push(vec![
                shape.to_owned(),
                r.codec.clone(),
                r.bytes.to_string(),
                format!("{:.0}", r.encode_decode_ns),
                base.map(|b| ratio(r.bytes as f64, b.bytes as f64))
                    .unwrap_or_default(),
                base.map(|b| ratio(r.encode_decode_ns, b.encode_decode_ns))
                    .unwrap_or_default(),
            ]);
        }
    }
    table(
        out,
        &[
            "shape",
            "codec",
            "bytes",
            "encode+decode ns",
            "bytes vs messagepack",
            "time vs messagepack",
        ],
        &rows,
    );
}

fn gateway_section(out: &mut String, run: &Run) {
    let _ = writeln!(out, "## 5. The gateway\n");
    if run.gateway.is_empty() {
        let reason = run
            .gateway_skipped
            .clone()
            .unwrap_or_else(|| "the gateway was not run".to_owned());
        let _ = writeln!(out, "Not measured yet: {reason}.\n");
        return;
    }
    let _ = writeln!(
        out,
        "`tools/call counter` (a load and an update of the session per call) through one \
         `session-gateway` replica, over HTTP/1.1 keep-alive connections, each client on its own \
         MCP session; the replica runs once on local storage and once on the run's Redis \
         server. The load generator, the replica and Redis share the machine's cores.\n"
    );
    let local = run.gateway.iter().find(|g| g.storage == "local");
    let mut rows = Vec::new();
    for result in &run.gateway {
        for row in &result.rows {
            let base = local.and_then(|l| l.rows.iter().find(|r| r.concurrency == row.concurrency));
            rows.push(vec![
                row.concurrency.to_string(),
                result.storage.clone(),
                rate(row.m.ops_per_sec),
                us(row.m.p50_us),
                us(row.m.p99_us),
                base.map(|b| ratio(row.m.ops_per_sec, b.m.ops_per_sec))
                    .unwrap_or_default(),
                base.map(|b| ratio(row.m.p99_us, b.m.p99_us))
                    .unwrap_or_default(),
            ]);
        }
    }
    rows.sort_by_key(|row| row[0].parse::<usize>().unwrap_or_default());
    let slow = run
        .gateway
        .iter()
        .flat_map(|g| g.rows.iter())
        .any(|row| row.m.p50_us >= 30_000.0);
    table(
        out,
        &[
            "clients",
            "storage",
            "calls/s",
            "p50 us",
            "p99 us",
            "calls/s vs local",
            "p99 vs local",
        ],
        &rows,
    );
    if slow {
        let _ = writeln!(
            out,
            "A median near 40 ms on keep-alive connections is the signature of Nagle's algorithm \
             meeting delayed ACKs: the replica writes each streamed response in several small \
             segments and its sockets do not set `TCP_NODELAY`. It hides what the session store \
             costs, so the local and Redis figures above are not yet comparable.\n"
        );
    }
}

/// Writes `benchmarks.md` and the plots.
pub(crate) fn write(options: &Options) -> Result<()> {
    let run = Run::load(&options.results)?;
    let timing = crate::harness::Timing::new(options.quick);
    std::fs::create_dir_all(&options.docs)?;
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    if options.quick {
        let _ = writeln!(
            out,
            "> **Quick smoke run** (0.3 s per measurement, smaller data sets): these figures \
             only show that the suite runs. Run `cargo xtask bench` for real figures.\n"
        );
    }
    let _ = writeln!(
        out,
        "Written by `{}` on {} (UTC){}; do not edit by hand, rerun it. Every figure of ours is \
         shown next to a baseline measured in the same run, on the same machine, data and \
         client settings, and as a ratio to it (\"0.97x\" = 97% of the baseline; for latency, \
         lower is better). The machine is small and shared, so absolute figures move from run to \
         run; the ratios are what to read: each is the median of the ratios of the rounds, which \
         measure the two stores seconds apart (the ops/s columns show the best round). Each \
         measurement runs {:.2} s after a {:.2} s warmup, \
         {} (the stores interleaved, each round starting at another store; the round with the \
         highest throughput is kept, since noise only ever slows a run down); latency comes from HDR histograms (1% resolution). The \
         runs use fixed seeds.\n",
        options.command,
        today(),
        options
            .wall_secs
            .map(|secs| format!(", in {}m{:02}s including the build", secs / 60, secs % 60))
            .unwrap_or_default(),
        timing.measure.as_secs_f64(),
        timing.warmup.as_secs_f64(),
        if timing.rounds == 1 {
            "once".to_owned()
        } else {
            format!("{} times", timing.rounds)
        },
    );
    let _ = writeln!(out, "## Machine and versions\n");
    let mut rows: Vec<Vec<String>> = machine().into_iter().map(|(k, v)| vec![k, v]).collect();
    if let Some(redis) = &run.redis {
        rows.push(vec!["redis-server".to_owned(), redis.redis_version.clone()]);
    }
    let loadavg = |name: &str| {
        std::fs::read_to_string(options.results.join(name))
            .ok()
            .and_then(|text| text.split_whitespace().next().map(str::to_owned))
    };
    if let (Some(start), Some(end)) = (loadavg("loadavg-start.txt"), loadavg("loadavg-end.txt")) {
        rows.push(vec![
            "load average (1 min)".to_owned(),
            format!(
                "{start} when the run started, {end} when it ended (other work shared the \
                 machine when these exceed the CPU count)"
            ),
        ]);
    }
    rows.extend(
        crate_versions(&options.root)
            .into_iter()
            .map(|(name, version)| vec![format!("`{name}`"), version]),
    );
    table(&mut out, &["item", "value"], &rows);

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(
        out,
        "The targets of the benchmark issue, each against its baseline from this run.\n"
    );
    let targets = targets(&run);
    let redis_missed = targets
        .iter()
        .any(|t| t.met == Some(false) && t.target.starts_with("Redis"));
    let target_rows: Vec<Vec<String>> = targets
        .into_iter()
        .map(|t| {
            vec![
                t.target,
                t.ratio,
                match t.met {
                    Some(true) => "met".to_owned(),
                    Some(false) => "**not met**".to_owned(),
                    None => "decided".to_owned(),
                },
                t.measured,
            ]
        })
        .collect();
    table(
        &mut out,
        &["target", "ratio", "status", "measured"],
        &target_rows,
    );
    if redis_missed {
        limits(&mut out, &run);
    }

    redis_section(&mut out, &run);
    local_section(&mut out, &run);
    memory_section(&mut out, &run);
    codec_section(&mut out, &run);
    gateway_section(&mut out, &run);

    let path = options.docs.join("benchmarks.md");
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("report: wrote {}", path.display());
    if let Some(redis) = &run.redis {
        let svg = options.docs.join("bench-redis.svg");
        plot::redis(&svg, &redis.rows, &run.redis_benchmark)?;
        eprintln!("report: wrote {}", svg.display());
    }
    if let Some(local) = &run.local {
        let svg = options.docs.join("bench-local.svg");
        plot::local(&svg, local)?;
        eprintln!("report: wrote {}", svg.display());
    }
    Ok(())
}
