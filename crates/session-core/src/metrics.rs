//! What the manager reports through the [`metrics`] facade: a count and a
//! latency per storage operation, errors by kind, read-modify-write
//! conflicts, reads of another owner's session, and sessions the sweep
//! removed. And through `tracing`: a `session_operation` span per storage
//! operation (level `debug`), with the operation, the backend, the outcome,
//! the error kind and the duration in microseconds as fields, never a
//! session id or any session data. The span opens when the call starts and
//! closes when the storage answered, so a subscriber that times spans (an
//! OpenTelemetry layer) sees the operation's latency; it is not entered, so
//! that the operation's future stays as small as it is.
//!
//! The library depends on the facade only; the application installs a
//! recorder (the gateway's is Prometheus text on `/metrics`). Without one,
//! every handle is a no-op. Handles are registered once, when the manager
//! is built, so a success costs two clock reads and two calls on handles,
//! with no lookup (an error also registers its error-kind counter): install
//! the recorder before building the manager, or its operations go
//! unrecorded.
//!
//! Names follow Prometheus's conventions (a unit suffix, `_total` for
//! counters); labels carry `&'static str` values only: an operation's
//! name, the backend's, an outcome, an error kind. Never a session id, a
//! principal or any session data. Every metric is listed in
//! `docs/metrics.md`.

use std::time::Instant;

use metrics::{Counter, Gauge, Histogram, Unit};

use crate::error::{Error, Operation};

/// Operations by `operation`, `backend` and `outcome` (`ok`, `absent`: a
/// read, update or delete that found no session, or `error`).
pub const OPERATIONS: &str = "session_operations_total";
/// Failed operations by `operation`, `backend` and `error_type`.
pub const ERRORS: &str = "session_operation_errors_total";
/// The latency of each operation, by `operation` and `backend`, in
/// seconds, from the manager's call until the storage answered.
pub const DURATION: &str = "session_operation_duration_seconds";
/// Read-modify-writes that found another write first and ran again, by
/// `backend`. One `modify` that conflicted twice counts 2; one that ran
/// out of attempts is also an error of kind `conflict` of `update_if`.
pub const MODIFY_RETRIES: &str = "session_modify_retries_total";
/// Reads on behalf of a principal that found another owner's session and
/// answered it as absent, by `backend`.
pub const FOREIGN_READS: &str = "session_foreign_reads_total";
/// Sessions the cleanup sweep removed, by `backend`.
pub const EXPIRED: &str = "session_expired_removed_total";
/// Live sessions, by `backend`, where counting them is cheap (local
/// storage), set by `Manager::record_metrics`.
pub const LIVE: &str = "session_live_sessions";

/// The operations the manager records, in the order of `Handles::ops`
/// (and of [`index`]).
const RECORDED: [Operation; 12] = [
    Operation::Create,
    Operation::Get,
    Operation::Update,
    Operation::Upsert,
    Operation::UpdateIf,
    Operation::ListOwned,
    Operation::RevokeOwned,
    Operation::Expire,
    Operation::Delete,
    Operation::DeleteExpired,
    Operation::Count,
    Operation::Ping,
];

/// The position of `operation` in [`RECORDED`] (a match, not a search:
/// this runs on every call).
const fn index(operation: Operation) -> Option<usize> {
    match operation {
        Operation::Create => Some(0),
        Operation::Get => Some(1),
        Operation::Update => Some(2),
        Operation::Upsert => Some(3),
        Operation::UpdateIf => Some(4),
        Operation::ListOwned => Some(5),
        Operation::RevokeOwned => Some(6),
        Operation::Expire => Some(7),
        Operation::Delete => Some(8),
        Operation::DeleteExpired => Some(9),
        Operation::Count => Some(10),
        Operation::Ping => Some(11),
        _ => None,
    }
}

/// One operation's handles.
struct Op {
    ok: Counter,
    absent: Counter,
    error: Counter,
    duration: Histogram,
}

/// The handles of one manager, registered with the recorder installed
/// when it was built.
pub(crate) struct Handles {
    backend: &'static str,
    ops: Vec<Op>,
    pub(crate) modify_retries: Counter,
    pub(crate) foreign_reads: Counter,
    pub(crate) expired: Counter,
    pub(crate) live: Gauge,
}

