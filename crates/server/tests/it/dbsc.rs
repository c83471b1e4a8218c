//! Device Bound Session Credentials: a test client plays the browser's part exactly as the
//! draft describes it (a new ES256 key per session, the registration header parsed, the
//! registration proof signed with the key it carries, the session instructions kept, 403
//! challenges answered), against cookie mode with `SESSIOND_DBSC=on`.

use std::time::Duration;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sessiond_testkit::DpopKey;

use crate::helpers::{ADMIN_KEY, Answer, TestApp, text};

const REFRESH_COOKIE: &str = "__Secure-sessiond-refresh";
const BOUND_COOKIE: &str = "__Secure-sessiond-dbsc";
const COOKIE_TTL: Duration = Duration::from_secs(300);

async fn spawn_with_dbsc() -> TestApp {
    TestApp::spawn_with(|raw| {
        raw.cookie_mode = Some("on".into());
        raw.dbsc = Some("on".into());
        raw.cors_origins = Some("https://app.example.com".into());
    })
    .await
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS of `header` and `claims`, signed by `sign` over its first two parts.
fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// A P-256 key, as a browser makes one per session.
pub(crate) struct Es256Key {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Es256Key {
    pub(crate) fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .expect("P-256 key parses");
        Self { pair, rng }
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        assert_eq!(point.len(), 65, "uncompressed point");
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(&point[1..33]),
            "y": b64(&point[33..65]),
        })
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&self.rng, message)
            .expect("signs")
            .as_ref()
            .to_vec()
    }

    /// A DBSC proof: `typ: dbsc+jwt`, `alg: ES256`, the public key in the header at
    /// registration (`with_key`) and not at refresh, the challenge as `jti`.
    pub(crate) fn proof(&self, challenge: &str, with_key: bool) -> String {
        let mut header = json!({"alg": "ES256", "typ": "dbsc+jwt"});
        if with_key {
            header["jwk"] = self.jwk();
        }
        jws(&header, &json!({ "jti": challenge }), |input| {
            self.sign(input)
        })
    }
}

/// A `Secure-Session-Registration` entry: `(ALG ...);path="...";challenge="..."`.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) algorithms: Vec<String>,
    pub(crate) path: String,
    pub(crate) challenge: String,
}

/// The parameters `;key="value"` after an item, as a structured-field parser reads them.
fn parameters(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (key, value) = part.trim().split_once('=').expect("key=value");
            let value = value
                .strip_prefix('"')
                .and_then(|value| value.strip_suffix('"'))
                .expect("a string");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

pub(crate) fn offer(headers: &HeaderMap) -> Option<Offer> {
    let value = headers.get("secure-session-registration")?.to_str().ok()?;
    let inner = value.strip_prefix('(')?;
    let (algorithms, rest) = inner.split_once(')')?;
    let parameters = parameters(rest);
    let find = |name: &str| {
        parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    Some(Offer {
        algorithms: algorithms.split(' ').map(str::to_owned).collect(),
        path: find("path")?,
        challenge: find("challenge")?,
    })
}

/// The `Secure-Session-Challenge` of an answer: the challenge and the session it is for.
pub(crate) fn challenge(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("secure-session-challenge")?.to_str().ok()?;
    let rest = value.strip_prefix('"')?;
    let (challenge, rest) = rest.split_once('"')?;
    let id = parameters(rest).into_iter().find(|(key, _)| key == "id")?.1;
    Some((challenge.to_owned(), id))
}

/// The value and attributes of the cookie `name` an answer sets.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
            let (found, value) = pair.split_once('=')?;
            (found == name).then(|| (value.to_owned(), attributes.trim().to_owned()))
        })
}

/// The browser: its cookies, its key and the session instructions it keeps.
struct Browser {
    key: Es256Key,
    refresh_cookie: String,
    bound_cookie: Option<String>,
    session_id: Option<String>,
    refresh_url: Option<String>,
}

