//! Signing keys and the keyring that holds the active one and those that still verify.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::time::Timestamp;

type HmacSha256 = Hmac<Sha256>;

/// The signature algorithm a key was made for; a key verifies only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// Ed25519 (RFC 8037), the default.
    EdDsa,
    /// HMAC-SHA256: for a single trusted verifier only, since verifying needs the secret.
    Hs256,
}

impl SigningAlgorithm {
    /// The JOSE `alg` name.
    pub const fn jose_name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
        }
    }

    /// Parses a JOSE `alg` name (exactly as JOSE spells it).
    pub fn from_jose_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDsa),
            "HS256" => Some(Self::Hs256),
            _ => None,
        }
    }

    const fn secret_len(self) -> usize {
        32
    }
}

/// A key as persisted: its id, algorithm and secret material.
#[derive(Clone)]
pub struct StoredKey {
    /// The `kid`.
    pub kid: String,
    /// What it signs with.
    pub algorithm: SigningAlgorithm,
    /// The Ed25519 seed or the HMAC secret.
    pub secret: Zeroizing<Vec<u8>>,
    /// When it was generated.
    pub created_at: Timestamp,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// Generates a new key from the OS CSPRNG.
    ///
    /// # Panics
    /// When the operating system cannot provide randomness.
    pub fn generate(algorithm: SigningAlgorithm, now: Timestamp) -> Self {
        let mut secret = Zeroizing::new(vec![0u8; algorithm.secret_len()]);
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut secret).expect("the OS CSPRNG is unavailable");
        let kid = match algorithm {
            SigningAlgorithm::EdDsa => {
                let mut seed = Zeroizing::new([0u8; 32]);
                seed.copy_from_slice(&secret);
                let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
                ed25519_thumbprint(public.as_bytes())
            }
            SigningAlgorithm::Hs256 => {
                let mut id = [0u8; 12];
                #[allow(clippy::expect_used)]
                getrandom::fill(&mut id).expect("the OS CSPRNG is unavailable");
                format!("hs-{}", URL_SAFE_NO_PAD.encode(id))
            }
        };
        Self {
            kid,
            algorithm,
            secret,
            created_at: now,
        }
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key, used as its `kid`.
fn ed25519_thumbprint(public: &[u8; 32]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Why stored keys cannot form a keyring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// A stored secret has the wrong length for its algorithm.
    #[error("signing key {kid} has a malformed secret")]
    MalformedSecret {
        /// The key's id.
        kid: String,
    },
    /// No key of the wanted algorithm exists to sign with.
    #[error("no signing key for {0}")]
    NoActiveKey(&'static str),
}

/// A key ready to verify: parsed once, so that validation does no setup work.
pub(crate) enum Verifier {
    EdDsa(ed25519_dalek::VerifyingKey),
    Hs256(HmacSha256),
}

/// One key that verifies access tokens, parsed once: its `kid`, its algorithm and the key
/// itself (an Ed25519 public key, or an HMAC secret on the server side only).
pub struct VerificationKey {
    pub(crate) kid: String,
    pub(crate) algorithm: SigningAlgorithm,
    pub(crate) verifier: Verifier,
}

impl VerificationKey {
    /// Its `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm it verifies.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Finding the key that verifies a token by its `kid`.
///
/// [`AccessTokenValidator::validate`](super::AccessTokenValidator::validate) is generic over
/// this trait, so the server (with its [`Keyring`]) and a resource server (with
/// [`VerificationKeys`] from a JWK Set) run the same monomorphised validation code.
pub trait KeyLookup {
    /// The key whose `kid` is `kid`, if any.
    fn find(&self, kid: &str) -> Option<&VerificationKey>;
}

enum Signer {
    EdDsa(ed25519_dalek::SigningKey),
    Hs256(HmacSha256),
}

struct SigningKey {
    kid: String,
    algorithm: SigningAlgorithm,
    signer: Signer,
    /// base64url of the JOSE header, computed once per key.
    encoded_header: String,
}

/// The active signing key and every key whose tokens still verify.
pub struct Keyring {
    signing: SigningKey,
    verification: Vec<VerificationKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("signing_kid", &self.signing.kid)
            .field(
                "verification_kids",
                &self.verification.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    /// Builds a keyring from stored keys: every key verifies, and the newest key of
    /// `algorithm` signs.
    ///
    /// # Errors
    /// [`KeyringError`] when a secret is malformed or no key of `algorithm` exists.
    pub fn from_stored(
        keys: &[StoredKey],
        algorithm: SigningAlgorithm,
    ) -> Result<Self, KeyringError> {
        let mut verification = Vec::with_capacity(keys.len());
        for key in keys {
            verification.push(VerificationKey {
                kid: key.kid.clone(),
                algorithm: key.algorithm,
                verifier: verifier_for(key)?,
            });
        }
        let newest = keys
            .iter()
            .filter(|key| key.algorithm == algorithm)
            .max_by_key(|key| (key.created_at, key.kid.clone()))
            .ok_or(KeyringError::NoActiveKey(algorithm.jose_name()))?;
        let signing = SigningKey {
            kid: newest.kid.clone(),
            algorithm: newest.algorithm,
            signer: signer_for(newest)?,
            encoded_header: URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"{}","typ":"at+jwt","kid":"{}"}}"#,
                newest.algorithm.jose_name(),
                newest.kid
            )),
        };
        Ok(Self {
            signing,
            verification,
        })
    }

