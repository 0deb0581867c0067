//! Scenario 9: secrets never reach Debug, Display, logs or error messages.
//!
//! Everything the process logs is captured at TRACE level (every `tracing`
//! event and span of every crate, and every `log` record: fred logs through
//! `log`) while the library is driven through the ACL, TLS and mutual-TLS
//! servers, successfully and in every failure the servers can produce: a
//! wrong password, a wrong CA, a missing client certificate, invalid inline
//! key material, lazy connects that keep failing. The `Debug` and `Display`
//! text of every configuration, storage, manager and error on the way is
//! collected too, and the labels of every metric the managers recorded.
//! None of it may contain a password, a private key's PEM armour or any
//! line of its base64 body; no metric label and no operation span may
//! contain a session id.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use session_config::file::PasswordSource;
use session_config::{Auth, ClientIdentity, ConnectMode, Pem, RedisConfig, Secret, TlsConfig};
use session_core::{Manager, SessionId, SessionType};
use session_factory::SessionConfig;
use session_redis::RedisStorage;

use metrics_util::debugging::DebuggingRecorder;

use crate::Outcome;
use crate::capture::Capture;
use crate::env::SecureServers;
use crate::scenarios;

/// The figure's name.
pub const NAME: &str = "secrets-redacted";

/// Runs the scenario against the servers of `servers`.
pub async fn run(servers: &SecureServers) -> Outcome {
    let mut outcome = Outcome::new(NAME);
    let result = try_run(servers, &mut outcome).await;
    Outcome::or_error(NAME, result.map(|()| outcome))
}

/// Texts to search, with where they came from; the ids of the sessions
/// the scenario made; and the metric series it recorded, as text.
#[derive(Default)]
struct Texts(Vec<(String, String)>, Vec<String>, Vec<String>);

impl Texts {
    fn debug(&mut self, label: &str, value: &dyn std::fmt::Debug) {
        self.0
            .push((format!("{label} (Debug)"), format!("{value:?}")));
        self.0
            .push((format!("{label} (Debug, pretty)"), format!("{value:#?}")));
    }
    fn error(&mut self, label: &str, error: &dyn std::error::Error) {
        self.0
            .push((format!("{label} (Display)"), error.to_string()));
        self.0
            .push((format!("{label} (Debug)"), format!("{error:?}")));
        let mut source = error.source();
        while let Some(cause) = source {
            self.0
                .push((format!("{label} (source)"), cause.to_string()));
            source = cause.source();
        }
    }
    fn result<T, E: std::error::Error>(&mut self, label: &str, result: &Result<T, E>) {
        if let Err(error) = result {
            self.error(label, error);
        }
    }
}

fn acl_config(servers: &SecureServers, password: &str) -> anyhow::Result<RedisConfig> {
    acl_config_with(servers, Secret::new(password))
}

fn acl_config_with(servers: &SecureServers, password: Secret) -> anyhow::Result<RedisConfig> {
    Ok(
        RedisConfig::standalone(&servers.acl, &scenarios::unique_prefix("secrets"))?
            .with_auth(Auth::user(servers.acl_user.clone(), password))
            .with_timeouts(Duration::from_secs(2), Duration::from_secs(2))?,
    )
}

fn tls_config(addr: &str, tls: TlsConfig) -> anyhow::Result<RedisConfig> {
    Ok(
        RedisConfig::standalone(addr, &scenarios::unique_prefix("secrets"))?
            .with_tls(tls)?
            .with_timeouts(Duration::from_secs(2), Duration::from_secs(2))?,
    )
}

/// PEM data read from `path`, as a configuration file's `{ file = ... }`
/// would have it read.
fn pem_file(field: &str, path: &std::path::Path) -> anyhow::Result<Pem> {
    Ok(Pem::read(field, path)?)
}

/// A client certificate and key, for mutual TLS.
fn identity(cert_chain: &Pem, key: &Pem) -> ClientIdentity {
    ClientIdentity {
        cert_chain: cert_chain.clone(),
        key: key.clone(),
    }
}

