//! Device Bound Session Credentials (DBSC) in cookie mode (`SESSIOND_DBSC=on`): the HTTP half
//! of `sessiond_core::dbsc`, after the W3C WebAppSec editor's draft of February 2026
//! (<https://w3c.github.io/webappsec-dbsc/>), the protocol Chromium ships.
//!
//! 1. **Offer.** Every cookie-mode answer that hands out a refresh cookie of a session not yet
//!    bound (`POST /v1/sessions`, `POST /v1/sessions/refresh`) also carries
//!    `Secure-Session-Registration: (ES256 RS256);path="/v1/dbsc/registration";challenge="…"`,
//!    the challenge naming the session.
//! 2. **Registration.** The browser makes a key of one of those algorithms and posts a DBSC
//!    proof in `Secure-Session-Response`: a JWT of `typ: dbsc+jwt` carrying its public key as
//!    the header's `jwk`, with the challenge as `jti`, signed by that key. A valid one binds the
//!    session to the key (once) and is answered with the session instructions (JSON:
//!    `session_identifier`, `refresh_url`, `scope`, `credentials`) and the bound cookie,
//!    `__Secure-sessiond-dbsc`, scoped like the refresh cookie to `/v1/sessions/refresh` and good
//!    for `SESSIOND_DBSC_COOKIE_TTL` (5 minutes by default).
//! 3. **Use.** From then on a refresh of the session by its refresh token, by cookie or
//!    otherwise (`/oauth/token` included), needs the bound cookie in force as well
//!    ([`admit`]); without it the answer is `401 dbsc_required` and nothing is spent, so the
//!    refresh token stays live for its owner. The browser, which knows the bound cookie is due
//!    on `/v1/sessions/refresh`, holds such a request back while it renews the cookie.
//! 4. **Renewal.** The browser posts to `/v1/dbsc/refresh` with `Sec-Secure-Session-Id`; the
//!    first answer is `403` with `Secure-Session-Challenge: "…";id="…"`, and the browser posts
//!    again with a proof over that challenge (`jti`), signed by the bound key, with no key in
//!    its header. A valid one gets a new bound cookie (which spends the old one and the
//!    challenge) and the instructions again; a session that is gone gets `{"continue": false}`.
//!
//! What it protects: a thief who copies every cookie of the browser (and even the refresh
//! token) holds a bound cookie that stops counting at its expiry, or as soon as the browser
//! renews it, and cannot renew it without the key; the owner's session is untouched by the
//! thief's attempts. Challenges are stateless (an HMAC under a key derived from the master key),
//! so nothing is kept per request and every instance accepts the others' challenges; see
//! `sessiond_core::dbsc` for their rules and `docs/security-model.md` for what binding does not
//! protect against.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sessiond_core::dbsc::{
    ALGORITHMS, CredentialCheck, IssuedCredential, Refusal, Registration, Renewal, credential_names,
};
use sessiond_core::{Session, SessionId, Timestamp};

use super::ApiError;
use super::cookies::{self, REFRESH_PATH as REFRESH_COOKIE_PATH};
use super::limits::failed_credential;
use super::limits::{self, ClientIp, Subject};
use crate::ratelimit::Limit;
use crate::state::AppState;

/// The bound cookie. Like the refresh cookie, it is sent to the refresh path only.
pub(crate) const CREDENTIAL_COOKIE: &str = "__Secure-sessiond-dbsc";
/// Where browsers register a key.
pub(crate) const REGISTRATION_PATH: &str = "/v1/dbsc/registration";
/// Where browsers renew the bound cookie.
pub(crate) const REFRESH_PATH: &str = "/v1/dbsc/refresh";
/// The answer header that offers a registration.
const REGISTRATION_HEADER: &str = "secure-session-registration";
/// The answer header that carries a challenge.
const CHALLENGE_HEADER: &str = "secure-session-challenge";
/// The request header that carries a DBSC proof.
const RESPONSE_HEADER: &str = "secure-session-response";
/// The request header that names the session to renew.
const SESSION_ID_HEADER: &str = "sec-secure-session-id";

