//! The fast, deterministic scenarios of the reliability suite, in the
//! normal test suite (`cargo xtask test`): races, bad stored values, secrets,
//! bad configuration and the eager/lazy connect cases that need no server
//! start. Each runs the same code as `cargo xtask reliability`, at a smaller
//! scale, and prints its figure. The races and bad stored values run on the
//! plain Redis server and, as tests of their own, on the plain Valkey one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use session_reliability::env::{self, SecureServers};
use session_reliability::scenarios::{bad_config, bad_values, down_at_start, races, secrets};
use session_reliability::{Outcome, rng};

fn verdict(outcome: &Outcome) {
    println!("{outcome}");
    assert!(outcome.passed, "{outcome}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_races_have_one_winner_per_id() {
    let Some(addr) = env::plain() else { return };
    verdict(&races::create_race(&addr, 100, rng::run_seed()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_updates_on_redis_stays_deleted() {
    let Some(addr) = env::plain() else { return };
    verdict(&races::delete_update_race(races::Backend::Redis(&addr), 500, rng::run_seed()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_races_on_valkey_have_one_winner_per_id() {
    let Some(addr) = env::valkey() else { return };
    verdict(
        &races::create_race(&addr, 100, rng::run_seed())
            .await
            .on_server("valkey"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_updates_on_valkey_stays_deleted() {
    let Some(addr) = env::valkey() else { return };
    verdict(
        &races::delete_update_race(races::Backend::Redis(&addr), 500, rng::run_seed())
            .await
            .on_server("valkey"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_updates_on_local_storage_stays_deleted() {
    verdict(&races::delete_update_race(races::Backend::Local, 2000, rng::run_seed()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_racing_loads_never_evict_an_active_session() {
    verdict(&races::sweep_load_race(Duration::from_millis(1500), rng::run_seed()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stored_values_are_typed_errors() {
    let Some(addr) = env::plain() else { return };
    verdict(&bad_values::run(&addr, 200, rng::run_seed()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stored_values_on_valkey_are_typed_errors() {
    let Some(addr) = env::valkey() else { return };
    verdict(
        &bad_values::run(&addr, 200, rng::run_seed())
            .await
            .on_server("valkey"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_debug_display_or_errors() {
    let Some(servers) = SecureServers::from_env() else {
        return;
    };
    verdict(&secrets::run(&servers).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configurations_are_config_errors_naming_the_field_before_any_network() {
    verdict(&bad_config::run().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_connect_without_redis_fails_fast_and_typed() {
    let mut outcome = Outcome::new("eager-connect-without-redis");
    down_at_start::eager(&mut outcome).await.unwrap();
    verdict(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_connect_without_redis_builds_and_fails_operations_typed() {
    let mut outcome = Outcome::new("lazy-connect-without-redis");
    let (_, manager, _) = down_at_start::lazy_while_down(&mut outcome).await.unwrap();
    manager.close().await.unwrap();
    verdict(&outcome);
}

/// The cache's history checks, short: each runs a server of its own.
mod cache_consistency {
    use super::*;
    use session_config::TrackingMode;
    use session_reliability::scenarios::cache_consistency::{self, Fault, Spec};
    use session_testenv::Programs;

    async fn run(programs: Programs, mode: TrackingMode, fault: Fault) {
        let valkey = programs.server.to_string_lossy().contains("valkey");
        let scratch = env::scratch_dir("cache-consistency").unwrap();
        let spec = Spec {
            programs,
            mode,
            fault,
            duration: Duration::from_secs(3),
            seed: rng::run_seed(),
        };
        let outcome = cache_consistency::run(scratch.path(), &spec).await;
        verdict(&if valkey {
            outcome.on_server("valkey")
        } else {
            outcome
        });
    }

    /// Valkey's programs from the harness, if it gave them.
    fn valkey() -> Option<Programs> {
        let server = session_testenv::contract::var(session_testenv::contract::VALKEY_SERVER_BIN)?;
        let cli = session_testenv::contract::var(session_testenv::contract::VALKEY_CLI_BIN)?;
        Some(Programs::new(server, cli))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_tracking_under_load() {
        run(Programs::redis(), TrackingMode::Tracking, Fault::None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_broadcast_under_load() {
        run(Programs::redis(), TrackingMode::Broadcast, Fault::None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_tracking_through_killed_connections() {
        run(
            Programs::redis(),
            TrackingMode::Tracking,
            Fault::ConnectionKill,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_tracking_through_a_flushall() {
        run(Programs::redis(), TrackingMode::Tracking, Fault::FlushAll).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_tracking_through_an_invalidation_storm() {
        run(Programs::redis(), TrackingMode::Tracking, Fault::Storm).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn valkey_tracking_under_load() {
        let Some(valkey) = valkey() else { return };
        run(valkey, TrackingMode::Tracking, Fault::None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn valkey_broadcast_through_a_flushall() {
        let Some(valkey) = valkey() else { return };
        run(valkey, TrackingMode::Broadcast, Fault::FlushAll).await;
    }
}

/// The event log of resumable streams through a stall and a restart, and
/// through a sentinel failover, on Redis and on Valkey: each runs servers
/// of its own.
mod stream_events {
    use super::*;
    use session_reliability::scenarios::stream_events;
    use session_testenv::Programs;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_loses_no_acknowledged_event() {
        let scratch = env::scratch_dir("stream-events").unwrap();
        verdict(&stream_events::run(scratch.path(), &Programs::redis()).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn valkey_loses_no_acknowledged_event() {
        let server = session_testenv::contract::var(session_testenv::contract::VALKEY_SERVER_BIN);
        let cli = session_testenv::contract::var(session_testenv::contract::VALKEY_CLI_BIN);
        let (Some(server), Some(cli)) = (server, cli) else {
            return;
        };
        let scratch = env::scratch_dir("stream-events").unwrap();
        verdict(&stream_events::run(scratch.path(), &Programs::new(server, cli)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_loses_no_confirmed_event_in_a_failover() {
        let scratch = env::scratch_dir("stream-failover").unwrap();
        verdict(&stream_events::run_failover(scratch.path(), &Programs::redis()).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn valkey_loses_no_confirmed_event_in_a_failover() {
        let server = session_testenv::contract::var(session_testenv::contract::VALKEY_SERVER_BIN);
        let cli = session_testenv::contract::var(session_testenv::contract::VALKEY_CLI_BIN);
        let (Some(server), Some(cli)) = (server, cli) else {
            return;
        };
        let scratch = env::scratch_dir("stream-failover").unwrap();
        verdict(&stream_events::run_failover(scratch.path(), &Programs::new(server, cli)).await);
    }
}
