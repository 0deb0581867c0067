//! The environment contract between the programs that start test servers
//! (`cargo xtask test`, `cargo xtask redis`, `cargo xtask reliability`) and
//! the tests that use them.
//!
//! The servers' addresses and credentials reach the tests only through these
//! variables. Each name is defined once, here; xtask sets them from
//! [`Topologies::env`](crate::Topologies::env) and the tests read them with
//! [`var`].
//!
//! | variable                              | value                                                                |
//! |---------------------------------------|----------------------------------------------------------------------|
//! | `SESSION_TEST_REDIS`                  | `127.0.0.1:PORT` of a plain server, no auth                          |
//! | `SESSION_TEST_REDIS_ACL`              | `127.0.0.1:PORT` of a server whose `default` user is off             |
//! | `SESSION_TEST_REDIS_ACL_USER`         | the ACL user that may do everything (`sessionuser`)                  |
//! | `SESSION_TEST_REDIS_ACL_PASSWORD`     | that user's password, random per run                                 |
//! | `SESSION_TEST_REDIS_TLS`              | `127.0.0.1:PORT` of a TLS-only server (no client certs)              |
//! | `SESSION_TEST_REDIS_TLS_CA`           | path of the PEM CA that signed the TLS and mTLS servers              |
//! | `SESSION_TEST_REDIS_TLS_WRONG_CA`     | path of an unrelated PEM CA, for verification failures               |
//! | `SESSION_TEST_REDIS_MTLS`             | `127.0.0.1:PORT` of a TLS-only server requiring client certs         |
//! | `SESSION_TEST_REDIS_MTLS_CERT`        | path of the PEM client certificate for it                            |
//! | `SESSION_TEST_REDIS_MTLS_KEY`         | path of that certificate's PKCS#8 PEM private key                    |
//! | `SESSION_TEST_REDIS_CLUSTER`          | `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`, a 3-master cluster         |
//! | `SESSION_TEST_REDIS_SENTINEL`         | `127.0.0.1:PORT` of a sentinel                                       |
//! | `SESSION_TEST_REDIS_SENTINEL_MASTER`  | the name the sentinel monitors its master under (`mymaster`)         |
//! | `SESSION_TEST_VALKEY`                 | `127.0.0.1:PORT` of a plain Valkey server, no auth                   |
//! | `SESSION_TEST_VALKEY_ACL`             | `127.0.0.1:PORT` of a Valkey server whose `default` user is off      |
//! | `SESSION_TEST_VALKEY_ACL_USER`        | the Valkey ACL user that may do everything (`sessionuser`)           |
//! | `SESSION_TEST_VALKEY_ACL_PASSWORD`    | that user's password, random per run                                 |
//! | `SESSION_TEST_VALKEY_CLUSTER`         | `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`, a 3-master Valkey cluster  |
//! | `SESSION_TEST_VALKEY_SENTINEL`        | `127.0.0.1:PORT` of a Valkey sentinel                                |
//! | `SESSION_TEST_VALKEY_SENTINEL_MASTER` | the name that sentinel monitors its Valkey master under (`mymaster`) |
//! | `SESSION_TEST_VALKEY_SERVER_BIN`      | path of `valkey-server`, for scenarios that run Valkey servers of their own |
//! | `SESSION_TEST_VALKEY_CLI_BIN`         | path of `valkey-cli`, which goes with it                             |
//! | `SESSION_TEST_REQUIRE_REDIS`          | `1` under `cargo xtask test`: a missing variable is a failure        |
//! | `SESSION_TEST_NGINX`                  | path of the nginx binary for the cross-replica test                  |
//! | `SESSION_TEST_CHROMIUM`               | path of the Chromium binary for the session-axum browser check      |
//! | `SESSION_TEST_CHROMEDRIVER`           | path of the chromedriver that drives it                              |
//! | `SESSION_TEST_MCP_PYTHON`             | the python of a venv with the official Python SDK (PyPI `mcp`)       |
//! | `SESSION_TEST_MCP_NODE`               | a Node 22 binary, for the TypeScript SDK and the conformance suite   |
//! | `SESSION_TEST_MCP_NODE_MODULES`       | the `node_modules` holding `@modelcontextprotocol/sdk` and `conformance` |
//!
//! The server certificate is valid for both `localhost` and `127.0.0.1`.
//!
//! The `SESSION_TEST_VALKEY*` servers are Valkey's, started by the same code
//! as the Redis ones with other programs ([`Programs`](crate::Programs)).
//! There are no Valkey TLS servers: the Valkey build the fixture installs
//! has no TLS, so TLS and mutual TLS are tested on Redis only.
//!
//! Under a bare `cargo test` none of these is set and the tests that need a
//! server skip, each with one line saying so. `cargo xtask test` sets
//! [`REQUIRE_REDIS`], which turns every such skip into a failure: CI must
//! never pass because a server was silently missing.

