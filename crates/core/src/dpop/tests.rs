//! Proofs signed independently of sessiond's own code (p256, ed25519-dalek, AWS-LC RSA), then
//! checked by [`verify_proof`]: every rule of the module documentation, one test or more each.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};

use super::*;

const URL: &str = "https://sessions.example.com/v1/sessions/refresh";
const NOW: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_unix_millis(NOW * 1000)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A client key of one of the three kinds, able to sign anything.
enum ClientKey {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_dalek::SigningKey),
    Rs256(aws_lc_rs::signature::RsaKeyPair),
}

impl ClientKey {
    fn es256(seed: u8) -> Self {
        let mut scalar = [seed; 32];
        scalar[0] = 1;
        Self::Es256(p256::ecdsa::SigningKey::from_slice(&scalar).unwrap())
    }

    fn ed25519(seed: u8) -> Self {
        Self::EdDsa(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    fn rs256() -> Self {
        let stored = crate::token::StoredKey::generate(SigningAlgorithm::Rs256, now());
        Self::Rs256(aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&stored.secret).unwrap())
    }

    fn alg(&self) -> &'static str {
        match self {
            Self::Es256(_) => "ES256",
            Self::EdDsa(_) => "EdDSA",
            Self::Rs256(_) => "RS256",
        }
    }

    fn jwk(&self) -> Value {
        match self {
            Self::Es256(key) => {
                let point = key.verifying_key().to_sec1_bytes();
                json!({"kty": "EC", "crv": "P-256",
                       "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            Self::EdDsa(key) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.verifying_key().as_bytes())})
            }
            Self::Rs256(pair) => {
                use aws_lc_rs::signature::KeyPair as _;
                let public = pair.public_key();
                let n = public.modulus().big_endian_without_leading_zero();
                let e = public.exponent().big_endian_without_leading_zero();
                json!({"kty": "RSA", "n": b64(n), "e": b64(e)})
            }
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Self::Es256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(input);
                signature.to_bytes().to_vec()
            }
            Self::EdDsa(key) => key.sign(input).to_bytes().to_vec(),
            Self::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    input,
                    &mut signature,
                )
                .unwrap();
                signature
            }
        }
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk()})
    }

    fn thumbprint(&self) -> String {
        ProofKey::from_jwk(&self.jwk())
            .unwrap()
            .thumbprint()
            .to_owned()
    }

    /// A compact JWS of `header` and `claims`, signed by this key.
    fn jws(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }

    fn proof(&self, claims: &Value) -> String {
        self.jws(&self.header(), claims)
    }
}

fn claims() -> Value {
    json!({"jti": "e1j3V_bKic8-LAEB", "htm": "POST", "htu": URL, "iat": NOW})
}

fn with(mut value: Value, name: &str, member: Value) -> Value {
    value[name] = member;
    value
}

fn without(mut value: Value, name: &str) -> Value {
    value.as_object_mut().unwrap().remove(name);
    value
}

fn refresh() -> ProofCheck<'static> {
    ProofCheck {
        method: "POST",
        url: URL,
        access_token: None,
        nonce: None,
    }
}

fn verify(proof: &str, check: &ProofCheck<'_>) -> Result<VerifiedProof, DpopError> {
    verify_proof(proof, check, &DpopRules::default(), now())
}

#[test]
fn a_proof_of_each_algorithm_verifies_and_names_its_keys_thumbprint() {
    for key in [
        ClientKey::es256(7),
        ClientKey::ed25519(7),
        ClientKey::rs256(),
    ] {
        let verified = verify(&key.proof(&claims()), &refresh())
            .unwrap_or_else(|error| panic!("{}: {error}", key.alg()));
        assert_eq!(verified.jkt, key.thumbprint(), "{}", key.alg());
        assert!(is_thumbprint(&verified.jkt));
        assert_eq!(
            verified.replay_until,
            Timestamp::from_unix_millis((NOW + 65) * 1000)
        );
    }
}

