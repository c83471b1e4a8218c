//! `Verifier`: sessiond's JWK Set, fetched and cached, and local validation of access tokens
//! with the very validator the server itself runs.
//!
//! The key set lives behind an `RwLock<Arc<VerificationKeys>>`: a verification takes the lock
//! only long enough to clone the `Arc`, and a fetch swaps in a whole new set. Fetches are
//! serialised by one async mutex (single flight), and every fetch that is not an explicit
//! [`Verifier::refresh`] is rate limited: at most one per `min_refetch_interval`, whatever
//! triggered it (a first use, a stale cache, or tokens naming kids the set does not hold).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sessiond_core::dpop::{self, DpopError, DpopRules, NonceKey, ProofCheck};
use sessiond_core::revocation::RevokedSessions;
use sessiond_core::token::{
    AccessTokenValidator, JwksError, TokenError, ValidationRules, VerificationKeys, decode_claims,
};
use sessiond_core::{Clock, SessionId, Timestamp};

use crate::dpop::{DEFAULT_REPLAY_CAPACITY, Remember, ReplayCache};
use crate::feed::{FeedStats, FeedTask, RevocationFeed, RevokedSet};
use crate::permission;

/// How long a key set is fresh when the response carries no `Cache-Control: max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// The longest a key set is ever considered fresh, whatever `max-age` says.
pub const MAX_CACHE_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest JWK Set accepted; sessiond's holds a handful of keys in well under 4 KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The claims of a verified access token.
///
/// The field names are the claim names of the token (RFC 9068), so that they read the same in
/// code as in a decoded JWT.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `sub`: the user the token speaks for.
    pub sub: String,
    /// `sid`: the sessiond session it belongs to.
    pub sid: SessionId,
    /// `tenant_id`, when the session has one.
    pub tenant_id: Option<String>,
    /// `roles` (empty when absent; entries that are not strings are ignored).
    pub roles: Vec<String>,
    /// `permissions` (empty when absent; entries that are not strings are ignored).
    pub permissions: Vec<String>,
    /// `exp`, in seconds since the Unix epoch.
    pub exp: i64,
    /// `cnf.jkt`: the thumbprint of the key the token is bound to (DPoP), if it is bound.
    pub cnf_jkt: Option<String>,
    /// Every claim of the token, custom ones included.
    pub raw: Map<String, Value>,
}

