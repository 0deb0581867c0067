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

use session_config::{
    Auth, CacheConfig, ClientIdentity, HashPhase, HashedIds, Pem, RedisConfig, SentinelConfig,
    TlsConfig, TrackingMode,
};
use session_core::seal::{Keyring, SealKey};
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

    /// The harness for `topology` whose storages keep a local cache with
    /// invalidations in `mode` (the raw client keeps none).
    pub async fn cached(topology: Topology, mode: TrackingMode) -> Option<Self> {
        let mut harness = Self::new(topology).await?;
        harness.config = caching(harness.config, mode);
        Some(harness)
    }
}

impl RedisHarness {
    /// The harness for `topology` whose storages, the raw one included, are
    /// configured by `configure` (on top of [`config`]'s settings).
    pub async fn configured(
        topology: Topology,
        configure: impl FnOnce(RedisConfig) -> RedisConfig,
    ) -> Option<Self> {
        let config = configure(config(topology)?);
        let raw = RedisStorage::connect(&config)
            .await
            .unwrap_or_else(|error| panic!("{topology:?}: cannot connect: {error}"));
        Some(Self { config, raw })
    }

    /// The harness for `topology` whose storages encrypt what they store
    /// with [`test_keyring`].
    pub async fn sealed(topology: Topology) -> Option<Self> {
        Self::configured(topology, sealing).await
    }
}

/// `config` encrypting with [`test_keyring`] (keys 1 and 2, sealing with 2).
pub fn sealing(config: RedisConfig) -> RedisConfig {
    config
        .with_encryption(Some(test_keyring(&[1, 2], Some(2))))
        .expect("encryption valid with format 2")
}

/// `config` naming session keys by the test hash key, in `phase`.
pub fn hashing(config: RedisConfig, phase: HashPhase) -> RedisConfig {
    config.with_hashed_ids(Some(test_hashed_ids(phase)))
}

/// The test hash key of hashed ids, in `phase`.
pub fn test_hashed_ids(phase: HashPhase) -> HashedIds {
    HashedIds::new(vec![0x5C; HashedIds::MIN_KEY_LEN], phase).expect("a long enough key")
}

/// `config` with the local cache on, invalidations in `mode`.
pub fn caching(config: RedisConfig, mode: TrackingMode) -> RedisConfig {
    config
        .with_cache(Some(
            CacheConfig::new(CacheConfig::default().capacity(), CACHED_STALENESS)
                .expect("a valid bound")
                .with_mode(mode),
        ))
        .expect("a cache valid for the topology")
}

/// The test key of id `id`: 32 bytes derived from the id, so that two
/// keyrings of the same ids hold the same keys.
pub fn test_key(id: u32) -> SealKey {
    let byte = u8::try_from(id % 251).expect("below 251") + 1;
    SealKey::new("test", id, &[byte; session_core::seal::KEY_LEN]).expect("a 32-byte key")
}

/// A keyring of the test keys `ids`, sealing with `write_key`.
pub fn test_keyring(ids: &[u32], write_key: Option<u32>) -> Keyring {
    Keyring::new(ids.iter().copied().map(test_key).collect(), write_key)
        .expect("a valid test keyring")
}

/// The staleness bound of the cached harnesses: short, because
/// [`Harness::settle`] waits it out.
pub const CACHED_STALENESS: std::time::Duration = std::time::Duration::from_millis(150);

/// Connects a storage for `config` and waits until its cache stores
/// copies (tracking confirmed by the server), so that a test's first reads
/// already fill it.
pub async fn connect_armed(config: &RedisConfig) -> RedisStorage {
    let storage = RedisStorage::connect(config).await.expect("connect");
    if config.cache().is_some() {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !storage.cache_armed() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tracking was not confirmed within 5 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    storage
}

impl Harness for RedisHarness {
    type Storage = RedisStorage;

    async fn open(&self) -> RedisStorage {
        connect_armed(&self.config).await
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
        // Another client's write: storages with a cache see it within the
        // staleness bound.
        self.settle().await;
        true
    }

    async fn settle(&self) {
        if let Some(cache) = self.config.cache() {
            // Deterministic: past the staleness bound no copy from before
            // the write can answer, whether or not its invalidation came.
            tokio::time::sleep(cache.max_staleness() + std::time::Duration::from_millis(20)).await;
        }
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

/// One `#[tokio::test]` per case and topology: `mod <module>` for each
/// topology, holding a test per case that runs the file's `async fn
/// <case>(Topology)` on that topology.
#[macro_export]
macro_rules! on_topologies {
    ($cases:tt, $($module:ident => $topology:expr),+ $(,)?) => {
        $( $crate::on_topologies!(@module $module, $topology, $cases); )+
    };
    (@module $module:ident, $topology:expr, [$($case:ident),+ $(,)?]) => {
        mod $module {
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($topology).await;
                }
            )+
        }
    };
}
