//! End to end with the official MCP clients: two `session-gateway`
//! replicas on one Redis behind nginx (round robin, no affinity), checking
//! HS256 bearer tokens, driven by
//!
//! - the Python SDK (PyPI `mcp`) in its default mode, "auto", which
//!   negotiates protocol 2026-07-28 with `server/discover` and counts behind
//!   a handle;
//! - the Python SDK in legacy mode (the `initialize` handshake, `counter` in
//!   the session, the SDK's `DELETE` at the end);
//! - the TypeScript SDK (npm `@modelcontextprotocol/sdk`, handshake era),
//!   with both `counter` and a handle.
//!
//! Each client counts 1 to 10 with both replicas answering, makes 20
//! increments at once that lose nothing, and is shown that a second
//! principal's token sees nothing of the first's session or handle (404 with
//! `-32001` and the request's id, or "unknown handle"). After a handshake-era
//! client's `DELETE`, both replicas, asked directly, answer 404 with
//! `-32001` and the request's id.
//!
//! The scripts are in `tests/clients/`; `cargo xtask test` installs the
//! pinned clients and names them in `SESSION_TEST_MCP_PYTHON`,
//! `SESSION_TEST_MCP_NODE` and `SESSION_TEST_MCP_NODE_MODULES`. Without
//! those (and `SESSION_TEST_REDIS`, `SESSION_TEST_NGINX`) the cases print
//! SKIPPED, unless `SESSION_TEST_REQUIRE_REDIS` is set, which makes them
//! fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use session_testkit::env::var as test_env;

use common::http;
use common::processes::{Children, pair_behind_nginx};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "session-gateway";
const SECRET_ENV: &str = "SESSION_GATEWAY_TEST_JWT_SECRET";
const SECRET: &str = "the secret of the official client tests, 40+ bytes";
/// How long one client script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn token(subject: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Two replicas on Redis behind nginx, checking the tests' tokens; the
/// children, nginx's port and the replicas' ports.
async fn deployment(redis: &str, nginx: &str) -> (Children, u16, [u16; 2]) {
    let auth = format!(
        "\n[auth]\nmode = \"jwt\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\nhmac_secret_env = \"{SECRET_ENV}\"\n"
    );
    let (children, ports, nginx_port) =
        pair_behind_nginx(redis, nginx, &auth, &[(SECRET_ENV, SECRET)]).await;
    (children, nginx_port, ports)
}

/// Runs a client script; its steps by name. Fails with its output if it
/// fails.
async fn run(program: &str, args: &[&str]) -> BTreeMap<String, Value> {
    let mut command = tokio::process::Command::new(program);
    command.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} ran longer than {SCRIPT_TIMEOUT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "{program} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|step| (step["step"].as_str().unwrap().to_owned(), step))
        .collect()
}

