//! A refresh from request to answer, whichever way it arrives: `POST /v1/sessions/refresh`
//! with a JSON body (`sessions.rs`), the same route by cookie (`browser.rs`), or
//! `POST /oauth/token` (`oauth.rs`). Those modules only adapt the request and the answer;
//! [`spend`] is the one path between them and `SessionService`, so every entrance gets the
//! same rotation, grace window, reuse detection, rate limits, metrics and failure records.
//!
//! The service spends a token in two steps: `begin_refresh` looks it up and decides, and a
//! rotation it returns is written only when `rotate` is called. Between the two, [`admission`]
//! asks the session's rate limit, so a refused refresh writes nothing (but its DPoP proof's id,
//! by `decline`) and leaves the presented token live.
//!
//! A `DPoP` proof (RFC 9449) that comes with the token is verified before the lookup, for a
//! `POST` to the entrance's path; the service then checks it against the session's binding and
//! the replay cache (see `SessionService::begin_refresh`). A refused proof spends nothing and
//! is answered and audited by `http::dpop`.
//!
//! A session may also be bound to a browser key by DBSC (`http::dbsc`); its refresh then needs
//! the bound cookie in force as well. That check comes after the lookup and the DPoP check and
//! before the rate limit, the rotation or a replayed pair, so a refresh missing either binding
//! is refused with that binding's own error and audit event and leaves the token live: nothing
//! is rotated, and an unbound session is not bound to the proof's key. A valid proof that came
//! with a refresh refused for DBSC stays spent in the replay cache, as any proof seen once.

use std::time::Instant;

use sessiond_core::anomaly::RequestOrigin;
use sessiond_core::error::RefreshRejection;
use sessiond_core::permission::Scope;
use sessiond_core::service::{IssuedSession, RefreshStep};
use sessiond_core::{Error, Session, Timestamp};

use super::ApiError;
use super::dpop::{self, ProofRefusal, ProofRoute, ProofSubject};
use super::limits::failed_credential;
use super::limits::{self, ClientIp, Subject};
use crate::ratelimit::{Limit, Refusal, session_key};
use crate::state::AppState;

/// Whether a rotation may happen, as the session's rate limit says.
#[derive(Debug)]
pub(crate) enum Admission {
    /// The session has allowance left; the rotation counts against it once it has won.
    Admitted,
    /// The session's allowance is spent.
    Refused(Refusal),
}

/// Asks the session's refresh allowance about one more rotation at `now`, counting nothing:
/// concurrent requests with the same live token (tabs) may all be admitted, but one rotates
/// and the others replay its pair, so only the rotation that won is counted (in [`spend`]).
fn admission(state: &AppState, session: &Session, now: Timestamp) -> Admission {
    match state.limits.check_spent(
        Limit::RefreshPerSession,
        &session_key(*session.id.as_uuid()),
        now,
    ) {
        Ok(()) => Admission::Admitted,
        Err(refusal) => Admission::Refused(refusal),
    }
}

/// Why a rotation the service decided on is not written.
enum Declined {
    /// The session is bound to a browser key and the request lacks its cookie in force.
    Dbsc(ApiError),
    /// The session's refresh allowance is spent.
    Limit(Refusal),
}

/// The DPoP proof of a refresh request and the path it was sent to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefreshProof<'a> {
    /// The `DPoP` header: none, one value, or an unusable one.
    pub(crate) header: Result<Option<&'a str>, sessiond_core::dpop::DpopError>,
    /// The route's path, which the proof's `htu` must name.
    pub(crate) path: &'static str,
}

impl<'a> RefreshProof<'a> {
    /// The proof of a request to `path` with `headers`.
    pub(crate) fn of(headers: &'a axum::http::HeaderMap, path: &'static str) -> Self {
        Self {
            header: dpop::proof_header(headers),
            path,
        }
    }
}

/// The `DPoP` header of a refresh request, kept apart from the request, whose body's
/// extraction takes the request and its headers with it.
#[derive(Debug)]
pub(crate) struct ProofHeader(Result<Option<String>, sessiond_core::dpop::DpopError>);

impl ProofHeader {
    /// The `DPoP` header among `headers`.
    pub(crate) fn of(headers: &axum::http::HeaderMap) -> Self {
        Self(dpop::proof_header(headers).map(|value| value.map(str::to_owned)))
    }

