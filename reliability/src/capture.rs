//! Captures everything the process logs: every `tracing` event and span (at
//! TRACE level, from every crate) and every `log` record (fred logs through
//! `log`), into one in-memory buffer.
//!
//! Capture is switched on only around the code under test, so the load
//! scenarios do not pay for TRACE-level formatting.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, filter};

static ENABLED: AtomicBool = AtomicBool::new(false);
static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
/// Serializes captures: two tests in one binary must not mix their output.
static SESSION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn buffer() -> std::sync::MutexGuard<'static, Vec<u8>> {
    BUFFER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes formatted tracing output into the buffer.
#[derive(Clone, Copy)]
struct BufferWriter;

impl Write for BufferWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        buffer().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferWriter {
    type Writer = BufferWriter;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Receives `log` records.
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        ENABLED.load(Ordering::Relaxed)
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!(
                "log {} {}: {}\n",
                record.level(),
                record.target(),
                record.args()
            );
            buffer().extend_from_slice(line.as_bytes());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the global tracing subscriber and `log` logger, once per
/// process. Fails if something else installed one first.
pub fn install() -> anyhow::Result<()> {
    INSTALLED
        .get_or_init(|| {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(BufferWriter)
                .with_ansi(false)
                .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
                .with_filter(filter::filter_fn(|_| ENABLED.load(Ordering::Relaxed)));
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::set_global_default(subscriber)
                .map_err(|error| format!("cannot install the tracing capture: {error}"))?;
            log::set_logger(&LOGGER)
                .map_err(|error| format!("cannot install the log capture: {error}"))?;
            Ok(())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A capture in progress; [`Capture::finish`] returns what was logged.
pub struct Capture {
    _session: tokio::sync::MutexGuard<'static, ()>,
}

impl Capture {
    /// Starts capturing everything at TRACE level (after [`install`]).
    pub async fn start() -> anyhow::Result<Self> {
        install()?;
        let session = SESSION.lock().await;
        buffer().clear();
        ENABLED.store(true, Ordering::SeqCst);
        log::set_max_level(log::LevelFilter::Trace);
        // Callsites registered while capture was off must be re-evaluated.
        tracing::callsite::rebuild_interest_cache();
        Ok(Self { _session: session })
    }

    /// Stops capturing and returns the text.
    pub fn finish(self) -> String {
        ENABLED.store(false, Ordering::SeqCst);
        log::set_max_level(log::LevelFilter::Off);
        let text = String::from_utf8_lossy(&buffer()).into_owned();
        buffer().clear();
        text
    }
}
