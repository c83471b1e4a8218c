//! Tests of issuing and validating access tokens, each run against a keyring signing with every
//! algorithm in turn (EdDSA, ES256, RS256, HS256), which always holds a key of every algorithm.
//!
//! Malicious tokens are assembled by hand (base64url JSON signed with `ed25519_dalek`, `p256`,
//! `aws_lc_rs`'s RSA or `hmac` directly) so that each one differs from a good token in exactly the way under
//! test; a forged token signed with the real key isolates the rule that must refuse it from the
//! signature check.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::validate::MAX_TOKEN_LEN;
use super::*;
use crate::ids::SessionId;
use crate::policy::Policy;
use crate::revocation::RevokedSessions;
use crate::session::Session;
use crate::session::tests::session_at;
use crate::time::Timestamp;

mod properties;

const ISSUER: &str = "https://sessiond.example";
const AUDIENCE: &str = "notes-api";
const CLIENT_ID: &str = "notes-web";
const LEEWAY_SECONDS: i64 = 5;
const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
const ALGORITHMS: [SigningAlgorithm; 4] = SigningAlgorithm::ALL;

/// One keyring signing with `algorithm`, holding a key of every other algorithm too (as a server
/// loading every stored key may), a session and the settings that issue and validate its tokens.
struct Fixture {
    algorithm: SigningAlgorithm,
    signing_key: StoredKey,
    other_keys: Vec<StoredKey>,
    keyring: Keyring,
    issuer: AccessTokenIssuer,
    validator: AccessTokenValidator,
    revoked: RevokedSessions,
    session: Session,
    now: Timestamp,
}

fn fixtures() -> Vec<Fixture> {
    ALGORITHMS.into_iter().map(Fixture::new).collect()
}

impl Fixture {
    fn new(algorithm: SigningAlgorithm) -> Self {
        // Whole seconds, so that `exp` and `iat` are exactly `now` plus whole seconds.
        let now = Timestamp::from_unix_millis(1_700_000_000_000);
        let signing_key = generate(algorithm, now, 0);
        let other_keys: Vec<StoredKey> = ALGORITHMS
            .into_iter()
            .filter(|&other| other != algorithm)
            .map(|other| generate(other, now, 0))
            .collect();
        let mut all_keys = other_keys.clone();
        all_keys.push(signing_key.clone());
        let keyring = Keyring::from_stored(&all_keys, algorithm)
            .expect("a keyring of freshly generated keys");
        let mut session = session_at(now, &Policy::default());
        session.claims = claims_object(json!({
            "roles": ["user"],
            "permissions": ["notes:read"],
        }));
        Self {
            algorithm,
            signing_key,
            other_keys,
            keyring,
            issuer: AccessTokenIssuer {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                client_id: CLIENT_ID.into(),
            },
            validator: validator(ISSUER, AUDIENCE, LEEWAY_SECONDS),
            revoked: RevokedSessions::new(),
            session,
            now,
        }
    }

    fn expires_at(&self) -> Timestamp {
        self.now.plus(ACCESS_TTL)
    }

    fn issue(&self) -> String {
        self.issue_at(self.now, self.expires_at())
    }

    fn issue_at(&self, issued_at: Timestamp, expires_at: Timestamp) -> String {
        self.issuer
            .issue(&self.keyring, &self.session, issued_at, expires_at)
            .token
    }

    fn validate(&self, token: &str) -> Result<ValidatedToken, TokenError> {
        self.validate_at(token, self.now)
    }

    fn validate_at(&self, token: &str, at: Timestamp) -> Result<ValidatedToken, TokenError> {
        self.validator
            .validate(token, &self.keyring, &self.revoked, at)
    }

    /// The header sessiond itself writes.
    fn header(&self) -> Value {
        json!({
            "alg": self.algorithm.jose_name(),
            "typ": "at+jwt",
            "kid": self.signing_key.kid,
        })
    }

    /// The claims sessiond itself writes for the fixture's session, as a JSON object to alter.
    fn claims(&self) -> Value {
        let mut claims = json!({
            "iss": ISSUER,
            "sub": self.session.user_id.as_str(),
            "aud": AUDIENCE,
            "exp": self.expires_at().unix_seconds(),
            "iat": self.now.unix_seconds(),
            "jti": "5d1b3f8e-3c1a-4f7e-9a57-0d6a2b1e9c44",
            "sid": self.session.id.to_string(),
            "client_id": CLIENT_ID,
        });
        if let Value::Object(object) = &mut claims {
            object.extend(self.session.claims.clone());
        }
        claims
    }

    /// A token with this header and these claims, correctly signed by the active key.
    fn forge(&self, header: &Value, claims: &Value) -> String {
        self.forge_raw(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// Like [`Fixture::forge`], with the JSON given byte for byte.
    fn forge_raw(&self, header: &[u8], payload: &[u8]) -> String {
        assemble(header, payload, |input| sign_with(&self.signing_key, input))
    }

    /// Every key of the keyring, the signing key first.
    fn all_keys(&self) -> impl Iterator<Item = &StoredKey> {
        std::iter::once(&self.signing_key).chain(&self.other_keys)
    }

    /// The keyring's key of `algorithm`.
    fn key_of(&self, algorithm: SigningAlgorithm) -> &StoredKey {
        self.all_keys()
            .find(|key| key.algorithm == algorithm)
            .expect("every fixture holds a key of every algorithm")
    }
}

/// A key of `algorithm` created at `now`. RSA keys take long to generate, so they come from a
/// few generated once: `which` picks one, and different `which` give different keys.
fn generate(algorithm: SigningAlgorithm, now: Timestamp, which: usize) -> StoredKey {
    static RSA_KEYS: OnceLock<Vec<StoredKey>> = OnceLock::new();
    if algorithm != SigningAlgorithm::Rs256 {
        return StoredKey::generate(algorithm, now);
    }
    let keys = RSA_KEYS.get_or_init(|| {
        (0..3)
            .map(|_| StoredKey::generate(SigningAlgorithm::Rs256, now))
            .collect()
    });
    StoredKey {
        created_at: now,
        signs_from: now,
        ..keys[which].clone()
    }
}

fn validator(issuer: &str, audience: &str, leeway_seconds: i64) -> AccessTokenValidator {
    AccessTokenValidator::new(ValidationRules {
        issuer: issuer.into(),
        audience: audience.into(),
        leeway_seconds,
    })
}

fn claims_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(object) => object,
        other => panic!("not a JSON object: {other}"),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ed25519_signing_key(key: &StoredKey) -> ed25519_dalek::SigningKey {
    let seed: [u8; 32] = key.secret[..].try_into().expect("a 32-byte seed");
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn hmac_sha256(secret: &[u8], input: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

fn p256_signing_key(key: &StoredKey) -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&key.secret).expect("a P-256 scalar")
}

fn rsa_sign(pkcs8: &[u8], input: &[u8]) -> Vec<u8> {
    let pair = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(pkcs8).expect("an RSA PKCS#8 key");
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input,
        &mut signature,
    )
    .expect("RSA signing");
    signature
}

/// Signs `input` with a stored key, independently of the keyring's own signing code.
fn sign_with(key: &StoredKey, input: &[u8]) -> Vec<u8> {
    match key.algorithm {
        SigningAlgorithm::EdDsa => ed25519_signing_key(key).sign(input).to_bytes().to_vec(),
        SigningAlgorithm::Es256 => {
            let signature: p256::ecdsa::Signature = p256_signing_key(key).sign(input);
            signature.normalize_s().to_bytes().to_vec()
        }
        SigningAlgorithm::Rs256 => rsa_sign(&key.secret, input),
        SigningAlgorithm::Hs256 => hmac_sha256(&key.secret, input),
    }
}

/// The published JWK of the keyring's key `kid`.
fn published_jwk(keyring: &Keyring, kid: &str) -> Option<Value> {
    jwks_json(keyring)["keys"]
        .as_array()?
        .iter()
        .find(|jwk| jwk["kid"] == json!(kid))
        .cloned()
}

/// `base64url(header).base64url(payload).base64url(sign(signing input))`.
fn assemble(header: &[u8], payload: &[u8], sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(payload));
    let signature = sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&signature))
}

