//! Signing keys and the keyring that holds the active one and those that still verify.
//!
//! Four algorithms, every one from a single backend, `aws-lc-rs` (AWS-LC, the provider rustls
//! defaults to): Ed25519 (`EdDSA`, the default), ECDSA on P-256 (`ES256`), RSASSA-PKCS1-v1_5
//! (`RS256`, generation included) and HMAC-SHA256 (`HS256`). What is stored per key has not
//! changed since earlier builds (an Ed25519 seed, a P-256 scalar, RSA PKCS#8 DER, an HMAC
//! secret), so keys written by them are read as they are.
//!
//! A key that is too weak to trust stops the keyring from being built, with an error that names
//! the key and the problem: an HMAC secret under 32 bytes, an RSA modulus under 2048 bits, or an
//! RSA public exponent other than 65537.
//!
//! Every key is parsed once, when the keyring is built, so that validation does no key setup.
//!
//! | `alg` | key | stored secret |
//! |---|---|---|
//! | `EdDSA` (default) | Ed25519 | 32-byte seed |
//! | `ES256` | ECDSA P-256, SHA-256; signatures normalised to low S and high-S twins refused, so one set of claims has one token string | 32-byte private scalar |
//! | `RS256` | RSA PKCS#1 v1.5, 2048-bit generated with e = 65537, 2048 to 8192 bits verified | PKCS#8 DER |
//! | `HS256` | HMAC-SHA256, for a single trusted verifier only, never published | 32 random bytes or more |
//!
//! The `kid` of a public key is its RFC 7638 thumbprint. In the [`Keyring`] every stored key
//! verifies, each only under its own algorithm. The Wycheproof vectors run against these code
//! paths (`token/wycheproof.rs`, `cargo test wycheproof`).

use std::fmt;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
    RsaKeyPair, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::primitives::{HmacSha256, sha256};
use crate::time::Timestamp;

/// The size of the RSA keys sessiond generates.
const RSA_GENERATED_SIZE: aws_lc_rs::rsa::KeySize = aws_lc_rs::rsa::KeySize::Rsa2048;
/// The smallest RSA modulus accepted, in bytes (2048 bits).
const RSA_MIN_MODULUS_BYTES: usize = 256;
/// The largest RSA modulus accepted, in bytes (8192 bits): AWS-LC's limit for verification.
pub(crate) const RSA_MAX_MODULUS_BYTES: usize = 1024;
/// The only RSA public exponent a signing key may have: 65537 (F4), big-endian.
const RSA_SIGNING_EXPONENT: [u8; 3] = [1, 0, 1];
/// The shortest HMAC secret accepted: 256 bits, the output size of SHA-256 (RFC 7518 §3.2).
pub const HMAC_MIN_SECRET_BYTES: usize = 32;
/// The order n of the P-256 group, big-endian.
pub(crate) const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// ⌊n / 2⌋ for P-256: the largest S of a low-S signature.
const P256_HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

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
    /// When it was generated, and published in the JWK Set.
    pub created_at: Timestamp,
    /// When it starts signing: its creation for the first key, a publication delay later for
    /// the key of a rotation, so that verifiers that cached the JWK Set know it before they
    /// see a token it signed.
    pub signs_from: Timestamp,
    /// When a newer key of its algorithm took over signing from it (it signs until then); `None`
    /// while no key has replaced it. A replaced key still verifies until it is retired.
    pub deactivated_at: Option<Timestamp>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .field("signs_from", &self.signs_from)
            .field("deactivated_at", &self.deactivated_at)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// Generates a new key from the OS CSPRNG, signing from `now`. An RSA key takes a noticeable
    /// moment (tens to hundreds of milliseconds).
    ///
    /// # Panics
    /// When the operating system cannot provide randomness.
    pub fn generate(algorithm: SigningAlgorithm, now: Timestamp) -> Self {
        let secret = match algorithm {
            SigningAlgorithm::EdDsa | SigningAlgorithm::Hs256 => random_secret(),
            SigningAlgorithm::Es256 => generate_p256_scalar(),
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
                    signs_from: now,
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
            signs_from: now,
            deactivated_at: None,
        }
    }

    /// Whether it is the newest key of its algorithm: no rotation has replaced it (it may not
    /// sign yet, see [`StoredKey::signs_at`]).
    pub fn is_active(&self) -> bool {
        self.deactivated_at.is_none()
    }

    /// Whether it is the key that signs at `at`: its activation has come and no newer key has
    /// taken over.
    pub fn signs_at(&self, at: Timestamp) -> bool {
        self.signs_from <= at && self.deactivated_at.is_none_or(|until| at < until)
    }
}

