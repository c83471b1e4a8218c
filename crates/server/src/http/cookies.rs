//! Cookies, for cookie mode (`browser.rs`) and Device Bound Session Credentials (`dbsc.rs`):
//! reading one from a request, adding one to an answer, and the one path every sessiond cookie
//! is scoped to.

use axum::http::HeaderValue;
use axum::http::header::{self, HeaderMap};
use axum::response::Response;

/// The path of `POST /v1/sessions/refresh`: where a refresh's DPoP proofs point, and the only
/// path browsers send the refresh cookie and the DBSC bound cookie to.
pub(crate) const REFRESH_PATH: &str = "/v1/sessions/refresh";

/// The value of the request's cookie `name`, if it has a non-empty one.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
}

/// Adds `cookie` as a `Set-Cookie` header of `response`.
pub(crate) fn set_cookie(response: &mut Response, cookie: &str) {
    // Tokens are base64url, so the value is always a valid header.
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
