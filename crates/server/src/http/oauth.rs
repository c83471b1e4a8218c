//! The standard OAuth surface over the same sessions: `POST /oauth/token` (RFC 6749 §6, the
//! refresh grant), `POST /oauth/introspect` (RFC 7662), `POST /oauth/revoke` (RFC 7009) and
//! `GET /.well-known/oauth-authorization-server` (RFC 8414).
//!
//! These routes take `application/x-www-form-urlencoded` bodies and answer errors in the
//! RFCs' own format (`{"error": "invalid_grant", "error_description": …}`) rather than the
//! `/v1` one. Every rule stays in `SessionService`: the token endpoint is
//! `SessionService::refresh`, with the same rotation, grace window and reuse detection as
//! `POST /v1/sessions/refresh`.

use std::time::Instant;

use axum::Json;
use axum::extract::{Form, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sessiond_core::Error;
use sessiond_core::error::RefreshRejection;
use sessiond_core::store::StoreError;
use sessiond_core::token::decode_claims;
use sessiond_wire::{
    AuthorizationServerMetadata, IntrospectionResponse, OAuthErrorBody, OAuthTokenOnlyRequest,
    OAuthTokenRequest, OAuthTokenResponse,
};

use super::error::ErrorCode;
use super::limits::{ClientIp, request_origin};
use crate::state::{ADMIN_READ, ADMIN_REVOKE, AppState};

/// Seconds a client should wait before retrying when storage is unavailable.
const UNAVAILABLE_RETRY_AFTER: u64 = 1;

/// A failed `/oauth/*` request, answered as RFC 6749 §5.2 says.
#[derive(Debug)]
pub(crate) enum OAuthError {
    /// A required parameter is missing or repeated, or the body is not a form.
    InvalidRequest(String),
    /// The refresh token is not live.
    InvalidGrant(RefreshRejection),
    /// A grant other than `refresh_token`.
    UnsupportedGrantType,
    /// A route that needs an admin key got none or a wrong one.
    InvalidClient(&'static str),
    /// An admin key whose scope lacks the route's permission (RFC 6750 §3.1).
    InsufficientScope(&'static str),
    /// Storage or another internal failure.
    Domain(Error),
}

impl From<Error> for OAuthError {
    fn from(error: Error) -> Self {
        match error {
            Error::RefreshRejected(reason) => Self::InvalidGrant(reason),
            other => Self::Domain(other),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let (status, code, description) = match self {
            Self::InvalidRequest(message) => (StatusCode::BAD_REQUEST, "invalid_request", message),
            Self::InvalidGrant(reason) => (
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                // The same words for every reason a client could not have avoided, so an
                // attacker probing tokens learns only what `/v1` tells it too.
                match reason {
                    RefreshRejection::Unknown => "refresh token is not known",
                    RefreshRejection::Expired => "session has expired",
                    RefreshRejection::Revoked => "session has been revoked",
                    RefreshRejection::ReuseDetected => {
                        "refresh token was already used; the session has been revoked"
                    }
                }
                .to_owned(),
            ),
            Self::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=refresh_token is supported".to_owned(),
            ),
            Self::InvalidClient(message) => {
                (StatusCode::UNAUTHORIZED, "invalid_client", message.into())
            }
            Self::InsufficientScope(message) => {
                (StatusCode::FORBIDDEN, "insufficient_scope", message.into())
            }
            Self::Domain(Error::Store(StoreError::Unavailable(source))) => {
                tracing::warn!(error = %source, "storage unavailable");
                let mut response = answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "storage is unavailable; retry later".into(),
                );
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_AFTER),
                );
                return response;
            }
            Self::Domain(error) => {
                tracing::error!(error = %error, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error; see the server log".to_owned(),
                )
            }
        };
        let mut response = answer(status, code, description);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="sessiond""#),
            );
        }
        response
    }
}

