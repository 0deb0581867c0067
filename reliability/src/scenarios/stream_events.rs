//! Scenario: the event log of resumable streams through a stall and a
//! restart (`SIGSTOP` for 2 s, then `SIGKILL` and a restart with
//! `appendonly yes`, `appendfsync always`).
//!
//! 16 producers append to one stream each, as the gateway's drains do (an
//! event every 10 ms), and one reader follows one of those streams the way a
//! resumed client's replay does (read after its last id, else wait on the
//! tail), retrying after every error. Promised: every event whose append
//! was acknowledged is in the log afterwards, in the order it was appended;
//! an append that failed is either absent or, when its outcome was unknown
//! (a timeout, a connection that broke after the server applied it),
//! present once; no append hangs beyond the command timeout;
//! appends resume by themselves after the restart; and the reader, which
//! lived through both faults, saw exactly the log's events of its stream,
//! each once and in order.
//!
//! [`run_failover`] is the same with a sentinel failover for the fault, on
//! a log that confirms each append on a replica and on one that does not.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use session_config::RedisConfig;
use session_core::{Error, SessionId};
use session_redis::events::{EntryId, LoggedEvent, Record};
use session_redis::fred::bytes::Bytes;
use session_redis::{EventLimits, EventLog};
use session_testenv::{Programs, RedisProcess};

use crate::load::ms;
use crate::scenarios::failover::SentinelSet;
use crate::{Outcome, scenarios};

/// The figure's name.
pub const NAME: &str = "stream-events";

/// Streams appended to at once.
pub const PRODUCERS: usize = 16;
/// The pause between two appends of one producer.
pub const INTERVAL: Duration = Duration::from_millis(10);
/// How long the server is stopped.
pub const STALL: Duration = Duration::from_secs(2);
/// How long the server stays down after the kill.
pub const DOWN: Duration = Duration::from_secs(1);
/// Allowed lateness beyond the command timeout.
pub const MARGIN: Duration = Duration::from_millis(250);
/// The bound on recovery after the restart.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// What one append did.
struct Append {
    /// The event's number within its stream.
    n: u64,
    started: Instant,
    took: Duration,
    result: Result<EntryId, Error>,
}

/// Runs the scenario with its own server of `programs` in `scratch`.
pub async fn run(scratch: &Path, programs: &Programs) -> Outcome {
    let outcome = Outcome::or_error(NAME, try_run(scratch, programs).await);
    if programs.server.to_string_lossy().contains("valkey") {
        outcome.on_server("valkey")
    } else {
        outcome
    }
}

async fn try_run(scratch: &Path, programs: &Programs) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(NAME);
    let dir = format!("stream-events-{}", SessionId::new().as_uuid().simple());
    let mut server = RedisProcess::builder(scratch, &dir)
        .programs(programs)
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .start()?;
    let config =
        scenarios::fault_config(&server.addr(), &scenarios::unique_prefix("stream-events"))?;
    // Room for every event of the run: a trimmed event would look lost.
    let limits = EventLimits::default().max_events_per_session(1_000_000);
    let log = EventLog::connect(&config, limits).await?;
    let sessions: Vec<SessionId> = (0..PRODUCERS).map(|_| SessionId::new()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let producers = produce(&log, &sessions, &stop);
    let reader = {
        let (log, stop, session) = (log.clone(), Arc::clone(&stop), sessions[0]);
        tokio::spawn(async move { follow(&log, &session, &stop).await })
    };

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stalled_at = Instant::now();
    server.stall()?;
    tokio::time::sleep(STALL).await;
    server.resume()?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    server.kill()?;
    tokio::time::sleep(DOWN).await;
    server.restart()?;
    let back_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);

    let mut all = Vec::new();
    for producer in producers {
        all.push(producer.await?);
    }
    let (seen, reader_errors) = reader.await?;
    let audit = Audit::of(&log, &sessions, &all, back_at).await?;
    let followed = read_all(&log, &sessions[0]).await?;
    let followed: Vec<u64> = followed.iter().filter_map(number).collect();

    outcome.figure(format!(
        "{} appends acknowledged across {PRODUCERS} streams, {} lost after a {} stall and SIGKILL + restart ({} down); {} failed ({} of them with an unknown outcome, and applied); slowest append {}; appends back {} after the restart; the reader followed {} events through both faults ({reader_errors} errors retried), stall at {}, kill at {}",
        audit.acknowledged,
        audit.lost.len(),
        ms(STALL),
        ms(DOWN),
        audit.failures,
        audit.uncertain_present,
        ms(audit.worst),
        ms(audit.recovered),
        seen.len(),
        ms(stalled_at - begin),
        ms(killed_at - begin),
    ));
    audit.check(
        &mut outcome,
        config.command_timeout(),
        "the command timeout",
        "the restart",
    );
    outcome.check(
        seen == followed,
        format!(
            "the reader saw exactly its stream's stored events, once each and in order: {} seen, {} stored",
            seen.len(),
            followed.len()
        ),
    );
    for session in &sessions {
        log.delete(session).await?;
    }
    log.close().await;
    Ok(outcome)
}

