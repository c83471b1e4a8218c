//! The standard OAuth surface over the same sessions: `POST /oauth/token` (RFC 6749 §6, the
//! refresh grant), `POST /oauth/introspect` (RFC 7662), `POST /oauth/revoke` (RFC 7009) and
//! `GET /.well-known/oauth-authorization-server` (RFC 8414).
//!
//! These routes take `application/x-www-form-urlencoded` bodies and answer errors in the
//! RFCs' own format (`{"error": "invalid_grant", "error_description": …}`) rather than the
//! `/v1` one. Every rule stays in `SessionService`: the token endpoint spends tokens through
//! the same path as `POST /v1/sessions/refresh` (`refresh::spend`, over
//! `SessionService::begin_refresh` and `SessionService::rotate`), with the same rotation, grace
//! window, reuse detection and rate limits, and a `scope` parameter that narrows the new access
//! token.
//!
//! Introspection takes an admin key (`Authorization: Bearer`) or a resource server's client id
//! and secret (`SESSIOND_INTROSPECTION_CLIENTS`), sent as `client_secret_basic` or
//! `client_secret_post` (RFC 6749 §2.3.1). Those credentials authenticate nowhere else: the
//! admin routes know only admin keys, and the token and revocation endpoints need none.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Form, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sessiond_core::Error;
use sessiond_core::error::RefreshRejection;
use sessiond_core::permission::Scope;
use sessiond_core::store::StoreError;
use sessiond_core::token::decode_claims;
use sessiond_wire::{
    AuthorizationServerMetadata, IntrospectionResponse, OAuthErrorBody, OAuthTokenOnlyRequest,
    OAuthTokenRequest, OAuthTokenResponse,
};

use super::ApiError;
use super::convert::{TOKEN_PAIR_ANSWER_BYTES, json_answer};
use super::dpop::{ProofRefusal, ProofRoute};
use super::error::{ErrorCode, rate_limit_headers};
use super::limits::failed_credential;
use super::limits::{ClientIp, client_ip, request_origin};
use super::no_store;
use super::refresh;
use crate::admin_auth::{ADMIN_READ, ADMIN_REVOKE};
use crate::ratelimit::Refusal;
use crate::state::AppState;

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
    /// A live refresh token of a session bound to a browser key (DBSC), which refreshes only
    /// with its bound cookie: `invalid_grant`; nothing was spent.
    BoundGrant(&'static str),
    /// A `scope` beyond the session's permissions (RFC 6749 §5.2); nothing was spent.
    InvalidScope(String),
    /// A route that needs an admin key got none or a wrong one.
    InvalidClient(&'static str),
    /// Client credentials (`client_secret_basic` or `client_secret_post`) that are not a
    /// configured introspection client's; challenged with `Basic`.
    InvalidClientSecret(&'static str),
    /// Introspection without any credential: both schemes are challenged.
    ClientAuthenticationRequired,
    /// An admin key whose scope lacks the route's permission (RFC 6750 §3.1).
    InsufficientScope(&'static str),
    /// A rate limit refused the request (already counted and audited, see `http::limits`).
    RateLimited(Refusal),
    /// A DPoP proof was refused (already counted and audited, see `http::dpop`).
    Dpop(ProofRefusal),
    /// Storage or another internal failure.
    Domain(Error),
}

impl From<ApiError> for OAuthError {
    /// The OAuth form of a `/v1` failure, for the token endpoint, which shares the refresh
    /// path (and its limits) with `POST /v1/sessions/refresh`.
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Domain(error) => error.into(),
            ApiError::RateLimited(refusal) => Self::RateLimited(refusal),
            ApiError::Dpop(refusal) => Self::Dpop(refusal),
            ApiError::BadRequest(message) => Self::InvalidRequest(message),
            ApiError::PayloadTooLarge(limit) => {
                Self::InvalidRequest(format!("request body exceeds {limit} bytes"))
            }
            ApiError::Unauthenticated(message) => Self::InvalidClient(message),
            ApiError::Forbidden(message) => Self::InsufficientScope(message),
            ApiError::RequestTimeout(timeout) => Self::InvalidRequest(format!(
                "request body did not arrive within {} s",
                timeout.as_secs()
            )),
            ApiError::Dbsc { message, .. } => Self::BoundGrant(message),
            ApiError::WrongTokenScheme(message) => Self::InvalidClient(message),
            ApiError::NotFound | ApiError::MethodNotAllowed | ApiError::TooManyStreams(_) => {
                Self::InvalidRequest("no such operation".into())
            }
        }
    }
}

impl From<Error> for OAuthError {
    fn from(error: Error) -> Self {
        match error {
            Error::RefreshRejected(reason) => Self::InvalidGrant(reason),
            Error::ScopeBeyondSession(permission) => Self::InvalidScope(permission),
            Error::DpopRefused(refused) => Self::Dpop(ProofRefusal {
                error: refused.error,
                route: ProofRoute::Refresh,
            }),
            other => Self::Domain(other),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let challenges: &[&'static str] = match &self {
            Self::InvalidClientSecret(_) => &[BASIC_CHALLENGE],
            Self::ClientAuthenticationRequired => &[BEARER_CHALLENGE, BASIC_CHALLENGE],
            _ => &[BEARER_CHALLENGE],
        };
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
                    RefreshRejection::Anomaly => {
                        "refresh from a network or device unlike the session's; the session has been revoked"
                    }
                }
                .to_owned(),
            ),
            Self::BoundGrant(message) => {
                (StatusCode::BAD_REQUEST, "invalid_grant", message.to_owned())
            }
            Self::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=refresh_token is supported".to_owned(),
            ),
            Self::InvalidScope(permission) => (
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("scope {permission:?} is beyond the session's permissions"),
            ),
            Self::InvalidClient(message) | Self::InvalidClientSecret(message) => {
                (StatusCode::UNAUTHORIZED, "invalid_client", message.into())
            }
            Self::ClientAuthenticationRequired => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "an admin key (Bearer) or introspection client credentials \
                 (client_secret_basic or client_secret_post) are required"
                    .into(),
            ),
            Self::InsufficientScope(message) => {
                (StatusCode::FORBIDDEN, "insufficient_scope", message.into())
            }
            Self::Dpop(refusal) => {
                // RFC 9449 §5: the token endpoint answers these in RFC 6749's format.
                let mut response =
                    answer(refusal.status(), refusal.code(), refusal.error.to_string());
                refusal.set_headers(response.headers_mut());
                return response;
            }
            Self::RateLimited(refusal) => {
                // RFC 6749 §8.5 lets a server define error codes; this one is the `/v1` code.
                let mut response = answer(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    refusal.message(),
                );
                rate_limit_headers(response.headers_mut(), &refusal);
                return response;
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
            for challenge in challenges {
                response.headers_mut().append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
        }
        response
    }
}

