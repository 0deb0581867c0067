//! Who calls the gateway: bearer tokens checked once per request, and the
//! [`Principal`] that every session and handle is bound to.
//!
//! Two modes, chosen by the configuration's `[auth]` table
//! ([`AuthSettings`]):
//!
//! - **JWT.** Every request carries `Authorization: Bearer <JWT>`. The token's
//!   signature is checked against the configured keys (a JWKS file, PEM
//!   public keys, or an HMAC secret taken from an environment variable or a
//!   file, never from the configuration text), then its issuer, audience,
//!   expiry and not-before, with a small clock skew. The principal is the
//!   pair (issuer, subject), not the token: a refreshed token is the same
//!   principal. The verification is `jsonwebtoken`'s, on `ring`; nothing
//!   here is cryptographic.
//! - **Anonymous.** No identity provider: every caller is one principal. The
//!   records a caller creates are still tagged with its address, so that the
//!   [limits](crate::limits) count per address, but any anonymous caller may
//!   use any anonymous record. It is the default without an `[auth]` table,
//!   so that `cargo run -p session-gateway` works out of the box, and it is
//!   logged as a warning at startup.
//!
//! A missing or invalid token is a [`AuthError`], answered 401 with a
//! `WWW-Authenticate` challenge that points at the gateway's protected
//! resource metadata (RFC 9728), as MCP's authorization specification asks.
//! The answer says whether a token was missing or invalid, never why a token
//! was refused: the reason is logged, at debug level, without the token.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use session_factory::Owner;

use session_factory::ConfigError as SettingsError;

/// The issuer recorded on the records of anonymous callers.
pub const ANONYMOUS_ISSUER: &str = "urn:session-gateway:anonymous";
/// The subject `whoami` reports for an anonymous caller.
pub const ANONYMOUS_SUBJECT: &str = "anonymous";
/// The clock skew allowed on `exp` and `nbf` by default.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The shortest HMAC secret accepted, in bytes: RFC 7518 asks for a key at
/// least as long as the hash (32 bytes for HS256).
pub const MIN_HMAC_SECRET: usize = 32;
/// The largest key file read (a JWKS, a PEM key, a secret).
const KEY_FILE_LIMIT: u64 = 1 << 20;

/// The caller of a request, as authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A caller whose token was verified: (issuer, subject).
    User(Owner),
    /// Anonymous mode: one principal for everybody. The owner recorded on
    /// the caller's records is ([`ANONYMOUS_ISSUER`], the caller's address).
    Anonymous(Owner),
}

impl Principal {
    /// The anonymous principal of a caller at `address`. (An address is
    /// never empty and far below the owner's length limit: the error is
    /// session-core's, for form's sake.)
    pub fn anonymous(address: IpAddr) -> Result<Self, session_factory::Error> {
        Owner::new(ANONYMOUS_ISSUER, address.to_string()).map(Self::Anonymous)
    }

    /// The owner to record on the sessions and handles this principal
    /// creates: what the limits count.
    pub fn owner(&self) -> &Owner {
        match self {
            Self::User(owner) | Self::Anonymous(owner) => owner,
        }
    }

    /// Whether a record owned by `owner` belongs to this principal.
    ///
    /// A user owns exactly the records of its (issuer, subject); a record
    /// without owner belongs to no user. An anonymous caller owns every
    /// anonymous record, and the records without owner that predate owners.
    pub fn owns(&self, owner: Option<&Owner>) -> bool {
        match self {
            Self::User(me) => owner == Some(me),
            Self::Anonymous(_) => owner.is_none_or(|owner| owner.issuer() == ANONYMOUS_ISSUER),
        }
    }

    /// The (issuer, subject) that `whoami` reports.
    pub fn identity(&self) -> (&str, &str) {
        match self {
            Self::User(owner) => (owner.issuer(), owner.subject()),
            Self::Anonymous(_) => (ANONYMOUS_ISSUER, ANONYMOUS_SUBJECT),
        }
    }
}

/// Why a request was not authenticated. The variants the client sees are
/// only [`Missing`](AuthError::Missing) and every other one as "invalid".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// An `Authorization` header that is not one bearer token.
    #[error("the Authorization header is not a bearer token")]
    Malformed,
    /// The token was refused; the reason is for the log only.
    #[error("the token was refused: {0}")]
    Refused(&'static str),
}