impl Browser {
    /// Signs in: the backend creates a session and hands its cookie-mode answer on.
    async fn sign_in(app: &TestApp) -> (Self, Offer, Value) {
        let created = app
            .post("/v1/sessions", Some(ADMIN_KEY), json!({"user_id": "alice"}))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let (refresh_cookie, _) =
            set_cookie(&created.headers, REFRESH_COOKIE).expect("the refresh cookie");
        let offer = offer(&created.headers).expect("a registration offer");
        let browser = Self {
            key: Es256Key::generate(),
            refresh_cookie,
            bound_cookie: None,
            session_id: None,
            refresh_url: None,
        };
        (browser, offer, created.body)
    }

    /// Registers as the draft says: a new key of an offered algorithm, the proof posted to
    /// the offer's path.
    async fn register(&mut self, app: &TestApp, offer: &Offer) -> Answer {
        assert!(
            offer
                .algorithms
                .iter()
                .any(|algorithm| algorithm == "ES256")
        );
        let proof = self.key.proof(&offer.challenge, true);
        let answer = post_proof(app, &offer.path, Some(&proof), None).await;
        self.keep(&answer);
        answer
    }

    /// Keeps what a registration or renewal answer says.
    fn keep(&mut self, answer: &Answer) {
        if answer.status != StatusCode::OK {
            return;
        }
        if let Some((value, _)) = set_cookie(&answer.headers, BOUND_COOKIE) {
            self.bound_cookie = Some(value);
        }
        if let Some(id) = answer.body["session_identifier"].as_str() {
            self.session_id = Some(id.to_owned());
            self.refresh_url = Some(text(&answer.body, "refresh_url").to_owned());
        }
    }

    /// Renews the bound cookie: the refresh request, the 403 challenge, the signed answer.
    async fn renew(&mut self, app: &TestApp) -> Answer {
        let url = self.refresh_url.clone().expect("a registered session");
        let id = self.session_id.clone().expect("a registered session");
        let first = post_proof(app, &url, None, Some(&id)).await;
        assert_eq!(first.status, StatusCode::FORBIDDEN, "{}", first.body);
        let (challenge, for_session) = challenge(&first.headers).expect("a challenge");
        assert_eq!(for_session, id);
        let answer = post_proof(
            app,
            &url,
            Some(&self.key.proof(&challenge, false)),
            Some(&id),
        )
        .await;
        self.keep(&answer);
        answer
    }

    /// A page's refresh by cookie, with whatever cookies the browser holds.
    async fn refresh(&mut self, app: &TestApp) -> Answer {
        let answer =
            refresh_by_cookie(app, &self.refresh_cookie, self.bound_cookie.as_deref()).await;
        if let Some((value, _)) = set_cookie(&answer.headers, REFRESH_COOKIE) {
            self.refresh_cookie = value;
        }
        answer
    }
}

/// A POST to a DBSC endpoint with a proof (as a structured-field string) and a session id.
async fn post_proof(
    app: &TestApp,
    path: &str,
    proof: Option<&str>,
    session: Option<&str>,
) -> Answer {
    let mut request = app.client.post(format!("{}{path}", app.base));
    if let Some(proof) = proof {
        request = request.header("secure-session-response", format!("\"{proof}\""));
    }
    if let Some(session) = session {
        request = request.header("sec-secure-session-id", format!("\"{session}\""));
    }
    app.raw(request).await
}

async fn refresh_by_cookie(app: &TestApp, refresh: &str, bound: Option<&str>) -> Answer {
    let mut cookies = format!("{REFRESH_COOKIE}={refresh}");
    if let Some(bound) = bound {
        cookies.push_str(&format!("; {BOUND_COOKIE}={bound}"));
    }
    let request = app
        .client
        .post(format!("{}/v1/sessions/refresh", app.base))
        .header("cookie", cookies)
        .header("x-sessiond-csrf", "1");
    app.raw(request).await
}