/// Adds the registration offer for `session` to `response`, when DBSC is on.
pub(crate) fn offer_registration(state: &AppState, response: &mut Response, session: SessionId) {
    let Some(dbsc) = &state.dbsc else {
        return;
    };
    let algorithms: Vec<&str> = ALGORITHMS
        .iter()
        .map(|algorithm| algorithm.jose_name())
        .collect();
    let challenge = dbsc.challenges.registration(session, state.service.now());
    let offer = format!(
        "({});path=\"{REGISTRATION_PATH}\";challenge=\"{challenge}\"",
        algorithms.join(" ")
    );
    // The challenge is base64url, so the value is always a valid header.
    if let Ok(value) = HeaderValue::from_str(&offer) {
        response.headers_mut().insert(REGISTRATION_HEADER, value);
    }
}

/// The bound cookie's value in `headers`, if there is one.
pub(crate) fn credential_cookie(headers: &HeaderMap) -> Option<String> {
    cookies::cookie(headers, CREDENTIAL_COOKIE)
}

/// Whether a refresh of `session` that succeeded with `credential` shows the session bound:
/// only a bound session has credentials naming it, and a bound session refreshes only with
/// its credential in force. Such an answer offers no registration.
pub(crate) fn answered_bound(credential: Option<&str>, session: SessionId) -> bool {
    credential.is_some_and(|value| credential_names(value, session))
}

/// Lets a refresh of `session` by its refresh token through if DBSC is off, if the session is
/// not bound, or if `credential` (the bound cookie's value) is the credential in force;
/// otherwise `401 dbsc_required`, and the refusal is audited. Called before anything is
/// written, so a refused refresh leaves the refresh token live.
pub(crate) async fn admit(
    state: &AppState,
    client: ClientIp,
    session: &Session,
    credential: Option<&str>,
) -> Result<(), ApiError> {
    if state.dbsc.is_none() {
        return Ok(());
    }
    let ip = client.0.map(|ip| ip.to_string());
    match state
        .service
        .check_dbsc_credential(session, credential, ip)
        .await?
    {
        CredentialCheck::Unbound | CredentialCheck::Bound => Ok(()),
        CredentialCheck::Refused(refusal) => Err(ApiError::Dbsc {
            status: StatusCode::UNAUTHORIZED,
            code: "dbsc_required",
            reason: refusal.reason(),
            message: "this session is bound to a browser key (DBSC): its refresh needs the \
                      bound cookie in force, which only that key renews at /v1/dbsc/refresh",
        }),
    }
}

/// `POST /v1/dbsc/registration`: binds the session a registration challenge names to the key
/// that signed the DBSC proof in `Secure-Session-Response`.
pub(crate) async fn register(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(dbsc) = state.dbsc.clone() else {
        return Err(ApiError::NotFound);
    };
    within_request_limit(&state, client).await?;
    let proof = structured_string(headers.get(RESPONSE_HEADER)).ok_or_else(|| {
        ApiError::BadRequest(
            "missing Secure-Session-Response: the DBSC proof signed by the new key".into(),
        )
    })?;
    let ip = client.0.map(|ip| ip.to_string());
    let registration = state
        .service
        .register_dbsc(&dbsc.challenges, &proof, dbsc.cookie_ttl, ip)
        .await?;
    let now = state.service.now();
    match registration {
        Registration::Bound {
            session,
            credential,
        } => Ok(session_answer(&state, session.id, &credential, now)),
        Registration::Refused(refusal) => {
            Err(failed_credential(&state, client.0, now, proof_refused(refusal)).await)
        }
    }
}

