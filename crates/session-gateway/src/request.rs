//! What the gateway knows of an MCP request before anything touches the
//! store: its protocol era, its JSON-RPC id and whether it opens a session.
//!
//! The [guard](crate::guard) reads this once, at the edge, and decides from
//! it alone: a request of the 2026-07-28 era never reads a session (it has
//! none), a refused request never reaches the store, and every refusal
//! echoes the request's id. rmcp parses the body again afterwards; the
//! classification here mirrors rmcp's own (`is_legacy_request` in its
//! streamable-HTTP service) so that both agree on every request's era.
//!
//! # The eras
//!
//! | era | revisions | state across calls |
//! |---|---|---|
//! | [`Era::Handshake`] | 2025-03-26, 2025-06-18, 2025-11-25 | the `initialize` handshake's session (`Mcp-Session-Id`) |
//! | [`Era::Stateless`] | 2026-07-28 | none per connection: explicit handles that tools mint |
//!
//! A request is of the stateless era when its `_meta` carries the
//! per-request context that revision requires (protocol version and client
//! capabilities), or when its protocol version (from `_meta`, else the
//! `MCP-Protocol-Version` header, else 2025-03-26 as the handshake-era
//! revisions say) is 2026-07-28 or later. An `initialize` is of the
//! handshake era whatever it names: only those revisions have it.

use axum::http::HeaderMap;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, GetMeta, ProtocolVersion, RequestId};

/// The header naming the request's protocol revision.
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";

/// The protocol revisions this gateway serves, oldest first: what it
/// advertises (in `initialize` and `server/discover` answers and in an
/// unsupported-version error) and what it accepts in `MCP-Protocol-Version`.
///
/// 2024-11-05 is left out: that revision's transport (HTTP+SSE, with a
/// separate message endpoint) is not the one served on `/mcp`.
pub const SUPPORTED_VERSIONS: &[ProtocolVersion] = &[
    ProtocolVersion::V_2025_03_26,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
    ProtocolVersion::V_2026_07_28,
];

/// Whether `version` is one of [`SUPPORTED_VERSIONS`].
pub fn is_supported(version: &str) -> bool {
    SUPPORTED_VERSIONS
        .iter()
        .any(|supported| supported.as_str() == version)
}

/// The protocol era of a request; see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// 2025-03-26 to 2025-11-25: sessions opened by `initialize`.
    Handshake,
    /// 2026-07-28 and later: every request stands alone.
    Stateless,
}

/// A `POST` body, classified.
#[derive(Clone, Debug)]
pub struct Rpc {
    /// The JSON-RPC id, for a request (`None` for a notification or a
    /// response).
    pub id: Option<RequestId>,
    /// The request's era.
    pub era: Era,
    /// Whether the message is an `initialize` request: the one that opens a
    /// handshake-era session.
    pub initialize: bool,
}

/// A `POST` body the gateway refuses before rmcp sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all: JSON-RPC's parse error.
    NotJson,
    /// A JSON array: a batch, which no revision served here allows (2025-06-18
    /// removed them, and rmcp never took them).
    Batch,
    /// JSON, but not a JSON-RPC message; its `id`, if one could be read.
    NotJsonRpc(Option<RequestId>),
}

impl Rpc {
    /// Classifies a `POST` body sent with `headers`.
    pub fn parse(body: &[u8], headers: &HeaderMap) -> Result<Self, BodyError> {
        let message: ClientJsonRpcMessage = match serde_json::from_slice(body) {
            Ok(message) => message,
            // Only on this error path is the body parsed a second time, to
            // tell which answer it gets.
            Err(_) => {
                return Err(match serde_json::from_slice::<serde_json::Value>(body) {
                    Err(_) => BodyError::NotJson,
                    Ok(serde_json::Value::Array(_)) => BodyError::Batch,
                    Ok(value) => BodyError::NotJsonRpc(
                        value
                            .get("id")
                            .and_then(|id| serde_json::from_value(id.clone()).ok()),
                    ),
                });
            }
        };
        let ClientJsonRpcMessage::Request(request) = &message else {
            // Notifications and responses carry no version of their own: the
            // header decides, as for a GET.
            return Ok(Self {
                id: None,
                era: era_of_headers(headers),
                initialize: false,
            });
        };
        let id = Some(request.id.clone());
        if matches!(request.request, ClientRequest::InitializeRequest(_)) {
            return Ok(Self {
                id,
                era: Era::Handshake,
                initialize: true,
            });
        }
        let meta = request.request.get_meta();
        let meta_version = meta.protocol_version();
        let stateless_context = meta_version.is_some() && meta.client_capabilities().is_some();
        let era = match meta_version {
            _ if stateless_context => Era::Stateless,
            Some(version) => era_of_version(version.as_str()),
            None => era_of_headers(headers),
        };
        Ok(Self {
            id,
            era,
            initialize: false,
        })
    }
}

