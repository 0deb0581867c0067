//! The fixture against real servers: every topology starts and serves, a
//! single server survives the faults the reliability suite inflicts, and a
//! cluster with replicas settles.
//!
//! These need `redis-server` and `redis-cli` on PATH (`cargo xtask test`
//! puts the ones it located there). Without them each test prints one
//! `SKIPPED:` line, or fails when `SESSION_TEST_REQUIRE_REDIS` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use session_testenv::cluster::{self, Shape};
use session_testenv::contract::{self, REDIS_ACL_PASSWORD, REDIS_ACL_USER};
use session_testenv::{Cli, Programs, RedisProcess, ScratchDir, Topologies};

/// Whether the servers can be run; decided the way [`contract::var`]
/// decides about a missing variable.
fn redis_installed() -> bool {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("redis-server").is_file())
    });
    if !found {
        assert!(
            !contract::require_redis(),
            "redis-server is not on PATH, but {} is set",
            contract::REQUIRE_REDIS
        );
        eprintln!("SKIPPED: redis-server is not on PATH");
    }
    found
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn every_topology_starts_serves_and_is_gone_after_drop() {
    if !redis_installed() {
        return;
    }
    let programs = Programs::redis();
    // Redis only: this test finds its programs on PATH, where Valkey's are
    // not (xtask installs them elsewhere). The Valkey topologies are started
    // by the same functions, and `cargo xtask test` runs the conformance
    // suite against each of them.
    let topologies = Topologies::start(&programs, None).unwrap();
    let env = topologies.env();
    let names: Vec<&str> = env.iter().map(|(name, _)| *name).collect();
    // Every Redis variable, in the table's order; no Valkey ones without
    // Valkey's programs, and not the two xtask sets itself.
    assert_eq!(names, contract::ALL[..13]);
    let value = |name: &str| env.iter().find(|(key, _)| *key == name).unwrap().1.clone();

    assert!(
        Cli::new(&programs, port_of(&value(contract::REDIS)))
            .ping()
            .unwrap()
    );
    let acl = Cli::new(&programs, port_of(&value(contract::REDIS_ACL)));
    assert!(!acl.ping().unwrap(), "the default user must be off");
    assert!(
        acl.user(&value(REDIS_ACL_USER), &value(REDIS_ACL_PASSWORD))
            .ping()
            .unwrap()
    );
    for path in [
        contract::REDIS_TLS_CA,
        contract::REDIS_MTLS_CERT,
        contract::REDIS_MTLS_KEY,
    ] {
        assert!(Path::new(&value(path)).is_file(), "{path}");
    }
    let sentinel = Cli::new(&programs, port_of(&value(contract::REDIS_SENTINEL)));
    let master = sentinel
        .run(&[
            "SENTINEL",
            "GET-MASTER-ADDR-BY-NAME",
            &value(contract::REDIS_SENTINEL_MASTER),
        ])
        .unwrap();
    assert!(master.starts_with("127.0.0.1"), "{master}");
    assert_eq!(value(contract::REDIS_CLUSTER).split(',').count(), 3);

    let dir = topologies.dir().to_owned();
    let pids: Vec<u32> = topologies
        .processes()
        .iter()
        .map(|(_, pid, _)| *pid)
        .collect();
    assert_eq!(
        pids.len(),
        9,
        "plain, acl, tls, mtls, 3 cluster nodes, master, sentinel"
    );
    drop(topologies);
    assert!(!dir.exists());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived"
        );
    }
}

#[test]
fn a_server_with_aof_survives_stall_kill_and_restart_with_its_data() {
    if !redis_installed() {
        return;
    }
    let scratch = ScratchDir::new("testenv-faults").unwrap();
    let mut server = RedisProcess::start(
        scratch.path(),
        "aof",
        &["--appendonly", "yes", "--appendfsync", "always"],
    )
    .unwrap();
    let port = server.port();
    let cli = server.cli();
    cli.expect_ok(&["SET", "k", "v"]).unwrap();

    server.stall().unwrap();
    let stalled = cli.run(&["-t", "0.3", "PING"]);
    assert!(
        stalled.as_deref().map_or(true, |reply| reply != "PONG"),
        "a stopped server answered: {stalled:?}"
    );
    server.resume().unwrap();
    assert!(cli.ping().unwrap());

    let old_pid = server.pid().unwrap();
    server.kill().unwrap();
    assert_eq!(server.pid(), None);
    assert!(!session_testenv::cli::ping(port));
    assert!(
        server.stall().is_err(),
        "a killed server cannot be signalled"
    );
    server.restart().unwrap();
    assert_ne!(server.pid(), Some(old_pid));
    assert_eq!(server.port(), port, "a restart keeps the port");
    assert_eq!(
        cli.run(&["GET", "k"]).unwrap(),
        "v",
        "AOF brought the data back"
    );
    assert!(server.log_text().contains("Ready to accept connections"));
}

#[test]
fn a_cluster_with_replicas_settles_with_every_replica_linked() {
    if !redis_installed() {
        return;
    }
    let scratch = ScratchDir::new("testenv-cluster").unwrap();
    let shape = Shape {
        masters: 3,
        replicas: 1,
        node_timeout_ms: 2000,
    };
    let nodes = cluster::start(&Programs::redis(), scratch.path(), "node", shape).unwrap();
    assert_eq!(nodes.len(), 6);
    let view = cluster::agreement(&nodes)
        .unwrap()
        .expect("the nodes agree");
    assert_eq!(view.iter().filter(|node| node.master).count(), 3);
    for replica in view.iter().filter(|node| !node.master) {
        let master = replica.master_id.as_deref().unwrap();
        assert!(view.iter().any(|node| node.master && node.id == master));
    }
    assert!(
        (0..16384)
            .step_by(97)
            .all(|slot| view.iter().any(|node| node.owns(slot)))
    );
}