fn assert_refused(answer: &Answer, status: StatusCode, code: &str, reason: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.error_code(), code, "{}", answer.body);
    assert_eq!(answer.body["reason"], reason, "{}", answer.body);
}

async fn signing_in_offers_a_registration_that_binds_the_session() {
    let app = spawn_with_dbsc().await;
    let (mut browser, offer, created) = Browser::sign_in(&app).await;
    assert_eq!(offer.algorithms, ["ES256", "RS256"]);
    assert_eq!(offer.path, "/v1/dbsc/registration");

    let registered = browser.register(&app, &offer).await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.body);
    assert_eq!(
        registered.headers["cache-control"], "no-store",
        "the answer carries a credential"
    );
    let session_id = text(&created["session"], "id");
    assert_eq!(
        registered.body,
        json!({
            "session_identifier": session_id,
            "refresh_url": "/v1/dbsc/refresh",
            "scope": {"include_site": false},
            "credentials": [{
                "type": "cookie",
                "name": BOUND_COOKIE,
                "attributes": "Path=/v1/sessions/refresh; Secure; HttpOnly; SameSite=Strict",
            }],
            "allowed_refresh_initiators": ["app.example.com"],
        })
    );
    let (_, attributes) = set_cookie(&registered.headers, BOUND_COOKIE).expect("bound cookie");
    assert_eq!(
        attributes,
        "Path=/v1/sessions/refresh; Max-Age=300; HttpOnly; Secure; SameSite=Strict"
    );
    let bound = app.audit_events("session.dbsc_bound").await;
    assert_eq!(bound.len(), 1);
    assert_eq!(bound[0]["session_id"], session_id);
    assert_eq!(bound[0]["details"]["algorithm"], "ES256");

    // With both cookies the page refreshes as before, and nothing offers a second binding.
    let refreshed = browser.refresh(&app).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert!(
        refreshed
            .headers
            .get("secure-session-registration")
            .is_none()
    );
    // The registration challenge bound the session once.
    let again = post_proof(
        &app,
        &offer.path,
        Some(&Es256Key::generate().proof(&offer.challenge, true)),
        None,
    )
    .await;
    assert_refused(
        &again,
        StatusCode::BAD_REQUEST,
        "invalid_dbsc_proof",
        "already_bound",
    );
    assert_eq!(
        app.audit_count("security.dbsc_rejected", Some(("reason", "already_bound")))
            .await,
        1
    );
}

async fn an_unbound_session_refreshes_as_before_and_is_offered_a_binding_each_time() {
    let app = spawn_with_dbsc().await;
    let (mut browser, _, _) = Browser::sign_in(&app).await;
    let refreshed = browser.refresh(&app).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let offer = offer(&refreshed.headers).expect("offered again");
    let registered = browser.register(&app, &offer).await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.body);
}

async fn the_bound_cookie_is_renewed_through_a_signed_challenge_and_the_old_one_dies() {
    let app = spawn_with_dbsc().await;
    let (mut browser, offer, _) = Browser::sign_in(&app).await;
    browser.register(&app, &offer).await;
    let first_cookie = browser.bound_cookie.clone().expect("bound cookie");

    let renewed = browser.renew(&app).await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    assert_eq!(
        renewed.body["session_identifier"],
        *browser.session_id.as_ref().expect("registered")
    );
    let second_cookie = browser.bound_cookie.clone().expect("bound cookie");
    assert_ne!(first_cookie, second_cookie);

    // The cookie before the renewal is dead: a refresh with it gets nothing, and the refresh
    // token stays live for the browser's next, good, refresh.
    let stale = refresh_by_cookie(&app, &browser.refresh_cookie, Some(&first_cookie)).await;
    assert_refused(
        &stale,
        StatusCode::UNAUTHORIZED,
        "dbsc_required",
        "wrong_credential",
    );
    assert!(
        set_cookie(&stale.headers, REFRESH_COOKIE).is_none(),
        "the owner's refresh cookie is left alone"
    );
    let refreshed = browser.refresh(&app).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);

    // The bound cookie stops counting when it expires, renewed or not.
    app.advance(COOKIE_TTL);
    let expired = browser.refresh(&app).await;
    assert_refused(
        &expired,
        StatusCode::UNAUTHORIZED,
        "dbsc_required",
        "expired_credential",
    );
    assert_eq!(browser.renew(&app).await.status, StatusCode::OK);
    assert_eq!(browser.refresh(&app).await.status, StatusCode::OK);
}