fn random_secret() -> Zeroizing<Vec<u8>> {
    let mut secret = Zeroizing::new(vec![0u8; 32]);
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut secret).expect("the OS CSPRNG is unavailable");
    secret
}

/// A fresh P-256 private scalar, 32 bytes big-endian (AWS-LC draws it in [1, n - 1]).
fn generate_p256_scalar() -> Zeroizing<Vec<u8>> {
    use aws_lc_rs::encoding::{AsBigEndian as _, EcPrivateKeyBin};
    #[allow(clippy::expect_used)]
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .expect("P-256 key generation with the OS CSPRNG");
    #[allow(clippy::expect_used)]
    let scalar: EcPrivateKeyBin<'_> = pair
        .private_key()
        .as_be_bytes()
        .expect("a P-256 private key has a 32-byte scalar");
    Zeroizing::new(scalar.as_ref().to_vec())
}

/// A fresh 2048-bit RSA private key (public exponent 65537) as PKCS#8 DER.
fn generate_rsa_pkcs8() -> Zeroizing<Vec<u8>> {
    use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der};
    #[allow(clippy::expect_used)]
    let pair =
        RsaKeyPair::generate(RSA_GENERATED_SIZE).expect("RSA key generation with the OS CSPRNG");
    #[allow(clippy::expect_used)]
    let der: Pkcs8V1Der<'_> = pair
        .as_der()
        .expect("a generated RSA key encodes as PKCS#8");
    Zeroizing::new(der.as_ref().to_vec())
}

/// The public members of a key's JWK, in the lexicographic order RFC 7638 hashes them in.
pub(crate) fn public_members(verifier: &Verifier) -> Option<Vec<(&'static str, String)>> {
    Some(match verifier {
        Verifier::EdDsa { public, .. } => vec![
            ("crv", "Ed25519".to_owned()),
            ("kty", "OKP".to_owned()),
            ("x", URL_SAFE_NO_PAD.encode(public)),
        ],
        Verifier::Es256 { point, .. } => vec![
            ("crv", "P-256".to_owned()),
            ("kty", "EC".to_owned()),
            ("x", URL_SAFE_NO_PAD.encode(&point[1..33])),
            ("y", URL_SAFE_NO_PAD.encode(&point[33..])),
        ],
        Verifier::Rs256 { public, .. } => vec![
            ("e", URL_SAFE_NO_PAD.encode(&public.e)),
            ("kty", "RSA".to_owned()),
            ("n", URL_SAFE_NO_PAD.encode(&public.n)),
        ],
        Verifier::Hs256(_) => return None,
    })
}