fn counts(step: &Value) -> Vec<u64> {
    step["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|count| count.as_u64().unwrap())
        .collect()
}

/// Counts 1..=n, and both replicas among the answers.
fn assert_counts_over_both(step: &Value, from: u64, to: u64) {
    assert_eq!(counts(step), (from..=to).collect::<Vec<_>>(), "{step}");
    let replicas: Vec<&str> = step["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|replica| replica.as_str().unwrap())
        .collect();
    for replica in ["a", "b"] {
        assert!(
            replicas.contains(&replica),
            "replica {replica} never answered: {step}"
        );
    }
}

/// A 404 with the gateway's JSON-RPC body, echoing `id`.
fn assert_gone(status: u64, body: &str, id: u64) {
    assert_eq!(status, 404, "{body}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], -32001, "{body}");
    assert_eq!(body["id"], id, "{body}");
}

/// Both replicas, asked directly with the owner's token, answer a request
/// on `session` with 404, `-32001` and the request's id.
async fn assert_deleted_on_both(ports: [u16; 2], session: &str, token: &str) {
    for (index, port) in ports.into_iter().enumerate() {
        let id = 500 + index as u64;
        let response = http()
            .post(format!("http://127.0.0.1:{port}/mcp"))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-11-25")
            .header("mcp-session-id", session)
            .body(json!({"jsonrpc": "2.0", "id": id, "method": "ping"}).to_string())
            .send()
            .await
            .unwrap();
        let status = u64::from(response.status().as_u16());
        assert_gone(status, &response.text().await.unwrap(), id);
    }
}

async fn foreign_requests(ports: [u16; 2]) -> u64 {
    let mut total = 0;
    for port in ports {
        let health: Value = http()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        total += health["foreign_requests"].as_u64().unwrap();
    }
    total
}

/// A run of the Python client in `mode` against a fresh deployment: the
/// deployment (kept alive until the caller is done), the replicas' ports,
/// the client's steps and the first principal's token; `None` when the
/// environment lacks a server or the client (a skip).
async fn python_run(mode: &str) -> Option<(Children, [u16; 2], BTreeMap<String, Value>, String)> {
    let (Some(redis), Some(nginx), Some(python)) = (
        test_env(session_testkit::env::REDIS),
        test_env(session_testkit::env::NGINX),
        test_env(session_testkit::env::MCP_PYTHON),
    ) else {
        return None;
    };
    let (children, nginx_port, ports) = deployment(&redis, &nginx).await;
    let url = format!("http://127.0.0.1:{nginx_port}/mcp");
    let (alice, bob) = (token("alice"), token("bob"));
    let script = script("python_client.py");
    let args = [
        script.to_str().unwrap(),
        "--url",
        &url,
        "--token",
        &alice,
        "--other-token",
        &bob,
        "--mode",
        mode,
    ];
    let steps = run(&python, &args).await;
    Some((children, ports, steps, alice))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_default_client_speaks_2026_07_28_with_handles() {
    let Some((_children, ports, steps, _)) = python_run("auto").await else {
        return;
    };
    assert_eq!(steps["negotiated"]["version"], "2026-07-28");
    assert_counts_over_both(&steps["counts"], 1, 10);
    assert_eq!(counts(&steps["parallel"]), (1..=20).collect::<Vec<_>>());
    assert_eq!(steps["whoami"]["session"], Value::Null);
    assert_eq!(
        steps["whoami"]["principal"],
        json!({"issuer": ISSUER, "subject": "alice"})
    );
    let foreign = &steps["foreign"];
    assert_eq!(foreign["is_error"], true, "{foreign}");
    assert_eq!(
        foreign["text"], foreign["unknown_text"],
        "a foreign handle must look unknown"
    );
    assert!(
        foreign["text"]
            .as_str()
            .unwrap()
            .starts_with("unknown handle")
    );
    assert_eq!(steps["after-foreign"]["count"], 11, "bob's call counted");
    assert_eq!(steps["closed"]["closed"], true);
    assert_eq!(steps["closed"]["gone_is_error"], true);
    assert_eq!(foreign_requests(ports).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_legacy_mode_keeps_its_session_on_both_replicas() {
    let Some((_children, ports, steps, alice)) = python_run("legacy").await else {
        return;
    };
    assert_eq!(steps["negotiated"]["version"], "2025-11-25");
    assert_counts_over_both(&steps["counts"], 1, 10);
    assert_eq!(counts(&steps["parallel"]), (11..=30).collect::<Vec<_>>());
    let foreign = &steps["foreign"];
    assert_gone(
        foreign["status"].as_u64().unwrap(),
        foreign["body"].as_str().unwrap(),
        77,
    );
    assert!(steps.contains_key("closed"));
    let session = steps["session"]["id"].as_str().unwrap();
    assert_deleted_on_both(ports, session, &alice).await;
    assert_eq!(foreign_requests(ports).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_counts_in_its_session_and_behind_a_handle() {
    let (Some(redis), Some(nginx), Some(node), Some(modules)) = (
        test_env(session_testkit::env::REDIS),
        test_env(session_testkit::env::NGINX),
        test_env(session_testkit::env::MCP_NODE),
        test_env(session_testkit::env::MCP_NODE_MODULES),
    ) else {
        return;
    };
    let (_children, nginx_port, ports) = deployment(&redis, &nginx).await;
    let url = format!("http://127.0.0.1:{nginx_port}/mcp");
    let (alice, bob) = (token("alice"), token("bob"));
    let script = script("ts_client.mjs");
    let steps = run(
        &node,
        &[
            script.to_str().unwrap(),
            "--modules",
            &modules,
            "--url",
            &url,
            "--token",
            &alice,
            "--other-token",
            &bob,
        ],
    )
    .await;
    assert_eq!(steps["negotiated"]["version"], "2025-11-25");
    assert_counts_over_both(&steps["counts"], 1, 10);
    assert_eq!(counts(&steps["parallel"]), (11..=30).collect::<Vec<_>>());
    assert_counts_over_both(&steps["handle-counts"], 1, 10);
    let foreign = &steps["foreign-handle"];
    assert_eq!(foreign["is_error"], true, "{foreign}");
    assert!(
        foreign["text"]
            .as_str()
            .unwrap()
            .starts_with("unknown handle"),
        "{foreign}"
    );
    let foreign = &steps["foreign"];
    assert_gone(
        foreign["status"].as_u64().unwrap(),
        foreign["body"].as_str().unwrap(),
        78,
    );
    assert!(steps.contains_key("closed"));
    let session = steps["session"]["id"].as_str().unwrap();
    assert_deleted_on_both(ports, session, &alice).await;
    assert_eq!(foreign_requests(ports).await, 2);
}