/// `POST /v1/dbsc/refresh`: renews the bound cookie of the session `Sec-Secure-Session-Id`
/// names, against a proof of its key over a challenge (asked for first with a `403`).
pub(crate) async fn refresh(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(dbsc) = state.dbsc.clone() else {
        return Err(ApiError::NotFound);
    };
    within_request_limit(&state, client).await?;
    let session = structured_string(headers.get(SESSION_ID_HEADER))
        .and_then(|id| SessionId::parse(&id, "Sec-Secure-Session-Id").ok())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "missing or malformed Sec-Secure-Session-Id: the session to renew".into(),
            )
        })?;
    let proof = structured_string(headers.get(RESPONSE_HEADER));
    let ip = client.0.map(|ip| ip.to_string());
    let renewal = state
        .service
        .renew_dbsc(
            &dbsc.challenges,
            session,
            proof.as_deref(),
            dbsc.cookie_ttl,
            ip,
        )
        .await?;
    let now = state.service.now();
    match renewal {
        Renewal::Challenge(challenge) => Ok(challenge_answer(&challenge, session, None)),
        Renewal::Renewed {
            session,
            credential,
        } => Ok(session_answer(&state, session.id, &credential, now)),
        Renewal::Ended => {
            // A proof for a session that is not bound is a failed authentication of the
            // address; once its allowance is spent, the answer is `429`.
            if proof.is_some() {
                let counted = failed_credential(&state, client.0, now, ApiError::NotFound).await;
                if matches!(counted, ApiError::RateLimited(_)) {
                    return Err(counted);
                }
            }
            let mut response = Json(json!({ "continue": false })).into_response();
            cookies::set_cookie(&mut response, &cleared_credential_cookie());
            Ok(response)
        }
        Renewal::Refused {
            refusal,
            challenge: Some(challenge),
        } => Ok(challenge_answer(&challenge, session, Some(refusal))),
        Renewal::Refused {
            refusal,
            challenge: None,
        } => Err(failed_credential(&state, client.0, now, proof_refused(refusal)).await),
    }
}

/// The client address must not have spent its request allowance.
async fn within_request_limit(state: &AppState, client: ClientIp) -> Result<(), ApiError> {
    let Some(key) = client.key() else {
        return Ok(());
    };
    match state
        .limits
        .acquire(Limit::PerIp, &key, state.service.now())
    {
        Ok(()) => Ok(()),
        Err(refusal) => {
            let subject = Subject {
                ip: client.0,
                ..Subject::default()
            };
            Err(limits::refused(state, refusal, subject).await)
        }
    }
}

/// `400 invalid_dbsc_proof` naming why.
fn proof_refused(refusal: Refusal) -> ApiError {
    ApiError::Dbsc {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_dbsc_proof",
        reason: refusal.reason(),
        message: "the DBSC proof is refused; reason says why",
    }
}

/// `403` with `Secure-Session-Challenge: "<challenge>";id="<session>"`: the browser signs the
/// challenge and asks again. `refusal` says why a proof that came was not taken.
fn challenge_answer(challenge: &str, session: SessionId, refusal: Option<Refusal>) -> Response {
    let error = match refusal {
        None => ApiError::Dbsc {
            status: StatusCode::FORBIDDEN,
            code: "dbsc_challenge",
            reason: "challenge_required",
            message: "sign the challenge of Secure-Session-Challenge with the session's key",
        },
        Some(refusal) => ApiError::Dbsc {
            status: StatusCode::FORBIDDEN,
            code: "dbsc_challenge",
            reason: refusal.reason(),
            message: "the proof signed no current challenge: sign the one of \
                      Secure-Session-Challenge",
        },
    };
    let mut response = error.into_response();
    // Both are base64url or a UUID, so the value is always a valid header.
    if let Ok(value) = HeaderValue::from_str(&format!("\"{challenge}\";id=\"{session}\"")) {
        response.headers_mut().insert(CHALLENGE_HEADER, value);
    }
    response
}

