//! [`ApiError`]: every failure of a `/v1` route, mapped in one place to the status and stable
//! `error` code of the wire contract. 5xx bodies say little; the detail goes to the log under
//! the request id.

use std::any::Any;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sessiond_core::Error;
use sessiond_core::error::RefreshRejection;
use sessiond_core::store::StoreError;
use sessiond_wire::ErrorBody;

use super::REQUEST_ID;
use super::dpop::{ProofRefusal, ProofRoute};
use crate::events::hub::StreamRefusal;
use crate::ratelimit::{Refusal, ceil_seconds};

/// Seconds a client should wait before retrying when storage is unavailable.
const UNAVAILABLE_RETRY_AFTER: u64 = 1;
/// Seconds a client should wait before opening an event stream again after a refusal: streams
/// are long-lived, so a place frees up seldom.
const STREAMS_RETRY_AFTER: u64 = 5;

/// A failed request.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// A domain or storage error.
    Domain(Error),
    /// The body is not the JSON the route expects.
    BadRequest(String),
    /// The body exceeds the configured limit.
    PayloadTooLarge(usize),
    /// No credential, or a wrong one.
    Unauthenticated(&'static str),
    /// A credential, but a request its route refuses (a cookie refresh without the CSRF
    /// header).
    Forbidden(&'static str),
    /// No such route or resource.
    NotFound,
    /// The route exists, but not with this method.
    MethodNotAllowed,
    /// A rate limit refused the request (already counted and audited, see `http::limits`).
    RateLimited(Refusal),
    /// The request body did not arrive within this time (`http::deadline`).
    RequestTimeout(Duration),
    /// No event stream may be opened now: the caller's user, or the process, has as many open
    /// as allowed.
    TooManyStreams(StreamRefusal),
    /// A Device Bound Session Credentials refusal (`http::dbsc`): its status, `error` code,
    /// `reason` and message.
    Dbsc {
        status: StatusCode,
        code: &'static str,
        reason: &'static str,
        message: &'static str,
    },
    /// A DPoP proof was refused (already counted and audited, see `http::dpop`).
    Dpop(ProofRefusal),
    /// An access token bound to a DPoP key came with the `Bearer` scheme, or an unbound one
    /// with the `DPoP` scheme: `401` challenged with `DPoP error="invalid_token"`.
    WrongTokenScheme(&'static str),
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self::Domain(error)
    }
}

impl From<sessiond_core::ids::InvalidId> for ApiError {
    fn from(invalid: sessiond_core::ids::InvalidId) -> Self {
        Self::Domain(invalid.into())
    }
}

/// The `error` code of an error answer, left in the response's extensions for the metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorCode(pub(crate) &'static str);

fn body(
    status: StatusCode,
    code: &'static str,
    message: String,
    reason: Option<&str>,
    retry_after: Option<u64>,
) -> Response {
    let request_id = REQUEST_ID.try_with(Clone::clone).ok();
    let mut response = (
        status,
        Json(ErrorBody {
            error: code.to_owned(),
            message,
            reason: reason.map(str::to_owned),
            retry_after,
            request_id,
        }),
    )
        .into_response();
    response.extensions_mut().insert(ErrorCode(code));
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if status == StatusCode::UNAUTHORIZED && code == "unauthenticated" {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        );
    }
    response
}

fn internal(detail: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %detail, "request failed");
    body(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log for this request id".into(),
        None,
        None,
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(message) => body(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                message,
                None,
                None,
            ),
            Self::PayloadTooLarge(limit) => body(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds {limit} bytes"),
                None,
                None,
            ),
            Self::Unauthenticated(message) => body(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                message.into(),
                None,
                None,
            ),
            Self::Forbidden(message) => body(
                StatusCode::FORBIDDEN,
                "forbidden",
                message.into(),
                None,
                None,
            ),
            Self::NotFound => body(
                StatusCode::NOT_FOUND,
                "not_found",
                "not found".into(),
                None,
                None,
            ),
            Self::MethodNotAllowed => body(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route".into(),
                None,
                None,
            ),
            Self::RateLimited(refusal) => rate_limited(&refusal),
            Self::RequestTimeout(timeout) => body(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "request body not received within {}",
                    humantime::format_duration(timeout)
                ),
                None,
                None,
            ),
            Self::TooManyStreams(StreamRefusal::PerUser(limit)) => body(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!("this user already has {limit} event streams open; close one first"),
                None,
                Some(STREAMS_RETRY_AFTER),
            ),
            Self::TooManyStreams(StreamRefusal::Total(limit)) => body(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!("the server already serves {limit} event streams; retry later"),
                None,
                Some(STREAMS_RETRY_AFTER),
            ),
            Self::Dbsc {
                status,
                code,
                reason,
                message,
            } => body(status, code, message.into(), Some(reason), None),
            Self::Dpop(refusal) => dpop_refused(refusal),
            Self::WrongTokenScheme(message) => {
                let mut response = body(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    message.into(),
                    None,
                    None,
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"DPoP error="invalid_token""#),
                );
                response
            }
            Self::Domain(error) => domain_response(error),
        }
    }
}

