//! The `[streams]` table: the bounds of resumable SSE streams on Redis, and
//! how long a resumed stream waits for events still to come.
//!
//! ```toml
//! [streams]
//! max_events_per_session = 1000  # the oldest go first past this
//! max_event_bytes = 1048576      # a larger event is sent without an id
//! max_tails = 64                 # resumed streams waiting live at once
//! confirm_replicas = 1           # WAIT for this many replicas per event
//! confirm_timeout = "100ms"      # ... for at most this long
//! tail_timeout = "30s"           # a resumed stream ends after this quiet
//! tail_wait = "5s"               # one blocking read of the tail
//! ```
//!
//! Every field is optional; without the table the defaults of
//! `session_redis::EventLimits` and `session_rmcp::ResumeSettings` hold. On
//! local storage the events stay in the replica's memory and the table does
//! not apply (the gateway says so at startup), so that switching backends
//! stays an edit of the `[redis]` table alone.

use std::time::Duration;

use serde::Deserialize;
use session_factory::ConfigError;
use session_factory::session_redis::EventLimits;
use session_rmcp::ResumeSettings;

/// The parsed `[streams]` table.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamSettings {
    /// The event log's bounds and replica confirmation.
    pub limits: EventLimits,
    /// How a resumed stream waits for new events.
    pub resume: ResumeSettings,
}

/// The table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamsFile {
    max_events_per_session: Option<u64>,
    max_event_bytes: Option<usize>,
    max_tails: Option<usize>,
    confirm_replicas: Option<u32>,
    confirm_timeout: Option<String>,
    tail_timeout: Option<String>,
    tail_wait: Option<String>,
}

impl StreamsFile {
    /// Checks every field and builds the settings; errors name the field.
    pub(crate) fn resolve(self) -> Result<StreamSettings, ConfigError> {
        let defaults = StreamSettings::default();
        let mut limits = defaults.limits;
        if let Some(events) = self.max_events_per_session {
            limits = limits
                .max_events_per_session(at_least_one("streams.max_events_per_session", events)?);
        }
        if let Some(bytes) = self.max_event_bytes {
            let bytes = at_least_one("streams.max_event_bytes", bytes as u64)?;
            limits = limits.max_event_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
        }
        if let Some(tails) = self.max_tails {
            limits = limits.max_tails(tails);
        }
        let confirm_timeout = duration("streams.confirm_timeout", self.confirm_timeout)?;
        match (self.confirm_replicas, confirm_timeout) {
            (None | Some(0), Some(_)) => {
                return Err(ConfigError::new(
                    "streams.confirm_timeout",
                    "is set, but `confirm_replicas` is not: give both, or neither",
                ));
            }
            (Some(replicas @ 1..), timeout) => {
                let timeout = timeout.unwrap_or(DEFAULT_CONFIRM_TIMEOUT);
                if timeout.is_zero() {
                    return Err(ConfigError::new(
                        "streams.confirm_timeout",
                        "must be more than zero",
                    ));
                }
                limits = limits.confirm_on_replicas(replicas, timeout);
            }
            (None | Some(0), None) => {}
        }
        let mut resume = defaults.resume;
        if let Some(timeout) = duration("streams.tail_timeout", self.tail_timeout)? {
            if timeout.is_zero() {
                return Err(ConfigError::new(
                    "streams.tail_timeout",
                    "must be more than zero (to stop live tails, set max_tails = 0)",
                ));
            }
            resume.tail_timeout = timeout;
        }
        if let Some(wait) = duration("streams.tail_wait", self.tail_wait)? {
            if wait.is_zero() {
                return Err(ConfigError::new(
                    "streams.tail_wait",
                    "must be more than zero",
                ));
            }
            resume.tail_wait = wait;
        }
        if resume.tail_wait > resume.tail_timeout {
            return Err(ConfigError::new(
                "streams.tail_wait",
                format!(
                    "is longer than tail_timeout ({}): one wait would outlast the tail",
                    humantime::format_duration(resume.tail_timeout)
                ),
            ));
        }
        Ok(StreamSettings { limits, resume })
    }
}

/// The replica confirmation's timeout when only `confirm_replicas` is
/// given: a few replication round trips on one network.
const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_millis(100);

fn at_least_one(field: &str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(field, "must be at least 1"));
    }
    Ok(value)
}

fn duration(field: &str, text: Option<String>) -> Result<Option<Duration>, ConfigError> {
    text.map(|text| {
        humantime::parse_duration(&text).map_err(|error| {
            ConfigError::new(field, format!("is not a duration such as \"5s\": {error}"))
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parse(text: &str) -> Result<StreamSettings, ConfigError> {
        toml::from_str::<StreamsFile>(text)
            .map_err(|error| ConfigError::whole(error.message().to_owned()))?
            .resolve()
    }

    #[test]
    fn an_empty_table_keeps_the_defaults() {
        assert_eq!(parse("").unwrap(), StreamSettings::default());
    }

    #[test]
    fn every_field_is_read() {
        let settings = parse(
            "max_events_per_session = 50\nmax_event_bytes = 4096\nmax_tails = 0\n\
             confirm_replicas = 2\nconfirm_timeout = \"20ms\"\ntail_timeout = \"10s\"\n\
             tail_wait = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(settings.limits.events_per_session(), 50);
        assert_eq!(settings.limits.event_bytes(), 4096);
        assert_eq!(settings.limits.tails(), 0);
        let confirm = settings.limits.confirmation().unwrap();
        assert_eq!(
            (confirm.replicas, confirm.timeout),
            (2, Duration::from_millis(20))
        );
        assert_eq!(settings.resume.tail_timeout, Duration::from_secs(10));
        assert_eq!(settings.resume.tail_wait, Duration::from_secs(2));
        let confirm = parse("confirm_replicas = 1\n")
            .unwrap()
            .limits
            .confirmation()
            .unwrap();
        assert_eq!(confirm.timeout, DEFAULT_CONFIRM_TIMEOUT);
        assert_eq!(
            parse("confirm_replicas = 0\n")
                .unwrap()
                .limits
                .confirmation(),
            None
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        for (text, field) in [
            (
                "max_events_per_session = 0",
                "streams.max_events_per_session",
            ),
            ("max_event_bytes = 0", "streams.max_event_bytes"),
            ("confirm_timeout = \"1s\"", "streams.confirm_timeout"),
            (
                "confirm_replicas = 1\nconfirm_timeout = \"0s\"",
                "streams.confirm_timeout",
            ),
            (
                "confirm_replicas = 1\nconfirm_timeout = \"soon\"",
                "streams.confirm_timeout",
            ),
            ("tail_timeout = \"0s\"", "streams.tail_timeout"),
            ("tail_wait = \"0s\"", "streams.tail_wait"),
            (
                "tail_timeout = \"1s\"\ntail_wait = \"2s\"",
                "streams.tail_wait",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.field(), Some(field), "{text}: {error}");
        }
        let error = parse("max_streams = 3").unwrap_err().to_string();
        assert!(error.contains("max_streams"), "{error}");
    }
}
