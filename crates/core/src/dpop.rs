//! Proof of possession (RFC 9449, DPoP): checking the proofs a client signs with a key of its
//! own, so that a token bound to that key is worth nothing to whoever copies it.
//!
//! A client binds a session to the RFC 7638 thumbprint of its public key (the `jkt`); every use
//! of a bound token then carries a `DPoP` header, a JWT the client signed for that one request.
//! [`verify_proof`] checks one, with no I/O, in this order:
//!
//! 1. Proofs longer than [`MAX_PROOF_LEN`] are refused; the rest must be three base64url parts.
//! 2. The header must be `typ: "dpop+jwt"`, an `alg` among `ES256`, `EdDSA` (Ed25519) and
//!    `RS256` (never `none` nor an HMAC), and a `jwk` holding a public key of that very
//!    algorithm with no private member. `crit`, `jku`, `x5u`, `x5c` and `kid` are refused: the
//!    key is the one in the proof, and nothing else may point at another.
//! 3. The signature must verify under that key.
//! 4. The claims: `jti` a string of 1 to [`MAX_JTI_LEN`] characters; `htm` the request's
//!    method; `htu` the request's URL (scheme and host compared without case, a default port
//!    ignored, query and fragment ignored, RFC 9449 §4.3); `iat` no older than
//!    [`DpopRules::max_age_seconds`] and no further ahead than the leeway; `ath` the hash of
//!    the access token presented with it, on routes that take one; `nonce` one this service
//!    minted recently, when nonces are required.
//!
//! What the caller still owes: comparing [`VerifiedProof::jkt`] with the session's binding, and
//! remembering [`VerifiedProof::replay_id`] until [`VerifiedProof::replay_until`] so that no
//! proof is accepted twice (the store's replay cache does this, shared by every instance).
//!
//! [`verify_signed_jwt`] is the general half: a JWT signed by a client's own key, found in its
//! header (`jwk`), in a claim, or already known. Device Bound Session Credentials use it for the
//! browser's registration and refresh answers.
//!
//! Nonces ([`NonceKey`]) are stateless: a period number and its HMAC under a key every instance
//! derives from the master key, so any instance accepts a nonce another one minted.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::primitives::{HmacSha256, Sha256, sha256};
use crate::store::ProofReplay;
use crate::time::Timestamp;
use crate::token::SigningAlgorithm;
use crate::token::keys::{
    Verifier, has_private_members, public_key_algorithm, public_members, thumbprint,
    verifier_from_jwk,
};

/// The `typ` of a DPoP proof.
pub const PROOF_TYPE: &str = "dpop+jwt";
/// The longest proof considered at all (an RSA key of 8192 bits and its signature fit).
pub const MAX_PROOF_LEN: usize = 8 * 1024;
/// The longest `jti` accepted.
pub const MAX_JTI_LEN: usize = 256;
/// How long a nonce minted by [`NonceKey::mint`] lives: its own period and the next.
pub const NONCE_PERIOD_SECONDS: i64 = 300;
/// Header members that would point at a key other than the one in the proof, or demand
/// processing sessiond does not do.
const REFUSED_HEADER_MEMBERS: [&str; 5] = ["crit", "jku", "x5u", "x5c", "kid"];

/// Why a proof (or another client-signed JWT) was refused. Every variant answers
/// `invalid_dpop_proof` on the wire, except [`DpopError::UseNonce`] (`use_dpop_nonce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// Not a compact JWS of JSON objects, or too long.
    #[error("the proof is not a compact JWS of JSON objects")]
    Malformed,
    /// `typ` is not the expected one.
    #[error("the proof's typ is wrong")]
    WrongType,
    /// `alg` is absent, symmetric, `none`, unknown, or not the algorithm of the key.
    #[error("the proof's alg is not an asymmetric algorithm of its key")]
    UnsupportedAlgorithm,
    /// The key is absent, not a public key of a supported type, or malformed.
    #[error("the proof's key is missing or malformed")]
    BadKey,
    /// The key carries private members.
    #[error("the proof's key carries private key material")]
    PrivateKey,
    /// A header member that sessiond refuses (`crit`, `jku`, `x5u`, `x5c`, `kid`).
    #[error("the proof's header has a member that is not allowed")]
    UnsupportedHeader,
    /// The signature does not verify under the key.
    #[error("the proof's signature does not verify")]
    BadSignature,
    /// `htm` is not the request's method.
    #[error("the proof is for another method")]
    WrongMethod,
    /// `htu` is not the request's URL.
    #[error("the proof is for another URL")]
    WrongUrl,
    /// `iat` is older than the rules allow.
    #[error("the proof is too old")]
    Stale,
    /// `iat` lies further ahead than the leeway.
    #[error("the proof was made in the future")]
    FromTheFuture,
    /// `jti` is absent, empty or too long.
    #[error("the proof has no usable jti")]
    MissingJti,
    /// `ath` is absent or not the hash of the access token presented.
    #[error("the proof is for another access token")]
    WrongAccessTokenHash,
    /// The proof's key is not the one the token or session is bound to.
    #[error("the proof is signed by a key the session is not bound to")]
    WrongKey,
    /// The proof was accepted before.
    #[error("the proof was used before")]
    Replayed,
    /// A nonce is required and the proof has none, or one that is not recent.
    #[error("the proof needs a fresh nonce")]
    UseNonce,
    /// The session or token is bound to a key, and no proof came with it.
    #[error("a DPoP proof is required")]
    MissingProof,
}

