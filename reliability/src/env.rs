//! The servers `cargo xtask test` and `cargo xtask reliability` hand over
//! through `SESSION_TEST_REDIS*` variables (see `xtask/src/redis.rs`).
//!
//! Every lookup goes through `session_testkit::env::var`: a missing
//! variable fails loudly when `SESSION_TEST_REQUIRE_REDIS` is set, and
//! otherwise skips with one line saying why.

use std::path::PathBuf;

use session_testkit::env::var as test_env;

/// `127.0.0.1:PORT` of the plain server.
pub fn plain() -> Option<String> {
    test_env("SESSION_TEST_REDIS")
}

/// The ACL, TLS and mutual-TLS servers with their credentials.
#[derive(Clone)]
pub struct SecureServers {
    /// The ACL server.
    pub acl: String,
    /// The ACL user allowed to do everything.
    pub acl_user: String,
    /// That user's password.
    pub acl_password: String,
    /// The TLS-only server (no client certificates).
    pub tls: String,
    /// The CA that signed the TLS and mTLS servers.
    pub ca: PathBuf,
    /// A CA that signed neither.
    pub wrong_ca: PathBuf,
    /// The TLS server requiring client certificates.
    pub mtls: String,
    /// The client certificate for it.
    pub mtls_cert: PathBuf,
    /// That certificate's private key (PEM).
    pub mtls_key: PathBuf,
}

impl std::fmt::Debug for SecureServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of test output too.
        f.debug_struct("SecureServers")
            .field("acl", &self.acl)
            .field("tls", &self.tls)
            .field("mtls", &self.mtls)
            .finish_non_exhaustive()
    }
}

impl SecureServers {
    /// Reads every variable; `None` (after the skip line) when one is missing.
    pub fn from_env() -> Option<Self> {
        Some(Self {
            acl: test_env("SESSION_TEST_REDIS_ACL")?,
            acl_user: test_env("SESSION_TEST_REDIS_ACL_USER")?,
            acl_password: test_env("SESSION_TEST_REDIS_ACL_PASSWORD")?,
            tls: test_env("SESSION_TEST_REDIS_TLS")?,
            ca: test_env("SESSION_TEST_REDIS_TLS_CA")?.into(),
            wrong_ca: test_env("SESSION_TEST_REDIS_TLS_WRONG_CA")?.into(),
            mtls: test_env("SESSION_TEST_REDIS_MTLS")?,
            mtls_cert: test_env("SESSION_TEST_REDIS_MTLS_CERT")?.into(),
            mtls_key: test_env("SESSION_TEST_REDIS_MTLS_KEY")?.into(),
        })
    }
}
