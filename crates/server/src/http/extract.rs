//! Extractors that turn a request into trusted values or an [`ApiError`]: JSON bodies, path
//! parameters and the two kinds of callers (admin key or access token). An access token comes
//! as `Bearer`, or as `DPoP` with a proof when it is bound to a key (see `http::dpop`).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use std::marker::PhantomData;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use sessiond_core::token::{TokenError, ValidatedToken};
use sessiond_core::{Error, Timestamp};

use super::ApiError;
use super::dpop::{self, TokenScheme};
use super::limits::{self, Subject, failed_credential};
use crate::admin_auth::{
    ADMIN_READ, ADMIN_REVOKE, ADMIN_WRITE, AdminIdentity, AdminKeyId, AdminScope,
};
use crate::ratelimit::{Limit, LimitKey};
use crate::state::AppState;

/// A JSON body, refused with `400 invalid_request` when malformed, when it is not a JSON object
/// (nor is any struct inside it: see [`super::strict_json`]), and `413` when too large.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection {
                    BytesRejection::FailedToBufferBody(_) => {
                        ApiError::PayloadTooLarge(state.body_limit)
                    }
                    other => ApiError::BadRequest(other.body_text()),
                })?;
        if !is_json {
            return Err(ApiError::BadRequest(
                "content-type must be application/json".into(),
            ));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty body means the type's default.
pub(crate) struct OptionalJsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let empty = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() == b"0")
            || (request.headers().get(header::CONTENT_LENGTH).is_none()
                && request.headers().get(header::TRANSFER_ENCODING).is_none());
        if empty {
            return Ok(Self(T::default()));
        }
        JsonBody::from_request(request, state)
            .await
            .map(|JsonBody(value)| Self(value))
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    super::strict_json::from_slice(bytes).map_err(|error| {
        // serde's message names the field ("missing field `user_id`", "unknown field `x`");
        // the position suffix is noise for an API client.
        let message = error.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ApiError::BadRequest(format!("invalid JSON body: {message}"))
    })
}

/// The path parameters of a route, refused with `400 invalid_request` (instead of axum's plain
/// text answer) when one is not valid UTF-8 once percent-decoded, e.g. `/v1/sessions/%FF`.
pub(crate) struct PathParams<T>(pub(crate) T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|rejection| match rejection {
                PathRejection::FailedToDeserializePathParams(error) => {
                    ApiError::BadRequest(format!("invalid path: {}", error.body_text()))
                }
                // Only a route without parameters could miss them: a bug, not bad input.
                other => ApiError::from(Error::Corrupt(other.body_text())),
            })
    }
}

/// The credential of the `Authorization` header and its scheme, `Bearer` or `DPoP`.
fn credential(parts: &Parts) -> Result<(TokenScheme, &str), ApiError> {
    const SHAPE: &str = "Authorization must be `Bearer <token>` or `DPoP <token>`";
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthenticated("missing Authorization header"))?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("malformed Authorization header"))?;
    let (scheme, credential) = value
        .split_once(' ')
        .ok_or(ApiError::Unauthenticated(SHAPE))?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        TokenScheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        TokenScheme::Dpop
    } else {
        return Err(ApiError::Unauthenticated(SHAPE));
    };
    if credential.trim().is_empty() {
        return Err(ApiError::Unauthenticated(SHAPE));
    }
    Ok((scheme, credential.trim()))
}

/// The credential of an `Authorization: Bearer` header: admin keys take no other scheme.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    match credential(parts)? {
        (TokenScheme::Bearer, credential) => Ok(credential),
        (TokenScheme::Dpop, _) => Err(ApiError::Unauthenticated(
            "Authorization must be `Bearer <admin key>`",
        )),
    }
}

/// Validates an access token presented with `scheme`, and checks its DPoP binding.
async fn user_token(
    parts: &Parts,
    state: &AppState,
    scheme: TokenScheme,
    raw: &str,
) -> Result<ValidatedToken, ApiError> {
    let (ip, now) = origin(parts, state);
    let token = match state.service.authenticate(raw) {
        Ok(token) => token,
        Err(error) => return Err(refused_token(state, ip, now, error).await),
    };
    dpop::check_token_use(state, parts, ip, &token, raw, scheme).await?;
    Ok(token)
}

/// The request's client address and the time, for the failed-authentication limit.
fn origin(parts: &Parts, state: &AppState) -> (Option<IpAddr>, Timestamp) {
    (limits::client_ip(parts, state), state.service.now())
}

