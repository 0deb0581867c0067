//! The gateway's Prometheus endpoint after a scripted workload, counted
//! exactly: a session opened, two tool calls, a request for an unknown
//! session (404), one while Redis is stalled (503), the session deleted.
//! The endpoint is on its own address, and no label carries a session id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use session_testenv::RedisProcess;

use common::processes::{Children, GATEWAY, HTTP_PROTOCOL, post_to, wait_health, write};
use common::{free_port, http};

const PROTOCOL: &str = HTTP_PROTOCOL;

/// The samples of a Prometheus text page: `name{sorted labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                labels.sort_unstable();
                (name, labels.join(","))
            }
            None => (series, String::new()),
        };
        samples.insert(format!("{name}{{{labels}}}"), value.parse().unwrap());
    }
    samples
}

fn sample(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{value}\""))
        .collect();
    labels.sort_unstable();
    let key = format!("{name}{{{}}}", labels.join(","));
    samples.get(&key).copied().unwrap_or(0.0)
}

fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "metrics-test", "version": "0"}}})
}

/// Starts a gateway on a free port (with `config`, else local storage; with
/// its metrics on `metrics_port`, else none) and returns the port once it
/// is healthy.
async fn start(children: &mut Children, config: Option<&Path>, metrics_port: Option<u16>) -> u16 {
    let port = free_port();
    let mut command = Command::new(GATEWAY);
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    if let Some(metrics_port) = metrics_port {
        command.args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")]);
    }
    children.spawn("gateway", &mut command);
    wait_health(children, &http(), "gateway", port, StatusCode::OK).await;
    port
}

