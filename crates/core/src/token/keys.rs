//! Signing keys and the keyring that holds the active one and those that still verify.
//!
//! Four algorithms: Ed25519 (`EdDSA`, the default) with `ed25519-dalek`, P-256 (`ES256`) with
//! RustCrypto's `p256`, RSA (`RS256`) with `ring`, and HMAC-SHA256 (`HS256`) with `hmac`. RSA
//! signing and verifying go through `ring`, whose private-key arithmetic is constant-time; the
//! `rsa` crate is used only to generate a key pair once (`ring` cannot), never to sign, because
//! its private-key operations are exposed to the Marvin timing attack (RUSTSEC-2023-0071).
//!
//! Every key is parsed once, when the keyring is built, so that validation does no key setup.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::time::Timestamp;

type HmacSha256 = Hmac<Sha256>;

/// The size of the RSA keys sessiond generates.
const RSA_GENERATED_BITS: usize = 2048;
/// The smallest RSA modulus accepted, in bytes (2048 bits).
const RSA_MIN_MODULUS_BYTES: usize = 256;
/// The largest RSA modulus accepted, in bytes (8192 bits): `ring`'s limit.
pub(crate) const RSA_MAX_MODULUS_BYTES: usize = 1024;

/// The signature algorithm a key was made for; a key verifies only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// Ed25519 (RFC 8037), the default.
    EdDsa,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and a modulus of at least 2048 bits (RFC 7518 §3.3).
    Rs256,
    /// HMAC-SHA256: for a single trusted verifier only, since verifying needs the secret.
    Hs256,
}

impl SigningAlgorithm {
    /// Every algorithm, the default first.
    pub const ALL: [Self; 4] = [Self::EdDsa, Self::Es256, Self::Rs256, Self::Hs256];

    /// The JOSE `alg` name.
    pub const fn jose_name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
            Self::Hs256 => "HS256",
        }
    }

    /// Parses a JOSE `alg` name (exactly as JOSE spells it).
    pub fn from_jose_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.jose_name() == name)
    }

    /// Whether verifying needs the secret itself (HMAC), so that the key is never published.
    pub const fn is_symmetric(self) -> bool {
        matches!(self, Self::Hs256)
    }
}

/// A key as persisted: its id, algorithm and secret material.
#[derive(Clone)]
pub struct StoredKey {
    /// The `kid`.
    pub kid: String,
    /// What it signs with.
    pub algorithm: SigningAlgorithm,
    /// The Ed25519 seed, the P-256 private scalar (32 bytes, big-endian), the RSA private key
    /// (PKCS#8 DER) or the HMAC secret.
    pub secret: Zeroizing<Vec<u8>>,
    /// When it was generated.
    pub created_at: Timestamp,
    /// When a newer key of its algorithm replaced it as the signing key; `None` while no key
    /// has. A replaced key still verifies until it is retired.
    pub deactivated_at: Option<Timestamp>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .field("deactivated_at", &self.deactivated_at)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// Generates a new key from the OS CSPRNG. An RSA key takes a noticeable moment (tens to
    /// hundreds of milliseconds).
    ///
    /// # Panics
    /// When the operating system cannot provide randomness.
    pub fn generate(algorithm: SigningAlgorithm, now: Timestamp) -> Self {
        let secret = match algorithm {
            SigningAlgorithm::EdDsa | SigningAlgorithm::Hs256 => random_secret(),
            SigningAlgorithm::Es256 => loop {
                // A random 32-byte string is a valid scalar except with probability ~2^-32.
                let candidate = random_secret();
                if p256::ecdsa::SigningKey::from_slice(&candidate).is_ok() {
                    break candidate;
                }
            },
            SigningAlgorithm::Rs256 => generate_rsa_pkcs8(),
        };
        let kid = match algorithm {
            SigningAlgorithm::Hs256 => {
                let mut id = [0u8; 12];
                #[allow(clippy::expect_used)]
                getrandom::fill(&mut id).expect("the OS CSPRNG is unavailable");
                format!("hs-{}", URL_SAFE_NO_PAD.encode(id))
            }
            _ => {
                let probe = Self {
                    kid: String::new(),
                    algorithm,
                    secret: secret.clone(),
                    created_at: now,
                    deactivated_at: None,
                };
                #[allow(clippy::expect_used)]
                let verifier = verifier_for(&probe).expect("a freshly generated key parses");
                #[allow(clippy::expect_used)]
                thumbprint(&verifier).expect("an asymmetric key has a thumbprint")
            }
        };
        Self {
            kid,
            algorithm,
            secret,
            created_at: now,
            deactivated_at: None,
        }
    }

