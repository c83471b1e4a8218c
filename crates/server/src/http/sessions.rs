//! The `/v1/sessions`, `/v1/logout` and `/v1/users/{user_id}/sessions` routes.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sessiond_core::service::{Actor, NewSessionRequest};
use sessiond_core::token::decode_claims;
use sessiond_core::{Error, SessionId, UserId};
use sessiond_wire::{
    CreateSessionRequest, CurrentSession, RefreshRequest, RevokeAllRequest, RevokedCount,
    SessionList,
};

use super::ApiError;
use super::browser;
use super::convert::{session_view, token_pair_answer};
use super::cookies::{self, REFRESH_PATH};
use super::dbsc;
use super::extract::{
    AdminCaller, Caller, JsonBody, OptionalJsonBody, PathParams, Read, Revoke, UserCaller, Write,
    require,
};
use super::limits::{self, ClientIp, Subject};
use super::refresh;
use crate::ratelimit::{Limit, ip_key, user_key};
use crate::state::AppState;

/// `POST /v1/sessions`: the application backend creates a session for an authenticated user.
///
/// Besides the admin key's own limit, creations are limited per user and per end-user
/// address. That address is the `device.ip` the backend reports, not the connection's: every
/// creation comes from the backend, whose own address says nothing about who is logging in.
pub(crate) async fn create(
    State(state): State<AppState>,
    _admin: AdminCaller<Write>,
    JsonBody(request): JsonBody<CreateSessionRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let device = request.device.unwrap_or_default();
    let now = state.service.now();
    let end_user_ip = device
        .ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let admitted = state
        .limits
        .acquire(Limit::CreatePerUser, &user_key(&request.user_id), now)
        .and_then(|()| {
            end_user_ip.map_or(Ok(()), |ip| {
                state.limits.acquire(Limit::PerIp, &ip_key(ip), now)
            })
        });
    if let Err(refusal) = admitted {
        let subject = Subject {
            ip: end_user_ip,
            user_id: UserId::parse(request.user_id, "user_id").ok(),
            ..Subject::default()
        };
        return Err(limits::refused(&state, refusal, subject).await);
    }
    let issued = state
        .service
        .create_session(NewSessionRequest {
            user_id: request.user_id,
            tenant_id: request.tenant_id,
            device_id: device.id,
            device_name: device.name,
            user_agent: device.user_agent,
            ip: device.ip,
            claims: request.claims.unwrap_or_default(),
            metadata: request.metadata.unwrap_or_default(),
            dpop_jkt: request.dpop_jkt,
        })
        .await?;
    let now = state.service.now();
    let mut response = token_pair_answer(&issued, false);
    *response.status_mut() = StatusCode::CREATED;
    if state.cookie_mode {
        // A backend serving the same site may pass this on to the browser as it is.
        cookies::set_cookie(&mut response, &browser::refresh_cookie_for(&issued, now));
        dbsc::offer_registration(&state, &mut response, issued.session.id);
    }
    Ok(response)
}

/// `POST /v1/sessions/refresh`: spends a refresh token for a new pair (in cookie mode, see
/// [`browser::refresh`]).
pub(crate) async fn refresh(
    State(state): State<AppState>,
    client: ClientIp,
    request: Request,
) -> Result<Response, ApiError> {
    if state.cookie_mode {
        return browser::refresh(state, client, request).await;
    }
    let origin = limits::request_origin(client, request.headers());
    // The one header the body's extraction would take with it.
    let dpop = refresh::ProofHeader::of(request.headers());
    let JsonBody(request) = JsonBody::<RefreshRequest>::from_request(request, &state).await?;
    let proof = dpop.proof(REFRESH_PATH);
    let issued =
        refresh::spend(&state, client, &origin, &request.refresh_token, None, proof).await?;
    Ok(token_pair_answer(&issued, true))
}

/// `GET /v1/sessions`: the caller's active sessions, the current one marked.
pub(crate) async fn list_own(
    State(state): State<AppState>,
    caller: UserCaller,
) -> Result<Json<SessionList>, ApiError> {
    let sessions = state.service.list_sessions(&caller.token.user_id).await?;
    Ok(Json(SessionList {
        sessions: sessions
            .iter()
            .map(|session| session_view(session, Some(caller.token.session_id)))
            .collect(),
    }))
}

/// `GET /v1/sessions/current`: the caller's own session and the claims of its token.
pub(crate) async fn current(
    State(state): State<AppState>,
    caller: UserCaller,
) -> Result<Json<CurrentSession>, ApiError> {
    let session = state.service.current_session(&caller.token).await?;
    let claims = decode_claims(&caller.raw).map_err(Error::from)?;
    Ok(Json(CurrentSession {
        session: session_view(&session, Some(caller.token.session_id)),
        claims,
    }))
}

/// `DELETE /v1/sessions/{id}`: a user revokes one of their sessions, or an admin any.
pub(crate) async fn revoke_one(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    // An id that is not a UUID names no session.
    let id = SessionId::parse(&id, "id").map_err(|_| ApiError::NotFound)?;
    let actor = match &caller {
        Caller::Admin(scope) => {
            require::<Revoke>(*scope)?;
            Actor::Admin
        }
        Caller::User(token) => Actor::User(token),
    };
    state.service.revoke_session(actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/sessions/revoke-all`: a user signs out everywhere, optionally but here.
pub(crate) async fn revoke_all_own(
    State(state): State<AppState>,
    caller: UserCaller,
    OptionalJsonBody(request): OptionalJsonBody<RevokeAllRequest>,
) -> Result<Json<RevokedCount>, ApiError> {
    let except = request.except_current.then_some(caller.token.session_id);
    let revoked = state
        .service
        .revoke_all(Actor::User(&caller.token), &caller.token.user_id, except)
        .await?;
    Ok(Json(RevokedCount { revoked }))
}

/// `POST /v1/logout`: revokes the caller's own session (and, in cookie mode, deletes the
/// refresh cookie).
pub(crate) async fn logout(
    State(state): State<AppState>,
    caller: UserCaller,
) -> Result<Response, ApiError> {
    state
        .service
        .revoke_session(Actor::User(&caller.token), caller.token.session_id)
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if state.cookie_mode {
        cookies::set_cookie(&mut response, &browser::cleared_refresh_cookie());
    }
    if state.dbsc.is_some() {
        cookies::set_cookie(&mut response, &dbsc::cleared_credential_cookie());
    }
    Ok(response)
}

/// `GET /v1/users/{user_id}/sessions`: an admin lists a user's active sessions.
pub(crate) async fn list_of_user(
    State(state): State<AppState>,
    _admin: AdminCaller<Read>,
    PathParams(user_id): PathParams<String>,
) -> Result<Json<SessionList>, ApiError> {
    let sessions = state.service.list_sessions(&user_id).await?;
    Ok(Json(SessionList {
        sessions: sessions
            .iter()
            .map(|session| session_view(session, None))
            .collect(),
    }))
}

/// `POST /v1/users/{user_id}/sessions/revoke-all`: an admin signs a user out everywhere.
pub(crate) async fn revoke_all_of_user(
    State(state): State<AppState>,
    _admin: AdminCaller<Revoke>,
    PathParams(user_id): PathParams<String>,
) -> Result<Json<RevokedCount>, ApiError> {
    let revoked = state
        .service
        .revoke_all(Actor::Admin, &user_id, None)
        .await?;
    Ok(Json(RevokedCount { revoked }))
}
