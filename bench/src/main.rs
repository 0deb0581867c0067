//! `session-bench`: the benchmark binary that `cargo xtask bench` runs.
//!
//! Each section is a subcommand that writes its figures as JSON, so that
//! xtask can run the memory measurements in fresh processes; `report` turns
//! every JSON file of a results directory into `docs/benchmarks.md` and the
//! plots. Running it by hand needs a Redis server for `redis` and `owned`:
//!
//! ```text
//! session-bench redis   --addr 127.0.0.1:6379 --out DIR/redis.json [--quick]
//!                       [--tasks 64,256] [--ops load,create] [--rounds N]
//! session-bench local   --out DIR/local.json [--quick]
//! session-bench owned   --addr 127.0.0.1:6379 --out DIR/owned.json [--quick]
//!                       [--tasks 1,64] [--ops modify,create,list]
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
mod layer;
mod local;
mod memory;
mod owned;
mod redis;
mod report;
mod shape;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use lexopt::prelude::*;
use serde::Serialize;

use crate::harness::Timing;

const USAGE: &str = "\
usage: session-bench <command> [options] [--quick]

commands:
  redis       --addr 127.0.0.1:6379 --out FILE [--tasks 64,256] [--ops load,create] [--rounds N]
  local       --out FILE
  owned       --addr 127.0.0.1:6379 --out FILE [--tasks 1,64] [--ops modify,create,list]
  memory      --variant ours|dashmap|moka|tower-sessions-memory-store --count N --out FILE
  cache-memory --addr 127.0.0.1:6379 --count N (run by `redis` in a fresh process; prints bytes per entry)
  instructions --addr 127.0.0.1:6379 --target STORE --count N (run by `redis` under callgrind)
  sweep       --count N --live N --out FILE
  codec       --out FILE
  gateway     --url http://127.0.0.1:PORT/mcp --storage local|redis --out FILE
  layer       --addr 127.0.0.1:6379 --out FILE
  value-size
  report      --results DIR --docs DIR --root DIR --command \"cargo xtask bench\" [--wall-secs N]

--quick (any command): short measurements and small data sets, for a smoke run.
`cargo xtask bench` runs them all; see bench/src/main.rs.";

/// Each subcommand and the `--flag value` options it takes; `--quick` is
/// taken by all of them, since xtask passes it to every step of a quick run.
const COMMANDS: &[(&str, &[&str])] = &[
    ("redis", &["addr", "out", "tasks", "ops", "rounds"]),
    ("local", &["out"]),
    ("owned", &["addr", "out", "tasks", "ops"]),
    ("memory", &["variant", "count", "out"]),
    ("cache-memory", &["addr", "count"]),
    ("instructions", &["addr", "target", "count"]),
    ("sweep", &["count", "live", "out"]),
    ("codec", &["out"]),
    ("gateway", &["url", "storage", "out"]),
    ("layer", &["addr", "out"]),
    ("value-size", &[]),
    (
        "report",
        &["results", "docs", "root", "command", "wall-secs"],
    ),
];

/// The command line: a subcommand, its `--flag value` options and `--quick`.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    command: &'static str,
    quick: bool,
    values: BTreeMap<&'static str, String>,
}

impl Args {
    /// Parses the command line; `None` for `--help`. A flag the subcommand
    /// does not take, a flag given twice and a stray argument are errors:
    /// a misspelt option must not silently run with a default.
    fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<Self>> {
        let mut parser = lexopt::Parser::from_args(args);
        let (command, allowed) = match parser.next()? {
            Some(Value(name)) => {
                let name = name.string()?;
                *COMMANDS
                    .iter()
                    .find(|(command, _)| *command == name)
                    .with_context(|| format!("unknown command {name:?}\n\n{USAGE}"))?
            }
            Some(Long("help") | Short('h')) => return Ok(None),
            Some(other) => bail!("{}\n\n{USAGE}", other.unexpected()),
            None => bail!("no command given\n\n{USAGE}"),
        };
        let mut args = Self {
            command,
            quick: false,
            values: BTreeMap::new(),
        };
        while let Some(arg) = parser.next()? {
            match arg {
                Long("quick") => args.quick = true,
                Long("help") | Short('h') => return Ok(None),
                Long(flag) if allowed.contains(&flag) => {
                    let flag = allowed.iter().copied().find(|known| *known == flag);
                    let flag = flag.context("a known flag")?;
                    let value = parser.value()?.string()?;
                    if args.values.insert(flag, value).is_some() {
                        bail!("--{flag} given twice\n\n{USAGE}");
                    }
                }
                other => bail!("{} to `{command}`\n\n{USAGE}", other.unexpected()),
            }
        }
        Ok(Some(args))
    }

    fn value(&self, name: &str) -> Result<String> {
        self.optional(name)
            .with_context(|| format!("`{}` needs --{name} <value>\n\n{USAGE}", self.command))
    }

