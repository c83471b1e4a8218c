//! The session service: the operations of the API, each a rule of this crate applied over the
//! store.
//!
//! Every operation reads the clock once and passes that instant down, so a single operation
//! never sees time move under it.
//!
//! The operations that open a span of their own (`#[tracing::instrument]`) open it at `DEBUG`.
//! An enabled span is created, entered and left at every poll of its future, and closed, which
//! under `INFO` (the default level) cost a refresh, with its two such spans, about 6 thousand
//! instructions; lines logged inside still carry the request's span and its id.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::anomaly::{self, Anomaly, AnomalyPolicy, AnomalySettings, RequestOrigin};
use crate::audit::{
    AuditCheckpoint, AuditQuery, ChainBreak, ChainSummary, ChainVerifier, CheckpointKey,
    NewAuditEvent, RefreshAudit, SealedAuditEvent, Severity,
};
use crate::device::{self, DeviceRecord};
use crate::dpop::{DpopError, VerifiedProof};
use crate::error::{DpopRefusal, Error, RefreshRejection};
use crate::fresh_tokens::FreshTokens;
use crate::ids::{DeviceId, SessionId, TenantId, UserId};
use crate::integrity::{INTEGRITY_FAILURE, IntegrityReports};
use crate::permission::{RolePermissions, Scope};
use crate::policy::Policy;
use crate::refresh::{
    IssuedPair, RefreshDecision, RefreshToken, RefreshTokenHash, RefreshTokenRecord, decide_refresh,
};
use crate::revocation::RevokedSessions;
use crate::session::{RevokeReason, Session};
use crate::session_cache::SessionCache;
use crate::signing_keys::{KeyLoading, KeySettings, SigningKeys};
use crate::store::{ProofReplay, Revocation, Rotation, RotationOutcome, Store, audit_for};
use crate::time::{Clock, Timestamp};
use crate::token::{
    AccessTokenIssuer, AccessTokenValidator, IssuedAccessToken, MAX_CLAIMS_DEPTH, RESERVED_CLAIMS,
    SigningAlgorithm, TokenError, ValidatedToken, ValidationRules, VerificationKeys,
};

/// Largest serialized `claims` object accepted: they travel in every access token.
pub const MAX_CLAIMS_BYTES: usize = 4 * 1024;
/// Largest serialized `metadata` object accepted.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// How often a refresh re-reads after losing a race before giving up.
const ROTATION_ATTEMPTS: usize = 4;

/// Settings of the service that do not change while it runs.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Lifetimes and limits.
    pub policy: Policy,
    /// `iss`, `aud` and `client_id` of access tokens.
    pub tokens: AccessTokenIssuer,
    /// The algorithm new access tokens are signed with.
    pub signing_algorithm: SigningAlgorithm,
    /// How old the active signing key may grow before it is rotated automatically; `None`
    /// rotates only when asked.
    pub key_rotation: Option<Duration>,
    /// How long a rotation's key is published before it signs.
    pub publication_delay: Duration,
    /// Whether starting may generate the first signing key (a server) or only reads (commands).
    pub key_loading: KeyLoading,
    /// The permissions each role stands for, added to every access token's `permissions`
    /// when it is signed.
    pub roles: RolePermissions,
    /// Which refreshes count as anomalous, and what is done about them.
    pub anomaly: AnomalySettings,
    /// Which refreshes leave an audit event.
    pub audit_refreshes: RefreshAudit,
    /// A service for a command that only reads (`sessions list`, `audit verify`...): what
    /// would otherwise be audited on a read (an encrypted value that does not open) is only
    /// logged, so the database is left as it was. Its writing operations are not for use.
    pub read_only: bool,
}

/// What the application backend sends to create a session.
#[derive(Debug, Clone, Default)]
pub struct NewSessionRequest {
    /// The authenticated user.
    pub user_id: String,
    /// The user's tenant.
    pub tenant_id: Option<String>,
    /// The client's device id, if it has one.
    pub device_id: Option<String>,
    /// A name for the device.
    pub device_name: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The client's IP address.
    pub ip: Option<String>,
    /// Claims for every access token (`roles`, `permissions`, custom).
    pub claims: Map<String, Value>,
    /// Application data kept with the session.
    pub metadata: Map<String, Value>,
    /// The thumbprint of the client's DPoP key, to bind the session to it.
    pub dpop_jkt: Option<String>,
}

/// A session together with a token pair just issued (or re-issued) for it.
#[derive(Debug)]
pub struct IssuedSession {
    /// The tokens.
    pub pair: IssuedPair,
    /// The session as it is now.
    pub session: Session,
    /// Whether this pair is a grace-window replay of one issued before.
    pub replayed: bool,
    /// When it was issued, or replayed: the moment an answer's `expires_in` counts from, so
    /// that a fresh pair's equals its access token's `exp - iat` however long the write took.
    pub at: Timestamp,
}

/// What [`SessionService::begin_refresh`] found a presented refresh token to mean.
#[derive(Debug)]
#[must_use]
pub enum RefreshStep<'a> {
    /// A replay of the successor pair issued before (its `replayed` is true): nothing rotated,
    /// so nothing needed admitting.
    Replayed(IssuedSession),
    /// The token is live and would rotate; nothing has been written yet.
    Rotation(PendingRotation<'a>),
}

/// A rotation of a live refresh token, decided but not written: admitted by giving it to
/// [`SessionService::rotate`], refused by giving it to [`SessionService::decline`] (the
/// presented token then stays live, and its DPoP proof is spent).
#[derive(Debug)]
#[must_use]
pub struct PendingRotation<'a> {
    token: RefreshToken,
    hash: RefreshTokenHash,
    origin: &'a RequestOrigin,
    requested: Option<&'a Scope>,
    /// The DPoP proof that came with the token, if any.
    proof: Option<&'a VerifiedProof>,
    session: Session,
    /// When the token was read; the rotation is issued at this instant.
    now: Timestamp,
    /// The access token's claims when a scope was asked for.
    narrowed: Option<Map<String, Value>>,
    /// The key the rotation binds the session to, and the proof's entry in the replay cache
    /// when not yet recorded: the rotation records it in its transaction, or
    /// [`SessionService::decline`] alone.
    dpop: ProofUse,
}

impl PendingRotation<'_> {
    /// The session that would be refreshed, as read with its token.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

/// Why `proof` cannot go with `session`'s DPoP binding, if it cannot: a bound session needs a
/// proof, of its key. Replays are the replay cache's to find.
fn binding_refusal(session: &Session, proof: Option<&VerifiedProof>) -> Option<DpopError> {
    match (&session.dpop_jkt, proof) {
        (Some(_), None) => Some(DpopError::MissingProof),
        // Thumbprints are public: an ordinary comparison gives nothing away.
        (Some(bound), Some(proof)) if *bound != proof.jkt => Some(DpopError::WrongKey),
        _ => None,
    }
}

/// Checks `proof` against `session`'s DPoP binding (a bound session needs a proof of its key)
/// and answers the key an unbound session is to be bound to, if a proof came with its token.
/// Whether the proof was used before is the replay cache's to say.
///
/// # Errors
/// [`Error::DpopRefused`].
fn dpop_binding(session: &Session, proof: Option<&VerifiedProof>) -> Result<Option<String>, Error> {
    if let Some(error) = binding_refusal(session, proof) {
        return Err(dpop_refused(session, error));
    }
    Ok(proof.and_then(|proof| session.dpop_jkt.is_none().then(|| proof.jkt.clone())))
}

