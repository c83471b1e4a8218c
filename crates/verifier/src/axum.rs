//! axum integration: the `Authenticated` extractor and `RequirePermissionLayer`.
//!
//! Both find the [`Verifier`] in the request extensions, put there once for the whole router
//! with `.layer(Extension(verifier))`. Extensions rather than router state, so that the
//! extractor works whatever the application's state type is, with no `FromRef` to write.
//! [`RequirePermissionLayer`] carries its own verifier and leaves the verified [`Claims`] in
//! the extensions, so an `Authenticated` extractor behind it does not verify the token twice.
//!
//! A token comes as `Authorization: Bearer <token>`, or, bound to a key, as
//! `Authorization: DPoP <token>` with a `DPoP` proof header (RFC 9449), checked by
//! [`Verifier::verify_dpop`] against the request's method and URL: the path of the request as
//! the router received it (before any `nest`), after [`Verifier::dpop_origin`] or else the
//! request's own scheme and `Host`.
//!
//! Refusals follow RFC 6750, RFC 9449 §7.1 and sessiond's error bodies:
//! - no token: `401`, `WWW-Authenticate: Bearer` and `WWW-Authenticate: DPoP algs="…"`,
//!   `{"error":"unauthenticated","message":…}`;
//! - a bad token: `401`, `WWW-Authenticate: Bearer error="invalid_token"` (`DPoP
//!   error="invalid_token"` when it came with the DPoP scheme), the same body;
//! - a token bound to a key presented as `Bearer`, or an unbound one presented as `DPoP`:
//!   `401`, `WWW-Authenticate: DPoP error="invalid_token"`, the same body;
//! - a DPoP proof missing, refused, replayed or signed by another key than the token's, or
//!   several `DPoP` headers: `401`, `WWW-Authenticate: DPoP error="invalid_dpop_proof"`,
//!   `{"error":"invalid_dpop_proof",…}`;
//! - a proof without the nonce the verifier requires: `401`,
//!   `WWW-Authenticate: DPoP error="use_dpop_nonce"`, a `DPoP-Nonce` header to use,
//!   `{"error":"use_dpop_nonce",…}`;
//! - the DPoP replay cache full: `503` `{"error":"unavailable",…}`;
//! - a good token without the permission: `403`,
//!   `WWW-Authenticate: Bearer error="insufficient_scope"` (`DPoP …` for a bound token),
//!   `{"error":"forbidden",…}`;
//! - no key set could ever be fetched: `503` `{"error":"unavailable",…}` (the token may be
//!   good);
//! - no verifier in the extensions (a wiring mistake): `500` `{"error":"internal",…}`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sessiond_core::token::TokenError;

use crate::{Claims, Verifier, VerifyError};

/// The claims of the request's verified bearer token.
///
/// ```no_run
/// use axum::Json;
/// use sessiond_verifier::Authenticated;
///
/// async fn whoami(Authenticated(claims): Authenticated) -> Json<serde_json::Value> {
///     Json(serde_json::json!({ "user": claims.sub, "session": claims.sid.to_string() }))
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

/// Why a request was refused; it renders as the response described in the module docs.
#[derive(Debug)]
pub enum AuthRejection {
    /// No `Authorization: Bearer` or `Authorization: DPoP` header.
    MissingToken,
    /// The bearer token was refused.
    InvalidToken(TokenError),
    /// The token presented with the DPoP scheme was refused.
    InvalidDpopToken(TokenError),
    /// A token bound to a key came as `Bearer`, or an unbound one as `DPoP`.
    WrongScheme(VerifyError),
    /// The DPoP proof is missing or refused (a stable snake_case reason).
    InvalidDpopProof {
        /// Why.
        reason: &'static str,
    },
    /// The proof lacks the nonce the verifier requires; the client should use `nonce`.
    UseDpopNonce {
        /// The nonce for the client's next proof.
        nonce: String,
    },
    /// The DPoP replay cache is full: no proof can be accepted for now.
    ReplayCacheFull,
    /// No key set has been fetched yet, so no token can be judged.
    KeysUnavailable,
    /// The token is good but does not grant this permission.
    Forbidden {
        /// The permission required.
        permission: Arc<str>,
        /// The token is bound to a key (DPoP): the challenge names the `DPoP` scheme.
        dpop: bool,
    },
    /// No [`Verifier`] in the request extensions.
    NoVerifier,
}

impl From<VerifyError> for AuthRejection {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Invalid(reason) => Self::InvalidToken(reason),
            VerifyError::KeysUnavailable => Self::KeysUnavailable,
            wrong @ (VerifyError::BoundTokenAsBearer | VerifyError::UnboundTokenAsDpop) => {
                Self::WrongScheme(wrong)
            }
            VerifyError::InvalidDpopProof { reason } => Self::InvalidDpopProof { reason },
            VerifyError::UseDpopNonce { nonce } => Self::UseDpopNonce { nonce },
            VerifyError::ReplayCacheFull => Self::ReplayCacheFull,
        }
    }
}

