//! The MCP conformance suite (npm `@modelcontextprotocol/conformance`,
//! pinned by `xtask/mcp-clients`) against the gateway: one replica on Redis,
//! and two replicas on that Redis behind nginx (round robin, no affinity).
//!
//! Every scenario about the lifecycle, sessions, the transport, headers and
//! protocol versions passes on both ([`PASS`]). The others need server
//! features the gateway does not offer, each named in [`NOT_OFFERED`] with
//! the reason: the suite's own test tools, resources and prompts (fixed
//! names and contents), completions, logging, sampling and elicitation.
//! Every scenario the suite lists is in exactly one of the two lists, so a
//! new version of the suite cannot add a scenario unnoticed.
//!
//! The suite speaks no bearer tokens, so the replicas run in anonymous mode.
//! Needs `SESSION_TEST_REDIS`, `SESSION_TEST_NGINX`, `SESSION_TEST_MCP_NODE`
//! and `SESSION_TEST_MCP_NODE_MODULES`, as `cargo xtask test` provides.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use session_testkit::env::var as test_env;

use common::processes::pair_behind_nginx;

/// The scenarios the gateway passes, on one replica and on the pair.
pub const PASS: [&str; 8] = [
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "server-sse-polling",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
];

/// The scenarios that need what the gateway does not offer, and why.
pub const NOT_OFFERED: [(&str, &str); 24] = [
    (
        "logging-set-level",
        "logging: deprecated by 2026-07-28 (SEP-2577), not offered",
    ),
    (
        "completion-complete",
        "completions: no prompt or resource argument to complete",
    ),
    (
        "tools-call-simple-text",
        "the suite's test tool test_simple_text",
    ),
    (
        "tools-call-image",
        "the suite's test tool test_image_content",
    ),
    (
        "tools-call-audio",
        "the suite's test tool test_audio_content",
    ),
    (
        "tools-call-embedded-resource",
        "the suite's test tool test_embedded_resource",
    ),
    (
        "tools-call-mixed-content",
        "the suite's test tool test_multiple_content_types",
    ),
    (
        "tools-call-with-logging",
        "the suite's test tool test_tool_with_logging (and logging)",
    ),
    (
        "tools-call-error",
        "the suite's test tool test_error_handling",
    ),
    (
        "tools-call-with-progress",
        "the suite's test tool test_tool_with_progress",
    ),
    (
        "tools-call-sampling",
        "sampling: the gateway asks nothing of the client's model",
    ),
    (
        "tools-call-elicitation",
        "elicitation: the gateway asks nothing of the user",
    ),
    (
        "json-schema-2020-12",
        "the suite's test tool with a 2020-12 schema",
    ),
    ("elicitation-sep1034-defaults", "elicitation"),
    ("elicitation-sep1330-enums", "elicitation"),
    (
        "resources-read-text",
        "the suite's resource test://static-text",
    ),
    (
        "resources-read-binary",
        "the suite's resource test://static-binary",
    ),
    (
        "resources-templates-read",
        "resource templates: the gateway has one fixed resource",
    ),
    (
        "resources-subscribe",
        "resource subscriptions: its one resource never changes",
    ),
    ("resources-unsubscribe", "resource subscriptions"),
    (
        "prompts-get-simple",
        "the suite's prompt test_simple_prompt",
    ),
    (
        "prompts-get-with-args",
        "the suite's prompt test_prompt_with_arguments",
    ),
    (
        "prompts-get-embedded-resource",
        "the suite's prompt test_prompt_with_embedded_resource",
    ),
    (
        "prompts-get-with-image",
        "the suite's prompt test_prompt_with_image",
    ),
];

/// How long one run of the whole suite may take.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

fn suite(modules: &str) -> String {
    Path::new(modules)
        .join("@modelcontextprotocol/conformance/dist/index.js")
        .display()
        .to_string()
}

