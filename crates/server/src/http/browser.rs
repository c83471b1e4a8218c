//! Browsers: cookie mode (`SESSIOND_COOKIE_MODE=on`) and CORS (`SESSIOND_CORS_ORIGINS`).
//!
//! In cookie mode the refresh token also travels as an `HttpOnly; Secure; SameSite=Strict`
//! cookie scoped to `Path=/v1/sessions/refresh`, so page scripts never read it and the
//! browser sends it nowhere else. A refresh authenticated by that cookie must carry the
//! `X-Sessiond-CSRF: 1` header: a custom header cannot be sent cross-site without a CORS
//! preflight that only configured origins pass, so a forged form post or `<img>` never
//! refreshes. It is the only route a cookie authenticates; every other route takes its
//! credential from the `Authorization` header, which browsers never attach on their own.
//!
//! CORS is written here rather than with tower-http's `CorsLayer`, which was tried and fails
//! two tests of `tests/it/browser.rs`: it answers every `OPTIONS` request itself with `200 OK`
//! (a preflight here is `204 No Content`, and its status cannot be chosen), and it sends
//! `Access-Control-Allow-Credentials`, `-Allow-Methods`, `-Allow-Headers` and `-Max-Age` to any
//! origin, listed or not, leaving only `Access-Control-Allow-Origin` out. Here an origin that
//! is not listed gets no CORS header at all and its `OPTIONS` request reaches the router like
//! any other.

use axum::extract::{FromRequest, Request};
use axum::http::header::{self, HeaderMap};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sessiond_core::Error;
use sessiond_core::Timestamp;
use sessiond_core::service::IssuedSession;
use sessiond_wire::{SessionView, TokenPairResponse};

use super::ApiError;
use super::convert::{TOKEN_PAIR_ANSWER_BYTES, json_answer, token_pair, token_pair_answer};
use super::cookies::{REFRESH_PATH, cookie, set_cookie};
use super::extract::OptionalJsonBody;
use super::limits::ClientIp;
use crate::state::AppState;

/// The refresh cookie. `__Secure-` makes browsers refuse it unless it is `Secure`, so a
/// plain-HTTP page on the same host cannot plant one.
pub(crate) const REFRESH_COOKIE: &str = "__Secure-sessiond-refresh";
/// The header a cookie-authenticated refresh must carry, with the value `1`.
pub(crate) const CSRF_HEADER: &str = "x-sessiond-csrf";
/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECONDS: u32 = 600;

/// The body of `POST /v1/sessions/refresh` in cookie mode: the token may be left out when the
/// cookie carries it, and then the body may be empty.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CookieModeRefreshRequest {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// `POST /v1/sessions/refresh` in cookie mode. A token in the body is spent as without cookie
/// mode and the answer also sets the cookie (how a browser that got its first pair from its
/// backend moves the token out of script reach). Without one, the cookie's token is spent,
/// provided the CSRF header is present; the answer then leaves `refresh_token` out of the
/// body, since the cookie carries it. A cookie token that is not live clears the cookie.
pub(crate) async fn refresh(
    state: AppState,
    client: ClientIp,
    request: Request,
) -> Result<Response, ApiError> {
    let cookie = refresh_cookie(request.headers());
    let credential = super::dbsc::credential_cookie(request.headers());
    let origin = super::limits::request_origin(client, request.headers());
    let csrf_header = request
        .headers()
        .get(CSRF_HEADER)
        .is_some_and(|value| value.as_bytes() == b"1");
    let dpop = super::refresh::ProofHeader::of(request.headers());
    let OptionalJsonBody(body) =
        OptionalJsonBody::<CookieModeRefreshRequest>::from_request(request, &state).await?;
    let proof = dpop.proof(REFRESH_PATH);

    if let Some(presented) = body.refresh_token {
        let issued = super::refresh::spend_with_credential(
            &state,
            client,
            &origin,
            &presented,
            None,
            proof,
            credential.as_deref(),
        )
        .await?;
        let now = state.service.now();
        let mut response = token_pair_answer(&issued, true);
        set_cookie(&mut response, &refresh_cookie_for(&issued, now));
        offer_registration_unless_bound(&state, &mut response, &issued, credential.as_deref());
        return Ok(response);
    }
    let Some(presented) = cookie else {
        return Err(ApiError::BadRequest(format!(
            "missing refresh_token: give it in the body or in the {REFRESH_COOKIE} cookie"
        )));
    };
    if !csrf_header {
        return Err(ApiError::Forbidden(
            "a refresh by cookie needs the header X-Sessiond-CSRF: 1",
        ));
    }
    let spent = super::refresh::spend_with_credential(
        &state,
        client,
        &origin,
        &presented,
        None,
        proof,
        credential.as_deref(),
    )
    .await;
    match spent {
        Ok(issued) => {
            let now = state.service.now();
            let pair = token_pair(&issued, true);
            let mut response = json_answer(&CookieModePair::of(&pair), TOKEN_PAIR_ANSWER_BYTES);
            set_cookie(&mut response, &refresh_cookie_for(&issued, now));
            offer_registration_unless_bound(&state, &mut response, &issued, credential.as_deref());
            Ok(response)
        }
        Err(error @ ApiError::Domain(Error::RefreshRejected(_))) => {
            let mut response = error.into_response();
            set_cookie(&mut response, &cleared_refresh_cookie());
            Ok(response)
        }
        Err(other) => Err(other),
    }
}