/// Exercises a manager: every operation, then close.
async fn exercise(texts: &mut Texts, label: &str, config: &RedisConfig) {
    texts.debug(&format!("{label}: config"), config);
    let storage = RedisStorage::connect(config).await;
    texts.result(&format!("{label}: connect"), &storage);
    let Ok(storage) = storage else { return };
    texts.debug(&format!("{label}: storage"), &storage);
    // The manager's metric handles go to a recorder of this run's own:
    // their labels are searched like every other text.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let built = metrics::with_local_recorder(&recorder, || {
        Manager::builder(storage, scenarios::ttl()).build()
    });
    let manager = match built {
        Ok(manager) => manager,
        Err(error) => {
            texts.error(&format!("{label}: manager"), &error);
            return;
        }
    };
    texts.debug(&format!("{label}: manager"), &manager);
    let created = manager.create().await;
    texts.result(&format!("{label}: create"), &created);
    if let Ok(session) = created {
        texts.1.push(session.id().to_string());
        let mut edited = (*session).clone();
        edited.set_metadata("k", "v");
        texts.result(&format!("{label}: update"), &manager.update(edited).await);
        texts.result(&format!("{label}: get"), &manager.get(&session.id()).await);
        texts.result(
            &format!("{label}: delete"),
            &manager.delete(&session.id()).await,
        );
    }
    texts.result(&format!("{label}: count"), &manager.count().await);
    texts.result(&format!("{label}: close"), &manager.close().await);
    texts.result(
        &format!("{label}: after close"),
        &manager.get(&SessionId::new()).await,
    );
    for (key, ..) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        texts
            .2
            .push(format!("{}{{{}}}", key.key().name(), labels.join(",")));
    }
}

/// Expects `config` to fail at connect; records the error.
async fn expect_failure(texts: &mut Texts, label: &str, config: &RedisConfig) -> bool {
    texts.debug(&format!("{label}: config"), config);
    match RedisStorage::connect(config).await {
        Ok(storage) => {
            texts.debug(&format!("{label}: storage"), &storage);
            false
        }
        Err(error) => {
            texts.error(&format!("{label}: connect"), &error);
            true
        }
    }
}