/// The text of the metrics page at `metrics_port`.
async fn page(metrics_port: u16) -> String {
    http()
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn counter_call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "counter", "arguments": {}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_workload_exactly() {
    let mut children = Children::new();
    // A server of this test's own: it is stalled below.
    let redis = RedisProcess::start(children.dir(), "redis", &[]).unwrap();
    let config = write(
        children.dir(),
        "gateway.toml",
        &format!(
            "ttl = \"30m\"\n\n[redis]\naddr = \"{}\"\nkey_prefix = \"metrics:\"\ncommand_timeout = \"300ms\"\n",
            redis.addr()
        ),
    );
    let metrics_port = free_port();
    let port = start(&mut children, Some(&config), Some(metrics_port)).await;

    // The public port does not serve metrics.
    let public = http()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);

    let scrape = || async {
        let text = page(metrics_port).await;
        (samples(&text), text)
    };
    // What each step adds to the operation counts, as
    // `operation/outcome` → count.
    let ops_of = |samples: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        samples
            .iter()
            .filter(|(key, value)| key.starts_with("session_operations_total{") && **value > 0.0)
            .map(|(key, value)| {
                let label = |name: &str| {
                    let start = key.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                    key[start..].split('"').next().unwrap().to_owned()
                };
                (
                    format!("{}/{}", label("operation"), label("outcome")),
                    *value,
                )
            })
            .collect()
    };
    let mut before = ops_of(&scrape().await.0);
    let mut step = |after: BTreeMap<String, f64>| {
        let delta: BTreeMap<String, f64> = after
            .iter()
            .map(|(key, value)| (key.clone(), value - before.get(key).copied().unwrap_or(0.0)))
            .filter(|(_, delta)| *delta != 0.0)
            .collect();
        before = after;
        delta
    };
    let expect = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), *value))
            .collect()
    };

    // initialize: the per-principal cap's listing, rmcp's store looking
    // for the new id (absent) before it creates the session, and the
    // guard's read-back before the answer is let through.
    let response = post_to(port, None, initialize(1)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    response.text().await.unwrap();
    assert_eq!(
        step(ops_of(&scrape().await.0)),
        expect(&[
            ("list_owned/ok", 1.0),
            ("get/absent", 1.0),
            ("create/ok", 1.0),
            ("get/ok", 1.0)
        ])
    );
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = post_to(port, Some(&session), initialized)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // The guard's read.
    assert_eq!(step(ops_of(&scrape().await.0)), expect(&[("get/ok", 1.0)]));
    for id in [2, 3] {
        let response = post_to(port, Some(&session), counter_call(id))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.text().await.unwrap().contains("\"result\""));
        // The guard's read, and the counter's conditional write.
        assert_eq!(
            step(ops_of(&scrape().await.0)),
            expect(&[("get/ok", 1.0), ("update_if/ok", 1.0)])
        );
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    let response = post_to(port, Some(&unknown), counter_call(4))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // The guard's read finds nothing and answers 404 itself.
    assert_eq!(
        step(ops_of(&scrape().await.0)),
        expect(&[("get/absent", 1.0)])
    );
    redis.stall().unwrap();
    let response = post_to(port, Some(&session), counter_call(5)).send().await;
    redis.resume().unwrap();
    assert_eq!(response.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        step(ops_of(&scrape().await.0)),
        expect(&[("get/error", 1.0)])
    );
    // The connection that timed out is replaced: the DELETE may meet a 503
    // until it is.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut unavailable = 0;
    loop {
        let response = http()
            .delete(format!("http://127.0.0.1:{port}/mcp"))
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", PROTOCOL)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE
            && std::time::Instant::now() < deadline
        {
            unavailable += 1;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        assert!(response.status().is_success(), "{}", response.status());
        break;
    }
    // The guard reads the session (its owner is checked), deletes it, and
    // rmcp's store deletes it again, finding nothing. DELETEs that met a
    // 503 each failed at the guard's read.
    let mut deleted = vec![("get/ok", 1.0), ("delete/ok", 1.0), ("delete/absent", 1.0)];
    if unavailable > 0 {
        deleted.push(("get/error", f64::from(unavailable)));
    }
    assert_eq!(step(ops_of(&scrape().await.0)), expect(&deleted));

    let (samples, text) = scrape().await;
    let responses = |status: &str| {
        sample(
            &samples,
            "gateway_http_responses_total",
            &[("status", status)],
        )
    };
    assert_eq!(
        responses("404"),
        2.0,
        "/metrics on the public port, and the unknown session"
    );
    assert_eq!(responses("503"), 1.0 + f64::from(unavailable));
    assert_eq!(
        sample(
            &samples,
            "session_operation_errors_total",
            &[
                ("operation", "get"),
                ("backend", "redis"),
                ("error_type", "timeout")
            ]
        ),
        1.0 + f64::from(unavailable)
    );
    // Every recorded operation has its latency in the histogram.
    let recorded: f64 = samples
        .iter()
        .filter(|(key, _)| key.starts_with("session_operations_total{"))
        .map(|(_, value)| value)
        .sum();
    let timed: f64 = samples
        .iter()
        .filter(|(key, _)| key.starts_with("session_operation_duration_seconds_count{"))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(recorded, timed);
    assert!(!text.contains(&session) && !text.contains(&unknown));
}

/// Without `--metrics-listen` there is no endpoint, and nothing listens
/// beyond the public port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_option_there_is_no_endpoint() {
    let mut children = Children::new();
    let port = start(&mut children, None, None).await;
    let response = http()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(!children.log("gateway").contains("metrics on"));
}

/// On local storage a scrape reports the live sessions exactly
/// (`session_live_sessions`), without touching any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_storage_reports_its_live_sessions() {
    let mut children = Children::new();
    let metrics_port = free_port();
    let port = start(&mut children, None, Some(metrics_port)).await;
    let live = || async {
        let text = page(metrics_port).await;
        sample(
            &samples(&text),
            "session_live_sessions",
            &[("backend", "local")],
        )
    };
    assert_eq!(live().await, 0.0);
    let mut sessions = Vec::new();
    for id in 0..3 {
        let response = post_to(port, None, initialize(id)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        sessions.push(
            response.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        response.text().await.unwrap();
    }
    assert_eq!(live().await, 3.0);
    let response = http()
        .delete(format!("http://127.0.0.1:{port}/mcp"))
        .header("mcp-session-id", &sessions[0])
        .header("mcp-protocol-version", PROTOCOL)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(live().await, 2.0);
}