async fn a_thief_with_every_cookie_but_not_the_key_gets_nothing() {
    let app = spawn_with_dbsc().await;
    let (mut owner, offer, _) = Browser::sign_in(&app).await;
    owner.register(&app, &offer).await;
    // The thief copies every cookie and the session instructions, but not the key.
    let stolen_refresh = owner.refresh_cookie.clone();
    let stolen_bound = owner.bound_cookie.clone().expect("bound cookie");
    let session_id = owner.session_id.clone().expect("registered");

    // Without the bound cookie the refresh token is refused, by cookie, in a body or at the
    // OAuth token endpoint, and none of these spends it.
    let bare = refresh_by_cookie(&app, &stolen_refresh, None).await;
    assert_refused(
        &bare,
        StatusCode::UNAUTHORIZED,
        "dbsc_required",
        "missing_credential",
    );
    let in_body = app.refresh(&stolen_refresh).await;
    assert_refused(
        &in_body,
        StatusCode::UNAUTHORIZED,
        "dbsc_required",
        "missing_credential",
    );
    let oauth = app
        .raw(app.client.post(format!("{}/oauth/token", app.base)).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &stolen_refresh),
        ]))
        .await;
    assert_eq!(oauth.status, StatusCode::BAD_REQUEST, "{}", oauth.body);
    assert_eq!(oauth.body["error"], "invalid_grant");

    // The bound cookie, once expired, cannot be renewed with a key of the thief's own.
    app.advance(COOKIE_TTL);
    let late = refresh_by_cookie(&app, &stolen_refresh, Some(&stolen_bound)).await;
    assert_refused(
        &late,
        StatusCode::UNAUTHORIZED,
        "dbsc_required",
        "expired_credential",
    );
    let asked = post_proof(&app, "/v1/dbsc/refresh", None, Some(&session_id)).await;
    let (challenge, _) = challenge(&asked.headers).expect("a challenge");
    let forged = Es256Key::generate().proof(&challenge, false);
    let refused = post_proof(&app, "/v1/dbsc/refresh", Some(&forged), Some(&session_id)).await;
    assert_refused(
        &refused,
        StatusCode::BAD_REQUEST,
        "invalid_dbsc_proof",
        "bad_signature",
    );
    assert!(set_cookie(&refused.headers, BOUND_COOKIE).is_none());

    // Everything was refused and audited; the owner's session is untouched.
    for reason in ["missing_credential", "expired_credential", "bad_signature"] {
        assert!(
            app.audit_count("security.dbsc_rejected", Some(("reason", reason)))
                .await
                >= 1,
            "{reason} audited"
        );
    }
    let events = app.audit_events("security.dbsc_rejected").await;
    assert!(events.iter().all(|event| event["session_id"] == session_id));
    assert_eq!(owner.renew(&app).await.status, StatusCode::OK);
    let refreshed = owner.refresh(&app).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_eq!(app.audit_count("security.reuse_detected", None).await, 0);
}