/// The refusal of a refresh of `session` for its DPoP proof, logged.
fn dpop_refused(session: &Session, error: DpopError) -> Error {
    tracing::warn!(session_id = %session.id, reason = error.reason(), "DPoP proof refused");
    Error::DpopRefused(Box::new(DpopRefusal {
        error,
        session_id: session.id,
        user_id: session.user_id.clone(),
    }))
}

/// What one lookup of a presented refresh token came to, short of writing a rotation.
enum Lookup {
    Replayed(IssuedSession),
    Rotate {
        session: Session,
        now: Timestamp,
        narrowed: Option<Map<String, Value>>,
        dpop: ProofUse,
    },
}

/// What a rotation does with the DPoP proof that came with its token.
#[derive(Debug, Default)]
struct ProofUse {
    /// The key an unbound session becomes bound to.
    bind_jkt: Option<String>,
    /// The proof's entry in the replay cache, to record with the rotation: none when it is
    /// recorded already (or no proof came).
    replay: Option<ProofReplay>,
}

/// What a lookup of a refresh token does besides deciding: the first lookup of a refresh
/// looks for anomalies on replays and records the DPoP proof (or hands it to the rotation);
/// lookups after a lost race do neither again.
#[derive(Debug, Clone, Copy)]
struct FirstLookup {
    anomaly_handled: bool,
    remember_proof: bool,
}

/// Who asks for a revocation.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// The user, through one of their access tokens.
    User(&'a ValidatedToken),
    /// The application backend or an operator, through an admin key.
    Admin,
}

/// The operations of sessiond over a store.
#[derive(Debug)]
pub struct SessionService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: ServiceSettings,
    keys: SigningKeys,
    validator: AccessTokenValidator,
    revoked: RevokedSessions,
    sessions: SessionCache,
    /// The successors this process issued, for their next refresh.
    fresh: FreshTokens,
    /// Rotations this process has attempted, for sampling their audit events.
    refreshes: AtomicU64,
    /// Which unreadable encrypted values were reported lately.
    integrity: IntegrityReports,
}

