//! Device Bound Session Credentials (DBSC), the server's half: a browser binds a session to a
//! key it generated (and keeps, where it can, in hardware), and from then on only that key
//! renews the short-lived credential a refresh of the session needs.
//!
//! This follows the W3C WebAppSec editor's draft of February 2026
//! (<https://w3c.github.io/webappsec-dbsc/>, repository `w3c/webappsec-dbsc`, the draft after
//! "Update `jwk` field requirements for none keys"), which is what Chromium ships: the headers
//! `Secure-Session-Registration`, `Secure-Session-Challenge`, `Secure-Session-Response` and
//! `Sec-Secure-Session-Id` (the earlier `Sec-Session-*` names are not read), DBSC proofs typed
//! `dbsc+jwt` with the public key as the header's `jwk` at registration and no key at refresh,
//! and the claims `jti` (the challenge) and `authorization` (never asked for here).
//!
//! The rules, with no I/O of their own beyond the store:
//!
//! - **Challenges are stateless.** A challenge is a kind, the session id, the instant it was
//!   minted (and, for a refresh, the binding's generation), and an HMAC of them under a key
//!   every instance derives from the master key ([`ChallengeKey`]). Nothing is stored per
//!   challenge, so memory stays bounded whatever clients send, and any instance accepts what
//!   another minted. A registration challenge lives [`REGISTRATION_CHALLENGE_SECONDS`], a
//!   refresh challenge [`REFRESH_CHALLENGE_SECONDS`].
//! - **Challenges are single-use.** A registration challenge binds a session that has no
//!   binding, once: a second registration finds it bound. A refresh challenge names the
//!   binding's generation, and the renewal it authorises moves the generation with a
//!   compare-and-swap, so the same challenge never renews twice, on any instance.
//! - **The credential is a short-lived cookie** whose value is the session id and 32 random
//!   bytes ([`IssuedCredential`]); the store keeps its SHA-256 and expiry only. While a session
//!   is bound, a refresh of it by its refresh token also needs the credential in force
//!   ([`SessionService::check_dbsc_credential`]); a renewal replaces it, so a copied credential
//!   is worth nothing once renewed or expired, and only the key renews it.
//! - **What is refused about a session is audited** (`security.dbsc_rejected`, with a stable
//!   `reason`), except the first request of a refresh, which carries no proof by design and
//!   gets a challenge. A registration refused before its challenge names a session is the
//!   server's to count as a failed authentication of the address.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::audit::{NewAuditEvent, Severity};
use crate::dpop::{DpopError, KeySource, ProofKey, SignedJwt, verify_signed_jwt};
use crate::error::Error;
use crate::ids::SessionId;
use crate::primitives::{HmacSha256, sha256};
use crate::service::SessionService;
use crate::session::Session;
use crate::store::{DbscBinding, DbscCredential};
use crate::time::Timestamp;
use crate::token::SigningAlgorithm;

/// The `typ` of a DBSC proof.
pub const PROOF_TYPE: &str = "dbsc+jwt";
/// The algorithms offered to browsers, in the order of preference they are offered in.
pub const ALGORITHMS: [SigningAlgorithm; 2] = [SigningAlgorithm::Es256, SigningAlgorithm::Rs256];
/// How long a registration challenge is accepted after it was minted.
pub const REGISTRATION_CHALLENGE_SECONDS: i64 = 300;
/// How long a refresh challenge is accepted after it was minted.
pub const REFRESH_CHALLENGE_SECONDS: i64 = 120;
/// How far ahead of this instance's clock a challenge minted by another may be.
const CLOCK_LEEWAY_SECONDS: i64 = 5;
/// The label the challenge key is derived under (see `MasterKey::derive`).
pub const CHALLENGE_KEY_LABEL: &str = "dbsc-challenge";
/// The domain separation prefix of a challenge's MAC input.
const CHALLENGE_DOMAIN: &[u8] = b"sessiond/dbsc-challenge/v1\0";
/// The first byte of a registration challenge.
const REGISTRATION: u8 = 1;
/// The first byte of a refresh challenge.
const REFRESH: u8 = 2;
/// Bytes of a registration challenge before its MAC: kind, session id, minted at.
const REGISTRATION_LEN: usize = 1 + 16 + 8;
/// Bytes of a refresh challenge before its MAC: kind, session id, generation, minted at.
const REFRESH_LEN: usize = 1 + 16 + 8 + 8;
/// Random bytes in a credential, after the session id.
const CREDENTIAL_SECRET_LEN: usize = 32;