/// The authentication settings: the `[auth]` table, parsed and with its
/// keys read.
#[derive(Clone, Debug, Default)]
pub enum AuthSettings {
    /// No identity provider: one principal for everybody.
    #[default]
    Anonymous,
    /// Bearer JWTs.
    Jwt(JwtSettings),
}

/// The checks a token must pass in JWT mode.
#[derive(Clone)]
pub struct JwtSettings {
    issuer: String,
    audience: String,
    leeway: Duration,
    keys: Vec<VerifyingKey>,
    resource: Option<String>,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are left out: an HMAC secret is one of them.
        f.debug_struct("JwtSettings")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("keys", &self.keys.len())
            .field("resource", &self.resource)
            .finish()
    }
}

impl JwtSettings {
    /// JWT settings with the issuer and audience tokens must name, and the
    /// HMAC `secret` they are signed with (`algorithm` one of HS256, HS384,
    /// HS512). For tests and embedders; the configuration file goes through
    /// [`AuthFile`].
    pub fn hmac(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        algorithm: Algorithm,
        secret: &[u8],
    ) -> Result<Self, SettingsError> {
        let key = hmac_key(algorithm, secret, "auth")?;
        Ok(Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: DEFAULT_LEEWAY,
            keys: vec![key],
            resource: None,
        })
    }

    /// The same settings with `leeway` of clock skew on `exp` and `nbf`.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The issuer tokens must name: the authorization server advertised in
    /// the protected resource metadata.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The resource URL configured for the protected resource metadata, if
    /// any (otherwise it is derived from each request's `Host`).
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }
}

/// One key a token may be signed with.
#[derive(Clone)]
struct VerifyingKey {
    algorithm: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

/// The `[auth]` table of the configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// `"jwt"` or `"anonymous"`.
    pub mode: Option<String>,
    /// The `iss` tokens must carry.
    pub issuer: Option<String>,
    /// The `aud` tokens must carry (this gateway's name at the identity
    /// provider).
    pub audience: Option<String>,
    /// The clock skew allowed on `exp` and `nbf` (`"30s"`).
    pub leeway: Option<String>,
    /// A JWKS file (public keys only).
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys.
    #[serde(default)]
    pub keys: Vec<KeyFile>,
    /// The environment variable holding an HMAC secret.
    pub hmac_secret_env: Option<String>,
    /// A file holding an HMAC secret (its bytes, a trailing newline
    /// dropped).
    pub hmac_secret_file: Option<PathBuf>,
    /// The HMAC algorithm (`"HS256"` by default).
    pub hmac_algorithm: Option<String>,
    /// This gateway's public URL (`https://mcp.example.com/mcp`), for the
    /// protected resource metadata; without it the URL is derived from the
    /// request's `Host`.
    pub resource: Option<String>,
}

/// One `[[auth.keys]]` entry: a PEM public key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// The PEM file (RSA, EC P-256/P-384 or Ed25519 public key).
    pub pem_file: PathBuf,
    /// The algorithm tokens signed with it name (`RS256`, `ES256`, `EdDSA`,
    /// ...).
    pub algorithm: String,
    /// The `kid` tokens signed with it name, if the provider sets one.
    pub kid: Option<String>,
}

