//! Scenario 3: the server is killed and restarted with append-only
//! persistence (`appendonly yes`, `appendfsync always`).
//!
//! With `appendfsync always` Redis writes and fsyncs the append-only file
//! before it answers a write, so every acknowledged write survives even a
//! `SIGKILL`. Promised: every session acknowledged as created (and not
//! deleted) before or during the outage is readable afterwards, through
//! the same manager, which reconnects without being rebuilt; zero lost.
//!
//! The owner index is persisted like the sessions: three owners' sessions
//! are created before the kill, some deleted and one owner's revoked, and
//! after the restart each owner's listing is exactly the sessions it had,
//! and keeps its new ones.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use session_core::{Manager, Owner, SessionId};

use crate::load::{self, Load, LoadSpec, ms};
use crate::rng::Rng;
use crate::{Outcome, scenarios};
use session_testenv::RedisProcess;

/// The figure's name.
pub const NAME: &str = "server-restarted";

/// Sessions written before the load starts.
pub const PRELOADED: usize = 5000;
/// Owned sessions created per owner before the kill.
pub const OWNED: usize = 40;
/// Of the first owner's sessions, how many are deleted before the kill.
pub const OWNED_DELETED: usize = 10;

/// How long the server stays down.
pub const DOWN: Duration = Duration::from_secs(1);
/// The bound on recovery after the server is back.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// Runs the scenario with its own server in `scratch`.
pub async fn run(scratch: &Path, seed: u64) -> Outcome {
    Outcome::or_error(NAME, try_run(scratch, seed).await)
}

