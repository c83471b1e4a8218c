//! The axum extractor and the permission layer, in a small router.

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::http::{Request, StatusCode, header};
use axum::routing::{get, post};
use serde_json::Value;
use sessiond_verifier::{Authenticated, RequirePermissionLayer, Verifier};
use tower::ServiceExt as _;

use crate::helpers::*;

fn router(verifier: &Verifier) -> Router {
    Router::new()
        .route(
            "/me",
            get(|Authenticated(claims): Authenticated| async move { claims.sub }),
        )
        .route(
            "/notes",
            get(|Authenticated(claims): Authenticated| async move {
                format!("notes of {}", claims.sub)
            })
            .route_layer(RequirePermissionLayer::new(verifier.clone(), "notes:read")),
        )
        .route(
            "/notes",
            post(|| async { "written" })
                .route_layer(RequirePermissionLayer::new(verifier.clone(), "notes:write")),
        )
        .layer(Extension(verifier.clone()))
}

struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

async fn call(router: &Router, method: &str, path: &str, token: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        challenge,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

#[tokio::test]
async fn the_extractor_and_the_permission_layer_answer_200_403_and_401() {
    let server = TestServer::spawn().await;
    let reader = server.token_with(&["notes:read"]).await.access_token;
    let writer = server.token_with(&["notes:*"]).await.access_token;
    let verifier = verifier_of(&server.jwks_url()).build().unwrap();
    let router = router(&verifier);

    let me = call(&router, "GET", "/me", Some(&reader)).await;
    assert_eq!((me.status, me.body.as_str()), (StatusCode::OK, "user-1"));

    let read = call(&router, "GET", "/notes", Some(&reader)).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, "notes of user-1");

    let write = call(&router, "POST", "/notes", Some(&reader)).await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    assert_eq!(write.json()["error"], "forbidden");
    assert_eq!(
        write.challenge.as_deref(),
        Some(r#"Bearer error="insufficient_scope""#)
    );

    let wildcard = call(&router, "POST", "/notes", Some(&writer)).await;
    assert_eq!(
        (wildcard.status, wildcard.body.as_str()),
        (StatusCode::OK, "written")
    );

    for (method, path) in [("GET", "/me"), ("GET", "/notes"), ("POST", "/notes")] {
        let anonymous = call(&router, method, path, None).await;
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert_eq!(anonymous.json()["error"], "unauthenticated");
        assert_eq!(anonymous.challenge.as_deref(), Some("Bearer"));

        let garbage = call(&router, method, path, Some("not.a.token")).await;
        assert_eq!(garbage.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(garbage.json()["error"], "unauthenticated");
        assert!(garbage.json()["message"].is_string());
        assert_eq!(
            garbage.challenge.as_deref(),
            Some(r#"Bearer error="invalid_token""#)
        );
    }
    assert_eq!(verifier.stats().fetches, 1);
}

#[tokio::test]
async fn without_the_verifier_extension_the_extractor_answers_500() {
    let server = TestServer::spawn().await;
    let token = server.token_with(&["notes:read"]).await.access_token;
    let router = Router::new().route(
        "/me",
        get(|Authenticated(claims): Authenticated| async move { claims.sub }),
    );
    let answer = call(&router, "GET", "/me", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.json()["error"], "internal");
}