impl AuthFile {
    /// Parses the table into settings, reading the key files and the secret.
    /// `env` looks up an environment variable (the process's, or a test's).
    pub fn resolve(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AuthSettings, SettingsError> {
        match self.mode.as_deref() {
            Some("anonymous") => {
                let extra = self.issuer.is_some()
                    || self.audience.is_some()
                    || self.jwks_file.is_some()
                    || !self.keys.is_empty()
                    || self.hmac_secret_env.is_some()
                    || self.hmac_secret_file.is_some();
                if extra {
                    return Err(SettingsError::new(
                        "auth",
                        "mode = \"anonymous\" takes no issuer, audience or keys",
                    ));
                }
                Ok(AuthSettings::Anonymous)
            }
            Some("jwt") => self.resolve_jwt(env).map(AuthSettings::Jwt),
            Some(other) => Err(SettingsError::new(
                "auth.mode",
                format!("{other:?} is not a mode: \"jwt\" or \"anonymous\""),
            )),
            None => Err(SettingsError::new(
                "auth.mode",
                "missing: \"jwt\" or \"anonymous\"",
            )),
        }
    }

    fn resolve_jwt(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<JwtSettings, SettingsError> {
        let issuer = required(self.issuer, "auth.issuer")?;
        let audience = required(self.audience, "auth.audience")?;
        let leeway = match &self.leeway {
            None => DEFAULT_LEEWAY,
            Some(text) => humantime::parse_duration(text)
                .map_err(|_| SettingsError::new("auth.leeway", "not a duration like \"30s\""))?,
        };
        if leeway > Duration::from_secs(300) {
            return Err(SettingsError::new(
                "auth.leeway",
                "at most 5m: a clock skew, not a grace period",
            ));
        }
        let mut keys = Vec::new();
        if let Some(path) = &self.jwks_file {
            keys.extend(jwks_keys(path)?);
        }
        for (index, entry) in self.keys.iter().enumerate() {
            keys.push(pem_key(entry, &format!("auth.keys[{index}]"))?);
        }
        let hmac_algorithm = match &self.hmac_algorithm {
            None => Algorithm::HS256,
            Some(name) => match Algorithm::from_str(name) {
                Ok(algorithm @ (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)) => {
                    algorithm
                }
                _ => {
                    return Err(SettingsError::new(
                        "auth.hmac_algorithm",
                        format!("{name:?} is not HS256, HS384 or HS512"),
                    ));
                }
            },
        };
        match (&self.hmac_secret_env, &self.hmac_secret_file) {
            (Some(_), Some(_)) => {
                return Err(SettingsError::new(
                    "auth",
                    "hmac_secret_env and hmac_secret_file exclude each other",
                ));
            }
            (Some(name), None) => {
                let secret = env(name).ok_or_else(|| {
                    SettingsError::new(
                        "auth.hmac_secret_env",
                        format!("the environment variable {name} is not set"),
                    )
                })?;
                keys.push(hmac_key(
                    hmac_algorithm,
                    secret.as_bytes(),
                    "auth.hmac_secret_env",
                )?);
            }
            (None, Some(path)) => {
                let mut secret = read_key_file(path, "auth.hmac_secret_file")?;
                if secret.last() == Some(&b'\n') {
                    secret.pop();
                    if secret.last() == Some(&b'\r') {
                        secret.pop();
                    }
                }
                keys.push(hmac_key(hmac_algorithm, &secret, "auth.hmac_secret_file")?);
            }
            (None, None) => {}
        }
        if keys.is_empty() {
            return Err(SettingsError::new(
                "auth",
                "mode = \"jwt\" needs keys: jwks_file, [[auth.keys]], hmac_secret_env or \
                 hmac_secret_file",
            ));
        }
        Ok(JwtSettings {
            issuer,
            audience,
            leeway,
            keys,
            resource: self.resource,
        })
    }
}

fn required(value: Option<String>, field: &str) -> Result<String, SettingsError> {
    match value {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(SettingsError::new(field, "missing")),
    }
}

fn read_key_file(path: &Path, field: &str) -> Result<Vec<u8>, SettingsError> {
    session_factory::session_config::read_file(Some(field), path, KEY_FILE_LIMIT)
}

fn hmac_key(
    algorithm: Algorithm,
    secret: &[u8],
    field: &str,
) -> Result<VerifyingKey, SettingsError> {
    if secret.len() < MIN_HMAC_SECRET {
        // The length is no secret; the secret itself is never in an error.
        return Err(SettingsError::new(
            field,
            format!(
                "the HMAC secret is {} bytes; at least {MIN_HMAC_SECRET} are needed",
                secret.len()
            ),
        ));
    }
    Ok(VerifyingKey {
        algorithm,
        kid: None,
        key: DecodingKey::from_secret(secret),
    })
}

fn pem_key(entry: &KeyFile, field: &str) -> Result<VerifyingKey, SettingsError> {
    let pem = read_key_file(&entry.pem_file, &format!("{field}.pem_file"))?;
    let algorithm = Algorithm::from_str(&entry.algorithm).map_err(|_| {
        SettingsError::new(
            format!("{field}.algorithm"),
            format!("{:?} is not a JWS algorithm", entry.algorithm),
        )
    })?;
    use Algorithm::*;
    let key = match algorithm {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(&pem),
        ES256 | ES384 => DecodingKey::from_ec_pem(&pem),
        EdDSA => DecodingKey::from_ed_pem(&pem),
        HS256 | HS384 | HS512 => {
            return Err(SettingsError::new(
                format!("{field}.algorithm"),
                "an HMAC secret is not a PEM key: use hmac_secret_env or hmac_secret_file",
            ));
        }
    }
    .map_err(|_| {
        SettingsError::new(
            format!("{field}.pem_file"),
            format!(
                "{} is not a PEM public key for {}",
                entry.pem_file.display(),
                entry.algorithm
            ),
        )
    })?;
    Ok(VerifyingKey {
        algorithm,
        kid: entry.kid.clone(),
        key,
    })
}

fn jwks_keys(path: &Path) -> Result<Vec<VerifyingKey>, SettingsError> {
    let field = "auth.jwks_file";
    let bytes = read_key_file(path, field)?;
    let set: JwkSet = serde_json::from_slice(&bytes).map_err(|error| {
        SettingsError::new(field, format!("{} is not a JWKS: {error}", path.display()))
    })?;
    let mut keys = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let at = format!("{field}: key {index}");
        let inferred = match &jwk.algorithm {
            AlgorithmParameters::OctetKey(_) => {
                return Err(SettingsError::new(
                    at,
                    "a symmetric key does not belong in a JWKS file: use hmac_secret_env or \
                     hmac_secret_file",
                ));
            }
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(params) => match params.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err(SettingsError::new(at, "unsupported elliptic curve")),
            },
            AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        };
        let algorithm = match jwk.common.key_algorithm {
            None => inferred,
            Some(named) => Algorithm::from_str(&named.to_string()).map_err(|_| {
                SettingsError::new(at.clone(), format!("unsupported algorithm {named}"))
            })?,
        };
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|_| SettingsError::new(at.clone(), "not a usable public key"))?;
        keys.push(VerifyingKey {
            algorithm,
            kid: jwk.common.key_id.clone(),
            key,
        });
    }
    if keys.is_empty() {
        return Err(SettingsError::new(
            field,
            format!("{} holds no keys", path.display()),
        ));
    }
    Ok(keys)
}

