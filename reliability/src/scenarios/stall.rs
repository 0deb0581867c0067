//! Scenario 2: the server stalls (`SIGSTOP` for 3 s, then `SIGCONT`).
//!
//! The server's sockets stay open but nothing answers: the case a missing
//! command timeout turns into a hang. Promised: every operation in flight
//! or started during the stall returns within the command timeout plus a
//! small margin, with a retryable typed error (a timeout), none hangs, and
//! service resumes by itself after `SIGCONT`. Beside the load, 16 tasks
//! increment 4 counters through the atomic read-modify-write: a timed-out
//! increment still runs when the server resumes, so each counter ends with
//! at least its acknowledged increments and at most those plus the ones
//! whose outcome was reported unknown ([`increments`]).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::load::{self, Load, LoadSpec, OpResult, ms};
use crate::rng::Rng;
use crate::{Outcome, increments, scenarios};
use session_testenv::RedisProcess;

/// The figure's name.
pub const NAME: &str = "server-stalled";

/// How long the server is stopped.
pub const STALL: Duration = Duration::from_secs(3);
/// Allowed lateness beyond the command timeout: timer granularity and
/// scheduling on a loaded 2-core machine.
pub const MARGIN: Duration = Duration::from_millis(250);
/// The bound on recovery after `SIGCONT`.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// Runs the scenario with its own server in `scratch`.
pub async fn run(scratch: &Path, seed: u64) -> Outcome {
    Outcome::or_error(NAME, try_run(scratch, seed).await)
}

async fn try_run(scratch: &Path, seed: u64) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(NAME);
    let server = RedisProcess::start(scratch, "stall", &[])?;
    let config = scenarios::fault_config(&server.addr(), &scenarios::unique_prefix("stall"))?;
    let manager = scenarios::manager(&config).await?;
    let load = Load::start(&manager, LoadSpec::steady(seed), Instant::now());
    let (counters, increments) =
        increments::start_counters(&manager, &mut Rng::derive(seed, 12)).await?;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped_at = load.now();
    server.stall()?;
    tokio::time::sleep(STALL).await;
    let resumed_at = load.now();
    server.resume()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = load.stop(Duration::from_secs(10)).await;
    increments::stop_and_check(&mut outcome, &manager, &counters, increments).await?;
    let audit = load::audit(&manager, &report.live).await;

    let bound = config.command_timeout() + MARGIN;
    // Operations running at any moment of the stall.
    let in_stall: Vec<_> = report.overlapping(stopped_at, resumed_at).collect();
    let worst_in_stall = in_stall
        .iter()
        .map(|r| r.latency())
        .max()
        .unwrap_or_default();
    let timeouts = in_stall
        .iter()
        .filter(|r| {
            matches!(
                r.result,
                OpResult::Failed {
                    class: "timeout",
                    ..
                }
            )
        })
        .count();
    let over_bound = report
        .records
        .iter()
        .filter(|r| r.latency() > bound)
        .count();
    let recovery = report.recovery_after(resumed_at, scenarios::SLOW);
    let last = report.last_end();
    let (final_ops, final_bad) = report.after(last.saturating_sub(Duration::from_secs(1)));

    outcome.figure(format!(
        "{} ops in flight during the {}s stall, {timeouts} timed out; failures overall: {}; worst latency in the stall {} (bound {} = command timeout {} + {}); {} ops over the bound; service back {} after SIGCONT; {} live sessions audited, {} missing",
        in_stall.len(),
        STALL.as_secs(),
        report.failure_text(),
        ms(worst_in_stall),
        ms(bound),
        ms(config.command_timeout()),
        ms(MARGIN),
        over_bound,
        ms(recovery),
        report.live.len(),
        audit.missing.len(),
    ));
    outcome.check(
        report.hung == 0 && report.panicked.is_empty(),
        format!(
            "no operation hangs: {} tasks stuck, panics {:?}",
            report.hung, report.panicked
        ),
    );
    outcome.check(
        over_bound == 0,
        format!(
            "every operation returns within {} ({over_bound} took longer, worst {})",
            ms(bound),
            ms(report.worst_latency())
        ),
    );
    outcome.check(
        timeouts > 0,
        "operations in flight during the stall time out (none did: was the server really stopped?)",
    );
    outcome.check(
        report.non_retryable() == 0,
        format!(
            "every failure is retryable ({} are not: {:?})",
            report.non_retryable(),
            report.samples
        ),
    );
    outcome.check(
        report.anomalies().is_empty(),
        format!(
            "no acknowledged state contradicted: {:?}",
            report.anomalies()
        ),
    );
    outcome.check(
        recovery <= RECOVERY_BOUND,
        format!(
            "service resumes within {} of SIGCONT (took {})",
            ms(RECOVERY_BOUND),
            ms(recovery)
        ),
    );
    outcome.check(
        final_ops > 0 && final_bad == 0,
        format!("the last second is clean: {final_bad} bad of {final_ops} ops"),
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