/// The session instructions and the bound cookie: the answer of a registration and of a
/// renewal alike.
fn session_answer(
    state: &AppState,
    session: SessionId,
    credential: &IssuedCredential,
    now: Timestamp,
) -> Response {
    let mut instructions = json!({
        "session_identifier": session.to_string(),
        "refresh_url": REFRESH_PATH,
        "scope": { "include_site": false },
        "credentials": [{
            "type": "cookie",
            "name": CREDENTIAL_COOKIE,
            "attributes": format!("Path={REFRESH_COOKIE_PATH}; Secure; HttpOnly; SameSite=Strict"),
        }],
    });
    // Pages of the configured origins refresh cross-origin; the browser renews the cookie
    // only for requests from the session's own origin and these hosts.
    let initiators: Vec<Value> = state
        .cors_origins
        .iter()
        .filter_map(|origin| origin.split_once("://").map(|(_, host)| host))
        .map(|host| host.rsplit_once(':').map_or(host, |(name, _)| name))
        .map(|host| Value::from(host.to_owned()))
        .collect();
    if !initiators.is_empty()
        && let Some(fields) = instructions.as_object_mut()
    {
        fields.insert(
            "allowed_refresh_initiators".into(),
            Value::Array(initiators),
        );
    }
    let mut response = Json(instructions).into_response();
    cookies::set_cookie(&mut response, &credential_set_cookie(credential, now));
    response
}

/// The `Set-Cookie` value that hands out `credential` until it expires.
fn credential_set_cookie(credential: &IssuedCredential, now: Timestamp) -> String {
    let max_age = (credential.stored.expires_at.unix_seconds() - now.unix_seconds()).max(0);
    format!(
        "{CREDENTIAL_COOKIE}={}; Path={REFRESH_COOKIE_PATH}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict",
        credential.value.as_str()
    )
}

/// The `Set-Cookie` value that deletes the bound cookie.
pub(crate) fn cleared_credential_cookie() -> String {
    format!(
        "{CREDENTIAL_COOKIE}=; Path={REFRESH_COOKIE_PATH}; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
    )
}

/// The string of a structured-field item (RFC 9651 §3.3.3), its parameters ignored, as the
/// draft defines `Secure-Session-Response` and `Sec-Secure-Session-Id`: `"text"` with `\"` and
/// `\\` escapes. A bare value is taken as it is, as earlier drafts sent it. `None` when it is
/// absent, empty or not a valid string.
fn structured_string(value: Option<&HeaderValue>) -> Option<String> {
    let text = value?.to_str().ok()?.trim();
    let Some(quoted) = text.strip_prefix('"') else {
        let bare = text.split(';').next()?.trim();
        return (!bare.is_empty()).then(|| bare.to_owned());
    };
    let mut string = String::new();
    let mut chars = quoted.chars();
    loop {
        match chars.next()? {
            '\\' => match chars.next()? {
                escaped @ ('"' | '\\') => string.push(escaped),
                _ => return None,
            },
            '"' => {
                let rest = chars.as_str().trim_start();
                return (!string.is_empty() && (rest.is_empty() || rest.starts_with(';')))
                    .then_some(string);
            }
            visible @ ' '..='~' => string.push(visible),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Option<String> {
        structured_string(Some(&HeaderValue::from_str(text).expect("header")))
    }

    #[test]
    fn structured_strings_are_read_with_escapes_and_without_parameters() {
        assert_eq!(parsed("\"abc.def\"").as_deref(), Some("abc.def"));
        assert_eq!(parsed(" \"a\\\"b\\\\c\" ").as_deref(), Some("a\"b\\c"));
        assert_eq!(parsed("\"abc\";x=1").as_deref(), Some("abc"));
        assert_eq!(parsed("abc.def").as_deref(), Some("abc.def"), "bare");
        assert_eq!(parsed("abc;x=1").as_deref(), Some("abc"));
        assert_eq!(parsed("\"abc"), None, "unterminated");
        assert_eq!(parsed("\"a\\nb\""), None, "unknown escape");
        assert_eq!(parsed("\"abc\" junk"), None);
        assert_eq!(parsed("\"\""), None, "empty");
        assert_eq!(parsed(""), None);
        assert_eq!(structured_string(None), None);
    }
}
