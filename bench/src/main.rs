//! `session-bench`: the benchmark binary that `cargo xtask bench` runs.
//!
//! Each section is a subcommand that writes its figures as JSON, so that
//! xtask can run the memory measurements in fresh processes; `report` turns
//! every JSON file of a results directory into `docs/benchmarks.md` and the
//! plots. Running it by hand needs a Redis server for `redis`:
//!
//! ```text
//! session-bench redis   --addr 127.0.0.1:6379 --out DIR/redis.json [--quick]
//!                       [--tasks 64,256] [--ops load,create] [--rounds N]
//! session-bench local   --out DIR/local.json [--quick]
//! session-bench memory  --variant ours|dashmap|moka|tower-sessions-memory-store --count N --out FILE
//! session-bench sweep   --count N --live N --out DIR/sweep.json
//! session-bench codec   --out DIR/codec.json [--quick]
//! session-bench gateway --url http://127.0.0.1:PORT/mcp --storage local|redis --out FILE [--quick]
//! session-bench value-size
//! session-bench report  --results DIR --docs DIR --root DIR --command "cargo xtask bench" [--quick]
//! ```
//!
//! Every figure is compared with a baseline measured in the same run: the
//! machine is small and shared, so absolute numbers move between runs while
//! ratios hold.

mod codec;
mod gateway;
mod harness;
mod local;
mod memory;
mod redis;
mod report;
mod shape;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::harness::Timing;

const USAGE: &str =
    "usage: session-bench <redis|local|memory|sweep|codec|gateway|value-size|report> [options]
(see the module documentation of bench/src/main.rs, or run `cargo xtask bench`)";

/// The command line: a subcommand, `--flag value` pairs and bare `--flags`.
struct Args {
    command: String,
    rest: Vec<String>,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut args = std::env::args().skip(1);
        let command = args.next().context(USAGE)?;
        Ok(Self {
            command,
            rest: args.collect(),
        })
    }

    fn flag(&self, name: &str) -> bool {
        self.rest.iter().any(|arg| arg == name)
    }

    fn value(&self, name: &str) -> Result<String> {
        self.optional(name)
            .with_context(|| format!("`{}` needs {name} <value>\n{USAGE}", self.command))
    }

    fn optional(&self, name: &str) -> Option<String> {
        let at = self.rest.iter().position(|arg| arg == name)?;
        self.rest.get(at + 1).cloned()
    }

    fn number(&self, name: &str) -> Result<usize> {
        self.value(name)?
            .parse()
            .with_context(|| format!("{name} must be a number"))
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    let timing = Timing::new(args.flag("--quick"));
    match args.command.as_str() {
        "redis" => {
            let out = PathBuf::from(args.value("--out")?);
            let addr = args.value("--addr")?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let filter = redis::Filter {
                tasks: args
                    .optional("--tasks")
                    .map(|list| list.split(',').filter_map(|t| t.parse().ok()).collect()),
                ops: args
                    .optional("--ops")
                    .map(|list| list.split(',').map(str::to_owned).collect()),
            };
            let mut timing = timing;
            if let Some(rounds) = args.optional("--rounds") {
                timing.rounds = rounds.parse().context("--rounds must be a number")?;
            }
            let results = runtime.block_on(redis::run(&addr, timing, &filter))?;
            write_json(&out, &results)
        }
        "local" => {
            let out = PathBuf::from(args.value("--out")?);
            write_json(&out, &local::run(timing)?)
        }
        "memory" => {
            let out = PathBuf::from(args.value("--out")?);
            let result = memory::measure(&args.value("--variant")?, args.number("--count")?)?;
            eprintln!(
                "memory: {:<28} {:>8.0} bytes per session",
                result.variant, result.bytes_per_session
            );
            write_json(&out, &result)
        }
        "sweep" => {
            let out = PathBuf::from(args.value("--out")?);
            let result = memory::sweep(args.number("--count")?, args.number("--live")?)?;
            eprintln!(
                "sweep: {} sessions in {:.1} ms; load p99 {:.2} us during, {:.2} us without",
                result.removed, result.sweep_ms, result.during.p99_us, result.baseline.p99_us
            );
            write_json(&out, &result)
        }
        "codec" => {
            let out = PathBuf::from(args.value("--out")?);
            write_json(&out, &codec::run(timing.quick)?)
        }
        "gateway" => {
            let out = PathBuf::from(args.value("--out")?);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let results = runtime.block_on(gateway::run(
                &args.value("--url")?,
                &args.value("--storage")?,
                timing,
            ))?;
            write_json(&out, &results)
        }
        "value-size" => {
            let mut rng = shape::Rng::new(1);
            let session = shape::typical_session(shape::session_id(rng.uuid()), &mut rng);
            println!(
                "{}",
                session_core::Codec::default()
                    .encode_session(&session)?
                    .len()
            );
            Ok(())
        }
        "report" => report::write(&report::Options {
            results: PathBuf::from(args.value("--results")?),
            docs: PathBuf::from(args.value("--docs")?),
            root: PathBuf::from(args.value("--root")?),
            command: args.value("--command")?,
            wall_secs: args.optional("--wall-secs").and_then(|s| s.parse().ok()),
            quick: timing.quick,
        }),
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}
