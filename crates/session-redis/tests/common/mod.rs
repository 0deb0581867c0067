//! Test topologies: the servers `cargo xtask test` starts, found through the
//! `SESSION_TEST_REDIS*` environment variables (see `xtask/src/redis.rs`).
//!
//! A test that needs a server and finds no address fails when
//! `SESSION_TEST_REQUIRE_REDIS` is set (as under `cargo xtask test` and CI);
//! under a bare `cargo test` it prints one loud line and returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use session_core::config::{PemSource, RedisConfig, SentinelConfig, TlsConfig};
use session_core::testkit::Harness;
use session_core::{SessionId, Ttl};
use session_redis::RedisStorage;
use session_redis::fred::bytes::Bytes;
use session_redis::fred::interfaces::KeysInterface;

pub use session_core::testkit::test_env as env;

/// The deployments the backend supports.
#[derive(Clone, Copy, Debug)]
pub enum Topology {
    Standalone,
    Acl,
    Tls,
    Mtls,
    Cluster,
    Sentinel,
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("test:{}:", SessionId::new())
}

/// A configuration for `topology` with a fresh key prefix.
pub fn config(topology: Topology) -> Option<RedisConfig> {
    let prefix = unique_prefix();
    Some(match topology {
        Topology::Standalone => RedisConfig::standalone(env("SESSION_TEST_REDIS")?, prefix),
        Topology::Acl => {
            let mut config = RedisConfig::standalone(env("SESSION_TEST_REDIS_ACL")?, prefix);
            config.username = Some(env("SESSION_TEST_REDIS_ACL_USER")?);
            config.password = Some(env("SESSION_TEST_REDIS_ACL_PASSWORD")?.into());
            config
        }
        Topology::Tls => {
            let mut config = RedisConfig::standalone(env("SESSION_TEST_REDIS_TLS")?, prefix);
            config.tls = Some(TlsConfig::with_ca(PemSource::File(ca()?)));
            config
        }
        Topology::Mtls => {
            let mut config = RedisConfig::standalone(env("SESSION_TEST_REDIS_MTLS")?, prefix);
            config.tls = Some(TlsConfig::with_ca(PemSource::File(ca()?)).with_client_auth(
                PemSource::File(env("SESSION_TEST_REDIS_MTLS_CERT")?.into()),
                PemSource::File(env("SESSION_TEST_REDIS_MTLS_KEY")?.into()),
            ));
            config
        }
        Topology::Cluster => {
            let nodes = env("SESSION_TEST_REDIS_CLUSTER")?;
            let seed = nodes.split(',').next().unwrap_or_default().to_owned();
            RedisConfig::cluster(seed, prefix)
        }
        Topology::Sentinel => {
            let sentinel = SentinelConfig::new(
                env("SESSION_TEST_REDIS_SENTINEL_MASTER")?,
                [env("SESSION_TEST_REDIS_SENTINEL")?],
            );
            RedisConfig::sentinel(sentinel, prefix)
        }
    })
}

/// The CA that signed the test servers' certificates.
pub fn ca() -> Option<PathBuf> {
    env("SESSION_TEST_REDIS_TLS_CA").map(PathBuf::from)
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
}