#[test]
fn the_thumbprint_is_rfc_7638s() {
    // RFC 7638 §3.1.
    let jwk = json!({"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29", "n": concat!(
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B",
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F",
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4",
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    )});
    let key = ProofKey::from_jwk(&jwk).unwrap();
    assert_eq!(
        key.thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    assert_eq!(key.algorithm(), SigningAlgorithm::Rs256);
    let again = ProofKey::from_jwk(&key.to_jwk()).unwrap();
    assert_eq!(again.thumbprint(), key.thumbprint());
}

#[test]
fn the_replay_id_is_per_key_and_jti() {
    let key = ClientKey::es256(7);
    let first = verify(&key.proof(&claims()), &refresh()).unwrap();
    let same = verify(&key.proof(&claims()), &refresh()).unwrap();
    assert_eq!(
        first.replay_id, same.replay_id,
        "a re-signed proof is the same proof"
    );
    let other_jti = verify(&key.proof(&with(claims(), "jti", json!("x"))), &refresh()).unwrap();
    assert_ne!(first.replay_id, other_jti.replay_id);
    let other_key = ClientKey::es256(8);
    let other = verify(&other_key.proof(&claims()), &refresh()).unwrap();
    assert_ne!(first.replay_id, other.replay_id);
}

#[test]
fn an_es256_proof_with_a_high_s_verifies() {
    // WebCrypto does not normalise S; a client's proof is accepted either way.
    let key = ClientKey::es256(9);
    let proof = key.proof(&claims());
    let (input, signature) = proof.rsplit_once('.').unwrap();
    let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    // S → n - S: the other valid signature of the same input.
    let mut borrow = 0u16;
    for index in (0..32).rev() {
        let difference = u16::from(crate::token::keys::P256_ORDER[index])
            .wrapping_sub(u16::from(signature[32 + index]))
            .wrapping_sub(borrow);
        signature[32 + index] = difference.to_be_bytes()[1];
        borrow = u16::from(difference > 0xff);
    }
    let twin = format!("{input}.{}", b64(&signature));
    assert_ne!(twin, proof);
    assert_eq!(
        verify(&twin, &refresh()).unwrap().jkt,
        verify(&proof, &refresh()).unwrap().jkt
    );
}

#[test]
fn the_header_must_be_dpop_jwt_with_an_asymmetric_alg_of_its_key() {
    let key = ClientKey::es256(7);
    let cases = [
        (without(key.header(), "typ"), DpopError::WrongType),
        (
            with(key.header(), "typ", json!("JWT")),
            DpopError::WrongType,
        ),
        (
            with(key.header(), "typ", json!("at+jwt")),
            DpopError::WrongType,
        ),
        (
            with(key.header(), "alg", json!("none")),
            DpopError::UnsupportedAlgorithm,
        ),
        (
            with(key.header(), "alg", json!("HS256")),
            DpopError::UnsupportedAlgorithm,
        ),
        (
            with(key.header(), "alg", json!("RS256")),
            DpopError::UnsupportedAlgorithm,
        ),
        (
            with(key.header(), "alg", json!("EdDSA")),
            DpopError::UnsupportedAlgorithm,
        ),
        (
            with(key.header(), "alg", json!("es256")),
            DpopError::UnsupportedAlgorithm,
        ),
        (
            without(key.header(), "alg"),
            DpopError::UnsupportedAlgorithm,
        ),
        (without(key.header(), "jwk"), DpopError::BadKey),
        (with(key.header(), "jwk", json!("a key")), DpopError::BadKey),
        (
            with(key.header(), "kid", json!("k")),
            DpopError::UnsupportedHeader,
        ),
        (
            with(key.header(), "jku", json!("https://evil.example/jwks")),
            DpopError::UnsupportedHeader,
        ),
        (
            with(key.header(), "crit", json!(["exp"])),
            DpopError::UnsupportedHeader,
        ),
        (
            with(key.header(), "x5c", json!([])),
            DpopError::UnsupportedHeader,
        ),
    ];
    for (header, expected) in cases {
        let proof = key.jws(&header, &claims());
        assert_eq!(verify(&proof, &refresh()), Err(expected), "{header}");
    }
}

#[test]
fn an_unsigned_or_hmac_proof_is_refused() {
    let key = ClientKey::es256(7);
    let none = with(key.header(), "alg", json!("none"));
    let unsigned = format!(
        "{}.{}.",
        b64(none.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    assert_eq!(
        verify(&unsigned, &refresh()),
        Err(DpopError::UnsupportedAlgorithm)
    );
    // An HMAC "keyed" with the public JWK's bytes: the classic confusion.
    let hs = json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}});
    let input = format!(
        "{}.{}",
        b64(hs.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let tag = crate::primitives::hmac_sha256(b"secret", input.as_bytes());
    let proof = format!("{input}.{}", b64(&tag));
    assert_eq!(
        verify(&proof, &refresh()),
        Err(DpopError::UnsupportedAlgorithm)
    );
}

#[test]
fn a_key_with_private_members_is_refused() {
    let key = ClientKey::es256(7);
    for member in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        let mut jwk = key.jwk();
        jwk[member] = json!("AQAB");
        let header = with(key.header(), "jwk", jwk);
        let proof = key.jws(&header, &claims());
        assert_eq!(
            verify(&proof, &refresh()),
            Err(DpopError::PrivateKey),
            "{member}"
        );
    }
}

#[test]
fn a_key_that_is_malformed_or_of_another_type_is_refused() {
    let key = ClientKey::es256(7);
    let bad_keys = [
        json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
        json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])}),
        json!({"kty": "EC", "crv": "P-256", "x": "!!", "y": "!!"}),
        json!({"kty": "OKP", "crv": "X25519", "x": b64(&[1; 32])}),
        json!({"kty": "RSA", "n": b64(&[0xc5; 128]), "e": "AQAB"}),
        json!({"kty": "oct"}),
        json!({}),
    ];
    for jwk in bad_keys {
        let proof = key.jws(&with(key.header(), "jwk", jwk.clone()), &claims());
        assert_eq!(verify(&proof, &refresh()), Err(DpopError::BadKey), "{jwk}");
    }
    let mut named = key.jwk();
    named["alg"] = json!("RS256");
    let proof = key.jws(&with(key.header(), "jwk", named), &claims());
    assert_eq!(
        verify(&proof, &refresh()),
        Err(DpopError::UnsupportedAlgorithm)
    );
}