/// `invalid_dpop_proof` or `use_dpop_nonce`, with the refusal's reason and challenge.
fn dpop_refused(refusal: ProofRefusal) -> Response {
    let mut response = body(
        refusal.status(),
        refusal.code(),
        refusal.error.to_string(),
        Some(refusal.error.reason()),
        None,
    );
    refusal.set_headers(response.headers_mut());
    response
}

/// `429 rate_limited` with `Retry-After` and the `RateLimit-*` fields (see
/// [`rate_limit_headers`]).
fn rate_limited(refusal: &Refusal) -> Response {
    let mut response = body(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        refusal.message(),
        None,
        Some(refusal.retry_after_seconds()),
    );
    rate_limit_headers(response.headers_mut(), refusal);
    response
}

/// `Retry-After` and the `RateLimit-*` fields of the IETF draft
/// (draft-ietf-httpapi-ratelimit-headers) for a refusal: the quota, what is left of it
/// (nothing), and the seconds until it is whole again. The OAuth endpoints send them too.
pub(crate) fn rate_limit_headers(headers: &mut HeaderMap, refusal: &Refusal) {
    let retry_after = refusal.retry_after_seconds();
    let decision = &refusal.decision;
    let reset = ceil_seconds(decision.reset).max(retry_after);
    let period = ceil_seconds(refusal.quota.period);
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
    if let Ok(policy) = HeaderValue::from_str(&format!("{};w={period}", decision.limit)) {
        headers.insert("ratelimit-policy", policy);
    }
}

fn domain_response(error: Error) -> Response {
    match error {
        Error::InvalidInput { field, message } => body(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid {field}: {message}"),
            None,
            None,
        ),
        Error::RefreshRejected(reason) => body(
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
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
            .into(),
            Some(reason.as_str()),
            None,
        ),
        // The refresh path answers these itself (audited); this is the same answer.
        Error::DpopRefused(refusal) => dpop_refused(ProofRefusal {
            error: refusal.error,
            route: ProofRoute::Refresh,
        }),
        // Only the OAuth token endpoint takes a scope, and it answers `invalid_scope` itself.
        Error::ScopeBeyondSession(permission) => body(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("scope {permission:?} is beyond the session's permissions"),
            None,
            None,
        ),
        Error::Unauthenticated(reason) => body(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!("access token refused: {reason}"),
            None,
            None,
        ),
        Error::Forbidden => body(
            StatusCode::FORBIDDEN,
            "forbidden",
            "not allowed for this caller".into(),
            None,
            None,
        ),
        Error::NotFound => body(
            StatusCode::NOT_FOUND,
            "not_found",
            "not found".into(),
            None,
            None,
        ),
        Error::Store(store @ StoreError::Unavailable(_)) => {
            // What keeps storage from writing, when that is known (`disk_full`, `read_only`,
            // `io_error`), as `/readyz` names it.
            let reason = store.cannot_write().map(|cannot| cannot.reason.as_str());
            tracing::warn!(error = %DisplayChain(&store), reason, "storage unavailable");
            body(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "storage is unavailable; retry later".into(),
                reason,
                Some(UNAVAILABLE_RETRY_AFTER),
            )
        }
        Error::Store(store) => internal(&DisplayChain(&store)),
        Error::Corrupt(detail) => internal(&detail),
    }
}

/// Shows an error with its sources, for the log.
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Answers a panic inside a handler as a JSON 500; the panic message goes to the log only.
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    internal(&format_args!("handler panicked: {detail}"))
}
