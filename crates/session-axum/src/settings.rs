//! Where a request carries its session id: the cookie and its attributes,
//! or a header. Each setting is checked when it is made, so that a layer
//! holds only settings it can use.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderName};
use session_core::{ConfigError, SessionId};

/// The default cookie name.
pub const DEFAULT_COOKIE: &str = "session";

/// Where the session id travels.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum IdSource {
    /// A cookie, set by the layer on the response that creates or rotates a
    /// session and cleared on the one that ends it: for browsers.
    Cookie(CookieSettings),
    /// A request header, answered with the same header on the response
    /// that creates or rotates a session (and an empty one when it ends):
    /// for API clients that keep the id themselves.
    Header(HeaderName),
}

impl Default for IdSource {
    fn default() -> Self {
        Self::Cookie(CookieSettings::default())
    }
}

/// What the request presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No session id.
    Nothing,
    /// Something that is not a session id: altered, or not ours.
    Invalid,
    /// A well-formed session id, not yet looked up.
    Id(SessionId),
}

impl IdSource {
    /// The session id of a request's headers. With several cookies of the
    /// name (a parent domain's among them, say) the first well-formed one
    /// counts.
    pub(crate) fn find(&self, headers: &HeaderMap) -> Presented {
        let mut found = Presented::Nothing;
        let mut consider = |value: &str| match SessionId::parse(value) {
            Ok(id) => Some(Presented::Id(id)),
            Err(_) => {
                found = Presented::Invalid;
                None
            }
        };
        let mut unreadable = false;
        match self {
            Self::Cookie(settings) => {
                for header in headers.get_all(http::header::COOKIE) {
                    let Ok(header) = header.to_str() else {
                        unreadable = true;
                        continue;
                    };
                    for cookie in Cookie::split_parse(header).flatten() {
                        if cookie.name() == settings.name
                            && let Some(id) = consider(cookie.value())
                        {
                            return id;
                        }
                    }
                }
            }
            Self::Header(name) => {
                if let Some(value) = headers.get(name) {
                    match value.to_str() {
                        Ok(value) => {
                            if let Some(id) = consider(value.trim()) {
                                return id;
                            }
                        }
                        Err(_) => unreadable = true,
                    }
                }
            }
        }
        if unreadable && found == Presented::Nothing {
            // A header that is not text may hide the id: it is not ours.
            found = Presented::Invalid;
        }
        found
    }
}

/// The session cookie: its name and attributes.
///
/// The defaults are the safe ones: `HttpOnly` (no script reads the id),
/// `Secure` (sent over HTTPS only), `SameSite=Lax` (not sent on cross-site
/// subrequests and form posts, still sent when a link from elsewhere is
/// followed, so a login survives it), `Path=/`, no `Domain` (this host
/// only) and no `Max-Age` (the cookie lasts until the browser closes; the
/// store's TTL ends the session in any case). Relax them only with a reason:
/// `secure(false)` for plain-HTTP development on localhost, say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieSettings {
    name: String,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    path: String,
    domain: Option<String>,
    max_age: Option<Duration>,
}

impl Default for CookieSettings {
    fn default() -> Self {
        Self {
            name: DEFAULT_COOKIE.to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".to_owned(),
            domain: None,
            max_age: None,
        }
    }
}

/// Whether `text` is an RFC 6265 token: what a cookie name must be.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// Whether `text` may stand in a cookie attribute: visible ASCII, no `;`.
fn is_attribute_value(text: &str) -> bool {
    text.bytes()
        .all(|byte| byte.is_ascii_graphic() && byte != b';')
}

