//! The binary's environment fall-backs: every option can come from a
//! `SESSION_GATEWAY_*` variable, a flag beats its variable, and a bad value
//! in a variable is refused like a bad flag. The flags themselves are tested
//! on the parser (`src/main.rs`); the environment is tested here, on the
//! binary, because setting the test process's own environment would race the
//! other tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::{free_port, http};

const GATEWAY: &str = env!("CARGO_BIN_EXE_session-gateway");

/// Every variable the binary reads, removed from each child's environment
/// so that only what a test sets counts.
const VARIABLES: [&str; 6] = [
    "SESSION_GATEWAY_CONFIG",
    "SESSION_GATEWAY_LISTEN",
    "SESSION_GATEWAY_REPLICA",
    "SESSION_GATEWAY_ALLOWED_HOSTS",
    "SESSION_GATEWAY_ALLOWED_ORIGINS",
    "SESSION_GATEWAY_LOCAL_IDLE",
];

/// The binary with a clean `SESSION_GATEWAY_*` environment.
fn gateway() -> Command {
    let mut command = Command::new(GATEWAY);
    for variable in VARIABLES {
        command.env_remove(variable);
    }
    command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// A running gateway, killed and waited for when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and waits until `/health` on `port` answers; returns the
/// running process and the `x-served-by` header of that answer.
async fn start(command: &mut Command, port: u16) -> (Running, String) {
    // The standard error goes to a file, for the panic of a gateway that
    // exits to say why.
    let stderr = tempfile::tempfile().unwrap();
    let mut running = Running(command.stderr(stderr.try_clone().unwrap()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            let mut said = String::new();
            let mut stderr = stderr;
            stderr.seek(SeekFrom::Start(0)).unwrap();
            stderr.read_to_string(&mut said).unwrap();
            panic!("the gateway exited with {status}:\n{said}");
        }
        let health = http()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await;
        if let Ok(response) = health {
            assert_eq!(response.status(), StatusCode::OK);
            let served_by = response.headers()["x-served-by"]
                .to_str()
                .unwrap()
                .to_owned();
            return (running, served_by);
        }
        assert!(Instant::now() < deadline, "the gateway did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status of an `initialize` sent to `port` with the `Host` header
/// `host`: the gateway answers 403 to a host that is not allowed.
async fn initialize_status(port: u16, host: &str) -> StatusCode {
    initialize_status_from(port, host, None).await
}

/// [`initialize_status`] with an `Origin` header, as a browser sends.
async fn initialize_status_from(port: u16, host: &str, origin: Option<&str>) -> StatusCode {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "command-line-test", "version": "0"},
        },
    });
    let mut request = http()
        .post(format!("http://127.0.0.1:{port}/mcp"))
        .header("host", host)
        .header("accept", "application/json, text/event-stream");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.json(&body).send().await.unwrap().status()
}

#[tokio::test]
async fn every_option_falls_back_on_its_variable() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("local.toml");
    std::fs::write(&config, "ttl = \"5m\"\n").unwrap();
    let log = dir.path().join("gateway.log");
    let (_running, served_by) = start(
        gateway()
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .env("SESSION_GATEWAY_CONFIG", &config)
            .env("SESSION_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("SESSION_GATEWAY_REPLICA", "from-env")
            .env(
                "SESSION_GATEWAY_ALLOWED_HOSTS",
                "mcp.example.com,api.example.com",
            )
            .env("SESSION_GATEWAY_LOCAL_IDLE", "90s")
            .env("SESSION_GATEWAY_ALLOWED_ORIGINS", "chat.example.com"),
        port,
    )
    .await;
    assert_eq!(served_by, "from-env");
    // The configuration file's TTL, in the start-up line: the file was read.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("ttl=300s"), "{log}");
    // A replica name on local storage, and no [auth] table: both warned of.
    assert!(
        log.contains("a replica name is set but storage is local"),
        "{log}"
    );
    assert!(log.contains("anonymous mode"), "{log}");
    let health: Value = http()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health,
        json!({"status": "ok", "replica": "from-env", "storage": "local", "topology": "in-process", "foreign_requests": 0, "sessions": 0})
    );
    // SESSION_GATEWAY_LOCAL_IDLE has no outside effect within a test's
    // time; that the gateway started shows its value was accepted (a bad
    // one is refused, below). Both names of the list are allowed, and loopback names no longer are.
    assert_eq!(
        initialize_status(port, "mcp.example.com").await,
        StatusCode::OK
    );
    assert_eq!(
        initialize_status(port, "api.example.com").await,
        StatusCode::OK
    );
    assert_eq!(
        initialize_status(port, &format!("127.0.0.1:{port}")).await,
        StatusCode::FORBIDDEN
    );
    // A browser app on the allowed origin is served; one elsewhere, or the
    // gateway's own host as an origin once origins are listed, is not.
    for (origin, status) in [
        ("https://chat.example.com", StatusCode::OK),
        ("https://evil.example.com", StatusCode::FORBIDDEN),
        ("https://mcp.example.com", StatusCode::FORBIDDEN),
    ] {
        assert_eq!(
            initialize_status_from(port, "mcp.example.com", Some(origin)).await,
            status,
            "{origin}"
        );
    }
}