#[test]
fn a_proof_signed_by_another_key_than_its_own_is_refused() {
    let key = ClientKey::es256(7);
    let thief = ClientKey::es256(8);
    let proof = thief.jws(&key.header(), &claims());
    assert_eq!(verify(&proof, &refresh()), Err(DpopError::BadSignature));

    let mut tampered = key.proof(&claims());
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(verify(&tampered, &refresh()), Err(DpopError::BadSignature));
}

#[test]
fn a_proof_that_is_not_a_compact_jws_is_refused() {
    let key = ClientKey::es256(7);
    let proof = key.proof(&claims());
    let parts: Vec<&str> = proof.split('.').collect();
    let cases = [
        String::new(),
        "a.b".to_owned(),
        format!("{proof}.extra"),
        format!("{}.{}.!!", parts[0], parts[1]),
        format!("{}.{}.{}", parts[0], b64(b"[1,2]"), parts[2]),
        format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
        "x".repeat(MAX_PROOF_LEN + 1),
    ];
    for case in cases {
        assert!(verify(&case, &refresh()).is_err(), "{case:.40}");
    }
}

#[test]
fn the_method_and_url_must_be_the_requests() {
    let key = ClientKey::es256(7);
    let wrong_method = key.proof(&with(claims(), "htm", json!("GET")));
    assert_eq!(
        verify(&wrong_method, &refresh()),
        Err(DpopError::WrongMethod)
    );
    let lower_method = key.proof(&with(claims(), "htm", json!("post")));
    assert_eq!(
        verify(&lower_method, &refresh()),
        Err(DpopError::WrongMethod)
    );
    for url in [
        "https://sessions.example.com/oauth/token",
        "https://sessions.example.com/v1/sessions/refresh/",
        "http://sessions.example.com/v1/sessions/refresh",
        "https://evil.example/v1/sessions/refresh",
        "https://sessions.example.com:8443/v1/sessions/refresh",
        "https://user@sessions.example.com/v1/sessions/refresh",
        "sessions.example.com/v1/sessions/refresh",
        "",
    ] {
        let proof = key.proof(&with(claims(), "htu", json!(url)));
        assert_eq!(
            verify(&proof, &refresh()),
            Err(DpopError::WrongUrl),
            "{url}"
        );
    }
    assert_eq!(
        verify(&key.proof(&without(claims(), "htm")), &refresh()),
        Err(DpopError::WrongMethod)
    );
    assert_eq!(
        verify(&key.proof(&without(claims(), "htu")), &refresh()),
        Err(DpopError::WrongUrl)
    );
}