fn answer(status: StatusCode, code: &'static str, description: String) -> Response {
    let mut response = no_store(
        (
            status,
            Json(OAuthErrorBody {
                error: code.to_owned(),
                error_description: Some(description),
            }),
        )
            .into_response(),
    );
    response.extensions_mut().insert(ErrorCode(code));
    response
}

/// `response` marked uncacheable, as RFC 6749 §5.1 requires of anything carrying tokens.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// An `application/x-www-form-urlencoded` body; anything else is `invalid_request`.
pub(crate) struct OAuthForm<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for OAuthForm<T> {
    type Rejection = OAuthError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, OAuthError> {
        Form::<T>::from_request(request, state)
            .await
            .map(|Form(value)| Self(value))
            .map_err(|rejection| OAuthError::InvalidRequest(rejection.body_text()))
    }
}

/// Who calls `/oauth/revoke`: an admin key, or (no bearer credential) the token's holder.
pub(crate) enum RevokeCaller {
    Admin,
    Holder,
}

impl FromRequestParts<AppState> for RevokeCaller {
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OAuthError> {
        match bearer_credential(parts).map(|key| state.admin_keys.identify(key)) {
            Some(Some(key)) if key.scope.grants(ADMIN_REVOKE) => Ok(Self::Admin),
            Some(Some(_)) => Err(OAuthError::InsufficientScope(
                "this admin key's scope does not allow revocations (admin:revoke)",
            )),
            Some(None) => Err(OAuthError::InvalidClient("admin key not recognised")),
            // A public client authenticates by holding the token (RFC 7009 §5); a Basic
            // header from a stock client without a secret proves nothing more.
            None => Ok(Self::Holder),
        }
    }
}

/// An admin key whose scope allows reads, for introspection; refused as `invalid_client`.
pub(crate) struct OAuthAdmin;

impl FromRequestParts<AppState> for OAuthAdmin {
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OAuthError> {
        match bearer_credential(parts).and_then(|key| state.admin_keys.identify(key)) {
            Some(key) if key.scope.grants(ADMIN_READ) => Ok(Self),
            Some(_) => Err(OAuthError::InsufficientScope(
                "this admin key's scope does not allow reads (admin:read)",
            )),
            None => Err(OAuthError::InvalidClient("admin key required")),
        }
    }
}

/// The credential of an `Authorization: Bearer …` header, if there is one.
fn bearer_credential(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
}

/// The `token` parameter, required by RFC 7662 §2.1 and RFC 7009 §2.1.
fn required_token(request: OAuthTokenOnlyRequest) -> Result<String, OAuthError> {
    request
        .token
        .filter(|token| !token.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest("missing token".into()))
}

/// `POST /oauth/token`: `grant_type=refresh_token&refresh_token=…` spends the token for a new
/// pair, exactly as `POST /v1/sessions/refresh` does.
pub(crate) async fn token(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
    OAuthForm(request): OAuthForm<OAuthTokenRequest>,
) -> Result<Response, OAuthError> {
    let grant_type = request
        .grant_type
        .filter(|grant| !grant.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest("missing grant_type".into()))?;
    if grant_type != "refresh_token" {
        return Err(OAuthError::UnsupportedGrantType);
    }
    let refresh_token = request
        .refresh_token
        .filter(|token| !token.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest("missing refresh_token".into()))?;
    let started = Instant::now();
    let origin = request_origin(client, &headers);
    let result = state.service.refresh(&refresh_token, &origin).await;
    state
        .metrics
        .record_refresh(result.as_ref(), started.elapsed());
    let issued = result?;
    let now = state.service.now();
    let access_expires_at = issued.pair.access_expires_at_ms / 1000;
    Ok(no_store(
        Json(OAuthTokenResponse {
            access_token: issued.pair.access_token.clone(),
            token_type: "Bearer".into(),
            // Whole seconds, as in `/v1`: a fresh token's `expires_in` equals `exp - iat`.
            expires_in: (access_expires_at - now.unix_seconds()).max(0),
            refresh_token: issued.pair.refresh_token.clone(),
        })
        .into_response(),
    ))
}