impl Claims {
    fn new(
        session_id: SessionId,
        user_id: String,
        exp: i64,
        cnf_jkt: Option<String>,
        raw: Map<String, Value>,
    ) -> Self {
        let strings = |name: &str| -> Vec<String> {
            raw.get(name)
                .and_then(Value::as_array)
                .map(|values| {
                    values
                        .iter()
                        .filter_map(|value| value.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            sub: user_id,
            sid: session_id,
            tenant_id: raw
                .get("tenant_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            roles: strings("roles"),
            permissions: strings("permissions"),
            exp,
            cnf_jkt,
            raw,
        }
    }

    /// Whether the token grants `required`, wildcards included (see [`crate::has_permission`]).
    pub fn has_permission(&self, required: &str) -> bool {
        permission::has_permission(self, required)
    }

    /// Whether the token carries the role `role` (exact, case-sensitive).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|granted| granted == role)
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The token itself is bad: malformed, expired, for another audience, signed by a key
    /// sessiond does not publish, revoked, … Answer `401`.
    #[error("invalid access token: {0}")]
    Invalid(#[from] TokenError),
    /// No key set has ever been fetched (sessiond unreachable since start), so no token can be
    /// judged. Answer `503`: the token may well be good.
    #[error("no verification keys: the JWK set could not be fetched yet")]
    KeysUnavailable,
    /// The token is bound to a key (DPoP) but was presented as a bearer token, without proof
    /// of possession of the key. Answer `401` with a `DPoP error="invalid_token"` challenge.
    #[error("the access token is bound to a key: present it with the DPoP scheme and a proof")]
    BoundTokenAsBearer,
    /// The token was presented with the `DPoP` scheme but is bound to no key. Answer `401`
    /// with a `DPoP error="invalid_token"` challenge.
    #[error("the access token is not bound to a key: present it as a bearer token")]
    UnboundTokenAsDpop,
    /// The DPoP proof is missing or refused; `reason` is a stable snake_case word
    /// (`missing`, `wrong_key`, `replayed`, or another reason of
    /// [`DpopError::reason`](sessiond_core::dpop::DpopError::reason)). Answer `401` with a
    /// `DPoP error="invalid_dpop_proof"` challenge.
    #[error("invalid DPoP proof: {reason}")]
    InvalidDpopProof {
        /// Why.
        reason: &'static str,
    },
    /// The verifier requires DPoP nonces and the proof had none, or a stale one. Answer `401`
    /// with a `DPoP error="use_dpop_nonce"` challenge and `nonce` in a `DPoP-Nonce` header: the
    /// client sends the request again with it.
    #[error("a DPoP nonce is required")]
    UseDpopNonce {
        /// The nonce to send back to the client.
        nonce: String,
    },
    /// The DPoP replay cache is full of proof ids still inside their window, so no new proof
    /// can be accepted without risking a replay. Answer `503`; see
    /// [`VerifierBuilder::dpop_replay_capacity`].
    #[error("the DPoP replay cache is full")]
    ReplayCacheFull,
}

/// Why fetching the JWK Set failed. The verifier keeps serving the keys it has.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed: connection refused, timeout, TLS, …
    #[error("requesting the JWK set failed")]
    Request(#[source] reqwest::Error),
    /// sessiond answered with a status other than 2xx.
    #[error("the JWK set endpoint answered {0}")]
    Status(u16),
    /// The body exceeded 1 MiB.
    #[error("the JWK set is larger than 1 MiB")]
    TooLarge,
    /// The body is not JSON.
    #[error("the JWK set is not JSON")]
    NotJson(#[source] serde_json::Error),
    /// The JSON is not an acceptable JWK Set.
    #[error("the JWK set was refused")]
    Jwks(#[source] JwksError),
}

/// Why a [`VerifierBuilder`] could not build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No `issuer` was given; every token's `iss` must be checked.
    #[error("an issuer is required")]
    MissingIssuer,
    /// The JWKS URL is not an absolute `http` or `https` URL.
    #[error("the JWKS URL {0:?} is not an absolute http(s) URL")]
    InvalidUrl(String),
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("building the HTTP client failed")]
    Http(#[source] reqwest::Error),
    /// A revocation feed was asked for outside a Tokio runtime, which its task needs.
    #[error("a revocation feed needs a tokio runtime: build the verifier inside one")]
    NoRuntime,
}

/// A snapshot of the verifier's key-cache health, for metrics and health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierStats {
    /// JWK Set requests made (successful or not).
    pub fetches: u64,
    /// Requests that failed (network, status, body or JWK Set refused).
    pub fetch_failures: u64,
    /// Fetches triggered by a token whose `kid` was not in the cached set.
    pub unknown_kid_refetches: u64,
    /// The last fetch failed: tokens are being verified against the cached keys (if any) while
    /// sessiond is unreachable.
    pub offline: bool,
    /// How long ago the last successful fetch finished; `None` if there has been none (keys
    /// given to [`VerifierBuilder::initial_keys`] do not count).
    pub last_success_age: Option<Duration>,
    /// How long the current key set was to be considered fresh (from `Cache-Control`,
    /// clamped); `None` before the first successful fetch.
    pub cache_lifetime: Option<Duration>,
    /// How many keys the cached set holds.
    pub keys: usize,
    /// How many sessions are in the revoked set.
    pub revoked_sessions: usize,
    /// The revocation feed's state; `None` when the verifier does not follow one
    /// ([`VerifierBuilder::revocation_feed`]).
    pub feed: Option<FeedStats>,
}

/// Builds a [`Verifier`]; see [`Verifier::builder`].
#[derive(Debug)]
pub struct VerifierBuilder {
    jwks_url: String,
    issuer: Option<String>,
    audience: String,
    leeway: Duration,
    min_refetch_interval: Duration,
    fetch_timeout: Duration,
    http: Option<reqwest::Client>,
    clock: Option<Arc<dyn Clock>>,
    initial_keys: Option<VerificationKeys>,
    feed: Option<RevocationFeed>,
    dpop_proof_max_age: Duration,
    dpop_replay_capacity: usize,
    dpop_nonce_secret: Option<[u8; 32]>,
    dpop_origin: Option<String>,
}

impl VerifierBuilder {
    /// How old a DPoP proof may be (its `iat`), besides the leeway; default 60 s, as sessiond's
    /// `SESSIOND_DPOP_PROOF_MAX_AGE`.
    pub fn dpop_proof_max_age(mut self, max_age: Duration) -> Self {
        self.dpop_proof_max_age = max_age;
        self
    }

    /// The most DPoP proof ids the replay cache holds (default 100,000); when it is full of ids
    /// still inside their window, proofs are refused with [`VerifyError::ReplayCacheFull`].
    pub fn dpop_replay_capacity(mut self, capacity: usize) -> Self {
        self.dpop_replay_capacity = capacity;
        self
    }

    /// Requires a nonce in every DPoP proof (RFC 9449 §9), minted with `secret`; a proof
    /// without one, or with one older than two 5-minute periods, is refused with
    /// [`VerifyError::UseDpopNonce`] carrying a fresh nonce. Instances that share `secret`
    /// accept each other's nonces. Off by default.
    pub fn dpop_nonce_secret(mut self, secret: [u8; 32]) -> Self {
        self.dpop_nonce_secret = Some(secret);
        self
    }

    /// The origin (`https://api.example.com`) clients reach this resource server at, which the
    /// axum extractor puts before the request path to check a DPoP proof's `htu`. Needed
    /// behind a proxy that terminates TLS or rewrites `Host`; without it the extractor uses the
    /// request's own scheme and `Host` (scheme `http` when the request line has none).
    pub fn dpop_origin(mut self, origin: impl Into<String>) -> Self {
        self.dpop_origin = Some(origin.into().trim_end_matches('/').to_owned());
        self
    }

    /// Follows sessiond's revocation feed (see [`RevocationFeed`]): a background task streams
    /// `session.revoked` events into the revoked set, so a revoked session's tokens are refused
    /// within moments rather than at their expiry. Off by default; the verifier must then be
    /// built inside a Tokio runtime.
    pub fn revocation_feed(mut self, feed: RevocationFeed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The expected `iss`: sessiond's `SESSIOND_ISSUER`. Required.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The audience `aud` must name: sessiond's `SESSIOND_AUDIENCE` (default `"sessiond"`).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default 5 s, whole seconds).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The least time between two fetches that the verifier starts on its own (first use,
    /// stale cache, unknown kid); default 30 s. It bounds the load that tokens with bogus kids
    /// can put on sessiond to one request per interval, and it is also the floor of the cache
    /// lifetime.
    pub fn min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// The timeout of one JWK Set request (default 5 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Fetches with this client instead of a new one (its own timeout applies too).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Judges `exp`, `nbf` and `iat` against this clock instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Starts with these keys (for example a JWK Set shipped with the deployment), so tokens
    /// verify before, or without, a first fetch. They are treated as fresh for
    /// [`DEFAULT_MAX_AGE`].
    pub fn initial_keys(mut self, keys: VerificationKeys) -> Self {
        self.initial_keys = Some(keys);
        self
    }

    /// Builds the verifier. It does not fetch yet: call [`Verifier::refresh`] to fetch eagerly
    /// (and fail fast at start), or let the first [`Verifier::verify`] do it.
    ///
    /// # Errors
    /// [`BuildError`] when the issuer is missing, the URL is not http(s), or the HTTP client
    /// cannot be built.
    pub fn build(self) -> Result<Verifier, BuildError> {
        let issuer = self.issuer.ok_or(BuildError::MissingIssuer)?;
        let url_is_http = reqwest::Url::parse(&self.jwks_url)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
        if !url_is_http {
            return Err(BuildError::InvalidUrl(self.jwks_url));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .timeout(self.fetch_timeout)
                .build()
                .map_err(BuildError::Http)?,
        };
        let leeway_seconds = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        let base = Instant::now();
        let (keys, stale_at) = match self.initial_keys {
            Some(keys) => (keys, millis_since(base, base + DEFAULT_MAX_AGE)),
            None => (VerificationKeys::new(), NEVER),
        };
        let feed = match self.feed {
            Some(feed) => {
                let base_is_http = reqwest::Url::parse(&feed.base_url)
                    .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
                if !base_is_http {
                    return Err(BuildError::InvalidUrl(feed.base_url));
                }
                let runtime =
                    tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
                // A client of its own: the stream lives for hours, and the key fetches' client
                // has a total timeout that would cut it.
                let http = reqwest::Client::builder()
                    .connect_timeout(self.fetch_timeout)
                    .build()
                    .map_err(BuildError::Http)?;
                Some((runtime, feed, http))
            }
            None => None,
        };
        let inner = Arc::new(Inner {
            jwks_url: self.jwks_url,
            http,
            validator: AccessTokenValidator::new(ValidationRules {
                issuer,
                audience: self.audience,
                leeway_seconds,
            }),
            min_refetch_interval: self.min_refetch_interval,
            fetch_timeout: self.fetch_timeout,
            clock: self.clock,
            base,
            keys: RwLock::new(Arc::new(keys)),
            stale_at_millis: AtomicU64::new(stale_at),
            schedule: Mutex::new(Schedule {
                generation: 0,
                last_attempt: None,
                last_success: None,
                cache_lifetime: None,
            }),
            fetch_lock: tokio::sync::Mutex::new(()),
            background_refresh: AtomicBool::new(false),
            revoked: RevokedSessions::new(),
            fetches: AtomicU64::new(0),
            fetch_failures: AtomicU64::new(0),
            unknown_kid_refetches: AtomicU64::new(0),
            offline: AtomicBool::new(false),
            dpop_rules: DpopRules {
                max_age_seconds: i64::try_from(self.dpop_proof_max_age.as_secs())
                    .unwrap_or(i64::MAX),
                leeway_seconds,
            },
            replay: ReplayCache::new(self.dpop_replay_capacity),
            nonce_key: self.dpop_nonce_secret.map(|secret| NonceKey::new(&secret)),
            dpop_origin: self.dpop_origin,
        });
        let feed = feed.map(|(runtime, feed, http)| {
            Arc::new(FeedTask::start(
                &runtime,
                Arc::clone(&inner) as Arc<dyn RevokedSet>,
                feed,
                http,
            ))
        });
        Ok(Verifier { inner, feed })
    }
}

/// Validates sessiond access tokens locally against sessiond's JWK Set, which it fetches and
/// caches. Cloning is cheap (an `Arc`): every clone shares one cache, one revoked set and one
/// set of counters.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
    /// The revocation feed's task, stopped when the last clone is dropped.
    feed: Option<Arc<FeedTask>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("jwks_url", &self.inner.jwks_url)
            .field("rules", self.inner.validator.rules())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Refuses a token bound to a key that came without the `DPoP` scheme.
fn refuse_bound(claims: Claims) -> Result<Claims, VerifyError> {
    match claims.cnf_jkt {
        Some(_) => Err(VerifyError::BoundTokenAsBearer),
        None => Ok(claims),
    }
}

/// `u64::MAX` in `stale_at_millis`: no key set yet, so nothing can be stale.
const NEVER: u64 = u64::MAX;

pub(crate) struct Inner {
    jwks_url: String,
    http: reqwest::Client,
    validator: AccessTokenValidator,
    min_refetch_interval: Duration,
    fetch_timeout: Duration,
    clock: Option<Arc<dyn Clock>>,
    /// The origin of `stale_at_millis`.
    base: Instant,
    keys: RwLock<Arc<VerificationKeys>>,
    /// When the cached set goes stale (or, after a failed fetch, when to try again), in
    /// milliseconds since `base`; [`NEVER`] until a key set is loaded. An atomic so that the
    /// hot path checks freshness without taking a lock.
    stale_at_millis: AtomicU64,
    schedule: Mutex<Schedule>,
    /// Held for the whole of a fetch: concurrent callers share one request.
    fetch_lock: tokio::sync::Mutex<()>,
    /// A background refresh task is running.
    background_refresh: AtomicBool,
    revoked: RevokedSessions,
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    unknown_kid_refetches: AtomicU64,
    offline: AtomicBool,
    dpop_rules: DpopRules,
    replay: ReplayCache,
    nonce_key: Option<NonceKey>,
    dpop_origin: Option<String>,
}

struct Schedule {
    /// Bumped when a fetch ends, so that a caller who waited for the fetch lock knows someone
    /// else fetched meanwhile.
    generation: u64,
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
    cache_lifetime: Option<Duration>,
}

/// Why a fetch is wanted; only the explicit refresh skips the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    FirstUse,
    Stale,
    UnknownKid,
}

fn millis_since(base: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base).as_millis()).unwrap_or(NEVER - 1)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a holder panicked; the schedule is plain data and stays usable.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Verifier {
    /// Starts building a verifier of the keys at `jwks_url`, normally
    /// `https://<sessiond>/.well-known/jwks.json`.
    pub fn builder(jwks_url: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            jwks_url: jwks_url.into(),
            issuer: None,
            audience: "sessiond".into(),
            leeway: Duration::from_secs(5),
            min_refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            http: None,
            clock: None,
            initial_keys: None,
            feed: None,
            dpop_proof_max_age: Duration::from_secs(60),
            dpop_replay_capacity: DEFAULT_REPLAY_CAPACITY,
            dpop_nonce_secret: None,
            dpop_origin: None,
        }
    }

    /// Verifies `token`, presented as a bearer token (`Authorization: Bearer`), and returns its
    /// claims. A token bound to a key (DPoP) is refused here: it goes through
    /// [`verify_dpop`](Self::verify_dpop).
    ///
    /// It fetches the key set first if there is none yet; starts a background refresh when the
    /// cached set has outlived its `max-age`; and, when the token names a `kid` the set does
    /// not hold, refetches once (at most one fetch per `min_refetch_interval` across all
    /// callers, concurrent ones sharing it) before refusing. Everything else is local: the
    /// same checks as sessiond's own validation (signature, `typ`, `iss`, `aud`, `exp`, `nbf`,
    /// `iat`), then the revoked set.
    ///
    /// # Errors
    /// [`VerifyError::Invalid`] for a bad token and [`VerifyError::BoundTokenAsBearer`] for a
    /// bound one (answer 401); [`VerifyError::KeysUnavailable`] when no key set could ever be
    /// fetched (answer 503).
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        refuse_bound(self.verify_any(token).await?)
    }

    /// Verifies a request that presented `token` with the `DPoP` scheme
    /// (`Authorization: DPoP <token>`) and `proof` (its `DPoP` header, if any) for `method` on
    /// `url` (scheme, authority and path as the client used them; a query is ignored), and
    /// returns the token's claims.
    ///
    /// The token is verified as by [`verify`](Self::verify), must be bound to a key
    /// (`cnf.jkt`), and the proof must be accepted by
    /// [`sessiond_core::dpop::verify_proof`] (signature, `typ`, `alg`, `htm`, `htu`, `iat`
    /// within the proof max age, `ath` equal to the token's hash, the nonce when nonces are
    /// required), be signed by the key the token names, and not have been seen before (the
    /// replay cache).
    ///
    /// # Errors
    /// As [`verify`](Self::verify) for the token; [`VerifyError::UnboundTokenAsDpop`],
    /// [`VerifyError::InvalidDpopProof`] and [`VerifyError::UseDpopNonce`] (answer 401);
    /// [`VerifyError::ReplayCacheFull`] (answer 503).
    pub async fn verify_dpop(
        &self,
        token: &str,
        proof: Option<&str>,
        method: &str,
        url: &str,
    ) -> Result<Claims, VerifyError> {
        let claims = self.verify_any(token).await?;
        self.check_proof(claims, token, proof, method, url)
    }

    /// A fresh DPoP nonce to send in a `DPoP-Nonce` header (any answer may carry one, so that
    /// clients need not be refused first); `None` unless nonces are required
    /// ([`VerifierBuilder::dpop_nonce_secret`]).
    pub fn dpop_nonce(&self) -> Option<String> {
        let inner = &self.inner;
        inner.nonce_key.as_ref().map(|key| key.mint(inner.now()))
    }

    /// The origin set with [`VerifierBuilder::dpop_origin`].
    pub fn dpop_origin(&self) -> Option<&str> {
        self.inner.dpop_origin.as_deref()
    }

    /// How many DPoP proof ids the replay cache holds.
    pub fn dpop_replay_ids(&self) -> usize {
        self.inner.replay.len()
    }

    fn check_proof(
        &self,
        claims: Claims,
        token: &str,
        proof: Option<&str>,
        method: &str,
        url: &str,
    ) -> Result<Claims, VerifyError> {
        let inner = &self.inner;
        let Some(bound_to) = claims.cnf_jkt.as_deref() else {
            return Err(VerifyError::UnboundTokenAsDpop);
        };
        let proof = proof.ok_or(VerifyError::InvalidDpopProof { reason: "missing" })?;
        let now = inner.now();
        let check = ProofCheck {
            method,
            url,
            access_token: Some(token),
            nonce: inner.nonce_key.as_ref(),
        };
        let verified = dpop::verify_proof(proof, &check, &inner.dpop_rules, now).map_err(
            |error| match &inner.nonce_key {
                Some(key) if error.is_use_nonce() => VerifyError::UseDpopNonce {
                    nonce: key.mint(now),
                },
                _ => VerifyError::InvalidDpopProof {
                    reason: error.reason(),
                },
            },
        )?;
        // Thumbprints are public: no need for a constant-time comparison.
        if verified.jkt != bound_to {
            return Err(VerifyError::InvalidDpopProof {
                reason: DpopError::WrongKey.reason(),
            });
        }
        match inner
            .replay
            .remember(verified.replay_id, verified.replay_until, now)
        {
            Remember::First => Ok(claims),
            Remember::Replayed => Err(VerifyError::InvalidDpopProof {
                reason: DpopError::Replayed.reason(),
            }),
            Remember::Full => Err(VerifyError::ReplayCacheFull),
        }
    }

    /// Verifies `token` whatever its binding.
    async fn verify_any(&self, token: &str) -> Result<Claims, VerifyError> {
        let inner = &self.inner;
        if !inner.loaded() {
            inner.fetch_if_due(Trigger::FirstUse).await;
            if !inner.loaded() {
                return Err(VerifyError::KeysUnavailable);
            }
        }
        self.refresh_if_stale();
        match self.verify_cached_any(token) {
            Err(VerifyError::Invalid(TokenError::UnknownKey)) => {
                if inner.fetch_if_due(Trigger::UnknownKid).await {
                    self.verify_cached_any(token)
                } else {
                    Err(VerifyError::Invalid(TokenError::UnknownKey))
                }
            }
            other => other,
        }
    }

    /// Verifies `token` against the cached keys only: never fetches, never waits. This is the
    /// whole per-token cost of [`Verifier::verify`] when the cache is warm.
    ///
    /// # Errors
    /// As [`Verifier::verify`]; an unknown kid is refused at once.
    pub fn verify_cached(&self, token: &str) -> Result<Claims, VerifyError> {
        refuse_bound(self.verify_cached_any(token)?)
    }

    /// Like [`verify_dpop`](Self::verify_dpop), against the cached keys only.
    ///
    /// # Errors
    /// As [`Verifier::verify_dpop`]; an unknown kid is refused at once.
    pub fn verify_dpop_cached(
        &self,
        token: &str,
        proof: Option<&str>,
        method: &str,
        url: &str,
    ) -> Result<Claims, VerifyError> {
        let claims = self.verify_cached_any(token)?;
        self.check_proof(claims, token, proof, method, url)
    }

    fn verify_cached_any(&self, token: &str) -> Result<Claims, VerifyError> {
        let inner = &self.inner;
        let keys = inner
            .keys
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        let validated = inner
            .validator
            .validate(token, &*keys, &inner.revoked, inner.now())?;
        let raw = decode_claims(token)?;
        Ok(Claims::new(
            validated.session_id,
            validated.user_id,
            validated.expires_at_seconds,
            validated.confirmation,
            raw,
        ))
    }

    /// Fetches the key set now, whatever the cache and the rate limit say, and returns how many
    /// keys it holds. Concurrent callers queue behind the fetch in progress. Call it at start to
    /// fail fast when sessiond is unreachable.
    ///
    /// # Errors
    /// [`FetchError`] when the fetch fails; the verifier then keeps the keys it had.
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        let _fetching = self.inner.fetch_lock.lock().await;
        self.inner.fetch_now().await
    }

    /// Refuses every token of `session` from now until `access_expires_at` (after which its
    /// tokens have expired anyway).
    ///
    /// The revocation feed ([`VerifierBuilder::revocation_feed`]) does the same for each
    /// `session.revoked` event; this is for applications that learn of revocations otherwise.
    pub fn revoke_session(&self, session: SessionId, access_expires_at: Timestamp) {
        self.inner.revoked.insert(session, access_expires_at);
    }

    /// The revoked set consulted by every verification.
    pub fn revoked_sessions(&self) -> &RevokedSessions {
        &self.inner.revoked
    }

    /// Forgets revoked sessions whose tokens have all expired; returns how many. The verifier
    /// also prunes after each successful fetch.
    pub fn prune_revoked(&self) -> usize {
        self.inner.revoked.prune(self.inner.now())
    }

    /// The current counters and cache state.
    pub fn stats(&self) -> VerifierStats {
        let inner = &self.inner;
        let schedule = lock(&inner.schedule);
        VerifierStats {
            fetches: inner.fetches.load(Ordering::Relaxed),
            fetch_failures: inner.fetch_failures.load(Ordering::Relaxed),
            unknown_kid_refetches: inner.unknown_kid_refetches.load(Ordering::Relaxed),
            offline: inner.offline.load(Ordering::Relaxed),
            last_success_age: schedule.last_success.map(|at| at.elapsed()),
            cache_lifetime: schedule.cache_lifetime,
            keys: inner
                .keys
                .read()
                .unwrap_or_else(|poison| poison.into_inner())
                .len(),
            revoked_sessions: inner.revoked.len(),
            feed: self.feed.as_ref().map(|feed| feed.shared.stats()),
        }
    }

    /// The JWKS URL it fetches.
    pub fn jwks_url(&self) -> &str {
        &self.inner.jwks_url
    }

    /// Starts one background fetch when the cached set is stale. Requests keep being verified
    /// against the stale set meanwhile, which is what makes a brief outage invisible.
    fn refresh_if_stale(&self) {
        let inner = &self.inner;
        let stale_at = inner.stale_at_millis.load(Ordering::Acquire);
        if stale_at == NEVER || millis_since(inner.base, Instant::now()) < stale_at {
            return;
        }
        if inner.background_refresh.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            inner.background_refresh.store(false, Ordering::Release);
            return;
        };
        let inner = Arc::clone(inner);
        runtime.spawn(async move {
            inner.fetch_if_due(Trigger::Stale).await;
            inner.background_refresh.store(false, Ordering::Release);
        });
    }
}

