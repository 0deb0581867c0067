//! `cargo xtask reliability` and `cargo xtask soak`: the reliability and
//! security suite (crate `reliability/`, binary `session-reliability`).
//!
//! `cargo xtask reliability [--only <names>] [--fuzz-secs <N>]`:
//!
//! 1. builds `session-reliability`;
//! 2. starts the test topologies of `cargo xtask test` (the secrets scenario
//!    needs the ACL, TLS and mutual-TLS servers; races and bad values use the
//!    plain Redis server and run once more on the plain Valkey server) and
//!    runs every scenario with their `SESSION_TEST_*` variables; the
//!    scenarios that kill, stall, restart or fail over Redis start servers
//!    of their own and signal them by pid;
//! 3. fuzzes `session_core::codec::decode_session` and
//!    `session_factory::SessionConfig::from_toml` with cargo-fuzz on nightly
//!    for `--fuzz-secs` each (default 60; 0 skips fuzzing), installing
//!    cargo-fuzz first if it is missing. The corpus is kept in
//!    `fuzz/corpus/<target>`, crashes in `fuzz/artifacts/<target>`;
//! 4. prints every `PASS|FAIL <scenario>: <figure>` line again with the wall
//!    time, and fails if any scenario failed.
//!
//! `cargo xtask soak --secs <N>` builds the binary and, if it builds, the
//! `session-gateway` binary, and runs the `soak` subcommand: two gateway
//! replicas on one Redis under MCP load with random Redis faults, then an
//! audit (or, without a gateway, two managers under load in-process).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lexopt::prelude::*;
use session_testenv::contract::REQUIRE_REDIS;
use session_testenv::process::output_with_timeout;
use session_testenv::{Guard, ScratchDir, Topologies};

use crate::tools;

/// The fuzz targets in `fuzz/fuzz_targets/`.
const FUZZ_TARGETS: [&str; 2] = ["decode_session", "session_config"];
/// Seconds each fuzz target runs by default.
const DEFAULT_FUZZ_SECS: u64 = 60;

/// What `cargo xtask reliability` or `cargo xtask soak` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Args {
    /// The whole suite.
    Reliability {
        /// `--only a,b`: only these scenarios (passed on).
        only: Option<String>,
        /// Seconds per fuzz target; 0 skips fuzzing.
        fuzz_secs: u64,
    },
    /// The bounded soak.
    Soak {
        /// Seconds of faults.
        secs: u64,
    },
}

/// Parses the arguments after `reliability` or `soak`; `None` for `--help`.
pub(crate) fn parse(command: &str, parser: &mut lexopt::Parser) -> Result<Option<Args>> {
    let seconds = |parser: &mut lexopt::Parser, flag: &str| -> Result<u64> {
        parser
            .value()?
            .parse()
            .with_context(|| format!("{flag} needs a number of seconds"))
    };
    let mut secs = 60;
    let mut only = None;
    let mut fuzz_secs = DEFAULT_FUZZ_SECS;
    let soak = command == "soak";
    while let Some(arg) = parser.next()? {
        match arg {
            Long("secs") if soak => secs = seconds(parser, "--secs")?,
            Long("fuzz-secs") if !soak => fuzz_secs = seconds(parser, "--fuzz-secs")?,
            Long("only") if !soak => only = Some(parser.value()?.string()?),
            Long("help") | Short('h') => return Ok(None),
            other => bail!("{} to `{command}`", other.unexpected()),
        }
    }
    Ok(Some(if soak {
        Args::Soak { secs }
    } else {
        Args::Reliability { only, fuzz_secs }
    }))
}

