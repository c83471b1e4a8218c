//! `GET /openapi.json`: the OpenAPI 3.1 description of this API, compiled into the binary from
//! `crates/server/openapi.json` (the integration suite checks it against the router and
//! against real answers).

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sessiond_core::primitives::sha256;

/// The document.
const DOCUMENT: &[u8] = include_bytes!("../../openapi.json");

/// Its strong `ETag`: the first 16 bytes of its SHA-256, computed once.
static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    let digest = sha256(DOCUMENT);
    let mut tag = String::from("\"");
    for byte in &digest[..16] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag.push('"');
    HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\""))
});

/// `GET /openapi.json`, or `304` when the client's copy is current. Revalidated on every use
/// (`no-cache`), so a new release's document is never stale.
pub(crate) async fn document(headers: HeaderMap) -> Response {
    let etag = ETAG.clone();
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag.to_str().unwrap_or_default()
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = DOCUMENT.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    };
    let response_headers = response.headers_mut();
    response_headers.insert(header::ETAG, etag);
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