/// The algorithms of DPoP proofs that sessiond's proof check accepts, for the challenge of a
/// request without credentials (RFC 9449 §7.1).
const DPOP_ALGS: &str = r#"DPoP algs="ES256 EdDSA RS256""#;

fn error_response(
    status: StatusCode,
    challenges: &[&'static str],
    error: &str,
    message: String,
) -> Response {
    let body = serde_json::json!({ "error": error, "message": message });
    let mut response = (status, axum::Json(body)).into_response();
    for challenge in challenges {
        response.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            Self::MissingToken => error_response(
                StatusCode::UNAUTHORIZED,
                // RFC 6750 §3.1: no error code when the request carried no credentials.
                &["Bearer", DPOP_ALGS],
                "unauthenticated",
                "an access token is required (Authorization: Bearer <token>, or DPoP <token> \
                 with a DPoP proof)"
                    .into(),
            ),
            Self::InvalidToken(reason) => error_response(
                StatusCode::UNAUTHORIZED,
                &[r#"Bearer error="invalid_token""#],
                "unauthenticated",
                format!("the access token is not valid: {reason}"),
            ),
            Self::InvalidDpopToken(reason) => error_response(
                StatusCode::UNAUTHORIZED,
                &[r#"DPoP error="invalid_token""#],
                "unauthenticated",
                format!("the access token is not valid: {reason}"),
            ),
            Self::WrongScheme(error) => error_response(
                StatusCode::UNAUTHORIZED,
                &[r#"DPoP error="invalid_token""#],
                "unauthenticated",
                error.to_string(),
            ),
            Self::InvalidDpopProof { reason } => error_response(
                StatusCode::UNAUTHORIZED,
                &[r#"DPoP error="invalid_dpop_proof""#],
                "invalid_dpop_proof",
                format!("the DPoP proof is not valid: {reason}"),
            ),
            Self::UseDpopNonce { nonce } => {
                let mut response = error_response(
                    StatusCode::UNAUTHORIZED,
                    &[r#"DPoP error="use_dpop_nonce""#],
                    "use_dpop_nonce",
                    "the DPoP proof must carry the nonce of the DPoP-Nonce header".into(),
                );
                // A nonce is base64url text; one that could not be a header value is not sent.
                if let Ok(value) = HeaderValue::from_str(&nonce) {
                    response.headers_mut().insert("dpop-nonce", value);
                }
                response
            }
            Self::ReplayCacheFull => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &[],
                "unavailable",
                "DPoP proofs cannot be checked for replay right now".into(),
            ),
            Self::KeysUnavailable => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &[],
                "unavailable",
                "access tokens cannot be verified yet: the signing keys are unavailable".into(),
            ),
            Self::Forbidden { permission, dpop } => error_response(
                StatusCode::FORBIDDEN,
                &[if dpop {
                    r#"DPoP error="insufficient_scope""#
                } else {
                    r#"Bearer error="insufficient_scope""#
                }],
                "forbidden",
                format!("the access token does not grant {permission}"),
            ),
            Self::NoVerifier => {
                tracing::error!(
                    "no sessiond_verifier::Verifier in the request extensions: add \
                     .layer(Extension(verifier)) to the router"
                );
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &[],
                    "internal",
                    "internal error".into(),
                )
            }
        }
    }
}

/// How a token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
}

/// The scheme and token of an `Authorization: Bearer <token>` or `Authorization: DPoP <token>`
/// header (scheme case-insensitive).
fn presented_token(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return None;
    };
    (!token.is_empty()).then_some((scheme, token))
}