impl SessionService {
    /// Opens the service: loads the signing keys (generating one on first start) and the
    /// sessions whose access tokens must be refused.
    ///
    /// # Errors
    /// [`Error::Store`] when storage fails, [`Error::Corrupt`] when stored keys are unusable.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: ServiceSettings,
    ) -> Result<Self, Error> {
        let keys = SigningKeys::load(
            store.clone(),
            KeySettings {
                algorithm: settings.signing_algorithm,
                token_lifetime: settings.policy.access_ttl + settings.policy.leeway,
                rotation_period: settings.key_rotation,
                publication_delay: settings.publication_delay,
            },
            settings.key_loading,
            clock.now(),
        )
        .await?;
        let validator = AccessTokenValidator::new(ValidationRules {
            issuer: settings.tokens.issuer.clone(),
            audience: settings.tokens.audience.clone(),
            leeway_seconds: i64::try_from(settings.policy.leeway.as_secs()).unwrap_or(0),
        });
        let service = Self {
            store,
            clock,
            settings,
            keys,
            validator,
            revoked: RevokedSessions::new(),
            sessions: SessionCache::default(),
            fresh: FreshTokens::default(),
            refreshes: AtomicU64::new(0),
            integrity: IntegrityReports::default(),
        };
        service
            .sync_revocations(Timestamp::from_unix_millis(0))
            .await?;
        Ok(service)
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.settings.policy
    }

    /// The `iss`, `aud` and `client_id` of access tokens.
    pub fn token_settings(&self) -> &AccessTokenIssuer {
        &self.settings.tokens
    }

    /// The permissions each role stands for.
    pub fn roles(&self) -> &RolePermissions {
        &self.settings.roles
    }

    /// The current time of the service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The signing keys: the keyring in force (for the JWKS), rotation and retirement.
    pub fn signing_keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// The revoked-session set.
    pub fn revoked(&self) -> &RevokedSessions {
        &self.revoked
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Creates a session for an authenticated user and issues its first token pair.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the bad field; [`Error::Store`].
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn create_session(&self, request: NewSessionRequest) -> Result<IssuedSession, Error> {
        let user_id = UserId::parse(request.user_id, "user_id")?;
        let tenant_id = request
            .tenant_id
            .map(|tenant| TenantId::parse(tenant, "tenant_id"))
            .transpose()?;
        let ip = request.ip.map(|ip| check_ip(&ip)).transpose()?;
        let user_agent = request
            .user_agent
            .map(|agent| device::check_text(agent, "device.user_agent"))
            .transpose()?;
        let device = device::recognise(
            request.device_id,
            request.device_name,
            user_agent.as_deref(),
        )?;
        check_claims(&request.claims)?;
        check_size(&request.metadata, MAX_METADATA_BYTES, "metadata")?;
        if let Some(jkt) = &request.dpop_jkt
            && !crate::dpop::is_thumbprint(jkt)
        {
            return Err(Error::invalid(
                "dpop_jkt",
                "must be the RFC 7638 SHA-256 thumbprint of a key: 43 base64url characters",
            ));
        }

        let now = self.clock.now();
        let policy = &self.settings.policy;
        let mut session = Session {
            id: SessionId::generate(),
            user_id,
            tenant_id,
            device,
            ip: ip.clone(),
            user_agent,
            claims: request.claims,
            metadata: request.metadata,
            created_at: now,
            last_active_at: now,
            idle_expires_at: now
                .plus(policy.idle_timeout)
                .min(now.plus(policy.absolute_timeout)),
            expires_at: now.plus(policy.absolute_timeout),
            access_expires_at: now,
            revoked_at: None,
            revoke_reason: None,
            dpop_jkt: request.dpop_jkt,
            unreadable: Vec::new(),
        };
        let access =
            self.issue_access_token(&session, now, session.access_token_expiry(now, policy))?;
        session.access_expires_at = access.expires_at;
        let refresh = RefreshToken::generate(now);
        let created = audit_event(
            "session.created",
            Severity::Info,
            &session,
            now,
            ip,
            json!({
                "device_id": session.device.id.as_str(),
            }),
        );
        let new_device = audit_event(
            crate::event::DEVICE_NEW,
            Severity::Info,
            &session,
            now,
            session.ip.clone(),
            json!({
                "device_id": session.device.id.as_str(),
                "device_type": session.device.device_type.as_str(),
                "browser": session.device.browser,
                "os": session.device.os,
            }),
        );
        let evicted = self
            .store
            .create_session(
                &session,
                &refresh.hash(),
                policy.max_sessions_per_user,
                &created,
                &audit_for(move |evicted: &Session| {
                    revoked_event(evicted, now, RevokeReason::SessionLimit, "system")
                }),
                &new_device,
            )
            .await?;
        for evicted in &evicted {
            self.revoke_locally(evicted.id, evicted.access_expires_at);
        }
        self.sessions.put(session.clone(), now);
        Ok(IssuedSession {
            pair: IssuedPair {
                access_token: access.token,
                access_expires_at_ms: access.expires_at.unix_millis(),
                refresh_token: refresh.expose().to_owned(),
                refresh_expires_at_ms: session.refresh_expires_at().unix_millis(),
            },
            session,
            replayed: false,
            at: now,
        })
    }

    /// The first step of spending a refresh token: looks it up and decides, writing nothing
    /// unless the decision is final.
    ///
    /// - A token spent moments ago whose successor can still be handed out (the grace window,
    ///   or an unused successor, see [`crate::refresh::decide_refresh`]) answers
    ///   [`RefreshStep::Replayed`] with that successor pair: nothing rotates, so nothing needs
    ///   admitting.
    /// - An unspent token answers [`RefreshStep::Rotation`]. Nothing has been written and the
    ///   presented token stays live: the caller decides whether to admit the rotation (a rate
    ///   limit on [`PendingRotation::session`]) and then calls [`SessionService::rotate`], or
    ///   [`SessionService::decline`] to refuse the refresh.
    /// - A spent token beyond both bounds revokes its session as reuse, and is refused.
    ///
    /// `origin` is where the request comes from: a refresh unlike the session's creation is
    /// handled as the anomaly policy says (see [`crate::anomaly`]); under `revoke` the session
    /// is revoked and the refresh refused as [`RefreshRejection::Anomaly`] (later refreshes of
    /// the session are refused as [`RefreshRejection::Revoked`]). Anomalies are looked for here
    /// on replays, and by [`SessionService::rotate`] for rotations, after admission (a refused
    /// refresh writes nothing) and before the write.
    ///
    /// `requested` is the scope a client asked for (RFC 6749 §6): the new access token carries
    /// exactly those permissions (see [`crate::permission::narrow`]) instead of all of its
    /// session's; the refresh token and the session are unchanged, so the next refresh may ask
    /// for more again. A scope beyond the session's is refused here, before anything is written
    /// or admitted, and the presented token stays live. A replay answers the pair issued first,
    /// whatever scope that one was given.
    ///
    /// `proof` is the DPoP proof (RFC 9449) that came with the token, already verified for the
    /// request (see [`crate::dpop::verify_proof`]). A session bound to a key is refreshed only
    /// with a proof of that key that was never used before; an unbound session refreshed with
    /// a proof is bound to its key by the rotation (a replay binds nothing). The binding is
    /// checked right after the lookup, and a replay before the decision has any effect, so a
    /// refused proof leaves the token live and the session untouched whatever state the token
    /// is in: a thief without the key, or with a proof used before, cannot even set off reuse
    /// detection. The proof's id goes into the store's replay cache with the rotation, in its
    /// transaction, when the token would rotate (by [`SessionService::decline`] when the caller
    /// refuses the rotation, or before an anomaly is acted on), and at once otherwise: on
    /// SQLite, one commit and one sync then answer a bound refresh, as an unbound one.
    ///
    /// # Errors
    /// [`Error::RefreshRejected`] with the reason; [`Error::DpopRefused`] when the session is
    /// bound and the proof is missing or of another key, or when the proof was used before;
    /// [`Error::ScopeBeyondSession`] naming the first requested permission the session lacks;
    /// [`Error::Store`].
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn begin_refresh<'a>(
        &self,
        presented: &str,
        origin: &'a RequestOrigin,
        requested: Option<&'a Scope>,
        proof: Option<&'a VerifiedProof>,
    ) -> Result<RefreshStep<'a>, Error> {
        let token = RefreshToken::parse(presented)?;
        let hash = token.hash();
        let first = FirstLookup {
            anomaly_handled: false,
            remember_proof: true,
        };
        Ok(
            match self
                .look_up_refresh(&token, hash, origin, requested, proof, first)
                .await?
            {
                Lookup::Replayed(issued) => RefreshStep::Replayed(issued),
                Lookup::Rotate {
                    session,
                    now,
                    narrowed,
                    dpop,
                } => RefreshStep::Rotation(PendingRotation {
                    token,
                    hash,
                    origin,
                    requested,
                    proof,
                    session,
                    now,
                    narrowed,
                    dpop,
                }),
            },
        )
    }

    /// The second step of spending a refresh token when the caller refuses `pending` (its
    /// admission said no): nothing is rotated and the presented token stays live, but the DPoP
    /// proof that came with it is recorded in the replay cache, as every proof seen once is.
    ///
    /// # Errors
    /// [`Error::DpopRefused`] when that proof was accepted before: the refusal to answer, as
    /// for a replayed proof at any step; [`Error::Store`] when the proof cannot be recorded.
    pub async fn decline(&self, pending: PendingRotation<'_>) -> Result<(), Error> {
        self.remember_proof(&pending.session, pending.dpop.replay, pending.now)
            .await
    }

    /// The second step of spending a refresh token, once the caller admitted `pending`: checks
    /// the refresh's origin for anomalies, then issues the successor pair and writes the
    /// rotation with a compare-and-swap.
    ///
    /// Concurrent requests with the same live token may all be admitted, but only one rotates:
    /// a rotation that loses its race reads the token again and follows the winner, usually by
    /// replaying its pair (the answer's `replayed` is true), without asking for admission again.
    /// A limit should therefore count only answers whose `replayed` is false.
    ///
    /// # Errors
    /// As [`SessionService::begin_refresh`], and [`Error::Corrupt`] when the token changed state
    /// on every attempt.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn rotate(&self, pending: PendingRotation<'_>) -> Result<IssuedSession, Error> {
        let PendingRotation {
            token,
            hash,
            origin,
            requested,
            proof,
            mut session,
            mut now,
            mut narrowed,
            mut dpop,
        } = pending;
        // Once per refresh: a rotation that lost its race has reported its anomaly already.
        if let Some(anomaly) = self.acting_anomaly(&session, origin) {
            // A replayed proof sets off nothing: it is recorded, or refused, before the
            // anomaly is reported.
            self.remember_proof(&session, dpop.replay.take(), now)
                .await?;
            self.handle_anomaly(&session, &anomaly, origin, now).await?;
        }
        // `begin_refresh` made the first of the attempts' lookups.
        let mut attempts = 1;
        loop {
            if let Some(issued) = self
                .write_rotation(
                    &token,
                    hash,
                    session,
                    now,
                    narrowed.as_ref(),
                    std::mem::take(&mut dpop),
                )
                .await?
            {
                return Ok(issued);
            }
            if attempts == ROTATION_ATTEMPTS {
                return Err(Error::Corrupt(
                    "refresh token changed state on every attempt".into(),
                ));
            }
            attempts += 1;
            // Another request won the race; read again and follow its outcome. The proof was
            // recorded by the first lookup or the lost rotation, and the winner may have bound
            // the session since.
            let again = FirstLookup {
                anomaly_handled: true,
                remember_proof: false,
            };
            match self
                .look_up_refresh(&token, hash, origin, requested, proof, again)
                .await?
            {
                Lookup::Replayed(issued) => return Ok(issued),
                Lookup::Rotate {
                    session: reread,
                    now: read_at,
                    narrowed: claims,
                    dpop: reread_dpop,
                } => {
                    session = reread;
                    now = read_at;
                    narrowed = claims;
                    dpop = reread_dpop;
                }
            }
        }
    }

    /// One lookup of `token` and the rotation rule's decision on it, carried out unless it is
    /// a rotation: the DPoP binding is checked first (see [`dpop_binding`]), then a
    /// replay is opened (its anomaly looked for unless `lookup.anomaly_handled`), reuse revokes
    /// the session, and refusals are errors.
    async fn look_up_refresh(
        &self,
        token: &RefreshToken,
        hash: RefreshTokenHash,
        origin: &RequestOrigin,
        requested: Option<&Scope>,
        proof: Option<&VerifiedProof>,
        lookup: FirstLookup,
    ) -> Result<Lookup, Error> {
        let FirstLookup {
            anomaly_handled,
            remember_proof,
        } = lookup;
        // A token this process issued leads to a rotation without a read when its entry says so
        // (see `fresh_admits`). Lookups after a lost race read storage: the entry is what lost.
        if remember_proof && let Some((record, session)) = self.fresh.take(&hash) {
            let now = self.clock.now();
            if self.fresh_admits(&record, &session, proof, now) {
                let dpop = ProofUse {
                    bind_jkt: dpop_binding(&session, proof)?,
                    replay: proof.map(VerifiedProof::replay),
                };
                // A scope beyond the session's is storage's to refuse, below.
                if let Ok(narrowed) = requested
                    .map(|requested| self.narrowed_claims(&session, requested))
                    .transpose()
                {
                    return Ok(Lookup::Rotate {
                        session,
                        now,
                        narrowed,
                        dpop,
                    });
                }
            }
        }
        let Some((record, session)) = self.store.find_refresh_token(&hash).await? else {
            return Err(Error::RefreshRejected(RefreshRejection::Unknown));
        };
        self.report_unreadable(std::slice::from_ref(&session)).await;
        let now = self.clock.now();
        let mut dpop = ProofUse {
            bind_jkt: dpop_binding(&session, proof)?,
            replay: proof.filter(|_| remember_proof).map(VerifiedProof::replay),
        };
        let decision = decide_refresh(&record, &session, now, &self.settings.policy);
        let narrowed = match decision {
            RefreshDecision::Rotate => requested
                .map(|requested| self.narrowed_claims(&session, requested))
                .transpose(),
            _ => Ok(None),
        };
        // The proof goes into the replay cache with the rotation, in its transaction, when
        // this lookup leads to one; otherwise now, before the decision has any effect.
        if decision != RefreshDecision::Rotate || narrowed.is_err() {
            self.remember_proof(&session, dpop.replay.take(), now)
                .await?;
        }
        match decision {
            RefreshDecision::Refuse(reason) => Err(Error::RefreshRejected(reason)),
            RefreshDecision::ReplaySuccessor => {
                if let Some(requested) = requested {
                    self.narrowed_claims(&session, requested)?;
                }
                if !anomaly_handled && let Some(anomaly) = self.acting_anomaly(&session, origin) {
                    self.handle_anomaly(&session, &anomaly, origin, now).await?;
                }
                let pair = self
                    .open_replayed_successor(token, &record, &session, now)
                    .await?;
                Ok(Lookup::Replayed(IssuedSession {
                    pair,
                    session,
                    replayed: true,
                    at: now,
                }))
            }
            RefreshDecision::RevokeForReuse => {
                self.revoke_for_reuse(&session, now).await?;
                Err(Error::RefreshRejected(RefreshRejection::ReuseDetected))
            }
            RefreshDecision::Rotate => Ok(Lookup::Rotate {
                session,
                now,
                narrowed: narrowed?,
                dpop,
            }),
        }
    }

    /// Whether a token this process issued may be rotated on its [`FreshTokens`] entry
    /// (`record` and `session`, as the rotation that issued it stored them) at `now`, without
    /// reading storage: the lookup would lead to a rotation.
    ///
    /// Only a rotation is decided on an entry; its compare-and-swap checks again what another
    /// writer may have changed since (see [`crate::fresh_tokens`]). Every other outcome is left
    /// to storage: a refusal by time, a revoked session this process knows of, a proof that does
    /// not match the binding, and (after the proof is remembered, as a lookup would) a scope
    /// beyond the session's. A proof used before is refused on an entry as on a read: that
    /// refusal is the replay cache's.
    fn fresh_admits(
        &self,
        record: &RefreshTokenRecord,
        session: &Session,
        proof: Option<&VerifiedProof>,
        now: Timestamp,
    ) -> bool {
        binding_refusal(session, proof).is_none()
            && !self.revoked.contains(&session.id)
            && decide_refresh(record, session, now, &self.settings.policy)
                == RefreshDecision::Rotate
    }

    /// Records `proof_replay` in the store's replay cache at `now`, if there is one, so that
    /// its proof is accepted once.
    ///
    /// # Errors
    /// [`Error::DpopRefused`] when the proof was accepted before; [`Error::Store`] when the
    /// replay cache cannot be written (the proof is then refused, as unavailable storage).
    async fn remember_proof(
        &self,
        session: &Session,
        proof_replay: Option<ProofReplay>,
        now: Timestamp,
    ) -> Result<(), Error> {
        let Some(replay) = proof_replay else {
            return Ok(());
        };
        if self
            .store
            .remember_dpop_proof(&replay.id, replay.until, now)
            .await?
        {
            Ok(())
        } else {
            Err(dpop_refused(session, DpopError::Replayed))
        }
    }

    /// How a refresh of `session` from `origin` differs from the session, when the anomaly
    /// policy acts on it (reports it, or revokes the session); `None` under `allow`.
    fn acting_anomaly(&self, session: &Session, origin: &RequestOrigin) -> Option<Anomaly> {
        let settings = &self.settings.anomaly;
        if settings.policy == AnomalyPolicy::Allow {
            return None;
        }
        anomaly::detect(session, origin, &settings.checks)
    }

    /// Issues `session`'s successor pair at `now` and writes the rotation of `token`, binding
    /// the session to `dpop`'s key and recording its proof if given; `None` when another
    /// request rotated it first (nothing was written but the proof's record).
    ///
    /// # Errors
    /// [`Error::DpopRefused`] when the proof was accepted before (nothing was written);
    /// signing and [`Error::Store`] errors.
    async fn write_rotation(
        &self,
        token: &RefreshToken,
        hash: RefreshTokenHash,
        mut session: Session,
        now: Timestamp,
        narrowed: Option<&Map<String, Value>>,
        dpop: ProofUse,
    ) -> Result<Option<IssuedSession>, Error> {
        let ProofUse {
            bind_jkt: bind_dpop_jkt,
            replay: proof_replay,
        } = dpop;
        if bind_dpop_jkt.is_some() {
            // So that the successor's access token carries `cnf.jkt` already.
            session.dpop_jkt.clone_from(&bind_dpop_jkt);
        }
        let policy = &self.settings.policy;
        let idle_expires_at = session.idle_expiry_after_refresh(now, policy);
        let access_expires_at = session.access_token_expiry(now, policy);
        let access = match narrowed {
            Some(claims) => self.keys.with_signing_keyring(now, |keyring| {
                self.settings.tokens.issue_with_claims(
                    keyring,
                    &session,
                    claims,
                    now,
                    access_expires_at,
                )
            })?,
            None => self.issue_access_token(&session, now, access_expires_at)?,
        };
        let successor = RefreshToken::generate(now);
        let pair = IssuedPair {
            access_token: access.token,
            access_expires_at_ms: access.expires_at.unix_millis(),
            refresh_token: successor.expose().to_owned(),
            refresh_expires_at_ms: idle_expires_at.min(session.expires_at).unix_millis(),
        };
        let rotation = Rotation {
            presented: hash,
            session_id: session.id,
            successor: successor.hash(),
            sealed_successor: token.seal_successor(&pair),
            now,
            idle_expires_at,
            access_expires_at: access.expires_at,
            bind_dpop_jkt,
            audit: self
                .settings
                .audit_refreshes
                .records(self.refreshes.fetch_add(1, Ordering::Relaxed))
                .then(|| {
                    audit_event(
                        crate::event::SESSION_REFRESHED,
                        Severity::Info,
                        &session,
                        now,
                        None,
                        json!({ "access_expires_at": access.expires_at.unix_seconds() }),
                    )
                }),
            proof: proof_replay,
        };
        match self.store.rotate_refresh_token(&rotation).await? {
            RotationOutcome::Rotated => {
                session.last_active_at = now;
                session.idle_expires_at = idle_expires_at;
                session.access_expires_at = session.access_expires_at.max(access.expires_at);
                let shared = Arc::new(session.clone());
                self.fresh.put(rotation.successor, now, Arc::clone(&shared));
                self.sessions.put(shared, now);
                Ok(Some(IssuedSession {
                    pair,
                    session,
                    replayed: false,
                    at: now,
                }))
            }
            RotationOutcome::Lost => Ok(None),
            RotationOutcome::ProofReplayed => Err(dpop_refused(&session, DpopError::Replayed)),
        }
    }

    /// The successor pair sealed under `token` when it was spent, for a grace-window replay.
    /// A sealed pair that does not open (altered, or moved from another token's row) cannot be
    /// handed out: it is logged and audited as `security.integrity_failure` naming the row,
    /// and the replay is taken for reuse (the session is revoked), never answered 500.
    ///
    /// # Errors
    /// [`Error::RefreshRejected`] with [`RefreshRejection::ReuseDetected`] when it does not
    /// open; [`Error::Store`] when the revocation cannot be written.
    async fn open_replayed_successor(
        &self,
        token: &RefreshToken,
        record: &RefreshTokenRecord,
        session: &Session,
        now: Timestamp,
    ) -> Result<IssuedPair, Error> {
        let sealed = record.sealed_successor.as_deref().unwrap_or_default();
        let error = match token.open_successor(sealed) {
            Ok(pair) => return Ok(pair),
            Err(error) => error,
        };
        let column = crate::crypt::columns::SEALED_SUCCESSOR;
        tracing::warn!(
            column,
            session_id = %session.id,
            %error,
            "the sealed successor of a spent refresh token does not open (moved from another \
             row, or altered); its replay is refused as reuse"
        );
        // The token is spent and its session revoked below, so its hash names the row and
        // opens nothing.
        self.append_integrity_events(&[audit_event(
            INTEGRITY_FAILURE,
            Severity::Critical,
            session,
            now,
            None,
            json!({
                "column": column,
                "session_id": session.id.to_string(),
                "refresh_token_hash": crate::audit::hex(&record.hash.0),
            }),
        )])
        .await;
        self.revoke_for_reuse(session, now).await?;
        Err(Error::RefreshRejected(RefreshRejection::ReuseDetected))
    }

    /// Logs, and audits as `security.integrity_failure`, each encrypted value of `sessions` that
    /// did not open, once per row and column per [`crate::integrity::REPORT_INTERVAL`]. The
    /// read that found them succeeds whatever happens here: an audit write that fails is
    /// logged.
    async fn report_unreadable(&self, sessions: &[Session]) {
        let now = self.clock.now();
        let mut events = Vec::new();
        for session in sessions.iter().filter(|s| !s.unreadable.is_empty()) {
            let row = session.id.to_string();
            for &column in &session.unreadable {
                if !self.integrity.should_report(column, &row, now) {
                    tracing::debug!(column, session_id = %row, "encrypted value still does not open");
                    continue;
                }
                tracing::warn!(
                    column,
                    session_id = %row,
                    "an encrypted value does not open (moved from another row, altered, or \
                     sealed under an unknown key); it reads as unreadable"
                );
                events.push(audit_event(
                    INTEGRITY_FAILURE,
                    Severity::Critical,
                    session,
                    now,
                    None,
                    json!({ "column": column, "session_id": row }),
                ));
            }
        }
        self.append_integrity_events(&events).await;
    }

    /// As [`Self::report_unreadable`], for devices of the registry.
    async fn report_unreadable_devices(&self, devices: &[DeviceRecord]) {
        let now = self.clock.now();
        let mut events = Vec::new();
        for record in devices.iter().filter(|d| !d.unreadable.is_empty()) {
            let row = format!("{}\0{}", record.user_id, record.device.id);
            for &column in &record.unreadable {
                if !self.integrity.should_report(column, &row, now) {
                    tracing::debug!(column, device_id = %record.device.id, "encrypted value still does not open");
                    continue;
                }
                tracing::warn!(
                    column,
                    user_id = %record.user_id,
                    device_id = %record.device.id,
                    "an encrypted value does not open (moved from another row, altered, or \
                     sealed under an unknown key); it reads as unreadable"
                );
                let mut details = Map::new();
                details.insert("column".into(), json!(column));
                details.insert("device_id".into(), json!(record.device.id.as_str()));
                events.push(NewAuditEvent {
                    kind: INTEGRITY_FAILURE,
                    severity: Severity::Critical,
                    user_id: Some(record.user_id.clone()),
                    session_id: None,
                    ip: None,
                    at: now,
                    details,
                });
            }
        }
        self.append_integrity_events(&events).await;
    }

    async fn append_integrity_events(&self, events: &[NewAuditEvent]) {
        // A command that only reads has logged them; it writes nothing.
        if events.is_empty() || self.settings.read_only {
            return;
        }
        if let Err(error) = self.store.append_audit(events).await {
            tracing::error!(%error, "could not audit unreadable encrypted values");
        }
    }

    /// `session`'s claims, its roles' permissions added, narrowed to `requested`.
    fn narrowed_claims(
        &self,
        session: &Session,
        requested: &Scope,
    ) -> Result<Map<String, Value>, Error> {
        let expanded = self.settings.roles.expand(&session.claims);
        crate::permission::narrow(expanded.as_ref().unwrap_or(&session.claims), requested)
            .map_err(Error::ScopeBeyondSession)
    }

    /// Signs an access token for `session` with the key that signs at `now`, its roles'
    /// permissions added to its claims.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when no key signs at `now` (a service that only reads).
    fn issue_access_token(
        &self,
        session: &Session,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<IssuedAccessToken, Error> {
        let expanded = self.settings.roles.expand(&session.claims);
        let claims = expanded.as_ref().unwrap_or(&session.claims);
        self.keys.with_signing_keyring(now, |keyring| {
            self.settings
                .tokens
                .issue_with_claims(keyring, session, claims, now, expires_at)
        })
    }

    /// Acts on `anomaly` (see [`Self::acting_anomaly`]) of a refresh of `session` from `origin`
    /// as the anomaly policy says: a `security.anomaly` audit event (and its live event), or
    /// that event and the session's revocation, answered as a refused refresh.
    async fn handle_anomaly(
        &self,
        session: &Session,
        anomaly: &Anomaly,
        origin: &RequestOrigin,
        now: Timestamp,
    ) -> Result<(), Error> {
        let revoke = self.settings.anomaly.policy == AnomalyPolicy::Revoke;
        tracing::warn!(
            session_id = %session.id,
            changed = ?anomaly.changes.iter().map(|change| change.signal.as_str()).collect::<Vec<_>>(),
            revoke,
            "refresh unlike its session"
        );
        // Written before the refresh is answered: a refresh that could not be reported is
        // not granted either, and a retry reports it again.
        self.store
            .append_audit(&[anomaly_event(session, anomaly, origin, now, revoke)])
            .await?;
        if revoke {
            let revoked = self
                .store
                .revoke_session(
                    session.id,
                    Revocation {
                        at: now,
                        reason: RevokeReason::Anomaly,
                    },
                    &audit_for(move |session: &Session| {
                        revoked_event(session, now, RevokeReason::Anomaly, "system")
                    }),
                )
                .await?;
            let access_expires_at = revoked
                .map(|(session, _)| session.access_expires_at)
                .unwrap_or(session.access_expires_at);
            self.revoke_locally(session.id, access_expires_at);
            return Err(Error::RefreshRejected(RefreshRejection::Anomaly));
        }
        Ok(())
    }

    async fn revoke_for_reuse(&self, session: &Session, now: Timestamp) -> Result<(), Error> {
        tracing::warn!(session_id = %session.id, "spent refresh token presented again; revoking the session");
        let revoked = self
            .store
            .revoke_session(
                session.id,
                Revocation {
                    at: now,
                    reason: RevokeReason::ReuseDetected,
                },
                &audit_for(move |session: &Session| {
                    let mut event =
                        revoked_event(session, now, RevokeReason::ReuseDetected, "system");
                    event.kind = "security.reuse_detected";
                    event.severity = Severity::Critical;
                    event
                }),
            )
            .await?;
        let access_expires_at = revoked
            .map(|(session, _)| session.access_expires_at)
            .unwrap_or(session.access_expires_at);
        self.revoke_locally(session.id, access_expires_at);
        Ok(())
    }

    /// What an introspection (RFC 7662) may say about a refresh token: its session if the
    /// token is live (issued, unspent, its session neither revoked nor expired), else `None`.
    /// Nothing is spent or written, so asking never changes the token's fate. A token spent
    /// moments ago is not live even inside the reuse grace window: only its successor is.
    ///
    /// # Errors
    /// [`Error::Store`].
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn inspect_refresh_token(
        &self,
        presented: &str,
    ) -> Result<Option<(RefreshTokenRecord, Session)>, Error> {
        let Ok(token) = RefreshToken::parse(presented) else {
            return Ok(None);
        };
        let Some((record, session)) = self.store.find_refresh_token(&token.hash()).await? else {
            return Ok(None);
        };
        let live = record.spent_at.is_none() && session.is_active(self.clock.now());
        Ok(live.then_some((record, session)))
    }

    /// The validated token and the session of a live access token, for introspection: the
    /// token must pass [`Self::authenticate`], and its session must still be unrevoked in
    /// storage (so a revocation by another process counts at once, not on the next sync).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] when the token or its session is not live; [`Error::Store`].
    pub async fn inspect_access_token(
        &self,
        access_token: &str,
    ) -> Result<(ValidatedToken, Arc<Session>), Error> {
        let token = self.authenticate(access_token)?;
        let session = self.current_session(&token).await?;
        Ok((token, session))
    }

    /// Revokes the session a token belongs to (RFC 7009): a refresh token sessiond issued,
    /// spent or not, or an access token that validates. `actor_is_admin` says whether an admin
    /// key asks (reason `revoked_by_admin`) or the token's holder (reason `logout`). Returns
    /// whether the token named a session; an unknown, malformed or expired token names none
    /// and revokes nothing. Revoking an already revoked session succeeds.
    ///
    /// # Errors
    /// [`Error::Store`].
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn revoke_by_token(&self, token: &str, actor_is_admin: bool) -> Result<bool, Error> {
        let session_id = if let Ok(refresh) = RefreshToken::parse(token) {
            match self.store.find_refresh_token(&refresh.hash()).await? {
                Some((_, session)) => session.id,
                None => return Ok(false),
            }
        } else {
            match self.authenticate(token) {
                Ok(validated) => validated.session_id,
                Err(_) => return Ok(false),
            }
        };
        let reason = if actor_is_admin {
            RevokeReason::RevokedByAdmin
        } else {
            RevokeReason::Logout
        };
        let actor_name = if actor_is_admin {
            "admin"
        } else {
            "token_holder"
        };
        let now = self.clock.now();
        let revoked = self
            .store
            .revoke_session(
                session_id,
                Revocation { at: now, reason },
                &audit_for(move |session: &Session| {
                    revoked_event(session, now, reason, actor_name)
                }),
            )
            .await?;
        match revoked {
            Some((session, _)) => {
                self.revoke_locally(session.id, session.access_expires_at);
                Ok(true)
            }
            // Purged between the lookup and the revocation: nothing left to end.
            None => Ok(false),
        }
    }

    /// Validates an access token: no I/O.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] with the reason.
    pub fn authenticate(&self, access_token: &str) -> Result<ValidatedToken, Error> {
        let now = self.clock.now();
        Ok(self.keys.with_keyring(|keyring| match keyring {
            Some(keyring) => self
                .validator
                .validate(access_token, keyring, &self.revoked, now),
            None => {
                self.validator
                    .validate(access_token, &VerificationKeys::new(), &self.revoked, now)
            }
        })?)
    }

    /// The session an access token belongs to.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] when the session is gone or revoked; [`Error::Store`].
    pub async fn current_session(&self, caller: &ValidatedToken) -> Result<Arc<Session>, Error> {
        let now = self.clock.now();
        if let Some(session) = self.sessions.get(&caller.session_id, now) {
            return Ok(session);
        }
        let stored = self.store.session(caller.session_id).await?;
        self.report_unreadable(stored.as_slice()).await;
        match stored {
            Some(session) if session.revoked_at.is_none() => {
                self.sessions.put(session.clone(), now);
                Ok(Arc::new(session))
            }
            Some(session) => {
                self.revoke_locally(session.id, session.access_expires_at);
                Err(Error::Unauthenticated(TokenError::Revoked))
            }
            None => Err(Error::Unauthenticated(TokenError::Revoked)),
        }
    }

    /// The active sessions of `user`, most recently active first.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad user id; [`Error::Store`].
    pub async fn list_sessions(&self, user: &str) -> Result<Vec<Session>, Error> {
        let user = UserId::parse(user, "user_id")?;
        let sessions = self.store.active_sessions(&user, self.clock.now()).await?;
        self.report_unreadable(&sessions).await;
        Ok(sessions)
    }

    /// Revokes session `id` on behalf of `actor`. Revoking an already revoked session succeeds.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Forbidden`] when a user asks for another user's session;
    /// [`Error::Store`].
    pub async fn revoke_session(&self, actor: Actor<'_>, id: SessionId) -> Result<(), Error> {
        let reason = match actor {
            Actor::User(caller) if caller.session_id == id => RevokeReason::Logout,
            Actor::User(_) => RevokeReason::RevokedByUser,
            Actor::Admin => RevokeReason::RevokedByAdmin,
        };
        if let Actor::User(caller) = actor {
            // Ownership is checked before anything is written.
            let session = self.store.session(id).await?.ok_or(Error::NotFound)?;
            if session.user_id.as_str() != caller.user_id {
                return Err(Error::Forbidden);
            }
        }
        let now = self.clock.now();
        let actor_name = actor_name(actor);
        let revoked = self
            .store
            .revoke_session(
                id,
                Revocation { at: now, reason },
                &audit_for(move |session: &Session| {
                    revoked_event(session, now, reason, actor_name)
                }),
            )
            .await?
            .ok_or(Error::NotFound)?;
        self.revoke_locally(id, revoked.0.access_expires_at);
        self.report_unreadable(std::slice::from_ref(&revoked.0))
            .await;
        Ok(())
    }

    /// Revokes every active session of `user`, except `except`; returns how many.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad user id; [`Error::Store`].
    pub async fn revoke_all(
        &self,
        actor: Actor<'_>,
        user: &str,
        except: Option<SessionId>,
    ) -> Result<usize, Error> {
        let user = UserId::parse(user, "user_id")?;
        let reason = match actor {
            Actor::User(_) => RevokeReason::RevokedByUser,
            Actor::Admin => RevokeReason::RevokedByAdmin,
        };
        let now = self.clock.now();
        let actor_name = actor_name(actor);
        let revoked = self
            .store
            .revoke_user_sessions(
                &user,
                except,
                Revocation { at: now, reason },
                &audit_for(move |session: &Session| {
                    revoked_event(session, now, reason, actor_name)
                }),
            )
            .await?;
        for session in &revoked {
            self.revoke_locally(session.id, session.access_expires_at);
        }
        self.report_unreadable(&revoked).await;
        Ok(revoked.len())
    }

    /// The devices in `user`'s registry, most recently seen first.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad user id; [`Error::Store`].
    pub async fn list_devices(&self, user: &str) -> Result<Vec<DeviceRecord>, Error> {
        let user = UserId::parse(user, "user_id")?;
        let devices = self.store.devices(&user).await?;
        self.report_unreadable_devices(&devices).await;
        Ok(devices)
    }

    /// Marks `user`'s device `device` trusted (or not) on behalf of `actor`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user has no such device; [`Error::InvalidInput`];
    /// [`Error::Store`].
    pub async fn trust_device(
        &self,
        actor: Actor<'_>,
        user: &str,
        device: &str,
        trusted: bool,
    ) -> Result<(), Error> {
        let user = UserId::parse(user, "user_id")?;
        // A device id that cannot exist names no device.
        let device = DeviceId::parse(device, "id").map_err(|_| Error::NotFound)?;
        let audit = device_audit(
            if trusted {
                "device.trusted"
            } else {
                "device.untrusted"
            },
            &user,
            &device,
            self.clock.now(),
            actor,
        );
        if self
            .store
            .set_device_trusted(&user, &device, trusted, &audit)
            .await?
        {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    /// Removes `user`'s device `device` from the registry and revokes its sessions, on behalf
    /// of `actor`; returns how many sessions were revoked.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user has no such device; [`Error::InvalidInput`];
    /// [`Error::Store`].
    pub async fn forget_device(
        &self,
        actor: Actor<'_>,
        user: &str,
        device: &str,
    ) -> Result<usize, Error> {
        let user = UserId::parse(user, "user_id")?;
        let device = DeviceId::parse(device, "id").map_err(|_| Error::NotFound)?;
        let reason = match actor {
            Actor::User(_) => RevokeReason::RevokedByUser,
            Actor::Admin => RevokeReason::RevokedByAdmin,
        };
        let now = self.clock.now();
        let actor_name = actor_name(actor);
        let revoked = self
            .store
            .forget_device(
                &user,
                &device,
                Revocation { at: now, reason },
                &device_audit("device.forgotten", &user, &device, now, actor),
                &audit_for(move |session: &Session| {
                    revoked_event(session, now, reason, actor_name)
                }),
            )
            .await?
            .ok_or(Error::NotFound)?;
        for session in &revoked {
            self.revoke_locally(session.id, session.access_expires_at);
        }
        Ok(revoked.len())
    }

    /// Adds sessions revoked since `since` (by this or any other process sharing the store) to
    /// the revoked set, and forgets those whose tokens have all expired. Returns the latest
    /// revocation time seen, or `since`.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn sync_revocations(&self, since: Timestamp) -> Result<Timestamp, Error> {
        let tokens_dead_before = self.tokens_dead_before(self.clock.now());
        let revoked = self.store.revoked_since(since, tokens_dead_before).await?;
        let mut latest = since;
        for session in revoked {
            self.revoke_locally(session.id, session.access_expires_at);
            latest = latest.max(session.revoked_at);
        }
        self.revoked.prune(tokens_dead_before);
        Ok(latest)
    }

    /// Refuses the access tokens of session `id`, revoked by another process sharing the store
    /// (reported by a [`crate::store::RevocationFeed`]), until `access_expires_at`, and drops
    /// its cached copy. No I/O.
    pub fn apply_remote_revocation(&self, id: SessionId, access_expires_at: Timestamp) {
        self.revoke_locally(id, access_expires_at);
    }

    /// An access token whose `exp` is before this instant fails validation at `now`, leeway
    /// included; revocation records must outlive every token that would still pass.
    fn tokens_dead_before(&self, now: Timestamp) -> Timestamp {
        now.minus(self.settings.policy.leeway)
    }

    /// Deletes one batch of sessions past retention; returns how many were deleted.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn purge_batch(&self, batch: u32) -> Result<u64, Error> {
        let now = self.clock.now();
        let cutoff = now.minus(self.settings.policy.retention);
        Ok(self
            .store
            .purge(cutoff, self.tokens_dead_before(now), batch)
            .await?)
    }
}

