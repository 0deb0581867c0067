//! The test-environment contract: the variables through which `cargo xtask
//! test` points the harnesses at the servers it started, and how a harness
//! reads them.
//!
//! They are defined once, in the `session-testenv` crate that starts the
//! servers; this module re-exports them so that a backend's tests need only
//! this crate. [`var`] reads one: a missing variable is a failure when
//! [`REQUIRE_REDIS`] is set (as under `cargo xtask test` and CI), and
//! otherwise a skip with one line saying why.

pub use session_testenv::contract::*;