    /// Whether it may sign: no newer key of its algorithm has replaced it.
    pub fn is_active(&self) -> bool {
        self.deactivated_at.is_none()
    }
}

fn random_secret() -> Zeroizing<Vec<u8>> {
    let mut secret = Zeroizing::new(vec![0u8; 32]);
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut secret).expect("the OS CSPRNG is unavailable");
    secret
}

/// A fresh RSA private key as PKCS#8 DER. This is the only use of the `rsa` crate: it touches
/// no attacker-chosen input and runs once per key, so the Marvin timing channel of its
/// private-key operations does not arise; every signature is made by `ring`.
fn generate_rsa_pkcs8() -> Zeroizing<Vec<u8>> {
    use rsa::pkcs8::EncodePrivateKey as _;
    #[allow(clippy::expect_used)]
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_GENERATED_BITS)
        .expect("RSA key generation with the OS CSPRNG");
    #[allow(clippy::expect_used)]
    let der = private
        .to_pkcs8_der()
        .expect("a generated RSA key encodes as PKCS#8");
    Zeroizing::new(der.as_bytes().to_vec())
}

/// The public members of a key's JWK, in the lexicographic order RFC 7638 hashes them in.
fn public_members(verifier: &Verifier) -> Option<Vec<(&'static str, String)>> {
    Some(match verifier {
        Verifier::EdDsa(public) => vec![
            ("crv", "Ed25519".to_owned()),
            ("kty", "OKP".to_owned()),
            ("x", URL_SAFE_NO_PAD.encode(public.as_bytes())),
        ],
        Verifier::Es256(public) => {
            let point = public.to_sec1_point(false);
            vec![
                ("crv", "P-256".to_owned()),
                ("kty", "EC".to_owned()),
                ("x", URL_SAFE_NO_PAD.encode(point.x()?)),
                ("y", URL_SAFE_NO_PAD.encode(point.y()?)),
            ]
        }
        Verifier::Rs256(public) => vec![
            ("e", URL_SAFE_NO_PAD.encode(&public.e)),
            ("kty", "RSA".to_owned()),
            ("n", URL_SAFE_NO_PAD.encode(&public.n)),
        ],
        Verifier::Hs256(_) => return None,
    })
}