/// The three encoded parts of a compact token.
fn parts(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    parts.try_into().expect("three parts")
}

fn decode_part(part: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(part).expect("base64url")
}

#[test]
fn a_freshly_issued_token_validates_and_names_its_session_and_user() {
    for fixture in fixtures() {
        let issued = fixture.issuer.issue(
            &fixture.keyring,
            &fixture.session,
            fixture.now,
            fixture.expires_at(),
        );
        assert_eq!(issued.expires_at, fixture.expires_at());
        let validated = fixture.validate(&issued.token).unwrap_or_else(|error| {
            panic!("{:?}: a fresh token is refused: {error}", fixture.algorithm)
        });
        assert_eq!(validated.session_id, fixture.session.id);
        assert_eq!(validated.user_id, "alice");
        assert_eq!(
            validated.expires_at_seconds,
            fixture.expires_at().unix_seconds()
        );

        let header: Value = serde_json::from_slice(&decode_part(parts(&issued.token)[0])).unwrap();
        assert_eq!(header, fixture.header(), "{:?}", fixture.algorithm);
    }
}

#[test]
fn a_token_signed_independently_with_the_real_key_validates() {
    // The forging helpers must produce good tokens, or every refusal below proves nothing.
    for fixture in fixtures() {
        let token = fixture.forge(&fixture.header(), &fixture.claims());
        let validated = fixture.validate(&token).unwrap();
        assert_eq!(validated.session_id, fixture.session.id);
    }
}

#[test]
fn a_token_typed_application_at_jwt_validates() {
    for fixture in fixtures() {
        let mut header = fixture.header();
        header["typ"] = json!("application/at+jwt");
        let token = fixture.forge(&header, &fixture.claims());
        assert!(fixture.validate(&token).is_ok(), "{:?}", fixture.algorithm);
    }
}

