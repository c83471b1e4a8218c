//! Validating access tokens: no I/O, no allocation but the returned user id.
//!
//! [`AccessTokenValidator::validate`] works on memory already loaded (the keyring, the revoked
//! set, the instant it is given), in this order:
//!
//! 1. Tokens longer than [`MAX_TOKEN_LEN`] (8 KiB) are refused; the rest are split once into
//!    header, payload and signature.
//! 2. The header is decoded into a stack buffer and parsed with `deny_unknown_fields`: it must
//!    hold exactly `alg`, `typ` and `kid`, so `jku`, `x5u`, `jwk`, `crit` and the like are
//!    refused before any key is used. `typ` must be `at+jwt` (or `application/at+jwt`).
//! 3. `kid` is looked up in the keyring; an unknown `kid` is refused. `alg` must equal the
//!    algorithm that key was made for, so `none` and algorithm confusion fail here.
//! 4. The signature is decoded into a stack buffer (1 KiB, the size of an 8192-bit RSA
//!    signature) and checked: Ed25519, ECDSA P-256 (low S only), RSASSA-PKCS1-v1_5 with
//!    SHA-256, or HMAC-SHA256 compared in constant time. Nothing in the payload is trusted
//!    before this point.
//! 5. The claims are checked: `exp` (with the leeway), `nbf` and `iat` not in the future,
//!    `iss` equal to the issuer, `aud` (a string or an array) naming the audience, `sub`
//!    non-empty, and `sid` a UUID.
//! 6. `sid` must not be in the revoked set.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::TokenError;
use super::keys::{KeyLookup, RSA_MAX_MODULUS_BYTES};
use crate::ids::SessionId;
use crate::revocation::RevokedSessions;
use crate::time::Timestamp;

/// The longest token considered at all; anything longer is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The deepest nesting of arrays and objects a token's claims may have, the claims object
/// itself counting as one level. Validation skips unknown claims without building them, at
/// any depth, but every user of a validated token's claims builds them ([`decode_claims`]),
/// and a JSON parser gives up at some depth (serde_json at 128): a token accepted here must
/// decode there.
pub const MAX_CLAIMS_DEPTH: usize = 64;
const HEADER_BUFFER: usize = 256;
const PAYLOAD_STACK_BUFFER: usize = 1536;
/// The longest signature of any accepted key: an RSA signature is as long as the modulus.
const SIGNATURE_BUFFER: usize = RSA_MAX_MODULUS_BYTES;

/// What a valid token must say.
#[derive(Debug, Clone)]
pub struct ValidationRules {
    /// The expected `iss`.
    pub issuer: String,
    /// The audience that `aud` must name.
    pub audience: String,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_seconds: i64,
}

/// The facts a valid access token establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedToken {
    /// The session it belongs to (`sid`).
    pub session_id: SessionId,
    /// The user it speaks for (`sub`).
    pub user_id: String,
    /// Its `exp`, in seconds since the epoch.
    pub expires_at_seconds: i64,
    /// The thumbprint of the DPoP key it is bound to (`cnf.jkt`, RFC 9449 §6.1): such a token
    /// is only good with a proof signed by that key.
    pub confirmation: Option<String>,
}

/// Validates access tokens against a keyring and a set of revoked sessions.
#[derive(Debug)]
pub struct AccessTokenValidator {
    rules: ValidationRules,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header<'a> {
    alg: &'a str,
    #[serde(default, borrow)]
    typ: Option<&'a str>,
    kid: &'a str,
}

#[derive(Deserialize)]
struct Claims<'a> {
    #[serde(borrow)]
    iss: Cow<'a, str>,
    #[serde(borrow)]
    sub: Cow<'a, str>,
    #[serde(borrow)]
    aud: Audience<'a>,
    exp: i64,
    iat: i64,
    /// Absent or an integer: a present `null` is refused rather than read as absent, as for
    /// every other registered claim (RFC 7519 §4.1.5 defines `nbf` as a NumericDate).
    #[serde(default, deserialize_with = "present_numeric_date")]
    nbf: Option<i64>,
    sid: &'a str,
    /// RFC 7800's confirmation: an object when present, of which only `jkt` is read.
    #[serde(default, borrow)]
    cnf: Option<Confirmation<'a>>,
}