/// The audit event of a refusal.
pub const REJECTED: &str = "security.dbsc_rejected";
/// The audit event of a binding.
pub const BOUND: &str = "session.dbsc_bound";

/// Why a DBSC request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The proof itself is refused (shape, type, algorithm, key or signature).
    Proof(DpopError),
    /// The proof's algorithm is one sessiond did not offer.
    AlgorithmNotOffered,
    /// The `jti` is not a challenge this service minted (for this session).
    UnknownChallenge,
    /// The challenge expired, or a renewal already spent it.
    StaleChallenge,
    /// The session is bound already.
    AlreadyBound,
    /// The session is revoked, expired or unknown.
    InactiveSession,
    /// A refresh of a bound session came without its credential.
    MissingCredential,
    /// A refresh of a bound session came with a credential that is not the one in force (an
    /// old or foreign one).
    WrongCredential,
    /// A refresh of a bound session came with its credential after it expired.
    ExpiredCredential,
}

impl Refusal {
    /// A stable snake_case name for audit events and answers.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Proof(error) => error.reason(),
            Self::AlgorithmNotOffered => "algorithm_not_offered",
            Self::UnknownChallenge => "unknown_challenge",
            Self::StaleChallenge => "stale_challenge",
            Self::AlreadyBound => "already_bound",
            Self::InactiveSession => "inactive_session",
            Self::MissingCredential => "missing_credential",
            Self::WrongCredential => "wrong_credential",
            Self::ExpiredCredential => "expired_credential",
        }
    }
}

/// The key of stateless challenges, shared by every instance (derived from the master key).
pub struct ChallengeKey(HmacSha256);

impl std::fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeKey").finish_non_exhaustive()
    }
}

impl ChallengeKey {
    /// A key of 32 secret bytes.
    pub fn new(secret: &[u8; 32]) -> Self {
        Self(HmacSha256::new(secret))
    }

    fn seal(&self, fields: &[u8]) -> String {
        let mut input = CHALLENGE_DOMAIN.to_vec();
        input.extend_from_slice(fields);
        let mut bytes = fields.to_vec();
        bytes.extend_from_slice(&self.0.sign(&input));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The fields of `challenge` if it is `len` bytes of fields of `kind` with a MAC this key
    /// made.
    fn open(&self, challenge: &str, kind: u8, len: usize) -> Option<Vec<u8>> {
        // Longer text than any challenge is not decoded at all.
        if challenge.len() > 128 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(challenge).ok()?;
        if bytes.len() != len + 32 || bytes.first() != Some(&kind) {
            return None;
        }
        let (fields, tag) = bytes.split_at(len);
        let mut input = CHALLENGE_DOMAIN.to_vec();
        input.extend_from_slice(fields);
        self.0.verify(&input, tag).then(|| fields.to_vec())
    }

    /// The challenge of `session`'s registration, minted at `now`.
    pub fn registration(&self, session: SessionId, now: Timestamp) -> String {
        let mut fields = Vec::with_capacity(REGISTRATION_LEN);
        fields.push(REGISTRATION);
        fields.extend_from_slice(session.as_uuid().as_bytes());
        fields.extend_from_slice(&now.unix_seconds().to_be_bytes());
        self.seal(&fields)
    }

    /// The session a registration challenge was minted for, if this key minted it no longer
    /// than [`REGISTRATION_CHALLENGE_SECONDS`] before `now`.
    ///
    /// # Errors
    /// [`Refusal::UnknownChallenge`] or [`Refusal::StaleChallenge`].
    pub fn open_registration(&self, challenge: &str, now: Timestamp) -> Result<SessionId, Refusal> {
        let fields = self
            .open(challenge, REGISTRATION, REGISTRATION_LEN)
            .ok_or(Refusal::UnknownChallenge)?;
        let session = session_at(&fields, 1).ok_or(Refusal::UnknownChallenge)?;
        let minted = i64_at(&fields, 17).ok_or(Refusal::UnknownChallenge)?;
        fresh(minted, now, REGISTRATION_CHALLENGE_SECONDS)?;
        Ok(session)
    }

    /// The challenge of a refresh of `session` whose binding is at `generation`, minted at
    /// `now`.
    pub fn refresh(&self, session: SessionId, generation: i64, now: Timestamp) -> String {
        let mut fields = Vec::with_capacity(REFRESH_LEN);
        fields.push(REFRESH);
        fields.extend_from_slice(session.as_uuid().as_bytes());
        fields.extend_from_slice(&generation.to_be_bytes());
        fields.extend_from_slice(&now.unix_seconds().to_be_bytes());
        self.seal(&fields)
    }

    /// Checks that `challenge` is a refresh challenge this key minted for `session` at its
    /// binding's current `generation`, no longer than [`REFRESH_CHALLENGE_SECONDS`] before
    /// `now`.
    ///
    /// # Errors
    /// [`Refusal::UnknownChallenge`] (not ours, or another session's), or
    /// [`Refusal::StaleChallenge`] (expired, or spent by a renewal since).
    pub fn check_refresh(
        &self,
        challenge: &str,
        session: SessionId,
        generation: i64,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        let fields = self
            .open(challenge, REFRESH, REFRESH_LEN)
            .ok_or(Refusal::UnknownChallenge)?;
        if session_at(&fields, 1) != Some(session) {
            return Err(Refusal::UnknownChallenge);
        }
        let minted_for = i64_at(&fields, 17).ok_or(Refusal::UnknownChallenge)?;
        let minted = i64_at(&fields, 25).ok_or(Refusal::UnknownChallenge)?;
        fresh(minted, now, REFRESH_CHALLENGE_SECONDS)?;
        if minted_for != generation {
            return Err(Refusal::StaleChallenge);
        }
        Ok(())
    }
}

fn session_at(fields: &[u8], at: usize) -> Option<SessionId> {
    let bytes: [u8; 16] = fields.get(at..at + 16)?.try_into().ok()?;
    Some(SessionId::from_uuid(Uuid::from_bytes(bytes)))
}

fn i64_at(fields: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(fields.get(at..at + 8)?.try_into().ok()?))
}

