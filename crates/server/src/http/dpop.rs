//! DPoP (RFC 9449) at the edge: the `DPoP` request header, the answers to a refused proof, the
//! `security.dpop_rejected` audit event, and the `DPoP-Nonce` answer header.
//!
//! A refused proof is answered `invalid_dpop_proof` (or `use_dpop_nonce` when only a fresh
//! nonce is missing, with the nonce in `DPoP-Nonce`), with `WWW-Authenticate: DPoP error=…`:
//! `400` where a refresh token is spent (RFC 9449 §5, the token endpoint), `401` on the routes
//! that take an access token (§7.1, a protected resource). Every refusal but a missing nonce
//! counts as a failed authentication of the client's address (see
//! [`super::limits::failed_credential`]) and is audited with its reason, so a flood of forged
//! proofs ends in `429` and bounded audit rows.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value};
use sessiond_core::audit::{NewAuditEvent, Severity};
use sessiond_core::dpop::{DpopError, VerifiedProof};
use sessiond_core::token::ValidatedToken;
use sessiond_core::{SessionId, UserId};

use super::ApiError;
use super::limits::failed_credential;
use crate::state::AppState;

/// The request header that carries a proof.
pub(crate) const DPOP_HEADER: &str = "dpop";
/// The answer header that carries a nonce.
pub(crate) const NONCE_HEADER: &str = "dpop-nonce";
/// The audit event of a refused proof.
pub(crate) const DPOP_REJECTED: &str = "security.dpop_rejected";

/// Where a proof was refused: on a route that spends a refresh token (`400`), or on one that
/// takes an access token (`401`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProofRoute {
    Refresh,
    Resource,
}

/// A refused proof, as answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProofRefusal {
    pub(crate) error: DpopError,
    pub(crate) route: ProofRoute,
}