    /// The `kid` of the key that signs new tokens.
    pub fn signing_kid(&self) -> &str {
        &self.signing.kid
    }

    /// The algorithm of the key that signs new tokens.
    pub fn signing_algorithm(&self) -> SigningAlgorithm {
        self.signing.algorithm
    }

    pub(crate) fn encoded_header(&self) -> &str {
        &self.signing.encoded_header
    }

    pub(crate) fn sign(&self, signing_input: &[u8]) -> Vec<u8> {
        match &self.signing.signer {
            Signer::EdDsa(key) => key.sign(signing_input).to_bytes().to_vec(),
            Signer::Hs256(mac) => {
                let mut mac = mac.clone();
                mac.update(signing_input);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    /// The key whose `kid` is `kid`, if any (the same as [`KeyLookup::find`]).
    pub fn find(&self, kid: &str) -> Option<&VerificationKey> {
        self.verification.iter().find(|key| key.kid == kid)
    }

    /// The public Ed25519 keys that verify, as `(kid, public key bytes)`.
    pub fn ed25519_public_keys(&self) -> impl Iterator<Item = (&str, [u8; 32])> {
        self.verification
            .iter()
            .filter_map(|key| match &key.verifier {
                Verifier::EdDsa(public) => Some((key.kid.as_str(), public.to_bytes())),
                Verifier::Hs256(_) => None,
            })
    }
}

impl KeyLookup for Keyring {
    #[inline]
    fn find(&self, kid: &str) -> Option<&VerificationKey> {
        Keyring::find(self, kid)
    }
}

/// Why a JWK Set cannot become [`VerificationKeys`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is not a JSON object with a `keys` array.
    #[error("not a JWK Set: no \"keys\" array")]
    NotAJwkSet,
    /// A key carries private material (`d`): a JWK Set must only ever hold public keys, and a
    /// set that leaks one is refused as a whole rather than trusted.
    #[error("key {kid} carries private key material")]
    PrivateKey {
        /// The key's id (empty when it has none).
        kid: String,
    },
    /// An Ed25519 key whose `x` is not 32 bytes of base64url forming a valid public key.
    #[error("key {kid} is malformed: {reason}")]
    MalformedKey {
        /// The key's id.
        kid: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A verification-only key set, built from public JWKs (a resource server's view of
/// `/.well-known/jwks.json`). It holds no signing key, so nothing can issue tokens with it.
#[derive(Debug, Default)]
pub struct VerificationKeys {
    keys: Vec<VerificationKey>,
}

impl VerificationKeys {
    /// An empty set: every token is refused with [`TokenError::UnknownKey`](super::TokenError).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a JWK Set (RFC 7517 §5).
    ///
    /// Only Ed25519 keys are taken: `kty: "OKP"`, `crv: "Ed25519"`, `alg` absent or `"EdDSA"`,
    /// `use` absent or `"sig"`, and a `kid` (validation looks keys up by `kid`). Any other key
    /// (RSA, EC, X25519, an encryption key, one without `kid`) is skipped, not an error, so a
    /// set shared with other issuers still works. Of two keys with the same `kid`, the first
    /// wins.
    ///
    /// # Errors
    /// [`JwksError::NotAJwkSet`] when there is no `keys` array; [`JwksError::PrivateKey`] when
    /// any key (taken or not) carries `d`; [`JwksError::MalformedKey`] when a key that would be
    /// taken has an `x` that is not base64url, not 32 bytes, or not a valid Ed25519 point.
    pub fn from_public_jwks(jwks: &serde_json::Value) -> Result<Self, JwksError> {
        let entries = jwks
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or(JwksError::NotAJwkSet)?;
        let mut keys: Vec<VerificationKey> = Vec::with_capacity(entries.len());
        for entry in entries {
            let field = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
            if entry.get("d").is_some() {
                return Err(JwksError::PrivateKey {
                    kid: field("kid").unwrap_or_default().to_owned(),
                });
            }
            let Some(kid) = field("kid") else { continue };
            let wanted = field("kty") == Some("OKP")
                && field("crv") == Some("Ed25519")
                && (entry.get("alg").is_none()
                    || field("alg") == Some(SigningAlgorithm::EdDsa.jose_name()))
                && (entry.get("use").is_none() || field("use") == Some("sig"));
            if !wanted || keys.iter().any(|key| key.kid == kid) {
                continue;
            }
            let malformed = |reason| JwksError::MalformedKey {
                kid: kid.to_owned(),
                reason,
            };
            let x = field("x").ok_or_else(|| malformed("no \"x\""))?;
            let bytes = URL_SAFE_NO_PAD
                .decode(x)
                .map_err(|_| malformed("\"x\" is not base64url"))?;
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|_| malformed("\"x\" is not 32 bytes"))?;
            let public = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|_| malformed("\"x\" is not an Ed25519 public key"))?;
            keys.push(VerificationKey {
                kid: kid.to_owned(),
                algorithm: SigningAlgorithm::EdDsa,
                verifier: Verifier::EdDsa(public),
            });
        }
        Ok(Self { keys })
    }

    /// The `kid`s of the keys, in the set's order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|key| key.kid.as_str())
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl KeyLookup for VerificationKeys {
    #[inline]
    fn find(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.iter().find(|key| key.kid == kid)
    }
}

fn seed_of(key: &StoredKey) -> Result<Zeroizing<[u8; 32]>, KeyringError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    if key.secret.len() != seed.len() {
        return Err(KeyringError::MalformedSecret {
            kid: key.kid.clone(),
        });
    }
    seed.copy_from_slice(&key.secret);
    Ok(seed)
}

fn verifier_for(key: &StoredKey) -> Result<Verifier, KeyringError> {
    Ok(match key.algorithm {
        SigningAlgorithm::EdDsa => {
            Verifier::EdDsa(ed25519_dalek::SigningKey::from_bytes(&*seed_of(key)?).verifying_key())
        }
        SigningAlgorithm::Hs256 => Verifier::Hs256(hmac_key(key)?),
    })
}

fn signer_for(key: &StoredKey) -> Result<Signer, KeyringError> {
    Ok(match key.algorithm {
        SigningAlgorithm::EdDsa => {
            Signer::EdDsa(ed25519_dalek::SigningKey::from_bytes(&*seed_of(key)?))
        }
        SigningAlgorithm::Hs256 => Signer::Hs256(hmac_key(key)?),
    })
}

fn hmac_key(key: &StoredKey) -> Result<HmacSha256, KeyringError> {
    if key.secret.len() < 32 {
        return Err(KeyringError::MalformedSecret {
            kid: key.kid.clone(),
        });
    }
    HmacSha256::new_from_slice(&key.secret).map_err(|_| KeyringError::MalformedSecret {
        kid: key.kid.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_key_of_the_wanted_algorithm_signs() {
        let old = StoredKey::generate(SigningAlgorithm::EdDsa, Timestamp::from_unix_millis(1));
        let new = StoredKey::generate(SigningAlgorithm::EdDsa, Timestamp::from_unix_millis(2));
        let hmac = StoredKey::generate(SigningAlgorithm::Hs256, Timestamp::from_unix_millis(3));
        let keyring =
            Keyring::from_stored(&[old.clone(), new.clone(), hmac], SigningAlgorithm::EdDsa)
                .unwrap();
        assert_eq!(keyring.signing_kid(), new.kid);
        assert!(keyring.find(&old.kid).is_some());
        assert_eq!(
            keyring.ed25519_public_keys().count(),
            2,
            "HMAC secrets are never public"
        );
    }

    #[test]
    fn a_keyring_needs_a_key_of_its_algorithm() {
        let hmac = StoredKey::generate(SigningAlgorithm::Hs256, Timestamp::from_unix_millis(3));
        assert!(matches!(
            Keyring::from_stored(&[hmac], SigningAlgorithm::EdDsa),
            Err(KeyringError::NoActiveKey("EdDSA"))
        ));
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let key = StoredKey::generate(SigningAlgorithm::Hs256, Timestamp::from_unix_millis(3));
        let text = format!("{key:?}");
        assert!(!text.contains("secret"), "{text}");
    }
}