/// The challenge of an admin key.
const BEARER_CHALLENGE: &str = r#"Bearer realm="sessiond""#;
/// The challenge of client credentials sent in the `Authorization` header (RFC 6749 §2.3.1).
const BASIC_CHALLENGE: &str = r#"Basic realm="sessiond", charset="UTF-8""#;

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
            Some(None) => Err(count_failure(
                state,
                client_ip(parts, state),
                OAuthError::InvalidClient("admin key not recognised"),
            )
            .await),
            // A public client authenticates by holding the token (RFC 7009 §5); a Basic
            // header from a stock client without a secret proves nothing more.
            None => Ok(Self::Holder),
        }
    }
}

/// An introspection request: its `token`, once its caller has proved to be an admin key whose
/// scope allows reads or a configured introspection client. It reads the body itself, since
/// `client_secret_post` credentials travel there.
pub(crate) struct Introspection {
    token: String,
}

impl FromRequest<AppState> for Introspection {
    type Rejection = OAuthError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, OAuthError> {
        let (parts, body) = request.into_parts();
        let ip = client_ip(&parts, state);
        match Self::authenticated(Request::from_parts(parts, body), state).await {
            Err(error) => Err(count_failure(state, ip, error).await),
            introspection => introspection,
        }
    }
}

/// Counts a credential that did not authenticate (an unknown admin key, client credentials
/// that are not an introspection client's) against its address's failed-authentication
/// allowance, as the `/v1` routes do (see [`failed_credential`]): once the allowance is spent,
/// the answer is `429` instead of `error`. Other errors are answered as they are.
async fn count_failure(state: &AppState, ip: Option<IpAddr>, error: OAuthError) -> OAuthError {
    if !matches!(
        error,
        OAuthError::InvalidClient(_) | OAuthError::InvalidClientSecret(_)
    ) {
        return error;
    }
    let refusal = ApiError::Unauthenticated("client authentication failed");
    match failed_credential(state, ip, state.service.now(), refusal).await {
        ApiError::RateLimited(limited) => OAuthError::RateLimited(limited),
        _ => error,
    }
}

