//! `cargo xtask test`: the pipeline CI runs, step by step.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use session_testenv::contract::{CHROMEDRIVER, CHROMIUM, NGINX, REQUIRE_REDIS};
use session_testenv::{Guard, Topologies};

use crate::{clients, deny, tidy, tools};

/// Tests run at once in each test binary.
const TEST_THREADS: &str = "8";

/// Runs every CI step in order and stops at the first failure.
///
/// `test_args` are appended to `cargo test`, e.g. a test name filter.
pub(crate) fn run(root: &Path, test_args: &[OsString]) -> Result<()> {
    // Checked (and installed) first so that a missing package is reported
    // in seconds, not after a full clippy build.
    let tools = tools::ensure(&[
        tools::REDIS_SERVER,
        tools::REDIS_CLI,
        tools::NGINX,
        tools::CHROMIUM,
        tools::CHROMEDRIVER,
    ])?;
    let nginx = tools.path(tools::NGINX).to_owned();
    let browser = [
        (CHROMIUM, tools.path(tools::CHROMIUM).to_owned()),
        (CHROMEDRIVER, tools.path(tools::CHROMEDRIVER).to_owned()),
    ];
    let valkey = tools::valkey(&tools::target_dir(root))?;
    let clients = clients::ensure(&tools::target_dir(root))?;

    cargo(root, &["fmt", "--all", "--", "--check"]).run()?;
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    )
    .run()?;
    println!("$ tidy: dependency invariants and ARCHITECTURE.md names");
    tidy::check_dependencies(root)?;
    tidy::check_architecture(root)?;
    deny::check(root)?;
    // `--all-features` below compiles the `redis` feature in; the behaviour
    // of a build without it (a Redis config is refused with a clear error,
    // never served from local storage) is tested on its own.
    cargo(root, &["test", "-p", "session-factory"]).run()?;

    {
        println!("starting the Redis and Valkey topologies");
        let started = std::time::Instant::now();
        let topologies = Topologies::start(&tools.programs(), Some(&valkey))?;
        println!(
            "Redis and Valkey topologies ready in {:.1?} (files in {})",
            started.elapsed(),
            topologies.dir().display()
        );
        let mut step = cargo(root, &["test", "--workspace", "--all-features"]);
        step.command.args(test_args);
        step.display
            .extend(test_args.iter().map(|arg| quote(&arg.to_string_lossy())));
        for (key, value) in topologies.env() {
            println!("  {key}={value}");
            step.command.env(key, value);
        }
        step.command.env(REQUIRE_REDIS, "1");
        println!("  {REQUIRE_REDIS}=1");
        step.command.env(NGINX, &nginx);
        println!("  {NGINX}={}", nginx.display());
        for (key, path) in &browser {
            step.command.env(key, path);
            println!("  {key}={}", path.display());
        }
        for (key, path) in clients.env() {
            step.command.env(key, path);
            println!("  {key}={}", path.display());
        }
        // Most Redis tests wait on real TTLs rather than on the CPU, so more
        // of them run at once than there are cores.
        step.command.env("RUST_TEST_THREADS", TEST_THREADS);
        println!("  RUST_TEST_THREADS={TEST_THREADS}");
        // A test starts `redis-server` by name, so it must find the one
        // located off PATH too.
        tools.apply_path(&mut step.command);
        step.run()?;
        // The servers are stopped here, at the end of this block, rather than
        // at the end of the run: the doc build does not need them.
    }

    let mut doc = cargo(root, &["doc", "--workspace", "--no-deps", "--all-features"]);
    doc.command.env("RUSTDOCFLAGS", "-D warnings");
    doc.display
        .insert(0, "RUSTDOCFLAGS=\"-D warnings\"".to_owned());
    doc.run()?;

    println!("xtask test: all steps passed");
    Ok(())
}

/// A command together with the text shown for it in the log.
struct Step {
    command: Command,
    display: Vec<String>,
}

impl Step {
    /// Prints the command, runs it with inherited output, and fails unless it
    /// exits successfully.
    fn run(mut self) -> Result<()> {
        let display = self.display.join(" ");
        println!("$ {display}");
        let status = Guard::spawn(&mut self.command)?.wait()?;
        if !status.success() {
            bail!("step `{display}` failed ({status})");
        }
        Ok(())
    }
}

/// A `cargo` invocation run from the workspace root.
fn cargo(root: &Path, args: &[&str]) -> Step {
    let mut command = Command::new(cargo_program());
    command.current_dir(root).args(args);
    let mut display = vec!["cargo".to_owned()];
    display.extend(args.iter().map(|arg| quote(arg)));
    Step { command, display }
}

/// The cargo that runs xtask, so every step uses the same toolchain.
fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Quotes an argument for the log only when the shell would need it.
fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@+".contains(c))
    {
        arg.to_owned()
    } else {
        format!("\"{arg}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_quoting_only_quotes_when_needed() {
        assert_eq!(quote("--all-features"), "--all-features");
        assert_eq!(quote("-D warnings"), "\"-D warnings\"");
        assert_eq!(quote(""), "\"\"");
    }
}
