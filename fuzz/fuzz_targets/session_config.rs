//! `session_factory::SessionConfig::from_toml` on arbitrary text: it must
//! never panic, an accepted configuration must pass `validate()`, and the
//! `Debug` of whatever it returns must be formattable.
//!
//! Inputs may name files (`password_file`, PEM paths): reading them is part
//! of what is tested. Configuration refuses files that are not regular (a
//! FIFO or `/dev/zero` would block or never end) and files over its size
//! limit, so no input can hang the parser or make it allocate without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_factory::SessionConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match SessionConfig::from_toml(text, "fuzz.toml") {
        Ok(config) => {
            config
                .validate()
                .unwrap_or_else(|error| panic!("from_toml accepted an invalid config: {error}"));
            let _ = format!("{config:?}");
        }
        Err(error) => {
            let _ = format!("{error} {error:?}");
        }
    }
});