/// The failover figure's name.
pub const FAILOVER_NAME: &str = "stream-events-failover";
/// How long an append of the confirming log waits for its replica.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_millis(100);

/// Runs the failover variant with its own servers of `programs` in
/// `scratch`: a master, a replica and a sentinel, and `SENTINEL FAILOVER`
/// while producers append.
///
/// Replication is asynchronous, so what the master acknowledged may never
/// reach the replica it promotes, and the old master accepts appends
/// until the sentinel demotes it. Half the producers append through a log
/// that confirms each append on a replica
/// ([`EventLimits::confirm_on_replicas`]); promised for them: every
/// acknowledged append is in the log on the new master, a failed one is
/// stored only if its outcome was unknown, none waits beyond two command
/// timeouts and the confirmation's timeout, and appends resume within
/// [`RECOVERY_BOUND`] of the switch. The other half append without
/// confirmation: how many of their acknowledged events the failover took
/// is reported, not asserted. A reader follows a confirmed stream through
/// the failover; it must see each event at most once and in order, and how
/// many events it was shown that the new master does not have (appends
/// still waiting for their confirmation, which a replay reads like any
/// other entry) is reported.
pub async fn run_failover(scratch: &Path, programs: &Programs) -> Outcome {
    let outcome = Outcome::or_error(FAILOVER_NAME, try_failover(scratch, programs).await);
    if programs.server.to_string_lossy().contains("valkey") {
        outcome.on_server("valkey")
    } else {
        outcome
    }
}

async fn try_failover(scratch: &Path, programs: &Programs) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(FAILOVER_NAME);
    let dir = format!("stream-failover-{}", SessionId::new().as_uuid().simple());
    let set = SentinelSet::start(scratch, &dir, programs).await?;
    let config = scenarios::tune(RedisConfig::sentinel(
        set.config()?,
        &scenarios::unique_prefix("stream-failover"),
    )?)?;
    let limits = EventLimits::default().max_events_per_session(1_000_000);
    let confirming =
        EventLog::connect(&config, limits.confirm_on_replicas(1, CONFIRM_TIMEOUT)).await?;
    let plain = EventLog::connect(&config, limits).await?;
    let confirmed_sessions: Vec<SessionId> = (0..PRODUCERS / 2).map(|_| SessionId::new()).collect();
    let plain_sessions: Vec<SessionId> = (0..PRODUCERS / 2).map(|_| SessionId::new()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let confirmed_producers = produce(&confirming, &confirmed_sessions, &stop);
    let plain_producers = produce(&plain, &plain_sessions, &stop);
    let reader = {
        let (log, stop, session) = (confirming.clone(), Arc::clone(&stop), confirmed_sessions[0]);
        tokio::spawn(async move { follow(&log, &session, &stop).await })
    };

    tokio::time::sleep(Duration::from_millis(2000)).await;
    let failover_at = Instant::now();
    let (switch, demoted) = set.fail_over().await?;
    let switched_at = failover_at + switch;
    // A confirmed append needs a replica, and the promoted server has none
    // until the old master rejoins as one: recovery counts from then.
    let demoted_at = Instant::now();
    let rejoined = set.wait_rejoined(Duration::from_secs(30)).await;
    let rejoined_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);

    let mut confirmed = Vec::new();
    for producer in confirmed_producers {
        confirmed.push(producer.await?);
    }
    let mut unconfirmed = Vec::new();
    for producer in plain_producers {
        unconfirmed.push(producer.await?);
    }
    let (seen, reader_errors) = reader.await?;
    let audit = Audit::of(&confirming, &confirmed_sessions, &confirmed, rejoined_at).await?;
    let plain_audit = Audit::of(&plain, &plain_sessions, &unconfirmed, switched_at).await?;
    let followed = read_all(&confirming, &confirmed_sessions[0]).await?;
    let followed: Vec<u64> = followed.iter().filter_map(number).collect();
    let shown_then_lost = seen.iter().filter(|n| !followed.contains(n)).count();

    outcome.figure(format!(
        "confirmed on a replica (WAIT 1, {}): {} appends acknowledged across {} streams, {} lost across the failover; {} failed ({} with an unknown outcome, and stored); slowest append {}; appends back {} after the old master rejoined as a replica. Without confirmation: {} acknowledged, {} lost. Sentinel switched {} after SENTINEL FAILOVER at {}, old master demoted after {} and in sync {} later; the reader followed {} events ({reader_errors} errors retried), {shown_then_lost} of them shown but not on the new master",
        ms(CONFIRM_TIMEOUT),
        audit.acknowledged,
        confirmed_sessions.len(),
        audit.lost.len(),
        audit.failures,
        audit.uncertain_present,
        ms(audit.worst),
        ms(audit.recovered),
        plain_audit.acknowledged,
        plain_audit.lost.len(),
        ms(switch),
        ms(failover_at - begin),
        demoted
            .as_ref()
            .map(|demoted| ms(*demoted + switch))
            .unwrap_or_else(|error| error.to_string()),
        rejoined
            .as_ref()
            .map(|_| ms(rejoined_at - demoted_at))
            .unwrap_or_else(|error| error.to_string()),
        seen.len(),
    ));
    audit.check(
        &mut outcome,
        2 * config.command_timeout() + CONFIRM_TIMEOUT,
        "two command timeouts and the confirmation's",
        "the old master's return as a replica",
    );
    outcome.check(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        format!(
            "the reader saw each event at most once and in order: {} seen",
            seen.len()
        ),
    );
    outcome.check(
        followed.windows(2).all(|pair| pair[0] < pair[1]) && !followed.is_empty(),
        format!(
            "the followed stream holds its events in order: {} stored",
            followed.len()
        ),
    );
    for (log, sessions) in [
        (&confirming, &confirmed_sessions),
        (&plain, &plain_sessions),
    ] {
        for session in sessions {
            log.delete(session).await?;
        }
        log.close().await;
    }
    drop(set);
    Ok(outcome)
}