impl SessionService {
    /// Announces, with a `session.expired` audit event and event, at most `batch` sessions
    /// that reached their idle or absolute expiry and were not announced yet; returns how many.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn announce_expired(&self, batch: u32) -> Result<u64, Error> {
        let now = self.clock.now();
        Ok(self
            .store
            .announce_expired(
                now,
                batch,
                &audit_for(move |session: &Session| {
                    let timeout = if session.expires_at <= now {
                        "absolute"
                    } else {
                        "idle"
                    };
                    audit_event(
                        crate::event::SESSION_EXPIRED,
                        Severity::Info,
                        session,
                        now,
                        None,
                        json!({ "timeout": timeout }),
                    )
                }),
            )
            .await?)
    }

    /// Seals at most `batch` audit events into the chain; returns how many.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn seal_audit(&self, batch: u32) -> Result<u64, Error> {
        Ok(self.store.seal_audit(batch).await?)
    }

    /// At most `limit` sealed audit events passing `query`, in seq order.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn audit_events(
        &self,
        query: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<SealedAuditEvent>, Error> {
        Ok(self.store.audit_events(query, limit).await?)
    }

    /// The client address of a sealed audit event, opened (addresses are stored sealed, see
    /// [`crate::store::AuditStore::open_audit_ip`]). An address that does not open is logged
    /// and given as `None`: the rest of the event is still worth reading, and
    /// [`SessionService::verify_audit`] names an event altered after it was sealed.
    pub fn audit_ip(&self, event: &SealedAuditEvent) -> Option<String> {
        self.store
            .open_audit_ip(&event.entry)
            .unwrap_or_else(|error| {
                tracing::warn!(seq = event.seq, error = %error, "an audit event's address does not open");
                None
            })
    }

    /// Recomputes the sealed audit chain from its checkpoint (or from genesis) to its recorded
    /// head. The outer result is whether storage could be read; the inner one names the first
    /// bad seq, if any.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn verify_audit(&self) -> Result<Result<ChainSummary, ChainBreak>, Error> {
        const PAGE: u32 = 1_000;
        let chain = self.store.audit_chain().await?;
        // Only a checkpoint needs the key; asking for it creates it, and a chain without a
        // checkpoint (never pruned) is verified without writing anything. A checkpoint's key
        // was made before the checkpoint was.
        let verifier = match &chain.checkpoint {
            None => ChainVerifier::new(None, &[]),
            Some(checkpoint) => ChainVerifier::new(Some(checkpoint), &self.checkpoint_key().await?),
        };
        let mut verifier = match verifier {
            Ok(verifier) => verifier,
            Err(broken) => return Ok(Err(broken)),
        };
        let mut query = AuditQuery {
            after_seq: chain
                .checkpoint
                .as_ref()
                .map_or(0, |checkpoint| checkpoint.seq),
            ..AuditQuery::default()
        };
        // Rows of a prefix that should have been pruned would sort before the checkpoint's
        // seq and be skipped; ask from zero so they are checked (and reported) too.
        if query.after_seq > 0 {
            let stale = self.store.audit_events(&AuditQuery::default(), 1).await?;
            if let Some(event) = stale.first().filter(|event| event.seq <= query.after_seq) {
                return Ok(Err(ChainBreak {
                    seq: event.seq,
                    reason: format!(
                        "the event is at or before the checkpoint (seq {})",
                        query.after_seq
                    ),
                }));
            }
        }
        loop {
            let page = self.store.audit_events(&query, PAGE).await?;
            for event in &page {
                if event.seq > chain.head_seq {
                    // Sealed after the head was read: where this check stops.
                    return Ok(verifier.finish(chain.head_seq, &chain.head_hash));
                }
                if let Err(broken) = verifier.check(event) {
                    return Ok(Err(broken));
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => query.after_seq = last.seq,
                _ => return Ok(verifier.finish(chain.head_seq, &chain.head_hash)),
            }
        }
    }

    /// Deletes the sealed audit events older than `retention`, after checking the whole chain,
    /// and leaves a checkpoint signed with the checkpoint key where the chain now starts.
    /// Returns how many events were deleted, or where the chain is broken (nothing is deleted
    /// then: pruning must never launder tampering into a signed checkpoint).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn prune_audit(
        &self,
        retention: std::time::Duration,
    ) -> Result<Result<u64, ChainBreak>, Error> {
        if let Err(broken) = self.verify_audit().await? {
            return Ok(Err(broken));
        }
        let key = self.checkpoint_key().await?;
        let now = self.clock.now();
        let deleted = self
            .store
            .prune_audit(
                now.minus(retention),
                &(std::sync::Arc::new(move |seq, hash| AuditCheckpoint::sign(seq, hash, now, &key))
                    as crate::audit::CheckpointFn),
            )
            .await?;
        Ok(Ok(deleted))
    }

    /// The checkpoint key, created on first use.
    async fn checkpoint_key(&self) -> Result<CheckpointKey, Error> {
        let candidate = crate::audit::generate_checkpoint_key();
        Ok(self.store.audit_checkpoint_key(&candidate).await?)
    }

    /// Refuses the session's access tokens from now on and drops its cached copy.
    fn revoke_locally(&self, id: SessionId, access_expires_at: Timestamp) {
        self.revoked.insert(id, access_expires_at);
        self.sessions.evict(&id);
    }
}

