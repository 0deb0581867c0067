//! The servers `cargo xtask test` and `cargo xtask reliability` hand over
//! through `SESSION_TEST_REDIS*` variables (`session_testenv::contract`).
//!
//! Every lookup goes through `session_testenv::var`: a missing variable fails
//! loudly when `SESSION_TEST_REQUIRE_REDIS` is set, and otherwise skips with
//! one line saying why.

use std::path::PathBuf;

use session_testenv::contract::{
    REDIS, REDIS_ACL, REDIS_ACL_PASSWORD, REDIS_ACL_USER, REDIS_MTLS, REDIS_MTLS_CERT,
    REDIS_MTLS_KEY, REDIS_TLS, REDIS_TLS_CA, REDIS_TLS_WRONG_CA, VALKEY,
};
use session_testenv::var;

/// `127.0.0.1:PORT` of the plain server.
pub fn plain() -> Option<String> {
    var(REDIS)
}

/// `127.0.0.1:PORT` of the plain Valkey server.
pub fn valkey() -> Option<String> {
    var(VALKEY)
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
            acl: var(REDIS_ACL)?,
            acl_user: var(REDIS_ACL_USER)?,
            acl_password: var(REDIS_ACL_PASSWORD)?,
            tls: var(REDIS_TLS)?,
            ca: var(REDIS_TLS_CA)?.into(),
            wrong_ca: var(REDIS_TLS_WRONG_CA)?.into(),
            mtls: var(REDIS_MTLS)?,
            mtls_cert: var(REDIS_MTLS_CERT)?.into(),
            mtls_key: var(REDIS_MTLS_KEY)?.into(),
        })
    }
}

/// Set (to anything) to keep the suite's scratch directories, with the
/// servers' logs and data, after the run.
pub const KEEP_FILES: &str = "RELIABILITY_KEEP_FILES";

/// A private scratch directory for a run or a scenario, removed at the end
/// unless [`KEEP_FILES`] is set.
pub fn scratch_dir(prefix: &str) -> session_testenv::Result<session_testenv::ScratchDir> {
    let mut dir = session_testenv::ScratchDir::new(prefix)?;
    if std::env::var_os(KEEP_FILES).is_some() {
        dir.keep();
    }
    Ok(dir)
}
