//! Scenario 11: a bounded soak with random faults.
//!
//! Two managers (two replicas' worth of clients) load one Redis with
//! append-only persistence (`appendfsync always`) while faults are injected
//! at random: connections killed, the server stalled for 1 to 3 s, the
//! server killed and restarted. At the end the audit checks, through both
//! managers:
//!
//! - every session acknowledged as created and not deleted is readable
//!   (Redis keeps acknowledged writes across these faults with
//!   `appendfsync always`, so "where Redis kept them" is all of them);
//! - this process's resident memory grew by less than a stated bound
//!   between the end of the warm-up and the end of the soak;
//! - no task panicked or hung, and every failure was typed and retryable.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::load::{self, Load, LoadSpec, ms};
use crate::rng::Rng;
use crate::{Outcome, scenarios};
use session_testenv::RedisProcess;
use session_testenv::process::rss_kib;

/// The figure's name.
pub const NAME: &str = "soak";

/// Allowed growth of this process's resident memory after the warm-up.
pub const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;

/// Runs the soak for `secs` seconds of faults with its own server.
pub async fn run_library(scratch: &Path, secs: u64, seed: u64) -> Outcome {
    Outcome::or_error(NAME, try_run(scratch, secs, seed).await)
}

async fn try_run(scratch: &Path, secs: u64, seed: u64) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(NAME);
    let mut server = RedisProcess::start(
        scratch,
        "soak",
        &["--appendonly", "yes", "--appendfsync", "always"],
    )?;
    let prefix = scenarios::unique_prefix("soak");
    let config = scenarios::fault_config(&server.addr(), &prefix)?;
    let replicas = [
        scenarios::manager(&config).await?,
        scenarios::manager(&config).await?,
    ];
    let epoch = Instant::now();
    let mut spec = LoadSpec::steady(seed);
    spec.tasks = 32;
    spec.record_all = false;
    let loads = [
        Load::start(&replicas[0], spec, epoch),
        Load::start(
            &replicas[1],
            LoadSpec {
                seed: seed ^ 1,
                ..spec
            },
            epoch,
        ),
    ];
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = std::process::id();
    let rss_start = rss_kib(pid).unwrap_or(0);

    let mut rng = Rng::derive(seed, 11);
    let mut faults: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2000 + rng.below(4000))).await;
        if Instant::now() >= deadline {
            break;
        }
        let at = epoch.elapsed();
        match rng.below(3) {
            0 => {
                let killed = server
                    .cli()
                    .run_async(&["CLIENT", "KILL", "TYPE", "normal"])
                    .await?;
                faults.push(format!(
                    "{:.1}s kill {killed} connections",
                    at.as_secs_f64()
                ));
            }
            1 => {
                let stall = Duration::from_millis(1000 + rng.below(2000));
                server.stall()?;
                tokio::time::sleep(stall).await;
                server.resume()?;
                faults.push(format!("{:.1}s stall {}", at.as_secs_f64(), ms(stall)));
            }
            _ => {
                let down = Duration::from_millis(500 + rng.below(1000));
                server.kill()?;
                tokio::time::sleep(down).await;
                server.restart()?;
                faults.push(format!(
                    "{:.1}s restart after {}",
                    at.as_secs_f64(),
                    ms(down)
                ));
            }
        }
    }
    // Let the last fault heal before stopping.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rss_end = rss_kib(pid).unwrap_or(0);
    let [first, second] = loads;
    let reports = [
        first.stop(Duration::from_secs(10)).await,
        second.stop(Duration::from_secs(10)).await,
    ];
    let redis_rss = server.pid().and_then(rss_kib).unwrap_or(0);

    let mut live = Vec::new();
    let mut ops = 0;
    let mut failed = 0;
    let mut non_retryable = 0;
    let mut hung = 0;
    let mut panicked = 0;
    let mut lost_during = 0;
    let mut anomalies = std::collections::BTreeMap::new();
    for report in &reports {
        live.extend(report.live.iter().copied());
        ops += report.total_ops;
        failed += report.failed();
        non_retryable += report.non_retryable();
        hung += report.hung;
        panicked += report.panicked.len();
        lost_during += report.lost.len();
        for (anomaly, count) in report.anomalies() {
            *anomalies.entry(anomaly).or_insert(0) += count;
        }
    }
    // Cross-replica audit: each replica reads the other's sessions too.
    let audits = [
        load::audit(&replicas[0], &live).await,
        load::audit(&replicas[1], &live).await,
    ];
    let missing = audits[0].missing.len().max(audits[1].missing.len());
    let growth = rss_end.saturating_sub(rss_start);
    let last_failure = reports
        .iter()
        .map(|r| r.failures_recovery_after(Duration::ZERO, scenarios::SLOW))
        .max()
        .unwrap_or_default();
    let (final_ops, final_failed) = reports
        .iter()
        .map(|r| r.failures_after(r.last_end().saturating_sub(Duration::from_secs(1))))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));

    outcome.figure(format!(
        "seed {seed}: {secs}s, {} faults ({}); {ops} ops from 2 managers x 32 tasks, {failed} failed, {non_retryable} not retryable; {} live sessions audited through both managers, {missing} missing; anomalies {anomalies:?}; RSS of this process {} -> {} KiB (+{growth} KiB, bound {RSS_GROWTH_BOUND_KIB}); redis-server RSS {redis_rss} KiB",
        faults.len(),
        faults.join(", "),
        live.len(),
        rss_start,
        rss_end,
    ));
    let _ = last_failure;
    outcome.check(
        missing == 0 && audits.iter().all(|a| a.errors == 0),
        format!(
            "every acknowledged, undeleted session is readable from both managers: {missing} missing, read errors {:?}",
            audits.iter().map(|a| a.first_error.clone()).collect::<Vec<_>>()
        ),
    );
    outcome.check(
        lost_during == 0 && anomalies.is_empty(),
        format!("no operation contradicted acknowledged state: {anomalies:?}"),
    );
    outcome.check(
        non_retryable == 0,
        format!("every failure is retryable ({non_retryable} are not)"),
    );
    outcome.check(
        hung == 0 && panicked == 0,
        format!("no task hung ({hung}) or panicked ({panicked})"),
    );
    outcome.check(
        growth < RSS_GROWTH_BOUND_KIB,
        format!("RSS growth {growth} KiB under {RSS_GROWTH_BOUND_KIB} KiB"),
    );
    outcome.check(
        final_ops > 0 && final_failed == 0,
        format!("the last second is clean: {final_failed} failed of {final_ops}"),
    );
    for report in &reports {
        for (class, samples) in &report.samples {
            outcome.note(format!("{class}: {}", samples.join(" | ")));
        }
    }
    for manager in replicas {
        manager.close().await.ok();
    }
    Ok(outcome)
}
