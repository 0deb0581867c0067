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
//!      then `cargo deny --offline check` with `deny.toml`, against the
//!      advisory database snapshot in `deny/` (the `deny` module);
//!   4. starts real Redis servers (plain, ACL, TLS, mutual TLS, cluster and
//!      sentinel) and Valkey servers (plain, ACL, cluster and sentinel; see
//!      `session_testenv::contract` for the environment variables that
//!      point the tests at them) and runs `cargo test --workspace
//!      --all-features` with those variables and `SESSION_TEST_REQUIRE_REDIS=1`;
//!      arguments after `--` are passed on to `cargo test`;
//!   5. `cargo doc --workspace --no-deps --all-features` with
//!      `RUSTDOCFLAGS="-D warnings"`.
//!
//! - `cargo xtask redis` starts the same Redis and Valkey servers, prints the `export`
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
//! These commands need `redis-server` and `redis-cli` (and `test` also
//! `nginx`, `bench` also `redis-benchmark`). A program missing from PATH is
//! installed with apt-get when xtask runs as root, and found through the
//! Debian package's file list; see the `tools` module, which also explains
//! how CI proves that path. The servers come from `session-testenv`, the one
//! Redis fixture of the workspace, and are stopped on every exit path,
//! including Ctrl-C and SIGTERM (exit code 130). `test`, `redis` and
//! `reliability` also run Valkey, which xtask installs from a pinned Python
//! package into a virtual environment under the target directory (see the
//! `tools` module).

mod bench;
mod ci;
mod clients;
mod deny;
mod reliability;
mod tidy;
mod tools;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;

use anyhow::{Context, Result, bail};
use lexopt::prelude::*;
use session_testenv::{Topologies, contract, process};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [-- <cargo test args>...]  run the CI pipeline (fmt, clippy, dependency
                                  invariant, tests against real Redis, docs)
  deny                            the supply-chain step of test alone: cargo deny
                                  against the advisory snapshot in deny/
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
  help                            show this message

Missing redis-server, redis-cli or nginx are installed with apt-get when
xtask runs as root.";

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
    Deny,
    Bench { quick: bool },
    Reliability(reliability::Args),
    Help,
}

fn run() -> Result<()> {
    let task = parse_args(std::env::args_os().skip(1))?;
    if task == Task::Help {
        println!("{USAGE}");
        return Ok(());
    }
    process::install_interrupt_handler("xtask")?;
    match task {
        Task::Test { test_args } => ci::run(&project_root()?, &test_args),
        Task::Redis => serve_redis(),
        Task::Deny => deny::check(&project_root()?),
        Task::Bench { quick } => bench::run(&project_root()?, quick),
        Task::Reliability(args) => reliability::run(&project_root()?, args),
        Task::Help => Ok(()),
    }
}

/// Parses the command line. Every command refuses flags and arguments it
/// does not know, so a typo is an error rather than a run that silently
/// does something else.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Task> {
    let mut parser = lexopt::Parser::from_args(args);
    let command = match parser.next()? {
        Some(Value(command)) => command.string()?,
        Some(Long("help") | Short('h')) => return Ok(Task::Help),
        Some(other) => bail!("{}\n\n{USAGE}", other.unexpected()),
        None => bail!("no command given\n\n{USAGE}"),
    };
    let task = match command.as_str() {
        "test" => {
            // Everything after `--` belongs to `cargo test`, verbatim; lexopt
            // would turn it into plain values, indistinguishable from stray
            // arguments before the separator.
            if parser.raw_args()?.next_if(|arg| arg == "--").is_some() {
                Task::Test {
                    test_args: parser.raw_args()?.collect(),
                }
            } else {
                no_more_arguments(
                    &mut parser,
                    "test",
                    "; put arguments for `cargo test` after `--`",
                )?
                .unwrap_or(Task::Test {
                    test_args: Vec::new(),
                })
            }
        }
        "redis" => no_more_arguments(&mut parser, "redis", "")?.unwrap_or(Task::Redis),
        "deny" => no_more_arguments(&mut parser, "deny", "")?.unwrap_or(Task::Deny),
        "bench" => {
            let mut quick = false;
            while let Some(arg) = parser.next()? {
                match arg {
                    Long("quick") => quick = true,
                    Long("help") | Short('h') => return Ok(Task::Help),
                    other => bail!("{} to `bench`\n\n{USAGE}", other.unexpected()),
                }
            }
            Task::Bench { quick }
        }
        "reliability" | "soak" => match reliability::parse(&command, &mut parser)? {
            Some(args) => Task::Reliability(args),
            None => Task::Help,
        },
        "help" => no_more_arguments(&mut parser, "help", "")?.unwrap_or(Task::Help),
        _ => bail!("unknown command {command:?}\n\n{USAGE}"),
    };
    Ok(task)
}