fn actor_name(actor: Actor<'_>) -> &'static str {
    match actor {
        Actor::User(_) => "user",
        Actor::Admin => "admin",
    }
}

fn audit_event(
    kind: &'static str,
    severity: Severity,
    session: &Session,
    at: Timestamp,
    ip: Option<String>,
    details: Value,
) -> NewAuditEvent {
    NewAuditEvent {
        kind,
        severity,
        user_id: Some(session.user_id.clone()),
        session_id: Some(session.id),
        ip,
        at,
        details: match details {
            Value::Object(map) => map,
            _ => Map::new(),
        },
    }
}

/// The `security.anomaly` audit event of a refresh from `origin`: severity `warning`; the
/// request's address in the row's `ip` (admins only, like every audit row), and only network
/// prefixes, browser and OS names in the details that users' event streams also get.
fn anomaly_event(
    session: &Session,
    anomaly: &Anomaly,
    origin: &RequestOrigin,
    at: Timestamp,
    revoked: bool,
) -> NewAuditEvent {
    NewAuditEvent {
        kind: crate::event::ANOMALY,
        severity: Severity::Warning,
        user_id: Some(session.user_id.clone()),
        session_id: Some(session.id),
        ip: origin.ip.map(|ip| ip.to_string()),
        at,
        details: anomaly.details(if revoked { "revoked" } else { "notified" }),
    }
}

fn device_audit(
    kind: &'static str,
    user: &UserId,
    device: &DeviceId,
    at: Timestamp,
    actor: Actor<'_>,
) -> NewAuditEvent {
    NewAuditEvent {
        kind,
        severity: Severity::Info,
        user_id: Some(user.clone()),
        session_id: match actor {
            Actor::User(caller) => Some(caller.session_id),
            Actor::Admin => None,
        },
        ip: None,
        at,
        details: Map::from_iter([
            ("device_id".to_owned(), Value::from(device.as_str())),
            ("actor".to_owned(), Value::from(actor_name(actor))),
        ]),
    }
}

fn revoked_event(
    session: &Session,
    at: Timestamp,
    reason: RevokeReason,
    actor: &str,
) -> NewAuditEvent {
    audit_event(
        "session.revoked",
        Severity::Info,
        session,
        at,
        None,
        json!({ "reason": reason.as_str(), "actor": actor }),
    )
}

fn check_ip(ip: &str) -> Result<String, Error> {
    ip.parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| Error::invalid("device.ip", "must be an IPv4 or IPv6 address"))
}