/// What one producer's appends were, checked against what the log holds
/// afterwards.
struct Audit {
    acknowledged: usize,
    /// Acknowledged appends missing from the log: (session, event number).
    lost: Vec<(SessionId, u64)>,
    /// Streams whose stored events are out of append order.
    unordered: usize,
    /// Failed appends stored though their outcome was known.
    unexpected: Vec<String>,
    /// Failed appends with an unknown outcome that the log holds.
    uncertain_present: usize,
    failures: usize,
    /// The failures' messages, with how often each came.
    errors: std::collections::BTreeMap<String, usize>,
    worst: Duration,
    /// From `back_at` to the first acknowledged append started after it,
    /// the slowest stream's.
    recovered: Duration,
    /// Per stream: appends started after `back_at`, and how many of them
    /// were acknowledged.
    after_back: Vec<(usize, usize)>,
}

impl Audit {
    async fn of(
        log: &EventLog,
        sessions: &[SessionId],
        all: &[Vec<Append>],
        back_at: Instant,
    ) -> anyhow::Result<Self> {
        let mut audit = Self {
            acknowledged: 0,
            lost: Vec::new(),
            unordered: 0,
            unexpected: Vec::new(),
            uncertain_present: 0,
            failures: 0,
            errors: std::collections::BTreeMap::new(),
            worst: Duration::ZERO,
            recovered: Duration::ZERO,
            after_back: Vec::new(),
        };
        for (session, appends) in sessions.iter().zip(all) {
            let stored = read_all(log, session).await?;
            let numbers: Vec<u64> = stored.iter().filter_map(number).collect();
            if numbers.windows(2).any(|pair| pair[0] >= pair[1]) {
                audit.unordered += 1;
            }
            for append in appends {
                audit.worst = audit.worst.max(append.took);
                match &append.result {
                    Ok(id) => {
                        audit.acknowledged += 1;
                        let found = stored.iter().find(|event| event.id == *id).and_then(number);
                        if found != Some(append.n) {
                            audit.lost.push((*session, append.n));
                        }
                    }
                    Err(error) => {
                        audit.failures += 1;
                        *audit.errors.entry(error.to_string()).or_default() += 1;
                        let present = numbers.contains(&append.n);
                        if present && error.is_outcome_unknown() {
                            audit.uncertain_present += 1;
                        } else if present {
                            audit
                                .unexpected
                                .push(format!("event {} failed ({error}) yet is stored", append.n));
                        }
                    }
                }
            }
            let after: Vec<&Append> = appends
                .iter()
                .filter(|append| append.started >= back_at)
                .collect();
            audit.after_back.push((
                after.len(),
                after.iter().filter(|append| append.result.is_ok()).count(),
            ));
            audit.recovered = match appends
                .iter()
                .find(|append| append.started >= back_at && append.result.is_ok())
            {
                Some(first) => audit.recovered.max(first.started + first.took - back_at),
                None => Duration::MAX,
            };
        }
        Ok(audit)
    }