/// The `cnf` claim: a JSON object (never an array, which a derived struct would also take),
/// read without building it; only `jkt` is kept and must be a string.
struct Confirmation<'a> {
    jkt: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Confirmation<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ConfirmationVisitor;
        impl<'de> Visitor<'de> for ConfirmationVisitor {
            type Value = Confirmation<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a confirmation object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut jkt = None;
                while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                    if name == "jkt" {
                        jkt = Some(map.next_value::<Cow<'de, str>>()?);
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                Ok(Confirmation { jkt })
            }
        }
        deserializer.deserialize_map(ConfirmationVisitor)
    }
}

/// A claim that may be left out but, when present, must be a NumericDate in whole seconds;
/// `#[serde(default)]` covers the absent case, so `null` reaches here and is refused.
fn present_numeric_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    i64::deserialize(deserializer).map(Some)
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
enum Audience<'a> {
    One(Cow<'a, str>),
    Many(Vec<String>),
}

impl Audience<'_> {
    fn names(&self, expected: &str) -> bool {
        match self {
            Self::One(one) => one == expected,
            Self::Many(many) => many.iter().any(|one| one == expected),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Audience<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AudienceVisitor;
        impl<'de> Visitor<'de> for AudienceVisitor {
            type Value = Audience<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Audience::One(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Audience::One(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(Audience::Many(names))
            }
        }
        deserializer.deserialize_any(AudienceVisitor)
    }
}

impl AccessTokenValidator {
    /// A validator enforcing `rules`.
    pub fn new(rules: ValidationRules) -> Self {
        Self { rules }
    }

    /// The rules it enforces.
    pub fn rules(&self) -> &ValidationRules {
        &self.rules
    }

    /// Validates `token` at `now`: shape, header, key, signature, claims, then revocation.
    ///
    /// `keys` is the server's [`Keyring`](super::Keyring) or a resource server's
    /// [`VerificationKeys`](super::VerificationKeys); the code is the same for both.
    ///
    /// # Errors
    /// The first [`TokenError`] found; nothing about the token is trusted before the signature
    /// verifies.
    pub fn validate<K: KeyLookup + ?Sized>(
        &self,
        token: &str,
        keyring: &K,
        revoked: &RevokedSessions,
        now: Timestamp,
    ) -> Result<ValidatedToken, TokenError> {
        verify_compact(token, keyring, Some(ACCESS_TOKEN_TYPES), |payload| {
            let claims: Claims<'_> =
                serde_json::from_slice(payload).map_err(|_| TokenError::Malformed)?;
            if !decodable_within(payload, MAX_CLAIMS_DEPTH) {
                return Err(TokenError::Malformed);
            }
            self.check_claims(&claims, now)?;

            let session_id = Uuid::try_parse(claims.sid)
                .map(SessionId::from_uuid)
                .map_err(|_| TokenError::Malformed)?;
            if revoked.contains(&session_id) {
                return Err(TokenError::Revoked);
            }
            Ok(ValidatedToken {
                session_id,
                user_id: claims.sub.into_owned(),
                expires_at_seconds: claims.exp,
                confirmation: claims.cnf.and_then(|cnf| cnf.jkt).map(Cow::into_owned),
            })
        })
    }

    fn check_claims(&self, claims: &Claims<'_>, now: Timestamp) -> Result<(), TokenError> {
        let now = now.unix_seconds();
        let leeway = self.rules.leeway_seconds;
        if claims.exp.saturating_add(leeway) <= now {
            return Err(TokenError::Expired);
        }
        let not_before = claims.nbf.unwrap_or(claims.iat).max(claims.iat);
        if not_before > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss != self.rules.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if !claims.aud.names(&self.rules.audience) {
            return Err(TokenError::WrongAudience);
        }
        if claims.sub.is_empty() {
            return Err(TokenError::Malformed);
        }
        Ok(())
    }
}

/// Whether `json` (already known to be well-formed JSON) decodes as a whole into
/// `serde_json::Value`, as [`decode_claims`] does: its arrays and objects nest at most
/// `max_depth` deep, and each of its numbers is one `Value` can hold (`1e400` is not).
/// Validation reads only the claims it checks and merely skips the others, so without this a
/// validly signed token could pass and still fail every later use. One pass over the bytes,
/// strings skipped, no allocation.
fn decodable_within(json: &[u8], max_depth: usize) -> bool {
    let mut depth = 0usize;
    let mut index = 0;
    while let Some(&byte) = json.get(index) {
        match byte {
            b'"' => {
                // Skip to the closing quote; escapes are well-formed, so `\x` is two bytes.
                index += 1;
                while let Some(&byte) = json.get(index) {
                    match byte {
                        b'\\' => index += 2,
                        b'"' => break,
                        _ => index += 1,
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = index;
                while json.get(index + 1).is_some_and(|byte| {
                    matches!(byte, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                }) {
                    index += 1;
                }
                // The JSON already parsed, so the syntax is right. A plain integer of at most
                // 18 digits always fits (an `i64` or a `u64`): most claims (`exp`, `iat`) are
                // those, and skip the parser. Any other number parses without allocating; the
                // same parser decides as later.
                let number = &json[start..=index];
                let digits = number.strip_prefix(b"-").unwrap_or(number);
                let plain = digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit);
                if !plain && serde_json::from_slice::<serde_json::Number>(number).is_err() {
                    return false;
                }
            }
            _ => {}
        }
        index += 1;
    }
    true
}

/// The `typ` values of an access token (RFC 9068 §2.1).
const ACCESS_TOKEN_TYPES: &[&str] = &["at+jwt", "application/at+jwt"];

/// Verifies a JWS in compact serialization (RFC 7515 §7.1) and hands its decoded payload to
/// `payload`: the JWS layer of [`AccessTokenValidator::validate`], also run alone by the JWS
/// test vectors.
///
/// The header must be a JSON object of `alg`, `kid` and, optionally, `typ`, nothing else (so
/// `crit`, `jwk`, `jku`, `x5u` and the like are refused, not ignored); when `types` is given,
/// `typ` must be present and one of them. The key is found by `kid`, `alg` must be that key's algorithm,
/// and each part must be unpadded base64url in its canonical form. Nothing of the payload is
/// looked at before the signature verifies.
pub(crate) fn verify_compact<K, T>(
    token: &str,
    keys: &K,
    types: Option<&[&str]>,
    payload: impl FnOnce(&[u8]) -> Result<T, TokenError>,
) -> Result<T, TokenError>
where
    K: KeyLookup + ?Sized,
{
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (signing_input, encoded_signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (encoded_header, encoded_payload) =
        signing_input.split_once('.').ok_or(TokenError::Malformed)?;

    let mut header_buffer = [0u8; HEADER_BUFFER];
    let header_len = URL_SAFE_NO_PAD
        .decode_slice(encoded_header, &mut header_buffer)
        .map_err(|_| TokenError::Malformed)?;
    let header: Header<'_> = serde_json::from_slice(&header_buffer[..header_len])
        .map_err(|_| TokenError::UnsupportedHeader)?;
    if let Some(types) = types {
        // Without `typ` the header misses a field the caller requires.
        let typ = header.typ.ok_or(TokenError::UnsupportedHeader)?;
        if !types.contains(&typ) {
            return Err(TokenError::WrongType);
        }
    }
    let key = keys.find(header.kid).ok_or(TokenError::UnknownKey)?;
    if header.alg != key.algorithm.jose_name() {
        return Err(TokenError::AlgorithmMismatch);
    }

    let mut signature = [0u8; SIGNATURE_BUFFER];
    let signature_len = URL_SAFE_NO_PAD
        .decode_slice(encoded_signature, &mut signature)
        .map_err(|_| TokenError::BadSignature)?;
    if !key
        .verifier
        .verify(signing_input.as_bytes(), &signature[..signature_len])
    {
        return Err(TokenError::BadSignature);
    }

    let mut stack_buffer = [0u8; PAYLOAD_STACK_BUFFER];
    if encoded_payload.len() / 4 * 3 + 3 <= PAYLOAD_STACK_BUFFER {
        let len = URL_SAFE_NO_PAD
            .decode_slice(encoded_payload, &mut stack_buffer)
            .map_err(|_| TokenError::Malformed)?;
        payload(&stack_buffer[..len])
    } else {
        let heap_buffer = URL_SAFE_NO_PAD
            .decode(encoded_payload)
            .map_err(|_| TokenError::Malformed)?;
        payload(&heap_buffer)
    }
}

/// The claims of a token that has already been validated, as a JSON object.
///
/// # Errors
/// [`TokenError::Malformed`] when the payload is not a JSON object.
pub fn decode_claims(token: &str) -> Result<Map<String, Value>, TokenError> {
    let payload = token.split('.').nth(1).ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}