/// The RFC 7638 thumbprint of a public key, used as its `kid`: base64url of the SHA-256 of the
/// required members as compact JSON in lexicographic order.
pub(crate) fn thumbprint(verifier: &Verifier) -> Option<String> {
    let members = public_members(verifier)?;
    let canonical = members
        .iter()
        .map(|(name, value)| format!(r#""{name}":"{value}""#))
        .collect::<Vec<_>>()
        .join(",");
    Some(URL_SAFE_NO_PAD.encode(sha256(format!("{{{canonical}}}").as_bytes())))
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
    /// An HS256 secret is shorter than the 32 bytes HS256 needs (`HMAC_MIN_SECRET_BYTES`).
    #[error("signing key {kid}: its HS256 secret is {len} bytes, under the 32 bytes required")]
    ShortHmacSecret {
        /// The key's id.
        kid: String,
        /// The secret's length in bytes.
        len: usize,
    },
    /// An RSA key's modulus is under 2048 bits.
    #[error("signing key {kid}: its RSA modulus is under the 2048 bits required")]
    SmallRsaModulus {
        /// The key's id.
        kid: String,
    },
    /// An RSA key's public exponent is not 65537.
    #[error("signing key {kid}: its RSA public exponent is {exponent}, not 65537")]
    RsaExponent {
        /// The key's id.
        kid: String,
        /// The exponent, in decimal (or its size when it is too large to print).
        exponent: String,
    },
    /// No key of the wanted algorithm exists to sign with.
    #[error("no signing key for {0}")]
    NoActiveKey(&'static str),
}

/// An RSA public key's members: big-endian modulus and exponent, without leading zeros.
pub(crate) struct RsaPublicKey {
    pub(crate) n: Vec<u8>,
    pub(crate) e: Vec<u8>,
}

/// A key ready to verify: parsed once, so that validation does no setup work. Each public key
/// keeps its members too, for its JWK and thumbprint. A keyring holds a handful of these, built
/// once; they stay inline rather than boxed so that validation follows no extra pointer.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Verifier {
    EdDsa {
        key: ParsedPublicKey,
        public: [u8; 32],
    },
    Es256 {
        key: ParsedPublicKey,
        /// The uncompressed SEC1 point: `04 || x || y`.
        point: [u8; 65],
    },
    Rs256 {
        key: ParsedPublicKey,
        public: RsaPublicKey,
    },
    Hs256(HmacSha256),
}

impl Verifier {
    pub(crate) fn ed25519(public: [u8; 32]) -> Result<Self, &'static str> {
        let key = ParsedPublicKey::new(&ED25519, public)
            .map_err(|_| "\"x\" is not an Ed25519 public key")?;
        Ok(Self::EdDsa { key, public })
    }

    pub(crate) fn p256(point: [u8; 65]) -> Result<Self, &'static str> {
        let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            .map_err(|_| "\"x\" and \"y\" are not a P-256 point")?;
        Ok(Self::Es256 { key, point })
    }

    pub(crate) fn rs256(public: RsaPublicKey) -> Result<Self, &'static str> {
        let key = RsaPublicKeyComponents {
            n: &public.n,
            e: &public.e,
        }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .map_err(|_| "\"n\" and \"e\" are not an RSA public key")?;
        Ok(Self::Rs256 { key, public })
    }

    /// Whether `signature` is a valid signature of `message`. An ES256 signature must be
    /// `R || S` of 32 bytes each with a low S (at most n/2): sessiond signs with low S only,
    /// and the high-S twin of a signature (S replaced by n - S) would verify the same equation
    /// and make a second token string for the same claims. HMAC tags compare in constant time.
    #[inline]
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::EdDsa { key, .. } | Self::Rs256 { key, .. } => {
                key.verify_sig(message, signature).is_ok()
            }
            Self::Es256 { key, .. } => {
                signature.len() == 64
                    && signature[32..] <= P256_HALF_ORDER[..]
                    && key.verify_sig(message, signature).is_ok()
            }
            Self::Hs256(mac) => mac.verify(message, signature),
        }
    }
}

impl Verifier {
    /// Whether `signature` is a valid signature of `message` by a key sessiond did not make: a
    /// client's proof-of-possession key. Unlike [`Self::verify`], an ES256 signature may have a
    /// high S, since WebCrypto and most client libraries do not normalise S; a proof is
    /// single-use by its `jti`, so a second valid signature of one proof gains nothing. HS256
    /// is never a client's key and verifies nothing here.
    pub(crate) fn verify_client_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::EdDsa { key, .. } | Self::Rs256 { key, .. } | Self::Es256 { key, .. } => {
                key.verify_sig(message, signature).is_ok()
            }
            Self::Hs256(_) => false,
        }
    }
}

