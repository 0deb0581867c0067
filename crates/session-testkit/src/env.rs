//! The test-environment contract: the variables through which `cargo xtask
//! test` points the harnesses at the servers it started, and how a harness
//! reads them.
//!
//! The variables themselves are listed, one constant each, in
//! `xtask`'s server fixture; this module holds what every harness needs to
//! read them the same way.

/// Set by `cargo xtask test` (and CI): a missing server variable is then a
/// failure, never a skip.
pub const REQUIRE_SERVERS: &str = "SESSION_TEST_REQUIRE_REDIS";

/// Reads a test server address (or other harness-provided setting) from the
/// environment.
///
/// When it is missing: panics if [`REQUIRE_SERVERS`] is set (as it is under
/// `cargo xtask test` and in CI), so a misconfigured harness can never pass
/// by skipping; otherwise prints one loud line and returns `None`, so a bare
/// `cargo test` without servers still runs everything else.
pub fn var(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var_os(REQUIRE_SERVERS).is_some() => {
            panic!("{name} is not set, but {REQUIRE_SERVERS} is: the test harness must provide it")
        }
        _ => {
            eprintln!(
                "SKIPPED: {name} is not set; run `cargo xtask test` (or `cargo xtask redis` and export its variables)"
            );
            None
        }
    }
}