/// The server scenarios the suite lists.
async fn listed(node: &str, modules: &str) -> Vec<String> {
    let output = tokio::process::Command::new(node)
        .args([suite(modules).as_str(), "list", "--server"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .map(|line| line.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// Runs every scenario (`--suite all`: the active ones and the pending ones)
/// against `url`; each scenario's checks, by scenario.
async fn run_suite(node: &str, modules: &str, url: &str) -> Vec<(String, Vec<Value>)> {
    let out = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(node);
    command
        .args([
            suite(modules).as_str(),
            "server",
            "--url",
            url,
            "--suite",
            "all",
            "-o",
        ])
        .arg(out.path())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SUITE_TIMEOUT, command.output())
        .await
        .expect("the conformance suite ran too long")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.split("=== SUMMARY ===").nth(1).unwrap_or(&stdout);
    eprintln!("conformance against {url}:{summary}");
    let mut results = Vec::new();
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        // `server-<scenario>-<timestamp>`, the timestamp like
        // `2026-12-02T20-17-27-632Z` (whose minutes may well read `-20`).
        let Some(rest) = name.strip_prefix("server-") else {
            continue;
        };
        let Some(cut) = timestamp_at(rest) else {
            continue;
        };
        let checks: Vec<Value> =
            serde_json::from_slice(&std::fs::read(entry.path().join("checks.json")).unwrap())
                .unwrap();
        results.push((rest[..cut].to_owned(), checks));
    }
    results
}

/// Where the `-<date>T` suffix of a result directory's name starts.
fn timestamp_at(name: &str) -> Option<usize> {
    let bytes = name.as_bytes();
    let is_date = |at: usize| {
        let date = bytes.get(at..at + 11)?;
        let digits = [0, 1, 2, 3, 5, 6, 8, 9];
        let ok = digits.iter().all(|&i| date[i].is_ascii_digit())
            && date[4] == b'-'
            && date[7] == b'-'
            && date[10] == b'T';
        Some(ok)
    };
    (0..bytes.len()).find(|&at| bytes[at] == b'-' && is_date(at + 1) == Some(true))
}

/// Asserts that every [`PASS`] scenario passed against `url`.
async fn assert_conformant(node: &str, modules: &str, url: &str) {
    let results = run_suite(node, modules, url).await;
    for scenario in PASS {
        let (_, checks) = results
            .iter()
            .find(|(name, _)| name == scenario)
            .unwrap_or_else(|| panic!("{scenario} did not run against {url}"));
        // A scenario passes as the suite counts it: no check failed, and at
        // least one succeeded (the others are INFO or WARNING entries).
        let succeeded = checks
            .iter()
            .filter(|check| check["status"] == "SUCCESS")
            .count();
        assert!(
            succeeded > 0,
            "{scenario} against {url}: no check succeeded: {checks:?}"
        );
        for check in checks {
            assert!(
                !matches!(check["status"].as_str(), Some("FAILURE" | "ERROR")),
                "{scenario} against {url}: {check}"
            );
            if check["status"] == "WARNING" {
                eprintln!("conformance: {scenario} against {url} warns: {check}");
            }
        }
    }
    for (scenario, checks) in &results {
        if NOT_OFFERED.iter().any(|(name, _)| name == scenario)
            && !checks.iter().any(|check| check["status"] == "FAILURE")
        {
            eprintln!("conformance: {scenario} passes although listed as not offered");
        }
    }
}

#[tokio::test]
async fn every_listed_scenario_is_judged_once() {
    let (Some(node), Some(modules)) = (
        test_env(session_testkit::env::MCP_NODE),
        test_env(session_testkit::env::MCP_NODE_MODULES),
    ) else {
        return;
    };
    let listed = listed(&node, &modules).await;
    assert!(listed.len() >= PASS.len(), "{listed:?}");
    for scenario in &listed {
        let passes = PASS.contains(&scenario.as_str());
        let not_offered = NOT_OFFERED.iter().any(|(name, _)| name == scenario);
        assert!(
            passes ^ not_offered,
            "{scenario}: in PASS {passes}, in NOT_OFFERED {not_offered}: judge it once"
        );
    }
    for scenario in PASS.iter().chain(NOT_OFFERED.iter().map(|(name, _)| name)) {
        assert!(
            listed.iter().any(|name| name == scenario),
            "{scenario} is no longer listed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_and_the_pair_behind_nginx_pass() {
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
        assert_conformant(&node, &modules, &url).await;
    }
}

#[test]
fn a_result_directory_names_its_scenario() {
    let name = "ping-2026-12-02T21-20-33-632Z";
    assert_eq!(timestamp_at(name).map(|at| &name[..at]), Some("ping"));
    let name = "tools-call-simple-text-2026-12-02T20-17-27-526Z";
    assert_eq!(
        timestamp_at(name).map(|at| &name[..at]),
        Some("tools-call-simple-text")
    );
    assert_eq!(timestamp_at("no-date-here"), None);
}

/// docs/deployment.md names every scenario not offered, with the reason
/// given here.
#[test]
fn the_docs_list_every_scenario_not_offered_with_its_reason() {
    let docs = include_str!("../../../docs/deployment.md");
    for (scenario, why) in NOT_OFFERED {
        let row = format!("| `{scenario}` | {why} |");
        assert!(
            docs.contains(&row),
            "docs/deployment.md lacks the row {row}"
        );
    }
}
