//! Test topologies: the servers `cargo xtask test` starts, found through the
//! `SESSION_TEST_REDIS*` and `SESSION_TEST_VALKEY*` environment variables
//! (`session_testkit::env`).
//!
//! A test that needs a server and finds no address fails when
//! `SESSION_TEST_REQUIRE_REDIS` is set (as under `cargo xtask test` and CI);
//! under a bare `cargo test` it prints one loud line and returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use session_config::{Auth, ClientIdentity, Pem, RedisConfig, SentinelConfig, TlsConfig};
use session_core::{SessionId, Ttl};
use session_redis::RedisStorage;
use session_redis::fred::bytes::Bytes;
use session_redis::fred::interfaces::KeysInterface;
use session_testkit::Harness;

pub use session_testkit::env::var as env;
use session_testkit::env::{
    REDIS, REDIS_ACL, REDIS_ACL_PASSWORD, REDIS_ACL_USER, REDIS_CLUSTER, REDIS_MTLS,
    REDIS_MTLS_CERT, REDIS_MTLS_KEY, REDIS_SENTINEL, REDIS_SENTINEL_MASTER, REDIS_TLS,
    REDIS_TLS_CA, VALKEY, VALKEY_ACL, VALKEY_ACL_PASSWORD, VALKEY_ACL_USER, VALKEY_CLUSTER,
    VALKEY_SENTINEL, VALKEY_SENTINEL_MASTER,
};

/// The deployments the backend supports, on Redis, and those of them that
/// run on Valkey too (its test build has no TLS).
#[derive(Clone, Copy, Debug)]
pub enum Topology {
    Standalone,
    Acl,
    Tls,
    Mtls,
    Cluster,
    Sentinel,
    ValkeyStandalone,
    ValkeyAcl,
    ValkeyCluster,
    ValkeySentinel,
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("test:{}:", SessionId::new())
}

/// A configuration for `topology` with a fresh key prefix.
pub fn config(topology: Topology) -> Option<RedisConfig> {
    let prefix = unique_prefix();
    let standalone = |var: &str| -> Option<RedisConfig> {
        Some(RedisConfig::standalone(&env(var)?, &prefix).expect("a valid test address"))
    };
    let acl = |var: &str, user: &str, password: &str| -> Option<RedisConfig> {
        Some(standalone(var)?.with_auth(Auth::user(env(user)?, env(password)?)))
    };
    let cluster = |var: &str| -> Option<RedisConfig> {
        let nodes = env(var)?;
        let seed = nodes.split(',').next().unwrap_or_default().to_owned();
        Some(RedisConfig::cluster(&seed, &prefix).expect("a valid test address"))
    };
    let sentinel = |var: &str, master: &str| -> Option<RedisConfig> {
        let sentinel =
            SentinelConfig::new(env(master)?, [env(var)?]).expect("valid sentinel settings");
        Some(RedisConfig::sentinel(sentinel, &prefix).expect("a valid prefix"))
    };
    Some(match topology {
        Topology::Standalone => standalone(REDIS)?,
        Topology::Acl => acl(REDIS_ACL, REDIS_ACL_USER, REDIS_ACL_PASSWORD)?,
        Topology::Tls => standalone(REDIS_TLS)?
            .with_tls(TlsConfig::with_ca(pem(&ca()?)))
            .expect("valid TLS settings"),
        Topology::Mtls => standalone(REDIS_MTLS)?
            .with_tls(
                TlsConfig::with_ca(pem(&ca()?)).with_identity(ClientIdentity {
                    cert_chain: pem(Path::new(&env(REDIS_MTLS_CERT)?)),
                    key: pem(Path::new(&env(REDIS_MTLS_KEY)?)),
                }),
            )
            .expect("valid TLS settings"),
        Topology::Cluster => cluster(REDIS_CLUSTER)?,
        Topology::Sentinel => sentinel(REDIS_SENTINEL, REDIS_SENTINEL_MASTER)?,
        Topology::ValkeyStandalone => standalone(VALKEY)?,
        Topology::ValkeyAcl => acl(VALKEY_ACL, VALKEY_ACL_USER, VALKEY_ACL_PASSWORD)?,
        Topology::ValkeyCluster => cluster(VALKEY_CLUSTER)?,
        Topology::ValkeySentinel => sentinel(VALKEY_SENTINEL, VALKEY_SENTINEL_MASTER)?,
    })
}

/// Reads a PEM file of the test servers.
pub fn pem(path: &Path) -> Pem {
    Pem::read("test", path).expect("the test certificates are readable")
}

/// The CA that signed the test servers' certificates.
pub fn ca() -> Option<PathBuf> {
    env(REDIS_TLS_CA).map(PathBuf::from)
}

/// The conformance harness for one topology: each `open` is a new client (a
/// new "replica") on the same key prefix.
pub struct RedisHarness {
    pub config: RedisConfig,
    pub raw: RedisStorage,
}

impl RedisHarness {
    pub async fn new(topology: Topology) -> Option<Self> {
        let config = config(topology)?;
        let raw = RedisStorage::connect(&config)
            .await
            .unwrap_or_else(|error| panic!("{topology:?}: cannot connect: {error}"));
        Some(Self { config, raw })
    }
}

impl Harness for RedisHarness {
    type Storage = RedisStorage;

    async fn open(&self) -> RedisStorage {
        RedisStorage::connect(&self.config)
            .await
            .expect("connect a second client")
    }

    fn ttl(&self) -> Ttl {
        // Real time: short enough to keep the suite fast, long enough for
        // the fractions the cases sleep to stay well apart on a busy machine.
        Ttl::from_secs(1).expect("a valid TTL")
    }

    async fn write_raw(&self, id: &SessionId, bytes: &[u8]) -> bool {
        let key = self.raw.key(id);
        let _: () = self
            .raw
            .client()
            .set(key, Bytes::copy_from_slice(bytes), None, None, false)
            .await
            .expect("raw SET");
        true
    }

    async fn raw_exists(&self, id: &SessionId) -> Option<bool> {
        // `EXISTS` counts a key only while it lives, and neither decodes the
        // value nor touches its TTL.
        let exists: i64 = self
            .raw
            .client()
            .exists(self.raw.key(id))
            .await
            .expect("raw EXISTS");
        Some(exists > 0)
    }
}