impl Handles {
    /// Registers the handles of a manager on `backend`.
    pub(crate) fn new(backend: &'static str) -> Self {
        describe();
        let ops = RECORDED
            .iter()
            .map(|operation| {
                let name = operation.as_str();
                let count = |outcome: &'static str| {
                    metrics::counter!(
                        OPERATIONS,
                        "operation" => name,
                        "backend" => backend,
                        "outcome" => outcome
                    )
                };
                Op {
                    ok: count("ok"),
                    absent: count("absent"),
                    error: count("error"),
                    duration: metrics::histogram!(
                        DURATION,
                        "operation" => name,
                        "backend" => backend
                    ),
                }
            })
            .collect();
        Self {
            backend,
            ops,
            modify_retries: metrics::counter!(MODIFY_RETRIES, "backend" => backend),
            foreign_reads: metrics::counter!(FOREIGN_READS, "backend" => backend),
            expired: metrics::counter!(EXPIRED, "backend" => backend),
            live: metrics::gauge!(LIVE, "backend" => backend),
        }
    }

    /// The span of one call of `operation`, opened now; disabled (and
    /// free) unless a subscriber wants `debug` spans of this crate.
    pub(crate) fn span(&self, operation: Operation) -> tracing::Span {
        tracing::debug_span!(
            "session_operation",
            operation = operation.as_str(),
            backend = self.backend,
            outcome = tracing::field::Empty,
            error_type = tracing::field::Empty,
            duration_us = tracing::field::Empty,
        )
    }

    /// Records one call of `operation` that started at `started` under
    /// `span` and ended with `result`; `absent` says whether a success found
    /// no session.
    pub(crate) fn record<T>(
        &self,
        span: &tracing::Span,
        operation: Operation,
        started: Instant,
        result: &Result<T, Error>,
        absent: impl FnOnce(&T) -> bool,
    ) {
        let Some(op) = index(operation).map(|index| &self.ops[index]) else {
            return;
        };
        let elapsed = started.elapsed();
        op.duration.record(elapsed.as_secs_f64());
        let (counter, outcome) = match result {
            Ok(value) if absent(value) => (&op.absent, "absent"),
            Ok(_) => (&op.ok, "ok"),
            Err(_) => (&op.error, "error"),
        };
        counter.increment(1);
        if !span.is_disabled() {
            span.record("outcome", outcome);
            span.record("duration_us", elapsed.as_micros() as u64);
            if let Err(error) = result {
                span.record("error_type", error_type(error));
            }
        }
        if let Err(error) = result {
            // Rare: registered here, at the cost of a lookup.
            metrics::counter!(
                ERRORS,
                "operation" => operation.as_str(),
                "backend" => self.backend,
                "error_type" => error_type(error)
            )
            .increment(1);
        }
    }

    /// Records a success of `operation` that found its session (a read a
    /// storage's local copy answered).
    pub(crate) fn record_ok(&self, span: &tracing::Span, operation: Operation, started: Instant) {
        self.record::<()>(span, operation, started, &Ok(()), |()| false);
    }
}

/// The `error_type` label of `error`: its kind, never its message.
pub fn error_type(error: &Error) -> &'static str {
    match error {
        Error::InvalidInput(_) => "invalid_input",
        Error::AlreadyExists(_) => "already_exists",
        Error::Backend { kind, .. } => kind.as_label(),
        Error::Timeout { .. } => "timeout",
        Error::Codec(_) => "codec",
        Error::Config(_) => "config",
        Error::Conflict { .. } => "conflict",
        Error::Closed => "closed",
    }
}

/// Tells the recorder each metric's unit and meaning, once per process.
fn describe() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            OPERATIONS,
            Unit::Count,
            "Session storage operations by outcome."
        );
        metrics::describe_counter!(
            ERRORS,
            Unit::Count,
            "Failed session storage operations by error kind."
        );
        metrics::describe_histogram!(
            DURATION,
            Unit::Seconds,
            "Latency of session storage operations."
        );
        metrics::describe_counter!(
            MODIFY_RETRIES,
            Unit::Count,
            "Read-modify-writes run again after a conflicting write."
        );
        metrics::describe_counter!(
            FOREIGN_READS,
            Unit::Count,
            "Reads for a principal that found another owner's session."
        );
        metrics::describe_counter!(
            EXPIRED,
            Unit::Count,
            "Expired sessions removed by the sweep."
        );
    });
}

#[cfg(test)]
mod tests {
    use super::{RECORDED, index};

    #[test]
    fn the_index_names_each_recorded_operation_at_its_place() {
        for (place, operation) in RECORDED.iter().enumerate() {
            assert_eq!(index(*operation), Some(place), "{operation:?}");
        }
    }
}