#[test]
fn the_url_compares_after_normalisation_without_query_or_fragment() {
    let key = ClientKey::es256(7);
    for url in [
        "HTTPS://Sessions.Example.COM/v1/sessions/refresh",
        "https://sessions.example.com:443/v1/sessions/refresh",
        "https://sessions.example.com/v1/sessions/refresh?x=1",
        "https://sessions.example.com/v1/sessions/refresh#top",
    ] {
        let proof = key.proof(&with(claims(), "htu", json!(url)));
        verify(&proof, &refresh()).unwrap_or_else(|error| panic!("{url}: {error}"));
    }
    let origin_only = ProofCheck {
        url: "http://127.0.0.1:8080",
        ..refresh()
    };
    let proof = key.proof(&with(claims(), "htu", json!("http://127.0.0.1:8080/")));
    verify(&proof, &origin_only).unwrap();
}

#[test]
fn iat_must_be_recent_and_not_ahead() {
    let key = ClientKey::es256(7);
    let rules = DpopRules::default();
    for (iat, expected) in [
        (json!(NOW - 3600), Err(DpopError::Stale)),
        (json!(NOW - 66), Err(DpopError::Stale)),
        (json!(NOW - 65), Ok(())),
        (json!(NOW + 5), Ok(())),
        (json!(NOW + 6), Err(DpopError::FromTheFuture)),
        (json!(NOW as f64 + 0.5), Ok(())),
        (json!("1800000000"), Err(DpopError::Malformed)),
        (json!(null), Err(DpopError::Malformed)),
        (json!(f64::MAX), Err(DpopError::Malformed)),
    ] {
        let proof = key.proof(&with(claims(), "iat", iat.clone()));
        let result = verify_proof(&proof, &refresh(), &rules, now()).map(|_| ());
        assert_eq!(result, expected, "iat {iat}");
    }
    let strict = DpopRules {
        max_age_seconds: 10,
        leeway_seconds: 0,
    };
    let proof = key.proof(&with(claims(), "iat", json!(NOW - 11)));
    assert_eq!(
        verify_proof(&proof, &refresh(), &strict, now()),
        Err(DpopError::Stale)
    );
}

#[test]
fn jti_must_be_a_short_non_empty_string() {
    let key = ClientKey::es256(7);
    for jti in [
        json!(""),
        json!(42),
        json!(null),
        json!("j".repeat(MAX_JTI_LEN + 1)),
    ] {
        let proof = key.proof(&with(claims(), "jti", jti.clone()));
        assert_eq!(
            verify(&proof, &refresh()),
            Err(DpopError::MissingJti),
            "{jti:.20}"
        );
    }
    let proof = key.proof(&without(claims(), "jti"));
    assert_eq!(verify(&proof, &refresh()), Err(DpopError::MissingJti));
    let proof = key.proof(&with(claims(), "jti", json!("j".repeat(MAX_JTI_LEN))));
    verify(&proof, &refresh()).unwrap();
}

