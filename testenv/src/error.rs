//! The one error type of this crate.
//!
//! Each variant says which step failed and carries what a person needs to
//! fix it: the server's last log lines, the client's reply, the command that
//! timed out. Callers are test programs, which print the error and stop, so
//! the variants are coarse; the text is what matters.

use std::io;
use std::time::Duration;

/// A failure to set up or drive a test server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file, directory or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done, e.g. `failed to create /tmp/x`.
        what: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Sending a signal to a child failed.
    #[error("kill -{signal} {pid} ({name})")]
    Signal {
        /// The child's name in the fixture.
        name: String,
        /// The child's pid.
        pid: u32,
        /// The signal's name.
        signal: String,
        /// The operating system's error.
        #[source]
        source: nix::Error,
    },
    /// The test certificates could not be generated.
    #[error("failed to generate test certificates")]
    Certificate(#[from] rcgen::Error),
    /// A server exited during startup or did not become ready; the text
    /// includes the end of its log.
    #[error("{0}")]
    Start(String),
    /// A short-lived command did not finish in time.
    #[error("{command} did not finish within {timeout:?}")]
    Timeout {
        /// The program that was run.
        command: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// A server or client answered something other than what the setup
    /// needs (a failed `ACL SETUSER`, a cluster that does not settle, ...).
    #[error("{0}")]
    Setup(String),
    /// A process that is not running was asked to do something.
    #[error("{0} is not running")]
    NotRunning(String),
    /// Several topologies failed to start; every failure is listed, since
    /// one broken setup (say, TLS support missing) often explains the others.
    #[error("failed to start Redis topologies ({count} failed): {details}")]
    Topologies {
        /// How many failed.
        count: usize,
        /// Each failure with its causes, one paragraph each.
        details: String,
    },
    /// A blocking call run on behalf of an async caller panicked or was
    /// cancelled.
    #[cfg(feature = "tokio")]
    #[error("a blocking test-environment call failed")]
    Join(#[from] tokio::task::JoinError),
}

/// The result of every fallible call of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a description of the step to an `io::Error`.
pub(crate) trait IoContext<T> {
    /// Wraps the error in [`Error::Io`] with `what()` as its description.
    fn io(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn io(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}

/// The whole chain of an error on one line, `outer: inner: ...`, for the
/// places that fold several errors into one text.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