/// `POST /oauth/introspect` (admin): `{"active": false}` for anything that is not a live token
/// (malformed, unknown, expired, spent, revoked), else its claims. The hint is not needed:
/// refresh tokens (`sdr_…`) and access tokens (JWTs) cannot be mistaken for each other.
pub(crate) async fn introspect(
    State(state): State<AppState>,
    _admin: OAuthAdmin,
    OAuthForm(request): OAuthForm<OAuthTokenOnlyRequest>,
) -> Result<Response, OAuthError> {
    let token = required_token(request)?;
    let service = &state.service;
    let mut claims = Map::new();
    if token.starts_with("sdr_") {
        if let Some((record, session)) = service.inspect_refresh_token(&token).await? {
            let settings = service.token_settings();
            claims.insert("token_type".into(), "refresh_token".into());
            claims.insert("sub".into(), session.user_id.as_str().into());
            claims.insert("sid".into(), session.id.to_string().into());
            claims.insert(
                "exp".into(),
                session.refresh_expires_at().unix_seconds().into(),
            );
            claims.insert("iat".into(), record.issued_at.unix_seconds().into());
            claims.insert("iss".into(), settings.issuer.clone().into());
            claims.insert("client_id".into(), settings.client_id.clone().into());
            if let Some(tenant) = &session.tenant_id {
                claims.insert("tenant_id".into(), tenant.as_str().into());
            }
        }
    } else {
        match service.inspect_access_token(&token).await {
            Ok(_) => {
                // The token has just been validated, so its payload decodes.
                claims = decode_claims(&token).map_err(Error::from)?;
                if let Some(permissions) = claims.get("permissions").and_then(Value::as_array) {
                    let scope: Vec<&str> = permissions.iter().filter_map(Value::as_str).collect();
                    claims.insert("scope".into(), scope.join(" ").into());
                }
                claims.insert("token_type".into(), "Bearer".into());
            }
            Err(Error::Unauthenticated(_)) => {}
            Err(other) => return Err(other.into()),
        }
    }
    let active = !claims.is_empty();
    claims.remove("active");
    Ok(no_store(
        Json(IntrospectionResponse { active, claims }).into_response(),
    ))
}

/// `POST /oauth/revoke` (admin, or the token's holder): ends the session of a refresh token or
/// an access token. Unknown, malformed or expired tokens also answer 200, as RFC 7009 §2.2
/// asks, so the answer tells a caller nothing about tokens it does not hold.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: RevokeCaller,
    OAuthForm(request): OAuthForm<OAuthTokenOnlyRequest>,
) -> Result<Response, OAuthError> {
    let token = required_token(request)?;
    let by_admin = matches!(caller, RevokeCaller::Admin);
    let revoked = state.service.revoke_by_token(&token, by_admin).await?;
    tracing::info!(revoked, by_admin, "token revocation");
    Ok(no_store(StatusCode::OK.into_response()))
}

/// `GET /.well-known/oauth-authorization-server`: where the endpoints are (RFC 8414). The
/// endpoints are the issuer followed by their paths, so the issuer must be the URL sessiond
/// is reached at.
pub(crate) async fn metadata(State(state): State<AppState>) -> Json<AuthorizationServerMetadata> {
    let issuer = state.service.token_settings().issuer.clone();
    let base = issuer.trim_end_matches('/').to_owned();
    let strings = |values: &[&str]| values.iter().map(|value| (*value).to_owned()).collect();
    Json(AuthorizationServerMetadata {
        token_endpoint: format!("{base}/oauth/token"),
        introspection_endpoint: format!("{base}/oauth/introspect"),
        revocation_endpoint: format!("{base}/oauth/revoke"),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        issuer,
        grant_types_supported: strings(&["refresh_token"]),
        response_types_supported: Vec::new(),
        token_endpoint_auth_methods_supported: strings(&["none"]),
        revocation_endpoint_auth_methods_supported: strings(&["none"]),
    })
}
