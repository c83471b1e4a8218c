//! `GET /v1/keys`: the signing keys and their rotation state, for admins.

use axum::Json;
use axum::extract::State;
use serde_json::Value;

use super::ApiError;
use super::extract::{AdminCaller, Read};
use crate::cli::key_list_json;
use crate::state::AppState;

/// `GET /v1/keys`: every key, as `sessiond keys list --json` prints them (`state` is `next`,
/// `signing`, `verifying` or `retired`; a retired key is listed until its row is purged).
/// Public material only; no private key ever leaves the store.
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: AdminCaller<Read>,
) -> Result<Json<Value>, ApiError> {
    let keys = state.service.signing_keys();
    Ok(Json(key_list_json(&keys.keys(), state.service.now())))
}