/// The era of a request that has only its headers to go by (a `GET`, a
/// `DELETE`, a notification): the `MCP-Protocol-Version` header, or the
/// handshake era without one.
pub fn era_of_headers(headers: &HeaderMap) -> Era {
    headers
        .get(PROTOCOL_VERSION_HEADER)
        .and_then(|value| value.to_str().ok())
        .map_or(Era::Handshake, era_of_version)
}

fn era_of_version(version: &str) -> Era {
    // Revisions are dates, so they order as text.
    if version < ProtocolVersion::NO_INITIALIZE.as_str() {
        Era::Handshake
    } else {
        Era::Stateless
    }
}

/// The `MCP-Protocol-Version` header, when it names a revision this gateway
/// does not serve (or is not text): the version to name in the error.
pub fn unsupported_version(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(PROTOCOL_VERSION_HEADER)?;
    match value.to_str() {
        Ok(version) if is_supported(version) => None,
        Ok(version) => Some(version.to_owned()),
        Err(_) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::http::HeaderValue;
    use rmcp::model::NumberOrString;
    use serde_json::json;

    use super::*;

    fn headers(version: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(version) = version {
            headers.insert(
                PROTOCOL_VERSION_HEADER,
                HeaderValue::from_str(version).unwrap(),
            );
        }
        headers
    }

    fn parse(body: serde_json::Value, version: Option<&str>) -> Result<Rpc, BodyError> {
        Rpc::parse(body.to_string().as_bytes(), &headers(version))
    }

    #[test]
    fn an_initialize_is_of_the_handshake_era_whatever_it_names() {
        let rpc = parse(
            json!({"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {
                "protocolVersion": "2026-07-28", "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}}),
            Some("2026-07-28"),
        )
        .unwrap();
        assert_eq!(rpc.era, Era::Handshake);
        assert!(rpc.initialize);
        assert_eq!(rpc.id, Some(NumberOrString::Number(7)));
    }

    #[test]
    fn the_era_follows_meta_then_header_then_the_old_default() {
        let call = |meta: serde_json::Value| json!({"jsonrpc": "2.0", "id": "a", "method": "tools/list", "params": {"_meta": meta}});
        let modern = call(json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }));
        assert_eq!(
            parse(modern, Some("2026-07-28")).unwrap().era,
            Era::Stateless
        );
        let version_only = call(json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"}));
        assert_eq!(parse(version_only, None).unwrap().era, Era::Stateless);
        let plain = call(json!({}));
        assert_eq!(
            parse(plain.clone(), Some("2025-06-18")).unwrap().era,
            Era::Handshake
        );
        assert_eq!(
            parse(plain.clone(), Some("2026-07-28")).unwrap().era,
            Era::Stateless
        );
        assert_eq!(parse(plain, None).unwrap().era, Era::Handshake);
        let rpc = parse(call(json!({})), None).unwrap();
        assert_eq!(rpc.id, Some(NumberOrString::String("a".into())));
        assert!(!rpc.initialize);
    }

    #[test]
    fn bodies_that_are_not_one_json_rpc_message_are_told_apart() {
        let headers = headers(None);
        assert_eq!(
            Rpc::parse(b"{not json", &headers).unwrap_err(),
            BodyError::NotJson
        );
        assert_eq!(Rpc::parse(b"", &headers).unwrap_err(), BodyError::NotJson);
        let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]).to_string();
        assert_eq!(
            Rpc::parse(batch.as_bytes(), &headers).unwrap_err(),
            BodyError::Batch
        );
        assert_eq!(
            Rpc::parse(br#"{"id": 3, "hello": true}"#, &headers).unwrap_err(),
            BodyError::NotJsonRpc(Some(NumberOrString::Number(3)))
        );
        assert_eq!(
            Rpc::parse(b"42", &headers).unwrap_err(),
            BodyError::NotJsonRpc(None)
        );
    }

    #[test]
    fn notifications_take_the_era_of_their_header() {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let rpc = parse(note.clone(), Some("2025-11-25")).unwrap();
        assert_eq!(
            (rpc.id, rpc.era, rpc.initialize),
            (None, Era::Handshake, false)
        );
        assert_eq!(parse(note, Some("2026-07-28")).unwrap().era, Era::Stateless);
    }

    #[test]
    fn only_the_served_revisions_are_supported() {
        for version in SUPPORTED_VERSIONS {
            assert_eq!(unsupported_version(&headers(Some(version.as_str()))), None);
        }
        assert_eq!(unsupported_version(&headers(None)), None);
        assert_eq!(
            unsupported_version(&headers(Some("1999-01-01"))).as_deref(),
            Some("1999-01-01")
        );
        assert_eq!(
            unsupported_version(&headers(Some("2024-11-05"))).as_deref(),
            Some("2024-11-05")
        );
    }
}