fn fresh(minted: i64, now: Timestamp, lifetime: i64) -> Result<(), Refusal> {
    let age = now.unix_seconds().saturating_sub(minted);
    if age > lifetime || age < -CLOCK_LEEWAY_SECONDS {
        return Err(Refusal::StaleChallenge);
    }
    Ok(())
}

/// A credential just minted: the cookie's value for the browser, and what the store keeps.
pub struct IssuedCredential {
    /// The cookie's value: base64url of the session id and 32 random bytes.
    pub value: Zeroizing<String>,
    /// Its hash and expiry.
    pub stored: DbscCredential,
}

impl std::fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("expires_at", &self.stored.expires_at)
            .finish_non_exhaustive()
    }
}

impl IssuedCredential {
    /// A fresh credential of `session`, good until `expires_at`.
    fn mint(session: SessionId, expires_at: Timestamp) -> Self {
        let mut bytes = Zeroizing::new([0u8; 16 + CREDENTIAL_SECRET_LEN]);
        bytes[..16].copy_from_slice(session.as_uuid().as_bytes());
        crate::random::fill(&mut bytes[16..]);
        let value = Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()));
        let hash = sha256(value.as_bytes());
        Self {
            value,
            stored: DbscCredential { hash, expires_at },
        }
    }
}

/// Whether the credential `value` (a cookie's value, as presented) names `session`. Only a
/// bound session has credentials, so this tells a bound session's answer apart without a read;
/// whether the credential is the one in force is [`SessionService::check_dbsc_credential`]'s.
pub fn credential_names(value: &str, session: SessionId) -> bool {
    value.len() < 128
        && URL_SAFE_NO_PAD.decode(value).is_ok_and(|bytes| {
            bytes.len() == 16 + CREDENTIAL_SECRET_LEN && session_at(&bytes, 0) == Some(session)
        })
}

/// The outcome of a registration.
#[derive(Debug)]
pub enum Registration {
    /// The session is bound to the key; the credential is to be handed out.
    Bound {
        /// The session.
        session: Box<Session>,
        /// Its first credential.
        credential: IssuedCredential,
    },
    /// Refused (and audited when the refusal names a session: a session inactive or bound
    /// already).
    Refused(Refusal),
}

/// The outcome of a refresh request at the DBSC refresh endpoint.
#[derive(Debug)]
pub enum Renewal {
    /// The request carried no proof: it is to sign this challenge.
    Challenge(String),
    /// The proof is good: the new credential is to be handed out.
    Renewed {
        /// The session.
        session: Box<Session>,
        /// Its new credential.
        credential: IssuedCredential,
    },
    /// The session is unknown, unbound, revoked or expired: the browser should end it.
    Ended,
    /// Refused (and audited); with a fresh challenge when the proof may simply have signed an
    /// old one, so the browser can try again.
    Refused {
        /// Why.
        refusal: Refusal,
        /// A challenge to sign instead.
        challenge: Option<String>,
    },
}

