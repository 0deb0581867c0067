//! The conformance suite, unchanged, against every Redis and Valkey topology
//! that `cargo xtask test` starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{RedisHarness, Topology};

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