/// Replaces a high S (above n/2) of a P-256 `R || S` signature by n - S, its low twin.
pub(crate) fn normalize_p256_s(signature: &mut [u8]) {
    let Some(s) = signature.get_mut(32..64) else {
        return;
    };
    if *s <= P256_HALF_ORDER[..] {
        return;
    }
    let mut borrow = 0u16;
    for index in (0..32).rev() {
        let difference = u16::from(P256_ORDER[index])
            .wrapping_sub(u16::from(s[index]))
            .wrapping_sub(borrow);
        s[index] = difference.to_be_bytes()[1];
        borrow = u16::from(difference > 0xff);
    }
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

/// A key ready to sign; one per keyring, built once.
#[allow(clippy::large_enum_variant)]
enum Signer {
    EdDsa(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
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
    /// Builds a keyring from stored keys: every key verifies, and the active key of `algorithm`
    /// (the newest, once its activation has come) signs.
    ///
    /// # Errors
    /// [`KeyringError`] when a secret is malformed or no active key of `algorithm` exists.
    pub fn from_stored(
        keys: &[StoredKey],
        algorithm: SigningAlgorithm,
    ) -> Result<Self, KeyringError> {
        Self::from_stored_at(keys, algorithm, Timestamp::from_unix_millis(i64::MAX))
    }

    /// Builds a keyring from stored keys as it stands at `at`: every key verifies (a key not
    /// signing yet included), and the key of `algorithm` that signs at `at` signs.
    ///
    /// # Errors
    /// [`KeyringError`] when a secret is malformed or no key of `algorithm` signs at `at`.
    pub fn from_stored_at(
        keys: &[StoredKey],
        algorithm: SigningAlgorithm,
        at: Timestamp,
    ) -> Result<Self, KeyringError> {
        let active = keys
            .iter()
            .filter(|key| key.algorithm == algorithm && key.signs_at(at))
            .max_by_key(|key| (key.signs_from, key.created_at, key.kid.clone()))
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
        // With a key that parsed, AWS-LC fails to sign only when it cannot allocate.
        match &self.signing.signer {
            Signer::EdDsa(key) => key.sign(signing_input).as_ref().to_vec(),
            Signer::Es256(key) => {
                #[allow(clippy::expect_used)]
                let signature = key
                    .sign(&aws_lc_rs::rand::SystemRandom::new(), signing_input)
                    .expect("ECDSA signing with a parsed key");
                let mut signature = signature.as_ref().to_vec();
                // Low S only, so that a token has one signature and validation can insist on it.
                normalize_p256_s(&mut signature);
                signature
            }
            Signer::Rs256(key) => {
                let mut signature = vec![0u8; key.public_modulus_len()];
                // AWS-LC blinds the private-key operation.
                #[allow(clippy::expect_used)]
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    signing_input,
                    &mut signature,
                )
                .expect("RSA signing with a parsed key into a buffer of the modulus's size");
                signature
            }
            Signer::Hs256(mac) => mac.sign(signing_input).to_vec(),
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
    /// `alg` is absent or that algorithm, its `use` is absent or `"sig"`, and its `key_ops` is
    /// absent or includes `"verify"`. Any other key (another curve or type, an encryption key,
    /// one without `kid`) is skipped, not an error,
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
            if has_private_members(entry) {
                return Err(JwksError::PrivateKey {
                    kid: field("kid").unwrap_or_default().to_owned(),
                });
            }
            let Some(kid) = field("kid") else { continue };
            let Some(algorithm) = public_key_algorithm(entry) else {
                continue;
            };
            let wanted = (entry.get("alg").is_none()
                || field("alg") == Some(algorithm.jose_name()))
                && (entry.get("use").is_none() || field("use") == Some("sig"))
                && entry.get("key_ops").is_none_or(|ops| {
                    ops.as_array()
                        .is_some_and(|ops| ops.iter().any(|op| op == "verify"))
                });
            if !wanted || keys.iter().any(|key| key.kid == kid) {
                continue;
            }
            let verifier =
                verifier_from_jwk(entry, algorithm).map_err(|reason| JwksError::MalformedKey {
                    kid: kid.to_owned(),
                    reason,
                })?;
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

/// Whether a JWK carries private or symmetric key material.
pub(crate) fn has_private_members(jwk: &Value) -> bool {
    PRIVATE_MEMBERS.iter().any(|name| jwk.get(name).is_some())
}

/// The algorithm a public JWK's key type is for: `OKP`/`Ed25519` is `EdDSA`, `EC`/`P-256` is
/// `ES256`, `RSA` is `RS256`; any other key is none of sessiond's.
pub(crate) fn public_key_algorithm(jwk: &Value) -> Option<SigningAlgorithm> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    match (field("kty"), field("crv")) {
        (Some("OKP"), Some("Ed25519")) => Some(SigningAlgorithm::EdDsa),
        (Some("EC"), Some("P-256")) => Some(SigningAlgorithm::Es256),
        (Some("RSA"), _) => Some(SigningAlgorithm::Rs256),
        _ => None,
    }
}

/// The public key of `algorithm` that a JWK's members hold, parsed once; the reason names the
/// member at fault. HS256 has no public key and is refused.
pub(crate) fn verifier_from_jwk(
    jwk: &Value,
    algorithm: SigningAlgorithm,
) -> Result<Verifier, &'static str> {
    let member = |name: &'static str, missing, not_base64| {
        let text = jwk.get(name).and_then(Value::as_str).ok_or(missing)?;
        URL_SAFE_NO_PAD.decode(text).map_err(|_| not_base64)
    };
    match algorithm {
        SigningAlgorithm::EdDsa => {
            let x = member("x", "no \"x\"", "\"x\" is not base64url")?;
            let bytes: [u8; 32] = x.try_into().map_err(|_| "\"x\" is not 32 bytes")?;
            Verifier::ed25519(bytes)
        }
        SigningAlgorithm::Es256 => {
            let x = member("x", "no \"x\"", "\"x\" is not base64url")?;
            let y = member("y", "no \"y\"", "\"y\" is not base64url")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("\"x\" or \"y\" is not 32 bytes");
            }
            let mut sec1 = [0u8; 65];
            sec1[0] = 0x04;
            sec1[1..33].copy_from_slice(&x);
            sec1[33..].copy_from_slice(&y);
            Verifier::p256(sec1)
        }
        SigningAlgorithm::Rs256 => {
            let n = member("n", "no \"n\"", "\"n\" is not base64url")?;
            let e = member("e", "no \"e\"", "\"e\" is not base64url")?;
            Verifier::rs256(rsa_public_key(n, e)?)
        }
        SigningAlgorithm::Hs256 => Err("an HS256 key has no public part"),
    }
}