#[test]
fn a_resource_request_needs_the_hash_of_its_access_token() {
    let key = ClientKey::ed25519(3);
    let token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln";
    let check = ProofCheck {
        method: "GET",
        url: "https://sessions.example.com/v1/sessions/current",
        access_token: Some(token),
        nonce: None,
    };
    let base = json!({"jti": "r1", "htm": "GET",
                      "htu": "https://sessions.example.com/v1/sessions/current", "iat": NOW});
    let good = key.proof(&with(base.clone(), "ath", json!(access_token_hash(token))));
    verify(&good, &check).unwrap();
    assert_eq!(
        verify(&key.proof(&base), &check),
        Err(DpopError::WrongAccessTokenHash)
    );
    let other = key.proof(&with(base, "ath", json!(access_token_hash("another"))));
    assert_eq!(verify(&other, &check), Err(DpopError::WrongAccessTokenHash));
    // The hash of RFC 9449 §7.1's example token.
    assert_eq!(
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

#[test]
fn a_required_nonce_must_be_one_recently_minted() {
    let nonces = NonceKey::new(&[5; 32]);
    let key = ClientKey::es256(7);
    let check = ProofCheck {
        nonce: Some(&nonces),
        ..refresh()
    };
    assert_eq!(
        verify(&key.proof(&claims()), &check),
        Err(DpopError::UseNonce)
    );
    assert!(DpopError::UseNonce.is_use_nonce());
    let fresh = nonces.mint(now());
    verify(&key.proof(&with(claims(), "nonce", json!(fresh))), &check).unwrap();

    let previous_period = nonces.mint(Timestamp::from_unix_millis((NOW - 300) * 1000));
    verify(
        &key.proof(&with(claims(), "nonce", json!(previous_period))),
        &check,
    )
    .unwrap();
    let old = nonces.mint(Timestamp::from_unix_millis((NOW - 600) * 1000));
    let forged = NonceKey::new(&[6; 32]).mint(now());
    for nonce in [
        json!(old),
        json!(forged),
        json!("nonce"),
        json!(""),
        json!(7),
    ] {
        let proof = key.proof(&with(claims(), "nonce", nonce.clone()));
        assert_eq!(verify(&proof, &check), Err(DpopError::UseNonce), "{nonce}");
    }
    let other_instance = NonceKey::new(&[5; 32]);
    assert!(other_instance.accepts(&fresh, now()));
}

#[test]
fn a_signed_jwt_with_its_key_in_a_claim_or_already_known_verifies() {
    let key = ClientKey::es256(7);
    let header = json!({"typ": "dbsc+jwt", "alg": "ES256"});
    let registration = json!({"jti": "challenge", "key": key.jwk()});
    let jwt = key.jws(&header, &registration);
    let signed = verify_signed_jwt(&jwt, "dbsc+jwt", KeySource::Claim("key")).unwrap();
    let embedded = signed.embedded_key.unwrap();
    assert_eq!(embedded.thumbprint(), key.thumbprint());
    assert_eq!(signed.claims["jti"], "challenge");

    let refresh_jwt = key.jws(&header, &json!({"jti": "next"}));
    let known = verify_signed_jwt(&refresh_jwt, "dbsc+jwt", KeySource::Known(&embedded)).unwrap();
    assert!(known.embedded_key.is_none());

    let thief = ClientKey::es256(8);
    let stolen = thief.jws(&header, &json!({"jti": "next"}));
    assert_eq!(
        verify_signed_jwt(&stolen, "dbsc+jwt", KeySource::Known(&embedded)).unwrap_err(),
        DpopError::BadSignature
    );
    assert_eq!(
        verify_signed_jwt(&refresh_jwt, "dbsc+jwt", KeySource::Claim("key")).unwrap_err(),
        DpopError::BadKey
    );
    let rsa_header = json!({"typ": "dbsc+jwt", "alg": "RS256"});
    let confused = key.jws(&rsa_header, &json!({"jti": "next"}));
    assert_eq!(
        verify_signed_jwt(&confused, "dbsc+jwt", KeySource::Known(&embedded)).unwrap_err(),
        DpopError::UnsupportedAlgorithm
    );
}

#[test]
fn thumbprints_have_one_shape() {
    assert!(is_thumbprint("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"));
    for text in [
        "",
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9X",
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs=",
        "NzbLsXh8uDCcd+6MNwXF4W/7noWXFZAfHkxZsRGC9Xs",
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xt",
    ] {
        assert!(!is_thumbprint(text), "{text}");
    }
}

#[test]
fn every_error_has_a_distinct_reason() {
    let all = [
        DpopError::Malformed,
        DpopError::WrongType,
        DpopError::UnsupportedAlgorithm,
        DpopError::BadKey,
        DpopError::PrivateKey,
        DpopError::UnsupportedHeader,
        DpopError::BadSignature,
        DpopError::WrongMethod,
        DpopError::WrongUrl,
        DpopError::Stale,
        DpopError::FromTheFuture,
        DpopError::MissingJti,
        DpopError::WrongAccessTokenHash,
        DpopError::WrongKey,
        DpopError::Replayed,
        DpopError::UseNonce,
    ];
    let reasons: std::collections::HashSet<_> = all.iter().map(|error| error.reason()).collect();
    assert_eq!(reasons.len(), all.len());
}
