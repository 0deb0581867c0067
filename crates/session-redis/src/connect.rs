//! Turning a [`RedisConfig`] into a fred client, TLS included.

use std::sync::Arc;

use fred::prelude::{Builder, Config, ReconnectPolicy, Server, ServerConfig};
use fred::types::config::{ClusterDiscoveryPolicy, TlsConfig as FredTls, TlsConnector};
use rustls::RootCertStore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use session_core::config::{PemSource, RedisConfig, TlsConfig};
use session_core::{Error, Result};

/// Builds the fred client for `config` without touching the network.
pub(crate) fn build_client(config: &RedisConfig) -> Result<fred::clients::Client> {
    let mut fred_config = Config {
        username: config.username.clone(),
        password: config.password.as_ref().map(|p| p.expose().to_owned()),
        database: (config.db != 0).then_some(config.db),
        server: server_config(config)?,
        tls: tls_config(config)?,
        // Eager connect reports the first connection error; lazy connect must
        // instead keep retrying until Redis comes up.
        fail_fast: matches!(config.connect, session_core::config::ConnectMode::Eager),
        ..Config::default()
    };
    if config.password.is_some() && config.username.is_none() {
        // fred sends AUTH with the password alone, which Redis applies to the
        // `default` user; nothing to do, but keep the intent explicit.
        fred_config.username = None;
    }

    let policy = &config.reconnect;
    let millis = |d: std::time::Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let command_timeout = config.command_timeout;
    let connect_timeout = config.connect_timeout;

    let mut builder = Builder::from_config(fred_config);
    builder
        .with_connection_config(|connection| {
            connection.connection_timeout = connect_timeout;
            connection.internal_command_timeout = command_timeout;
            // A connection that sits on an unanswered command for longer than
            // the command timeout is considered dead and replaced, so a stalled
            // server cannot wedge the client after it recovers.
            connection.unresponsive.max_timeout = Some(command_timeout);
            connection.unresponsive.interval =
                (command_timeout / 4).max(std::time::Duration::from_millis(50));
            // fred re-sends a command whose reply was lost to a dropped
            // connection. For `SET NX` that turns a create that succeeded into
            // `AlreadyExists` (the retry finds the key the first attempt
            // wrote), and for `DEL` into "was not there". One attempt makes
            // such a command fail with a retryable error instead: its outcome
            // is unknown, and the caller is told so.
            connection.max_command_attempts = 1;
        })
        .with_performance_config(|performance| {
            // fred's default is 0: no timeout at all, which hangs forever on a
            // dead connection. Every command gets the configured bound.
            performance.default_command_timeout = command_timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(
            policy.max_attempts,
            millis(policy.min_delay),
            millis(policy.max_delay),
            2,
        ));
    builder.build().map_err(|error| {
        Error::config(
            "redis",
            format!("cannot build the Redis client: {}", error.details()),
        )
    })
}

pub(crate) fn parse_server(field: &str, addr: &str, tls_name: Option<&str>) -> Result<Server> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| Error::config(field, format!("{addr:?} is not `host:port`")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| Error::config(field, format!("{addr:?} has no valid port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut server = Server::new(host, port);
    if let Some(name) = tls_name {
        server.tls_server_name = Some(name.into());
    }
    Ok(server)
}

/// The TLS server name to check the sentinels' certificates against: the
/// sentinel's own setting, else the data nodes'.
pub(crate) fn sentinel_tls_name(config: &RedisConfig) -> Option<&str> {
    let data = config
        .tls
        .as_ref()
        .and_then(|tls| tls.server_name.as_deref());
    config
        .sentinel
        .as_ref()
        .and_then(|sentinel| sentinel.tls.as_ref())
        .and_then(|tls| tls.server_name.as_deref())
        .or(data)
}

fn server_config(config: &RedisConfig) -> Result<ServerConfig> {
    let tls_name = config
        .tls
        .as_ref()
        .and_then(|tls| tls.server_name.as_deref());
    if let Some(sentinel) = &config.sentinel {
        let sentinel_tls_name = sentinel_tls_name(config);
        let hosts = sentinel
            .addrs
            .iter()
            .map(|addr| parse_server("redis.sentinel.addrs", addr, sentinel_tls_name))
            .collect::<Result<Vec<_>>>()?;
        return Ok(ServerConfig::Sentinel {
            hosts,
            service_name: sentinel.master_name.clone(),
            username: sentinel.username.clone(),
            password: sentinel.password.as_ref().map(|p| p.expose().to_owned()),
        });
    }
    let addr = config
        .addr
        .as_deref()
        .ok_or_else(|| Error::config("redis.addr", "give `addr` or `sentinel`"))?;
    let server = parse_server("redis.addr", addr, tls_name)?;
    Ok(if config.cluster {
        ServerConfig::Clustered {
            hosts: vec![server],
            policy: ClusterDiscoveryPolicy::default(),
        }
    } else {
        ServerConfig::Centralized { server }
    })
}

/// fred 10 opens sentinel and data connections with one TLS configuration.
/// The separate `sentinel.tls` setting is honoured as far as that allows: its
/// CA certificates are trusted beside the data nodes' CA certificates, and a
/// client identity given in either is used for both. Mixing TLS and plain
/// text between sentinels and data nodes, or two different client
/// identities, cannot be expressed and is a configuration error rather than a
/// silent downgrade.
pub(crate) fn tls_config(config: &RedisConfig) -> Result<Option<FredTls>> {
    let data = config.tls.as_ref();
    let sentinel = config.sentinel.as_ref().and_then(|s| s.tls.as_ref());
    let (primary, primary_field, extra) = match (data, sentinel) {
        (None, None) => return Ok(None),
        (Some(data), None) if config.sentinel.is_some() => (data, "redis.tls", None),
        (Some(data), None) => (data, "redis.tls", None),
        (None, Some(_)) => {
            return Err(Error::config(
                "redis.sentinel.tls",
                "sentinel TLS without data-node TLS is not supported: the client uses one transport for both; \
                 set `redis.tls` too",
            ));
        }
        (Some(data), Some(sentinel)) => (data, "redis.tls", Some(sentinel)),
    };
    if let Some(extra) = extra {
        let data_identity = (&primary.client_cert, &primary.client_key);
        let sentinel_identity = (&extra.client_cert, &extra.client_key);
        if data_identity.0.is_some()
            && sentinel_identity.0.is_some()
            && data_identity != sentinel_identity
        {
            return Err(Error::config(
                "redis.sentinel.tls.client_cert",
                "the client presents one certificate to sentinels and data nodes; give the same one or only one",
            ));
        }
    }
    let client_config = rustls_config(primary, primary_field, extra)?;
    Ok(Some(FredTls::from(TlsConnector::from(client_config))))
}

fn read_pem(source: &PemSource, field: &str) -> Result<Vec<u8>> {
    match source {
        PemSource::Pem(pem) => Ok(pem.expose().as_bytes().to_vec()),
        PemSource::File(path) => {
            session_core::config::read_file(field, path, session_core::config::FILE_LIMIT)
        }
    }
}

fn read_certs(source: &PemSource, field: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(source, field)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| Error::config(field, format!("invalid PEM: {error}")))?;
    if certs.is_empty() {
        return Err(Error::config(field, "no certificate found in the PEM data"));
    }
    Ok(certs)
}

fn read_key(source: &PemSource, field: &str) -> Result<PrivateKeyDer<'static>> {
    let pem = read_pem(source, field)?;
    // The parser's error is not echoed: it could quote key material.
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|_| Error::config(field, "invalid PEM"))?
        .ok_or_else(|| Error::config(field, "no private key found in the PEM data"))
}

