//! Reading the files a configuration names.

use std::io::Read as _;
use std::path::Path;

use session_core::ConfigError;

/// The largest password file read: far above any real password.
pub const PASSWORD_FILE_LIMIT: u64 = 64 * 1024;
/// The largest PEM or configuration file read.
pub const FILE_LIMIT: u64 = 1024 * 1024;

/// Reads a file that configuration names (a password, PEM or configuration
/// file), refusing what is not a regular file or is larger than `limit`
/// bytes. `field` is the setting that named the file, `None` for the
/// configuration file itself.
///
/// Configuration is read at start-up, where a hang or an allocation of
/// gigabytes is worse than an error: opening a FIFO blocks until a writer
/// appears, and `/dev/zero` or a huge file never ends or exhausts memory.
/// The errors name the setting and the path, never the contents.
pub fn read_file(field: Option<&str>, path: &Path, limit: u64) -> Result<Vec<u8>, ConfigError> {
    let cannot = |reason: String| {
        let reason = format!("cannot read {}: {reason}", path.display());
        match field {
            Some(field) => ConfigError::new(field, reason),
            None => ConfigError::whole(reason),
        }
    };
    let metadata = std::fs::metadata(path).map_err(|error| cannot(error.to_string()))?;
    if !metadata.is_file() {
        return Err(cannot("not a regular file".into()));
    }
    let file = std::fs::File::open(path).map_err(|error| cannot(error.to_string()))?;
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len().min(limit)).unwrap_or(0));
    // One byte past the limit tells a file at the limit from a larger one,
    // even if it grew after `metadata`.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| cannot(error.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(cannot(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}
