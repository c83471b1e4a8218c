//! The device registry: `/v1/devices…` for a user's own devices, `/v1/users/{user_id}/devices…`
//! for admins. A device id is looked up only among the caller's (or the named user's) devices,
//! so another user's device id names nothing here: `404`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use sessiond_core::service::Actor;
use sessiond_wire::{DeviceList, RevokedCount, TrustRequest};

use super::ApiError;
use super::convert::device_view;
use super::extract::{AdminCaller, OptionalJsonBody, PathParams, Read, Revoke, UserCaller, Write};
use crate::state::AppState;

/// `GET /v1/devices`: the caller's devices, the current one marked.
pub(crate) async fn list_own(
    State(state): State<AppState>,
    caller: UserCaller,
) -> Result<Json<DeviceList>, ApiError> {
    let session = state.service.current_session(&caller.token).await?;
    let devices = state.service.list_devices(&caller.token.user_id).await?;
    Ok(Json(DeviceList {
        devices: devices
            .iter()
            .map(|record| device_view(record, Some(record.device.id == session.device.id)))
            .collect(),
    }))
}

/// `POST /v1/devices/{id}/trust`: the caller trusts (or, with `{"trusted": false}`, stops
/// trusting) one of their devices.
pub(crate) async fn trust_own(
    State(state): State<AppState>,
    caller: UserCaller,
    PathParams(id): PathParams<String>,
    OptionalJsonBody(request): OptionalJsonBody<TrustRequest>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .trust_device(
            Actor::User(&caller.token),
            &caller.token.user_id,
            &id,
            request.trusted,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/devices/{id}`: the caller forgets one of their devices, which revokes its
/// sessions (the caller's own included, if it is the device in hand).
pub(crate) async fn forget_own(
    State(state): State<AppState>,
    caller: UserCaller,
    PathParams(id): PathParams<String>,
) -> Result<Json<RevokedCount>, ApiError> {
    let revoked = state
        .service
        .forget_device(Actor::User(&caller.token), &caller.token.user_id, &id)
        .await?;
    Ok(Json(RevokedCount { revoked }))
}

/// `GET /v1/users/{user_id}/devices`.
pub(crate) async fn list_of_user(
    State(state): State<AppState>,
    _admin: AdminCaller<Read>,
    PathParams(user_id): PathParams<String>,
) -> Result<Json<DeviceList>, ApiError> {
    let devices = state.service.list_devices(&user_id).await?;
    Ok(Json(DeviceList {
        devices: devices
            .iter()
            .map(|record| device_view(record, None))
            .collect(),
    }))
}

/// `POST /v1/users/{user_id}/devices/{id}/trust`.
pub(crate) async fn trust_of_user(
    State(state): State<AppState>,
    _admin: AdminCaller<Write>,
    PathParams((user_id, id)): PathParams<(String, String)>,
    OptionalJsonBody(request): OptionalJsonBody<TrustRequest>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .trust_device(Actor::Admin, &user_id, &id, request.trusted)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/users/{user_id}/devices/{id}`.
pub(crate) async fn forget_of_user(
    State(state): State<AppState>,
    _admin: AdminCaller<Revoke>,
    PathParams((user_id, id)): PathParams<(String, String)>,
) -> Result<Json<RevokedCount>, ApiError> {
    let revoked = state
        .service
        .forget_device(Actor::Admin, &user_id, &id)
        .await?;
    Ok(Json(RevokedCount { revoked }))
}
