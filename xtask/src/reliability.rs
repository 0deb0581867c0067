//! `cargo xtask reliability` and `cargo xtask soak`: the reliability and
//! security suite (crate `reliability/`, binary `session-reliability`).
//!
//! `cargo xtask reliability [--only <names>] [--fuzz-secs <N>]`:
//!
//! 1. builds `session-reliability`;
//! 2. starts the test topologies of `cargo xtask test` (the secrets scenario
//!    needs the ACL, TLS and mutual-TLS servers; races and bad values use the
//!    plain one) and runs every scenario with their `SESSION_TEST_REDIS*`
//!    variables; the scenarios that kill, stall, restart or fail over Redis
//!    start servers of their own and signal them by pid;
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

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::proc::{Guard, ScratchDir, output_with_timeout};
use crate::redis::{self, Topologies};

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

/// Parses the arguments after `reliability` or `soak`.
pub(crate) fn parse(command: &str, rest: &[OsString]) -> Result<Args> {
    let mut rest = rest.iter().map(|arg| arg.to_string_lossy().into_owned());
    let number = |flag: &str, value: Option<String>| -> Result<u64> {
        value
            .with_context(|| format!("{flag} needs a number of seconds"))?
            .parse()
            .with_context(|| format!("{flag} needs a number of seconds"))
    };
    match command {
        "soak" => {
            let mut secs = 60;
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--secs" => secs = number("--secs", rest.next())?,
                    other => bail!("unexpected argument {other:?} to `soak`"),
                }
            }
            Ok(Args::Soak { secs })
        }
        _ => {
            let mut only = None;
            let mut fuzz_secs = DEFAULT_FUZZ_SECS;
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--fuzz-secs" => fuzz_secs = number("--fuzz-secs", rest.next())?,
                    "--only" => {
                        only = Some(rest.next().context("--only needs scenario names")?);
                    }
                    other => bail!("unexpected argument {other:?} to `reliability`"),
                }
            }
            Ok(Args::Reliability { only, fuzz_secs })
        }
    }
}

/// Runs the suite or the soak.
pub(crate) fn run(root: &Path, args: Args) -> Result<()> {
    let started = Instant::now();
    redis::check_installed()?;
    cargo_step(root, &["build", "-p", "session-reliability"])?;
    let binary = target_dir(root).join("debug").join("session-reliability");
    let scratch = ScratchDir::new("xtask-reliability")?;
    let mut lines = Vec::new();
    match args {
        Args::Soak { secs } => {
            let mut command = Command::new(&binary);
            command
                .current_dir(root)
                .args(["soak", "--secs", &secs.to_string()]);
            // The soak drives two gateway replicas when the gateway builds,
            // and the library directly otherwise (it says which).
            if root.join("crates/session-gateway/Cargo.toml").is_file() {
                match cargo_step(root, &["build", "-p", "session-gateway"]) {
                    Ok(()) => {
                        command
                            .arg("--gateway")
                            .arg(target_dir(root).join("debug").join("session-gateway"));
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
                println!("starting Redis topologies");
                let topologies = Topologies::start()?;
                let mut command = Command::new(&binary);
                command.current_dir(root);
                if let Some(only) = &only {
                    command.args(["--only", only]);
                }
                for (key, value) in topologies.env() {
                    command.env(key, value);
                }
                command.env(redis::REQUIRE_REDIS, "1");
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
    let guard = Guard::spawn(command)?;
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

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
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

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_reliability_and_soak() {
        assert_eq!(
            parse("reliability", &args(&[])).ok(),
            Some(Args::Reliability {
                only: None,
                fuzz_secs: DEFAULT_FUZZ_SECS
            })
        );
        assert_eq!(
            parse(
                "reliability",
                &args(&["--fuzz-secs", "5", "--only", "races"])
            )
            .ok(),
            Some(Args::Reliability {
                only: Some("races".into()),
                fuzz_secs: 5
            })
        );
        assert_eq!(
            parse("soak", &args(&["--secs", "30"])).ok(),
            Some(Args::Soak { secs: 30 })
        );
        assert!(parse("soak", &args(&["--secs"])).is_err());
        assert!(parse("soak", &args(&["--secs", "x"])).is_err());
        assert!(parse("reliability", &args(&["extra"])).is_err());
    }
}
