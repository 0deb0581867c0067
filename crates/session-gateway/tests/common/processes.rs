//! Processes for the end-to-end tests: gateway replicas, nginx in front of
//! them, their logs, and the configuration files they read.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::free_port;

/// The gateway binary of this package.
pub const GATEWAY: &str = env!("CARGO_BIN_EXE_session-gateway");
/// How long a process may take to answer its health check.
pub const STARTUP: Duration = Duration::from_secs(15);

/// Child processes, killed and waited for when the test ends, pass or fail.
/// On a failure their logs are printed.
pub struct Children {
    dir: tempfile::TempDir,
    procs: Vec<(String, Child, PathBuf)>,
}

impl Children {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            procs: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `command` with its output in `<dir>/<name>.log`.
    pub fn spawn(&mut self, name: &str, command: &mut Command) {
        let log = self.dir().join(format!("{name}.log"));
        let file = File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        self.procs.push((name.to_owned(), child, log));
    }

    /// Starts a gateway replica.
    pub fn gateway(&mut self, name: &str, port: u16, config: &Path) {
        self.gateway_with_env(name, port, config, &[]);
    }

    /// Starts a gateway replica with `env` added to its environment (a
    /// secret the configuration names, say).
    pub fn gateway_with_env(&mut self, name: &str, port: u16, config: &Path, env: &[(&str, &str)]) {
        let mut command = Command::new(GATEWAY);
        command
            .arg("--config")
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--replica", name])
            .env("RUST_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        self.spawn(name, &mut command);
    }

    /// Panics (with the log) if `name` has exited.
    pub fn check_running(&mut self, name: &str) {
        let (_, child, log) = self.procs.iter_mut().find(|(n, ..)| n == name).unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{name} exited with {status}:\n{log}");
        }
    }

    pub fn log(&self, name: &str) -> String {
        let (.., log) = self.procs.iter().find(|(n, ..)| n == name).unwrap();
        std::fs::read_to_string(log).unwrap_or_default()
    }

    pub fn stop(&mut self, name: &str) {
        if let Some(index) = self.procs.iter().position(|(n, ..)| n == name) {
            let (_, mut child, _) = self.procs.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (name, child, log) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- last lines of {name}'s log ----");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A configuration file on the Redis server `addr`, with its own key prefix.
pub fn redis_config(dir: &Path, addr: &str, extra: &str) -> PathBuf {
    let prefix = format!("e2e:{}:", uuid::Uuid::new_v4().simple());
    write(
        dir,
        "redis.toml",
        &format!("ttl = \"30m\"\n\n[redis]\naddr = \"{addr}\"\nkey_prefix = \"{prefix}\"\n{extra}"),
    )
}

/// GET /health; the status and the body (JSON), or `None` if nothing answers.
pub async fn health(http: &reqwest::Client, port: u16) -> Option<(StatusCode, Value)> {
    let response = http
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .ok()?;
    let status = response.status();
    Some((status, response.json().await.ok()?))
}

/// Waits until `/health` of `name` answers `want`.
pub async fn wait_health(
    children: &mut Children,
    http: &reqwest::Client,
    name: &str,
    port: u16,
    want: StatusCode,
) -> Value {
    let deadline = Instant::now() + STARTUP;
    loop {
        children.check_running(name);
        if let Some((status, body)) = health(http, port).await
            && status == want
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: /health did not answer {want} within {STARTUP:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts nginx in front of `upstreams`: round robin, no affinity.
pub async fn start_nginx(
    children: &mut Children,
    http: &reqwest::Client,
    nginx: &str,
    upstreams: &[u16],
) -> u16 {
    let port = free_port();
    let dir = children.dir().join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = session_testenv::nginx::round_robin_conf(nginx, &dir, port, upstreams);
    let conf_path = write(&dir, "nginx.conf", &conf);
    children.spawn(
        "nginx",
        &mut session_testenv::nginx::command(nginx, &dir, &conf_path),
    );
    wait_health(children, http, "nginx", port, StatusCode::OK).await;
    port
}

/// Starts replicas `a` and `b` on `config` (with `env` added to their
/// environment) and waits until both are healthy; their ports.
pub async fn start_replicas(
    children: &mut Children,
    http: &reqwest::Client,
    config: &Path,
    env: &[(&str, &str)],
) -> [u16; 2] {
    let ports = [free_port(), free_port()];
    for (name, port) in ["a", "b"].into_iter().zip(ports) {
        children.gateway_with_env(name, port, config, env);
    }
    for (name, port) in ["a", "b"].into_iter().zip(ports) {
        wait_health(children, http, name, port, StatusCode::OK).await;
    }
    ports
}

/// Replicas `a` and `b` on the Redis server `redis` (with `extra` after the
/// `[redis]` table of their configuration, and `env` in their environment),
/// healthy, behind nginx at `nginx`, round robin: the children, the
/// replicas' ports and nginx's port.
pub async fn pair_behind_nginx(
    redis: &str,
    nginx: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> (Children, [u16; 2], u16) {
    let http = super::http();
    let mut children = Children::new();
    let config = redis_config(children.dir(), redis, extra);
    let ports = start_replicas(&mut children, &http, &config, env).await;
    let nginx_port = start_nginx(&mut children, &http, nginx, &ports).await;
    (children, ports, nginx_port)
}

/// Prints nginx's access log, upstreams named by replica.
pub fn print_access_log(children: &Children, replicas: &[(&str, u16)]) {
    let log = std::fs::read_to_string(children.dir().join("nginx/access.log")).unwrap();
    for line in log.lines() {
        let mut line = line.to_owned();
        for (name, port) in replicas {
            line = line.replace(&format!("upstream=127.0.0.1:{port}"), &format!("-> {name}"));
        }
        eprintln!("nginx: {line}");
    }
}

/// The protocol version the process tests speak over HTTP.
pub const HTTP_PROTOCOL: &str = "2025-06-18";

/// A JSON-RPC POST to the gateway process on `port`, in session `session`
/// when given, as a handshake-era client sends it.
pub fn post_to(port: u16, session: Option<&str>, body: Value) -> reqwest::RequestBuilder {
    let mut request = super::http()
        .post(format!("http://127.0.0.1:{port}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", HTTP_PROTOCOL)
        .body(body.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request
}