impl CookieSettings {
    /// The default settings with the cookie named `name`.
    pub fn named(name: &str) -> Result<Self, ConfigError> {
        if !is_token(name) {
            return Err(ConfigError::new(
                "cookie.name",
                "must be a non-empty token (letters, digits and !#$%&'*+-.^_`|~)",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            ..Self::default()
        })
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the cookie is sent over HTTPS only (default `true`).
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Whether scripts are kept from reading the cookie (default `true`).
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// The `SameSite` attribute (default `Lax`). `None` requires `Secure`,
    /// which browsers enforce; it is refused without it.
    pub fn same_site(mut self, same_site: SameSite) -> Result<Self, ConfigError> {
        if same_site == SameSite::None && !self.secure {
            return Err(ConfigError::new(
                "cookie.same_site",
                "SameSite=None needs a Secure cookie; browsers drop it otherwise",
            ));
        }
        self.same_site = same_site;
        Ok(self)
    }

    /// The path the cookie is sent for (default `/`).
    pub fn path(mut self, path: &str) -> Result<Self, ConfigError> {
        if !path.starts_with('/') || !is_attribute_value(path) {
            return Err(ConfigError::new(
                "cookie.path",
                "must start with '/' and hold visible ASCII other than ';'",
            ));
        }
        self.path = path.to_owned();
        Ok(self)
    }

    /// The domain the cookie is sent to, subdomains included; without one
    /// (the default) it goes back to this host only.
    pub fn domain(mut self, domain: &str) -> Result<Self, ConfigError> {
        if domain.is_empty() || !is_attribute_value(domain) {
            return Err(ConfigError::new(
                "cookie.domain",
                "must be a non-empty host name of visible ASCII other than ';'",
            ));
        }
        self.domain = Some(domain.to_owned());
        Ok(self)
    }

    /// How long the browser keeps the cookie; without it (the default) it
    /// keeps it until it closes.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Whether the cookie has a `Max-Age`, and so is renewed on every
    /// response that saw the session.
    pub(crate) fn has_max_age(&self) -> bool {
        self.max_age.is_some()
    }

    /// The `Set-Cookie` value that gives the client `id`, or (`None`)
    /// removes its cookie.
    pub(crate) fn set_cookie(&self, id: Option<SessionId>) -> String {
        let value = id.map_or_else(String::new, |id| id.to_string());
        let mut cookie = Cookie::build((self.name.clone(), value))
            .secure(self.secure)
            .http_only(self.http_only)
            .same_site(self.same_site)
            .path(self.path.clone());
        if let Some(domain) = &self.domain {
            cookie = cookie.domain(domain.clone());
        }
        match id {
            Some(_) => {
                if let Some(max_age) = self.max_age {
                    let seconds = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
                    cookie = cookie.max_age(cookie::time::Duration::seconds(seconds));
                }
            }
            None => cookie = cookie.max_age(cookie::time::Duration::ZERO),
        }
        cookie.build().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for cookie in cookies {
            headers.append(http::header::COOKIE, cookie.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_default_cookie_is_http_only_secure_lax_for_the_whole_host() {
        let id = SessionId::new();
        let set = CookieSettings::default().set_cookie(Some(id));
        assert_eq!(
            set,
            format!("session={id}; HttpOnly; SameSite=Lax; Secure; Path=/")
        );
        let cleared = CookieSettings::default().set_cookie(None);
        assert_eq!(
            cleared,
            "session=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0"
        );
    }

    #[test]
    fn every_attribute_is_configurable_and_checked() {
        let id = SessionId::new();
        let settings = CookieSettings::named("app-session")
            .unwrap()
            .domain("example.com")
            .unwrap()
            .path("/app")
            .unwrap()
            .same_site(SameSite::Strict)
            .unwrap()
            .max_age(Duration::from_secs(3600));
        assert_eq!(
            settings.set_cookie(Some(id)),
            format!(
                "app-session={id}; HttpOnly; SameSite=Strict; Secure; Path=/app; Domain=example.com; Max-Age=3600"
            )
        );
        for bad in ["", "a b", "a;b", "naïve"] {
            let error = CookieSettings::named(bad).unwrap_err();
            assert_eq!(error.field(), Some("cookie.name"), "{bad:?}");
        }
        assert_eq!(
            CookieSettings::default().path("app").unwrap_err().field(),
            Some("cookie.path")
        );
        assert_eq!(
            CookieSettings::default().domain("a;b").unwrap_err().field(),
            Some("cookie.domain")
        );
        let insecure = CookieSettings::default().secure(false);
        assert_eq!(
            insecure.same_site(SameSite::None).unwrap_err().field(),
            Some("cookie.same_site")
        );
    }

    #[test]
    fn the_id_is_found_in_its_cookie_among_others() {
        let id = SessionId::new();
        let source = IdSource::default();
        assert_eq!(source.find(&headers(&[])), Presented::Nothing);
        assert_eq!(
            source.find(&headers(&["theme=dark", &format!("lang=en; session={id}")])),
            Presented::Id(id)
        );
        assert_eq!(
            source.find(&headers(&["session=not-an-id"])),
            Presented::Invalid
        );
        // A junk cookie of the name does not hide a good one.
        assert_eq!(
            source.find(&headers(&[&format!("session=junk; session={id}")])),
            Presented::Id(id)
        );
        assert_eq!(source.find(&headers(&["other=1"])), Presented::Nothing);
    }

    #[test]
    fn the_id_is_found_in_its_header() {
        let id = SessionId::new();
        let source = IdSource::Header(HeaderName::from_static("x-session-id"));
        let mut headers = HeaderMap::new();
        assert_eq!(source.find(&headers), Presented::Nothing);
        headers.insert("x-session-id", id.to_string().parse().unwrap());
        assert_eq!(source.find(&headers), Presented::Id(id));
        headers.insert("x-session-id", "tampered".parse().unwrap());
        assert_eq!(source.find(&headers), Presented::Invalid);
    }
}
