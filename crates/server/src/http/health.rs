//! Public, unauthenticated routes: the JWK Set and the health probes.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// `GET /.well-known/jwks.json`: every stored asymmetric key, a rotation's key from the moment
/// it is made. Verifiers may cache it for half the publication delay (at most 5 minutes), so a
/// verifier honouring `max-age` has refetched it before the new key signs. A key retired early,
/// by hand, is still trusted by caches for at most this long.
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    let keys = state.service.signing_keys();
    let max_age = keys.jwks_max_age().as_secs();
    let mut response = Json(keys.jwks()).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: storage answers, can write, and keys are loaded. Not ready, the body's
/// `reason` says why: `unreachable` (storage does not answer), or what keeps a store that
/// answers from writing: `disk_full`, `read_only`, `io_error`.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    match state.service.store().ping().await {
        Ok(()) => {
            let signing_kid = state
                .service
                .signing_keys()
                .signing_kid(state.service.now());
            Json(json!({ "status": "ready", "signing_kid": signing_kid })).into_response()
        }
        Err(error) => {
            let (reason, message) = match error.cannot_write() {
                Some(cannot) => {
                    tracing::warn!(reason = cannot.reason.as_str(), error = %cannot.detail, "readiness check failed: storage cannot write");
                    (cannot.reason.as_str(), "storage cannot write")
                }
                None => {
                    tracing::warn!(error = %error, "readiness check failed");
                    ("unreachable", "storage does not answer")
                }
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "error": "unavailable",
                    "reason": reason,
                    "message": message,
                })),
            )
                .into_response()
        }
    }
}