impl DpopError {
    /// A stable snake_case name for audit events and metrics.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongType => "wrong_type",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::BadKey => "bad_key",
            Self::PrivateKey => "private_key",
            Self::UnsupportedHeader => "unsupported_header",
            Self::BadSignature => "bad_signature",
            Self::WrongMethod => "wrong_method",
            Self::WrongUrl => "wrong_url",
            Self::Stale => "stale",
            Self::FromTheFuture => "from_the_future",
            Self::MissingJti => "missing_jti",
            Self::WrongAccessTokenHash => "wrong_access_token_hash",
            Self::WrongKey => "wrong_key",
            Self::Replayed => "replayed",
            Self::UseNonce => "use_nonce",
            Self::MissingProof => "missing_proof",
        }
    }

    /// Whether the answer is `use_dpop_nonce` (retry with the nonce given) rather than
    /// `invalid_dpop_proof`.
    pub const fn is_use_nonce(self) -> bool {
        matches!(self, Self::UseNonce)
    }
}

/// A client's public key, parsed once: what a proof is verified with and what a session is
/// bound to (its thumbprint).
pub struct ProofKey {
    algorithm: SigningAlgorithm,
    verifier: Verifier,
    thumbprint: String,
}

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofKey")
            .field("algorithm", &self.algorithm)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl ProofKey {
    /// Parses a public JWK (RFC 7517): `OKP`/`Ed25519`, `EC`/`P-256` or `RSA` of 2048 to 8192
    /// bits. An `alg` member, when present, must name the key's algorithm.
    ///
    /// # Errors
    /// [`DpopError::PrivateKey`] when it carries private members, [`DpopError::BadKey`] when it
    /// is not an object holding a valid public key of a supported type, and
    /// [`DpopError::UnsupportedAlgorithm`] when its `alg` names another algorithm.
    pub fn from_jwk(jwk: &Value) -> Result<Self, DpopError> {
        if !jwk.is_object() {
            return Err(DpopError::BadKey);
        }
        if has_private_members(jwk) {
            return Err(DpopError::PrivateKey);
        }
        let algorithm = public_key_algorithm(jwk).ok_or(DpopError::BadKey)?;
        if jwk
            .get("alg")
            .is_some_and(|alg| alg.as_str() != Some(algorithm.jose_name()))
        {
            return Err(DpopError::UnsupportedAlgorithm);
        }
        let verifier = verifier_from_jwk(jwk, algorithm).map_err(|_| DpopError::BadKey)?;
        let thumbprint = thumbprint(&verifier).ok_or(DpopError::BadKey)?;
        Ok(Self {
            algorithm,
            verifier,
            thumbprint,
        })
    }

    /// Its RFC 7638 thumbprint (SHA-256, base64url): the `jkt` a session is bound to.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The algorithm it signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// Its public JWK: the required members only, as stored for a binding.
    pub fn to_jwk(&self) -> Value {
        let members = public_members(&self.verifier).unwrap_or_default();
        Value::Object(
            members
                .into_iter()
                .map(|(name, value)| (name.to_owned(), Value::String(value)))
                .collect(),
        )
    }

    /// Whether `signature` over `message` verifies under this key.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifier.verify_client_signature(message, signature)
    }
}

