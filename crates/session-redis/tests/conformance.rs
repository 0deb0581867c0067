//! The conformance suite, unchanged, against every Redis and Valkey topology
//! that `cargo xtask test` starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{RedisHarness, Topology};
use session_config::TrackingMode;

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