/// What a session's binding says of a refresh by refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialCheck {
    /// The session is not bound: nothing more is needed.
    Unbound,
    /// The session is bound and the credential in force came with the request.
    Bound,
    /// The session is bound and the request lacks its credential (audited).
    Refused(Refusal),
}

impl SessionService {
    /// Handles a registration: `proof` is the browser's DBSC proof, signed by the new key it
    /// carries in its header, whose `jti` must be a registration challenge this service minted.
    /// A valid one binds the challenge's session to the key, if the session is active and not
    /// bound yet, with a first credential good for `credential_ttl` (never past the session's
    /// own expiry). `ip` is the client's address, for the audit trail.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn register_dbsc(
        &self,
        challenges: &ChallengeKey,
        proof: &str,
        credential_ttl: Duration,
        ip: Option<String>,
    ) -> Result<Registration, Error> {
        let now = self.now();
        // A refusal is audited when it concerns a session: before the challenge is opened, a
        // refused proof names none, and such noise is for the failed-authentication limit.
        let refuse = |refusal: Refusal, session: Option<&Session>| {
            let event =
                session.map(|session| rejected_event(refusal, Some(session), now, ip.clone()));
            async move {
                if let Some(event) = event {
                    self.audit_refusal(event).await;
                }
                Ok(Registration::Refused(refusal))
            }
        };
        let (key, claims) = match verify_signed_jwt(proof, PROOF_TYPE, KeySource::HeaderJwk) {
            Ok(SignedJwt {
                embedded_key: Some(key),
                claims,
                ..
            }) => (key, claims),
            Ok(_) => return refuse(Refusal::Proof(DpopError::BadKey), None).await,
            Err(error) => return refuse(Refusal::Proof(error), None).await,
        };
        if !ALGORITHMS.contains(&key.algorithm()) {
            return refuse(Refusal::AlgorithmNotOffered, None).await;
        }
        let Some(challenge) = claims.get("jti").and_then(Value::as_str) else {
            return refuse(Refusal::Proof(DpopError::MissingJti), None).await;
        };
        let id = match challenges.open_registration(challenge, now) {
            Ok(id) => id,
            Err(refusal) => return refuse(refusal, None).await,
        };
        let session = match self.store().session(id).await? {
            Some(session) if session.is_active(now) => session,
            other => return refuse(Refusal::InactiveSession, other.as_ref()).await,
        };
        let credential =
            IssuedCredential::mint(id, credential_expiry(&session, now, credential_ttl));
        let binding = DbscBinding {
            session_id: id,
            public_key: key.to_jwk().to_string(),
            credential: credential.stored,
            generation: 0,
            bound_at: now,
        };
        let audit = NewAuditEvent {
            kind: BOUND,
            severity: Severity::Info,
            user_id: Some(session.user_id.clone()),
            session_id: Some(id),
            ip: ip.clone(),
            at: now,
            details: details(json!({
                "algorithm": key.algorithm().jose_name(),
                "jkt": key.thumbprint(),
            })),
        };
        if !self.store().bind_dbsc(&binding, &audit).await? {
            return refuse(Refusal::AlreadyBound, Some(&session)).await;
        }
        Ok(Registration::Bound {
            session: Box::new(session),
            credential,
        })
    }

    /// Handles a request at the DBSC refresh endpoint for `session` (the browser's
    /// `Sec-Secure-Session-Id`): without `proof`, a challenge; with one, signed by the bound key
    /// over a challenge minted for the binding's current generation, a new credential good for
    /// `credential_ttl`, which spends that challenge and the credential before it.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Corrupt`] when the stored key is unusable.
    pub async fn renew_dbsc(
        &self,
        challenges: &ChallengeKey,
        session: SessionId,
        proof: Option<&str>,
        credential_ttl: Duration,
        ip: Option<String>,
    ) -> Result<Renewal, Error> {
        let now = self.now();
        let Some(binding) = self.store().dbsc_binding(session).await? else {
            return Ok(Renewal::Ended);
        };
        let record = match self.store().session(session).await? {
            Some(record) if record.is_active(now) => record,
            _ => return Ok(Renewal::Ended),
        };
        let Some(proof) = proof else {
            return Ok(Renewal::Challenge(challenges.refresh(
                session,
                binding.generation,
                now,
            )));
        };
        // A refusal that may come from an honest browser signing an old challenge comes with
        // a new one; a proof the bound key did not sign does not.
        let refuse = |refusal: Refusal, challenge: Option<String>| {
            let event = rejected_event(refusal, Some(&record), now, ip.clone());
            async move {
                self.audit_refusal(event).await;
                Ok(Renewal::Refused { refusal, challenge })
            }
        };
        let key = bound_key(&binding)?;
        let claims = match verify_signed_jwt(proof, PROOF_TYPE, KeySource::Known(&key)) {
            Ok(signed) => signed.claims,
            Err(error) => return refuse(Refusal::Proof(error), None).await,
        };
        let challenge = claims
            .get("jti")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Err(refusal) = challenges.check_refresh(challenge, session, binding.generation, now)
        {
            let fresh = challenges.refresh(session, binding.generation, now);
            return refuse(refusal, Some(fresh)).await;
        }
        let credential =
            IssuedCredential::mint(session, credential_expiry(&record, now, credential_ttl));
        if !self
            .store()
            .renew_dbsc_credential(session, binding.generation, &credential.stored)
            .await?
        {
            // Another renewal from the same generation won, and spent the challenge.
            let generation = self
                .store()
                .dbsc_binding(session)
                .await?
                .map_or(binding.generation, |binding| binding.generation);
            let fresh = challenges.refresh(session, generation, now);
            return refuse(Refusal::StaleChallenge, Some(fresh)).await;
        }
        Ok(Renewal::Renewed {
            session: Box::new(record),
            credential,
        })
    }

    /// Checks a refresh of `session` by its refresh token against its binding: an unbound
    /// session needs nothing more; a bound one needs `credential` (the DBSC cookie's value) to
    /// be the credential in force, unexpired. A refusal is audited.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn check_dbsc_credential(
        &self,
        session: &Session,
        credential: Option<&str>,
        ip: Option<String>,
    ) -> Result<CredentialCheck, Error> {
        let Some(binding) = self.store().dbsc_binding(session.id).await? else {
            return Ok(CredentialCheck::Unbound);
        };
        let now = self.now();
        let refusal = match credential {
            None => Refusal::MissingCredential,
            Some(value) => {
                let hash = sha256(value.as_bytes());
                if !bool::from(hash.ct_eq(&binding.credential.hash)) {
                    Refusal::WrongCredential
                } else if now >= binding.credential.expires_at {
                    Refusal::ExpiredCredential
                } else {
                    return Ok(CredentialCheck::Bound);
                }
            }
        };
        self.audit_refusal(rejected_event(refusal, Some(session), now, ip))
            .await;
        Ok(CredentialCheck::Refused(refusal))
    }

    /// Writes a refusal's audit row; the answer does not depend on it, so a failed write is
    /// logged and the request refused all the same.
    async fn audit_refusal(&self, event: NewAuditEvent) {
        tracing::warn!(
            reason = event
                .details
                .get("reason")
                .and_then(serde_json::Value::as_str),
            session_id = event.session_id.map(tracing::field::display),
            "DBSC request refused"
        );
        if let Err(error) = self.store().append_audit(&[event]).await {
            tracing::warn!(%error, "could not audit a refused DBSC request");
        }
    }
}

/// The key `binding` is bound to.
fn bound_key(binding: &DbscBinding) -> Result<ProofKey, Error> {
    serde_json::from_str::<Value>(&binding.public_key)
        .ok()
        .and_then(|jwk| ProofKey::from_jwk(&jwk).ok())
        .ok_or_else(|| {
            Error::Corrupt(format!(
                "the DBSC key of session {} does not parse",
                binding.session_id
            ))
        })
}

/// When a credential minted at `now` expires: `ttl` later, or when `session` does.
fn credential_expiry(session: &Session, now: Timestamp, ttl: Duration) -> Timestamp {
    now.plus(ttl).min(session.refresh_expires_at())
}

fn details(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The `security.dbsc_rejected` event of `refusal`, naming `session` when it is known.
fn rejected_event(
    refusal: Refusal,
    session: Option<&Session>,
    at: Timestamp,
    ip: Option<String>,
) -> NewAuditEvent {
    NewAuditEvent {
        kind: REJECTED,
        severity: Severity::Warning,
        user_id: session.map(|session| session.user_id.clone()),
        session_id: session.map(|session| session.id),
        ip,
        at,
        details: details(json!({ "reason": refusal.reason() })),
    }
}

#[cfg(test)]
mod tests;