/// Runs the suite or the soak.
pub(crate) fn run(root: &Path, args: Args) -> Result<()> {
    let started = Instant::now();
    let tools = tools::ensure(&[tools::REDIS_SERVER, tools::REDIS_CLI])?;
    let valkey = match &args {
        Args::Reliability { .. } => Some(tools::valkey(&tools::target_dir(root))?),
        // The soak starts its own Redis servers and runs no Valkey.
        Args::Soak { .. } => None,
    };
    cargo_step(root, &["build", "-p", "session-reliability"])?;
    let binary = tools::target_dir(root)
        .join("debug")
        .join("session-reliability");
    let scratch = ScratchDir::new("xtask-reliability")?;
    let mut lines = Vec::new();
    match args {
        Args::Soak { secs } => {
            let mut command = Command::new(&binary);
            command
                .current_dir(root)
                .args(["soak", "--secs", &secs.to_string()]);
            // The soak starts its own servers, by name.
            tools.apply_path(&mut command);
            // The soak drives two gateway replicas when the gateway builds,
            // and the library directly otherwise (it says which).
            if root.join("crates/session-gateway/Cargo.toml").is_file() {
                match cargo_step(root, &["build", "-p", "session-gateway"]) {
                    Ok(()) => {
                        command.arg("--gateway").arg(
                            tools::target_dir(root)
                                .join("debug")
                                .join("session-gateway"),
                        );
                    }
                    Err(error) => {
                        println!("the gateway does not build ({error:#}): soaking the library")
                    }
                }
            }
            let output = scratch.path().join("soak.out");
            let status = run_teed(&mut command, &output)?;
            lines.extend(verdicts(&output)?);
            if lines.is_empty() {
                bail!("session-reliability soak printed no verdict ({status})");
            }
        }
        Args::Reliability { only, fuzz_secs } => {
            {
                println!("starting the Redis and Valkey topologies");
                let topologies = Topologies::start(&tools.programs(), valkey.as_ref())?;
                let mut command = Command::new(&binary);
                command.current_dir(root);
                // The scenarios that kill, stall or restart Redis start
                // servers of their own, by name.
                tools.apply_path(&mut command);
                if let Some(only) = &only {
                    command.args(["--only", only]);
                }
                for (key, value) in topologies.env() {
                    command.env(key, value);
                }
                command.env(REQUIRE_REDIS, "1");
                let output = scratch.path().join("scenarios.out");
                let status = run_teed(&mut command, &output)?;
                lines.extend(verdicts(&output)?);
                if lines.is_empty() {
                    bail!("session-reliability printed no verdict ({status})");
                }
                // The topologies stop here: fuzzing does not need them.
            }
            if fuzz_secs > 0 && only.is_none() {
                lines.extend(fuzz(root, &binary, scratch.path(), fuzz_secs)?);
            }
        }
    }
    println!();
    println!(
        "xtask reliability: {} verdicts in {:.1} s",
        lines.len(),
        started.elapsed().as_secs_f64()
    );
    for line in &lines {
        println!("{line}");
    }
    let failed = lines.iter().filter(|line| line.starts_with("FAIL")).count();
    if failed > 0 {
        bail!("{failed} of {} scenarios failed", lines.len());
    }
    Ok(())
}

/// The `PASS`/`FAIL` lines of a run's output (its summary block repeats
/// them; the first occurrence of each is kept).
fn verdicts(output: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(output)?;
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        if (line.starts_with("PASS ") || line.starts_with("FAIL "))
            && !lines.iter().any(|l| l == line)
        {
            lines.push(line.to_owned());
        }
    }
    Ok(lines)
}

