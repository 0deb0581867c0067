//! A history checker for reads against writes across replicas.
//!
//! Every operation of a run is recorded with the time it was invoked, the
//! time it completed and what it returned. Each session is written only by
//! increments (a read-modify-write, or a conditional write of a read copy),
//! so its revision counts the increments applied, and a read's revision says
//! which writes it reflects. [`check`] then holds every read against the
//! writes that *completed* before the read was *invoked*:
//!
//! - **stale**: a read returned an older revision than a write acknowledged
//!   more than the staleness bound before the read began;
//! - **resurrected**: a read found the session more than the bound after a
//!   delete (or a flush of the whole database) was acknowledged;
//! - **missing**: a read found no session while no delete or flush of it
//!   had even been invoked;
//! - **invented**: a read returned a revision no write had been invoked for;
//! - **lost update**: at the end, a session's revision is below its
//!   acknowledged increments (or above them plus those whose outcome was
//!   unknown).
//!
//! Times are offsets from one epoch, taken with one monotonic clock in the
//! one process that runs every replica, so they compare directly.
//!
//! It also measures the **staleness** of each cross-replica read: how long
//! before the read began the first write newer than what it returned had
//! completed (zero for a read that returned the newest acknowledged
//! revision). Its distribution is the figure of a run.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What one recorded operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A read that answered: the revision found, or `None` for no session.
    Read(Option<u64>),
    /// An increment acknowledged at this revision.
    Wrote(u64),
    /// An increment whose outcome is unknown (a timeout, a dropped
    /// connection): it may or may not have been applied.
    MaybeWrote,
    /// A delete acknowledged (whether or not the session was there).
    Deleted,
    /// A delete whose outcome is unknown.
    MaybeDeleted,
    /// Every key of the database removed (`FLUSHALL`), acknowledged.
    Flushed,
}

/// One operation on one session (a flush is recorded on every session).
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// Which session.
    pub session: usize,
    /// Which replica (manager) ran it.
    pub replica: usize,
    /// When it was invoked, from the run's epoch.
    pub invoked: Duration,
    /// When it completed.
    pub completed: Duration,
    /// What it did.
    pub kind: Kind,
}

/// The violations a history has, by kind, with an example of each.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Reads checked.
    pub reads: usize,
    /// Cross-replica reads: the newest write acknowledged before the read
    /// began came from another replica.
    pub cross_replica_reads: usize,
    /// Violations by kind: count and the first example.
    pub violations: BTreeMap<&'static str, (usize, String)>,
    /// The staleness of every cross-replica read, sorted.
    pub staleness: Vec<Duration>,
}

impl Verdict {
    /// Whether the history holds every promise.
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }

    /// The count of violations of `kind`.
    pub fn count(&self, kind: &str) -> usize {
        self.violations.get(kind).map_or(0, |(count, _)| *count)
    }

    /// The staleness at quantile `q` (0 to 1) of the cross-replica reads.
    pub fn staleness_at(&self, q: f64) -> Duration {
        if self.staleness.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.staleness.len() - 1) as f64 * q).round() as usize;
        self.staleness[rank.min(self.staleness.len() - 1)]
    }

    /// How many cross-replica reads returned something older than the
    /// newest acknowledged write.
    pub fn stale_reads(&self) -> usize {
        self.staleness.iter().filter(|s| !s.is_zero()).count()
    }

    fn violation(&mut self, kind: &'static str, example: impl FnOnce() -> String) {
        let entry = self
            .violations
            .entry(kind)
            .or_insert_with(|| (0, example()));
        entry.0 += 1;
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reads ({} cross-replica, {} of them behind the newest write); staleness p50 {:?}, p99 {:?}, max {:?}",
            self.reads,
            self.cross_replica_reads,
            self.stale_reads(),
            self.staleness_at(0.5),
            self.staleness_at(0.99),
            self.staleness_at(1.0),
        )?;
        for (kind, (count, example)) in &self.violations {
            write!(f, "; {count} {kind} (e.g. {example})")?;
        }
        Ok(())
    }
}

