//! `GET /health`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use session_factory::RedisStorage;

use crate::Gateway;

/// `{"status":"ok","replica":..,"storage":"local","sessions":N}` on local
/// storage; on Redis a `PING` (no key scan: counting sessions there is
/// O(keyspace)) and no `sessions` field. 503 with `"status":"unavailable"`
/// and the error when the store does not answer.
pub(crate) async fn health(State(gateway): State<Gateway>) -> Response {
    let manager = gateway.manager();
    let (storage, result) = if let Some(redis) = manager.storage::<RedisStorage>() {
        // The command timeout of the Redis configuration bounds the ping.
        ("redis", redis.ping().await.map(|()| None))
    } else {
        let kind = if manager.is_local() {
            "local"
        } else {
            "custom"
        };
        (kind, manager.count().await.map(Some))
    };
    match result {
        Ok(sessions) => {
            let mut body = json!({
                "status": "ok",
                "replica": gateway.replica(),
                "storage": storage,
            });
            if let Some(sessions) = sessions {
                body["sessions"] = json!(sessions);
            }
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "replica": gateway.replica(),
                "storage": storage,
                "error": error.to_string(),
            })),
        )
            .into_response(),
    }
}
