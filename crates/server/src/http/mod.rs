//! The HTTP edge: routes, request ids, body limits and deadlines, and the JSON error contract.

pub(crate) mod audit;
mod browser;
pub(crate) mod convert;
mod cookies;
mod dbsc;
mod deadline;
mod devices;
mod dpop;
mod error;
mod events;
mod extract;
mod health;
mod keys;
mod limits;
mod oauth;
mod observability;
mod openapi;
mod refresh;
mod sessions;
mod strict_json;
mod ui;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler as _;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::state::AppState;
pub(crate) use error::ApiError;

tokio::task_local! {
    /// The id of the request being handled, for error bodies and log lines.
    pub(crate) static REQUEST_ID: String;
}

/// The API's routes over `state`, `/metrics` included.
pub fn router(state: AppState) -> Router {
    api_router(state, true)
}

/// The API's routes over `state`; `/metrics` only when `with_metrics` (it is served on a
/// listener of its own otherwise, see [`metrics_router`]).
pub fn api_router(state: AppState, with_metrics: bool) -> Router {
    let body_limit = state.body_limit;
    let mut routes = Router::new()
        .route(
            "/v1/sessions",
            post(sessions::create.layer(middleware::map_response(no_store_answers)))
                .get(sessions::list_own),
        )
        .route(
            "/v1/sessions/refresh",
            post(sessions::refresh.layer(middleware::map_response(no_store_answers))),
        )
        .route(
            "/v1/dbsc/registration",
            post(dbsc::register.layer(middleware::map_response(no_store_answers))),
        )
        .route(
            "/v1/dbsc/refresh",
            post(dbsc::refresh.layer(middleware::map_response(no_store_answers))),
        )
        .route("/v1/sessions/current", get(sessions::current))
        .route("/v1/sessions/revoke-all", post(sessions::revoke_all_own))
        .route("/v1/sessions/{id}", delete(sessions::revoke_one))
        // In cookie mode its answer sets the refresh cookie (to nothing): not for caches either.
        .route(
            "/v1/logout",
            post(sessions::logout.layer(middleware::map_response(no_store_answers))),
        )
        .route("/v1/users/{user_id}/sessions", get(sessions::list_of_user))
        .route(
            "/v1/users/{user_id}/sessions/revoke-all",
            post(sessions::revoke_all_of_user),
        )
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/oauth/revoke", post(oauth::revoke))
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .route("/.well-known/jwks.json", get(health::jwks))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/stats", get(observability::stats))
        .route("/v1/events", get(events::events))
        .route("/v1/devices", get(devices::list_own))
        .route("/v1/devices/{id}", delete(devices::forget_own))
        .route("/v1/devices/{id}/trust", post(devices::trust_own))
        .route("/v1/users/{user_id}/devices", get(devices::list_of_user))
        .route(
            "/v1/users/{user_id}/devices/{id}",
            delete(devices::forget_of_user),
        )
        .route(
            "/v1/users/{user_id}/devices/{id}/trust",
            post(devices::trust_of_user),
        )
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/stats/history", get(observability::history))
        .route("/v1/keys", get(keys::list))
        .route("/openapi.json", get(openapi::document))
        .merge(ui::routes(state.clone()));
    if with_metrics {
        routes = routes.route("/metrics", get(observability::metrics));
    }
    // One `layer` call with the whole stack, outermost first: `Router::layer` boxes what it
    // wraps, and axum clones a route's service, boxes included, at every boxed level a request
    // passes, so that a stack added one `layer` at a time allocated about fifty boxes per
    // request. Wrapped in one piece, each route has one box.
    let stack = ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(DefaultBodyLimit::max(body_limit));
    routes
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(stack)
        .with_state(state)
}

/// `/metrics` alone, for the separate metrics listener (`SESSIOND_METRICS_LISTEN`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(observability::metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), metrics_edge))
        .with_state(state)
}

/// What every request of the API passes before its route, outermost first: CORS
/// (`browser::cors`), its id and log span ([`request_id`]), DPoP nonces on the answers to
/// proofs (`dpop::nonce_answers`), its metrics and access-log line (`observability::observe`)
/// and its body's deadline (`deadline::request_body`); then, below, a panic's answer and the
/// body limit. One middleware calling the next as a function, rather than one `from_fn` layer
/// each: such a layer clones and boxes the whole service beneath it, and boxes its future, on
/// every request.
async fn edge(State(state): State<AppState>, request: Request, next: Next) -> Response {
    browser::cors(&state, request, |request| {
        request_id(request, |request| {
            dpop::nonce_answers(&state, request, |request| {
                observability::observe(&state, request, |request| {
                    deadline::request_body(&state, request, |request| next.run(request))
                })
            })
        })
    })
    .await
}

/// [`edge`] of the metrics listener: the request's id, its metrics and access-log line.
async fn metrics_edge(State(state): State<AppState>, request: Request, next: Next) -> Response {
    request_id(request, |request| {
        observability::observe(&state, request, |request| next.run(request))
    })
    .await
}

/// Marks an answer uncacheable, as RFC 6749 §5.1 requires of anything carrying tokens: every
/// answer of a route that hands out tokens gets it, its error answers included (a cache keyed
/// on the URL alone must never store one and serve it again).
pub(crate) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// [`no_store`] as a `map_response` middleware, for the `/v1` routes that hand out tokens or
/// set the refresh cookie.
async fn no_store_answers(response: Response) -> Response {
    no_store(response)
}

/// Gives every request an id (from the thread's CSPRNG: no system call per request), has
/// `next` answer it inside a span carrying that id, and returns the id in `x-request-id`.
async fn request_id<F: Future<Output = Response>>(
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let id = sessiond_core::random::uuid_v4().simple().to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = REQUEST_ID
        .scope(
            id.clone(),
            tracing::Instrument::instrument(next(request), span),
        )
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