    fn optional(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    fn number(&self, name: &str) -> Result<usize> {
        self.value(name)?
            .parse()
            .with_context(|| format!("--{name} must be a number"))
    }

    /// A comma-separated option, each item parsed.
    fn list<T: std::str::FromStr>(&self, name: &str) -> Result<Option<Vec<T>>> {
        self.optional(name)
            .map(|list| {
                list.split(',')
                    .map(|item| {
                        item.parse()
                            .map_err(|_| anyhow::anyhow!("--{name}: {item:?} is not valid"))
                    })
                    .collect()
            })
            .transpose()
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn main() -> ExitCode {
    match Args::parse(std::env::args_os().skip(1)) {
        Ok(None) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Some(args)) => match run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("session-bench: {error:#}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("session-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let timing = Timing::new(args.quick);
    match args.command {
        "redis" => {
            let out = PathBuf::from(args.value("out")?);
            let addr = args.value("addr")?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let filter = redis::Filter {
                tasks: args.list("tasks")?,
                ops: args.list("ops")?,
            };
            let mut timing = timing;
            if args.optional("rounds").is_some() {
                timing.rounds = args.number("rounds")?;
            }
            let results = runtime.block_on(redis::run(&addr, timing, &filter))?;
            write_json(&out, &results)
        }
        "local" => {
            let out = PathBuf::from(args.value("out")?);
            write_json(&out, &local::run(timing)?)
        }
        "owned" => {
            let out = PathBuf::from(args.value("out")?);
            let filter = owned::Filter {
                tasks: args.list("tasks")?,
                ops: args.list("ops")?,
            };
            write_json(&out, &owned::run(&args.value("addr")?, timing, &filter)?)
        }
        "memory" => {
            let out = PathBuf::from(args.value("out")?);
            let result = memory::measure(&args.value("variant")?, args.number("count")?)?;
            eprintln!(
                "memory: {:<28} {:>8.0} bytes per session",
                result.variant, result.bytes_per_session
            );
            write_json(&out, &result)
        }
        "cache-memory" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let bytes = runtime.block_on(redis::cache_memory(
                &args.value("addr")?,
                args.number("count")?,
            ))?;
            // The one line on stdout is the figure the parent reads.
            println!("{bytes}");
            Ok(())
        }
        "instructions" => {
            // One thread: callgrind runs one at a time anyway, and the
            // count then does not depend on how work was spread.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(redis::instruction_loads(
                &args.value("addr")?,
                &args.value("target")?,
                args.number("count")?,
            ))
        }
        "sweep" => {
            let out = PathBuf::from(args.value("out")?);
            let result = memory::sweep(args.number("count")?, args.number("live")?)?;
            eprintln!(
                "sweep: {} sessions in {:.1} ms; load p99 {:.2} us during, {:.2} us without",
                result.removed, result.sweep_ms, result.during.p99_us, result.baseline.p99_us
            );
            write_json(&out, &result)
        }
        "codec" => {
            let out = PathBuf::from(args.value("out")?);
            write_json(&out, &codec::run(timing.quick)?)
        }
        "gateway" => {
            let out = PathBuf::from(args.value("out")?);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let results = runtime.block_on(gateway::run(
                &args.value("url")?,
                &args.value("storage")?,
                timing,
            ))?;
            write_json(&out, &results)
        }
        "layer" => {
            let out = PathBuf::from(args.value("out")?);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let results = runtime.block_on(layer::run(&args.value("addr")?, timing))?;
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
            results: PathBuf::from(args.value("results")?),
            docs: PathBuf::from(args.value("docs")?),
            root: PathBuf::from(args.value("root")?),
            command: args.value("command")?,
            wall_secs: args
                .optional("wall-secs")
                .map(|secs| secs.parse().context("--wall-secs must be a number"))
                .transpose()?,
            quick: timing.quick,
        }),
        other => bail!("command {other:?} is listed in COMMANDS but not handled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<Option<Args>> {
        Args::parse(list.iter().map(OsString::from))
    }

    #[test]
    fn parses_each_commands_options_and_quick_anywhere() {
        let args = parse(&["redis", "--quick", "--addr", "127.0.0.1:1", "--out=r.json"])
            .ok()
            .flatten()
            .expect("valid");
        assert_eq!(args.command, "redis");
        assert!(args.quick);
        assert_eq!(args.value("addr").ok().as_deref(), Some("127.0.0.1:1"));
        assert_eq!(args.value("out").ok().as_deref(), Some("r.json"));
        assert_eq!(args.optional("rounds"), None);
        for (command, options) in COMMANDS {
            let mut list = vec![*command];
            let flags: Vec<String> = options.iter().map(|option| format!("--{option}")).collect();
            for flag in &flags {
                list.push(flag);
                list.push("7");
            }
            let args = parse(&list)
                .ok()
                .flatten()
                .expect("every listed option parses");
            assert!(!args.quick);
            for option in *options {
                assert_eq!(args.number(option).ok(), Some(7), "{command} --{option}");
            }
        }
        let redis = parse(&["redis", "--tasks", "64,256", "--ops", "load,create"])
            .ok()
            .flatten()
            .expect("valid");
        assert_eq!(
            redis.list::<usize>("tasks").ok().flatten(),
            Some(vec![64, 256])
        );
        assert!(parse(&["--help"]).ok().is_some_and(|args| args.is_none()));
        assert!(
            parse(&["local", "-h"])
                .ok()
                .is_some_and(|args| args.is_none())
        );
    }

    #[test]
    fn refuses_unknown_commands_and_flags_stray_arguments_and_repeats() {
        for bad in [
            &[][..],
            &["bench"],
            &["--out", "x"],
            &["local", "--outt", "x"],
            &["local", "--addr", "x"],
            &["local", "x"],
            &["local", "--out"],
            &["local", "--out", "a", "--out", "b"],
            &["value-size", "--count", "3"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let error = parse(&["local", "--outt", "x"])
            .err()
            .map(|error| error.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|text| text.starts_with("invalid option '--outt'")),
            "{error:?}"
        );
        let tasks = parse(&["redis", "--tasks", "64,many"])
            .ok()
            .flatten()
            .expect("parses");
        assert!(
            tasks.list::<usize>("tasks").is_err(),
            "a bad item is an error, not skipped"
        );
    }
}