/// Where the key that signed a client's JWT is found.
#[derive(Debug, Clone, Copy)]
pub enum KeySource<'a> {
    /// The header's `jwk` member (DPoP proofs).
    HeaderJwk,
    /// A claim holding the JWK (a DBSC registration's `key`).
    Claim(&'a str),
    /// A key the caller already holds (a bound session's).
    Known(&'a ProofKey),
}

/// A client-signed JWT whose signature verified.
#[derive(Debug)]
pub struct SignedJwt {
    /// Its header.
    pub header: Map<String, Value>,
    /// Its claims.
    pub claims: Map<String, Value>,
    /// The key it was verified with, when it came from the JWT itself.
    pub embedded_key: Option<ProofKey>,
}

/// Verifies a JWT signed by a client's own key: a compact JWS of at most [`MAX_PROOF_LEN`]
/// bytes whose header has `typ` equal to `expected_type` and an `alg` that is exactly the
/// algorithm of the key found at `source`, with a signature that verifies under that key.
/// Header members that point elsewhere (`crit`, `jku`, `x5u`, `x5c`, `kid`) are refused.
///
/// # Errors
/// The first [`DpopError`] found; nothing in the claims is trusted before the signature
/// verifies.
pub fn verify_signed_jwt(
    jwt: &str,
    expected_type: &str,
    source: KeySource<'_>,
) -> Result<SignedJwt, DpopError> {
    if jwt.len() > MAX_PROOF_LEN {
        return Err(DpopError::Malformed);
    }
    let mut parts = jwt.split('.');
    let (Some(header_part), Some(claims_part), Some(signature_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed);
    };
    let header = decode_object(header_part)?;
    if header.get("typ").and_then(Value::as_str) != Some(expected_type) {
        return Err(DpopError::WrongType);
    }
    if REFUSED_HEADER_MEMBERS
        .iter()
        .any(|name| header.contains_key(*name))
    {
        return Err(DpopError::UnsupportedHeader);
    }
    let algorithm = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(SigningAlgorithm::from_jose_name)
        .filter(|algorithm| !algorithm.is_symmetric())
        .ok_or(DpopError::UnsupportedAlgorithm)?;
    let claims = decode_object(claims_part)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_part)
        .map_err(|_| DpopError::Malformed)?;
    let embedded_key = match source {
        KeySource::HeaderJwk => Some(ProofKey::from_jwk(
            header.get("jwk").ok_or(DpopError::BadKey)?,
        )?),
        KeySource::Claim(name) => Some(ProofKey::from_jwk(
            claims.get(name).ok_or(DpopError::BadKey)?,
        )?),
        KeySource::Known(_) => None,
    };
    let key = match (&embedded_key, source) {
        (Some(key), _) => key,
        (None, KeySource::Known(key)) => key,
        (None, _) => return Err(DpopError::BadKey),
    };
    if key.algorithm != algorithm {
        return Err(DpopError::UnsupportedAlgorithm);
    }
    let signed = &jwt[..header_part.len() + 1 + claims_part.len()];
    if !key.verifies(signed.as_bytes(), &signature) {
        return Err(DpopError::BadSignature);
    }
    Ok(SignedJwt {
        header,
        claims,
        embedded_key,
    })
}

fn decode_object(part: &str) -> Result<Map<String, Value>, DpopError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| DpopError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(DpopError::Malformed),
    }
}

/// How old a proof may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DpopRules {
    /// The oldest `iat` accepted, in seconds before now.
    pub max_age_seconds: i64,
    /// Clock skew tolerated either way, in seconds.
    pub leeway_seconds: i64,
}

impl Default for DpopRules {
    fn default() -> Self {
        Self {
            max_age_seconds: 60,
            leeway_seconds: 5,
        }
    }
}

/// The request a proof must be for.
#[derive(Debug, Clone, Copy)]
pub struct ProofCheck<'a> {
    /// The HTTP method, as sent (`POST`, `GET`).
    pub method: &'a str,
    /// The URL the client used, as this service's public base URL and the request's path.
    pub url: &'a str,
    /// The access token presented with the proof, on a route that takes one: `ath` must be
    /// its hash.
    pub access_token: Option<&'a str>,
    /// The nonce key, when nonces are required: `nonce` must be one it minted recently.
    pub nonce: Option<&'a NonceKey>,
}

/// What a valid proof establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The thumbprint of the key that signed it.
    pub jkt: String,
    /// SHA-256 over `jkt` and `jti`: the proof's key in a replay cache.
    pub replay_id: [u8; 32],
    /// When the proof stops being acceptable by age, so when the replay cache may forget it.
    pub replay_until: Timestamp,
}

impl VerifiedProof {
    /// The proof's entry in a replay cache.
    #[must_use]
    pub fn replay(&self) -> ProofReplay {
        ProofReplay {
            id: self.replay_id,
            until: self.replay_until,
        }
    }
}