async fn try_run(scratch: &Path, seed: u64) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(NAME);
    let mut server = RedisProcess::start(
        scratch,
        "restart",
        &["--appendonly", "yes", "--appendfsync", "always"],
    )?;
    let config = scenarios::fault_config(&server.addr(), &scenarios::unique_prefix("restart"))?;
    let manager = scenarios::manager(&config).await?;

    let mut rng = Rng::derive(seed, 3);
    let (preloaded, preload_failed) = load::create_many(&manager, PRELOADED, 32, &mut rng).await;
    anyhow::ensure!(
        preload_failed == 0,
        "{preload_failed} preload creates failed"
    );

    let owners = [owner("kept"), owner("pruned"), owner("revoked")];
    let mut owned: Vec<BTreeSet<SessionId>> = Vec::new();
    for owner in &owners {
        let mut ids = BTreeSet::new();
        for _ in 0..OWNED {
            ids.insert(manager.create_owned(owner.clone()).await?.id());
        }
        owned.push(ids);
    }
    let deleted: Vec<SessionId> = owned[1].iter().take(OWNED_DELETED).copied().collect();
    for id in &deleted {
        anyhow::ensure!(
            manager.delete(id).await?,
            "the owned session {id} to delete was gone"
        );
        owned[1].remove(id);
    }
    let revoked = manager.revoke_owned(&owners[2]).await?;
    anyhow::ensure!(
        revoked.len() == OWNED,
        "revoking the third owner ended {} of its {OWNED} sessions",
        revoked.len()
    );
    owned[2].clear();

    let load = Load::start(&manager, LoadSpec::steady(seed), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = load.now();
    server.kill()?;
    tokio::time::sleep(DOWN).await;
    server.restart()?;
    let back_at = load.now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = load.stop(Duration::from_secs(10)).await;

    let mut expected = preloaded.clone();
    expected.extend(report.live.iter().copied());
    let audit = load::audit(&manager, &expected).await;
    let count = manager.count().await;
    let mut listings = Vec::new();
    for owner in &owners {
        listings.push(listing(&manager, owner).await?);
    }
    let new_session = manager.create_owned(owners[0].clone()).await?.id();
    let mut grown = owned[0].clone();
    grown.insert(new_session);
    let grown_listing = listing(&manager, &owners[0]).await?;
    let owned_live: usize = owned.iter().map(BTreeSet::len).sum();
    let recovery = report.recovery_after(back_at, scenarios::SLOW);
    let down_ops = report.overlapping(killed_at, back_at).count();
    let last = report.last_end();
    let (final_ops, final_bad) = report.after(last.saturating_sub(Duration::from_secs(1)));

    outcome.figure(format!(
        "owner listings after the restart: {} (expected {})",
        listings
            .iter()
            .map(|listed| listed.len().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        owned
            .iter()
            .map(|ids| ids.len().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ));
    outcome.figure(format!(
        "{} sessions acknowledged ({} before, {} live from the load) and {} lost after SIGKILL + restart; {} of {} ops failed ({}), {} ops ran during the {} outage; service back {} after the restart; same manager, not rebuilt",
        expected.len(),
        preloaded.len(),
        report.live.len(),
        audit.missing.len(),
        report.failed(),
        report.total_ops,
        report.failure_text(),
        down_ops,
        ms(back_at - killed_at),
        ms(recovery),
    ));
    audit.check_all_read(&mut outcome, "zero acknowledged sessions lost");
    outcome.check(
        listings == owned,
        format!(
            "each owner's listing after the restart is exactly its live sessions (created and not deleted or revoked): {}",
            differences(&listings, &owned)
        ),
    );
    outcome.check(
        grown_listing == grown,
        "a session created after the restart joins its owner's listing, beside the old ones",
    );
    outcome.check(
        report.lost.is_empty(),
        format!(
            "no acknowledged session was reported missing during the load: {}",
            report.lost.len()
        ),
    );
    match count {
        Ok(count) => {
            // Uncertain creates (failed during the outage) may or may not
            // have been applied.
            let low = expected.len() + owned_live;
            let high = low + report.uncertain.len();
            outcome.check(
                (low..=high).contains(&count),
                format!("count() after the restart is in {low}..={high}: {count}"),
            );
        }
        Err(error) => {
            outcome.check(false, format!("count() after the restart: {error}"));
        }
    }
    outcome.check(
        report.hung == 0 && report.panicked.is_empty(),
        format!("no task hung ({}) or panicked", report.hung),
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
        recovery <= RECOVERY_BOUND,
        format!(
            "service resumes within {} of the restart ({})",
            ms(RECOVERY_BOUND),
            ms(recovery)
        ),
    );
    outcome.check(
        final_ops > 0 && final_bad == 0,
        format!("the last second is clean: {final_bad} bad of {final_ops} ops"),
    );
    let anomalies = report.anomalies();
    outcome.check(
        anomalies.is_empty(),
        format!("no operation contradicted acknowledged state: {anomalies:?}"),
    );
    for (class, samples) in &report.samples {
        outcome.note(format!("{class}: {}", samples.join(" | ")));
    }
    manager.close().await.ok();
    Ok(outcome)
}

/// An owner of this scenario's sessions.
fn owner(subject: &str) -> Owner {
    Owner::new("https://issuer.reliability.test", subject)
        .unwrap_or_else(|_| unreachable!("a short, non-empty subject is a valid owner"))
}

/// The ids of `owner`'s sessions as listed, retrying a failed listing for a
/// few seconds (the server has just restarted).
async fn listing(manager: &Manager, owner: &Owner) -> anyhow::Result<BTreeSet<SessionId>> {
    let started = Instant::now();
    loop {
        match manager.list_owned(owner).await {
            Ok(sessions) => return Ok(sessions.iter().map(|session| session.id()).collect()),
            Err(error) if started.elapsed() < Duration::from_secs(10) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error).context("listing an owner's sessions"),
        }
    }
}

/// What differs between each listing and what was expected, for the
/// evidence.
fn differences(listed: &[BTreeSet<SessionId>], expected: &[BTreeSet<SessionId>]) -> String {
    listed
        .iter()
        .zip(expected)
        .enumerate()
        .map(|(owner, (listed, expected))| {
            format!(
                "owner {owner}: {} missing, {} extra",
                expected.difference(listed).count(),
                listed.difference(expected).count()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
