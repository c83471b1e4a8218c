//! axum integration: the `Authenticated` extractor and `RequirePermissionLayer`.
//!
//! Both find the [`Verifier`] in the request extensions, put there once for the whole router
//! with `.layer(Extension(verifier))`. Extensions rather than router state, so that the
//! extractor works whatever the application's state type is, with no `FromRef` to write.
//! [`RequirePermissionLayer`] carries its own verifier and leaves the verified [`Claims`] in
//! the extensions, so an `Authenticated` extractor behind it does not verify the token twice.
//!
//! Refusals follow RFC 6750 and sessiond's error bodies:
//! - no `Authorization: Bearer` token: `401`, `WWW-Authenticate: Bearer`,
//!   `{"error":"unauthenticated","message":…}`;
//! - a bad token: `401`, `WWW-Authenticate: Bearer error="invalid_token"`, the same body;
//! - a good token without the permission: `403`,
//!   `WWW-Authenticate: Bearer error="insufficient_scope"`, `{"error":"forbidden",…}`;
//! - no key set could ever be fetched: `503` `{"error":"unavailable",…}` (the token may be
//!   good);
//! - no verifier in the extensions (a wiring mistake): `500` `{"error":"internal",…}`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
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
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// The token was refused.
    InvalidToken(TokenError),
    /// No key set has been fetched yet, so no token can be judged.
    KeysUnavailable,
    /// The token is good but does not grant this permission.
    Forbidden {
        /// The permission required.
        permission: Arc<str>,
    },
    /// No [`Verifier`] in the request extensions.
    NoVerifier,
}

impl From<VerifyError> for AuthRejection {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Invalid(reason) => Self::InvalidToken(reason),
            VerifyError::KeysUnavailable => Self::KeysUnavailable,
        }
    }
}

fn error_response(
    status: StatusCode,
    challenge: Option<&'static str>,
    error: &str,
    message: String,
) -> Response {
    let body = serde_json::json!({ "error": error, "message": message });
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(challenge) = challenge {
        response.headers_mut().insert(
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
                Some("Bearer"),
                "unauthenticated",
                "an access token is required (Authorization: Bearer <token>)".into(),
            ),
            Self::InvalidToken(reason) => error_response(
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer error="invalid_token""#),
                "unauthenticated",
                format!("the access token is not valid: {reason}"),
            ),
            Self::KeysUnavailable => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "unavailable",
                "access tokens cannot be verified yet: the signing keys are unavailable".into(),
            ),
            Self::Forbidden { permission } => error_response(
                StatusCode::FORBIDDEN,
                Some(r#"Bearer error="insufficient_scope""#),
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
                    None,
                    "internal",
                    "internal error".into(),
                )
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn authenticate(headers: &HeaderMap, verifier: &Verifier) -> Result<Claims, AuthRejection> {
    let token = bearer_token(headers).ok_or(AuthRejection::MissingToken)?;
    Ok(verifier.verify(token).await?)
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
        let claims = authenticate(&parts.headers, &verifier).await?;
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
                None => match authenticate(request.headers(), &verifier).await {
                    Ok(claims) => claims,
                    Err(rejection) => return Ok(rejection.into_response()),
                },
            };
            if !claims.has_permission(&permission) {
                return Ok(AuthRejection::Forbidden { permission }.into_response());
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
    fn a_bearer_token_is_read_with_any_case_of_scheme() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
