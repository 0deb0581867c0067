//! Checks of the tree itself, in the spirit of rust-analyzer's tidy tests:
//! the dependency invariants of ARCHITECTURE.md, and that every crate and
//! path ARCHITECTURE.md names exists.
//!
//! Each check is a function that `cargo xtask test` runs as a step, and a
//! `#[test]` below, so a plain `cargo test --workspace` catches the drift
//! too.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The crates that must build without any TLS stack or Redis client (with
/// default features), so that users of the in-memory store pay for neither.
const NO_NETWORK_STACK: &[&str] = &[
    "session-core",
    "session-local",
    "session-config",
    "session-factory",
    "session-rmcp",
    "session-axum",
];
/// What those must not depend on, by exact name.
const BANNED_CRATES: &[&str] = &["fred", "rustls", "ring"];
/// What those must not depend on, by name prefix (aws-lc-rs, aws-lc-sys, ...).
const BANNED_PREFIXES: &[&str] = &["aws-lc"];
/// The contract, which depends on no crate of the workspace.
const CONTRACT: &str = "session-core";
/// The tools that must not build the library, so that the first `cargo
/// xtask` on a fresh machine stays quick; they may use each other.
const TOOLS: &[&str] = &["xtask", "session-testenv"];

/// Checks the three dependency invariants of ARCHITECTURE.md ("Dependencies").
pub(crate) fn check_dependencies(root: &Path) -> Result<()> {
    let workspace = workspace_packages(root)?;
    let mut violations = Vec::new();
    for krate in NO_NETWORK_STACK {
        for dependency in normal_dependencies(root, krate)? {
            if is_banned(&dependency) {
                violations.push(format!("{krate} depends on {dependency}"));
            }
        }
    }
    for dependency in normal_dependencies(root, CONTRACT)? {
        if dependency != CONTRACT && workspace.contains(&dependency) {
            violations.push(format!("{CONTRACT} depends on {dependency}"));
        }
    }
    for krate in TOOLS {
        for dependency in normal_dependencies(root, krate)? {
            if workspace.contains(&dependency) && !TOOLS.contains(&dependency.as_str()) {
                violations.push(format!("{krate} depends on {dependency}"));
            }
        }
    }
    if !violations.is_empty() {
        violations.sort();
        violations.dedup();
        bail!(
            "dependency invariants of ARCHITECTURE.md violated:\n  {}",
            violations.join("\n  ")
        );
    }
    println!(
        "dependency invariants hold: {} use no network stack, {CONTRACT} no workspace crate, \
         {} no library crate",
        NO_NETWORK_STACK.join(", "),
        TOOLS.join(" and ")
    );
    Ok(())
}

/// Whether `name` is a network stack crate, exactly or by prefix.
fn is_banned(name: &str) -> bool {
    BANNED_CRATES.contains(&name)
        || BANNED_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// The names of every crate `krate` depends on through normal edges with
/// default features, itself included.
fn normal_dependencies(root: &Path, krate: &str) -> Result<BTreeSet<String>> {
    let args = ["tree", "-p", krate, "--edges", "normal", "--prefix", "none"];
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("failed to run cargo tree")?;
    if !output.status.success() {
        bail!("`cargo {}` failed ({})", args.join(" "), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The package names of the workspace, read from each member's manifest.
fn workspace_packages(root: &Path) -> Result<BTreeSet<String>> {
    let mut manifests = vec![
        root.join("xtask/Cargo.toml"),
        root.join("bench/Cargo.toml"),
        root.join("reliability/Cargo.toml"),
        root.join("testenv/Cargo.toml"),
    ];
    for entry in std::fs::read_dir(root.join("crates")).context("reading crates/")? {
        manifests.push(entry?.path().join("Cargo.toml"));
    }
    let mut names = BTreeSet::new();
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let name = text
            .lines()
            .find_map(|line| {
                let value = line.strip_prefix("name")?.trim_start().strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_owned())
            })
            .with_context(|| format!("{} has no package name", manifest.display()))?;
        names.insert(name);
    }
    Ok(names)
}

/// Checks that every crate and every path ARCHITECTURE.md names exists.
///
/// A path is the target of a relative Markdown link, or a code span that
/// starts with one of the tree's top-level directories; a crate is a code
/// span of the form `session-…`.
pub(crate) fn check_architecture(root: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(root.join("ARCHITECTURE.md")).context("reading ARCHITECTURE.md")?;
    let workspace = workspace_packages(root)?;
    let (paths, crates) = names_in(&text);
    let mut missing: Vec<String> = paths
        .iter()
        .filter(|path| !root.join(path).exists())
        .map(|path| format!("path {path}"))
        .collect();
    missing.extend(
        crates
            .iter()
            .filter(|name| !workspace.contains(*name))
            .map(|name| format!("crate {name}")),
    );
    if !missing.is_empty() {
        bail!(
            "ARCHITECTURE.md names what does not exist:\n  {}",
            missing.join("\n  ")
        );
    }
    println!(
        "ARCHITECTURE.md: all {} paths and {} crates it names exist",
        paths.len(),
        crates.len()
    );
    Ok(())
}

/// The top-level directories a code span must start with to count as a path.
const TOP_LEVEL: &[&str] = &[
    "crates/",
    "xtask/",
    "bench/",
    "reliability/",
    "testenv/",
    "fuzz/",
    "docs/",
    "config/",
];

/// The paths and crate names `text` mentions.
fn names_in(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut paths = BTreeSet::new();
    let mut crates = BTreeSet::new();
    // Link targets: `](target)`, skipping URLs and anchors.
    for (index, _) in text.match_indices("](") {
        let rest = &text[index + 2..];
        if let Some(end) = rest.find(')') {
            let target = rest[..end].split('#').next().unwrap_or_default();
            if !target.is_empty() && !target.contains("://") {
                paths.insert(target.to_owned());
            }
        }
    }
    // Code spans: the text between pairs of backticks on one line.
    for line in text.lines() {
        for (position, span) in line.split('`').enumerate() {
            if position % 2 == 0 || span.contains(' ') {
                continue;
            }
            if TOP_LEVEL.iter().any(|top| span.starts_with(top)) {
                paths.insert(span.trim_end_matches('/').to_owned());
            } else if span.starts_with("session-")
                && span.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            {
                crates.insert(span.to_owned());
            }
        }
    }
    (paths, crates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in the workspace root")
    }

    #[test]
    fn banned_names_match_exactly_or_by_prefix() {
        assert!(is_banned("fred"));
        assert!(is_banned("rustls"));
        assert!(is_banned("ring"));
        assert!(is_banned("aws-lc-rs"));
        assert!(is_banned("aws-lc-sys"));
        // Look-alikes must not trip the check.
        assert!(!is_banned("rustls-pki-types"));
        assert!(!is_banned("ringbuf"));
        assert!(!is_banned("session-core"));
        assert!(!is_banned(""));
    }

    #[test]
    fn dependency_invariants_hold() {
        check_dependencies(root()).unwrap();
    }

    #[test]
    fn architecture_names_only_what_exists() {
        check_architecture(root()).unwrap();
    }

    #[test]
    fn names_are_found_in_links_and_code_spans() {
        let (paths, crates) = names_in(
            "See [the map](crates/x/src/map.rs#Concurrency) and [web](https://example.org), \
             `crates/y/` and `session-core`, not `cargo xtask test` or `session_core::Error`.",
        );
        assert_eq!(
            paths.into_iter().collect::<Vec<_>>(),
            ["crates/x/src/map.rs", "crates/y"]
        );
        assert_eq!(crates.into_iter().collect::<Vec<_>>(), ["session-core"]);
    }
}