#[tokio::test]
async fn a_flag_beats_its_variable() {
    let port = free_port();
    let (_running, served_by) = start(
        gateway()
            .env("SESSION_GATEWAY_LISTEN", "127.0.0.1:1")
            .env("SESSION_GATEWAY_REPLICA", "from-env")
            .env("SESSION_GATEWAY_ALLOWED_HOSTS", "mcp.example.com")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--replica", "from-flag", "--allowed-host", "*"]),
        port,
    )
    .await;
    assert_eq!(served_by, "from-flag");
    assert_eq!(
        initialize_status(port, "evil.example").await,
        StatusCode::OK
    );
}

#[test]
fn a_bad_value_in_a_variable_is_refused_like_a_bad_flag() {
    let output = gateway()
        .env("SESSION_GATEWAY_LOCAL_IDLE", "soon")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("invalid value 'soon' for '--local-idle <time>'"),
        "{stderr}"
    );
    let output = gateway().arg("--verbose").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("unexpected argument '--verbose'"),
        "{stderr}"
    );
}

/// The `[auth]` and `[limits]` tables of the configuration file reach the
/// running binary: in JWT mode a request without a token is a 401 with the
/// challenge, and the HMAC secret comes from the variable the file names;
/// in anonymous mode the cap counts per client address.
#[tokio::test]
async fn the_auth_and_limits_tables_reach_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("jwt.toml");
    std::fs::write(
        &jwt,
        "ttl = \"5m\"\n[auth]\nmode = \"jwt\"\nissuer = \"https://issuer.test\"\n\
         audience = \"gateway\"\nhmac_secret_env = \"TEST_GATEWAY_SECRET\"\n",
    )
    .unwrap();
    let port = free_port();
    let (_running, _) = start(
        gateway()
            .env("TEST_GATEWAY_SECRET", "0123456789abcdef0123456789abcdef!")
            .args(["--config"])
            .arg(&jwt)
            .args(["--listen", &format!("127.0.0.1:{port}")]),
        port,
    )
    .await;
    let response = http()
        .post(format!("http://127.0.0.1:{port}/mcp"))
        .header("host", "localhost")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer resource_metadata="),
        "{challenge}"
    );

    // Without the secret's variable the binary refuses to start, naming the
    // variable (and no secret).
    let output = gateway()
        .args(["--config"])
        .arg(&jwt)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("TEST_GATEWAY_SECRET is not set"), "{said}");

    let limited = dir.path().join("limited.toml");
    std::fs::write(&limited, "ttl = \"5m\"\n[limits]\nper_principal = 2\n").unwrap();
    let port = free_port();
    let (_running, _) = start(
        gateway()
            .args(["--config"])
            .arg(&limited)
            .args(["--listen", &format!("127.0.0.1:{port}")]),
        port,
    )
    .await;
    assert_eq!(initialize_status(port, "localhost").await, StatusCode::OK);
    assert_eq!(initialize_status(port, "localhost").await, StatusCode::OK);
    assert_eq!(
        initialize_status(port, "localhost").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
