//! Scenario 10: bad configuration.
//!
//! A table of invalid configurations, as configuration files
//! (`SessionConfig::from_toml`, then `build_manager`) and as `RedisConfig`
//! values (`RedisStorage::connect`, `session_factory::new_manager`). Each
//! must be refused with `Error::Config` naming the field at fault, before
//! any network access: every address in the table is a `TcpListener` owned
//! here, which must never see a connection.

use std::net::TcpListener;
use std::time::Duration;

use session_core::config::{PemSource, RedisConfig, SentinelConfig, TlsConfig};
use session_core::{Error, Session, SessionType};
use session_factory::SessionConfig;
use session_redis::RedisStorage;

use crate::Outcome;

/// The figure's name.
pub const NAME: &str = "bad-configuration";

/// What a case's error must name.
#[derive(Clone, Copy, Debug)]
enum Names {
    /// The error's field is exactly this path (for a missing key, the
    /// key's own path, not its table's).
    Field(&'static str),
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
        (Err(Error::Config { field, reason }), Names::Field(expected)) if field == expected => {
            Ok(format!("{field}: {reason}"))
        }
        (Err(error), names) => Err(format!(
            "expected a config error naming {names:?}, got {error:?}"
        )),
        (Ok(()), names) => Err(format!(
            "accepted; expected a config error naming {names:?}"
        )),
    }
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
            "zero operation timeout",
            format!(
                "ttl = \"30m\"\noperation_timeout = \"0s\"\n[redis]\n{at}\nkey_prefix = \"s:\""
            ),
            Field("operation_timeout"),
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
        case("TOML syntax error", "ttl = ".into(), Field("(syntax)")),
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
            Err(error) => Err(error),
            Ok(config) => config
                .build_manager(|id| Session::new(id, SessionType::Mcp))
                .await
                .map(drop),
        };
        if let Err(problem) = check_error(result, case.names) {
            wrong.push(format!("{}: {problem}", case.label));
        }
        check_network(case.label, &mut wrong);
    }

    // The same rules through the programmatic API.
    let base = RedisConfig::standalone(&addr, "s:");
    let mut programmatic: Vec<(&str, RedisConfig, Names)> = Vec::new();
    let mut both = base.clone();
    both.sentinel = Some(SentinelConfig::new("m", [addr.clone()]));
    programmatic.push((
        "both addr and sentinel",
        both,
        Names::Field("redis.sentinel"),
    ));
    let mut cluster = RedisConfig::cluster(&addr, "s:");
    cluster.db = 1;
    programmatic.push(("cluster with db > 0", cluster, Names::Field("redis.db")));
    programmatic.push((
        "key prefix without ':'",
        RedisConfig::standalone(&addr, "sessions"),
        Names::Field("redis.key_prefix"),
    ));
    let mut zero = base.clone();
    zero.command_timeout = Duration::ZERO;
    programmatic.push((
        "zero command timeout",
        zero,
        Names::Field("redis.command_timeout"),
    ));
    let mut unreadable = base.clone();
    unreadable.tls = Some(TlsConfig::with_ca(PemSource::File(
        "/nonexistent/ca.pem".into(),
    )));
    programmatic.push((
        "unreadable PEM",
        unreadable,
        Names::Field("redis.tls.ca_cert"),
    ));
    let mut no_key = base.clone();
    let mut tls = TlsConfig::with_ca(PemSource::File(cert.clone().into()));
    tls.client_cert = Some(PemSource::File(cert.clone().into()));
    no_key.tls = Some(tls);
    programmatic.push((
        "certificate without key",
        no_key,
        Names::Field("redis.tls.client_key"),
    ));
    let mut two_passwords = base.clone();
    two_passwords.password = Some("x".into());
    two_passwords.password_env = Some("HOME".into());
    programmatic.push((
        "password and password_env",
        two_passwords,
        Names::Field("redis.password"),
    ));
    for (label, config, names) in programmatic {
        seen += 1;
        let result = RedisStorage::connect(&config).await.map(drop);
        if let Err(problem) = check_error(result, names) {
            wrong.push(format!("{label} (RedisStorage::connect): {problem}"));
        }
        seen += 1;
        let result = session_factory::new_manager(
            Duration::from_secs(60),
            |id| Session::new(id, SessionType::Mcp),
            Some(config),
        )
        .await
        .map(drop);
        if let Err(problem) = check_error(result, names) {
            wrong.push(format!("{label} (new_manager): {problem}"));
        }
        check_network(label, &mut wrong);
    }
    // A zero TTL through the programmatic constructor: refused before the
    // network, as a typed error (InvalidInput: the TTL is an argument here,
    // not a configuration key).
    seen += 1;
    let zero_ttl = session_factory::new_manager(
        Duration::ZERO,
        |id| Session::new(id, SessionType::Mcp),
        Some(base.clone()),
    )
    .await;
    match &zero_ttl {
        Err(Error::InvalidInput(reason)) | Err(Error::Config { reason, .. })
            if reason.contains("TTL") => {}
        other => wrong.push(format!("zero TTL (new_manager): {other:?}")),
    }
    // Background connection attempts would show up a little later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_network("(after all cases)", &mut wrong);

    outcome.figure(format!(
        "{seen} invalid configurations ({} files, {} values): {} refused with a config error naming the field; connections accepted by the listener they point at: {accepted_connections}",
        cases.len(),
        seen - cases.len(),
        seen - wrong.len()
    ));
    outcome.check(
        wrong.is_empty(),
        format!("every invalid configuration is a config error naming its field, before any network: {wrong:#?}"),
    );
    Ok(())
}