async fn refresh_challenges_are_single_use_and_expire() {
    let app = spawn_with_dbsc().await;
    let (mut browser, offer, _) = Browser::sign_in(&app).await;
    browser.register(&app, &offer).await;
    let id = browser.session_id.clone().expect("registered");
    let url = "/v1/dbsc/refresh";

    let asked = post_proof(&app, url, None, Some(&id)).await;
    assert_refused(
        &asked,
        StatusCode::FORBIDDEN,
        "dbsc_challenge",
        "challenge_required",
    );
    let (first, _) = challenge(&asked.headers).expect("a challenge");
    let proof = browser.key.proof(&first, false);
    assert_eq!(
        post_proof(&app, url, Some(&proof), Some(&id)).await.status,
        StatusCode::OK
    );

    // The same proof again: its challenge was spent by the renewal; a new one comes back.
    let replayed = post_proof(&app, url, Some(&proof), Some(&id)).await;
    assert_refused(
        &replayed,
        StatusCode::FORBIDDEN,
        "dbsc_challenge",
        "stale_challenge",
    );
    let (second, _) = challenge(&replayed.headers).expect("a new challenge");
    assert_ne!(first, second);

    // A challenge too old, and one that is no challenge of this server's.
    app.advance(Duration::from_secs(121));
    let late = post_proof(
        &app,
        url,
        Some(&browser.key.proof(&second, false)),
        Some(&id),
    )
    .await;
    assert_refused(
        &late,
        StatusCode::FORBIDDEN,
        "dbsc_challenge",
        "stale_challenge",
    );
    let (third, _) = challenge(&late.headers).expect("a new challenge");
    let made_up = post_proof(
        &app,
        url,
        Some(&browser.key.proof("made-up", false)),
        Some(&id),
    )
    .await;
    assert_refused(
        &made_up,
        StatusCode::FORBIDDEN,
        "dbsc_challenge",
        "unknown_challenge",
    );
    // A registration challenge is no refresh challenge.
    let swapped = post_proof(
        &app,
        url,
        Some(&browser.key.proof(&offer.challenge, false)),
        Some(&id),
    )
    .await;
    assert_refused(
        &swapped,
        StatusCode::FORBIDDEN,
        "dbsc_challenge",
        "unknown_challenge",
    );
    let current = post_proof(
        &app,
        url,
        Some(&browser.key.proof(&third, false)),
        Some(&id),
    )
    .await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.body);
    assert!(
        app.audit_count(
            "security.dbsc_rejected",
            Some(("reason", "stale_challenge"))
        )
        .await
            >= 2
    );
}

async fn registration_refuses_proofs_not_made_by_the_key_they_carry() {
    let app = spawn_with_dbsc().await;
    let (_, offer, _) = Browser::sign_in(&app).await;
    let key = Es256Key::generate();
    let other = Es256Key::generate();
    let register = |proof: String| {
        let app = &app;
        let path = offer.path.clone();
        async move { post_proof(app, &path, Some(&proof), None).await }
    };
    let claims = json!({ "jti": offer.challenge });

    // Signed by another key than the one in the header.
    let swapped = jws(
        &json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": key.jwk()}),
        &claims,
        |input| other.sign(input),
    );
    assert_refused(
        &register(swapped).await,
        StatusCode::BAD_REQUEST,
        "invalid_dbsc_proof",
        "bad_signature",
    );
    // alg none, and HS256 keyed with a secret of the client's choosing.
    let none = jws(
        &json!({"alg": "none", "typ": "dbsc+jwt", "jwk": key.jwk()}),
        &claims,
        |_| Vec::new(),
    );
    assert_refused(
        &register(none).await,
        StatusCode::BAD_REQUEST,
        "invalid_dbsc_proof",
        "unsupported_algorithm",
    );
    let secret = b"a secret the client chose itself";
    let hs256 = jws(
        &json!({"alg": "HS256", "typ": "dbsc+jwt", "jwk": {"kty": "oct", "k": b64(secret)}}),
        &claims,
        |input| {
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input)
                .as_ref()
                .to_vec()
        },
    );
    assert_refused(
        &register(hs256).await,
        StatusCode::BAD_REQUEST,
        "invalid_dbsc_proof",
        "unsupported_algorithm",
    );
    // An algorithm sessiond verifies but did not offer (Ed25519).
    let ed25519 = Ed25519KeyPair::generate().expect("Ed25519 key");
    let eddsa = jws(
        &json!({"alg": "EdDSA", "typ": "dbsc+jwt", "jwk": {
            "kty": "OKP", "crv": "Ed25519", "x": b64(ed25519.public_key().as_ref())}}),
        &claims,
        |input| ed25519.sign(input).as_ref().to_vec(),
    );
    assert_refused(
        &register(eddsa).await,
        StatusCode::BAD_REQUEST,
        "invalid_dbsc_proof",
        "algorithm_not_offered",
    );
    // Another type, a made-up challenge, and a challenge past its time.
    let typed = jws(
        &json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": key.jwk()}),
        &claims,
        |input| key.sign(input),
    );
    assert_refused(
        &register(typed).await,
        StatusCode::BAD_REQUEST,
        "invalid_dbsc_proof",
        "wrong_type",
    );
    assert_refused(
        &register(key.proof("made-up", true)).await,
        StatusCode::BAD_REQUEST,
        "invalid_dbsc_proof",
        "unknown_challenge",
    );
    let missing = app
        .raw(app.client.post(format!("{}{}", app.base, offer.path)))
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.body);
    assert_eq!(missing.error_code(), "invalid_request");
    app.advance(Duration::from_secs(301));
    assert_refused(
        &register(key.proof(&offer.challenge, true)).await,
        StatusCode::BAD_REQUEST,
        "invalid_dbsc_proof",
        "stale_challenge",
    );
    // None of these bound anything.
    assert_eq!(app.scalar("SELECT COUNT(*) FROM dbsc_bindings").await, 0);
}

