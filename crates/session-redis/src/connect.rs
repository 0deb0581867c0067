//! Turning a [`RedisConfig`] into fred clients, TLS included.
//!
//! The settings arrive resolved (addresses parsed, PEM files read, every
//! rule checked: see `session-config`), so nothing here checks them again;
//! what can still fail is what only rustls can judge, a PEM that does not
//! parse or a certificate it refuses. The TLS setup is built once per
//! storage and shared by the data client and the sentinel watchers, and
//! every fred builder gets its timeouts from [`tune`].

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{Builder, Config, ReconnectPolicy, Server, ServerConfig};
use fred::types::RespVersion;
use fred::types::config::{ClusterDiscoveryPolicy, TlsConfig as FredTls, TlsConnector};
use rustls::RootCertStore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use session_config::{Addr, ConnectMode, Pem, RedisConfig, RedisTopology, Roots, TlsConfig};
use session_core::{ConfigError, Error, Result};

/// The capacity of fred's notification channels on a client with a cache:
/// invalidations queued for the cache's task before it must flush.
pub(crate) const INVALIDATION_CHANNEL_CAPACITY: usize = 4096;

/// What a client built by [`tune`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The data client: the configured reconnect policy, and one attempt per
    /// command.
    Data,
    /// A sentinel watcher: it reconnects forever (it has no caller to report
    /// to, and a sentinel that comes back must be heard again).
    Watcher,
}

/// Sets the timeouts, the reconnect policy and the command attempts of every
/// client the storage builds.
pub(crate) fn tune(builder: &mut Builder, config: &RedisConfig, role: Role) {
    let command_timeout = config.command_timeout();
    let connect_timeout = config.connect_timeout();
    builder
        .with_connection_config(|connection| {
            connection.connection_timeout = connect_timeout;
            connection.internal_command_timeout = command_timeout;
            // A connection that sits on an unanswered command for longer than
            // the command timeout is considered dead and replaced, so a
            // stalled server cannot wedge the client after it recovers.
            connection.unresponsive.max_timeout = Some(command_timeout);
            connection.unresponsive.interval = (command_timeout / 4).max(Duration::from_millis(50));
            if role == Role::Data {
                // fred re-sends a command whose reply was lost to a dropped
                // connection. For `SET NX` that turns a create that succeeded
                // into `AlreadyExists` (the retry finds the key the first
                // attempt wrote), and for `DEL` into "was not there". One
                // attempt makes such a command fail with a retryable error
                // instead: its outcome is unknown, and the caller is told so.
                connection.max_command_attempts = 1;
            }
        })
        .with_performance_config(|performance| {
            // fred's default is 0: no timeout at all, which hangs forever on
            // a dead connection. Every command gets the configured bound.
            performance.default_command_timeout = command_timeout;
            if role == Role::Data && config.cache().is_some() {
                // Invalidations reach the cache through a broadcast channel;
                // one that lags loses some, and the cache must then flush.
                // fred's 32 would lag under any burst of writes.
                performance.broadcast_channel_capacity = INVALIDATION_CHANNEL_CAPACITY;
            }
        });
    let policy = config.reconnect();
    let max_attempts = match role {
        Role::Data => policy.max_attempts(),
        Role::Watcher => 0,
    };
    builder.set_policy(ReconnectPolicy::new_exponential(
        max_attempts,
        millis(policy.min_delay()),
        millis(policy.max_delay()),
        2,
    ));
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// A fred server for `addr`, checked against `tls_name` under TLS.
pub(crate) fn server(addr: &Addr, tls_name: Option<&str>) -> Server {
    let mut server = Server::new(addr.host(), addr.port());
    if let Some(name) = tls_name {
        server.tls_server_name = Some(name.into());
    }
    server
}

/// The TLS server name to check the sentinels' certificates against: the
/// sentinel's own setting, else the data nodes'.
pub(crate) fn sentinel_tls_name(config: &RedisConfig) -> Option<&str> {
    let data = config.tls().and_then(|tls| tls.server_name.as_deref());
    config
        .sentinel_config()
        .and_then(|sentinel| sentinel.tls())
        .and_then(|tls| tls.server_name.as_deref())
        .or(data)
}

/// Builds the data client for `config` without touching the network.
pub(crate) fn data_client(
    config: &RedisConfig,
    tls: Option<FredTls>,
) -> Result<fred::clients::Client> {
    data_client_with(config, tls, config.cache().is_some())
}

/// Builds a client for `config` without touching the network, on RESP3
/// when `resp3` (the cache's invalidations need it), else on RESP2, which
/// every server speaks.
pub(crate) fn data_client_with(
    config: &RedisConfig,
    tls: Option<FredTls>,
    resp3: bool,
) -> Result<fred::clients::Client> {
    let tls_name = config.tls().and_then(|tls| tls.server_name.as_deref());
    let (server, database) = match config.topology() {
        RedisTopology::Standalone { addr, db } => (
            ServerConfig::Centralized {
                server: server(addr, tls_name),
            },
            *db,
        ),
        RedisTopology::Cluster { seed } => (
            ServerConfig::Clustered {
                hosts: vec![server(seed, tls_name)],
                policy: ClusterDiscoveryPolicy::default(),
            },
            0,
        ),
        RedisTopology::Sentinel { sentinel, db } => {
            let sentinel_name = sentinel_tls_name(config);
            (
                ServerConfig::Sentinel {
                    hosts: sentinel
                        .addrs()
                        .iter()
                        .map(|addr| server(addr, sentinel_name))
                        .collect(),
                    service_name: sentinel.master_name().to_owned(),
                    username: sentinel.auth().and_then(|auth| auth.username.clone()),
                    password: sentinel
                        .auth()
                        .map(|auth| auth.password.expose().to_owned()),
                },
                *db,
            )
        }
        // The topology enum is non-exhaustive for the config crate's users;
        // a topology this crate does not know cannot be connected.
        #[allow(unreachable_patterns)]
        _ => {
            return Err(Error::config("redis", "this topology is not supported"));
        }
    };
    // fred sends AUTH with the password alone when there is no user name,
    // which Redis applies to the `default` user.
    let auth = config.auth();
    let fred_config = Config {
        username: auth.and_then(|auth| auth.username.clone()),
        password: auth.map(|auth| auth.password.expose().to_owned()),
        database: (database != 0).then_some(database),
        server,
        tls,
        // Eager connect reports the first connection error; lazy connect must
        // instead keep retrying until Redis comes up.
        fail_fast: config.connect_mode() == ConnectMode::Eager,
        // The cache needs RESP3, whose connections carry the server's
        // invalidations. Without it the client stays on RESP2, which every
        // server speaks.
        version: if resp3 {
            RespVersion::RESP3
        } else {
            RespVersion::RESP2
        },
        ..Config::default()
    };
    let mut builder = Builder::from_config(fred_config);
    tune(&mut builder, config, Role::Data);
    builder.build().map_err(|error| {
        Error::config(
            "redis",
            format!("cannot build the Redis client: {}", error.details()),
        )
    })
}

/// The one TLS setup of a storage, for its data client and its sentinel
/// watchers.
///
/// fred 10 opens sentinel and data connections with one TLS configuration.
/// The separate sentinel TLS settings are honoured as far as that allows: its
/// CA certificates are trusted beside the data nodes' ones, and a client
/// identity given in either is used for both (the configuration refuses two
/// different ones, and sentinel TLS without data TLS).
pub(crate) fn tls(config: &RedisConfig) -> Result<Option<FredTls>> {
    // Settings assembled with `RedisConfig::new` may give the sentinels TLS
    // without data TLS; dropping it would be a silent downgrade.
    config.check_sentinel_tls()?;
    let Some(data) = config.tls() else {
        return Ok(None);
    };
    let sentinel = config.sentinel_config().and_then(|s| s.tls());
    let client_config = rustls_config(data, sentinel)?;
    Ok(Some(FredTls::from(TlsConnector::from(client_config))))
}

fn read_certs(pem: &Pem, field: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| Error::config(field, format!("invalid PEM: {error}")))?;
    if certs.is_empty() {
        return Err(Error::config(field, "no certificate found in the PEM data"));
    }
    Ok(certs)
}