/// The claims the gateway reads; `jsonwebtoken` checks `exp`, `nbf`, `iss`
/// and `aud` itself.
#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
}

/// Checks requests against the [`AuthSettings`].
#[derive(Clone, Debug)]
pub struct Authenticator {
    settings: AuthSettings,
    /// The claims checks, shared by every key (one `Validation` per
    /// algorithm, as `jsonwebtoken` checks the header's algorithm against
    /// its list).
    validations: Vec<(Algorithm, Validation)>,
}

impl Authenticator {
    /// An authenticator for `settings`.
    pub fn new(settings: AuthSettings) -> Self {
        let validations = match &settings {
            AuthSettings::Anonymous => Vec::new(),
            AuthSettings::Jwt(jwt) => {
                let mut algorithms: Vec<Algorithm> = Vec::new();
                for key in &jwt.keys {
                    if !algorithms.contains(&key.algorithm) {
                        algorithms.push(key.algorithm);
                    }
                }
                algorithms
                    .into_iter()
                    .map(|algorithm| {
                        let mut validation = Validation::new(algorithm);
                        validation.set_issuer(&[&jwt.issuer]);
                        validation.set_audience(&[&jwt.audience]);
                        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                        validation.validate_nbf = true;
                        validation.leeway = jwt.leeway.as_secs();
                        (algorithm, validation)
                    })
                    .collect()
            }
        };
        Self {
            settings,
            validations,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Whether every caller is one anonymous principal.
    pub fn is_anonymous(&self) -> bool {
        matches!(self.settings, AuthSettings::Anonymous)
    }

    /// The principal of a request with `headers` from `address`.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        address: IpAddr,
    ) -> Result<Principal, AuthError> {
        let AuthSettings::Jwt(jwt) = &self.settings else {
            return Principal::anonymous(address)
                .map_err(|_| AuthError::Refused("unusable client address"));
        };
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(if headers.contains_key(header::AUTHORIZATION) {
                AuthError::Malformed
            } else {
                AuthError::Missing
            });
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::Malformed)?;
        self.verify(jwt, token)
    }