    /// The promises on the appends: none acknowledged is lost, the order
    /// holds, a failure with a known outcome wrote nothing, no append took
    /// longer than `bound` (`bound_text` says what it is), and appends came
    /// back within [`RECOVERY_BOUND`] of `back` (the fault's end).
    fn check(&self, outcome: &mut Outcome, bound: Duration, bound_text: &str, back: &str) {
        outcome.note(format!("failed appends: {:?}", self.errors));
        outcome.check(
            self.lost.is_empty(),
            format!(
                "every acknowledged append is in the log: {} missing (first: {:?})",
                self.lost.len(),
                self.lost.first()
            ),
        );
        outcome.check(
            self.unordered == 0,
            format!(
                "each stream's events are stored in append order: {} out of order",
                self.unordered
            ),
        );
        outcome.check(
            self.unexpected.is_empty(),
            format!(
                "a failed append is stored only when its outcome was unknown: {:?}",
                self.unexpected.first()
            ),
        );
        outcome.check(
            self.worst <= bound + MARGIN,
            format!(
                "no append waits beyond {bound_text} plus {}: slowest {}",
                ms(MARGIN),
                ms(self.worst)
            ),
        );
        outcome.check(
            self.recovered <= RECOVERY_BOUND,
            format!(
                "appends resume within {} of {back}: {} (per stream, appends after it and acknowledged: {:?})",
                ms(RECOVERY_BOUND),
                ms(self.recovered),
                self.after_back
            ),
        );
    }
}

/// One producer per session, as the gateway's drains: an event every
/// [`INTERVAL`] until `stop`, each append recorded.
fn produce(
    log: &EventLog,
    sessions: &[SessionId],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Append>>> {
    sessions
        .iter()
        .map(|session| {
            let (log, stop, session) = (log.clone(), Arc::clone(stop), *session);
            tokio::spawn(async move {
                let mut appends = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let record = Record::Event {
                        data: Some(Bytes::from(n.to_string())),
                        retry: None,
                    };
                    let started = Instant::now();
                    let result = log.append(&session, "s", &record, scenarios::ttl()).await;
                    appends.push(Append {
                        n,
                        started,
                        took: started.elapsed(),
                        result,
                    });
                    n += 1;
                    tokio::time::sleep(INTERVAL).await;
                }
                appends
            })
        })
        .collect()
}

/// The event number an entry carries.
fn number(event: &LoggedEvent) -> Option<u64> {
    match &event.record {
        Record::Event {
            data: Some(data), ..
        } => std::str::from_utf8(data).ok()?.parse().ok(),
        _ => None,
    }
}

/// Every entry of `session`'s log.
async fn read_all(log: &EventLog, session: &SessionId) -> anyhow::Result<Vec<LoggedEvent>> {
    let mut all = Vec::new();
    let mut last = EntryId::ZERO;
    loop {
        let batch = log.after(session, last, 1000).await?;
        let Some(end) = batch.last() else {
            return Ok(all);
        };
        last = end.id;
        all.extend(batch);
    }
}

/// Follows `session`'s log as a replay does until `stop` and the log has
/// nothing more: the event numbers seen, and how many reads failed.
async fn follow(log: &EventLog, session: &SessionId, stop: &AtomicBool) -> (Vec<u64>, usize) {
    let mut seen = Vec::new();
    let mut errors = 0;
    let mut last = EntryId::ZERO;
    loop {
        let batch = match log.after(session, last, 100).await {
            Ok(batch) if batch.is_empty() && stop.load(Ordering::Relaxed) => {
                // The producers have stopped: one last read catches what
                // they appended last.
                match log.after(session, last, 100).await {
                    Ok(batch) if batch.is_empty() => return (seen, errors),
                    Ok(batch) => batch,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                }
            }
            Ok(batch) if batch.is_empty() => {
                match log
                    .wait_after(session, last, Duration::from_millis(500))
                    .await
                {
                    Ok(Some(batch)) => batch,
                    Ok(None) => Vec::new(),
                    Err(_) => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            Ok(batch) => batch,
            Err(_) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        for event in batch {
            last = event.id;
            if let Some(n) = number(&event) {
                seen.push(n);
            }
        }
    }
}
