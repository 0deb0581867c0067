//! `session_factory::SessionConfig::from_toml` on arbitrary text: it must
//! never panic, an accepted configuration must pass `validate()`, and the
//! `Debug` of whatever it returns must be formattable.
//!
//! Inputs with a `password_file` key anywhere are skipped: that key makes the
//! parser read the file it names, and a fuzzer that finds `/dev/zero` or a
//! FIFO would test the file system, not the parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_factory::SessionConfig;

fn names_a_file(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(table) => table
            .iter()
            .any(|(key, value)| key == "password_file" || names_a_file(value)),
        toml::Value::Array(items) => items.iter().any(names_a_file),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(table) = text.parse::<toml::Table>() {
        if names_a_file(&toml::Value::Table(table)) {
            return;
        }
    }
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
