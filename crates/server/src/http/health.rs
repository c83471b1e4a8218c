//! Public, unauthenticated routes: the JWK Set and the health probes.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sessiond_core::token::jwks_json;

use crate::state::AppState;

/// How long verifiers may cache the JWK Set. Short enough that a rotated-in key is seen well
/// before it signs anything verifiers must accept.
const JWKS_MAX_AGE_SECONDS: u32 = 300;

/// `GET /.well-known/jwks.json`.
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(jwks_json(state.service.keyring())).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={JWKS_MAX_AGE_SECONDS}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: storage answers and keys are loaded.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    match state.service.store().ping().await {
        Ok(()) => {
            Json(json!({ "status": "ready", "signing_kid": state.service.keyring().signing_kid() }))
                .into_response()
        }
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "error": "unavailable", "message": "storage does not answer" })),
            )
                .into_response()
        }
    }
}
