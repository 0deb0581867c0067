//! Protection against DNS rebinding: the `Host` and `Origin` headers a
//! gateway accepts.
//!
//! The guard checks them before anything else, so that a refused request
//! never reaches the store (rmcp's own check, which runs after the guard has
//! read or deleted the session, is switched off). The rules are rmcp's: an
//! entry `host` accepts that host on any port, `host:port` that port only;
//! names compare without case, IPv6 literals without brackets. An `Origin`,
//! when a browser sends one, must name an accepted origin host: by default
//! the accepted `Host` values themselves (same-origin pages, and on loopback
//! the local tools), or a list of its own for browser apps served
//! elsewhere (`--allowed-origin`).

use axum::http::uri::Authority;
use axum::http::{HeaderMap, Uri, header};

/// The `Host` header values a gateway accepts, which a request's `Origin`
/// must match as well.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Loopback names only (`localhost`, `127.0.0.1`, `::1`, any port):
    /// for a gateway that only local clients reach.
    #[default]
    Loopback,
    /// Any host: behind a balancer that checks the `Host` header itself.
    Any,
    /// These names only, each `host` (any port) or `host:port`: the public
    /// names of the service. An empty list accepts no host.
    Only(Vec<String>),
}

const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl AllowedHosts {
    /// Whether the `Host` of a request with `headers` (and `uri`, whose
    /// authority stands in for a missing `Host`) is accepted.
    pub fn allows_host(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        if *self == Self::Any {
            return true;
        }
        let host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<Authority>().ok())
            .or_else(|| uri.authority().cloned());
        host.is_some_and(|host| self.matches(host.host(), host.port_u16()))
    }

    /// Whether the `Origin` of a request with `headers`, read as a list of
    /// accepted origin hosts, is accepted: no `Origin` (not a browser) is;
    /// `null` and anything unparsable is not, unless any is accepted.
    pub fn allows_origin(&self, headers: &HeaderMap) -> bool {
        if *self == Self::Any {
            return true;
        }
        match headers.get(header::ORIGIN) {
            None => true,
            Some(origin) => origin
                .to_str()
                .ok()
                .and_then(|origin| origin.parse::<Uri>().ok())
                .and_then(|origin| {
                    let authority = origin.authority()?;
                    Some(self.matches(authority.host(), authority.port_u16()))
                })
                .unwrap_or(false),
        }
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        let host = normalize(host);
        let entry_matches = |entry: &str| match parse_entry(entry) {
            Some((name, None)) => name == host,
            Some((name, Some(wanted))) => name == host && port == Some(wanted),
            None => false,
        };
        match self {
            Self::Any => true,
            Self::Loopback => LOOPBACK.iter().any(|entry| entry_matches(entry)),
            Self::Only(entries) => entries.iter().any(|entry| entry_matches(entry)),
        }
    }
}

/// A host name as compared: lowercase, without IPv6 brackets or a trailing
/// dot.
fn normalize(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// An entry as (host, port): `::1` and `[::1]:8080` as well as `name:8080`.
fn parse_entry(entry: &str) -> Option<(String, Option<u16>)> {
    if entry.is_empty() {
        return None;
    }
    // A bare IPv6 literal has colons but no brackets, and no port.
    if entry.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((normalize(entry), None));
    }
    let authority = entry.parse::<Authority>().ok()?;
    Some((normalize(authority.host()), authority.port_u16()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::http::HeaderValue;

    use super::*;

    fn request(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    /// `hosts` for both the `Host` and the `Origin`, the default.
    fn allows(hosts: &AllowedHosts, host: Option<&str>, origin: Option<&str>) -> bool {
        let headers = request(host, origin);
        hosts.allows_host(&Uri::from_static("/mcp"), &headers) && hosts.allows_origin(&headers)
    }

    #[test]
    fn loopback_accepts_local_names_on_any_port() {
        let hosts = AllowedHosts::Loopback;
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:1",
            "[::1]:9000",
            "[::1]",
        ] {
            assert!(allows(&hosts, Some(host), None), "{host}");
        }
        for host in [
            "evil.example.com",
            "localhost.evil.example",
            "10.0.0.1:8080",
        ] {
            assert!(!allows(&hosts, Some(host), None), "{host}");
        }
        assert!(!allows(&hosts, None, None));
        assert!(allows(
            &hosts,
            Some("localhost"),
            Some("http://localhost:3000")
        ));
        assert!(!allows(
            &hosts,
            Some("localhost"),
            Some("https://evil.example.com")
        ));
        assert!(!allows(&hosts, Some("localhost"), Some("null")));
    }

    #[test]
    fn named_hosts_match_with_or_without_a_port() {
        let hosts = AllowedHosts::Only(vec!["mcp.example.com".into(), "edge.example:8443".into()]);
        assert!(allows(&hosts, Some("mcp.example.com"), None));
        assert!(allows(&hosts, Some("MCP.example.com.:443"), None));
        assert!(allows(&hosts, Some("edge.example:8443"), None));
        assert!(!allows(&hosts, Some("edge.example:8080"), None));
        assert!(!allows(&hosts, Some("localhost"), None));
        assert!(!allows(
            &AllowedHosts::Only(Vec::new()),
            Some("localhost"),
            None
        ));
    }

    #[test]
    fn any_accepts_everything() {
        assert!(allows(
            &AllowedHosts::Any,
            Some("evil.example.com"),
            Some("null")
        ));
        assert!(allows(&AllowedHosts::Any, None, None));
    }

    #[test]
    fn an_origin_list_of_its_own_admits_browser_apps_elsewhere() {
        let hosts = AllowedHosts::Only(vec!["mcp.example.com".into()]);
        let origins = AllowedHosts::Only(vec!["chat.example.com".into()]);
        let headers = request(Some("mcp.example.com"), Some("https://chat.example.com"));
        assert!(hosts.allows_host(&Uri::from_static("/mcp"), &headers));
        assert!(!hosts.allows_origin(&headers));
        assert!(origins.allows_origin(&headers));
        let evil = request(Some("mcp.example.com"), Some("https://evil.example.com"));
        assert!(!origins.allows_origin(&evil));
        assert!(AllowedHosts::Any.allows_origin(&evil));
    }
}