/// The RFC 7638 thumbprint of a public key, used as its `kid`: base64url of the SHA-256 of the
/// required members as compact JSON in lexicographic order.
fn thumbprint(verifier: &Verifier) -> Option<String> {
    let members = public_members(verifier)?;
    let canonical = members
        .iter()
        .map(|(name, value)| format!(r#""{name}":"{value}""#))
        .collect::<Vec<_>>()
        .join(",");
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{{{canonical}}}").as_bytes())))
}

/// Why stored keys cannot form a keyring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// A stored secret is not a valid key of its algorithm.
    #[error("signing key {kid} has a malformed secret")]
    MalformedSecret {
        /// The key's id.
        kid: String,
    },
    /// No key of the wanted algorithm exists to sign with.
    #[error("no signing key for {0}")]
    NoActiveKey(&'static str),
}

/// An RSA public key as `ring` verifies with it: big-endian modulus and exponent.
pub(crate) struct RsaPublicKey {
    pub(crate) n: Vec<u8>,
    pub(crate) e: Vec<u8>,
}

/// A key ready to verify: parsed once, so that validation does no setup work.
pub(crate) enum Verifier {
    EdDsa(ed25519_dalek::VerifyingKey),
    Es256(p256::ecdsa::VerifyingKey),
    Rs256(RsaPublicKey),
    Hs256(HmacSha256),
}

/// One key that verifies access tokens, parsed once: its `kid`, its algorithm and the key
/// itself (a public key, or an HMAC secret on the server side only).
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

    /// Its public JWK (RFC 7517) with `kid`, `alg` and `use: "sig"`, or `None` for an HMAC
    /// key, whose secret is the key and is never published.
    pub fn public_jwk(&self) -> Option<Value> {
        let mut jwk = serde_json::Map::new();
        for (name, value) in public_members(&self.verifier)? {
            jwk.insert(name.to_owned(), Value::String(value));
        }
        jwk.insert("kid".into(), json!(self.kid));
        jwk.insert("alg".into(), json!(self.algorithm.jose_name()));
        jwk.insert("use".into(), json!("sig"));
        Some(Value::Object(jwk))
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
    Es256(p256::ecdsa::SigningKey),
    Rs256(ring::signature::RsaKeyPair),
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
    /// Builds a keyring from stored keys: every key verifies, and the newest active key of
    /// `algorithm` signs.
    ///
    /// # Errors
    /// [`KeyringError`] when a secret is malformed or no active key of `algorithm` exists.
    pub fn from_stored(
        keys: &[StoredKey],
        algorithm: SigningAlgorithm,
    ) -> Result<Self, KeyringError> {
        let active = keys
            .iter()
            .filter(|key| key.algorithm == algorithm && key.is_active())
            .max_by_key(|key| (key.created_at, key.kid.clone()))
            .ok_or(KeyringError::NoActiveKey(algorithm.jose_name()))?;
        let mut verification = Vec::with_capacity(keys.len());
        for key in keys {
            verification.push(VerificationKey {
                kid: key.kid.clone(),
                algorithm: key.algorithm,
                verifier: verifier_for(key)?,
            });
        }
        let signing = SigningKey {
            kid: active.kid.clone(),
            algorithm: active.algorithm,
            signer: signer_for(active)?,
            encoded_header: URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"{}","typ":"at+jwt","kid":"{}"}}"#,
                active.algorithm.jose_name(),
                active.kid
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
            Signer::Es256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(signing_input);
                // Low S only, so that a token has one signature and validation can insist on it.
                signature.normalize_s().to_bytes().to_vec()
            }
            Signer::Rs256(key) => {
                let mut signature = vec![0u8; key.public().modulus_len()];
                // Signing fails only for a buffer of the wrong size, which this is not; `ring`
                // blinds the private-key operation with the randomness it is given.
                let signed = key.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    signing_input,
                    &mut signature,
                );
                debug_assert!(signed.is_ok(), "RSA signing failed");
                signature
            }
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

    /// Every key that verifies, the signing key among them.
    pub fn verification_keys(&self) -> impl Iterator<Item = &VerificationKey> {
        self.verification.iter()
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
    /// A key carries private material (`d`, or RSA's `p`, `q`, `dp`, `dq`, `qi`, or a
    /// symmetric `k`): a JWK Set must only ever hold public keys, and a set that leaks one is
    /// refused as a whole rather than trusted.
    #[error("key {kid} carries private key material")]
    PrivateKey {
        /// The key's id (empty when it has none).
        kid: String,
    },
    /// A key that would be taken whose public members do not form a valid public key.
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

/// JWK members that only a private or symmetric key has.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

impl VerificationKeys {
    /// An empty set: every token is refused with [`TokenError::UnknownKey`](super::TokenError).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a JWK Set (RFC 7517 §5).
    ///
    /// Three kinds of key are taken, each for one algorithm: `kty: "OKP"` with
    /// `crv: "Ed25519"` (`EdDSA`), `kty: "EC"` with `crv: "P-256"` (`ES256`), and `kty: "RSA"`
    /// (`RS256`). A key is taken when it has a `kid` (validation looks keys up by `kid`), its
    /// `alg` is absent or that algorithm, and its `use` is absent or `"sig"`. Any other key
    /// (another curve or type, an encryption key, one without `kid`) is skipped, not an error,
    /// so a set shared with other issuers still works. Of two keys with the same `kid`, the
    /// first wins.
    ///
    /// # Errors
    /// [`JwksError::NotAJwkSet`] when there is no `keys` array; [`JwksError::PrivateKey`] when
    /// any key (taken or not) carries private members; [`JwksError::MalformedKey`] when a key
    /// that would be taken does not hold a valid public key (an RSA modulus under 2048 bits
    /// included).
    pub fn from_public_jwks(jwks: &serde_json::Value) -> Result<Self, JwksError> {
        let entries = jwks
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or(JwksError::NotAJwkSet)?;
        let mut keys: Vec<VerificationKey> = Vec::with_capacity(entries.len());
        for entry in entries {
            let field = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
            if PRIVATE_MEMBERS.iter().any(|name| entry.get(name).is_some()) {
                return Err(JwksError::PrivateKey {
                    kid: field("kid").unwrap_or_default().to_owned(),
                });
            }
            let Some(kid) = field("kid") else { continue };
            let algorithm = match (field("kty"), field("crv")) {
                (Some("OKP"), Some("Ed25519")) => SigningAlgorithm::EdDsa,
                (Some("EC"), Some("P-256")) => SigningAlgorithm::Es256,
                (Some("RSA"), _) => SigningAlgorithm::Rs256,
                _ => continue,
            };
            let wanted = (entry.get("alg").is_none()
                || field("alg") == Some(algorithm.jose_name()))
                && (entry.get("use").is_none() || field("use") == Some("sig"));
            if !wanted || keys.iter().any(|key| key.kid == kid) {
                continue;
            }
            let malformed = |reason| JwksError::MalformedKey {
                kid: kid.to_owned(),
                reason,
            };
            let member = |name: &'static str, missing, not_base64| {
                let text = field(name).ok_or_else(|| malformed(missing))?;
                URL_SAFE_NO_PAD
                    .decode(text)
                    .map_err(|_| malformed(not_base64))
            };
            let verifier = match algorithm {
                SigningAlgorithm::EdDsa => {
                    let x = member("x", "no \"x\"", "\"x\" is not base64url")?;
                    let bytes: [u8; 32] = x
                        .try_into()
                        .map_err(|_| malformed("\"x\" is not 32 bytes"))?;
                    Verifier::EdDsa(
                        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                            .map_err(|_| malformed("\"x\" is not an Ed25519 public key"))?,
                    )
                }
                SigningAlgorithm::Es256 => {
                    let x = member("x", "no \"x\"", "\"x\" is not base64url")?;
                    let y = member("y", "no \"y\"", "\"y\" is not base64url")?;
                    if x.len() != 32 || y.len() != 32 {
                        return Err(malformed("\"x\" or \"y\" is not 32 bytes"));
                    }
                    let mut sec1 = [0u8; 65];
                    sec1[0] = 0x04;
                    sec1[1..33].copy_from_slice(&x);
                    sec1[33..].copy_from_slice(&y);
                    Verifier::Es256(
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                            .map_err(|_| malformed("\"x\" and \"y\" are not a P-256 point"))?,
                    )
                }
                SigningAlgorithm::Rs256 => {
                    let n = member("n", "no \"n\"", "\"n\" is not base64url")?;
                    let e = member("e", "no \"e\"", "\"e\" is not base64url")?;
                    Verifier::Rs256(rsa_public_key(n, e).map_err(malformed)?)
                }
                SigningAlgorithm::Hs256 => continue,
            };
            keys.push(VerificationKey {
                kid: kid.to_owned(),
                algorithm,
                verifier,
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

/// Checks an RSA public key's members: no leading zero, a modulus of 2048 to 8192 bits, an odd
/// exponent of at least 3 that fits in 33 bits (what `ring` verifies with).
fn rsa_public_key(n: Vec<u8>, e: Vec<u8>) -> Result<RsaPublicKey, &'static str> {
    if n.first().is_none_or(|&byte| byte == 0) || e.first().is_none_or(|&byte| byte == 0) {
        return Err("\"n\" or \"e\" is empty or has a leading zero");
    }
    if n.len() < RSA_MIN_MODULUS_BYTES || n.len() > RSA_MAX_MODULUS_BYTES {
        return Err("\"n\" is not 2048 to 8192 bits");
    }
    let exponent = e
        .iter()
        .try_fold(0u64, |acc, &byte| {
            acc.checked_mul(256).map(|acc| acc + u64::from(byte))
        })
        .filter(|&exponent| exponent < (1 << 33))
        .ok_or("\"e\" is too large")?;
    if exponent < 3 || exponent % 2 == 0 {
        return Err("\"e\" is not an odd number of at least 3");
    }
    Ok(RsaPublicKey { n, e })
}

fn fixed_secret(key: &StoredKey) -> Result<Zeroizing<[u8; 32]>, KeyringError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    if key.secret.len() != bytes.len() {
        return Err(malformed_secret(key));
    }
    bytes.copy_from_slice(&key.secret);
    Ok(bytes)
}

fn malformed_secret(key: &StoredKey) -> KeyringError {
    KeyringError::MalformedSecret {
        kid: key.kid.clone(),
    }
}

fn verifier_for(key: &StoredKey) -> Result<Verifier, KeyringError> {
    Ok(match signer_for(key)? {
        Signer::EdDsa(private) => Verifier::EdDsa(private.verifying_key()),
        Signer::Es256(private) => Verifier::Es256(*private.verifying_key()),
        Signer::Rs256(pair) => {
            let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
            Verifier::Rs256(rsa_public_key(public.n, public.e).map_err(|_| malformed_secret(key))?)
        }
        Signer::Hs256(mac) => Verifier::Hs256(mac),
    })
}

/// Parses a stored secret into the key that signs with it.
fn signer_for(key: &StoredKey) -> Result<Signer, KeyringError> {
    Ok(match key.algorithm {
        SigningAlgorithm::EdDsa => {
            Signer::EdDsa(ed25519_dalek::SigningKey::from_bytes(&*fixed_secret(key)?))
        }
        SigningAlgorithm::Es256 => Signer::Es256(
            p256::ecdsa::SigningKey::from_slice(&*fixed_secret(key)?)
                .map_err(|_| malformed_secret(key))?,
        ),
        SigningAlgorithm::Rs256 => {
            let pair = ring::signature::RsaKeyPair::from_pkcs8(&key.secret)
                .map_err(|_| malformed_secret(key))?;
            if pair.public().modulus_len() < RSA_MIN_MODULUS_BYTES {
                return Err(malformed_secret(key));
            }
            Signer::Rs256(pair)
        }
        SigningAlgorithm::Hs256 => Signer::Hs256(hmac_key(key)?),
    })
}

fn hmac_key(key: &StoredKey) -> Result<HmacSha256, KeyringError> {
    if key.secret.len() < 32 {
        return Err(malformed_secret(key));
    }
    HmacSha256::new_from_slice(&key.secret).map_err(|_| malformed_secret(key))
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
            keyring
                .verification_keys()
                .filter_map(VerificationKey::public_jwk)
                .count(),
            2,
            "HMAC secrets are never public"
        );
    }

    #[test]
    fn a_deactivated_key_verifies_but_never_signs() {
        let old = StoredKey::generate(SigningAlgorithm::EdDsa, Timestamp::from_unix_millis(1));
        let replaced = StoredKey {
            deactivated_at: Some(Timestamp::from_unix_millis(5)),
            ..StoredKey::generate(SigningAlgorithm::EdDsa, Timestamp::from_unix_millis(9))
        };
        let keyring =
            Keyring::from_stored(&[old.clone(), replaced.clone()], SigningAlgorithm::EdDsa)
                .unwrap();
        assert_eq!(
            keyring.signing_kid(),
            old.kid,
            "the newest active key signs"
        );
        assert!(keyring.find(&replaced.kid).is_some());
        assert!(matches!(
            Keyring::from_stored(&[replaced], SigningAlgorithm::EdDsa),
            Err(KeyringError::NoActiveKey("EdDSA"))
        ));
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
    fn rsa_thumbprints_match_the_rfc_7638_example() {
        // RFC 7638 §3.1: the example key and its published thumbprint.
        let n = URL_SAFE_NO_PAD
            .decode(concat!(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B",
                "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F",
                "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4",
                "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            ))
            .unwrap();
        let e = URL_SAFE_NO_PAD.decode("AQAB").unwrap();
        let verifier = Verifier::Rs256(rsa_public_key(n, e).unwrap());
        assert_eq!(
            thumbprint(&verifier).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn every_algorithm_generates_a_key_that_parses_and_names_itself() {
        let now = Timestamp::from_unix_millis(1);
        for algorithm in SigningAlgorithm::ALL {
            let key = StoredKey::generate(algorithm, now);
            let keyring = Keyring::from_stored(std::slice::from_ref(&key), algorithm).unwrap();
            let verification = keyring.find(&key.kid).unwrap();
            match verification.public_jwk() {
                Some(jwk) => {
                    assert!(!algorithm.is_symmetric());
                    assert_eq!(jwk["kid"], json!(key.kid), "the kid is the thumbprint");
                    assert_eq!(thumbprint(&verification.verifier).unwrap(), key.kid);
                    assert_eq!(jwk["alg"], json!(algorithm.jose_name()));
                    assert_eq!(jwk["use"], json!("sig"));
                }
                None => assert!(algorithm.is_symmetric()),
            }
        }
    }

    #[test]
    fn a_stored_secret_that_is_not_a_key_of_its_algorithm_is_refused() {
        let now = Timestamp::from_unix_millis(1);
        for algorithm in SigningAlgorithm::ALL {
            for secret in [vec![], vec![1u8; 16], vec![0xffu8; 32], vec![0u8; 32]] {
                if algorithm == SigningAlgorithm::EdDsa && secret.len() == 32 {
                    continue; // every 32-byte string is an Ed25519 seed
                }
                if algorithm == SigningAlgorithm::Hs256 && secret.len() == 32 {
                    continue; // and an HMAC secret
                }
                let key = StoredKey {
                    kid: "k".into(),
                    algorithm,
                    secret: Zeroizing::new(secret),
                    created_at: now,
                    deactivated_at: None,
                };
                assert_eq!(
                    Keyring::from_stored(&[key], algorithm).unwrap_err(),
                    KeyringError::MalformedSecret { kid: "k".into() },
                    "{algorithm:?}"
                );
            }
        }
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let key = StoredKey::generate(SigningAlgorithm::Hs256, Timestamp::from_unix_millis(3));
        let text = format!("{key:?}");
        assert!(!text.contains("secret"), "{text}");
    }
}
