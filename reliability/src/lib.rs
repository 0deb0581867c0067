//! The reliability and security suite of the session library.
//!
//! Every scenario runs against real `redis-server` processes (or, for the
//! local store, real threads and real time) and ends in one [`Outcome`]: a
//! `PASS` or `FAIL` line with the figure that was measured. The binary
//! `session-reliability` runs them (`cargo xtask reliability` builds and runs
//! it, then fuzzes); the fast, deterministic ones also run as integration
//! tests of this crate under `cargo xtask test`.
//!
//! | module | what it provides |
//! |---|---|
//! | [`load`] | the steady mixed load of 64 tasks, with a record of every operation and an audit ledger |
//! | [`increments`] | counters incremented through the atomic read-modify-write, and the audit of what a fault did to them |
//! | [`history`] | a history checker: every read held against the writes that completed before it began |
//! | [`capture`] | a buffer receiving every `tracing` event and every `log` record |
//! | [`scenarios`] | one module per scenario |
//! | [`rng`] | a small seeded generator, so each run prints the seed that reproduces its schedule |
//!
//! The redis-server, sentinel and cluster processes come from
//! `session-testenv`, the fixture xtask uses too; the variables of the
//! servers xtask hands over are read in [`env`](mod@env).
//!
//! What each scenario promises, and what a run measured, is in
//! `docs/reliability.md`.

pub mod capture;
pub mod env;
pub mod history;
pub mod increments;
pub mod load;
pub mod outcome;
pub mod rng;
pub mod scenarios;

pub use outcome::Outcome;