fn read_key(pem: &Pem, field: &str) -> Result<PrivateKeyDer<'static>> {
    // The parser's error is not echoed: it could quote key material.
    match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            Err(Error::config(field, "no private key found in the PEM data"))
        }
        Err(_) => Err(Error::config(field, "invalid PEM")),
    }
}

fn rustls_config(data: &TlsConfig, sentinel: Option<&TlsConfig>) -> Result<ClientConfig> {
    // One explicit provider: fred is built with ring, and relying on a
    // process-wide default provider panics when another crate enables aws-lc.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::config("redis.tls", format!("TLS setup failed: {error}")))?;

    let insecure = data.insecure_skip_verify || sentinel.is_some_and(|s| s.insecure_skip_verify);
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
        for (tls, field) in [
            (Some(data), "redis.tls.ca_cert"),
            (sentinel, "redis.sentinel.tls.ca_cert"),
        ] {
            if let Some(Roots::Pem(ca)) = tls.map(|tls| &tls.roots) {
                for cert in read_certs(ca, field)? {
                    roots.add(cert).map_err(|error| {
                        Error::config(field, format!("unusable CA certificate: {error}"))
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
                    "redis.tls.ca_cert",
                    "no CA certificate given and none found in the system store",
                ));
            }
        }
        builder.with_root_certificates(roots)
    };

    let identity = match (&data.identity, sentinel.and_then(|s| s.identity.as_ref())) {
        (Some(identity), _) => Some((identity, "redis.tls")),
        (None, Some(identity)) => Some((identity, "redis.sentinel.tls")),
        (None, None) => None,
    };
    let Some((identity, table)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let cert_field = format!("{table}.client_cert");
    let chain = read_certs(&identity.cert_chain, &cert_field)?;
    let key = read_key(&identity.key, &format!("{table}.client_key"))?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|error| identity_error(table, &error).into())
}

/// The error for a client certificate or key that rustls refuses.
///
/// rustls checks our own certificate with the same code that checks a
/// server's, so its message reads "invalid peer certificate" about a
/// certificate that is ours, and it comes out of the call that adds the key.
/// The error names the certificate when the certificate is at fault, says
/// that it is the client's own, and says how to fix the usual cause.
fn identity_error(table: &str, error: &rustls::Error) -> ConfigError {
    match error {
        rustls::Error::InvalidCertificate(reason) => {
            let reason = format!("{reason:?}");
            let hint = if reason.contains("UnsupportedCertVersion") {
                "; it is not an X.509 v3 certificate: reissue it as X.509 v3 (for example \
                 `openssl x509 -req ... -extfile` with at least one extension)"
            } else {
                ""
            };
            ConfigError::new(
                format!("{table}.client_cert"),
                format!("our client certificate is unusable: {reason}{hint}"),
            )
        }
        other => ConfigError::new(
            format!("{table}.client_key"),
            format!("the client key does not fit the client certificate or is unusable: {other}"),
        ),
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
