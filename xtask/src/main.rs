//! Project automation, run as `cargo xtask <command>` (an alias in
//! `.cargo/config.toml`), in the style of rust-analyzer's xtask: plain Rust
//! instead of shell scripts, so it behaves the same on every machine, and few
//! dependencies, so the first run on a fresh machine stays quick.
//!
//! # Commands
//!
//! - `cargo xtask test [-- <cargo test args>...]` runs what CI runs, in order,
//!   printing each command and stopping at the first failure:
//!   1. `cargo fmt --all -- --check`
//!   2. `cargo clippy --workspace --all-targets --all-features -- -D warnings`
//!   3. the dependency invariant: with default features, `session-core`,
//!      `session-local` and `session-factory` must not depend on `fred`,
//!      `rustls`, `ring` or any `aws-lc*` crate (checked with `cargo tree`);
//!   4. starts real Redis servers (plain, ACL, TLS, mutual TLS, cluster and
//!      sentinel; see the `redis` module for the environment variables that
//!      point the tests at them) and runs `cargo test --workspace
//!      --all-features` with those variables and `SESSION_TEST_REQUIRE_REDIS=1`;
//!      arguments after `--` are passed on to `cargo test`;
//!   5. `cargo doc --workspace --no-deps --all-features` with
//!      `RUSTDOCFLAGS="-D warnings"`.
//!
//! - `cargo xtask redis` starts the same Redis servers, prints the `export`
//!   lines for their variables and keeps them running until Ctrl-C, so tests
//!   can be run by hand against them.
//!
//! - `cargo xtask bench [--quick]` runs the benchmark suite (crate `bench/`)
//!   against a Redis server it starts, and rewrites `docs/benchmarks.md` and
//!   its plots; see the `bench` module.
//!
//! - `cargo xtask reliability [--only <names>] [--fuzz-secs <N>]` and
//!   `cargo xtask soak --secs <N>` run the reliability and security suite
//!   (crate `reliability/`) and its fuzzers; see the `reliability` module.
//!
//! Both commands need `redis-server` and `redis-cli` on PATH (Debian:
//! `apt-get install -y redis-server redis-tools`). The servers are stopped on
//! every exit path, including Ctrl-C and SIGTERM (exit code 130).

mod bench;
mod certs;
mod ci;
mod proc;
mod redis;
mod reliability;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [-- <cargo test args>...]  run the CI pipeline (fmt, clippy, dependency
                                  invariant, tests against real Redis, docs)
  redis                           start the Redis test servers, print their
                                  environment variables, wait for Ctrl-C
  bench [--quick]                 run the benchmarks against a Redis server it
                                  starts, and rewrite docs/benchmarks.md and its
                                  plots (--quick: a short smoke run whose report
                                  goes to target/session-bench/report/)
  reliability [--only <names>] [--fuzz-secs <N>]
                                  run the reliability and security scenarios
                                  against real Redis processes, then fuzz
  soak [--secs <N>]               two gateway replicas (or, without a gateway,
                                  two managers) under load with random Redis
                                  faults, then an audit
  help                            show this message";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Task {
    Test { test_args: Vec<OsString> },
    Redis,
    Bench { quick: bool },
    Reliability(reliability::Args),
    Help,
}

fn run() -> Result<()> {
    let task = parse_args(std::env::args_os().skip(1).collect())?;
    if task == Task::Help {
        println!("{USAGE}");
        return Ok(());
    }
    proc::install_interrupt_handler()?;
    match task {
        Task::Test { test_args } => ci::run(&project_root()?, &test_args),
        Task::Redis => serve_redis(),
        Task::Bench { quick } => bench::run(&project_root()?, quick),
        Task::Reliability(args) => reliability::run(&project_root()?, args),
        Task::Help => Ok(()),
    }
}

/// Parses the arguments by hand: the grammar is too small to justify a
/// command-line parsing dependency.
fn parse_args(args: Vec<OsString>) -> Result<Task> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        bail!("no command given\n\n{USAGE}");
    };
    let rest: Vec<OsString> = args.collect();
    match command.to_str() {
        Some("test") => match rest.split_first() {
            None => Ok(Task::Test {
                test_args: Vec::new(),
            }),
            Some((separator, test_args)) if separator == "--" => Ok(Task::Test {
                test_args: test_args.to_vec(),
            }),
            Some((unexpected, _)) => bail!(
                "unexpected argument {unexpected:?} to `test`; \
                 put arguments for `cargo test` after `--`\n\n{USAGE}"
            ),
        },
        Some("redis") if rest.is_empty() => Ok(Task::Redis),
        Some("redis") => bail!("`redis` takes no arguments\n\n{USAGE}"),
        Some("bench") => match rest.as_slice() {
            [] => Ok(Task::Bench { quick: false }),
            [flag] if flag == "--quick" => Ok(Task::Bench { quick: true }),
            _ => bail!("`bench` takes only `--quick`\n\n{USAGE}"),
        },
        Some(name @ ("reliability" | "soak")) => {
            Ok(Task::Reliability(reliability::parse(name, &rest)?))
        }
        Some("help" | "--help" | "-h") => Ok(Task::Help),
        _ => bail!("unknown command {command:?}\n\n{USAGE}"),
    }
}

/// The workspace root, which every cargo step runs in.
fn project_root() -> Result<PathBuf> {
    // Cargo sets CARGO_MANIFEST_DIR when it runs xtask; the compile-time value
    // covers running the binary directly.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .context("xtask's manifest directory has no parent")
}

/// `cargo xtask redis`: keeps the topologies up for manual test runs.
fn serve_redis() -> Result<()> {
    let started = std::time::Instant::now();
    let topologies = redis::Topologies::start()?;
    let elapsed = started.elapsed();

    let mut exports = String::new();
    for (key, value) in topologies
        .env()
        .into_iter()
        .chain([(redis::REQUIRE_REDIS.to_owned(), "1".to_owned())])
    {
        writeln!(exports, "export {key}='{value}'")?;
    }
    // The same lines go into a file, so another shell can simply source it.
    let env_file = topologies.dir().join("env.sh");
    std::fs::write(&env_file, &exports)
        .with_context(|| format!("failed to write {}", env_file.display()))?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{exports}")?;
    writeln!(stdout, "# Redis topologies ready in {elapsed:.1?}:")?;
    for (name, pid, port) in topologies.processes() {
        writeln!(stdout, "#   {name:<16} pid {pid:<8} port {port}")?;
    }
    writeln!(stdout, "# or: source {}", env_file.display())?;
    writeln!(stdout, "# press Ctrl-C to stop the servers")?;
    stdout.flush()?;
    drop(stdout);

    // The interrupt handler stops the servers and exits; until then this
    // thread has nothing to do. park() may wake spuriously, hence the loop.
    loop {
        thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_test_with_and_without_cargo_test_args() {
        assert_eq!(
            parse_args(args(&["test"])).ok(),
            Some(Task::Test { test_args: vec![] })
        );
        assert_eq!(
            parse_args(args(&["test", "--", "redis", "--nocapture"])).ok(),
            Some(Task::Test {
                test_args: args(&["redis", "--nocapture"])
            })
        );
    }

    #[test]
    fn rejects_unknown_commands_and_stray_arguments() {
        assert!(parse_args(args(&[])).is_err());
        assert!(parse_args(args(&["bench-everything"])).is_err());
        assert!(parse_args(args(&["test", "filter"])).is_err());
        assert!(parse_args(args(&["redis", "extra"])).is_err());
    }
}