async fn try_run(servers: &SecureServers, outcome: &mut Outcome) -> anyhow::Result<()> {
    let key_pem = std::fs::read_to_string(&servers.mtls_key)?;
    let wrong_password = format!("wrong-{}", SessionId::new().as_uuid().simple());
    let inline_fake_key = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        "TUlJRXZRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2N3Z2dTakFnRUFBb0lCQVFD"
    );
    // Every secret, and every line of key material long enough to be
    // recognisable.
    let mut secrets: Vec<(String, String)> = vec![
        ("the ACL password".into(), servers.acl_password.clone()),
        ("a wrong password".into(), wrong_password.clone()),
    ];
    for (name, pem) in [
        ("the client key", &key_pem),
        ("an invalid inline key", &inline_fake_key),
    ] {
        for line in pem.lines().map(str::trim) {
            if line.len() >= 16 && !line.starts_with("-----") {
                secrets.push((format!("a line of {name}'s base64"), line.to_owned()));
            }
        }
    }
    secrets.push(("PEM private key armour".into(), "PRIVATE KEY-----".into()));

    let capture = Capture::start().await?;
    let mut texts = Texts::default();
    let mut failures_seen = 0;

    // ACL: right password, wrong password, password from the environment,
    // and a lazy client that keeps failing to authenticate.
    exercise(
        &mut texts,
        "acl",
        &acl_config(servers, &servers.acl_password)?,
    )
    .await;
    failures_seen += usize::from(
        expect_failure(
            &mut texts,
            "acl wrong password",
            &acl_config(servers, &wrong_password)?,
        )
        .await,
    );
    {
        let config = acl_config(servers, &wrong_password)?.with_connect(ConnectMode::Lazy);
        let storage = RedisStorage::connect(&config).await;
        texts.result("acl wrong password lazy: connect", &storage);
        if let Ok(storage) = storage {
            let manager = Manager::builder(storage, scenarios::ttl()).build()?;
            for _ in 0..3 {
                let result = manager.get(&SessionId::new()).await;
                failures_seen += usize::from(result.is_err());
                texts.result("acl wrong password lazy: get", &result);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            texts.debug("acl wrong password lazy: manager", &manager);
            texts.result("acl wrong password lazy: close", &manager.close().await);
        }
    }
    {
        let variable = format!("SESSION_RELIABILITY_SECRET_{}", std::process::id());
        // Setting a variable would need `unsafe` (edition 2024), so the
        // password comes from a file, and the variable is one never set.
        let dir = crate::env::scratch_dir("secrets")?;
        let file = dir.path().join("password");
        std::fs::write(&file, format!("{}\n", servers.acl_password))?;
        let source = PasswordSource::File(file.clone());
        texts.debug("acl password_file: source before resolve", &source);
        let config = acl_config_with(servers, source.resolve("redis")?)?;
        exercise(&mut texts, "acl password_file", &config).await;
        let resolved = PasswordSource::Env(variable).resolve("redis");
        texts.result("acl password_env unset: resolve", &resolved);
        // A whole configuration file naming the password inline.
        let toml = format!(
            "ttl = \"30m\"\n[redis]\naddr = \"{}\"\nkey_prefix = \"s:\"\nusername = \"{}\"\npassword = \"{}\"\n",
            servers.acl, servers.acl_user, servers.acl_password
        );
        let parsed = SessionConfig::from_toml(&toml, "secrets.toml");
        match &parsed {
            Ok(parsed) => {
                texts.debug("session config file", parsed);
                let manager = session_factory::new_manager(parsed, SessionType::Mcp).await;
                texts.result("session config file: build", &manager);
                if let Ok(manager) = manager {
                    texts.debug("session config file: manager", &manager);
                    manager.close().await.ok();
                }
            }
            Err(error) => texts.error("session config file: parse", error),
        }
        let wrong = toml.replace(&servers.acl_password, &wrong_password);
        if let Ok(parsed) = SessionConfig::from_toml(&wrong, "secrets.toml") {
            let manager = session_factory::new_manager(&parsed, SessionType::Mcp).await;
            failures_seen += usize::from(manager.is_err());
            texts.result("session config file, wrong password: build", &manager);
        }
        let broken = format!("{toml}pasword = \"{wrong_password}\"\n");
        texts.result(
            "session config file, unknown key: parse",
            &SessionConfig::from_toml(&broken, "secrets.toml"),
        );
    }

    // Encryption at rest and hashed ids: keys from files, a configuration
    // file naming them, a read under another key of the same id (a typed
    // error naming the key id), and keys too short to use.
    {
        use base64::Engine as _;
        let base64 = base64::engine::general_purpose::STANDARD;
        let dir = crate::env::scratch_dir("secrets-keys")?;
        let random_key = || {
            let id = SessionId::new().as_uuid().as_u128().to_be_bytes();
            let more = SessionId::new().as_uuid().as_u128().to_be_bytes();
            [id, more].concat()
        };
        let (seal_key, other_key, hash_key) = (random_key(), random_key(), random_key());
        for (name, key) in [
            ("the encryption key", &seal_key),
            ("another encryption key", &other_key),
            ("the id hash key", &hash_key),
        ] {
            secrets.push((format!("{name} in base64"), base64.encode(key)));
            let hex: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
            secrets.push((format!("{name} in hex"), hex));
        }
        let write_key = |name: &str, key: &[u8]| -> anyhow::Result<String> {
            let path = dir.path().join(name);
            std::fs::write(&path, base64.encode(key))?;
            Ok(path.display().to_string())
        };
        let (seal_file, other_file, hash_file) = (
            write_key("seal", &seal_key)?,
            write_key("other", &other_key)?,
            write_key("hash", &hash_key)?,
        );
        let short_file = write_key("short", &seal_key[..20])?;
        let toml = |seal: &str, hash: &str| {
            format!(
                "ttl = \"30m\"\n[redis]\naddr = \"{}\"\nkey_prefix = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\n\
                 [redis.encryption]\nwrite_key = 7\nkeys = [{{ id = 7, file = \"{seal}\" }}]\n\
                 [redis.hashed_ids]\nfile = \"{hash}\"\n",
                servers.acl,
                scenarios::unique_prefix("secrets-sealed"),
                servers.acl_user,
                servers.acl_password
            )
        };
        let sealed = SessionConfig::from_toml(&toml(&seal_file, &hash_file), "sealed.toml")?;
        texts.debug("sealed config file", &sealed);
        let redis = sealed.redis().context("a [redis] table")?.clone();
        exercise(&mut texts, "sealed and hashed", &redis).await;
        // A session sealed under key 7, read by a storage whose key 7 is
        // another one.
        let writer = RedisStorage::connect(&redis).await?;
        let session = Arc::new(session_core::Session::new(
            SessionId::new(),
            SessionType::Mcp,
        ));
        texts.1.push(session.id().to_string());
        texts.result(
            "sealed: create",
            &session_core::Storage::create(&writer, session.clone(), scenarios::ttl()).await,
        );
        let impostor = SessionConfig::from_toml(&toml(&other_file, &hash_file), "other.toml")?;
        let reader = RedisStorage::connect(impostor.redis().context("a [redis] table")?).await?;
        let read = session_core::Storage::get(&reader, &session.id(), scenarios::ttl()).await;
        failures_seen += usize::from(read.is_err());
        texts.result("sealed: read under another key", &read);
        texts.debug("sealed: reader", &reader);
        for storage in [writer, reader] {
            session_core::Storage::close(&storage).await.ok();
        }
        for (label, seal, hash) in [
            ("a short encryption key", &short_file, &hash_file),
            ("a short hash key", &seal_file, &short_file),
        ] {
            let parsed = SessionConfig::from_toml(&toml(seal, hash), "short.toml");
            failures_seen += usize::from(parsed.is_err());
            texts.result(label, &parsed);
        }
    }

    // TLS: right CA, wrong CA.
    let ca = pem_file("redis.tls.ca_cert", &servers.ca)?;
    let wrong_ca = pem_file("redis.tls.ca_cert", &servers.wrong_ca)?;
    exercise(
        &mut texts,
        "tls",
        &tls_config(&servers.tls, TlsConfig::with_ca(ca.clone()))?,
    )
    .await;
    failures_seen += usize::from(
        expect_failure(
            &mut texts,
            "tls wrong CA",
            &tls_config(&servers.tls, TlsConfig::with_ca(wrong_ca.clone()))?,
        )
        .await,
    );
    let mut insecure = TlsConfig::default();
    insecure.insecure_skip_verify = true;
    exercise(
        &mut texts,
        "tls insecure",
        &tls_config(&servers.tls, insecure)?,
    )
    .await;

    // Mutual TLS: key from a file, key inline, no client certificate,
    // inline key with the wrong CA, invalid inline key material.
    let cert = pem_file("redis.tls.client_cert", &servers.mtls_cert)?;
    exercise(
        &mut texts,
        "mtls key file",
        &tls_config(
            &servers.mtls,
            TlsConfig::with_ca(ca.clone()).with_identity(identity(
                &cert,
                &pem_file("redis.tls.client_key", &servers.mtls_key)?,
            )),
        )?,
    )
    .await;
    let inline_key = Pem::new(key_pem.clone());
    exercise(
        &mut texts,
        "mtls inline key",
        &tls_config(
            &servers.mtls,
            TlsConfig::with_ca(ca.clone()).with_identity(identity(&cert, &inline_key)),
        )?,
    )
    .await;
    failures_seen += usize::from(
        expect_failure(
            &mut texts,
            "mtls without a client certificate",
            &tls_config(&servers.mtls, TlsConfig::with_ca(ca.clone()))?,
        )
        .await,
    );
    failures_seen += usize::from(
        expect_failure(
            &mut texts,
            "mtls inline key, wrong CA",
            &tls_config(
                &servers.mtls,
                TlsConfig::with_ca(wrong_ca.clone()).with_identity(identity(&cert, &inline_key)),
            )?,
        )
        .await,
    );
    failures_seen += usize::from(
        expect_failure(
            &mut texts,
            "mtls invalid inline key",
            &tls_config(
                &servers.mtls,
                TlsConfig::with_ca(ca.clone())
                    .with_identity(identity(&cert, &Pem::new(inline_fake_key.clone()))),
            )?,
        )
        .await,
    );
    // The key given as the certificate: the certificate parser sees it.
    failures_seen += usize::from(
        expect_failure(
            &mut texts,
            "mtls key given as certificate",
            &tls_config(
                &servers.mtls,
                TlsConfig::with_ca(ca.clone()).with_identity(identity(&inline_key, &inline_key)),
            )?,
        )
        .await,
    );
    // And as the CA.
    failures_seen += usize::from(
        expect_failure(
            &mut texts,
            "mtls key given as CA",
            &tls_config(&servers.mtls, TlsConfig::with_ca(inline_key.clone()))?,
        )
        .await,
    );
    // Let the lazy client's background reconnect attempts log a little more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = capture.finish();
    let log_lines = log.lines().count();

    let mut leaks = Vec::new();
    for (secret_name, secret) in &secrets {
        if log.contains(secret.as_str()) {
            let line = log
                .lines()
                .find(|line| line.contains(secret.as_str()))
                .unwrap_or_default();
            leaks.push(format!(
                "{secret_name} in the captured log, in a line starting {:?}",
                redact(line, &secrets)
            ));
        }
        for series in &texts.2 {
            if series.contains(secret.as_str()) {
                leaks.push(format!(
                    "{secret_name} in a metric: {:?}",
                    redact(series, &secrets)
                ));
            }
        }
        for (label, text) in &texts.0 {
            if text.contains(secret.as_str()) {
                leaks.push(format!(
                    "{secret_name} in {label}: {:?}",
                    redact(text, &secrets)
                ));
            }
        }
    }
    // Session ids are bearer credentials: none in a metric's labels or in
    // the manager's operation spans.
    let span_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("session_operation"))
        .collect();
    for id in &texts.1 {
        if texts.2.iter().any(|series| series.contains(id.as_str())) {
            leaks.push("a session id in a metric's labels".to_owned());
        }
        if span_lines.iter().any(|line| line.contains(id.as_str())) {
            leaks.push("a session id in a session_operation span".to_owned());
        }
    }
    outcome.figure(format!(
        "{} Debug/Display texts, {} metric series, {log_lines} captured log lines (TRACE, tracing + log; {} of them the manager's operation spans) from {failures_seen} failures and 7 working setups (ACL, password file, config file, TLS, mTLS key file, mTLS inline key, encryption and hashed-id keys from files); {} secrets and {} session ids searched; leaks: {}",
        texts.0.len(),
        texts.2.len(),
        span_lines.len(),
        secrets.len(),
        texts.1.len(),
        leaks.len()
    ));
    outcome.check(
        leaks.is_empty(),
        format!("no secret appears anywhere: {leaks:?}"),
    );
    outcome.check(
        failures_seen >= 9,
        format!("every failure case failed ({failures_seen} of 11 did)"),
    );
    outcome.check(
        !texts.2.is_empty() && !span_lines.is_empty(),
        format!(
            "the search saw the manager's metrics ({} series) and operation spans ({} lines)",
            texts.2.len(),
            span_lines.len()
        ),
    );
    outcome.check(
        log_lines > 100,
        format!("the capture saw the client's logs ({log_lines} lines)"),
    );
    Ok(())
}

/// Replaces every secret in `text` (for the report: a leak is shown in
/// context without repeating it) and keeps the first 300 characters.
fn redact(text: &str, secrets: &[(String, String)]) -> String {
    let mut text = text.to_owned();
    for (_, secret) in secrets {
        text = text.replace(secret.as_str(), "<SECRET>");
    }
    text.chars().take(300).collect()
}