impl Inner {
    pub(crate) fn now(&self) -> Timestamp {
        match &self.clock {
            Some(clock) => clock.now(),
            None => {
                let millis = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis());
                Timestamp::from_unix_millis(i64::try_from(millis).unwrap_or(i64::MAX))
            }
        }
    }

    /// Whether a key set has been fetched (or given at build). Acquire pairs with the Release
    /// store after the keys were swapped in, so a caller who sees `true` sees those keys.
    fn loaded(&self) -> bool {
        self.stale_at_millis.load(Ordering::Acquire) != NEVER
    }

    /// Fetches unless a fetch was attempted within `min_refetch_interval`. Returns whether the
    /// key set may have changed since the caller looked (a fetch ran, ours or a concurrent
    /// one), that is, whether looking again is worth it.
    async fn fetch_if_due(&self, trigger: Trigger) -> bool {
        let observed = lock(&self.schedule).generation;
        let _fetching = self.fetch_lock.lock().await;
        {
            let schedule = lock(&self.schedule);
            if schedule.generation != observed {
                // Someone fetched while this caller waited for the lock: share their result.
                return true;
            }
            let recent = schedule
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.min_refetch_interval);
            if recent {
                return false;
            }
        }
        if trigger == Trigger::UnknownKid {
            self.unknown_kid_refetches.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(?trigger, url = %self.jwks_url, "fetching the JWK set");
        let _ = self.fetch_now().await;
        true
    }

    /// One fetch; the caller holds `fetch_lock`.
    async fn fetch_now(&self) -> Result<usize, FetchError> {
        let started = Instant::now();
        lock(&self.schedule).last_attempt = Some(started);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.download().await;
        let mut schedule = lock(&self.schedule);
        schedule.generation += 1;
        match result {
            Ok((keys, max_age)) => {
                let count = keys.len();
                if count == 0 {
                    tracing::warn!(url = %self.jwks_url, "the JWK set holds no signing key sessiond could use");
                }
                let lifetime = max_age
                    .unwrap_or(DEFAULT_MAX_AGE)
                    .clamp(self.min_refetch_interval, MAX_CACHE_AGE);
                *self
                    .keys
                    .write()
                    .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(keys);
                schedule.last_success = Some(Instant::now());
                schedule.cache_lifetime = Some(lifetime);
                self.stale_at_millis.store(
                    millis_since(self.base, started + lifetime),
                    Ordering::Release,
                );
                if self.offline.swap(false, Ordering::Relaxed) {
                    tracing::info!(url = %self.jwks_url, "the JWK set is reachable again");
                }
                drop(schedule);
                self.revoked.prune(self.now());
                Ok(count)
            }
            Err(error) => {
                drop(schedule);
                // The stale set stays in use; the next background attempt waits one interval,
                // rather than every request during the outage spawning one that is refused.
                if self.loaded() {
                    let retry_at =
                        millis_since(self.base, Instant::now() + self.min_refetch_interval);
                    self.stale_at_millis.store(retry_at, Ordering::Release);
                }
                self.fetch_failures.fetch_add(1, Ordering::Relaxed);
                self.offline.store(true, Ordering::Relaxed);
                tracing::warn!(
                    url = %self.jwks_url,
                    error = %error,
                    source = ?std::error::Error::source(&error).map(ToString::to_string),
                    "fetching the JWK set failed; verifying with the cached keys"
                );
                Err(error)
            }
        }
    }

    async fn download(&self) -> Result<(VerificationKeys, Option<Duration>), FetchError> {
        let response = self
            .http
            .get(&self.jwks_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.fetch_timeout)
            .send()
            .await
            .map_err(FetchError::Request)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let max_age = freshness_lifetime(response.headers());
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let body = response.bytes().await.map_err(FetchError::Request)?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge);
        }
        let document: Value = serde_json::from_slice(&body).map_err(FetchError::NotJson)?;
        let keys = VerificationKeys::from_public_jwks(&document).map_err(FetchError::Jwks)?;
        Ok((keys, max_age))
    }
}

