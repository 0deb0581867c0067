//! The conformance suite, unchanged, against every Redis and Valkey topology
//! that `cargo xtask test` starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{RedisHarness, Topology, caching, hashing, sealing};
use session_config::{HashPhase, TrackingMode};

macro_rules! topology {
    ($module:ident, $topology:expr) => {
        mod $module {
            use super::*;

            async fn harness() -> Option<RedisHarness> {
                RedisHarness::new($topology).await
            }

            session_testkit::conformance_suite!(harness, real_time);
        }
    };
}

topology!(standalone, Topology::Standalone);
topology!(acl, Topology::Acl);
topology!(tls, Topology::Tls);
topology!(mtls, Topology::Mtls);
topology!(cluster, Topology::Cluster);
topology!(sentinel, Topology::Sentinel);
// Valkey, the same way; its test build has no TLS, so TLS and mutual TLS are
// tested on Redis only.
topology!(valkey_standalone, Topology::ValkeyStandalone);
topology!(valkey_acl, Topology::ValkeyAcl);
topology!(valkey_cluster, Topology::ValkeyCluster);
topology!(valkey_sentinel, Topology::ValkeySentinel);

// With the local cache on: every storage the suite opens keeps copies, and
// must answer exactly as without them.
macro_rules! cached {
    ($module:ident, $topology:expr, $mode:expr) => {
        mod $module {
            use super::*;

            async fn harness() -> Option<RedisHarness> {
                RedisHarness::cached($topology, $mode).await
            }

            session_testkit::conformance_suite!(harness, real_time);
        }
    };
}

cached!(
    cached_standalone,
    Topology::Standalone,
    TrackingMode::Tracking
);
cached!(
    cached_broadcast,
    Topology::Standalone,
    TrackingMode::Broadcast
);
cached!(cached_tls, Topology::Tls, TrackingMode::Tracking);
cached!(cached_cluster, Topology::Cluster, TrackingMode::Tracking);
cached!(cached_sentinel, Topology::Sentinel, TrackingMode::Tracking);
cached!(
    cached_valkey_standalone,
    Topology::ValkeyStandalone,
    TrackingMode::Tracking
);
cached!(
    cached_valkey_broadcast,
    Topology::ValkeyStandalone,
    TrackingMode::Broadcast
);
cached!(
    cached_valkey_cluster,
    Topology::ValkeyCluster,
    TrackingMode::Tracking
);
cached!(
    cached_valkey_sentinel,
    Topology::ValkeySentinel,
    TrackingMode::Tracking
);

// With encryption at rest on: every storage the suite opens seals what it
// writes, and must answer exactly as without it.
macro_rules! sealed {
    ($module:ident, $topology:expr) => {
        mod $module {
            use super::*;

            async fn harness() -> Option<RedisHarness> {
                RedisHarness::sealed($topology).await
            }

            session_testkit::conformance_suite!(harness, real_time);
        }
    };
}

sealed!(sealed_standalone, Topology::Standalone);
sealed!(sealed_cluster, Topology::Cluster);
sealed!(sealed_sentinel, Topology::Sentinel);
sealed!(sealed_valkey_standalone, Topology::ValkeyStandalone);
sealed!(sealed_valkey_cluster, Topology::ValkeyCluster);
sealed!(sealed_valkey_sentinel, Topology::ValkeySentinel);

// With session ids hashed in key names (and, for the "private" ones,
// encryption on too): the same answers, on keys that hold no id. The
// migration phases run the suite too, each storage looking sessions up
// under both names.
macro_rules! configured {
    ($module:ident, $topology:expr, $configure:expr) => {
        mod $module {
            use super::*;

            async fn harness() -> Option<RedisHarness> {
                RedisHarness::configured($topology, $configure).await
            }

            session_testkit::conformance_suite!(harness, real_time);
        }
    };
}

configured!(private_standalone, Topology::Standalone, |config| sealing(
    hashing(config, HashPhase::Hashed)
));
configured!(private_cluster, Topology::Cluster, |config| sealing(
    hashing(config, HashPhase::Hashed)
));
configured!(private_sentinel, Topology::Sentinel, |config| sealing(
    hashing(config, HashPhase::Hashed)
));
configured!(private_valkey_cluster, Topology::ValkeyCluster, |config| {
    sealing(hashing(config, HashPhase::Hashed))
});
configured!(hashed_cached_standalone, Topology::Standalone, |config| {
    caching(hashing(config, HashPhase::Hashed), TrackingMode::Tracking)
});
configured!(
    hashed_cached_broadcast,
    Topology::ValkeyStandalone,
    |config| caching(hashing(config, HashPhase::Hashed), TrackingMode::Broadcast)
);
configured!(migrating_plain_first, Topology::Standalone, |config| {
    hashing(config, HashPhase::PlainFirst)
});
configured!(migrating_hashed_first, Topology::Cluster, |config| hashing(
    config,
    HashPhase::HashedFirst
));
