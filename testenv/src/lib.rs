//! The test environment of session-rs: what `cargo xtask` starts and what the
//! tests read.
//!
//! Two programs start real Redis servers for tests: xtask (the topologies the
//! integration tests run against, and the servers of the benchmarks) and the
//! reliability suite (servers it kills, stalls, restarts and fails over). Both
//! use this crate, so there is one way to start a server, pick its port, wait
//! until it serves, and make sure it does not outlive the run. The tests find
//! the servers through environment variables whose names are defined here
//! once ([`contract`]).
//!
//! | module | what it provides |
//! |---|---|
//! | [`contract`] | every `SESSION_TEST_*` variable, one constant each, and [`var`], the reader tests use |
//! | [`process`] | the guard that kills and reaps a child on drop, scratch directories, the Ctrl-C/SIGTERM handler |
//! | [`ports`] | free loopback ports, never the same one twice in a process, with free cluster bus ports |
//! | [`nginx`] | the round-robin nginx of the multi-replica tests: its configuration and command |
//! | [`certs`] | the test CA, server, client and "wrong CA" certificates, generated at run time |
//! | [`server`] | one redis-server or sentinel process: start, wait until ready, stall, resume, kill, restart |
//! | [`cli`] | `redis-cli` calls with a timeout, a raw RESP `PING`, `INFO` fields |
//! | [`cluster`] | a Redis Cluster of masters and replicas, and the check that all its nodes agree |
//! | [`topologies`] | the deployments `cargo xtask test` starts (six on Redis, four on Valkey), and their contract variables |
//!
//! The server and client programs are a parameter ([`Programs`]): every
//! process and every `redis-cli` call names the binaries it runs, so a
//! server that speaks the same protocol from other binaries can be started
//! the same way: Valkey's `valkey-server` and `valkey-cli` run the Valkey
//! topologies.
//!
//! **Architecture Invariant:** this crate depends on no crate of the
//! workspace. xtask depends on it and must stay quick to build, so it never
//! compiles the library it tests.
//!
//! Everything here is blocking and uses threads, like xtask; the `tokio`
//! feature adds async forms of the calls a caller makes while load runs on a
//! runtime ([`Cli::run_async`], [`cluster::agreement_async`]).

#![deny(missing_docs)]

pub mod certs;
pub mod cli;
pub mod cluster;
pub mod contract;
mod error;
pub mod nginx;
pub mod ports;
pub mod process;
pub mod server;
pub mod topologies;

pub use certs::TestCerts;
pub use cli::Cli;
pub use contract::var;
pub use error::{Error, Result};
pub use process::{Guard, ScratchDir};
pub use server::{Programs, RedisProcess, Role};
pub use topologies::Topologies;

/// The loopback address every server binds and every client connects to.
pub const HOST: &str = "127.0.0.1";
