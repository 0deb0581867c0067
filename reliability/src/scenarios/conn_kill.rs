//! Scenario 1: the connection is killed under load.
//!
//! A steady mixed load (64 tasks, one operation per millisecond each, one
//! manager, one Redis client) runs while
//! `redis-cli CLIENT KILL TYPE normal` closes every client connection,
//! several times. Promised: the client reconnects by itself (the manager is
//! never rebuilt), every failed operation is a typed, retryable error, no
//! operation contradicts what was acknowledged before (no spurious
//! `AlreadyExists` for a fresh id, no acknowledged session missing), and
//! service is back to normal within a bound. Beside the load, 16 tasks
//! increment 4 counters through the atomic read-modify-write; each counter
//! ends with at least its acknowledged increments and at most those plus
//! the ones whose outcome was reported unknown
//! ([`increments`]).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::load::{self, Anomaly, Load, LoadSpec, ms};
use crate::rng::Rng;
use crate::{Outcome, increments, scenarios};
use session_testenv::RedisProcess;

/// The figure's name.
pub const NAME: &str = "connection-killed";

/// How many times the connections are killed.
pub const KILLS: usize = 10;
/// The bound on recovery after each kill.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(3);

/// Runs the scenario with its own server in `scratch`.
pub async fn run(scratch: &Path, seed: u64) -> Outcome {
    Outcome::or_error(NAME, try_run(scratch, seed).await)
}

async fn try_run(scratch: &Path, seed: u64) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(NAME);
    let server = RedisProcess::start(scratch, "conn-kill", &[])?;
    let config = scenarios::fault_config(&server.addr(), &scenarios::unique_prefix("kill"))?;
    let manager = scenarios::manager(&config).await?;
    // One operation per millisecond per task: the steady load with more
    // commands in flight when a connection dies.
    let spec = LoadSpec {
        pace: Duration::from_millis(1),
        ..LoadSpec::steady(seed)
    };
    let load = Load::start(&manager, spec, Instant::now());
    let (counters, increments) =
        increments::start_counters(&manager, &mut Rng::derive(seed, 11)).await?;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut kills = Vec::new();
    let mut killed_connections = Vec::new();
    for _ in 0..KILLS {
        let at = load.now();
        let reply = server
            .cli()
            .run_async(&["CLIENT", "KILL", "TYPE", "normal"])
            .await?;
        killed_connections.push(reply.trim().parse::<u64>().unwrap_or(0));
        kills.push(at);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = load.stop(Duration::from_secs(10)).await;
    increments::stop_and_check(&mut outcome, &manager, &counters, increments).await?;
    // The same manager still serves: its client reconnected by itself.
    let connected_after = server
        .cli()
        .run_async(&["CLIENT", "LIST", "TYPE", "normal"])
        .await?;
    let audit = load::audit(&manager, &report.live).await;
    // Who wrote the sessions whose creator was told AlreadyExists?
    let mut written_by_caller = 0;
    for spurious in &report.spurious {
        if let Ok(Some(session)) = manager.get(&spurious.id).await
            && spurious.written_by_the_call(&session, Duration::from_millis(50))
        {
            written_by_caller += 1;
        }
    }

    let recoveries: Vec<Duration> = kills
        .iter()
        .enumerate()
        .map(|(i, &at)| {
            // Only this kill's disruption: operations ending before the next.
            let until = kills.get(i + 1).copied().unwrap_or(Duration::MAX);
            report
                .records
                .iter()
                .filter(|r| r.end >= at && r.end < until)
                .filter(|r| r.is_bad() || r.latency() > scenarios::SLOW)
                .map(|r| r.end - at)
                .max()
                .unwrap_or_default()
        })
        .collect();
    let worst_recovery = recoveries.iter().copied().max().unwrap_or_default();
    let anomalies = report.anomalies();
    let spurious = anomalies
        .get(&Anomaly::SpuriousAlreadyExists)
        .copied()
        .unwrap_or(0);
    let last = report.last_end();
    let (final_ops, final_bad) = report.after(last.saturating_sub(Duration::from_secs(1)));

    outcome.figure(format!(
        "{KILLS} kills ({} connections closed); {} of {} ops failed ({}); anomalies {anomalies:?}; worst latency {}; recovery per kill {} (worst {}); {} live sessions audited, {} missing",
        killed_connections.iter().sum::<u64>(),
        report.failed(),
        report.total_ops,
        report.failure_text(),
        ms(report.worst_latency()),
        recoveries.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
        ms(worst_recovery),
        report.live.len(),
        audit.missing.len(),
    ));
    outcome.check(
        killed_connections.iter().all(|&n| n >= 1),
        format!("every CLIENT KILL closed the manager's connection: {killed_connections:?}"),
    );
    outcome.check(
        report.hung == 0 && report.panicked.is_empty(),
        format!(
            "no task hung ({}) or panicked ({:?})",
            report.hung, report.panicked
        ),
    );
    outcome.check(
        report.non_retryable() == 0,
        format!(
            "every failure is a retryable typed error ({} are not: {:?})",
            report.non_retryable(),
            report.samples
        ),
    );
    outcome.check(
        spurious == 0,
        format!(
            "no create of a fresh id is reported as AlreadyExists: {spurious} were; {written_by_caller} of those sessions exist with a created_at inside the very call that was told AlreadyExists (the client re-sent SET NX after the connection closed, and the retry found the key its first attempt wrote)"
        ),
    );
    let misreported_deletes = anomalies
        .get(&Anomaly::DeleteFoundNothing)
        .copied()
        .unwrap_or(0);
    outcome.check(
        misreported_deletes == 0,
        format!(
            "a delete of an existing session returns true: {misreported_deletes} returned false (the re-sent DEL found the key its first attempt removed)"
        ),
    );
    let lost: usize = anomalies
        .iter()
        .filter(|(anomaly, _)| {
            !matches!(
                anomaly,
                Anomaly::SpuriousAlreadyExists | Anomaly::DeleteFoundNothing
            )
        })
        .map(|(_, count)| count)
        .sum();
    outcome.check(
        lost == 0,
        format!("no acknowledged session went missing: {anomalies:?}"),
    );
    outcome.check(
        worst_recovery <= RECOVERY_BOUND,
        format!(
            "service recovers within {} of each kill (worst {})",
            ms(RECOVERY_BOUND),
            ms(worst_recovery)
        ),
    );
    outcome.check(
        final_ops > 0 && final_bad == 0,
        format!("the last second is clean: {final_bad} bad of {final_ops} ops"),
    );
    outcome.check(
        !connected_after.trim().is_empty(),
        "the manager's client is connected again after the kills",
    );
    audit.check_all_read(
        &mut outcome,
        "every acknowledged, undeleted session is readable",
    );
    for (class, samples) in &report.samples {
        outcome.note(format!("{class}: {}", samples.join(" | ")));
    }
    manager.close().await.ok();
    Ok(outcome)
}
