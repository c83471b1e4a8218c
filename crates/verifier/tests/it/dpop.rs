//! DPoP-bound access tokens (RFC 9449 §7): `Verifier::verify_dpop` and the axum extractor,
//! with tokens signed by a key given to the verifier and proofs signed by Ed25519 keys made
//! here, so that every refusal can be provoked on its own.

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};
use sessiond_core::dpop::{ProofKey, access_token_hash};
use sessiond_verifier::{
    Authenticated, RequirePermissionLayer, TokenError, VerifierBuilder, VerifyError,
};
use tower::ServiceExt as _;

use crate::helpers::*;

const URL: &str = "https://api.example/notes";

/// A client's DPoP key.
struct ClientKey(ed25519_dalek::SigningKey);

impl ClientKey {
    fn new() -> Self {
        Self(foreign_key())
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.0.verifying_key().to_bytes()),
        })
    }

    fn thumbprint(&self) -> String {
        ProofKey::from_jwk(&self.jwk())
            .unwrap()
            .thumbprint()
            .to_owned()
    }

    /// A proof with `claims` as they are.
    fn sign(&self, claims: &Value) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": self.jwk()});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.0.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// The claims of a good proof for `method` on `url` with `token`.
    fn claims(method: &str, url: &str, token: &str) -> Value {
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).unwrap();
        json!({
            "jti": URL_SAFE_NO_PAD.encode(jti), "htm": method, "htu": url,
            "iat": wall_clock_now().unix_seconds(), "ath": access_token_hash(token),
        })
    }

    fn proof(&self, method: &str, url: &str, token: &str) -> String {
        self.sign(&Self::claims(method, url, token))
    }
}

/// Signs access tokens with a key the verifier is given.
struct Issuer {
    key: ed25519_dalek::SigningKey,
}

impl Issuer {
    fn new() -> Self {
        Self { key: foreign_key() }
    }

    fn verifier(&self) -> VerifierBuilder {
        let jwks = json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "local-1",
            "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
        }]});
        let keys = sessiond_verifier::VerificationKeys::from_public_jwks(&jwks).unwrap();
        // Never fetched: the keys are given, and the URL leads nowhere.
        verifier_of("http://127.0.0.1:9/.well-known/jwks.json").initial_keys(keys)
    }

    /// A token bound to `jkt` (unbound with `None`) granting `notes:read`.
    fn token(&self, jkt: Option<&str>) -> String {
        let now = wall_clock_now().unix_seconds();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).unwrap();
        let mut claims = json!({
            "iss": ISSUER, "sub": "user-1", "aud": AUDIENCE, "exp": now + 600, "iat": now,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "sid": "67e55044-10b1-426f-9247-bb680e5fe0c8", "permissions": ["notes:read"],
        });
        if let Some(jkt) = jkt {
            claims["cnf"] = json!({ "jkt": jkt });
        }
        mint(&self.key, "local-1", &claims)
    }
}

