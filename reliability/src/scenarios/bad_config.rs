//! Scenario 10: bad configuration.
//!
//! A table of invalid configurations, as configuration files
//! (`SessionConfig::from_toml`, then `session_factory::new_manager`) and as
//! settings built in code (the `RedisConfig` constructors, and the file
//! types an application embeds in its own serde types). Each must be
//! refused with `Error::Config` naming the field at fault (a file's errors
//! naming the file too), before any network access: every address in the
//! table is a `TcpListener` owned here, which must never see a connection.
//!
//! Settings built in code are checked when they are built: `RedisStorage`
//! and `new_manager` take resolved settings that cannot be invalid, so a
//! rule broken in code is refused by the constructor, before anything can
//! connect.

use std::net::TcpListener;
use std::time::Duration;

use session_config::file::{PasswordSource, RedisFile};
use session_config::{ConfigError, Pem, RedisConfig, Secret};
use session_core::{Error, SessionType, Ttl};
use session_factory::SessionConfig;

use crate::Outcome;

/// The figure's name.
pub const NAME: &str = "bad-configuration";

/// What a case's error must name.
#[derive(Clone, Copy, Debug)]
enum Names {
    /// The error's field is exactly this path (for a missing key, the
    /// key's own path, not its table's).
    Field(&'static str),
    /// The error is about the file as a whole (it is not TOML): it has no
    /// field.
    Whole,
}

struct Case {
    label: &'static str,
    toml: String,
    names: Names,
}

fn case(label: &'static str, toml: String, names: Names) -> Case {
    Case { label, toml, names }
}

/// Runs the table.
pub async fn run() -> Outcome {
    let mut outcome = Outcome::new(NAME);
    let result = try_run(&mut outcome).await;
    Outcome::or_error(NAME, result.map(|()| outcome))
}

fn check_error(result: Result<(), Error>, names: Names) -> Result<String, String> {
    match (result, names) {
        (Err(Error::Config(error)), Names::Field(expected)) if error.field() == Some(expected) => {
            Ok(format!("{expected}: {}", error.reason()))
        }
        (Err(Error::Config(error)), Names::Whole) if error.field().is_none() => {
            Ok(format!("(whole file): {}", error.reason()))
        }
        (Err(error), names) => Err(format!(
            "expected a config error naming {names:?}, got {error:?}"
        )),
        (Ok(()), names) => Err(format!(
            "accepted; expected a config error naming {names:?}"
        )),
    }
}

/// A `[redis]` table as an application's own configuration would embed it
/// (`session_config::file::RedisFile` inside its serde types, here read
/// from JSON), converted the way `SessionConfig::from_toml` converts it.
/// This is how code reaches the combinations the `RedisConfig`
/// constructors cannot express at all.
fn embedded(table: serde_json::Value) -> Result<RedisConfig, ConfigError> {
    let file: RedisFile = serde_json::from_value(table)
        .map_err(|error| ConfigError::whole(format!("not a [redis] table: {error}")))?;
    RedisConfig::try_from(file)
}

async fn try_run(outcome: &mut Outcome) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?.to_string();
    let scratch = crate::env::scratch_dir("bad-config")?;
    let directory = scratch.path().display().to_string();
    let cert = scratch.path().join("cert.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )?;
    let cert = cert.display().to_string();

    let redis = |body: &str| format!("ttl = \"30m\"\n[redis]\nkey_prefix = \"s:\"\n{body}\n");
    let at = format!("addr = \"{addr}\"");
    let sentinel = format!("[redis.sentinel]\nmaster_name = \"m\"\naddrs = [\"{addr}\"]");
    use Names::Field;
    let cases = vec![
        case(
            "both addr and sentinel",
            redis(&format!("{at}\n{sentinel}")),
            Field("redis.sentinel"),
        ),
        case("neither addr nor sentinel", redis(""), Field("redis.addr")),
        case(
            "cluster with db > 0",
            redis(&format!("{at}\ncluster = true\ndb = 2")),
            Field("redis.db"),
        ),
        case(
            "sentinel with cluster",
            redis(&format!("cluster = true\n{sentinel}")),
            Field("redis.cluster"),
        ),
        case(
            "key prefix without ':'",
            format!("ttl = \"30m\"\n[redis]\n{at}\nkey_prefix = \"sessions\""),
            Field("redis.key_prefix"),
        ),
        case(
            "empty key prefix",
            format!("ttl = \"30m\"\n[redis]\n{at}\nkey_prefix = \"\""),
            Field("redis.key_prefix"),
        ),
        case(
            "missing key prefix",
            format!("ttl = \"30m\"\n[redis]\n{at}"),
            Field("redis.key_prefix"),
        ),
        case(
            "zero TTL",
            format!("ttl = \"0s\"\n[redis]\n{at}\nkey_prefix = \"s:\""),
            Field("ttl"),
        ),
        case(
            "negative TTL",
            format!("ttl = \"-5s\"\n[redis]\n{at}\nkey_prefix = \"s:\""),
            Field("ttl"),
        ),
        case(
            "TTL as a number",
            format!("ttl = 30\n[redis]\n{at}\nkey_prefix = \"s:\""),
            Field("ttl"),
        ),
        case(
            "missing TTL",
            format!("[redis]\n{at}\nkey_prefix = \"s:\""),
            Field("ttl"),
        ),
        case(
            "zero max lifetime",
            format!("ttl = \"30m\"\nmax_lifetime = \"0s\"\n[redis]\n{at}\nkey_prefix = \"s:\""),
            Field("max_lifetime"),
        ),
        case(
            "zero command timeout",
            redis(&format!("{at}\ncommand_timeout = \"0s\"")),
            Field("redis.command_timeout"),
        ),
        case(
            "zero connect timeout",
            redis(&format!("{at}\nconnect_timeout = \"0s\"")),
            Field("redis.connect_timeout"),
        ),
        case(
            "unparsable duration",
            redis(&format!("{at}\ncommand_timeout = \"5 parsecs\"")),
            Field("redis.command_timeout"),
        ),
        case(
            "reconnect min delay above max delay",
            redis(&format!(
                "{at}\n[redis.reconnect]\nmin_delay = \"5s\"\nmax_delay = \"1s\""
            )),
            Field("redis.reconnect.min_delay"),
        ),
        case(
            "address without port",
            redis("addr = \"127.0.0.1\""),
            Field("redis.addr"),
        ),
        case(
            "address with port 0",
            redis("addr = \"127.0.0.1:0\""),
            Field("redis.addr"),
        ),
        case(
            "db out of range",
            redis(&format!("{at}\ndb = 300")),
            Field("redis.db"),
        ),
        case(
            "unknown codec",
            redis(&format!("{at}\ncodec = \"yaml\"")),
            Field("redis.codec"),
        ),
        case(
            "unknown connect mode",
            redis(&format!("{at}\nconnect = \"sometimes\"")),
            Field("redis.connect"),
        ),
        case(
            "unknown top-level key",
            format!("ttl = \"30m\"\nttl_seconds = 5\n[redis]\n{at}\nkey_prefix = \"s:\""),
            Field("ttl_seconds"),
        ),
        case(
            "unknown redis key",
            redis(&format!("{at}\npasword = \"x\"")),
            Field("redis.pasword"),
        ),
        case(
            "unknown tls key",
            redis(&format!(
                "{at}\n[redis.tls]\nca_certs = {{ file = \"{cert}\" }}"
            )),
            Field("redis.tls.ca_certs"),
        ),
        case(
            "unknown PEM source",
            redis(&format!(
                "{at}\n[redis.tls]\nca_cert = {{ path = \"{cert}\" }}"
            )),
            Field("redis.tls.ca_cert"),
        ),
        case(
            "password and password_env",
            redis(&format!("{at}\npassword = \"x\"\npassword_env = \"HOME\"")),
            Field("redis.password"),
        ),
        case(
            "password and password_file",
            redis(&format!(
                "{at}\npassword = \"x\"\npassword_file = \"{cert}\""
            )),
            Field("redis.password"),
        ),
        case(
            "sentinel password and password_env",
            redis(&format!(
                "{sentinel}\npassword = \"x\"\npassword_env = \"HOME\""
            )),
            Field("redis.sentinel.password"),
        ),
        case(
            "password_env names an unset variable",
            redis(&format!(
                "{at}\npassword_env = \"SESSION_RELIABILITY_SURELY_UNSET\""
            )),
            Field("redis.password_env"),
        ),
        case(
            "password_file does not exist",
            redis(&format!("{at}\npassword_file = \"/nonexistent/password\"")),
            Field("redis.password_file"),
        ),
        case(
            "sentinel without master name",
            redis(&format!(
                "[redis.sentinel]\nmaster_name = \"\"\naddrs = [\"{addr}\"]"
            )),
            Field("redis.sentinel.master_name"),
        ),
        case(
            "sentinel without addresses",
            redis("[redis.sentinel]\nmaster_name = \"m\"\naddrs = []"),
            Field("redis.sentinel.addrs"),
        ),
        case(
            "unreadable PEM file",
            redis(&format!(
                "{at}\n[redis.tls]\nca_cert = {{ file = \"/nonexistent/ca.pem\" }}"
            )),
            Field("redis.tls.ca_cert"),
        ),
        case(
            "PEM path is a directory",
            redis(&format!(
                "{at}\n[redis.tls]\nca_cert = {{ file = \"{directory}\" }}"
            )),
            Field("redis.tls.ca_cert"),
        ),
        case(
            "PEM that holds no certificate",
            redis(&format!(
                "{at}\n[redis.tls]\nca_cert = {{ pem = \"not a certificate\" }}"
            )),
            Field("redis.tls.ca_cert"),
        ),
        case(
            "client certificate without key",
            redis(&format!(
                "{at}\n[redis.tls]\nca_cert = {{ file = \"{cert}\" }}\nclient_cert = {{ file = \"{cert}\" }}"
            )),
            Field("redis.tls.client_key"),
        ),
        case(
            "client key without certificate",
            redis(&format!(
                "{at}\n[redis.tls]\nca_cert = {{ file = \"{cert}\" }}\nclient_key = {{ file = \"{cert}\" }}"
            )),
            Field("redis.tls.client_cert"),
        ),
        case(
            "unreadable client key",
            redis(&format!(
                "{at}\n[redis.tls]\nclient_cert = {{ file = \"{cert}\" }}\nclient_key = {{ file = \"/nonexistent/key.pem\" }}\ninsecure_skip_verify = true"
            )),
            Field("redis.tls.client_key"),
        ),
        case(
            "sentinel TLS without data-node TLS",
            redis(&format!(
                "{sentinel}\n[redis.sentinel.tls]\nca_cert = {{ file = \"{cert}\" }}"
            )),
            Field("redis.sentinel.tls"),
        ),
        case(
            "lazy connect with an invalid prefix",
            format!("ttl = \"30m\"\n[redis]\n{at}\nkey_prefix = \"nocolon\"\nconnect = \"lazy\""),
            Field("redis.key_prefix"),
        ),
        case("TOML syntax error", "ttl = ".into(), Names::Whole),
    ];

    let mut accepted_connections = 0usize;
    let mut wrong = Vec::new();
    let mut seen = 0usize;
    let mut check_network = |label: &str, wrong: &mut Vec<String>| {
        while let Ok((_, peer)) = listener.accept() {
            accepted_connections += 1;
            wrong.push(format!(
                "{label}: reached the network (connection from {peer})"
            ));
        }
    };
    for case in &cases {
        seen += 1;
        let result = match SessionConfig::from_toml(&case.toml, "bad.toml") {
            Err(error) => {
                // An error found in the file names the file, so an operator
                // knows which one to fix.
                if error.origin() != Some("bad.toml") {
                    wrong.push(format!(
                        "{}: the error does not name the file: {error:?}",
                        case.label
                    ));
                }
                Err(Error::Config(error))
            }
            Ok(config) => session_factory::new_manager(&config, SessionType::Mcp)
                .await
                .map(drop),
        };
        if let Err(problem) = check_error(result, case.names) {
            wrong.push(format!("{}: {problem}", case.label));
        }
        check_network(case.label, &mut wrong);
    }

    // The same rules through the programmatic API, where each is checked
    // as the settings are built.
    let cert_file = serde_json::json!({ "file": cert });
    let programmatic: Vec<(&str, &str, Result<(), ConfigError>, Names)> = vec![
        (
            "both addr and sentinel",
            "embedded RedisFile",
            embedded(serde_json::json!({
                "addr": addr,
                "key_prefix": "s:",
                "sentinel": { "master_name": "m", "addrs": [addr] },
            }))
            .map(drop),
            Names::Field("redis.sentinel"),
        ),
        (
            "cluster with db > 0",
            "RedisConfig::cluster + with_db",
            RedisConfig::cluster(&addr, "s:")
                .and_then(|config| config.with_db(1))
                .map(drop),
            Names::Field("redis.db"),
        ),
        (
            "key prefix without ':'",
            "RedisConfig::standalone",
            RedisConfig::standalone(&addr, "sessions").map(drop),
            Names::Field("redis.key_prefix"),
        ),
        (
            "zero command timeout",
            "RedisConfig::with_timeouts",
            RedisConfig::standalone(&addr, "s:")
                .and_then(|config| {
                    config.with_timeouts(
                        session_config::redis::DEFAULT_CONNECT_TIMEOUT,
                        Duration::ZERO,
                    )
                })
                .map(drop),
            Names::Field("redis.command_timeout"),
        ),
        (
            "unreadable PEM",
            "Pem::read",
            Pem::read("redis.tls.ca_cert", "/nonexistent/ca.pem".as_ref()).map(drop),
            Names::Field("redis.tls.ca_cert"),
        ),
        (
            "certificate without key",
            "embedded RedisFile",
            embedded(serde_json::json!({
                "addr": addr,
                "key_prefix": "s:",
                "tls": { "ca_cert": cert_file, "client_cert": cert_file },
            }))
            .map(drop),
            Names::Field("redis.tls.client_key"),
        ),
        (
            "password and password_env",
            "PasswordSource::from_keys",
            PasswordSource::from_keys("redis", Some(Secret::new("x")), Some("HOME".into()), None)
                .map(drop),
            Names::Field("redis.password"),
        ),
    ];
    let programmatic_cases = programmatic.len();
    for (label, through, result, names) in programmatic {
        seen += 1;
        if let Err(problem) = check_error(result.map_err(Error::Config), names) {
            wrong.push(format!("{label} ({through}): {problem}"));
        }
        check_network(label, &mut wrong);
    }
    // A zero TTL in code: the same config error for the setting `ttl` as in
    // a file, before any storage exists.
    seen += 1;
    if let Err(problem) = check_error(Ttl::new(Duration::ZERO).map(drop), Names::Field("ttl")) {
        wrong.push(format!("zero TTL (Ttl::new): {problem}"));
    }
    // Background connection attempts would show up a little later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_network("(after all cases)", &mut wrong);

    outcome.figure(format!(
        "{seen} invalid configurations ({} files, {} built in code): {} refused with a config error naming the field; connections accepted by the listener they point at: {accepted_connections}",
        cases.len(),
        programmatic_cases + 1,
        seen - wrong.len()
    ));
    outcome.check(
        wrong.is_empty(),
        format!("every invalid configuration is a config error naming its field, before any network: {wrong:#?}"),
    );
    Ok(())
}
