//! The `/v1/sessions`, `/v1/logout` and `/v1/users/{user_id}/sessions` routes.

use std::net::IpAddr;
use std::time::Instant;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sessiond_core::anomaly::RequestOrigin;
use sessiond_core::error::RefreshRejection;
use sessiond_core::permission::Scope;
use sessiond_core::service::{Actor, IssuedSession, NewSessionRequest};
use sessiond_core::token::decode_claims;
use sessiond_core::{Error, SessionId, UserId};
use sessiond_wire::{
    CreateSessionRequest, CurrentSession, RefreshRequest, RevokeAllRequest, RevokedCount,
    SessionList,
};

use super::ApiError;
use super::browser;
use super::convert::{session_view, token_pair};
use super::extract::{
    AdminCaller, Caller, JsonBody, OptionalJsonBody, PathParams, Read, Revoke, UserCaller, Write,
    failed_credential, require,
};
use super::limits::{self, ClientIp, Subject};
use crate::ratelimit::{Limit, ip_key, session_key, user_key};
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
        })
        .await?;
    let now = state.service.now();
    let mut response = (StatusCode::CREATED, Json(token_pair(&issued, now, false))).into_response();
    if state.cookie_mode {
        // A backend serving the same site may pass this on to the browser as it is.
        browser::set_cookie(&mut response, &browser::refresh_cookie_for(&issued, now));
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
    let JsonBody(request) = JsonBody::<RefreshRequest>::from_request(request, &state).await?;
    let issued = spend_refresh_token(&state, client, &origin, &request.refresh_token).await?;
    let now = state.service.now();
    Ok(Json(token_pair(&issued, now, true)).into_response())
}

/// Spends `presented` through the service, within the rate limits, and counts the outcome.
/// `origin` (the client address and user agent) is compared with the session's for anomalies.
///
/// The client address must not have spent its request allowance. A token that is not known
/// counts as a failed authentication of the address; once the address's failure allowance is
/// spent, such tokens are answered `429`, but a live token is never refused by that limit (its
/// lookup costs one hash and one read, bounded by the request allowance). The session's
/// allowance is looked at only if the token would rotate, before anything is written, so a
/// refused refresh leaves the presented token live; it is spent only by a rotation that
/// happened, so grace-window replays and the losers of a race between tabs never count.
pub(crate) async fn spend_refresh_token(
    state: &AppState,
    client: ClientIp,
    origin: &RequestOrigin,
    presented: &str,
) -> Result<IssuedSession, ApiError> {
    spend_refresh_token_scoped(state, client, origin, presented, None).await
}

/// [`spend_refresh_token`], the new access token narrowed to `scope` when one is asked for
/// (the OAuth token endpoint's `scope` parameter).
pub(crate) async fn spend_refresh_token_scoped(
    state: &AppState,
    client: ClientIp,
    origin: &RequestOrigin,
    presented: &str,
    scope: Option<&Scope>,
) -> Result<IssuedSession, ApiError> {
    let now = state.service.now();
    if let Some(key) = client.key()
        && let Err(refusal) = state.limits.acquire(Limit::PerIp, &key, now)
    {
        let subject = Subject {
            ip: client.0,
            ..Subject::default()
        };
        return Err(limits::refused(state, refusal, subject).await);
    }
    let started = Instant::now();
    let mut refused_for = None;
    // The session's allowance is only looked at before the rotation and spent once it has
    // won: concurrent requests with the same live token (tabs) all get past the look, but
    // one rotates and the others replay its pair, so the burst counts once.
    let result = state
        .service
        .refresh_scoped(presented, origin, scope, |session| {
            match state.limits.check_spent(
                Limit::RefreshPerSession,
                &session_key(*session.id.as_uuid()),
                now,
            ) {
                Ok(()) => true,
                Err(refusal) => {
                    refused_for = Some((refusal, session.id, session.user_id.clone()));
                    false
                }
            }
        })
        .await;
    let issued = match result {
        Ok(Some(issued)) => issued,
        Ok(None) => {
            let Some((refusal, session_id, user_id)) = refused_for else {
                return Err(Error::Corrupt("a refresh was refused without a reason".into()).into());
            };
            let subject = Subject {
                ip: client.0,
                user_id: Some(user_id),
                session_id: Some(session_id),
                admin_key: None,
            };
            return Err(limits::refused(state, refusal, subject).await);
        }
        Err(error) => {
            state.metrics.record_refresh(Err(&error), started.elapsed());
            if let Error::RefreshRejected(reason) = &error {
                state.refresh_failures.record(client.0, *reason, now);
            }
            if matches!(error, Error::RefreshRejected(RefreshRejection::Unknown)) {
                return Err(failed_credential(state, client.0, now, error.into()).await);
            }
            return Err(error.into());
        }
    };
    if !issued.replayed {
        // Counted now that the rotation won. A refusal here could only come from another
        // rotation of the same session at the same instant, which is counted as well.
        let _ = state.limits.acquire(
            Limit::RefreshPerSession,
            &session_key(*issued.session.id.as_uuid()),
            now,
        );
    }
    state.metrics.record_refresh(Ok(&issued), started.elapsed());
    Ok(issued)
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
        browser::set_cookie(&mut response, &browser::cleared_refresh_cookie());
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