fn refused_because(result: Result<sessiond_verifier::Claims, VerifyError>) -> &'static str {
    match result {
        Err(VerifyError::InvalidDpopProof { reason }) => reason,
        other => panic!("expected an invalid proof, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bound_token_with_a_proof_of_its_key_verifies_and_names_the_key() {
    let issuer = Issuer::new();
    let client = ClientKey::new();
    let token = issuer.token(Some(&client.thumbprint()));
    let verifier = issuer.verifier().build().unwrap();

    let proof = client.proof("GET", URL, &token);
    let claims = verifier
        .verify_dpop(&token, Some(&proof), "GET", URL)
        .await
        .unwrap();
    assert_eq!(claims.sub, "user-1");
    assert_eq!(
        claims.cnf_jkt.as_deref(),
        Some(client.thumbprint().as_str())
    );
    assert_eq!(verifier.dpop_replay_ids(), 1);
    // The htu is compared after normalisation, and a query is no part of it.
    let proof = client.proof("GET", "HTTPS://API.example:443/notes", &token);
    assert!(
        verifier
            .verify_dpop_cached(
                &token,
                Some(&proof),
                "GET",
                "https://api.example/notes?page=2"
            )
            .is_ok()
    );
}

#[tokio::test]
async fn a_bound_token_presented_as_bearer_is_refused_and_an_unbound_one_as_dpop_too() {
    let issuer = Issuer::new();
    let client = ClientKey::new();
    let bound = issuer.token(Some(&client.thumbprint()));
    let unbound = issuer.token(None);
    let verifier = issuer.verifier().build().unwrap();

    assert!(matches!(
        verifier.verify(&bound).await,
        Err(VerifyError::BoundTokenAsBearer)
    ));
    assert!(matches!(
        verifier.verify_cached(&bound),
        Err(VerifyError::BoundTokenAsBearer)
    ));
    assert!(verifier.verify(&unbound).await.is_ok());
    let proof = client.proof("GET", URL, &unbound);
    assert!(matches!(
        verifier
            .verify_dpop(&unbound, Some(&proof), "GET", URL)
            .await,
        Err(VerifyError::UnboundTokenAsDpop)
    ));
    // A bad token is judged as a token first, whatever the proof.
    assert!(matches!(
        verifier
            .verify_dpop("not.a.token", Some(&proof), "GET", URL)
            .await,
        Err(VerifyError::Invalid(TokenError::Malformed))
    ));
}

#[tokio::test]
async fn each_flaw_of_a_proof_is_refused_with_its_reason() {
    let issuer = Issuer::new();
    let client = ClientKey::new();
    let token = issuer.token(Some(&client.thumbprint()));
    let verifier = issuer.verifier().build().unwrap();
    let verify = |proof: Option<&str>| verifier.verify_dpop_cached(&token, proof, "GET", URL);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = ClientKey::claims("GET", URL, &token);
        change(&mut claims);
        client.sign(&claims)
    };

    assert_eq!(refused_because(verify(None)), "missing");
    let other_key = ClientKey::new().proof("GET", URL, &token);
    assert_eq!(refused_because(verify(Some(&other_key))), "wrong_key");
    let other_token = client.proof("GET", URL, &issuer.token(Some(&client.thumbprint())));
    assert_eq!(
        refused_because(verify(Some(&other_token))),
        "wrong_access_token_hash"
    );
    let no_ath = with(&|claims| {
        claims.as_object_mut().unwrap().remove("ath");
    });
    assert_eq!(
        refused_because(verify(Some(&no_ath))),
        "wrong_access_token_hash"
    );
    let post = client.proof("POST", URL, &token);
    assert_eq!(refused_because(verify(Some(&post))), "wrong_method");
    let elsewhere = client.proof("GET", "https://api.example/other", &token);
    assert_eq!(refused_because(verify(Some(&elsewhere))), "wrong_url");
    let stale = with(&|claims| claims["iat"] = json!(wall_clock_now().unix_seconds() - 120));
    assert_eq!(refused_because(verify(Some(&stale))), "stale");
    let ahead = with(&|claims| claims["iat"] = json!(wall_clock_now().unix_seconds() + 60));
    assert_eq!(refused_because(verify(Some(&ahead))), "from_the_future");
    let good = client.proof("GET", URL, &token);
    let (signed, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    assert_eq!(refused_because(verify(Some(&forged))), "bad_signature");
    assert_eq!(refused_because(verify(Some("garbage"))), "malformed");
    assert_eq!(
        verifier.dpop_replay_ids(),
        0,
        "no refused proof takes room in the replay cache"
    );
}

#[tokio::test]
async fn a_proof_is_accepted_once() {
    let issuer = Issuer::new();
    let client = ClientKey::new();
    let token = issuer.token(Some(&client.thumbprint()));
    let verifier = issuer.verifier().build().unwrap();
    let proof = client.proof("GET", URL, &token);
    assert!(
        verifier
            .verify_dpop(&token, Some(&proof), "GET", URL)
            .await
            .is_ok()
    );
    assert_eq!(
        refused_because(verifier.verify_dpop(&token, Some(&proof), "GET", URL).await),
        "replayed"
    );
    // The clones of a verifier share the cache.
    assert_eq!(
        refused_because(
            verifier
                .clone()
                .verify_dpop_cached(&token, Some(&proof), "GET", URL)
        ),
        "replayed"
    );
}

#[tokio::test]
async fn a_full_replay_cache_refuses_new_proofs_rather_than_forget_live_ones() {
    let issuer = Issuer::new();
    let client = ClientKey::new();
    let token = issuer.token(Some(&client.thumbprint()));
    let verifier = issuer.verifier().dpop_replay_capacity(2).build().unwrap();
    for _ in 0..2 {
        let proof = client.proof("GET", URL, &token);
        assert!(
            verifier
                .verify_dpop_cached(&token, Some(&proof), "GET", URL)
                .is_ok()
        );
    }
    let proof = client.proof("GET", URL, &token);
    assert!(matches!(
        verifier.verify_dpop_cached(&token, Some(&proof), "GET", URL),
        Err(VerifyError::ReplayCacheFull)
    ));
    assert_eq!(verifier.dpop_replay_ids(), 2);
}

#[tokio::test]
async fn with_nonces_required_a_proof_without_one_is_answered_with_a_nonce_to_use() {
    let issuer = Issuer::new();
    let client = ClientKey::new();
    let token = issuer.token(Some(&client.thumbprint()));
    let verifier = issuer
        .verifier()
        .dpop_nonce_secret([7; 32])
        .build()
        .unwrap();

    let without = client.proof("GET", URL, &token);
    let Err(VerifyError::UseDpopNonce { nonce }) =
        verifier.verify_dpop_cached(&token, Some(&without), "GET", URL)
    else {
        panic!("a nonce is asked for");
    };
    let mut claims = ClientKey::claims("GET", URL, &token);
    claims["nonce"] = json!("made-up");
    assert!(matches!(
        verifier.verify_dpop_cached(&token, Some(&client.sign(&claims)), "GET", URL),
        Err(VerifyError::UseDpopNonce { .. })
    ));
    claims["nonce"] = json!(nonce);
    assert!(
        verifier
            .verify_dpop_cached(&token, Some(&client.sign(&claims)), "GET", URL)
            .is_ok()
    );
    // Another instance sharing the secret accepts it; one with another secret does not.
    let sibling = issuer
        .verifier()
        .dpop_nonce_secret([7; 32])
        .build()
        .unwrap();
    let mut again = ClientKey::claims("GET", URL, &token);
    again["nonce"] = json!(verifier.dpop_nonce().unwrap());
    assert!(
        sibling
            .verify_dpop_cached(&token, Some(&client.sign(&again)), "GET", URL)
            .is_ok()
    );
    let stranger = issuer
        .verifier()
        .dpop_nonce_secret([8; 32])
        .build()
        .unwrap();
    again["jti"] = json!("another-id");
    assert!(matches!(
        stranger.verify_dpop_cached(&token, Some(&client.sign(&again)), "GET", URL),
        Err(VerifyError::UseDpopNonce { .. })
    ));
    assert_eq!(issuer.verifier().build().unwrap().dpop_nonce(), None);
}

struct Answer {
    status: StatusCode,
    challenges: Vec<String>,
    nonce: Option<String>,
    body: Value,
}

async fn call(
    router: &Router,
    path: &str,
    authorization: Option<String>,
    proofs: &[&str],
) -> Answer {
    let mut request = Request::builder()
        .method("GET")
        .uri(path)
        .header(header::HOST, "api.example");
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    for proof in proofs {
        request = request.header("dpop", *proof);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenges = response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    let nonce = response
        .headers()
        .get("dpop-nonce")
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        challenges,
        nonce,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn router(verifier: &sessiond_verifier::Verifier) -> Router {
    let notes = Router::new().route(
        "/notes",
        get(|Authenticated(claims): Authenticated| async move {
            axum::Json(json!({ "user": claims.sub, "jkt": claims.cnf_jkt }))
        })
        .route_layer(RequirePermissionLayer::new(verifier.clone(), "notes:read")),
    );
    Router::new()
        .route(
            "/me",
            get(
                |Authenticated(claims): Authenticated| async move { axum::Json(json!(claims.sub)) },
            ),
        )
        // Nested: the proof names the whole path, which the extractor must see.
        .nest("/v2", notes)
        .layer(Extension(verifier.clone()))
}

#[tokio::test]
async fn the_extractor_takes_dpop_tokens_with_proofs_and_answers_refusals_as_rfc_9449_says() {
    let issuer = Issuer::new();
    let client = ClientKey::new();
    let token = issuer.token(Some(&client.thumbprint()));
    let verifier = issuer.verifier().build().unwrap();
    let router = router(&verifier);
    let dpop = Some(format!("DPoP {token}"));

    // Without an origin configured, scheme http and the Host header; the nested path whole.
    let proof = client.proof("GET", "http://api.example/v2/notes", &token);
    let answer = call(&router, "/v2/notes", dpop.clone(), &[&proof]).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(
        answer.body,
        json!({"user": "user-1", "jkt": client.thumbprint()})
    );
    let proof = client.proof("GET", "http://api.example/me", &token);
    let answer = call(&router, "/me", Some(format!("dpop {token}")), &[&proof]).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);

    // The same proof again: replayed.
    let answer = call(&router, "/me", dpop.clone(), &[&proof]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenges, [r#"DPoP error="invalid_dpop_proof""#]);
    assert_eq!(answer.body["error"], "invalid_dpop_proof");
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("replayed")
    );

    // No proof; two proofs.
    for proofs in [vec![], vec![proof.as_str(), proof.as_str()]] {
        let answer = call(&router, "/me", dpop.clone(), &proofs).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.challenges, [r#"DPoP error="invalid_dpop_proof""#]);
    }

    // The bound token as a bearer token, through the extractor and through the layer.
    for path in ["/me", "/v2/notes"] {
        let answer = call(&router, path, Some(format!("Bearer {token}")), &[]).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            answer.challenges,
            [r#"DPoP error="invalid_token""#],
            "{path}"
        );
        assert_eq!(answer.body["error"], "unauthenticated");
    }

    // An unbound token with the DPoP scheme; a bad token with the DPoP scheme.
    let unbound = issuer.token(None);
    let proof = client.proof("GET", "http://api.example/me", &unbound);
    let answer = call(&router, "/me", Some(format!("DPoP {unbound}")), &[&proof]).await;
    assert_eq!(answer.challenges, [r#"DPoP error="invalid_token""#]);
    let answer = call(&router, "/me", Some("DPoP not.a.token".into()), &[&proof]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenges, [r#"DPoP error="invalid_token""#]);

    // A good bound token without the permission: 403 with a DPoP challenge.
    let writer_router = Router::new()
        .route(
            "/write",
            get(|| async { "written" })
                .route_layer(RequirePermissionLayer::new(verifier.clone(), "notes:write")),
        )
        .layer(Extension(verifier.clone()));
    let proof = client.proof("GET", "http://api.example/write", &token);
    let answer = call(&writer_router, "/write", dpop.clone(), &[&proof]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.challenges, [r#"DPoP error="insufficient_scope""#]);

    // No credentials: both schemes are offered, with the proof algorithms.
    let answer = call(&router, "/me", None, &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.challenges,
        ["Bearer", r#"DPoP algs="ES256 EdDSA RS256""#]
    );
}

#[tokio::test]
async fn behind_a_proxy_the_configured_origin_is_what_proofs_must_name() {
    let issuer = Issuer::new();
    let client = ClientKey::new();
    let token = issuer.token(Some(&client.thumbprint()));
    let verifier = issuer
        .verifier()
        .dpop_origin("https://public.example/")
        .build()
        .unwrap();
    let router = router(&verifier);
    let dpop = Some(format!("DPoP {token}"));

    let inner = client.proof("GET", "http://api.example/me", &token);
    let answer = call(&router, "/me", dpop.clone(), &[&inner]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("wrong_url")
    );
    let public = client.proof("GET", "https://public.example/me", &token);
    let answer = call(&router, "/me", dpop, &[&public]).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
}

#[tokio::test]
async fn the_extractor_asks_for_a_nonce_with_a_dpop_nonce_header_and_takes_the_retry() {
    let issuer = Issuer::new();
    let client = ClientKey::new();
    let token = issuer.token(Some(&client.thumbprint()));
    let verifier = issuer
        .verifier()
        .dpop_nonce_secret([1; 32])
        .build()
        .unwrap();
    let router = router(&verifier);
    let dpop = Some(format!("DPoP {token}"));

    let proof = client.proof("GET", "http://api.example/me", &token);
    let answer = call(&router, "/me", dpop.clone(), &[&proof]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenges, [r#"DPoP error="use_dpop_nonce""#]);
    assert_eq!(answer.body["error"], "use_dpop_nonce");
    let nonce = answer.nonce.expect("a DPoP-Nonce header");

    let mut claims = ClientKey::claims("GET", "http://api.example/me", &token);
    claims["nonce"] = json!(nonce);
    let answer = call(&router, "/me", dpop, &[&client.sign(&claims)]).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
}

#[tokio::test]
async fn a_real_session_bound_at_creation_has_tokens_that_verify_only_with_a_proof_of_its_key() {
    let server = TestServer::spawn().await;
    let client = ClientKey::new();
    let pair = server
        .create_session_with(json!({
            "user_id": "user-1",
            "dpop_jkt": client.thumbprint(),
            "claims": {"permissions": ["notes:read"]},
        }))
        .await;
    assert_eq!(pair.token_type, "DPoP");
    let verifier = verifier_of(&server.jwks_url()).build().unwrap();
    let token = &pair.access_token;

    let proof = client.proof("GET", URL, token);
    let claims = verifier
        .verify_dpop(token, Some(&proof), "GET", URL)
        .await
        .unwrap();
    assert_eq!(claims.sid.to_string(), pair.session.id);
    assert_eq!(
        claims.cnf_jkt.as_deref(),
        Some(client.thumbprint().as_str())
    );
    assert!(matches!(
        verifier.verify(token).await,
        Err(VerifyError::BoundTokenAsBearer)
    ));
    let stranger = ClientKey::new().proof("GET", URL, token);
    assert_eq!(
        refused_because(
            verifier
                .verify_dpop(token, Some(&stranger), "GET", URL)
                .await
        ),
        "wrong_key"
    );
    // An unbound session's token is still a bearer token.
    let unbound = server.token_with(&["notes:read"]).await;
    assert_eq!(unbound.token_type, "Bearer");
    assert!(verifier.verify(&unbound.access_token).await.is_ok());
}