async fn a_revoked_session_is_ended_and_unknown_ids_learn_nothing() {
    let app = spawn_with_dbsc().await;
    let (mut browser, offer, created) = Browser::sign_in(&app).await;
    browser.register(&app, &offer).await;
    let id = browser.session_id.clone().expect("registered");
    let revoked = app
        .delete(&format!("/v1/sessions/{id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    let ended = post_proof(&app, "/v1/dbsc/refresh", None, Some(&id)).await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    assert_eq!(ended.body, json!({"continue": false}));
    let (value, attributes) = set_cookie(&ended.headers, BOUND_COOKIE).expect("cleared");
    assert!(value.is_empty() && attributes.contains("Max-Age=0"));
    let unknown = post_proof(
        &app,
        "/v1/dbsc/refresh",
        None,
        Some("8a4f2c4e-9d7c-4b8e-8a51-1f3b2c4d5e6f"),
    )
    .await;
    assert_eq!(unknown.body, json!({"continue": false}));
    let malformed = post_proof(&app, "/v1/dbsc/refresh", None, Some("not-a-session")).await;
    assert_eq!(
        malformed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        malformed.body
    );
    // A session revoked before it registers is not bound either.
    drop(created);
    let (_, offer, created) = Browser::sign_in(&app).await;
    let id = text(&created["session"], "id");
    app.delete(&format!("/v1/sessions/{id}"), Some(ADMIN_KEY))
        .await;
    let late = post_proof(
        &app,
        &offer.path,
        Some(&Es256Key::generate().proof(&offer.challenge, true)),
        None,
    )
    .await;
    assert_refused(
        &late,
        StatusCode::BAD_REQUEST,
        "invalid_dbsc_proof",
        "inactive_session",
    );
}

async fn without_dbsc_nothing_is_offered_and_the_routes_are_absent() {
    let app = TestApp::spawn_with(|raw| raw.cookie_mode = Some("on".into())).await;
    let created = app
        .post("/v1/sessions", Some(ADMIN_KEY), json!({"user_id": "alice"}))
        .await;
    assert!(created.headers.get("secure-session-registration").is_none());
    let answer = post_proof(&app, "/v1/dbsc/refresh", None, Some("x")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

/// A refresh by cookie with the bound cookie and a `DPoP` proof, each when given.
async fn refresh_with_proof(
    app: &TestApp,
    refresh: &str,
    bound: Option<&str>,
    proof: Option<String>,
) -> Answer {
    let mut cookies = format!("{REFRESH_COOKIE}={refresh}");
    if let Some(bound) = bound {
        cookies.push_str(&format!("; {BOUND_COOKIE}={bound}"));
    }
    let mut request = app
        .client
        .post(format!("{}/v1/sessions/refresh", app.base))
        .header("cookie", cookies)
        .header("x-sessiond-csrf", "1");
    if let Some(proof) = proof {
        request = request.header("DPoP", proof);
    }
    app.raw(request).await
}

/// What a refused refresh must leave as it was: the session's tokens, how many are spent, and
/// whether it is bound to a DPoP key.
async fn refresh_footprint(app: &TestApp, session_id: &str) -> [i64; 3] {
    [
        app.scalar(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{session_id}'"
        ))
        .await,
        app.scalar(&format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{session_id}' \
             AND spent_at IS NOT NULL"
        ))
        .await,
        app.scalar(&format!(
            "SELECT COUNT(*) FROM sessions WHERE id = '{session_id}' AND dpop_jkt IS NOT NULL"
        ))
        .await,
    ]
}

async fn a_session_bound_by_dpop_and_dbsc_refreshes_only_with_both() {
    let app = spawn_with_dbsc().await;
    let (mut browser, offer, created) = Browser::sign_in(&app).await;
    let session_id = text(&created["session"], "id").to_owned();
    browser.register(&app, &offer).await;
    let bound = browser.bound_cookie.clone().expect("bound cookie");
    let dpop = DpopKey::es256();
    let proof = |app: &TestApp| {
        dpop.proof(
            "POST",
            "http://sessiond.test/v1/sessions/refresh",
            app.clock_now(),
        )
    };

    // A valid proof without the bound cookie is refused for DBSC before it binds anything:
    // the session does not take the proof's key and the token is not spent.
    let before = refresh_footprint(&app, &session_id).await;
    assert_eq!(before[2], 0, "not bound to a DPoP key yet");
    let first_proof = proof(&app);
    let no_cookie = refresh_with_proof(
        &app,
        &browser.refresh_cookie,
        None,
        Some(first_proof.clone()),
    )
    .await;
    assert_refused(
        &no_cookie,
        StatusCode::UNAUTHORIZED,
        "dbsc_required",
        "missing_credential",
    );
    assert_eq!(refresh_footprint(&app, &session_id).await, before);
    // The refused refresh spent its proof all the same: sent again with the bound cookie, it
    // is a replay, and still nothing is spent or bound.
    let replayed = refresh_with_proof(
        &app,
        &browser.refresh_cookie,
        Some(&bound),
        Some(first_proof),
    )
    .await;
    assert_refused(
        &replayed,
        StatusCode::BAD_REQUEST,
        "invalid_dpop_proof",
        "replayed",
    );
    assert_eq!(refresh_footprint(&app, &session_id).await, before);

    // With both, the rotation binds the session to the DPoP key as well.
    let both = refresh_with_proof(
        &app,
        &browser.refresh_cookie,
        Some(&bound),
        Some(proof(&app)),
    )
    .await;
    assert_eq!(both.status, StatusCode::OK, "{}", both.body);
    assert_eq!(both.body["token_type"], "DPoP", "{}", both.body);
    browser.refresh_cookie = set_cookie(&both.headers, REFRESH_COOKIE)
        .expect("a new refresh cookie")
        .0;
    let bound_both = refresh_footprint(&app, &session_id).await;
    assert_eq!(bound_both[2], 1, "bound to the DPoP key");

    // Bound both ways: the bound cookie without a proof is refused for DPoP, a proof without
    // the bound cookie for DBSC, and a proof of another key for DPoP; none spends the token.
    let no_proof = refresh_with_proof(&app, &browser.refresh_cookie, Some(&bound), None).await;
    assert_refused(
        &no_proof,
        StatusCode::BAD_REQUEST,
        "invalid_dpop_proof",
        "missing_proof",
    );
    assert_eq!(
        no_proof.headers["www-authenticate"],
        r#"DPoP error="invalid_dpop_proof""#
    );
    let no_cookie =
        refresh_with_proof(&app, &browser.refresh_cookie, None, Some(proof(&app))).await;
    assert_refused(
        &no_cookie,
        StatusCode::UNAUTHORIZED,
        "dbsc_required",
        "missing_credential",
    );
    let other_key = DpopKey::es256().proof(
        "POST",
        "http://sessiond.test/v1/sessions/refresh",
        app.clock_now(),
    );
    let foreign =
        refresh_with_proof(&app, &browser.refresh_cookie, Some(&bound), Some(other_key)).await;
    assert_refused(
        &foreign,
        StatusCode::BAD_REQUEST,
        "invalid_dpop_proof",
        "wrong_key",
    );
    assert_eq!(refresh_footprint(&app, &session_id).await, bound_both);

    // Each refusal has its own audit event, and none was taken for reuse.
    assert_eq!(
        app.audit_count(
            "security.dbsc_rejected",
            Some(("reason", "missing_credential"))
        )
        .await,
        2
    );
    for reason in ["missing_proof", "wrong_key"] {
        assert_eq!(
            app.audit_count("security.dpop_rejected", Some(("reason", reason)))
                .await,
            1,
            "{reason}"
        );
    }
    assert_eq!(app.audit_count("security.reuse_detected", None).await, 0);

    // The owner, with both, still refreshes: the token the refusals left live is spent now.
    let again = refresh_with_proof(
        &app,
        &browser.refresh_cookie,
        Some(&bound),
        Some(proof(&app)),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let after = refresh_footprint(&app, &session_id).await;
    assert_eq!(after[1], bound_both[1] + 1, "one more token spent");
}

crate::on_every_store!(
    signing_in_offers_a_registration_that_binds_the_session,
    an_unbound_session_refreshes_as_before_and_is_offered_a_binding_each_time,
    the_bound_cookie_is_renewed_through_a_signed_challenge_and_the_old_one_dies,
    a_thief_with_every_cookie_but_not_the_key_gets_nothing,
    refresh_challenges_are_single_use_and_expire,
    registration_refuses_proofs_not_made_by_the_key_they_carry,
    a_revoked_session_is_ended_and_unknown_ids_learn_nothing,
    without_dbsc_nothing_is_offered_and_the_routes_are_absent,
    a_session_bound_by_dpop_and_dbsc_refreshes_only_with_both,
);

/// Instances sharing PostgreSQL accept each other's challenges, and a challenge spent on one
/// is spent on all.
#[tokio::test]
async fn instances_share_challenges_and_their_spending() {
    crate::helpers::Backend::Postgres
        .run(async {
            let first = spawn_with_dbsc().await;
            let second = first.sibling().await;
            let (mut browser, offer, _) = Browser::sign_in(&first).await;
            // Offered by one instance, registered at the other.
            assert_eq!(
                browser.register(&second, &offer).await.status,
                StatusCode::OK
            );
            let id = browser.session_id.clone().expect("registered");
            let asked = post_proof(&first, "/v1/dbsc/refresh", None, Some(&id)).await;
            let (challenge, _) = challenge(&asked.headers).expect("a challenge");
            let proof = browser.key.proof(&challenge, false);
            let renewed = post_proof(&second, "/v1/dbsc/refresh", Some(&proof), Some(&id)).await;
            assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
            browser.keep(&renewed);
            let replayed = post_proof(&first, "/v1/dbsc/refresh", Some(&proof), Some(&id)).await;
            assert_refused(
                &replayed,
                StatusCode::FORBIDDEN,
                "dbsc_challenge",
                "stale_challenge",
            );
            assert_eq!(browser.refresh(&first).await.status, StatusCode::OK);
        })
        .await;
}