/// Runs `command` with its standard output going to `output` and, as it
/// grows, to ours; waits for it to exit.
fn run_teed(command: &mut Command, output: &Path) -> Result<std::process::ExitStatus> {
    let file = fs::File::create(output)?;
    command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::inherit());
    println!("$ {:?}", command.get_program());
    let mut guard = Guard::spawn(command)?;
    let mut reader = fs::File::open(output)?;
    let mut stdout = std::io::stdout();
    loop {
        let done = guard.try_wait()?;
        let mut chunk = Vec::new();
        reader.read_to_end(&mut chunk)?;
        stdout.write_all(&chunk)?;
        stdout.flush()?;
        if let Some(status) = done {
            reader.seek(SeekFrom::End(0))?;
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn cargo_step(root: &Path, args: &[&str]) -> Result<()> {
    println!("$ cargo {}", args.join(" "));
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root).args(args);
    let status = Guard::spawn(&mut command)?.wait()?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `cargo +nightly ...` through rustup, without the variables of the stable
/// cargo that runs xtask (they would pin the toolchain).
fn nightly_cargo(root: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(root).arg("+nightly");
    for variable in [
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
    ] {
        command.env_remove(variable);
    }
    command
}

/// Installs cargo-fuzz if `cargo +nightly fuzz --version` fails.
fn ensure_cargo_fuzz(root: &Path) -> Result<()> {
    let present = output_with_timeout(
        nightly_cargo(root).args(["fuzz", "--version"]),
        None,
        Duration::from_secs(60),
    )
    .map(|output| output.status.success())
    .unwrap_or(false);
    if present {
        return Ok(());
    }
    println!("$ cargo install cargo-fuzz --locked");
    let status = Guard::spawn(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args([
            "install",
            "cargo-fuzz",
            "--locked",
        ]),
    )?
    .wait()?;
    if !status.success() {
        bail!("`cargo install cargo-fuzz` failed ({status})");
    }
    Ok(())
}

/// Runs each fuzz target for `secs` seconds; one verdict line each.
fn fuzz(root: &Path, binary: &Path, scratch: &Path, secs: u64) -> Result<Vec<String>> {
    ensure_cargo_fuzz(root)?;
    let seeds = scratch.join("seeds");
    let decode_seeds = seeds.join("decode_session");
    let status = Command::new(binary)
        .arg("fuzz-seeds")
        .arg(&decode_seeds)
        .status()
        .context("cannot run session-reliability fuzz-seeds")?;
    if !status.success() {
        bail!("session-reliability fuzz-seeds failed ({status})");
    }
    let mut verdicts = Vec::new();
    for target in FUZZ_TARGETS {
        let seed_dir = match target {
            "decode_session" => decode_seeds.clone(),
            _ => root.join("fuzz").join("seeds").join(target),
        };
        let corpus = root.join("fuzz").join("corpus").join(target);
        fs::create_dir_all(&corpus)?;
        let log = scratch.join(format!("fuzz-{target}.log"));
        let mut command = nightly_cargo(root);
        command
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .arg(&seed_dir)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg("-rss_limit_mb=2048")
            .arg("-timeout=10")
            .stdin(Stdio::null())
            .stdout(fs::File::create(
                scratch.join(format!("fuzz-{target}.out")),
            )?)
            .stderr(fs::File::create(&log)?);
        println!(
            "$ cargo +nightly fuzz run {target} fuzz/corpus/{target} <seeds> -- -max_total_time={secs}"
        );
        let started = Instant::now();
        let status = Guard::spawn(&mut command)?.wait()?;
        let text = fs::read_to_string(&log).unwrap_or_default();
        let stats = text
            .lines()
            .rev()
            .find(|line| line.contains("cov:") && line.contains("corp:"))
            .unwrap_or("")
            .trim()
            .to_owned();
        let runs = text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("Done "))
            .unwrap_or("no summary")
            .trim()
            .to_owned();
        let verdict = if status.success() {
            format!(
                "PASS fuzz-{target}: {runs} ({:.0} s with the build); last status `{stats}`; 0 crashes",
                started.elapsed().as_secs_f64()
            )
        } else {
            let artifacts = root.join("fuzz").join("artifacts").join(target);
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!(
                "fuzz target {target} failed ({status}); log {}; last lines:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            // The scratch directory goes away: keep the log with the artifacts.
            fs::create_dir_all(&artifacts)?;
            let kept = artifacts.join("fuzz.log");
            fs::copy(&log, &kept)?;
            format!(
                "FAIL fuzz-{target}: {status} after {:.0} s; crash input and log in {}",
                started.elapsed().as_secs_f64(),
                artifacts.display()
            )
        };
        println!("{verdict}");
        verdicts.push(verdict);
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_list(command: &str, list: &[&str]) -> Result<Option<Args>> {
        parse(
            command,
            &mut lexopt::Parser::from_args(list.iter().copied()),
        )
    }

    #[test]
    fn parses_reliability_and_soak() {
        assert_eq!(
            parse_list("reliability", &[]).ok().flatten(),
            Some(Args::Reliability {
                only: None,
                fuzz_secs: DEFAULT_FUZZ_SECS
            })
        );
        assert_eq!(
            parse_list("reliability", &["--fuzz-secs", "5", "--only", "races"])
                .ok()
                .flatten(),
            Some(Args::Reliability {
                only: Some("races".into()),
                fuzz_secs: 5
            })
        );
        assert_eq!(
            parse_list("reliability", &["--fuzz-secs=0"]).ok().flatten(),
            Some(Args::Reliability {
                only: None,
                fuzz_secs: 0
            })
        );
        assert_eq!(
            parse_list("soak", &["--secs", "30"]).ok().flatten(),
            Some(Args::Soak { secs: 30 })
        );
        assert_eq!(
            parse_list("soak", &[]).ok().flatten(),
            Some(Args::Soak { secs: 60 })
        );
        assert!(matches!(parse_list("soak", &["--help"]), Ok(None)));
    }

    #[test]
    fn rejects_missing_values_unknown_flags_and_other_commands_flags() {
        for (command, bad) in [
            ("soak", &["--secs"][..]),
            ("soak", &["--secs", "x"]),
            ("soak", &["--only", "races"]),
            ("soak", &["--sec", "3"]),
            ("reliability", &["extra"]),
            ("reliability", &["--secs", "3"]),
            ("reliability", &["--only"]),
            ("reliability", &["--fuzz-secs", "-1"]),
        ] {
            assert!(
                parse_list(command, bad).is_err(),
                "{command} {bad:?} was accepted"
            );
        }
    }
}