impl RevokedSet for Inner {
    fn now(&self) -> Timestamp {
        Inner::now(self)
    }

    fn revoked(&self) -> &RevokedSessions {
        &self.revoked
    }

    fn leeway(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.validator.rules().leeway_seconds).unwrap_or(0))
    }
}

/// The freshness lifetime of a response (RFC 9111 §4.2.1 for `max-age`): `max-age` minus the
/// `Age` a cache in between has already spent, zero for `no-cache` or `no-store` (the caller
/// clamps to the refetch interval), `None` when the response says nothing.
pub(crate) fn freshness_lifetime(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(reqwest::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, argument) = directive
                .split_once('=')
                .map_or((directive, None), |(name, argument)| {
                    (name.trim(), Some(argument.trim().trim_matches('"')))
                });
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age") {
                max_age = argument.and_then(|seconds| seconds.parse::<u64>().ok());
            }
        }
    }
    let age = headers
        .get(reqwest::header::AGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(0);
    max_age.map(|seconds: u64| Duration::from_secs(seconds.saturating_sub(age)))
}

#[cfg(test)]
mod tests {
    use reqwest::header::{AGE, CACHE_CONTROL, HeaderMap, HeaderValue};

    use super::*;

    fn headers(pairs: &[(reqwest::header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn max_age_is_read_among_other_directives() {
        assert_eq!(
            freshness_lifetime(&headers(&[(CACHE_CONTROL, "public, max-age=300")])),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            freshness_lifetime(&headers(&[(
                CACHE_CONTROL,
                "Max-Age=\"60\", must-revalidate"
            )])),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn the_age_a_cache_spent_is_subtracted() {
        assert_eq!(
            freshness_lifetime(&headers(&[(CACHE_CONTROL, "max-age=300"), (AGE, "100")])),
            Some(Duration::from_secs(200))
        );
        assert_eq!(
            freshness_lifetime(&headers(&[(CACHE_CONTROL, "max-age=300"), (AGE, "900")])),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn no_store_means_stale_at_once_and_no_header_means_unknown() {
        assert_eq!(
            freshness_lifetime(&headers(&[(CACHE_CONTROL, "max-age=300, no-store")])),
            Some(Duration::ZERO)
        );
        assert_eq!(freshness_lifetime(&HeaderMap::new()), None);
        assert_eq!(
            freshness_lifetime(&headers(&[(CACHE_CONTROL, "max-age=soon")])),
            None
        );
    }

    #[test]
    fn a_verifier_needs_an_issuer_and_an_http_url() {
        assert!(matches!(
            Verifier::builder("http://sessiond.test/.well-known/jwks.json").build(),
            Err(BuildError::MissingIssuer)
        ));
        assert!(matches!(
            Verifier::builder("file:///etc/jwks.json")
                .issuer("http://sessiond.test")
                .build(),
            Err(BuildError::InvalidUrl(_))
        ));
    }
}
