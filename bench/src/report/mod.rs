//! `session-bench report`: turns the raw results of one run into
//! `docs/benchmarks.md` and the plots.
//!
//! The results stay in the run's results directory (see `results`), so
//! the report can be rendered again from them without measuring anything:
//! `session-bench report --results DIR ...`.
//!
//! Layout, one file per part of the report in the order it appears:
//!
//! - `header`: the title, how to read the figures, the machine and versions;
//! - `targets`: the targets as one table of rows and one evaluator;
//! - `redis`, `local`, `memory`, `codec`, `gateway`, `owned`, `layer`:
//!   sections 1 to 7;
//! - `plot`: the two SVG plots.
//!
//! Beside them, `results` reads a run's files, `format` writes figures and
//! tables, and `templates` holds the prose: each part's sentences are a
//! Markdown template under `templates/`, and the Rust files only compute
//! the figures and tables that fill it.

use std::path::PathBuf;

use anyhow::{Context, Result};

mod codec;
mod format;
mod gateway;
mod header;
mod layer;
mod local;
mod memory;
mod owned;
mod plot;
mod redis;
mod results;
mod targets;
mod templates;

use results::Run;

use header::About;
use templates::Templates;

/// The operations of the Redis and local sections, in table order.
const OPS: [&str; 5] = ["load", "update", "create", "delete", "mix"];

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

/// The whole report: every part rendered in order, a blank line after
/// each.
fn render(run: &Run, about: &About) -> Result<String> {
    let templates = Templates::new()?;
    let parts = [
        header::section(run, about, &templates)?,
        targets::section(run, &templates)?,
        redis::section(run, &templates)?,
        local::section(run, &templates)?,
        memory::section(run, &templates)?,
        codec::section(run, &templates)?,
        gateway::section(run, &templates)?,
        owned::section(run, &templates)?,
        layer::section(run, &templates)?,
    ];
    let mut out = String::new();
    for part in parts {
        out.push_str(&part);
        out.push('\n');
    }
    Ok(out)
}

/// Writes `benchmarks.md` and the plots.
pub(crate) fn write(options: &Options) -> Result<()> {
    let run = Run::load(&options.results)?;
    let about = About::gather(
        options.command.clone(),
        options.wall_secs,
        options.quick,
        &options.root,
    );
    std::fs::create_dir_all(&options.docs)?;
    let path = options.docs.join("benchmarks.md");
    std::fs::write(&path, render(&run, &about)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The machine, crate versions and date the fixture's reports were
    /// written with, so that they render the same anywhere.
    fn about(quick: bool) -> About {
        let pairs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(item, value)| ((*item).to_owned(), (*value).to_owned()))
                .collect()
        };
        About {
            command: format!("cargo xtask bench{}", if quick { " --quick" } else { "" }),
            date: "2026-12-02".to_owned(),
            wall_secs: Some(419),
            quick,
            machine: pairs(&[
                ("CPUs (nproc)", "2"),
                ("CPU model", "AMD EPYC"),
                ("memory", "23.5 GiB"),
                ("kernel", "6.18.44-fc-v1045"),
                ("compiler", "rustc 1.95.0 (59807616e 2026-04-14)"),
            ]),
            versions: pairs(&[
                ("session-core", "0.1.0"),
                ("fred", "10.1.0"),
                ("tokio", "1.54.1"),
                ("tower-sessions-redis-store", "0.16.0"),
                ("tower-sessions-memory-store", "0.15.0"),
                ("tower-sessions-core", "0.14.0, 0.15.0"),
                ("moka", "0.12.16"),
                ("dashmap", "6.2.1"),
                ("bincode", "2.0.1"),
                ("serde_json", "1.0.154"),
                ("rmp-serde", "1.3.1"),
                ("hdrhistogram", "7.5.4"),
                ("reqwest", "0.13.5"),
            ]),
        }
    }

    /// Compares a rendered report with the expected file; on a difference
    /// the rendered one is left in the temporary directory to diff.
    fn assert_renders(rendered: &str, expected: &str, name: &str) {
        if rendered != expected {
            let path = std::env::temp_dir().join(name);
            let _ = std::fs::write(&path, rendered);
            panic!(
                "the report differs from bench/fixtures/report/{name}; it is in {}",
                path.display()
            );
        }
    }

    // The report of a full run must be what report.rs wrote before it was
    // split into sections and templates, byte for byte.
    #[test]
    fn a_full_run_renders_as_before() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/report/results");
        let run = Run::load(&results).expect("the fixture loads");
        let rendered = render(&run, &about(false)).expect("the report renders");
        assert_renders(
            &rendered,
            include_str!("../../fixtures/report/benchmarks.md"),
            "benchmarks.md",
        );
    }

    // A run that measured nothing says so in every section, as before.
    #[test]
    fn an_empty_quick_run_renders_as_before() {
        let rendered = render(&Run::default(), &about(true)).expect("the report renders");
        assert_renders(
            &rendered,
            include_str!("../../fixtures/report/empty-quick.md"),
            "empty-quick.md",
        );
    }

    #[test]
    fn every_target_is_measured_by_the_full_fixture() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/report/results");
        let run = Run::load(&results).expect("the fixture loads");
        let templates = Templates::new().expect("templates compile");
        for target in targets::TARGETS {
            let verdict = targets::evaluate(target, &run, &templates).expect("evaluates");
            assert!(verdict.is_some(), "{} has no verdict", target.name);
        }
    }
}
