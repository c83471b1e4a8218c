//! Access tokens: JWTs in the RFC 9068 profile (`typ: at+jwt`), signed by the keyring's active
//! key and validated without any I/O.
//!
//! Validation is hand-assembled rather than delegated to a general JWT crate because it is the
//! hottest path of every resource server: it splits the token once, decodes into stack buffers,
//! parses the claims without copying, and accepts exactly the header shape sessiond issues, so
//! `alg: none`, `jku`/`x5u`/`jwk`/`crit` headers and algorithm confusion are refused before any
//! key is used.

mod issue;
mod jwks;
pub(crate) mod keys;
#[cfg(test)]
mod tests;
mod validate;
#[cfg(test)]
mod wycheproof;

pub use issue::{AccessTokenIssuer, IssuedAccessToken, RESERVED_CLAIMS};
pub use jwks::jwks_json;
pub use keys::{
    JwksError, KeyLookup, Keyring, KeyringError, SigningAlgorithm, StoredKey, VerificationKey,
    VerificationKeys,
};
pub use validate::{
    AccessTokenValidator, MAX_CLAIMS_DEPTH, ValidatedToken, ValidationRules, decode_claims,
};

/// Why an access token was refused. The variants are for logs and metrics; every one of them
/// answers `401 unauthenticated` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, or not JSON where JSON belongs.
    #[error("malformed token")]
    Malformed,
    /// A header field other than `alg`, `typ` and `kid`, or a missing one.
    #[error("unsupported token header")]
    UnsupportedHeader,
    /// `typ` is not `at+jwt`.
    #[error("not an access token")]
    WrongType,
    /// No key with this `kid` verifies tokens.
    #[error("unknown signing key")]
    UnknownKey,
    /// `alg` is not the algorithm the key was made for.
    #[error("algorithm does not match the key")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` lies in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not this service.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not name this service.
    #[error("wrong audience")]
    WrongAudience,
    /// Its session was revoked.
    #[error("session revoked")]
    Revoked,
}
