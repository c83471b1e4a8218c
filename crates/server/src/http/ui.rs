//! The web UI: `/ui/` (a page hosting the sessions widget), `/ui/admin` (the admin dashboard)
//! and their assets, among them `/ui/sessiond-sessions.js`, the `<sessiond-sessions>` web
//! component that applications include.
//!
//! The files under `crates/server/ui/` are compiled into the binary, so the UI needs no build
//! step and nothing is fetched at run time. Every answer carries a strict
//! `Content-Security-Policy`: scripts, styles and API calls only from this origin, no inline
//! script or style (the files have none), and `frame-ancestors` from
//! `SESSIOND_UI_FRAME_ANCESTORS` (`'none'` unless configured). Credentials never travel in a
//! URL: the pages send the access token or admin key as a bearer header.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sessiond_core::primitives::sha256;

use super::ApiError;
use crate::state::AppState;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Everything the UI serves, by the name under `/ui/` (`""` is the widget's page).
const ASSETS: &[Asset] = &[
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../ui/index.html"),
    },
    Asset {
        name: "admin",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../ui/admin.html"),
    },
    Asset {
        name: "sessiond-sessions.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/sessiond-sessions.js"),
    },
    Asset {
        // The browser client (`@sessiond/client`), built from `clients/js` and committed, so
        // the server build needs no JavaScript toolchain; the CI checks it matches its source.
        name: "sessiond-client.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/sessiond-client.js"),
    },
    Asset {
        name: "page.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/page.js"),
    },
    Asset {
        name: "admin.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/admin.js"),
    },
    Asset {
        name: "sessiond.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../ui/sessiond.css"),
    },
];

/// How long browsers may use an asset without asking again; after that the `ETag` makes the
/// question cheap. Short, so a new release is picked up within minutes.
const ASSET_MAX_AGE_SECONDS: u32 = 300;

/// The strong `ETag` of each asset, in the order of [`ASSETS`]: the first 16 bytes of its
/// SHA-256, computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = sha256(asset.body);
            let mut tag = String::from("\"");
            for byte in &digest[..16] {
                tag.push_str(&format!("{byte:02x}"));
            }
            tag.push('"');
            HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// The UI's routes, each answer with the security headers of [`security_headers`].
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(page))
        .route("/ui/admin", get(admin_page))
        .route("/ui/{asset}", get(asset))
        .layer(middleware::from_fn_with_state(state, security_headers))
}

async fn page(headers: HeaderMap) -> Response {
    serve("", &headers)
}

async fn admin_page(headers: HeaderMap) -> Response {
    serve("admin", &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    // `admin` is a page at its own route; `/ui/admin` is the one address for it.
    if name.is_empty() || name == "admin" {
        return ApiError::NotFound.into_response();
    }
    serve(&name, &headers)
}

/// The asset `name` with its validators, or `304` when the browser's copy is current.
fn serve(name: &str, request_headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|asset| asset.name == name) else {
        return ApiError::NotFound.into_response();
    };
    let asset = &ASSETS[index];
    let etag = ETAGS[index].clone();
    let cache_control = if asset.content_type.starts_with("text/html") {
        // Pages are revalidated every time, so a new release's page (naming the assets it
        // needs) is never stale.
        HeaderValue::from_static("no-cache")
    } else {
        HeaderValue::from_str(&format!("public, max-age={ASSET_MAX_AGE_SECONDS}"))
            .unwrap_or(HeaderValue::from_static("no-cache"))
    };
    let fresh = request_headers
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
        let mut response = asset.body.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, cache_control);
    response
}

/// The `Content-Security-Policy` of every UI answer, for `frame_ancestors`.
pub(crate) fn content_security_policy(frame_ancestors: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'self'; \
         frame-ancestors {frame_ancestors}"
    )
}

/// Adds the UI's security headers to every answer under `/ui`, errors included.
async fn security_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(&state.ui_frame_ancestors)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if state.ui_frame_ancestors.as_ref() == "'none'" {
        // For browsers that predate frame-ancestors.
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}