    /// The proof of a request to `path` with this header.
    pub(crate) fn proof(&self, path: &'static str) -> RefreshProof<'_> {
        RefreshProof {
            header: self
                .0
                .as_ref()
                .map(Option::as_deref)
                .map_err(|error| *error),
            path,
        }
    }
}

/// The session of `presented`, when it is live, for the audit event of a proof refused before
/// the token was looked up: it names the session under attack. A missing nonce is no attack
/// and costs no lookup; a failed lookup leaves the session unnamed.
async fn proof_subject(
    state: &AppState,
    presented: &str,
    error: sessiond_core::dpop::DpopError,
) -> ProofSubject {
    if error.is_use_nonce() {
        return ProofSubject::default();
    }
    match state.service.inspect_refresh_token(presented).await {
        Ok(Some((_, session))) => ProofSubject {
            session_id: Some(session.id),
            user_id: Some(session.user_id),
        },
        _ => ProofSubject::default(),
    }
}

/// Spends `presented` through the service, within the rate limits, and counts the outcome;
/// the new access token is narrowed to `scope` when one is asked for (the OAuth token
/// endpoint's `scope` parameter). `origin` (the client address and user agent) is compared
/// with the session's for anomalies.
///
/// The client address must not have spent its request allowance. A token that is not known
/// counts as a failed authentication of the address; once the address's failure allowance is
/// spent, such tokens are answered `429`, but a live token is never refused by that limit (its
/// lookup costs one hash and one read, bounded by the request allowance). The session's
/// allowance is looked at only if the token would rotate, before anything is written, so a
/// refused refresh leaves the presented token live; it is spent only by a rotation that
/// happened, so grace-window replays and the losers of a race between tabs never count.
///
/// `proof` is checked after the address's request allowance and before the lookup; a session
/// bound to a key needs one (see the module documentation).
pub(crate) async fn spend(
    state: &AppState,
    client: ClientIp,
    origin: &RequestOrigin,
    presented: &str,
    scope: Option<&Scope>,
    proof: RefreshProof<'_>,
) -> Result<IssuedSession, ApiError> {
    spend_with_credential(state, client, origin, presented, scope, proof, None).await
}

/// [`spend`], with the bound cookie's value (`dbsc_credential`) that a refresh of a session
/// bound to a browser key also needs (see `http::dbsc`): that check comes after the token is
/// found and before anything is written or handed out, so a refused refresh leaves the token
/// live for its owner.
pub(crate) async fn spend_with_credential(
    state: &AppState,
    client: ClientIp,
    origin: &RequestOrigin,
    presented: &str,
    scope: Option<&Scope>,
    proof: RefreshProof<'_>,
    dbsc_credential: Option<&str>,
) -> Result<IssuedSession, ApiError> {
    let now = state.service.now();
    if let Some(key) = client.key()
        && let Err(refusal) = state.limits.acquire(Limit::PerIp, &key, now)
    {
        let subject = Subject {
            ip: client.0,
            ..Subject::default()
        };
        return Err(limits::refused(state, refusal, subject).await);
    }
    let verified = match dpop::verify_refresh_proof(state, proof.header, proof.path) {
        Ok(verified) => verified,
        Err(error) => {
            let refusal = ProofRefusal {
                error,
                route: ProofRoute::Refresh,
            };
            let subject = proof_subject(state, presented, error).await;
            return Err(dpop::refused(state, client.0, refusal, subject, proof.path).await);
        }
    };
    let started = Instant::now();
    // The DPoP binding is checked within the lookup, before anything is decided or written;
    // the DBSC binding once the session is known, before a pair is handed out or written.
    let result = match state
        .service
        .begin_refresh(presented, origin, scope, verified.as_ref())
        .await
    {
        Ok(RefreshStep::Replayed(issued)) => {
            super::dbsc::admit(state, client, &issued.session, dbsc_credential).await?;
            Ok(issued)
        }
        Ok(RefreshStep::Rotation(pending)) => {
            let declined =
                match super::dbsc::admit(state, client, pending.session(), dbsc_credential).await {
                    Err(refused) => Some(Declined::Dbsc(refused)),
                    Ok(()) => match admission(state, pending.session(), now) {
                        Admission::Admitted => None,
                        Admission::Refused(refusal) => Some(Declined::Limit(refusal)),
                    },
                };
            match declined {
                None => state.service.rotate(pending).await,
                Some(declined) => {
                    let subject = Subject {
                        ip: client.0,
                        user_id: Some(pending.session().user_id.clone()),
                        session_id: Some(pending.session().id),
                        admin_key: None,
                    };
                    // A refused refresh spends its proof all the same: one used before is
                    // answered as a replay, below.
                    match state.service.decline(pending).await {
                        Ok(()) => {
                            return Err(match declined {
                                Declined::Dbsc(refused) => refused,
                                Declined::Limit(refusal) => {
                                    limits::refused(state, refusal, subject).await
                                }
                            });
                        }
                        Err(error) => Err(error),
                    }
                }
            }
        }
        Err(error) => Err(error),
    };
    let issued = match result {
        Ok(issued) => issued,
        Err(Error::DpopRefused(refused)) => {
            let refusal = ProofRefusal {
                error: refused.error,
                route: ProofRoute::Refresh,
            };
            let subject = ProofSubject {
                session_id: Some(refused.session_id),
                user_id: Some(refused.user_id),
            };
            return Err(dpop::refused(state, client.0, refusal, subject, proof.path).await);
        }
        Err(error) => {
            state.metrics.record_refresh(Err(&error), started.elapsed());
            if let Error::RefreshRejected(reason) = &error {
                state.refresh_failures.record(client.0, *reason, now);
            }
            if matches!(error, Error::RefreshRejected(RefreshRejection::Unknown)) {
                return Err(failed_credential(state, client.0, now, error.into()).await);
            }
            return Err(error.into());
        }
    };
    if !issued.replayed {
        // Counted now that the rotation won. A refusal here could only come from another
        // rotation of the same session at the same instant, which is counted as well.
        let _ = state.limits.acquire(
            Limit::RefreshPerSession,
            &session_key(*issued.session.id.as_uuid()),
            now,
        );
    }
    state.metrics.record_refresh(Ok(&issued), started.elapsed());
    Ok(issued)
}