/// Verifies a DPoP proof for the request `check` describes, at `now`; see the module
/// documentation for every check, in order.
///
/// # Errors
/// The first [`DpopError`] found.
pub fn verify_proof(
    proof: &str,
    check: &ProofCheck<'_>,
    rules: &DpopRules,
    now: Timestamp,
) -> Result<VerifiedProof, DpopError> {
    let jwt = verify_signed_jwt(proof, PROOF_TYPE, KeySource::HeaderJwk)?;
    let claims = &jwt.claims;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let jti = text("jti")
        .filter(|jti| !jti.is_empty() && jti.len() <= MAX_JTI_LEN)
        .ok_or(DpopError::MissingJti)?;
    if text("htm") != Some(check.method) {
        return Err(DpopError::WrongMethod);
    }
    let same_url = text("htu")
        .and_then(normalize_url)
        .zip(normalize_url(check.url))
        .is_some_and(|(claimed, expected)| claimed == expected);
    if !same_url {
        return Err(DpopError::WrongUrl);
    }
    let iat = claims
        .get("iat")
        .and_then(numeric_date)
        .ok_or(DpopError::Malformed)?;
    let now_seconds = now.unix_seconds();
    if iat > now_seconds.saturating_add(rules.leeway_seconds) {
        return Err(DpopError::FromTheFuture);
    }
    let oldest = iat
        .saturating_add(rules.max_age_seconds)
        .saturating_add(rules.leeway_seconds);
    if now_seconds > oldest {
        return Err(DpopError::Stale);
    }
    if let Some(token) = check.access_token
        && text("ath") != Some(access_token_hash(token).as_str())
    {
        return Err(DpopError::WrongAccessTokenHash);
    }
    if let Some(nonces) = check.nonce
        && !text("nonce").is_some_and(|nonce| nonces.accepts(nonce, now))
    {
        return Err(DpopError::UseNonce);
    }
    let Some(key) = jwt.embedded_key else {
        return Err(DpopError::BadKey);
    };
    let mut replay = Sha256::new();
    replay.update(key.thumbprint.as_bytes());
    replay.update(b".");
    replay.update(jti.as_bytes());
    Ok(VerifiedProof {
        replay_id: replay.finish(),
        replay_until: Timestamp::from_unix_millis(oldest.saturating_mul(1000)),
        jkt: key.thumbprint,
    })
}

/// An integer NumericDate, or a fractional one truncated to whole seconds.
fn numeric_date(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|seconds| seconds.is_finite() && seconds.abs() < 1e15)
            .map(|seconds| seconds.trunc() as i64)
    })
}

/// The `ath` of an access token: base64url of its SHA-256.
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(token.as_bytes()))
}

/// Whether `text` has the shape of an RFC 7638 SHA-256 thumbprint: 43 base64url characters
/// that decode to 32 bytes.
pub fn is_thumbprint(text: &str) -> bool {
    text.len() == 43
        && URL_SAFE_NO_PAD
            .decode(text)
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// An `http` or `https` URL reduced for comparison (RFC 3986 §6.2.2 and §6.2.3): scheme and
/// host lower-cased, a default port dropped, an empty path made `/`, query and fragment gone.
/// A URL with user information, or of another scheme, is none.
fn normalize_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}{path}"))
}

/// The key of stateless nonces: a nonce is a period number and its HMAC, valid in its own
/// period of [`NONCE_PERIOD_SECONDS`] and the next.
pub struct NonceKey(HmacSha256);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKey").finish_non_exhaustive()
    }
}

impl NonceKey {
    /// A key of 32 secret bytes; instances that share them accept each other's nonces.
    pub fn new(secret: &[u8; 32]) -> Self {
        Self(HmacSha256::new(secret))
    }

    /// The nonce to hand out at `now`.
    pub fn mint(&self, now: Timestamp) -> String {
        let period = Self::period(now).to_be_bytes();
        let mut bytes = [0u8; 40];
        bytes[..8].copy_from_slice(&period);
        bytes[8..].copy_from_slice(&self.0.sign(&period));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Whether `nonce` was minted by this key in the current period or the one before.
    pub fn accepts(&self, nonce: &str, now: Timestamp) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        let Some((period, tag)) = bytes.split_first_chunk::<8>() else {
            return false;
        };
        let current = Self::period(now);
        let minted = i64::from_be_bytes(*period);
        (minted == current || minted == current - 1) && self.0.verify(period, tag)
    }

    fn period(now: Timestamp) -> i64 {
        now.unix_seconds().div_euclid(NONCE_PERIOD_SECONDS)
    }
}

#[cfg(test)]
mod tests;