/// Whether a refused access token looks forged or guessed, rather than once genuine: expired,
/// not yet valid (clock skew) and revoked tokens were issued by sessiond, and clients present
/// them routinely, so they do not count as failed authentications.
fn is_forgery(error: &Error) -> bool {
    !matches!(
        error,
        Error::Unauthenticated(TokenError::Expired | TokenError::NotYetValid | TokenError::Revoked)
    )
}

/// Answers an access token that did not validate: a forged one as a failed authentication
/// (see [`failed_credential`]), an expired or revoked one as it is.
async fn refused_token(
    state: &AppState,
    ip: Option<IpAddr>,
    now: Timestamp,
    error: Error,
) -> ApiError {
    if is_forgery(&error) {
        failed_credential(state, ip, now, error.into()).await
    } else {
        error.into()
    }
}

/// Counts an admin-authenticated request against its key's allowance.
async fn admit_admin(
    state: &AppState,
    key: AdminKeyId,
    ip: Option<IpAddr>,
    now: Timestamp,
) -> Result<(), ApiError> {
    if let Err(refusal) = state
        .limits
        .acquire(Limit::AdminPerKey, &LimitKey(key.0), now)
    {
        let subject = Subject {
            ip,
            admin_key: Some(key),
            ..Subject::default()
        };
        return Err(limits::refused(state, refusal, subject).await);
    }
    Ok(())
}

/// The permission an admin route needs, as a type, so that every admin route names its own
/// in its signature.
pub(crate) trait AdminPermission {
    /// The `admin:…` permission.
    const PERMISSION: &'static str;
    /// The `403` message when the key's scope lacks it.
    const REFUSAL: &'static str;
}

/// `admin:read`: every admin key has it.
pub(crate) struct Read;
/// `admin:revoke`: keys scoped `revoke` or `full`.
pub(crate) struct Revoke;
/// `admin:write`: keys scoped `full`.
pub(crate) struct Write;

impl AdminPermission for Read {
    const PERMISSION: &'static str = ADMIN_READ;
    const REFUSAL: &'static str = "this admin key's scope does not allow reads (admin:read)";
}

impl AdminPermission for Revoke {
    const PERMISSION: &'static str = ADMIN_REVOKE;
    const REFUSAL: &'static str =
        "this admin key's scope does not allow revocations (admin:revoke): it needs revoke or full";
}

impl AdminPermission for Write {
    const PERMISSION: &'static str = ADMIN_WRITE;
    const REFUSAL: &'static str =
        "this admin key's scope does not allow this change (admin:write): it needs full";
}

/// Refuses with `403 forbidden` unless `scope` grants `P`'s permission.
pub(crate) fn require<P: AdminPermission>(scope: AdminScope) -> Result<(), ApiError> {
    if scope.grants(P::PERMISSION) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(P::REFUSAL))
    }
}

/// The application backend or an operator, authenticated by an admin key whose scope grants
/// `P`'s permission; a key without it is answered `403 forbidden` (after it is counted against
/// the key's rate limit, like every request the key authenticates).
pub(crate) struct AdminCaller<P: AdminPermission>(PhantomData<P>);

impl<P: AdminPermission> FromRequestParts<AppState> for AdminCaller<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (ip, now) = origin(parts, state);
        let Some(AdminIdentity { id, scope }) = state.admin_keys.identify(bearer(parts)?) else {
            let refusal = ApiError::Unauthenticated("admin key required");
            return Err(failed_credential(state, ip, now, refusal).await);
        };
        admit_admin(state, id, ip, now).await?;
        require::<P>(scope)?;
        Ok(Self(PhantomData))
    }
}

/// A user, authenticated by a valid access token; carries the presented token for the routes
/// that show its claims.
pub(crate) struct UserCaller {
    pub(crate) token: ValidatedToken,
    pub(crate) raw: String,
}

impl FromRequestParts<AppState> for UserCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (scheme, raw) = credential(parts)?;
        let token = user_token(parts, state, scheme, raw).await?;
        Ok(Self {
            token,
            raw: raw.to_owned(),
        })
    }
}

/// Either kind of caller, for routes both may use; the route checks an admin's scope with
/// [`require`].
pub(crate) enum Caller {
    Admin(AdminScope),
    User(ValidatedToken),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (ip, now) = origin(parts, state);
        let (scheme, credential) = credential(parts)?;
        if scheme == TokenScheme::Bearer
            && let Some(AdminIdentity { id, scope }) = state.admin_keys.identify(credential)
        {
            admit_admin(state, id, ip, now).await?;
            return Ok(Self::Admin(scope));
        }
        user_token(parts, state, scheme, credential)
            .await
            .map(Self::User)
    }
}