    fn verify(&self, jwt: &JwtSettings, token: &str) -> Result<Principal, AuthError> {
        // `alg: none` and unknown algorithms fail here: `jsonwebtoken` has
        // no such algorithm to parse the header into.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Refused("malformed token or unsupported algorithm"))?;
        let Some((_, validation)) = self
            .validations
            .iter()
            .find(|(algorithm, _)| *algorithm == header.alg)
        else {
            return Err(AuthError::Refused("no key for the token's algorithm"));
        };
        let candidates = jwt.keys.iter().filter(|key| {
            key.algorithm == header.alg
                && match (&header.kid, &key.kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    _ => true,
                }
        });
        let mut reason = "no key for the token's key id";
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
                Ok(data) => {
                    let owner = Owner::new(data.claims.iss, data.claims.sub)
                        .map_err(|_| AuthError::Refused("unusable issuer or subject"))?;
                    return Ok(Principal::User(owner));
                }
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind;
                    reason = match error.kind() {
                        // Another key may verify the signature.
                        ErrorKind::InvalidSignature => {
                            reason = "bad signature";
                            continue;
                        }
                        ErrorKind::ExpiredSignature => "expired",
                        ErrorKind::ImmatureSignature => "not valid yet (nbf)",
                        ErrorKind::InvalidIssuer => "wrong issuer",
                        ErrorKind::InvalidAudience => "wrong audience",
                        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                        ErrorKind::InvalidAlgorithm => "algorithm does not match the key",
                        _ => "malformed token",
                    };
                    break;
                }
            }
        }
        Err(AuthError::Refused(reason))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::Ipv4Addr;

    use axum::http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn authenticator() -> Authenticator {
        let jwt = JwtSettings::hmac("https://issuer.test", "gateway", Algorithm::HS256, SECRET)
            .unwrap()
            .with_leeway(Duration::from_secs(5));
        Authenticator::new(AuthSettings::Jwt(jwt))
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(claims: serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn good_claims() -> serde_json::Value {
        json!({"iss": "https://issuer.test", "aud": "gateway", "sub": "alice", "exp": now() + 60})
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    fn check(token: &str) -> Result<Principal, AuthError> {
        authenticator().authenticate(&bearer(token), ADDRESS)
    }

    #[test]
    fn a_good_token_is_its_issuer_and_subject() {
        let principal = check(&token(good_claims(), SECRET)).unwrap();
        assert_eq!(principal.identity(), ("https://issuer.test", "alice"));
        assert_eq!(
            principal,
            Principal::User(Owner::new("https://issuer.test", "alice").unwrap())
        );
    }

    #[test]
    fn every_bad_token_is_refused() {
        let mut cases = Vec::new();
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = good_claims();
            claims[key] = value;
            claims
        };
        cases.push(("expired", token(with("exp", json!(now() - 60)), SECRET)));
        cases.push((
            "nbf in the future",
            token(with("nbf", json!(now() + 600)), SECRET),
        ));
        cases.push((
            "wrong issuer",
            token(with("iss", json!("https://other.test")), SECRET),
        ));
        cases.push((
            "wrong audience",
            token(with("aud", json!("another")), SECRET),
        ));
        cases.push((
            "bad signature",
            token(good_claims(), b"another secret of thirty-two bytes!"),
        ));
        let mut no_sub = good_claims();
        no_sub.as_object_mut().unwrap().remove("sub");
        cases.push(("no subject", token(no_sub, SECRET)));
        let mut no_exp = good_claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        cases.push(("no expiry", token(no_exp, SECRET)));
        // `alg: none`: a header and claims with an empty signature.
        let b64 = |value: serde_json::Value| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(good_claims())
        );
        cases.push(("alg none", none));
        cases.push(("not a JWT", "hello".to_owned()));
        for (name, token) in cases {
            let refused = check(&token).unwrap_err();
            assert!(
                matches!(refused, AuthError::Refused(_)),
                "{name}: {refused:?}"
            );
        }
    }

    #[test]
    fn the_skew_is_allowed_and_no_more() {
        let mut claims = good_claims();
        claims["exp"] = json!(now() - 2);
        assert!(check(&token(claims.clone(), SECRET)).is_ok());
        claims["exp"] = json!(now() - 20);
        assert!(check(&token(claims, SECRET)).is_err());
    }

    #[test]
    fn a_missing_or_malformed_header_is_told_apart() {
        let auth = authenticator();
        assert_eq!(
            auth.authenticate(&HeaderMap::new(), ADDRESS),
            Err(AuthError::Missing)
        );
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert_eq!(
            auth.authenticate(&basic, ADDRESS),
            Err(AuthError::Malformed)
        );
        let mut empty = HeaderMap::new();
        empty.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(
            auth.authenticate(&empty, ADDRESS),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn anonymous_callers_are_one_principal_counted_by_address() {
        let auth = Authenticator::new(AuthSettings::Anonymous);
        let here = auth.authenticate(&HeaderMap::new(), ADDRESS).unwrap();
        let there = auth
            .authenticate(&HeaderMap::new(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
            .unwrap();
        assert_ne!(here.owner(), there.owner());
        assert!(here.owns(Some(there.owner())));
        assert!(here.owns(None));
        let user = Owner::new("https://issuer.test", "alice").unwrap();
        assert!(!here.owns(Some(&user)));
        assert_eq!(here.identity(), (ANONYMOUS_ISSUER, ANONYMOUS_SUBJECT));
        let alice = Principal::User(user.clone());
        assert!(alice.owns(Some(&user)));
        assert!(!alice.owns(None));
        assert!(!alice.owns(Some(here.owner())));
    }

    #[test]
    fn the_file_table_is_checked_and_names_no_secret() {
        let secret = "s3cret-s3cret-s3cret-s3cret-s3cret!";
        let env = |name: &str| (name == "JWT_SECRET").then(|| secret.to_owned());
        let table = |text: &str| toml::from_str::<AuthFile>(text).unwrap();
        let ok = table(
            "mode = \"jwt\"\nissuer = \"i\"\naudience = \"a\"\nhmac_secret_env = \"JWT_SECRET\"",
        )
        .resolve(env)
        .unwrap();
        assert!(matches!(ok, AuthSettings::Jwt(_)));
        assert!(!format!("{ok:?}").contains(secret));
        let short = |name: &str| (name == "JWT_SECRET").then(|| "short".to_owned());
        let error = table(
            "mode = \"jwt\"\nissuer = \"i\"\naudience = \"a\"\nhmac_secret_env = \"JWT_SECRET\"",
        )
        .resolve(short)
        .unwrap_err();
        assert!(error.to_string().contains("5 bytes"), "{error}");
        assert!(!error.to_string().contains("short"), "{error}");
        let cases = [
            (
                "mode = \"jwt\"\naudience = \"a\"\nhmac_secret_env = \"JWT_SECRET\"",
                "auth.issuer",
            ),
            (
                "mode = \"jwt\"\nissuer = \"i\"\naudience = \"a\"",
                "needs keys",
            ),
            ("mode = \"magic\"", "not a mode"),
            ("issuer = \"i\"", "auth.mode"),
            ("mode = \"anonymous\"\nissuer = \"i\"", "takes no issuer"),
            (
                "mode = \"jwt\"\nissuer = \"i\"\naudience = \"a\"\nhmac_secret_env = \"NOPE\"",
                "NOPE is not set",
            ),
            (
                "mode = \"jwt\"\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"/nonexistent/jwks.json\"",
                "cannot read /nonexistent/jwks.json",
            ),
        ];
        for (text, wanted) in cases {
            let error = table(text).resolve(env).unwrap_err().to_string();
            assert!(error.contains(wanted), "{text}: {error}");
        }
        assert!(toml::from_str::<AuthFile>("mode = \"jwt\"\nsecret = \"x\"").is_err());
    }

    /// The test keys of `tests/fixtures/jwt`.
    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name)
    }

    fn signed(algorithm: Algorithm, kid: Option<&str>, private: &str, subject: &str) -> String {
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            other => panic!("no fixture for {other:?}"),
        }
        .unwrap();
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        let mut claims = good_claims();
        claims["sub"] = json!(subject);
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    fn from_file(text: &str) -> Authenticator {
        let text = text.replace("FIXTURES", &fixture("").display().to_string());
        let auth: AuthFile = toml::from_str(&text).unwrap();
        Authenticator::new(auth.resolve(|_| None).unwrap())
    }

    #[test]
    fn a_jwks_file_verifies_rsa_ec_and_ed25519_tokens_by_kid() {
        let auth = from_file(
            "mode = \"jwt\"\nissuer = \"https://issuer.test\"\naudience = \"gateway\"\n\
             jwks_file = \"FIXTURES/jwks.json\"",
        );
        let cases = [
            (Algorithm::RS256, "rsa-1", "rs256-private.pem"),
            (Algorithm::ES256, "ec-1", "es256-private.pem"),
            (Algorithm::EdDSA, "ed-1", "ed25519-private.pem"),
        ];
        for (algorithm, kid, private) in cases {
            let token = signed(algorithm, Some(kid), private, "carol");
            let principal = auth.authenticate(&bearer(&token), ADDRESS).unwrap();
            assert_eq!(
                principal.identity(),
                ("https://issuer.test", "carol"),
                "{algorithm:?}"
            );
            // Without a kid, every key of the algorithm is tried.
            let token = signed(algorithm, None, private, "carol");
            assert!(
                auth.authenticate(&bearer(&token), ADDRESS).is_ok(),
                "{algorithm:?}"
            );
        }
        // A kid that names another key, and a key of the right algorithm
        // that did not sign the token, are refused.
        let token = signed(
            Algorithm::ES256,
            Some("rsa-1"),
            "es256-private.pem",
            "carol",
        );
        assert!(auth.authenticate(&bearer(&token), ADDRESS).is_err());
        // An HMAC token signed with a public key's bytes (the classic
        // algorithm confusion) has no HMAC key to be checked against.
        let public = std::fs::read(fixture("rs256-public.pem")).unwrap();
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good_claims(),
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert_eq!(
            auth.authenticate(&bearer(&confused), ADDRESS),
            Err(AuthError::Refused("no key for the token's algorithm"))
        );
    }

    #[test]
    fn pem_keys_verify_with_their_algorithm() {
        let auth = from_file(
            "mode = \"jwt\"\nissuer = \"https://issuer.test\"\naudience = \"gateway\"\n\
             [[keys]]\npem_file = \"FIXTURES/rs256-public.pem\"\nalgorithm = \"RS256\"\n\
             [[keys]]\npem_file = \"FIXTURES/es256-public.pem\"\nalgorithm = \"ES256\"\nkid = \"ec-1\"",
        );
        let token = signed(Algorithm::RS256, None, "rs256-private.pem", "dave");
        assert_eq!(
            auth.authenticate(&bearer(&token), ADDRESS)
                .unwrap()
                .identity()
                .1,
            "dave"
        );
        let token = signed(Algorithm::ES256, Some("ec-1"), "es256-private.pem", "dave");
        assert!(auth.authenticate(&bearer(&token), ADDRESS).is_ok());
        // Ed25519 has no key here.
        let token = signed(Algorithm::EdDSA, None, "ed25519-private.pem", "dave");
        assert!(auth.authenticate(&bearer(&token), ADDRESS).is_err());
    }

    #[test]
    fn unusable_key_files_are_refused_at_startup() {
        let resolve = |text: &str| {
            let text = text.replace("FIXTURES", &fixture("").display().to_string());
            toml::from_str::<AuthFile>(&text).unwrap().resolve(|_| None)
        };
        let head = "mode = \"jwt\"\nissuer = \"i\"\naudience = \"a\"\n";
        let cases = [
            (
                "[[keys]]\npem_file = \"FIXTURES/es256-public.pem\"\nalgorithm = \"RS256\"",
                "is not a PEM public key for RS256",
            ),
            (
                "[[keys]]\npem_file = \"FIXTURES/rs256-public.pem\"\nalgorithm = \"HS256\"",
                "an HMAC secret is not a PEM key",
            ),
            (
                "[[keys]]\npem_file = \"FIXTURES/rs256-public.pem\"\nalgorithm = \"none\"",
                "not a JWS algorithm",
            ),
            ("jwks_file = \"FIXTURES/README.md\"", "is not a JWKS"),
            ("hmac_secret_file = \"FIXTURES\"", "not a regular file"),
        ];
        for (table, wanted) in cases {
            let error = resolve(&format!("{head}{table}")).unwrap_err().to_string();
            assert!(error.contains(wanted), "{table}: {error}");
        }
    }
}