impl Introspection {
    async fn authenticated(request: Request, state: &AppState) -> Result<Self, OAuthError> {
        // Credentials in the header are checked before the body is read, so that a wrong one
        // is `401` whatever the body holds; the client id of good Basic credentials is kept
        // to compare with one the body may repeat.
        let basic_client_id = match request.headers().get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(authenticate_header(value, state)?),
        };
        let OAuthForm(body) =
            OAuthForm::<OAuthTokenOnlyRequest>::from_request(request, state).await?;
        match basic_client_id {
            Some(_) if body.client_secret.is_some() => {
                // RFC 6749 §2.3: one authentication method per request.
                return Err(OAuthError::InvalidRequest(
                    "send client credentials in the Authorization header or in the body, not both"
                        .into(),
                ));
            }
            Some(Some(client_id))
                if body
                    .client_id
                    .as_deref()
                    .is_some_and(|named| named != client_id) =>
            {
                return Err(OAuthError::InvalidRequest(
                    "client_id differs from the Basic credentials".into(),
                ));
            }
            Some(_) => {}
            None => match (body.client_id.as_deref(), body.client_secret.as_deref()) {
                (Some(client_id), Some(secret)) => {
                    if !state.introspection_clients.authenticate(client_id, secret) {
                        return Err(OAuthError::InvalidClientSecret(
                            "client id or secret not recognised",
                        ));
                    }
                }
                (None, Some(_)) => {
                    return Err(OAuthError::InvalidRequest(
                        "client_secret needs client_id".into(),
                    ));
                }
                // A public client (a client id alone) may not introspect.
                (_, None) => return Err(OAuthError::ClientAuthenticationRequired),
            },
        }
        required_token(body).map(|token| Self { token })
    }
}

/// Checks an `Authorization` header of an introspection request: an admin key that may read
/// (`Bearer`) or an introspection client's credentials (`Basic`). Answers the client id the
/// Basic credentials named (decoded), or `None` for an admin key.
fn authenticate_header(
    value: &HeaderValue,
    state: &AppState,
) -> Result<Option<String>, OAuthError> {
    const MALFORMED: &str =
        "Authorization must be `Bearer <admin key>` or `Basic <client credentials>`";
    let (scheme, credential) = value
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .map(|(scheme, credential)| (scheme, credential.trim()))
        .ok_or(OAuthError::InvalidClient(MALFORMED))?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return match state.admin_keys.identify(credential) {
            Some(admin) if admin.scope.grants(ADMIN_READ) => Ok(None),
            Some(_) => Err(OAuthError::InsufficientScope(
                "this admin key's scope does not allow reads (admin:read)",
            )),
            None => Err(OAuthError::InvalidClient("admin key not recognised")),
        };
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::InvalidClient(MALFORMED));
    }
    let (client_id, secret) =
        basic_credentials(credential).ok_or(OAuthError::InvalidClientSecret(
            "Basic credentials must be base64 of CLIENT_ID:SECRET, each form-urlencoded",
        ))?;
    // Clients should form-urlencode both parts; one that does not (`curl -u`, Authlib)
    // sends a secret with `+` or `%` as it is, so that form is tried too. Both are always
    // compared, so the time taken does not tell which matched.
    let clients = &state.introspection_clients;
    let decoded = clients.authenticate(&client_id.decoded, &secret.decoded);
    let literal = clients.authenticate(&client_id.literal, &secret.literal);
    match (decoded, literal) {
        (true, _) => Ok(Some(client_id.decoded)),
        (false, true) => Ok(Some(client_id.literal)),
        (false, false) => Err(OAuthError::InvalidClientSecret(
            "client id or secret not recognised",
        )),
    }
}

/// One part of `client_secret_basic` credentials: form-urldecoded as RFC 6749 §2.3.1 says,
/// and as it was sent.
struct CredentialPart {
    decoded: String,
    literal: String,
}