fn check_size(value: &Map<String, Value>, limit: usize, field: &'static str) -> Result<(), Error> {
    let size = serde_json::to_vec(value)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    if size > limit {
        return Err(Error::invalid(
            field,
            format!("must serialize to at most {limit} bytes"),
        ));
    }
    Ok(())
}

/// How deep arrays and objects nest in `value` (0 for a scalar). Values come from a parser
/// with its own depth limit, so the recursion is bounded.
fn nesting_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting_depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(nesting_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_claims(claims: &Map<String, Value>) -> Result<(), Error> {
    check_size(claims, MAX_CLAIMS_BYTES, "claims")?;
    if let Some(reserved) = claims
        .keys()
        .find(|name| RESERVED_CLAIMS.contains(&name.as_str()))
    {
        return Err(Error::invalid(
            "claims",
            format!("`{reserved}` is set by sessiond and cannot be given"),
        ));
    }
    // The claims object is the token payload's first level.
    if claims
        .values()
        .any(|value| nesting_depth(value) >= MAX_CLAIMS_DEPTH)
    {
        return Err(Error::invalid(
            "claims",
            format!("must not nest arrays and objects more than {MAX_CLAIMS_DEPTH} deep"),
        ));
    }
    for (name, field) in [
        ("roles", "claims.roles"),
        ("permissions", "claims.permissions"),
    ] {
        if let Some(value) = claims.get(name) {
            let all_strings = value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string));
            if !all_strings {
                return Err(Error::invalid(field, "must be an array of strings"));
            }
        }
    }
    // Permissions are also the access token's `scope`, a space-separated list, so each must
    // be a scope token of RFC 6749 §3.3.
    if let Some(bad) = claims
        .get("permissions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|permission| !crate::permission::is_scope_token(permission))
    {
        return Err(Error::invalid(
            "claims.permissions",
            format!("{bad:?} is not a scope token: printable ASCII without spaces, \" or \\"),
        ));
    }
    Ok(())
}
