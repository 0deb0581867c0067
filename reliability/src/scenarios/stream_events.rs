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

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use session_core::{Error, SessionId};
use session_redis::events::{EntryId, LoggedEvent, Record};
use session_redis::fred::bytes::Bytes;
use session_redis::{EventLimits, EventLog};
use session_testenv::{Programs, RedisProcess};

use crate::load::ms;
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

    let mut producers = Vec::new();
    for session in &sessions {
        let (log, stop, session) = (log.clone(), Arc::clone(&stop), *session);
        producers.push(tokio::spawn(async move {
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
        }));
    }
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

    let bound = config.command_timeout() + MARGIN;
    let mut acknowledged = 0;
    let mut lost = Vec::new();
    let mut unordered = 0;
    let mut unexpected = Vec::new();
    let mut uncertain_present = 0;
    let mut failures = 0;
    let mut worst = Duration::ZERO;
    let mut recovered = Duration::ZERO;
    for (session, appends) in sessions.iter().zip(&all) {
        let stored = read_all(&log, session).await?;
        let numbers: Vec<u64> = stored.iter().filter_map(number).collect();
        if numbers.windows(2).any(|pair| pair[0] >= pair[1]) {
            unordered += 1;
        }
        for append in appends {
            worst = worst.max(append.took);
            match &append.result {
                Ok(id) => {
                    acknowledged += 1;
                    let found = stored.iter().find(|event| event.id == *id).and_then(number);
                    if found != Some(append.n) {
                        lost.push((*session, append.n));
                    }
                }
                Err(error) => {
                    failures += 1;
                    let present = numbers.contains(&append.n);
                    if present && error.is_outcome_unknown() {
                        uncertain_present += 1;
                    } else if present {
                        unexpected
                            .push(format!("event {} failed ({error}) yet is stored", append.n));
                    }
                }
            }
        }
        // Recovery: from the restart to the first acknowledged append that
        // started after it.
        if let Some(first) = appends
            .iter()
            .find(|append| append.started >= back_at && append.result.is_ok())
        {
            recovered = recovered.max(first.started + first.took - back_at);
        } else {
            recovered = Duration::MAX;
        }
    }
    let followed = read_all(&log, &sessions[0]).await?;
    let followed: Vec<u64> = followed.iter().filter_map(number).collect();

    outcome.figure(format!(
        "{acknowledged} appends acknowledged across {PRODUCERS} streams, {} lost after a {} stall and SIGKILL + restart ({} down); {failures} failed ({uncertain_present} of them with an unknown outcome, and applied); slowest append {}; appends back {} after the restart; the reader followed {} events through both faults ({reader_errors} errors retried), stall at {}, kill at {}",
        lost.len(),
        ms(STALL),
        ms(DOWN),
        ms(worst),
        ms(recovered),
        seen.len(),
        ms(stalled_at - begin),
        ms(killed_at - begin),
    ));
    outcome.check(
        lost.is_empty(),
        format!(
            "every acknowledged append is in the log: {} missing (first: {:?})",
            lost.len(),
            lost.first()
        ),
    );
    outcome.check(
        unordered == 0,
        format!("each stream's events are stored in append order: {unordered} out of order"),
    );
    outcome.check(
        unexpected.is_empty(),
        format!(
            "a failed append is stored only when its outcome was unknown: {:?}",
            unexpected.first()
        ),
    );
    outcome.check(
        worst <= bound,
        format!(
            "no append waits beyond the command timeout plus {}: slowest {}",
            ms(MARGIN),
            ms(worst)
        ),
    );
    outcome.check(
        recovered <= RECOVERY_BOUND,
        format!(
            "appends resume within {} of the restart: {}",
            ms(RECOVERY_BOUND),
            ms(recovered)
        ),
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
