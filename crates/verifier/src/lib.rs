//! Access-token verification for resource servers: the APIs that receive sessiond's access
//! tokens and must check them without calling sessiond on every request.
//!
//! # Protecting an API
//!
//! A [`Verifier`] fetches sessiond's JWK Set (`/.well-known/jwks.json`), caches it, and
//! validates each token locally with the very validator sessiond runs itself
//! ([`sessiond_core::token::AccessTokenValidator`]), so a token is judged the same way here as
//! there, for the same cost: a signature check plus a few microseconds of parsing.
//!
//! With axum (the default `axum` feature), put the verifier in the request extensions once,
//! read the caller with the [`Authenticated`] extractor, and guard routes with
//! [`RequirePermissionLayer`]:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::routing::{delete, get};
//! use axum::{Extension, Json, Router};
//! use serde_json::{Value, json};
//! use sessiond_verifier::{Authenticated, RequirePermissionLayer, Verifier};
//!
//! async fn me(Authenticated(claims): Authenticated) -> Json<Value> {
//!     Json(json!({ "user": claims.sub, "tenant": claims.tenant_id, "roles": claims.roles }))
//! }
//!
//! async fn list_notes(Authenticated(claims): Authenticated) -> Json<Value> {
//!     // `RequirePermissionLayer` already verified the token and left its claims behind, so
//!     // this extractor costs a clone, not a second verification.
//!     Json(json!({ "owner": claims.sub, "notes": [] }))
//! }
//!
//! async fn delete_note() {}
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let verifier = Verifier::builder("https://sessiond.example/.well-known/jwks.json")
//!         .issuer("https://sessiond.example") // sessiond's SESSIOND_ISSUER
//!         .audience("notes-api") // sessiond's SESSIOND_AUDIENCE
//!         .leeway(Duration::from_secs(5))
//!         .min_refetch_interval(Duration::from_secs(30))
//!         .build()?;
//!     // Optional: fetch now, so that a wrong URL fails at start rather than on a request.
//!     verifier.refresh().await?;
//!
//!     let app = Router::new()
//!         .route("/me", get(me))
//!         .route(
//!             "/notes",
//!             get(list_notes)
//!                 .route_layer(RequirePermissionLayer::new(verifier.clone(), "notes:read")),
//!         )
//!         .route(
//!             "/notes/{id}",
//!             delete(delete_note)
//!                 .route_layer(RequirePermissionLayer::new(verifier.clone(), "notes:write")),
//!         )
//!         .layer(Extension(verifier));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! A request without a token, or with a bad one, gets `401`
//! `{"error":"unauthenticated","message":…}` with a `WWW-Authenticate: Bearer` challenge
//! (`error="invalid_token"` when a token was presented; DPoP-bound tokens below); a good
//! token lacking the permission
//! gets `403` `{"error":"forbidden",…}`. Outside axum, call [`Verifier::verify`] and
//! [`has_permission`] directly.
//!
//! # DPoP-bound tokens
//!
//! A session bound to a client's key (DPoP, RFC 9449) has access tokens that name the key's
//! thumbprint (`cnf.jkt`, [`Claims::cnf_jkt`]). Such a token is accepted only as
//! `Authorization: DPoP <token>` with a `DPoP` proof header signed by that key for this
//! request: the extractor and the layer check it through [`Verifier::verify_dpop`] (the proof
//! as sessiond checks its own, by [`sessiond_core::dpop::verify_proof`]: method, URL, age, the
//! token's hash `ath`; then the key, and a replay cache of proof ids in memory, bounded by
//! [`VerifierBuilder::dpop_replay_capacity`]). A bound token presented as `Bearer` is refused,
//! so a copied token is worth nothing without the key. The URL a proof must name is the
//! request's path after [`VerifierBuilder::dpop_origin`] (set it behind a proxy), else after
//! the request's scheme and `Host`. With [`VerifierBuilder::dpop_nonce_secret`] proofs must
//! also carry a nonce the verifier minted: a request without one is answered `401` with a
//! `DPoP-Nonce` header, which sessiond's clients send back at once. Refusals are RFC 9449 §7.1
//! answers (`401`, `WWW-Authenticate: DPoP error="invalid_token"`, `"invalid_dpop_proof"` or
//! `"use_dpop_nonce"`); see the extractor's documentation ([`AuthRejection`]).
//!
//! # Permissions
//!
//! Sessions carry `permissions` among their claims (`POST /v1/sessions` with
//! `"claims": {"permissions": ["notes:read"]}`). [`has_permission`] matches exactly, with two
//! wildcards: `*` grants everything, and a last segment `*` grants everything below its prefix
//! (`notes:*` grants `notes:read` and `notes:share:public`, but not `notes` nor
//! `notesx:read`). Matching is case-sensitive. The rule is sessiond's own
//! (`sessiond_core::permission`), so a resource server and sessiond never disagree on it.
//! When sessiond maps roles to permissions (`SESSIOND_ROLES`), a token's `permissions`
//! already include those of its roles, as they were when the token was signed.
//!
//! # Keys, caching and outages
//!
//! - The key set is fetched on first use, or at once with [`Verifier::refresh`].
//! - It is fresh for the response's `Cache-Control: max-age` (sessiond sends 300 s), less any
//!   `Age`, clamped between `min_refetch_interval` and one day; 5 minutes when the response
//!   says nothing. Once stale, the next verification starts one background refresh and is
//!   itself verified against the stale set, so no request waits for it.
//! - A token whose `kid` is not in the set (sessiond rotated its key) triggers a refetch, but
//!   at most one fetch per `min_refetch_interval` in all, and concurrent callers share it: a
//!   flood of tokens with made-up kids costs sessiond one request per interval.
//! - When a fetch fails, the verifier keeps verifying with the keys it has, and
//!   [`Verifier::stats`] says so: `offline` is true and `fetch_failures` counts up until a
//!   fetch succeeds again. Before any key set has been fetched, tokens cannot be judged and
//!   [`VerifyError::KeysUnavailable`] (503) is returned.
//! - Ed25519 (`EdDSA`), P-256 (`ES256`) and RSA (`RS256`, at least 2048 bits) keys are taken
//!   from the set, each verifying only its own algorithm. sessiond never publishes its HMAC
//!   keys, so HS256 deployments cannot use this crate.
//! - An `https://` JWKS URL is fetched with rustls and the aws-lc-rs provider (no system
//!   OpenSSL); the default HTTP client checks the certificate against the operating system's
//!   trust store (through `rustls-platform-verifier`). For a private CA that the machine does
//!   not trust, pass a client of your own to [`VerifierBuilder::http_client`].
//!
//! # Revocation
//!
//! A revoked session's access tokens stay valid by signature until they expire (15 minutes by
//! default). The verifier consults a revoked set ([`sessiond_core::revocation::RevokedSessions`],
//! the same type sessiond uses) on every verification, and fills it in two ways:
//!
//! - **The revocation feed** ([`VerifierBuilder::revocation_feed`] with a [`RevocationFeed`]):
//!   a background task follows sessiond's `GET /v1/events?types=session.revoked` and puts each
//!   revoked session in the set, so its tokens are refused within moments (well under a second
//!   on a local network). It starts from the beginning of sessiond's retained events, so a
//!   verifier that starts after a revocation refuses that session's tokens too; entries are
//!   kept for the longest access-token lifetime (1 h unless configured) after their
//!   revocation. While sessiond is unreachable the verifier keeps verifying with its cached
//!   keys and the set it has, [`VerifierStats::feed`] says `connected: false`, and the feed
//!   resumes where it stopped once sessiond is back. The feed reads every user's events, so
//!   its credential is an admin key; a `read`-scoped one (`SESSIOND_ADMIN_KEYS` entry
//!   `KEY:read`) is enough.
//!
//!   ```no_run
//!   # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//!   use sessiond_verifier::{RevocationFeed, Verifier};
//!
//!   let verifier = Verifier::builder("https://sessiond.example/.well-known/jwks.json")
//!       .issuer("https://sessiond.example")
//!       .revocation_feed(RevocationFeed::new(
//!           "https://sessiond.example",
//!           std::env::var("SESSIOND_ADMIN_KEY")?,
//!       ))
//!       .build()?; // inside a Tokio runtime: the feed runs as a task
//!   # let _ = verifier;
//!   # Ok(())
//!   # }
//!   ```
//! - **By hand**: [`Verifier::revoke_session`], for applications that learn of revocations
//!   some other way.
//!
//! Without either, the access-token lifetime is the revocation delay.

mod dpop;
mod feed;
mod permission;
mod verifier;

#[cfg(feature = "axum")]
mod axum;

#[cfg(feature = "axum")]
pub use crate::axum::{AuthRejection, Authenticated, RequirePermission, RequirePermissionLayer};
pub use dpop::DEFAULT_REPLAY_CAPACITY;
pub use feed::{FeedStats, RevocationFeed};
pub use permission::{has_permission, permission_matches};
pub use sessiond_core::token::{TokenError, VerificationKeys};
pub use verifier::{
    BuildError, Claims, DEFAULT_MAX_AGE, FetchError, MAX_CACHE_AGE, Verifier, VerifierBuilder,
    VerifierStats, VerifyError,
};