/// The URL a DPoP proof must name for this request: the configured origin, or the request's
/// scheme and `Host`, then the path as the client sent it (before any `nest` stripped a
/// prefix).
fn request_url(
    verifier: &Verifier,
    uri: &Uri,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> String {
    let original = extensions
        .get::<OriginalUri>()
        .map_or(uri, |original| &original.0);
    let path = original.path();
    if let Some(origin) = verifier.dpop_origin() {
        return format!("{origin}{path}");
    }
    let scheme = original.scheme_str().unwrap_or("http");
    let authority = original
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    format!("{scheme}://{authority}{path}")
}

async fn authenticate(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    extensions: &Extensions,
    verifier: &Verifier,
) -> Result<Claims, AuthRejection> {
    let (scheme, token) = presented_token(headers).ok_or(AuthRejection::MissingToken)?;
    if scheme == Scheme::Bearer {
        return Ok(verifier.verify(token).await?);
    }
    // RFC 9449 §4.3: exactly one DPoP header, of visible ASCII.
    let mut proofs = headers.get_all("dpop").iter();
    let proof = match (proofs.next(), proofs.next()) {
        (None, _) => None,
        (Some(proof), None) => {
            Some(
                proof
                    .to_str()
                    .map_err(|_| AuthRejection::InvalidDpopProof {
                        reason: "malformed",
                    })?,
            )
        }
        (Some(_), Some(_)) => {
            return Err(AuthRejection::InvalidDpopProof {
                reason: "several_proofs",
            });
        }
    };
    let url = request_url(verifier, uri, headers, extensions);
    verifier
        .verify_dpop(token, proof, method.as_str(), &url)
        .await
        .map_err(|error| match error {
            VerifyError::Invalid(reason) => AuthRejection::InvalidDpopToken(reason),
            other => other.into(),
        })
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(claims) = parts.extensions.get::<Claims>() {
            return Ok(Self(claims.clone()));
        }
        let verifier = parts
            .extensions
            .get::<Verifier>()
            .cloned()
            .ok_or(AuthRejection::NoVerifier)?;
        let claims = authenticate(
            &parts.method,
            &parts.uri,
            &parts.headers,
            &parts.extensions,
            &verifier,
        )
        .await?;
        parts.extensions.insert(claims.clone());
        Ok(Self(claims))
    }
}

/// A tower layer that lets a request through only if its bearer token verifies and grants a
/// permission (wildcards as in [`crate::has_permission`]); otherwise it answers `401` or `403`
/// itself. Use it with `route_layer` to protect routes:
///
/// ```no_run
/// # fn build(verifier: sessiond_verifier::Verifier) -> axum::Router {
/// use axum::Router;
/// use axum::routing::get;
/// use sessiond_verifier::RequirePermissionLayer;
///
/// Router::new()
///     .route("/notes", get(|| async { "notes" }))
///     .route_layer(RequirePermissionLayer::new(verifier, "notes:read"))
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RequirePermissionLayer {
    verifier: Verifier,
    permission: Arc<str>,
}

impl RequirePermissionLayer {
    /// Requires `permission`, verifying tokens with `verifier`.
    pub fn new(verifier: Verifier, permission: impl Into<Arc<str>>) -> Self {
        Self {
            verifier,
            permission: permission.into(),
        }
    }
}

impl<S> tower::Layer<S> for RequirePermissionLayer {
    type Service = RequirePermission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequirePermission {
            inner,
            verifier: self.verifier.clone(),
            permission: self.permission.clone(),
        }
    }
}

/// The service [`RequirePermissionLayer`] wraps around a route.
#[derive(Debug, Clone)]
pub struct RequirePermission<S> {
    inner: S,
    verifier: Verifier,
    permission: Arc<str>,
}

impl<S, B> tower::Service<Request<B>> for RequirePermission<S>
where
    S: tower::Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is not ready yet, the original is: call the original, keep the clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let permission = self.permission.clone();
        Box::pin(async move {
            let claims = match request.extensions().get::<Claims>() {
                Some(claims) => claims.clone(),
                None => match authenticate(
                    request.method(),
                    request.uri(),
                    request.headers(),
                    request.extensions(),
                    &verifier,
                )
                .await
                {
                    Ok(claims) => claims,
                    Err(rejection) => return Ok(rejection.into_response()),
                },
            };
            if !claims.has_permission(&permission) {
                let dpop = claims.cnf_jkt.is_some();
                return Ok(AuthRejection::Forbidden { permission, dpop }.into_response());
            }
            request.extensions_mut().insert(claims);
            if request.extensions().get::<Verifier>().is_none() {
                request.extensions_mut().insert(verifier);
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static(authorization),
        );
        headers
    }

    #[test]
    fn a_token_is_read_with_any_case_of_scheme() {
        assert_eq!(
            presented_token(&headers("Bearer abc")),
            Some((Scheme::Bearer, "abc"))
        );
        assert_eq!(
            presented_token(&headers("bearer abc")),
            Some((Scheme::Bearer, "abc"))
        );
        assert_eq!(
            presented_token(&headers("DPoP abc")),
            Some((Scheme::Dpop, "abc"))
        );
        assert_eq!(
            presented_token(&headers("dpop abc")),
            Some((Scheme::Dpop, "abc"))
        );
        assert_eq!(presented_token(&headers("Basic abc")), None);
        assert_eq!(presented_token(&headers("Bearer ")), None);
        assert_eq!(presented_token(&headers("DPoP ")), None);
        assert_eq!(presented_token(&HeaderMap::new()), None);
    }
}