impl ProofRefusal {
    /// The `error` code: `use_dpop_nonce` or `invalid_dpop_proof`.
    pub(crate) fn code(self) -> &'static str {
        if self.error.is_use_nonce() {
            "use_dpop_nonce"
        } else {
            "invalid_dpop_proof"
        }
    }

    /// The status of the answer.
    pub(crate) fn status(self) -> StatusCode {
        match self.route {
            ProofRoute::Refresh => StatusCode::BAD_REQUEST,
            ProofRoute::Resource => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `WWW-Authenticate` challenge of the answer.
    pub(crate) fn challenge(self) -> HeaderValue {
        if self.error.is_use_nonce() {
            HeaderValue::from_static(r#"DPoP error="use_dpop_nonce""#)
        } else {
            HeaderValue::from_static(r#"DPoP error="invalid_dpop_proof""#)
        }
    }

    /// Sets the refusal's headers on an answer: the challenge (the nonce, if any, is set by
    /// [`nonce_answers`]).
    pub(crate) fn set_headers(self, headers: &mut HeaderMap) {
        headers.insert(header::WWW_AUTHENTICATE, self.challenge());
    }
}

/// The proof of a request: `None` without a `DPoP` header.
///
/// # Errors
/// [`DpopError::Malformed`] when the header is repeated (RFC 9449 §4.3 allows one) or is not
/// visible ASCII.
pub(crate) fn proof_header(headers: &HeaderMap) -> Result<Option<&str>, DpopError> {
    let mut values = headers.get_all(DPOP_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(DpopError::Malformed);
    }
    value.to_str().map(Some).map_err(|_| DpopError::Malformed)
}

/// The session a refused proof was presented for, when known.
#[derive(Debug, Default)]
pub(crate) struct ProofSubject {
    pub(crate) session_id: Option<SessionId>,
    pub(crate) user_id: Option<UserId>,
}

/// Answers a refused proof: a missing nonce as it is; anything else counted as a failed
/// authentication of `ip` (a `429` once its allowance is spent) and audited as
/// `security.dpop_rejected` with its reason, `path` and, when known, the session.
pub(crate) async fn refused(
    state: &AppState,
    ip: Option<IpAddr>,
    refusal: ProofRefusal,
    subject: ProofSubject,
    path: &str,
) -> ApiError {
    if refusal.error.is_use_nonce() {
        return ApiError::Dpop(refusal);
    }
    counted_and_audited(
        state,
        ip,
        refusal.error,
        subject,
        path,
        ApiError::Dpop(refusal),
    )
    .await
}

/// Counts a refusal for `error` as a failed authentication of `ip` and audits it, answering
/// `answer`, or the `429` (not audited as a refused proof) once the address's allowance is
/// spent.
pub(crate) async fn counted_and_audited(
    state: &AppState,
    ip: Option<IpAddr>,
    error: DpopError,
    subject: ProofSubject,
    path: &str,
    answer: ApiError,
) -> ApiError {
    let now = state.service.now();
    let answer = failed_credential(state, ip, now, answer).await;
    if matches!(answer, ApiError::RateLimited(_)) {
        return answer;
    }
    tracing::warn!(
        reason = error.reason(),
        session_id = subject.session_id.map(tracing::field::display),
        path,
        "DPoP proof refused"
    );
    let mut details = Map::new();
    details.insert("reason".into(), Value::from(error.reason()));
    details.insert("path".into(), Value::from(path));
    let event = NewAuditEvent {
        kind: DPOP_REJECTED,
        severity: Severity::Warning,
        user_id: subject.user_id,
        session_id: subject.session_id,
        ip: ip.map(|ip| ip.to_string()),
        at: now,
        details,
    };
    // The answer does not depend on the audit row: a failed write is logged, and the proof is
    // refused all the same.
    if let Err(error) = state.service.store().append_audit(&[event]).await {
        tracing::warn!(error = %error, "could not audit a refused DPoP proof");
    }
    answer
}

/// The scheme of an access token in `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenScheme {
    /// `Bearer`: the token alone (RFC 6750).
    Bearer,
    /// `DPoP`: the token with a proof of its key (RFC 9449 §7.1).
    Dpop,
}

/// Checks that `token` (validated, presented as `raw` with `scheme`) may be used by this
/// request: a token bound to a key only as `DPoP` with a fresh proof of that key, made for
/// this method, path and token, and never used before on this server; an unbound one only as
/// `Bearer`.
///
/// # Errors
/// [`ApiError::WrongTokenScheme`] for the wrong scheme (a bound token as `Bearer` is also
/// counted and audited, as it is what a stolen token looks like), or the refusal of the proof.
pub(crate) async fn check_token_use(
    state: &AppState,
    parts: &Parts,
    ip: Option<IpAddr>,
    token: &ValidatedToken,
    raw: &str,
    scheme: TokenScheme,
) -> Result<(), ApiError> {
    let path = parts.uri.path();
    let subject = || ProofSubject {
        session_id: Some(token.session_id),
        user_id: Some(UserId::from_trusted(token.user_id.clone())),
    };
    let Some(jkt) = token.confirmation.as_deref() else {
        return match scheme {
            TokenScheme::Bearer => Ok(()),
            TokenScheme::Dpop => Err(ApiError::WrongTokenScheme(
                "this access token is not bound to a DPoP key: send it as `Authorization: Bearer`",
            )),
        };
    };
    if scheme == TokenScheme::Bearer {
        let answer = ApiError::WrongTokenScheme(
            "this access token is bound to a DPoP key: send it as `Authorization: DPoP` with a \
             DPoP proof",
        );
        return Err(counted_and_audited(
            state,
            ip,
            DpopError::MissingProof,
            subject(),
            path,
            answer,
        )
        .await);
    }
    let now = state.service.now();
    let checked = proof_header(&parts.headers)
        .and_then(|proof| proof.ok_or(DpopError::MissingProof))
        .and_then(|proof| {
            state
                .dpop
                .verify(proof, parts.method.as_str(), path, Some(raw), now)
        })
        .and_then(|proof| {
            if proof.jkt != jkt {
                Err(DpopError::WrongKey)
            } else if !state.dpop.first_use_on_resource(&proof, now) {
                Err(DpopError::Replayed)
            } else {
                Ok(())
            }
        });
    match checked {
        Ok(()) => Ok(()),
        Err(error) => {
            let refusal = ProofRefusal {
                error,
                route: ProofRoute::Resource,
            };
            Err(refused(state, ip, refusal, subject(), path).await)
        }
    }
}

/// Checks the proof of a request that spends a refresh token at `path` (always a `POST`): none
/// without a `DPoP` header, else the verified proof.
///
/// # Errors
/// The first [`DpopError`] found.
pub(crate) fn verify_refresh_proof(
    state: &AppState,
    proof: Result<Option<&str>, DpopError>,
    path: &str,
) -> Result<Option<VerifiedProof>, DpopError> {
    let Some(proof) = proof? else {
        return Ok(None);
    };
    state
        .dpop
        .verify(proof, "POST", path, None, state.service.now())
        .map(Some)
}

/// When nonces are required, gives every answer to a request that carried a `DPoP` header a
/// fresh `DPoP-Nonce` (RFC 9449 §8.2): the one a refusal asks for, or the next one a client
/// should use. `next` answers the request (see `http::edge`).
pub(crate) async fn nonce_answers<F: Future<Output = Response>>(
    state: &AppState,
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let with_proof = request.headers().contains_key(DPOP_HEADER);
    let mut response = next(request).await;
    if with_proof
        && let Some(nonce) = state.dpop.nonce(state.service.now())
        && let Ok(value) = HeaderValue::from_str(&nonce)
    {
        response.headers_mut().insert(NONCE_HEADER, value);
    }
    response
}