/// Fails on any further argument except `--help`, which yields
/// `Some(Task::Help)`; `hint` is appended to the error.
fn no_more_arguments(
    parser: &mut lexopt::Parser,
    command: &str,
    hint: &str,
) -> Result<Option<Task>> {
    match parser.next()? {
        None => Ok(None),
        Some(Long("help") | Short('h')) => Ok(Some(Task::Help)),
        Some(other) => bail!("{} to `{command}`{hint}\n\n{USAGE}", other.unexpected()),
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
    let tools = tools::ensure(&[tools::REDIS_SERVER, tools::REDIS_CLI])?;
    // The Valkey servers too: the exported SESSION_TEST_REQUIRE_REDIS makes
    // the Valkey tests fail without them.
    let valkey = tools::valkey(&tools::target_dir(&project_root()?))?;
    let started = std::time::Instant::now();
    let topologies = Topologies::start(&tools.programs(), Some(&valkey))?;
    let elapsed = started.elapsed();

    let mut exports = String::new();
    for (key, value) in topologies
        .env()
        .into_iter()
        .chain([(contract::REQUIRE_REDIS, "1".to_owned())])
    {
        writeln!(exports, "export {key}='{value}'")?;
    }
    // The same lines go into a file, so another shell can simply source it.
    let env_file = topologies.dir().join("env.sh");
    std::fs::write(&env_file, &exports)
        .with_context(|| format!("failed to write {}", env_file.display()))?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{exports}")?;
    writeln!(
        stdout,
        "# Redis and Valkey topologies ready in {elapsed:.1?}:"
    )?;
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

    fn parse(list: &[&str]) -> Result<Task> {
        parse_args(list.iter().map(OsString::from))
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_test_with_and_without_cargo_test_args() {
        assert_eq!(
            parse(&["test"]).ok(),
            Some(Task::Test { test_args: vec![] })
        );
        assert_eq!(
            parse(&["test", "--", "redis", "--nocapture"]).ok(),
            Some(Task::Test {
                test_args: args(&["redis", "--nocapture"])
            })
        );
        // A second `--` is cargo test's business, passed on as it is.
        assert_eq!(
            parse(&["test", "--", "-p", "x", "--", "--nocapture"]).ok(),
            Some(Task::Test {
                test_args: args(&["-p", "x", "--", "--nocapture"])
            })
        );
    }

    #[test]
    fn parses_every_other_command_and_flag() {
        assert_eq!(parse(&["redis"]).ok(), Some(Task::Redis));
        assert_eq!(parse(&["bench"]).ok(), Some(Task::Bench { quick: false }));
        assert_eq!(
            parse(&["bench", "--quick"]).ok(),
            Some(Task::Bench { quick: true })
        );
        for help in [
            &["help"][..],
            &["--help"],
            &["-h"],
            &["test", "--help"],
            &["bench", "-h"],
        ] {
            assert_eq!(parse(help).ok(), Some(Task::Help), "{help:?}");
        }
        assert!(matches!(parse(&["soak"]), Ok(Task::Reliability(_))));
    }

    #[test]
    fn rejects_unknown_commands_flags_and_stray_arguments() {
        for bad in [
            &[][..],
            &["bench-everything"],
            &["--verbose"],
            &["test", "filter"],
            &["test", "--nocapture"],
            &["redis", "extra"],
            &["redis", "--port", "1"],
            &["bench", "--quik"],
            &["bench", "quick"],
            &["help", "test"],
        ] {
            let error = parse(bad).err().map(|error| error.to_string());
            assert!(error.is_some(), "{bad:?} was accepted");
        }
        let error = parse(&["bench", "--quik"])
            .err()
            .map(|error| error.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|text| text.starts_with("invalid option '--quik'")),
            "{error:?}"
        );
    }
}