/// Address of the plain server.
pub const REDIS: &str = "SESSION_TEST_REDIS";
/// Address of the ACL server.
pub const REDIS_ACL: &str = "SESSION_TEST_REDIS_ACL";
/// User name for the ACL server.
pub const REDIS_ACL_USER: &str = "SESSION_TEST_REDIS_ACL_USER";
/// Password for the ACL server.
pub const REDIS_ACL_PASSWORD: &str = "SESSION_TEST_REDIS_ACL_PASSWORD";
/// Address of the TLS server.
pub const REDIS_TLS: &str = "SESSION_TEST_REDIS_TLS";
/// CA certificate that verifies the TLS and mTLS servers.
pub const REDIS_TLS_CA: &str = "SESSION_TEST_REDIS_TLS_CA";
/// CA certificate that verifies neither server.
pub const REDIS_TLS_WRONG_CA: &str = "SESSION_TEST_REDIS_TLS_WRONG_CA";
/// Address of the mutual-TLS server.
pub const REDIS_MTLS: &str = "SESSION_TEST_REDIS_MTLS";
/// Client certificate for the mutual-TLS server.
pub const REDIS_MTLS_CERT: &str = "SESSION_TEST_REDIS_MTLS_CERT";
/// Private key of the client certificate.
pub const REDIS_MTLS_KEY: &str = "SESSION_TEST_REDIS_MTLS_KEY";
/// Comma-separated addresses of the cluster's nodes.
pub const REDIS_CLUSTER: &str = "SESSION_TEST_REDIS_CLUSTER";
/// Address of the sentinel.
pub const REDIS_SENTINEL: &str = "SESSION_TEST_REDIS_SENTINEL";
/// Name of the master the sentinel monitors.
pub const REDIS_SENTINEL_MASTER: &str = "SESSION_TEST_REDIS_SENTINEL_MASTER";
/// Address of the plain Valkey server.
pub const VALKEY: &str = "SESSION_TEST_VALKEY";
/// Address of the Valkey ACL server.
pub const VALKEY_ACL: &str = "SESSION_TEST_VALKEY_ACL";
/// User name for the Valkey ACL server.
pub const VALKEY_ACL_USER: &str = "SESSION_TEST_VALKEY_ACL_USER";
/// Password for the Valkey ACL server.
pub const VALKEY_ACL_PASSWORD: &str = "SESSION_TEST_VALKEY_ACL_PASSWORD";
/// Comma-separated addresses of the Valkey cluster's nodes.
pub const VALKEY_CLUSTER: &str = "SESSION_TEST_VALKEY_CLUSTER";
/// Address of the Valkey sentinel.
pub const VALKEY_SENTINEL: &str = "SESSION_TEST_VALKEY_SENTINEL";
/// Name of the master the Valkey sentinel monitors.
pub const VALKEY_SENTINEL_MASTER: &str = "SESSION_TEST_VALKEY_SENTINEL_MASTER";
/// Path of the Valkey server program, for scenarios that start (and stop,
/// stall or flush) Valkey servers of their own.
pub const VALKEY_SERVER_BIN: &str = "SESSION_TEST_VALKEY_SERVER_BIN";
/// Path of the Valkey command-line client that goes with it.
pub const VALKEY_CLI_BIN: &str = "SESSION_TEST_VALKEY_CLI_BIN";
/// Set to `1` by `cargo xtask test`: a missing variable is then a test failure.
pub const REQUIRE_REDIS: &str = "SESSION_TEST_REQUIRE_REDIS";
/// Path of the nginx binary the cross-replica test puts in front of two
/// gateway replicas.
pub const NGINX: &str = "SESSION_TEST_NGINX";
/// Path of the Chromium binary of the session-axum browser check.
pub const CHROMIUM: &str = "SESSION_TEST_CHROMIUM";
/// Path of the chromedriver (WebDriver) binary that drives it.
pub const CHROMEDRIVER: &str = "SESSION_TEST_CHROMEDRIVER";
/// The python of a virtual environment with the official MCP Python SDK.
pub const MCP_PYTHON: &str = "SESSION_TEST_MCP_PYTHON";
/// A Node 22 binary (the conformance suite needs 22 or newer).
pub const MCP_NODE: &str = "SESSION_TEST_MCP_NODE";
/// The `node_modules` directory with the TypeScript SDK and the conformance
/// suite.
pub const MCP_NODE_MODULES: &str = "SESSION_TEST_MCP_NODE_MODULES";

