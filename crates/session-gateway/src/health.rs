//! `GET /health`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Gateway;

/// `{"status":"ok","replica":..,"storage":"local","topology":"in-process",
/// "foreign_requests":N,"sessions":N}`: the storage's description, the
/// requests that named another principal's session or handle
/// ([`Gateway::foreign_requests`]), and the session count where
/// counting is cheap (local storage; on Redis it would scan the key space, so
/// Redis gets a `PING` instead and no `sessions` field). 503 with
/// `"status":"unavailable"` and the error when the store does not answer.
pub(crate) async fn health(State(gateway): State<Gateway>) -> Response {
    let manager = gateway.manager();
    let description = manager.describe();
    let result = if description.count_is_cheap {
        manager.count().await.map(Some)
    } else {
        manager.ping().await.map(|()| None)
    };
    let mut body = json!({
        "replica": gateway.replica(),
        "storage": description.backend,
        "topology": description.topology.as_str(),
        "foreign_requests": gateway.foreign_requests(),
    });
    match result {
        Ok(sessions) => {
            body["status"] = json!("ok");
            if let Some(sessions) = sessions {
                body["sessions"] = json!(sessions);
            }
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(error) => {
            body["status"] = json!("unavailable");
            body["error"] = json!(error.to_string());
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}