/// Checks an RSA public key's members: no leading zero, a modulus of 2048 to 8192 bits, an odd
/// exponent of at least 3 that fits in 33 bits.
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
    let malformed = |_| malformed_secret(key);
    match signer_for(key)? {
        Signer::EdDsa(pair) => {
            let public: [u8; 32] = pair
                .public_key()
                .as_ref()
                .try_into()
                .map_err(|_| malformed_secret(key))?;
            Verifier::ed25519(public).map_err(malformed)
        }
        Signer::Es256(pair) => {
            let point: [u8; 65] = pair
                .public_key()
                .as_ref()
                .try_into()
                .map_err(|_| malformed_secret(key))?;
            Verifier::p256(point).map_err(malformed)
        }
        Signer::Rs256(pair) => {
            let public = pair.public_key();
            let public = rsa_public_key(
                public.modulus().big_endian_without_leading_zero().to_vec(),
                public.exponent().big_endian_without_leading_zero().to_vec(),
            )
            .map_err(malformed)?;
            Verifier::rs256(public).map_err(malformed)
        }
        Signer::Hs256(mac) => Ok(Verifier::Hs256(mac)),
    }
}

/// Parses a stored secret into the key that signs with it.
fn signer_for(key: &StoredKey) -> Result<Signer, KeyringError> {
    Ok(match key.algorithm {
        SigningAlgorithm::EdDsa => Signer::EdDsa(
            Ed25519KeyPair::from_seed_unchecked(&*fixed_secret(key)?)
                .map_err(|_| malformed_secret(key))?,
        ),
        SigningAlgorithm::Es256 => Signer::Es256(p256_key_pair(key)?),
        SigningAlgorithm::Rs256 => Signer::Rs256(rsa_key_pair(key)?),
        SigningAlgorithm::Hs256 => {
            if key.secret.len() < HMAC_MIN_SECRET_BYTES {
                return Err(KeyringError::ShortHmacSecret {
                    kid: key.kid.clone(),
                    len: key.secret.len(),
                });
            }
            Signer::Hs256(HmacSha256::new(&key.secret))
        }
    })
}