/// Checks `events` against the staleness bound `bound`. `finals` holds each
/// session's revision read at the end by a fresh client (`None` if it is
/// gone), for the lost-update check; the first revision of every session
/// is 1.
pub fn check(events: &[Event], finals: &[Option<u64>], bound: Duration) -> Verdict {
    let mut verdict = Verdict::default();
    let mut by_session: BTreeMap<usize, Vec<&Event>> = BTreeMap::new();
    for event in events {
        by_session.entry(event.session).or_default().push(event);
    }
    for (&session, events) in &by_session {
        // Acknowledged writes in the order they completed.
        let mut writes: Vec<&Event> = events
            .iter()
            .copied()
            .filter(|e| matches!(e.kind, Kind::Wrote(_)))
            .collect();
        writes.sort_by_key(|e| e.completed);
        let revision = |e: &Event| match e.kind {
            Kind::Wrote(revision) => revision,
            _ => 0,
        };
        let removals: Vec<&Event> = events
            .iter()
            .copied()
            .filter(|e| matches!(e.kind, Kind::Deleted | Kind::Flushed))
            .collect();
        let first_removal_invoked = events
            .iter()
            .filter(|e| matches!(e.kind, Kind::Deleted | Kind::MaybeDeleted | Kind::Flushed))
            .map(|e| e.invoked)
            .min();
        let writes_invoked = events
            .iter()
            .filter(|e| matches!(e.kind, Kind::Wrote(_) | Kind::MaybeWrote))
            .count() as u64;
        for read in events.iter().filter(|e| matches!(e.kind, Kind::Read(_))) {
            let Kind::Read(found) = read.kind else {
                continue;
            };
            verdict.reads += 1;
            let acknowledged = writes
                .iter()
                .filter(|w| w.completed < read.invoked)
                .max_by_key(|w| revision(w));
            let removed_before = removals
                .iter()
                .filter(|r| r.completed + bound < read.invoked)
                .min_by_key(|r| r.completed);
            match found {
                None => {
                    if first_removal_invoked.is_none_or(|at| at > read.completed) {
                        verdict.violation("missing", || {
                            format!("session {session} read as gone at {:?}", read.invoked)
                        });
                    }
                }
                Some(found) => {
                    if let Some(removal) = removed_before {
                        verdict.violation("resurrected", || {
                            format!(
                                "session {session} read at revision {found} at {:?}, removed at {:?}",
                                read.invoked, removal.completed
                            )
                        });
                    }
                    if found > 1 + writes_invoked {
                        verdict.violation("invented", || {
                            format!(
                                "session {session} read at revision {found} with {writes_invoked} writes"
                            )
                        });
                    }
                    // The first acknowledged write newer than what was read.
                    let newer = writes
                        .iter()
                        .filter(|w| revision(w) > found && w.completed < read.invoked)
                        .min_by_key(|w| w.completed);
                    if let Some(newer) = newer
                        && newer.completed + bound < read.invoked
                    {
                        verdict.violation("stale", || {
                            format!(
                                "session {session} read at revision {found} on replica {} at {:?}; revision {} acknowledged at {:?}",
                                read.replica,
                                read.invoked,
                                revision(newer),
                                newer.completed
                            )
                        });
                    }
                    if let Some(latest) = acknowledged
                        && latest.replica != read.replica
                    {
                        verdict.cross_replica_reads += 1;
                        verdict.staleness.push(
                            newer.map_or(Duration::ZERO, |newer| read.invoked - newer.completed),
                        );
                    }
                }
            }
        }
        // Lost updates: the final revision against the increments.
        let acked = writes.len() as u64;
        let unknown = events.iter().filter(|e| e.kind == Kind::MaybeWrote).count() as u64;
        let removed = first_removal_invoked.is_some();
        match finals.get(session).copied().flatten() {
            Some(last) if last < 1 + acked || last > 1 + acked + unknown => {
                verdict.violation("lost update", || {
                    format!(
                        "session {session} ends at revision {last}: {acked} increments acknowledged, {unknown} unknown"
                    )
                });
            }
            None if !removed => verdict.violation("missing", || {
                format!("session {session} gone at the end, never deleted")
            }),
            _ => {}
        }
    }
    verdict.staleness.sort();
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn event(replica: usize, invoked: u64, completed: u64, kind: Kind) -> Event {
        Event {
            session: 0,
            replica,
            invoked: ms(invoked),
            completed: ms(completed),
            kind,
        }
    }

    #[test]
    fn a_read_within_the_bound_may_lag_and_is_measured() {
        let events = [
            event(0, 0, 1, Kind::Wrote(2)),
            event(1, 3, 4, Kind::Read(Some(1))),
            event(1, 20, 21, Kind::Read(Some(2))),
        ];
        let verdict = check(&events, &[Some(2)], ms(10));
        assert!(verdict.holds(), "{verdict}");
        assert_eq!(verdict.cross_replica_reads, 2);
        assert_eq!(verdict.staleness, vec![ms(0), ms(2)]);
    }

    #[test]
    fn a_read_past_the_bound_is_stale() {
        let events = [
            event(0, 0, 1, Kind::Wrote(2)),
            event(1, 30, 31, Kind::Read(Some(1))),
        ];
        let verdict = check(&events, &[Some(2)], ms(10));
        assert_eq!(verdict.count("stale"), 1, "{verdict}");
    }

    #[test]
    fn a_concurrent_write_allows_either_answer() {
        // The write completed after the read began: both revisions are fine.
        let events = [
            event(0, 0, 50, Kind::Wrote(2)),
            event(1, 30, 31, Kind::Read(Some(1))),
            event(1, 32, 33, Kind::Read(Some(2))),
        ];
        assert!(check(&events, &[Some(2)], ms(10)).holds());
    }

    #[test]
    fn reads_after_a_delete_and_the_bound_must_find_nothing() {
        let events = [
            event(0, 0, 1, Kind::Deleted),
            event(1, 5, 6, Kind::Read(Some(1))),
            event(1, 20, 21, Kind::Read(Some(1))),
            event(1, 22, 23, Kind::Read(None)),
        ];
        let verdict = check(&events, &[None], ms(10));
        assert_eq!(verdict.count("resurrected"), 1, "{verdict}");
        assert_eq!(verdict.violations.len(), 1);
    }

    #[test]
    fn a_session_gone_without_a_delete_is_missing() {
        let events = [event(1, 5, 6, Kind::Read(None))];
        let verdict = check(&events, &[Some(1)], ms(10));
        assert_eq!(verdict.count("missing"), 1, "{verdict}");
        let verdict = check(&[], &[None], ms(10));
        assert!(verdict.holds(), "no events: nothing to check for session 0");
        let events = [event(1, 5, 6, Kind::Read(Some(1)))];
        assert_eq!(check(&events, &[None], ms(10)).count("missing"), 1);
    }

    #[test]
    fn increments_are_counted_against_the_final_revision() {
        let events = [
            event(0, 0, 1, Kind::Wrote(2)),
            event(1, 2, 3, Kind::Wrote(3)),
            event(1, 4, 5, Kind::MaybeWrote),
        ];
        assert!(check(&events, &[Some(3)], ms(10)).holds());
        assert!(check(&events, &[Some(4)], ms(10)).holds());
        assert_eq!(check(&events, &[Some(2)], ms(10)).count("lost update"), 1);
        assert_eq!(check(&events, &[Some(5)], ms(10)).count("lost update"), 1);
    }

    #[test]
    fn a_revision_nobody_wrote_is_invented() {
        let events = [event(1, 0, 1, Kind::Read(Some(7)))];
        assert_eq!(check(&events, &[Some(1)], ms(10)).count("invented"), 1);
    }
}
