//! The supply-chain step of `cargo xtask test`: `cargo deny --offline
//! check` with the policy in `deny.toml`, against the advisory database
//! snapshot in `deny/` (`deny/README.md` says why a snapshot).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::tools;

/// The cargo-deny release the policy is written for.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// The folder cargo-deny looks for the default database in, under its
/// `db-path`: the database's name and a hash of its URL.
const DB_DIR: &str = "advisory-db-3157b0e258782691";

/// Runs the check, installing cargo-deny and preparing the database first.
pub(crate) fn check(root: &Path) -> Result<()> {
    let target = tools::target_dir(root);
    let deny = ensure_cargo_deny(&target)?;
    prepare_database(root, &target)?;
    // cargo-deny reads the metadata of every target platform, and offline
    // it cannot download the crates that only another platform builds
    // (a build here fetched the host's only): `cargo fetch` gets them all,
    // from the registry, once.
    println!("$ cargo fetch");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root)
        .arg("fetch")
        .status()
        .context("cannot run cargo fetch")?;
    if !status.success() {
        bail!("cargo fetch failed ({status})");
    }
    let mut command = Command::new(&deny);
    command
        .current_dir(root)
        .args(["--offline", "check", "--hide-inclusion-graph"]);
    println!("$ cargo deny --offline check --hide-inclusion-graph");
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", deny.display()))?;
    if !status.success() {
        bail!("cargo deny check failed ({status}); see deny.toml for the policy");
    }
    Ok(())
}

/// The cargo-deny binary of the pinned version, installed under
/// `target/tools/cargo-deny` when missing.
fn ensure_cargo_deny(target: &Path) -> Result<PathBuf> {
    let root = target.join("tools").join("cargo-deny");
    let binary = root.join("bin").join("cargo-deny");
    let installed = Command::new(&binary)
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    if installed.as_deref() == Some(&format!("cargo-deny {CARGO_DENY_VERSION}")) {
        return Ok(binary);
    }
    println!("$ cargo install cargo-deny --version {CARGO_DENY_VERSION} --locked");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "install",
            "cargo-deny",
            "--version",
            CARGO_DENY_VERSION,
            "--locked",
        ])
        .arg("--root")
        .arg(&root)
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("`cargo install cargo-deny` failed ({status})");
    }
    Ok(binary)
}

/// Turns `deny/advisory-db` into the git repository cargo-deny reads, under
/// `target/deny/advisory-dbs`, committed at the snapshot's date; kept
/// between runs while the snapshot is the same.
fn prepare_database(root: &Path, target: &Path) -> Result<()> {
    let snapshot = root.join("deny");
    let commit = std::fs::read_to_string(snapshot.join("advisory-db.commit"))
        .context("cannot read deny/advisory-db.commit")?;
    let commit = commit.trim();
    let Some((_, date)) = commit.split_once(' ') else {
        bail!("deny/advisory-db.commit must hold a commit and its date");
    };
    let db = target.join("deny").join("advisory-dbs").join(DB_DIR);
    let marker = target.join("deny").join("snapshot");
    if db.join(".git").is_dir() && std::fs::read_to_string(&marker).ok().as_deref() == Some(commit)
    {
        return Ok(());
    }
    if db.exists() {
        std::fs::remove_dir_all(&db).with_context(|| format!("cannot remove {}", db.display()))?;
    }
    std::fs::create_dir_all(&db)?;
    copy_dir(&snapshot.join("advisory-db"), &db)?;
    let git = |args: &[&str]| -> Result<()> {
        let status = Command::new("git")
            .current_dir(&db)
            .args(["-c", "user.name=xtask", "-c", "user.email=xtask@localhost"])
            .args(args)
            .env("GIT_AUTHOR_DATE", date)
            .env("GIT_COMMITTER_DATE", date)
            .status()
            .context("cannot run git")?;
        if !status.success() {
            bail!(
                "git {} failed in {} ({status})",
                args.join(" "),
                db.display()
            );
        }
        Ok(())
    };
    git(&["init", "--quiet"])?;
    git(&["add", "--all"])?;
    git(&["commit", "--quiet", "--no-gpg-sign", "-m", commit])?;
    std::fs::write(&marker, commit)?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let destination = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&destination)?;
            copy_dir(&entry.path(), &destination)?;
        } else {
            std::fs::copy(entry.path(), &destination)?;
        }
    }
    Ok(())
}