/// Every variable of the contract, in the order of the table above.
pub const ALL: [&str; 29] = [
    REDIS,
    REDIS_ACL,
    REDIS_ACL_USER,
    REDIS_ACL_PASSWORD,
    REDIS_TLS,
    REDIS_TLS_CA,
    REDIS_TLS_WRONG_CA,
    REDIS_MTLS,
    REDIS_MTLS_CERT,
    REDIS_MTLS_KEY,
    REDIS_CLUSTER,
    REDIS_SENTINEL,
    REDIS_SENTINEL_MASTER,
    VALKEY,
    VALKEY_ACL,
    VALKEY_ACL_USER,
    VALKEY_ACL_PASSWORD,
    VALKEY_CLUSTER,
    VALKEY_SENTINEL,
    VALKEY_SENTINEL_MASTER,
    VALKEY_SERVER_BIN,
    VALKEY_CLI_BIN,
    REQUIRE_REDIS,
    NGINX,
    CHROMIUM,
    CHROMEDRIVER,
    MCP_PYTHON,
    MCP_NODE,
    MCP_NODE_MODULES,
];

/// Whether the run demands every server (`SESSION_TEST_REQUIRE_REDIS` is set).
pub fn require_redis() -> bool {
    std::env::var_os(REQUIRE_REDIS).is_some()
}

/// Reads one variable of the contract for a test.
///
/// Returns the value when it is set and not empty. When it is missing and
/// [`REQUIRE_REDIS`] is set, this panics: the harness promised the server,
/// so its absence is a broken harness, not a reason to skip. Otherwise it
/// prints one `SKIPPED:` line naming the variable and returns `None`, and
/// the test returns early.
///
/// # Panics
///
/// When `name` is missing or empty while [`REQUIRE_REDIS`] is set.
pub fn var(name: &str) -> Option<String> {
    match lookup(name, |key| std::env::var(key).ok()) {
        Lookup::Found(value) => Some(value),
        Lookup::Required => {
            panic!("{name} is not set, but {REQUIRE_REDIS} is: the test harness must provide it")
        }
        Lookup::Skip => {
            eprintln!(
                "SKIPPED: {name} is not set; run `cargo xtask test` (or `cargo xtask redis` and export its variables)"
            );
            None
        }
    }
}

/// What [`var`] does for one variable, decided apart from the process
/// environment so that it can be tested without changing that environment.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Found(String),
    Required,
    Skip,
}

fn lookup(name: &str, get: impl Fn(&str) -> Option<String>) -> Lookup {
    match get(name) {
        Some(value) if !value.is_empty() => Lookup::Found(value),
        _ if get(REQUIRE_REDIS).is_some() => Lookup::Required,
        _ => Lookup::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            pairs
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn a_set_variable_is_returned() {
        let get = env(&[(REDIS, "127.0.0.1:7000")]);
        assert_eq!(lookup(REDIS, &get), Lookup::Found("127.0.0.1:7000".into()));
    }

    #[test]
    fn a_missing_or_empty_variable_skips_unless_servers_are_required() {
        assert_eq!(lookup(REDIS, env(&[])), Lookup::Skip);
        assert_eq!(lookup(REDIS, env(&[(REDIS, "")])), Lookup::Skip);
        // An empty value is as missing as an absent one: a harness that
        // exports `SESSION_TEST_REDIS=` has not provided a server.
        assert_eq!(
            lookup(REDIS, env(&[(REDIS, ""), (REQUIRE_REDIS, "1")])),
            Lookup::Required
        );
        assert_eq!(
            lookup(REDIS_TLS, env(&[(REQUIRE_REDIS, "1")])),
            Lookup::Required
        );
    }

    #[test]
    fn every_variable_is_documented_once_in_the_table() {
        let source = include_str!("contract.rs");
        for name in ALL {
            let row = format!("//! | `{name}` ");
            let rows = source.lines().filter(|line| line.starts_with(&row)).count();
            assert_eq!(rows, 1, "{name} must have exactly one row in the table");
        }
        let mut sorted = ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALL.len(), "a variable is listed twice");
        assert!(ALL.iter().all(|name| name.starts_with("SESSION_TEST_")));
    }
}