#[test]
fn a_tampered_payload_is_refused() {
    for fixture in fixtures() {
        let token = fixture.issue();
        let [header, payload, signature] = parts(&token);

        let mut claims: Value = serde_json::from_slice(&decode_part(payload)).unwrap();
        claims["sub"] = json!("mallory");
        let swapped_user = format!(
            "{header}.{}.{signature}",
            b64(claims.to_string().as_bytes())
        );
        assert_eq!(
            fixture.validate(&swapped_user),
            Err(TokenError::BadSignature),
            "{:?}",
            fixture.algorithm
        );

        let mut claims: Value = serde_json::from_slice(&decode_part(payload)).unwrap();
        claims["exp"] = json!(fixture.expires_at().unix_seconds() + 365 * 24 * 3600);
        let extended = format!(
            "{header}.{}.{signature}",
            b64(claims.to_string().as_bytes())
        );
        assert_eq!(
            fixture.validate(&extended),
            Err(TokenError::BadSignature),
            "{:?}",
            fixture.algorithm
        );

        // One character changed for another of the alphabet, at several places.
        for index in [0, payload.len() / 2, payload.len() - 2] {
            let mut bytes = payload.as_bytes().to_vec();
            bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            let tampered = format!("{header}.{changed}.{signature}");
            assert_eq!(
                fixture.validate(&tampered),
                Err(TokenError::BadSignature),
                "{:?} at {index}",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn a_tampered_signature_is_refused() {
    for fixture in fixtures() {
        let token = fixture.issue();
        let [header, payload, signature] = parts(&token);
        let signature_bytes = decode_part(signature);

        for index in [0, signature_bytes.len() / 2, signature_bytes.len() - 1] {
            let mut flipped = signature_bytes.clone();
            flipped[index] ^= 0x01;
            let tampered = format!("{header}.{payload}.{}", b64(&flipped));
            assert_eq!(
                fixture.validate(&tampered),
                Err(TokenError::BadSignature),
                "{:?} at byte {index}",
                fixture.algorithm
            );
        }

        let zeros = format!(
            "{header}.{payload}.{}",
            b64(&vec![0; signature_bytes.len()])
        );
        assert_eq!(fixture.validate(&zeros), Err(TokenError::BadSignature));

        let empty = format!("{header}.{payload}.");
        assert_eq!(fixture.validate(&empty), Err(TokenError::BadSignature));

        // A valid signature followed by more bytes, and one cut short by a byte.
        let mut longer = signature_bytes.clone();
        longer.push(0);
        let longer = format!("{header}.{payload}.{}", b64(&longer));
        assert_eq!(fixture.validate(&longer), Err(TokenError::BadSignature));
        let shorter = format!(
            "{header}.{payload}.{}",
            b64(&signature_bytes[..signature_bytes.len() - 1])
        );
        assert_eq!(fixture.validate(&shorter), Err(TokenError::BadSignature));

        // Far too long for any signature buffer: refused, without writing past it.
        let huge = format!("{header}.{payload}.{}", b64(&[7; 1024]));
        assert_eq!(fixture.validate(&huge), Err(TokenError::BadSignature));
    }
}

#[test]
fn a_signature_in_another_base64_spelling_is_refused() {
    // The same signature bytes written differently must not give a second valid token string.
    for fixture in fixtures() {
        let token = fixture.issue();
        let [header, payload, signature] = parts(&token);

        // Non-zero unused bits in the last character decode, leniently, to the same bytes.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = signature.as_bytes()[signature.len() - 1];
        let value = alphabet.iter().position(|&c| c == last).unwrap();
        let mut spelled = signature.as_bytes().to_vec();
        *spelled.last_mut().unwrap() = alphabet[value ^ 0x01];
        let spelled = String::from_utf8(spelled).unwrap();
        assert_eq!(
            fixture.validate(&format!("{header}.{payload}.{spelled}")),
            Err(TokenError::BadSignature),
            "{:?}: non-canonical trailing bits",
            fixture.algorithm
        );

        let padded = base64::engine::general_purpose::URL_SAFE.encode(decode_part(signature));
        assert!(padded.ends_with('='));
        assert_eq!(
            fixture.validate(&format!("{header}.{payload}.{padded}")),
            Err(TokenError::BadSignature),
            "{:?}: padded",
            fixture.algorithm
        );
    }
}

#[test]
fn an_ed25519_signature_with_s_plus_the_group_order_is_refused() {
    // The group order ℓ, little-endian; S + ℓ verifies the same equation unless S is range-checked.
    const GROUP_ORDER: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x10,
    ];
    let fixture = Fixture::new(SigningAlgorithm::EdDsa);
    let token = fixture.issue();
    let [header, payload, signature] = parts(&token);
    let mut malleated = decode_part(signature);
    let mut carry = 0u16;
    for (byte, order_byte) in malleated[32..].iter_mut().zip(GROUP_ORDER) {
        let sum = u16::from(*byte) + u16::from(order_byte) + carry;
        *byte = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + ℓ fits in 32 bytes since S < ℓ < 2^253");
    let malleated = format!("{header}.{payload}.{}", b64(&malleated));
    assert_eq!(fixture.validate(&malleated), Err(TokenError::BadSignature));
}

#[test]
fn an_es256_signature_with_s_replaced_by_its_negation_is_refused() {
    // (r, n - s) verifies the same ECDSA equation as (r, s); sessiond signs with low S and
    // refuses the high-S twin, so one set of claims has one token string.
    const ORDER: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let fixture = Fixture::new(SigningAlgorithm::Es256);
    for _ in 0..8 {
        let token = fixture.issue();
        let [header, payload, signature] = parts(&token);
        let original = decode_part(signature);
        let mut twin = original.clone();
        // n - s, big-endian.
        let mut borrow = 0i16;
        for index in (32..64).rev() {
            let difference = i16::from(ORDER[index - 32]) - i16::from(original[index]) - borrow;
            twin[index] = (difference & 0xff) as u8;
            borrow = i16::from(difference < 0);
        }
        assert_eq!(borrow, 0, "s < n");
        let as_high_s = p256::ecdsa::Signature::from_slice(&twin).unwrap();
        let verifying = *p256_signing_key(&fixture.signing_key).verifying_key();
        let signing_input = format!("{header}.{payload}");
        assert!(
            p256::ecdsa::signature::Verifier::verify(
                &verifying,
                signing_input.as_bytes(),
                &as_high_s
            )
            .is_ok(),
            "the twin is a mathematically valid signature"
        );
        let twin_token = format!("{signing_input}.{}", b64(&twin));
        assert_eq!(fixture.validate(&twin_token), Err(TokenError::BadSignature));
        assert!(fixture.validate(&token).is_ok());
    }
}

#[test]
fn a_truncated_token_is_refused() {
    for fixture in fixtures() {
        let token = fixture.issue();
        for len in 0..token.len() {
            assert!(
                fixture.validate(&token[..len]).is_err(),
                "{:?}: the first {len} of {} bytes validate",
                fixture.algorithm,
                token.len()
            );
        }
        for start in 1..token.len() {
            assert!(
                fixture.validate(&token[start..]).is_err(),
                "{:?}: the token without its first {start} bytes validates",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn a_token_with_two_or_four_parts_is_refused() {
    for fixture in fixtures() {
        let token = fixture.issue();
        let [header, payload, signature] = parts(&token);

        assert_eq!(
            fixture.validate(&format!("{header}.{payload}")),
            Err(TokenError::Malformed)
        );
        assert!(
            fixture
                .validate(&format!("{header}.{payload}.{signature}.{signature}"))
                .is_err()
        );
        assert!(fixture.validate(&format!("{token}.")).is_err());
        assert!(fixture.validate(&format!(".{token}")).is_err());
        assert!(
            fixture
                .validate(&format!("{header}.{payload}.{payload}.{signature}"))
                .is_err()
        );

        // Four parts whose last one is a correct signature over the first three: the signature
        // verifies, and the payload (which now contains a dot) must still be refused.
        let signing_input = format!("{header}.{payload}.{}", b64(b"{}"));
        let signature = b64(&sign_with(&fixture.signing_key, signing_input.as_bytes()));
        assert_eq!(
            fixture.validate(&format!("{signing_input}.{signature}")),
            Err(TokenError::Malformed),
            "{:?}",
            fixture.algorithm
        );
    }
}

#[test]
fn empty_and_dot_only_tokens_are_refused() {
    for fixture in fixtures() {
        assert_eq!(fixture.validate(""), Err(TokenError::Malformed));
        for text in [
            ".",
            "..",
            "...",
            " ",
            "Bearer",
            "a.b.c",
            "\u{e9}.\u{e9}.\u{e9}",
        ] {
            assert!(fixture.validate(text).is_err(), "{text:?}");
        }
    }
}

#[test]
fn a_token_over_the_size_limit_is_refused_even_when_correctly_signed() {
    for mut fixture in fixtures() {
        let junk = "a".repeat(9 * 1024);
        assert_eq!(fixture.validate(&junk), Err(TokenError::Malformed));

        fixture
            .session
            .claims
            .insert("filler".into(), json!("x".repeat(7 * 1024)));
        let token = fixture.issue();
        assert!(token.len() > MAX_TOKEN_LEN && token.len() < 11 * 1024);
        assert_eq!(
            fixture.validate(&token),
            Err(TokenError::Malformed),
            "{:?}",
            fixture.algorithm
        );
    }
}

#[test]
fn a_token_at_the_size_limit_validates() {
    // Encoded payload lengths skip one residue mod 4, so the largest token that fits is either
    // exactly the limit or one byte under it.
    for mut fixture in fixtures() {
        let base_len = fixture.issue().len();
        let estimate = (MAX_TOKEN_LEN - base_len) * 3 / 4;
        let mut largest_accepted = 0;
        for filler_len in estimate - 40..estimate + 10 {
            fixture
                .session
                .claims
                .insert("filler".into(), json!("x".repeat(filler_len)));
            let token = fixture.issue();
            if token.len() <= MAX_TOKEN_LEN {
                assert!(fixture.validate(&token).is_ok(), "{:?}", fixture.algorithm);
                largest_accepted = largest_accepted.max(token.len());
            } else {
                assert_eq!(fixture.validate(&token), Err(TokenError::Malformed));
            }
        }
        assert!(
            largest_accepted >= MAX_TOKEN_LEN - 1,
            "no token within a byte of the limit was tried: {largest_accepted}"
        );
    }
}

#[test]
fn payloads_around_the_stack_buffer_size_validate() {
    // Validation decodes small payloads on the stack and larger ones on the heap; the switch
    // must not refuse (or overrun with) a payload of any length near it.
    const STACK_BUFFER: usize = 1536;
    for mut fixture in fixtures() {
        fixture.session.claims.insert("filler".into(), json!(""));
        let base_len = decode_part(parts(&fixture.issue())[1]).len();
        let mut largest = 0;
        for filler_len in STACK_BUFFER - base_len - 40..STACK_BUFFER - base_len + 40 {
            fixture
                .session
                .claims
                .insert("filler".into(), json!("x".repeat(filler_len)));
            let token = fixture.issue();
            assert!(
                fixture.validate(&token).is_ok(),
                "{:?}: payload of {} encoded bytes",
                fixture.algorithm,
                parts(&token)[1].len()
            );
            largest = largest.max(decode_part(parts(&token)[1]).len());
        }
        assert!(largest > STACK_BUFFER, "the heap path was not reached");
    }
}

#[test]
fn alg_none_is_refused() {
    for fixture in fixtures() {
        for alg in ["none", "None", "NONE", "nOnE", ""] {
            let header = json!({ "alg": alg, "typ": "at+jwt", "kid": fixture.signing_key.kid });
            let unsigned = format!(
                "{}.{}.",
                b64(header.to_string().as_bytes()),
                b64(fixture.claims().to_string().as_bytes())
            );
            assert_eq!(
                fixture.validate(&unsigned),
                Err(TokenError::AlgorithmMismatch),
                "{:?}: alg {alg:?}",
                fixture.algorithm
            );
            // With a real signature appended it is no better.
            let signed = fixture.forge(&header, &fixture.claims());
            assert_eq!(
                fixture.validate(&signed),
                Err(TokenError::AlgorithmMismatch)
            );
        }
    }
}

#[test]
fn an_unknown_or_misspelled_alg_is_refused() {
    for fixture in fixtures() {
        for alg in [
            "eddsa", "EDDSA", "Ed25519", "hs256", "HS384", "HS512", "RS256", "ES256", "es256",
            "rs256", "RS384", "RS512", "PS256", "ES384", "ES512", "ES256K", "Ed448",
        ] {
            if alg == fixture.algorithm.jose_name() {
                continue;
            }
            let mut header = fixture.header();
            header["alg"] = json!(alg);
            let token = fixture.forge(&header, &fixture.claims());
            assert_eq!(
                fixture.validate(&token),
                Err(TokenError::AlgorithmMismatch),
                "{:?}: alg {alg:?}",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn a_token_resigned_with_hmac_over_a_published_public_key_is_refused() {
    // The classic algorithm confusion: the attacker takes a published public key (Ed25519, P-256
    // or RSA) and uses it as an HMAC secret, hoping the verifier picks the algorithm from the
    // header.
    for fixture in fixtures() {
        for key in fixture
            .all_keys()
            .filter(|key| !key.algorithm.is_symmetric())
        {
            let jwk = published_jwk(&fixture.keyring, &key.kid).expect("the key is published");
            let public_bytes: Vec<u8> = match key.algorithm {
                SigningAlgorithm::Rs256 => decode_part(jwk["n"].as_str().unwrap()),
                SigningAlgorithm::Es256 => {
                    let mut point = vec![0x04];
                    point.extend(decode_part(jwk["x"].as_str().unwrap()));
                    point.extend(decode_part(jwk["y"].as_str().unwrap()));
                    point
                }
                _ => decode_part(jwk["x"].as_str().unwrap()),
            };
            let header = json!({ "alg": "HS256", "typ": "at+jwt", "kid": key.kid });
            let header_bytes = header.to_string().into_bytes();
            let payload = fixture.claims().to_string().into_bytes();
            let secrets: [Vec<u8>; 3] = [
                public_bytes.clone(),
                b64(&public_bytes).into_bytes(),
                jwk.to_string().into_bytes(),
            ];
            for secret in secrets {
                let token = assemble(&header_bytes, &payload, |input| hmac_sha256(&secret, input));
                assert_eq!(
                    fixture.validate(&token),
                    Err(TokenError::AlgorithmMismatch),
                    "{:?}: HS256 over the {:?} key",
                    fixture.algorithm,
                    key.algorithm
                );
            }
        }
    }
}

#[test]
fn a_kid_under_any_other_algorithm_is_refused() {
    // Every key, named with every other algorithm's `alg` and signed by a real key of that
    // algorithm (one the keyring itself holds), and by an attacker's own key of it.
    for fixture in fixtures() {
        let payload = fixture.claims().to_string().into_bytes();
        for key in fixture.all_keys() {
            for other in ALGORITHMS
                .into_iter()
                .filter(|&other| other != key.algorithm)
            {
                let header = json!({ "alg": other.jose_name(), "typ": "at+jwt", "kid": key.kid });
                let header_bytes = header.to_string().into_bytes();
                let attacker = generate(other, fixture.now, 1);
                for signer in [fixture.key_of(other), &attacker] {
                    let token = assemble(&header_bytes, &payload, |input| sign_with(signer, input));
                    assert_eq!(
                        fixture.validate(&token),
                        Err(TokenError::AlgorithmMismatch),
                        "{:?}: {:?} key named as {other:?}",
                        fixture.algorithm,
                        key.algorithm
                    );
                }
            }
        }
    }
}

#[test]
fn an_hmac_kid_signed_with_a_key_seeded_by_its_secret_is_refused() {
    // The HMAC secret, were it to leak, is 32 bytes: exactly an Ed25519 seed or a P-256 scalar.
    for fixture in fixtures() {
        let hmac = fixture.key_of(SigningAlgorithm::Hs256);
        let payload = fixture.claims().to_string().into_bytes();
        for algorithm in [SigningAlgorithm::EdDsa, SigningAlgorithm::Es256] {
            let seeded = StoredKey {
                algorithm,
                ..hmac.clone()
            };
            let header = json!({ "alg": algorithm.jose_name(), "typ": "at+jwt", "kid": hmac.kid });
            let token = assemble(header.to_string().as_bytes(), &payload, |input| {
                sign_with(&seeded, input)
            });
            assert_eq!(
                fixture.validate(&token),
                Err(TokenError::AlgorithmMismatch),
                "{:?}: {algorithm:?}",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn a_token_signed_by_a_foreign_key_under_a_known_kid_is_refused() {
    for fixture in fixtures() {
        let impostor = StoredKey {
            kid: fixture.signing_key.kid.clone(),
            ..generate(fixture.algorithm, fixture.now, 1)
        };
        let token = assemble(
            fixture.header().to_string().as_bytes(),
            fixture.claims().to_string().as_bytes(),
            |input| sign_with(&impostor, input),
        );
        assert_eq!(
            fixture.validate(&token),
            Err(TokenError::BadSignature),
            "{:?}",
            fixture.algorithm
        );
    }
}

#[test]
fn headers_that_point_elsewhere_for_keys_are_refused() {
    for fixture in fixtures() {
        let extras = [
            ("jku", json!("https://attacker.example/jwks.json")),
            ("x5u", json!("https://attacker.example/cert.pem")),
            (
                "jwk",
                json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]) }),
            ),
            ("crit", json!(["exp"])),
            ("x5c", json!(["MIIB"])),
            ("cty", json!("JWT")),
            ("b64", json!(false)),
            ("zip", json!("DEF")),
        ];
        for (name, value) in extras {
            let mut header = fixture.header();
            header[name] = value;
            let token = fixture.forge(&header, &fixture.claims());
            assert_eq!(
                fixture.validate(&token),
                Err(TokenError::UnsupportedHeader),
                "{:?}: header with {name}",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn a_header_missing_a_field_or_repeating_one_is_refused() {
    for fixture in fixtures() {
        let kid = &fixture.signing_key.kid;
        let alg = fixture.algorithm.jose_name();
        let payload = fixture.claims().to_string();
        let headers = [
            format!(r#"{{"typ":"at+jwt","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"{alg}","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"{alg}","typ":"at+jwt"}}"#),
            format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"{alg}","alg":"none","typ":"at+jwt","kid":"{kid}"}}"#),
            format!(r#"[{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}"}}]"#),
            format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}"}} trailing"#),
            "null".to_owned(),
            String::new(),
        ];
        for header in headers {
            let token = fixture.forge_raw(header.as_bytes(), payload.as_bytes());
            assert_eq!(
                fixture.validate(&token),
                Err(TokenError::UnsupportedHeader),
                "{:?}: {header}",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn a_header_that_is_not_base64url_is_refused() {
    for fixture in fixtures() {
        let token = fixture.issue();
        let [header, payload, signature] = parts(&token);
        let padded = base64::engine::general_purpose::URL_SAFE.encode(decode_part(header));
        for bad in [format!("{header}="), format!("{header}!"), padded] {
            if bad == header {
                continue;
            }
            assert_eq!(
                fixture.validate(&format!("{bad}.{payload}.{signature}")),
                Err(TokenError::Malformed),
                "{:?}: {bad}",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn unknown_and_hostile_kids_are_refused_without_panicking() {
    for fixture in fixtures() {
        let real_kid = fixture.signing_key.kid.clone();
        let kids = [
            "unknown-key".to_owned(),
            String::new(),
            format!("{real_kid} "),
            format!(" {real_kid}"),
            real_kid.to_uppercase(),
            real_kid[..real_kid.len() - 1].to_owned(),
            format!("{real_kid}{real_kid}"),
            "../../../../etc/passwd".to_owned(),
            "..\\..\\windows\\system32".to_owned(),
            "/dev/zero".to_owned(),
            "%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_owned(),
            "' OR '1'='1".to_owned(),
            "x'; DROP TABLE signing_keys; --".to_owned(),
            "file:///etc/passwd".to_owned(),
            "k".repeat(150),
        ];
        for kid in kids {
            let mut header = fixture.header();
            header["kid"] = json!(kid);
            let token = fixture.forge(&header, &fixture.claims());
            let result = fixture.validate(&token);
            assert!(
                matches!(
                    result,
                    Err(TokenError::UnknownKey | TokenError::UnsupportedHeader)
                ),
                "{:?}: kid {kid:?} gave {result:?}",
                fixture.algorithm
            );
        }

        // Kids the borrowed header fields cannot hold (escapes) or that are not strings.
        for kid in [
            json!("..\\/..\\/etc"),
            json!("\u{0}"),
            json!("line\nbreak"),
            json!(null),
            json!(42),
            json!([real_kid]),
            json!({ "kid": real_kid }),
        ] {
            let header = format!(
                r#"{{"alg":"{}","typ":"at+jwt","kid":{kid}}}"#,
                fixture.algorithm.jose_name()
            );
            let token =
                fixture.forge_raw(header.as_bytes(), fixture.claims().to_string().as_bytes());
            assert_eq!(
                fixture.validate(&token),
                Err(TokenError::UnsupportedHeader),
                "{:?}: kid {kid}",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn very_long_kids_are_refused_without_panicking() {
    // Headers are decoded into a fixed stack buffer; any kid that overflows it is refused as
    // malformed before any lookup, and no length reads or writes past it.
    for fixture in fixtures() {
        let alg = fixture.algorithm.jose_name();
        for kid_len in (0..400).chain([1_000, 4_000, 7_900]) {
            let kid = "k".repeat(kid_len);
            let header = format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}"}}"#);
            let token = fixture.forge_raw(header.as_bytes(), br#"{}"#);
            let result = fixture.validate(&token);
            let expected = if token.len() > MAX_TOKEN_LEN || header.len() > 256 {
                TokenError::Malformed
            } else {
                TokenError::UnknownKey
            };
            assert_eq!(
                result,
                Err(expected),
                "{:?}: kid of {kid_len} bytes",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn a_token_typed_jwt_is_refused() {
    for fixture in fixtures() {
        for typ in [
            "JWT",
            "jwt",
            "at+JWT",
            "AT+JWT",
            "application/jwt",
            "",
            "at+jwt ",
        ] {
            let mut header = fixture.header();
            header["typ"] = json!(typ);
            let token = fixture.forge(&header, &fixture.claims());
            assert_eq!(
                fixture.validate(&token),
                Err(TokenError::WrongType),
                "{:?}: typ {typ:?}",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn an_expired_token_is_refused_beyond_the_leeway_and_accepted_within_it() {
    for fixture in fixtures() {
        let token = fixture.issue();
        let expiry = fixture.expires_at();
        let seconds = |n: u64| Duration::from_secs(n);

        assert!(
            fixture
                .validate_at(&token, expiry.minus(seconds(1)))
                .is_ok()
        );
        assert!(fixture.validate_at(&token, expiry).is_ok());
        let last_accepted = expiry.plus(seconds(LEEWAY_SECONDS as u64 - 1));
        assert!(fixture.validate_at(&token, last_accepted).is_ok());
        assert!(
            fixture
                .validate_at(&token, last_accepted.plus(Duration::from_millis(999)))
                .is_ok(),
            "{:?}: seconds are rounded down",
            fixture.algorithm
        );
        for late in [LEEWAY_SECONDS as u64, LEEWAY_SECONDS as u64 + 1, 3_600] {
            assert_eq!(
                fixture.validate_at(&token, expiry.plus(seconds(late))),
                Err(TokenError::Expired),
                "{:?}: {late} s after exp",
                fixture.algorithm
            );
        }

        // Without leeway, a token is dead at its `exp` (RFC 7519 §4.1.4: "on or after").
        let strict = validator(ISSUER, AUDIENCE, 0);
        let at = |instant| strict.validate(&token, &fixture.keyring, &fixture.revoked, instant);
        assert!(at(expiry.minus(Duration::from_millis(1))).is_ok());
        assert_eq!(at(expiry), Err(TokenError::Expired));
    }
}

#[test]
fn a_token_issued_in_the_future_is_refused_beyond_the_leeway() {
    for fixture in fixtures() {
        let leeway = Duration::from_secs(LEEWAY_SECONDS as u64);
        let later = |by: Duration| {
            let issued_at = fixture.now.plus(by);
            fixture.issue_at(issued_at, issued_at.plus(ACCESS_TTL))
        };
        assert!(fixture.validate(&later(leeway)).is_ok());
        assert_eq!(
            fixture.validate(&later(leeway + Duration::from_secs(1))),
            Err(TokenError::NotYetValid),
            "{:?}",
            fixture.algorithm
        );
        assert_eq!(
            fixture.validate(&later(Duration::from_secs(24 * 3600))),
            Err(TokenError::NotYetValid)
        );
    }
}

#[test]
fn a_token_not_before_a_future_time_is_refused_beyond_the_leeway() {
    for fixture in fixtures() {
        let now = fixture.now.unix_seconds();
        let with_nbf = |nbf: Value| {
            let mut claims = fixture.claims();
            claims["nbf"] = nbf;
            fixture.forge(&fixture.header(), &claims)
        };
        assert!(fixture.validate(&with_nbf(json!(now))).is_ok());
        assert!(
            fixture
                .validate(&with_nbf(json!(now + LEEWAY_SECONDS)))
                .is_ok()
        );
        assert_eq!(
            fixture.validate(&with_nbf(json!(now + LEEWAY_SECONDS + 1))),
            Err(TokenError::NotYetValid),
            "{:?}",
            fixture.algorithm
        );

        // An `nbf` in the past does not excuse an `iat` in the future.
        let mut claims = fixture.claims();
        claims["nbf"] = json!(now - 60);
        claims["iat"] = json!(now + 60);
        let token = fixture.forge(&fixture.header(), &claims);
        assert_eq!(fixture.validate(&token), Err(TokenError::NotYetValid));
    }
}

#[test]
fn a_registered_claim_present_as_null_is_refused_not_read_as_absent() {
    // Regression: `"nbf": null` used to pass as if `nbf` were absent. RFC 7519 gives every
    // time claim a NumericDate; `null` is none, so the token is malformed, as it is for
    // `exp`, `iat` and the string claims.
    for fixture in fixtures() {
        for name in ["nbf", "exp", "iat", "iss", "sub", "aud", "sid"] {
            let mut claims = fixture.claims();
            claims[name] = Value::Null;
            let token = fixture.forge(&fixture.header(), &claims);
            assert_eq!(
                fixture.validate(&token),
                Err(TokenError::Malformed),
                "{name}: null under {:?}",
                fixture.algorithm
            );
        }
        // Left out, `nbf` is simply not checked.
        let mut claims = fixture.claims();
        if let Value::Object(object) = &mut claims {
            object.remove("nbf");
        }
        assert!(
            fixture
                .validate(&fixture.forge(&fixture.header(), &claims))
                .is_ok()
        );
    }
}

/// `depth` arrays nested in one another, innermost empty.
fn nested_arrays(depth: usize) -> Value {
    (0..depth).fold(json!([]), |inner, _| json!([inner]))
}

#[test]
fn claims_nested_past_the_depth_limit_are_refused_and_those_within_it_decode() {
    // Regression: a validly signed token with a custom claim nested 127 deep passed
    // validation (unknown claims are skipped, at any depth) but its claims could not be
    // decoded, and introspection answered 500.
    for fixture in fixtures() {
        let with_depth = |depth: usize| {
            let mut claims = fixture.claims();
            // The claims object is the first level, the outer array of `nested_arrays(d)`
            // the second: `d` nested arrays plus the innermost make `d + 2` levels.
            claims["deep"] = nested_arrays(depth - 2);
            fixture.forge(&fixture.header(), &claims)
        };
        let deepest = with_depth(MAX_CLAIMS_DEPTH);
        assert!(
            fixture.validate(&deepest).is_ok(),
            "{:?}",
            fixture.algorithm
        );
        assert!(decode_claims(&deepest).is_ok());
        for depth in [MAX_CLAIMS_DEPTH + 1, 127, 128, 200, 1_000] {
            assert_eq!(
                fixture.validate(&with_depth(depth)),
                Err(TokenError::Malformed),
                "{depth} deep under {:?}",
                fixture.algorithm
            );
        }
        // Brackets inside strings are text, not nesting.
        let mut claims = fixture.claims();
        claims["text"] = json!("[[[[[[[[[[{{{{{{{{{{\\\"".repeat(40));
        assert!(
            fixture
                .validate(&fixture.forge(&fixture.header(), &claims))
                .is_ok()
        );
    }
}

#[test]
fn a_custom_claim_with_a_number_out_of_range_is_refused() {
    // Regression (found by the property tests): `"custom": 1e400` passed validation, which
    // skips unknown claims, but no JSON value holds it, so the claims did not decode.
    for fixture in fixtures() {
        let payload = fixture
            .claims()
            .to_string()
            .replacen('{', r#"{"custom":1e400,"#, 1);
        let token = fixture.forge_raw(fixture.header().to_string().as_bytes(), payload.as_bytes());
        assert_eq!(fixture.validate(&token), Err(TokenError::Malformed));
        let payload = fixture.claims().to_string().replacen(
            '{',
            r#"{"custom":[-1.5e300,18446744073709551616],"#,
            1,
        );
        let token = fixture.forge_raw(fixture.header().to_string().as_bytes(), payload.as_bytes());
        assert!(fixture.validate(&token).is_ok());
        assert!(decode_claims(&token).is_ok());
    }
}

#[test]
fn extreme_times_are_judged_without_overflowing() {
    for fixture in fixtures() {
        let with = |name: &str, value: Value| {
            let mut claims = fixture.claims();
            claims[name] = value;
            fixture.forge(&fixture.header(), &claims)
        };
        assert_eq!(
            fixture.validate(&with("exp", json!(i64::MIN))),
            Err(TokenError::Expired)
        );
        assert_eq!(
            fixture.validate(&with("iat", json!(i64::MAX))),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            fixture.validate(&with("nbf", json!(i64::MAX))),
            Err(TokenError::NotYetValid)
        );
        // An absurdly late `exp` is the issuer's word; it is signed, so it is believed.
        assert!(fixture.validate(&with("exp", json!(i64::MAX))).is_ok());
        for bad in [
            json!(u64::MAX),
            json!(1e300),
            json!(-1e300),
            json!("1700000900"),
        ] {
            assert_eq!(
                fixture.validate(&with("exp", bad.clone())),
                Err(TokenError::Malformed),
                "exp {bad}"
            );
        }

        let huge_leeway = validator(ISSUER, AUDIENCE, i64::MAX);
        let token = with("exp", json!(i64::MIN));
        let at =
            |instant| huge_leeway.validate(&token, &fixture.keyring, &fixture.revoked, instant);
        assert_eq!(
            at(Timestamp::from_unix_millis(i64::MAX)),
            Err(TokenError::Expired)
        );
        assert!(at(Timestamp::from_unix_millis(i64::MIN)).is_ok());
    }
}

#[test]
fn a_token_for_another_issuer_is_refused() {
    for fixture in fixtures() {
        for issuer in [
            "https://evil.example",
            "https://sessiond.example/",
            "HTTPS://SESSIOND.EXAMPLE",
            "",
        ] {
            let other = AccessTokenIssuer {
                issuer: issuer.into(),
                ..fixture.issuer.clone()
            };
            let token = other
                .issue(
                    &fixture.keyring,
                    &fixture.session,
                    fixture.now,
                    fixture.expires_at(),
                )
                .token;
            assert_eq!(
                fixture.validate(&token),
                Err(TokenError::WrongIssuer),
                "{:?}: iss {issuer:?}",
                fixture.algorithm
            );
        }
        // And the same token is refused by a validator expecting someone else.
        let token = fixture.issue();
        let elsewhere = validator("https://other.example", AUDIENCE, LEEWAY_SECONDS);
        assert_eq!(
            elsewhere.validate(&token, &fixture.keyring, &fixture.revoked, fixture.now),
            Err(TokenError::WrongIssuer)
        );
    }
}

#[test]
fn a_token_for_another_audience_is_refused() {
    for fixture in fixtures() {
        let other = AccessTokenIssuer {
            audience: "billing-api".into(),
            ..fixture.issuer.clone()
        };
        let token = other
            .issue(
                &fixture.keyring,
                &fixture.session,
                fixture.now,
                fixture.expires_at(),
            )
            .token;
        assert_eq!(
            fixture.validate(&token),
            Err(TokenError::WrongAudience),
            "{:?}",
            fixture.algorithm
        );

        let token = fixture.issue();
        let billing = validator(ISSUER, "billing-api", LEEWAY_SECONDS);
        assert_eq!(
            billing.validate(&token, &fixture.keyring, &fixture.revoked, fixture.now),
            Err(TokenError::WrongAudience)
        );
    }
}

#[test]
fn an_audience_array_naming_this_service_is_accepted() {
    for fixture in fixtures() {
        let with_aud = |aud: Value| {
            let mut claims = fixture.claims();
            claims["aud"] = aud;
            fixture.forge(&fixture.header(), &claims)
        };
        for aud in [
            json!([AUDIENCE]),
            json!(["billing-api", AUDIENCE]),
            json!([AUDIENCE, "billing-api", "notes-api-v2"]),
        ] {
            assert!(
                fixture.validate(&with_aud(aud.clone())).is_ok(),
                "{:?}: aud {aud}",
                fixture.algorithm
            );
        }
        for aud in [
            json!([]),
            json!(["billing-api"]),
            json!(["notes-api-v2", "notes"]),
        ] {
            assert_eq!(
                fixture.validate(&with_aud(aud.clone())),
                Err(TokenError::WrongAudience),
                "{:?}: aud {aud}",
                fixture.algorithm
            );
        }
        for aud in [
            json!([AUDIENCE, 5]),
            json!(null),
            json!(5),
            json!({ "aud": AUDIENCE }),
        ] {
            assert_eq!(
                fixture.validate(&with_aud(aud.clone())),
                Err(TokenError::Malformed),
                "{:?}: aud {aud}",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn a_token_of_a_revoked_session_is_refused() {
    for fixture in fixtures() {
        let token = fixture.issue();
        fixture
            .revoked
            .insert(SessionId::generate(), fixture.expires_at());
        assert!(
            fixture.validate(&token).is_ok(),
            "another session's revocation is no concern of this one"
        );
        fixture
            .revoked
            .insert(fixture.session.id, fixture.expires_at());
        assert_eq!(
            fixture.validate(&token),
            Err(TokenError::Revoked),
            "{:?}",
            fixture.algorithm
        );
    }
}

#[test]
fn signed_tokens_with_malformed_claims_are_refused() {
    // These can only come from a key holder, but validation must still not trust their shape.
    for fixture in fixtures() {
        let header = fixture.header().to_string();
        let claims = fixture.claims();
        let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
        for missing in ["iss", "sub", "aud", "exp", "iat", "sid"] {
            let mut without = claims.clone();
            without.as_object_mut().unwrap().remove(missing);
            variants.push((format!("no {missing}"), without.to_string().into_bytes()));
        }
        for (name, value) in [
            ("sid", json!("not-a-uuid")),
            ("sid", json!("")),
            ("sid", json!(42)),
            ("sub", json!("")),
            ("sub", json!(null)),
            ("iat", json!("now")),
        ] {
            let mut changed = claims.clone();
            changed[name] = value.clone();
            variants.push((
                format!("{name} = {value}"),
                changed.to_string().into_bytes(),
            ));
        }
        let sid = fixture.session.id;
        let exp = fixture.expires_at().unix_seconds();
        let iat = fixture.now.unix_seconds();
        variants.push((
            "a repeated sub".into(),
            format!(
                r#"{{"iss":"{ISSUER}","sub":"alice","sub":"admin","aud":"{AUDIENCE}","exp":{exp},"iat":{iat},"sid":"{sid}"}}"#
            )
            .into_bytes(),
        ));
        variants.push((
            "a repeated exp".into(),
            format!(
                r#"{{"iss":"{ISSUER}","sub":"alice","aud":"{AUDIENCE}","exp":{exp},"exp":{},"iat":{iat},"sid":"{sid}"}}"#,
                i64::MAX
            )
            .into_bytes(),
        ));
        variants.push(("an array".into(), b"[]".to_vec()));
        variants.push(("not JSON".into(), b"alice".to_vec()));
        variants.push(("nothing".into(), Vec::new()));
        variants.push(("invalid UTF-8".into(), vec![0xff, 0xfe, b'{', b'}']));

        for (what, payload) in variants {
            let token = fixture.forge_raw(header.as_bytes(), &payload);
            assert_eq!(
                fixture.validate(&token),
                Err(TokenError::Malformed),
                "{:?}: payload with {what}",
                fixture.algorithm
            );
        }

        // A payload that is not base64url at all, still correctly signed.
        let [encoded_header, _, _] = parts(&fixture.issue()).map(str::to_owned);
        for payload in ["!!!!", "e30=", "e30", "e3"] {
            let signing_input = format!("{encoded_header}.{payload}");
            let signature = b64(&sign_with(&fixture.signing_key, signing_input.as_bytes()));
            assert_eq!(
                fixture.validate(&format!("{signing_input}.{signature}")),
                Err(TokenError::Malformed),
                "{:?}: payload {payload:?}",
                fixture.algorithm
            );
        }
    }
}

#[test]
fn escaped_strings_in_claims_are_understood() {
    // `iss`, `sub` and `aud` may arrive JSON-escaped; they must compare by value.
    for fixture in fixtures() {
        let sid = fixture.session.id;
        let exp = fixture.expires_at().unix_seconds();
        let iat = fixture.now.unix_seconds();
        let payload = format!(
            r#"{{"iss":"https:\/\/sessiond.example","sub":"\u0061lice","aud":["\u006eotes-api"],"exp":{exp},"iat":{iat},"sid":"{sid}"}}"#
        );
        let token = fixture.forge_raw(fixture.header().to_string().as_bytes(), payload.as_bytes());
        let validated = fixture.validate(&token).unwrap();
        assert_eq!(validated.user_id, "alice");
    }
}

#[test]
fn a_token_of_a_retired_key_validates_only_while_the_key_is_kept() {
    for fixture in fixtures() {
        let token = fixture.issue();
        let later = fixture.now.plus(Duration::from_secs(1));
        let successor = generate(fixture.algorithm, later, 2);
        let rotated = Keyring::from_stored(
            &[fixture.signing_key.clone(), successor.clone()],
            fixture.algorithm,
        )
        .unwrap();
        assert_eq!(rotated.signing_kid(), successor.kid);
        assert!(
            fixture
                .validator
                .validate(&token, &rotated, &fixture.revoked, fixture.now)
                .is_ok()
        );
        let dropped = Keyring::from_stored(&[successor], fixture.algorithm).unwrap();
        assert_eq!(
            fixture
                .validator
                .validate(&token, &dropped, &fixture.revoked, fixture.now),
            Err(TokenError::UnknownKey),
            "{:?}",
            fixture.algorithm
        );
    }
}

#[test]
fn decode_claims_returns_the_session_claims() {
    for mut fixture in fixtures() {
        fixture
            .session
            .claims
            .insert("plan".into(), json!({ "tier": "pro", "seats": 3 }));
        let token = fixture.issue();
        assert!(fixture.validate(&token).is_ok());
        let claims = decode_claims(&token).unwrap();
        assert_eq!(claims["roles"], json!(["user"]));
        assert_eq!(claims["permissions"], json!(["notes:read"]));
        assert_eq!(claims["plan"], json!({ "tier": "pro", "seats": 3 }));
        assert_eq!(claims["sub"], json!("alice"));
        assert_eq!(claims["sid"], json!(fixture.session.id.to_string()));
        assert_eq!(claims["client_id"], json!(CLIENT_ID));
        assert_eq!(claims["iss"], json!(ISSUER));
        assert_eq!(claims["aud"], json!(AUDIENCE));
        assert!(
            !claims.contains_key("tenant_id"),
            "the session has no tenant"
        );
    }
}

#[test]
fn a_token_carries_its_permissions_as_a_space_separated_scope_claim() {
    for mut fixture in fixtures() {
        let token = fixture.issue();
        assert_eq!(decode_claims(&token).unwrap()["scope"], json!("notes:read"));

        fixture.session.claims.insert(
            "permissions".into(),
            json!(["notes:read", "notes:write", "billing:*"]),
        );
        let token = fixture.issue();
        assert_eq!(
            decode_claims(&token).unwrap()["scope"],
            json!("notes:read notes:write billing:*")
        );

        // No permissions, no scope claim (RFC 9068 §2.2.3 asks for one only where a scope
        // was granted).
        fixture.session.claims.remove("permissions");
        let token = fixture.issue();
        assert!(!decode_claims(&token).unwrap().contains_key("scope"));
        fixture
            .session
            .claims
            .insert("permissions".into(), json!([]));
        let token = fixture.issue();
        assert!(!decode_claims(&token).unwrap().contains_key("scope"));
    }
}

#[test]
fn decode_claims_refuses_what_is_not_a_token() {
    assert_eq!(decode_claims(""), Err(TokenError::Malformed));
    assert_eq!(decode_claims("abc"), Err(TokenError::Malformed));
    assert_eq!(decode_claims("a.!!!.c"), Err(TokenError::Malformed));
    assert_eq!(
        decode_claims(&format!("a.{}.c", b64(b"[1]"))),
        Err(TokenError::Malformed)
    );
}

// Verification-only keys built from a JWK Set, as a resource server holds them.

fn eddsa_fixture() -> Fixture {
    Fixture::new(SigningAlgorithm::EdDsa)
}

fn good_jwk(fixture: &Fixture) -> Value {
    let key = fixture.key_of(SigningAlgorithm::EdDsa);
    let public = ed25519_signing_key(key).verifying_key();
    json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64(public.as_bytes()),
        "kid": key.kid,
        "alg": "EdDSA",
        "use": "sig",
    })
}

#[test]
fn the_servers_own_jwks_verifies_its_tokens_with_the_same_validator() {
    for fixture in fixtures() {
        let jwks = jwks_json(&fixture.keyring);
        let keys = VerificationKeys::from_public_jwks(&jwks).unwrap();
        assert_eq!(keys.len(), 3, "every public key, and never the HMAC key");
        for jwk in jwks["keys"].as_array().unwrap() {
            let members: Vec<&str> = jwk
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let expected: &[&str] = match jwk["kty"].as_str().unwrap() {
                "OKP" => &["alg", "crv", "kid", "kty", "use", "x"],
                "EC" => &["alg", "crv", "kid", "kty", "use", "x", "y"],
                "RSA" => &["alg", "e", "kid", "kty", "n", "use"],
                other => panic!("unexpected key type {other}"),
            };
            let mut sorted = members.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, expected, "public members only: {jwk}");
        }
        let token = fixture.issue();
        let with_keyring = fixture.validate(&token).unwrap();
        let with_jwks = fixture
            .validator
            .validate(&token, &keys, &fixture.revoked, fixture.now);
        if fixture.algorithm.is_symmetric() {
            assert_eq!(with_jwks, Err(TokenError::UnknownKey));
        } else {
            assert_eq!(with_jwks, Ok(with_keyring), "{:?}", fixture.algorithm);
        }
    }
}

#[test]
fn jwks_keys_keep_their_algorithm_and_refuse_confusion() {
    // A resource server's keys are bound to one algorithm each, exactly like the server's own.
    for fixture in fixtures() {
        let keys = VerificationKeys::from_public_jwks(&jwks_json(&fixture.keyring)).unwrap();
        let payload = fixture.claims().to_string().into_bytes();
        for key in fixture
            .all_keys()
            .filter(|key| !key.algorithm.is_symmetric())
        {
            let header = json!({ "alg": "HS256", "typ": "at+jwt", "kid": key.kid });
            let jwk = published_jwk(&fixture.keyring, &key.kid).unwrap();
            let token = assemble(header.to_string().as_bytes(), &payload, |input| {
                hmac_sha256(jwk.to_string().as_bytes(), input)
            });
            assert_eq!(
                fixture
                    .validator
                    .validate(&token, &keys, &fixture.revoked, fixture.now),
                Err(TokenError::AlgorithmMismatch)
            );
        }
    }
}

#[test]
fn a_good_ed25519_jwk_is_taken_and_an_unknown_kid_is_refused() {
    let fixture = eddsa_fixture();
    let keys =
        VerificationKeys::from_public_jwks(&json!({ "keys": [good_jwk(&fixture)] })).unwrap();
    assert!(KeyLookup::find(&keys, &fixture.signing_key.kid).is_some());
    assert!(KeyLookup::find(&keys, "another-kid").is_none());
    let empty = VerificationKeys::new();
    assert_eq!(
        fixture
            .validator
            .validate(&fixture.issue(), &empty, &fixture.revoked, fixture.now),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn keys_of_another_curve_type_or_use_are_skipped_not_errors() {
    let fixture = eddsa_fixture();
    let mut x25519 = good_jwk(&fixture);
    x25519["crv"] = json!("X25519");
    x25519["kid"] = json!("x25519");
    let p384 = json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"});
    let pss = json!({"kty": "RSA", "kid": "pss", "n": "AQAB", "e": "AQAB", "alg": "PS256"});
    let mut encryption = good_jwk(&fixture);
    encryption["use"] = json!("enc");
    encryption["kid"] = json!("enc");
    let mut other_alg = good_jwk(&fixture);
    other_alg["alg"] = json!("ES256");
    other_alg["kid"] = json!("es");
    let mut no_kid = good_jwk(&fixture);
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut no_alg = good_jwk(&fixture);
    no_alg.as_object_mut().unwrap().remove("alg");
    no_alg["kid"] = json!("no-alg");
    let keys = VerificationKeys::from_public_jwks(&json!({
        "keys": [x25519, p384, pss, encryption, other_alg, no_kid, no_alg, good_jwk(&fixture)]
    }))
    .unwrap();
    assert_eq!(
        keys.kids().collect::<Vec<_>>(),
        ["no-alg", fixture.signing_key.kid.as_str()],
        "only signing keys of a known type and algorithm, with a kid, are taken"
    );
}

#[test]
fn a_jwk_carrying_a_private_key_is_refused() {
    let fixture = eddsa_fixture();
    for member in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        let mut private = good_jwk(&fixture);
        private[member] = json!(b64(&fixture.signing_key.secret));
        assert_eq!(
            VerificationKeys::from_public_jwks(&json!({ "keys": [private] })).unwrap_err(),
            JwksError::PrivateKey {
                kid: fixture.signing_key.kid.clone()
            },
            "{member}"
        );
    }
}

#[test]
fn a_jwk_whose_x_is_not_base64url_is_refused() {
    let fixture = eddsa_fixture();
    let mut bad = good_jwk(&fixture);
    bad["x"] = json!("not base64url!");
    assert!(matches!(
        VerificationKeys::from_public_jwks(&json!({ "keys": [bad] })),
        Err(JwksError::MalformedKey { reason, .. }) if reason.contains("base64url")
    ));
}

#[test]
fn a_jwk_whose_x_has_the_wrong_length_is_refused() {
    let fixture = eddsa_fixture();
    let mut short = good_jwk(&fixture);
    short["x"] = json!(b64(&[7u8; 31]));
    assert!(matches!(
        VerificationKeys::from_public_jwks(&json!({ "keys": [short] })),
        Err(JwksError::MalformedKey { reason, .. }) if reason.contains("32 bytes")
    ));
}

#[test]
fn a_p256_jwk_off_the_curve_is_refused() {
    let fixture = Fixture::new(SigningAlgorithm::Es256);
    let mut jwk = published_jwk(&fixture.keyring, &fixture.signing_key.kid).unwrap();
    let mut y = decode_part(jwk["y"].as_str().unwrap());
    y[31] ^= 1;
    jwk["y"] = json!(b64(&y));
    assert!(matches!(
        VerificationKeys::from_public_jwks(&json!({ "keys": [jwk] })),
        Err(JwksError::MalformedKey { reason, .. }) if reason.contains("P-256")
    ));
}

#[test]
fn an_rsa_jwk_under_2048_bits_or_with_a_bad_exponent_is_refused() {
    let fixture = Fixture::new(SigningAlgorithm::Rs256);
    let good = published_jwk(&fixture.keyring, &fixture.signing_key.kid).unwrap();
    let n = decode_part(good["n"].as_str().unwrap());
    assert_eq!(n.len(), 256, "sessiond generates 2048-bit keys");
    let mut variants = Vec::new();
    let mut short = good.clone();
    short["n"] = json!(b64(&n[..128]));
    variants.push(short);
    let mut leading_zero = good.clone();
    leading_zero["n"] = json!(b64(&[&[0u8][..], &n].concat()));
    variants.push(leading_zero);
    for e in [vec![1u8], vec![2], vec![], vec![1, 0, 0, 0, 0, 1]] {
        let mut bad = good.clone();
        bad["e"] = json!(b64(&e));
        variants.push(bad);
    }
    for jwk in variants {
        assert!(
            matches!(
                VerificationKeys::from_public_jwks(&json!({ "keys": [jwk.clone()] })),
                Err(JwksError::MalformedKey { .. })
            ),
            "{jwk}"
        );
    }
}

#[test]
fn a_document_without_a_keys_array_is_not_a_jwk_set() {
    assert_eq!(
        VerificationKeys::from_public_jwks(&json!({ "kty": "OKP" })).unwrap_err(),
        JwksError::NotAJwkSet
    );
}

#[test]
fn a_session_bound_to_a_dpop_key_gets_tokens_that_carry_its_thumbprint() {
    let jkt = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
    for mut fixture in fixtures() {
        let unbound = fixture.issuer.issue(
            &fixture.keyring,
            &fixture.session,
            fixture.now,
            fixture.expires_at(),
        );
        let claims: Value = serde_json::from_slice(&decode_part(parts(&unbound.token)[1])).unwrap();
        assert!(claims.get("cnf").is_none(), "{claims}");
        assert_eq!(fixture.validate(&unbound.token).unwrap().confirmation, None);

        fixture.session.dpop_jkt = Some(jkt.to_owned());
        let bound = fixture.issuer.issue(
            &fixture.keyring,
            &fixture.session,
            fixture.now,
            fixture.expires_at(),
        );
        let claims: Value = serde_json::from_slice(&decode_part(parts(&bound.token)[1])).unwrap();
        assert_eq!(
            claims["cnf"],
            json!({"jkt": jkt}),
            "{:?}",
            fixture.algorithm
        );
        let validated = fixture.validate(&bound.token).unwrap();
        assert_eq!(validated.confirmation.as_deref(), Some(jkt));
    }
}

#[test]
fn a_cnf_claim_that_is_not_an_object_is_refused() {
    for fixture in fixtures() {
        for cnf in [json!("jkt"), json!(["a"]), json!({"jkt": 5})] {
            let mut claims = fixture.claims();
            claims["cnf"] = cnf.clone();
            let token = fixture.forge(&fixture.header(), &claims);
            assert_eq!(
                fixture.validate(&token),
                Err(TokenError::Malformed),
                "{:?} cnf {cnf}",
                fixture.algorithm
            );
        }
        let mut claims = fixture.claims();
        claims["cnf"] = json!({"x5t#S256": "abc"});
        let token = fixture.forge(&fixture.header(), &claims);
        assert_eq!(fixture.validate(&token).unwrap().confirmation, None);
    }
}
