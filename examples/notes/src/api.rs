//! The notes API: a resource server that accepts sessiond's access tokens.
//!
//! Tokens are verified locally by a [`Verifier`] (sessiond's JWK Set, cached), which also
//! follows sessiond's revocation feed when given an admin key, so that a revoked session's
//! tokens are refused within moments instead of at their expiry.

use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use sessiond_verifier::{
    Authenticated, BuildError, RequirePermissionLayer, RevocationFeed, Verifier, VerifierBuilder,
};

use crate::{Note, NoteList};

/// Where sessiond is and what its tokens say.
#[derive(Debug, Clone)]
pub struct SessiondSettings {
    /// sessiond's base URL, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Its `SESSIOND_ISSUER` (the `iss` of its tokens).
    pub issuer: String,
    /// Its `SESSIOND_AUDIENCE` (`sessiond` unless configured).
    pub audience: String,
    /// An admin key, to follow the revocation feed; without one, a revoked session's tokens
    /// are accepted until they expire.
    pub admin_key: Option<String>,
}

/// A verifier of `sessiond`'s tokens (following its revocation feed when an admin key is
/// given). Call it inside a Tokio runtime.
///
/// # Errors
/// [`BuildError`] for a bad URL or a missing runtime.
pub fn verifier(sessiond: &SessiondSettings) -> Result<Verifier, BuildError> {
    verifier_builder(sessiond).build()
}

/// The builder behind [`verifier`], for callers that set more (a test's clock).
pub fn verifier_builder(sessiond: &SessiondSettings) -> VerifierBuilder {
    let base = sessiond.base_url.trim_end_matches('/');
    let builder = Verifier::builder(format!("{base}/.well-known/jwks.json"))
        .issuer(&sessiond.issuer)
        .audience(&sessiond.audience)
        .leeway(Duration::from_secs(5));
    match &sessiond.admin_key {
        Some(admin_key) => builder.revocation_feed(RevocationFeed::new(base, admin_key)),
        None => builder,
    }
}

/// The API's routes, verifying tokens with `verifier`.
pub fn router(verifier: Verifier) -> Router {
    Router::new()
        .route(
            "/notes",
            get(list_notes)
                .route_layer(RequirePermissionLayer::new(verifier.clone(), "notes:read")),
        )
        .route("/me", get(me))
        .route("/status", get(status))
        .layer(Extension(verifier))
}

/// `GET /notes`: the caller's notes. The layer has checked `notes:read` already.
async fn list_notes(Authenticated(claims): Authenticated) -> Json<NoteList> {
    Json(NoteList {
        notes: vec![Note {
            id: 1,
            text: format!("Welcome, {}.", claims.sub),
        }],
        owner: claims.sub,
    })
}

/// `GET /me`: who the token speaks for.
async fn me(Authenticated(claims): Authenticated) -> Json<Value> {
    Json(json!({
        "user": claims.sub,
        "session": claims.sid.to_string(),
        "permissions": claims.permissions,
    }))
}

/// `GET /status`: the verifier's health, e.g. for a readiness probe.
async fn status(Extension(verifier): Extension<Verifier>) -> Json<Value> {
    let stats = verifier.stats();
    Json(json!({
        "keys": stats.keys,
        "keys_offline": stats.offline,
        "revoked_sessions": stats.revoked_sessions,
        "revocation_feed_connected": stats.feed.map(|feed| feed.connected),
    }))
}
