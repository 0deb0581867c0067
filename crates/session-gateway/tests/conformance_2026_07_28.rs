//! The MCP conformance suite's requirements of protocol revision 2026-07-28
//! against the gateway: one replica on Redis, and two replicas on that Redis
//! behind nginx (round robin, no affinity).
//!
//! The suite's stable release, which `tests/conformance.rs` runs, knows the
//! revisions up to 2025-11-25 only, so nothing there speaks the era the
//! gateway is built for (`server/discover`, per-request `_meta`, no
//! session). The pre-release pinned beside it in `xtask/mcp-clients` (npm
//! alias `conformance-2026-07-28`, @modelcontextprotocol/conformance
//! 0.2.0-alpha.12) does: `--requirements 2026-07-28` runs exactly the
//! scenarios that revision requires, frozen when it shipped, at its wire
//! version.
//!
//! Judging is the suite's own: `--expected-failures` takes the baseline
//! `tests/fixtures/conformance-2026-07-28-expected-failures.yaml`, and the
//! run fails on a failure (or warning) the baseline does not list and on a
//! listed one that now passes. The baseline names the checks that need the
//! suite's diagnostic tools and what the gateway does not offer, each with
//! its reason.
//!
//! The suite speaks no bearer tokens, so the replicas run in anonymous mode.
//! Needs `SESSION_TEST_REDIS`, `SESSION_TEST_NGINX`, `SESSION_TEST_MCP_NODE`
//! and `SESSION_TEST_MCP_NODE_MODULES`, as `cargo xtask test` provides;
//! without them the case prints SKIPPED, unless `SESSION_TEST_REQUIRE_REDIS`
//! is set, which makes it fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use session_testkit::env::var as test_env;

use common::processes::pair_behind_nginx;

/// The npm alias under which `xtask/mcp-clients` installs the pre-release.
const SUITE_PACKAGE: &str = "conformance-2026-07-28";
/// How long one run of the requirements may take.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

fn baseline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/conformance-2026-07-28-expected-failures.yaml")
}

/// Runs the 2026-07-28 requirements against `url` with the baseline, and
/// fails with the suite's report unless it judged every failure expected
/// and no expected one passing.
async fn assert_meets_the_requirements(node: &str, modules: &str, url: &str) {
    let out = tempfile::tempdir().unwrap();
    let suite = Path::new(modules).join(SUITE_PACKAGE).join("dist/index.js");
    let mut command = tokio::process::Command::new(node);
    command
        .arg(&suite)
        .args(["server", "--url", url, "--requirements", "2026-07-28"])
        .arg("--expected-failures")
        .arg(baseline())
        .arg("-o")
        .arg(out.path())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SUITE_TIMEOUT, command.output())
        .await
        .expect("the conformance suite ran too long")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The summary and the baseline's verdict, without the list of expected
    // failures, which the baseline file already says.
    let summary = stdout.split("=== SUMMARY ===").nth(1).unwrap_or(&stdout);
    let verdict: Vec<&str> = summary
        .lines()
        .filter(|line| !line.trim_start().starts_with('~'))
        .collect();
    eprintln!(
        "conformance 2026-07-28 against {url}:{}",
        verdict.join("\n")
    );
    assert!(
        output.status.success(),
        "the 2026-07-28 requirements against {url} failed the baseline ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("Baseline check passed"),
        "the suite did not judge the baseline against {url}:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_and_the_pair_meet_the_2026_07_28_requirements() {
    let (Some(redis), Some(nginx), Some(node), Some(modules)) = (
        test_env(session_testkit::env::REDIS),
        test_env(session_testkit::env::NGINX),
        test_env(session_testkit::env::MCP_NODE),
        test_env(session_testkit::env::MCP_NODE_MODULES),
    ) else {
        return;
    };
    let (_children, ports, nginx_port) = pair_behind_nginx(&redis, &nginx, "", &[]).await;
    for url in [ports[0], nginx_port].map(|port| format!("http://127.0.0.1:{port}/mcp")) {
        assert_meets_the_requirements(&node, &modules, &url).await;
    }
}

/// Every entry of the baseline says why it is there, on its own line.
#[test]
fn every_expected_failure_has_its_reason() {
    let text = std::fs::read_to_string(baseline()).unwrap();
    let entries: Vec<&str> = text
        .lines()
        .filter(|line| line.trim_start().starts_with("- "))
        .collect();
    assert!(!entries.is_empty(), "the baseline lists nothing");
    for entry in &entries {
        let (name, reason) = entry
            .split_once(" # ")
            .unwrap_or_else(|| panic!("`{entry}` has no `# reason`"));
        assert!(!reason.trim().is_empty(), "`{entry}` has an empty reason");
        let name = name.trim_start().trim_start_matches("- ").trim();
        assert!(
            !name.is_empty() && !name.contains(char::is_whitespace),
            "`{entry}` is not `<scenario>` or `<scenario>:<check id>`"
        );
    }
    let mut names: Vec<&str> = entries
        .iter()
        .map(|entry| entry.split(" # ").next().unwrap().trim())
        .collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "an entry is listed twice");
}