fn rustls_config(tls: &TlsConfig, field: &str, extra: Option<&TlsConfig>) -> Result<ClientConfig> {
    // One explicit provider: fred is built with ring, and relying on a
    // process-wide default provider panics when another crate enables aws-lc.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::config(field, format!("TLS setup failed: {error}")))?;

    let insecure = tls.insecure_skip_verify || extra.is_some_and(|e| e.insecure_skip_verify);
    let builder = if insecure {
        tracing::warn!(
            "redis TLS certificate verification is DISABLED (insecure_skip_verify): \
             connections can be intercepted; use this only in tests"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        let mut any_ca = false;
        for (config, field) in [
            (Some(tls), format!("{field}.ca_cert")),
            (extra, "redis.sentinel.tls.ca_cert".to_owned()),
        ] {
            if let Some(ca) = config.and_then(|c| c.ca_cert.as_ref()) {
                for cert in read_certs(ca, &field)? {
                    roots.add(cert).map_err(|error| {
                        Error::config(field.as_str(), format!("unusable CA certificate: {error}"))
                    })?;
                }
                any_ca = true;
            }
        }
        if !any_ca {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(Error::config(
                    format!("{field}.ca_cert"),
                    "no CA certificate given and none found in the system store",
                ));
            }
        }
        builder.with_root_certificates(roots)
    };

    let identity = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some((cert, key, field.to_owned())),
        _ => extra.and_then(|e| match (&e.client_cert, &e.client_key) {
            (Some(cert), Some(key)) => Some((cert, key, "redis.sentinel.tls".to_owned())),
            _ => None,
        }),
    };
    match identity {
        Some((cert, key, field)) => {
            let chain = read_certs(cert, &format!("{field}.client_cert"))?;
            let key = read_key(key, &format!("{field}.client_key"))?;
            builder.with_client_auth_cert(chain, key).map_err(|error| {
                Error::config(
                    format!("{field}.client_key"),
                    format!("unusable client key: {error}"),
                )
            })
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Accepts any server certificate (`insecure_skip_verify`), while still
/// checking handshake signatures so the connection is at least consistent.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