/// The answer of a refresh by cookie: the token pair without its refresh token, which only the
/// cookie carries, out of script's reach.
#[derive(Serialize)]
struct CookieModePair<'a> {
    access_token: &'a str,
    token_type: &'a str,
    expires_in: i64,
    access_token_expires_at: &'a str,
    refresh_token_expires_at: &'a str,
    session: &'a SessionView,
}

impl<'a> CookieModePair<'a> {
    fn of(pair: &'a TokenPairResponse) -> Self {
        // Every field named, so that one added to the pair cannot go missing here unseen.
        let TokenPairResponse {
            access_token,
            token_type,
            expires_in,
            access_token_expires_at,
            refresh_token: _,
            refresh_token_expires_at,
            session,
        } = pair;
        Self {
            access_token,
            token_type,
            expires_in: *expires_in,
            access_token_expires_at,
            refresh_token_expires_at,
            session,
        }
    }
}

/// Offers a DBSC registration (when DBSC is on) with an answer that refreshed `issued`'s
/// session, unless the session showed itself bound by refreshing with its bound cookie
/// (`credential`).
fn offer_registration_unless_bound(
    state: &AppState,
    response: &mut Response,
    issued: &IssuedSession,
    credential: Option<&str>,
) {
    if !super::dbsc::answered_bound(credential, issued.session.id) {
        super::dbsc::offer_registration(state, response, issued.session.id);
    }
}

/// The refresh token of the request's refresh cookie, if it has one.
fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, REFRESH_COOKIE)
}

/// The `Set-Cookie` value that hands out `issued`'s refresh token until it expires.
pub(crate) fn refresh_cookie_for(issued: &IssuedSession, now: Timestamp) -> String {
    let expires_at = Timestamp::from_unix_millis(issued.pair.refresh_expires_at_ms);
    let max_age = (expires_at.unix_seconds() - now.unix_seconds()).max(0);
    format!(
        "{REFRESH_COOKIE}={}; Path={REFRESH_PATH}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict",
        issued.pair.refresh_token
    )
}

/// The `Set-Cookie` value that deletes the refresh cookie.
pub(crate) fn cleared_refresh_cookie() -> String {
    format!("{REFRESH_COOKIE}=; Path={REFRESH_PATH}; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// CORS for the configured origins only: a request whose `Origin` is listed gets
/// `Access-Control-Allow-Origin` (that origin) with `Access-Control-Allow-Credentials: true`,
/// and its preflight is answered here; any other origin gets no CORS header at all, so the
/// browser keeps its same-origin rule. `next` answers the request otherwise (see
/// `http::edge`).
pub(crate) async fn cors<F: Future<Output = Response>>(
    state: &AppState,
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    if state.cors_origins.is_empty() {
        return next(request).await;
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .filter(|origin| {
            origin.to_str().is_ok_and(|origin| {
                state
                    .cors_origins
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(origin))
            })
        })
        .cloned();
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = match (&origin, preflight) {
        (Some(_), true) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, DELETE"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, dpop, x-sessiond-csrf"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(PREFLIGHT_MAX_AGE_SECONDS),
            );
            response
        }
        _ => next(request).await,
    };
    let headers = response.headers_mut();
    // Answers differ by origin, so caches must key on it whether or not this one is listed.
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("dpop-nonce, retry-after, www-authenticate, x-request-id"),
        );
    }
    response
}