/// The client id and secret of `Basic` credentials; `None` when they are not base64 of UTF-8
/// text with a `:`.
fn basic_credentials(encoded: &str) -> Option<(CredentialPart, CredentialPart)> {
    let text = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (client_id, secret) = text.split_once(':')?;
    let part = |literal: &str| -> Option<CredentialPart> {
        let decoded = percent_encoding::percent_decode_str(&literal.replace('+', " "))
            .decode_utf8()
            .ok()?
            .into_owned();
        Some(CredentialPart {
            decoded,
            literal: literal.to_owned(),
        })
    };
    Some((part(client_id)?, part(secret)?))
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

/// The path of the token endpoint, which its DPoP proofs name.
const TOKEN_PATH: &str = "/oauth/token";

/// `POST /oauth/token`: `grant_type=refresh_token&refresh_token=…` spends the token for a new
/// pair, exactly as `POST /v1/sessions/refresh` does, within the same rate limits (per
/// address, per session, failed authentications), refused as `429 rate_limited` with
/// `Retry-After`.
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
    let scope = request
        .scope
        .map(|scope| Scope::parse(&scope))
        .transpose()
        .map_err(|error| OAuthError::InvalidRequest(error.to_string()))?;
    let origin = request_origin(client, &headers);
    let proof = refresh::RefreshProof::of(&headers, TOKEN_PATH);
    let issued = refresh::spend(
        &state,
        client,
        &origin,
        &refresh_token,
        scope.as_ref(),
        proof,
    )
    .await?;
    Ok(no_store(json_answer(
        &OAuthTokenResponse {
            access_token: issued.pair.access_token.clone(),
            token_type: super::convert::token_type(&issued.session).into(),
            expires_in: super::convert::expires_in(issued.pair.access_expires_at_ms, issued.at),
            refresh_token: issued.pair.refresh_token.clone(),
            // What the token carries, which a grace-window replay may not have asked for.
            scope: decode_claims(&issued.pair.access_token).ok().and_then(
                |mut claims| match claims.remove("scope") {
                    Some(Value::String(scope)) => Some(scope),
                    _ => None,
                },
            ),
        },
        TOKEN_PAIR_ANSWER_BYTES,
    )))
}

/// `POST /oauth/introspect` (an admin key, or an introspection client): `{"active": false}`
/// for anything that is not a live token (malformed, unknown, expired, spent, revoked), else
/// its claims. The hint is not needed: refresh tokens (`sdr_…`) and access tokens (JWTs)
/// cannot be mistaken for each other.
pub(crate) async fn introspect(
    State(state): State<AppState>,
    Introspection { token }: Introspection,
) -> Result<Response, OAuthError> {
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
                // Validation accepts only claims that decode (see `MAX_CLAIMS_DEPTH`); a token
                // whose claims did not would not be one to vouch for, so it stays inactive.
                if let Ok(decoded) = decode_claims(&token) {
                    claims = decoded;
                    // Tokens signed before they carried `scope` still have one here.
                    if !claims.contains_key("scope")
                        && let Some(scope) = sessiond_core::permission::scope_claim(&claims)
                    {
                        claims.insert("scope".into(), scope.into());
                    }
                    // RFC 9449 §6.2: a token bound to a key (`cnf.jkt`) is a DPoP token.
                    let token_type = if claims.contains_key("cnf") {
                        "DPoP"
                    } else {
                        "Bearer"
                    };
                    claims.insert("token_type".into(), token_type.into());
                }
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
    let scopes: Vec<&str> = state.service.roles().all_permissions();
    Json(AuthorizationServerMetadata {
        token_endpoint: format!("{base}/oauth/token"),
        introspection_endpoint: format!("{base}/oauth/introspect"),
        revocation_endpoint: format!("{base}/oauth/revoke"),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        issuer,
        grant_types_supported: strings(&["refresh_token"]),
        response_types_supported: Vec::new(),
        token_endpoint_auth_methods_supported: strings(&["none"]),
        // RFC 8414 §2 lets these two name access token types too: `Bearer` is an admin key.
        revocation_endpoint_auth_methods_supported: strings(&["none", "Bearer"]),
        introspection_endpoint_auth_methods_supported: strings(&[
            "client_secret_basic",
            "client_secret_post",
            "Bearer",
        ]),
        scopes_supported: strings(&scopes),
    })
}