/// A P-256 key pair from its stored private scalar; the public point is derived from it.
fn p256_key_pair(key: &StoredKey) -> Result<EcdsaKeyPair, KeyringError> {
    use aws_lc_rs::agreement;
    let scalar = fixed_secret(key)?;
    let public = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &*scalar)
        .and_then(|private| private.compute_public_key().map_err(Into::into))
        .map_err(|_| malformed_secret(key))?;
    EcdsaKeyPair::from_private_key_and_public_key(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &*scalar,
        public.as_ref(),
    )
    .map_err(|_| malformed_secret(key))
}

/// An RSA key pair from its stored PKCS#8 DER, held to the strength rules: a modulus of 2048
/// bits or more and the public exponent 65537.
fn rsa_key_pair(key: &StoredKey) -> Result<RsaKeyPair, KeyringError> {
    let too_small = || KeyringError::SmallRsaModulus {
        kid: key.kid.clone(),
    };
    let pair = match RsaKeyPair::from_pkcs8(&key.secret) {
        Ok(pair) => pair,
        // AWS-LC's PKCS#8 reader refuses a weak key without saying why; its lenient DER reader
        // is asked only to name the problem, and never yields a key to sign with.
        Err(_) => {
            return Err(match RsaKeyPair::from_der(&key.secret) {
                Err(rejected) if rejected.description_() == "TooSmall" => too_small(),
                Ok(pair) => rsa_strength(key, &pair)
                    .err()
                    .unwrap_or_else(|| malformed_secret(key)),
                Err(_) => malformed_secret(key),
            });
        }
    };
    rsa_strength(key, &pair)?;
    Ok(pair)
}

/// Checks an RSA key pair's modulus (2048 bits or more) and public exponent (65537).
fn rsa_strength(key: &StoredKey, pair: &RsaKeyPair) -> Result<(), KeyringError> {
    if pair.public_modulus_len() < RSA_MIN_MODULUS_BYTES {
        return Err(KeyringError::SmallRsaModulus {
            kid: key.kid.clone(),
        });
    }
    let exponent = pair.public_key().exponent();
    let exponent = exponent.big_endian_without_leading_zero();
    if exponent != RSA_SIGNING_EXPONENT {
        let decimal = exponent
            .iter()
            .try_fold(0u64, |acc, &byte| {
                acc.checked_mul(256).map(|acc| acc + u64::from(byte))
            })
            .map_or_else(
                || format!("{} bits long", exponent.len() * 8),
                |e| e.to_string(),
            );
        return Err(KeyringError::RsaExponent {
            kid: key.kid.clone(),
            exponent: decimal,
        });
    }
    Ok(())
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
        let verifier = Verifier::rs256(rsa_public_key(n, e).unwrap()).unwrap();
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
                    signs_from: now,
                    deactivated_at: None,
                };
                let expected = if algorithm == SigningAlgorithm::Hs256 {
                    KeyringError::ShortHmacSecret {
                        kid: "k".into(),
                        len: key.secret.len(),
                    }
                } else {
                    KeyringError::MalformedSecret { kid: "k".into() }
                };
                assert_eq!(
                    Keyring::from_stored(&[key], algorithm).unwrap_err(),
                    expected,
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
