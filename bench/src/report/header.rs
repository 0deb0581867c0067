//! The report's opening: the title, how the run was made and how to read
//! it, and the machine and crate versions it ran on.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use minijinja::context;

use super::Run;
use super::format::table;
use super::templates::Templates;
use crate::harness::Timing;

/// What the report says about the run beyond its results: how it was
/// started and where. [`About::gather`] reads it from the system; tests
/// fix it, so that a report renders the same on any machine and day.
pub(crate) struct About {
    /// The command that made the run, quoted in the report.
    pub(crate) command: String,
    /// The day of the report, YYYY-MM-DD (UTC).
    pub(crate) date: String,
    /// How long the run took until the report, build included.
    pub(crate) wall_secs: Option<u64>,
    pub(crate) quick: bool,
    /// The machine: CPUs, model, memory, kernel, compiler.
    pub(crate) machine: Vec<(String, String)>,
    /// The versions of the crates compared, from `Cargo.lock`.
    pub(crate) versions: Vec<(String, String)>,
}

impl About {
    /// Reads the date, the machine and the crate versions from this system
    /// and the workspace at `root`.
    pub(crate) fn gather(
        command: String,
        wall_secs: Option<u64>,
        quick: bool,
        root: &Path,
    ) -> Self {
        Self {
            command,
            date: today(),
            wall_secs,
            quick,
            machine: machine(),
            versions: crate_versions(root),
        }
    }
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

/// The title, the reading guide and the machine table.
pub(crate) fn section(run: &Run, about: &About, templates: &Templates) -> Result<String> {
    let timing = Timing::new(about.quick);
    let mut rows: Vec<Vec<String>> = about
        .machine
        .iter()
        .map(|(item, value)| vec![item.clone(), value.clone()])
        .collect();
    if let Some(redis) = &run.redis {
        rows.push(vec!["redis-server".to_owned(), redis.redis_version.clone()]);
    }
    if let Some((start, end)) = &run.loadavg {
        let value = templates.render("loadavg.md", context! { start, end })?;
        rows.push(vec![
            "load average (1 min)".to_owned(),
            value.trim_end().to_owned(),
        ]);
    }
    rows.extend(
        about
            .versions
            .iter()
            .map(|(name, version)| vec![format!("`{name}`"), version.clone()]),
    );
    templates.render(
        "header.md",
        context! {
            quick => about.quick,
            command => &about.command,
            date => &about.date,
            wall => about.wall_secs.map(|secs| format!("{}m{:02}s", secs / 60, secs % 60)),
            measure_secs => format!("{:.2}", timing.measure.as_secs_f64()),
            warmup_secs => format!("{:.2}", timing.warmup.as_secs_f64()),
            rounds => timing.rounds,
            machine => table(&["item", "value"], &rows),
        },
    )
}
