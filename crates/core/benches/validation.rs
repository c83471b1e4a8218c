//! How much access-token validation costs beyond the signature check it cannot avoid.
//!
//! For each algorithm (EdDSA, ES256, RS256, HS256), one benchmark runs `AccessTokenValidator::validate` on a realistic token
//! (claims `roles: ["user"]`, `permissions: ["notes:read"]`) and another runs only the bare
//! signature check of the same backend (AWS-LC) over the same signing input and signature
//! bytes, decoded beforehand, with the public key parsed beforehand as the keyring parses it. The
//! difference is what splitting, base64, JSON, the claim checks and the revocation lookup add.
//! A third, `{alg}/sign`, issues one token with the same session: the signing cost every
//! session creation and every refresh pays.
//! The `jsonwebtoken` crate is not a dependency, so there is no comparison with it here.
//!
//! Run with `cargo bench -p sessiond-core --bench validation`.

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use sessiond_core::revocation::RevokedSessions;
use sessiond_core::token::{
    AccessTokenIssuer, AccessTokenValidator, Keyring, SigningAlgorithm, StoredKey, ValidationRules,
};
use sessiond_core::{Device, DeviceId, DeviceType, Session, SessionId, Timestamp, UserId};

const ISSUER: &str = "https://sessiond.example";
const AUDIENCE: &str = "notes-api";
/// Sessions revoked but whose tokens may still circulate: the lookup runs against a populated
/// set, as it would on a busy server.
const OTHER_REVOKED_SESSIONS: usize = 1_000;

/// Everything one algorithm's benchmarks share: a keyring, a token, and what validates it.
struct Setup {
    keys: Vec<StoredKey>,
    keyring: Keyring,
    validator: AccessTokenValidator,
    revoked: RevokedSessions,
    token: String,
    now: Timestamp,
    issuer: AccessTokenIssuer,
    session: Session,
}

fn session(now: Timestamp) -> Session {
    let mut claims = Map::new();
    claims.insert("roles".into(), json!(["user"]));
    claims.insert("permissions".into(), json!(["notes:read"]));
    Session {
        id: SessionId::generate(),
        user_id: UserId::from_trusted("user-8f14e45f-ceea-467f-a8f9-c5b0e5e4b2a1".into()),
        tenant_id: None,
        device: Device {
            id: DeviceId::from_trusted("device-1".into()),
            name: None,
            device_type: DeviceType::Desktop,
            browser: Some("Firefox".into()),
            os: Some("Linux".into()),
            trusted: false,
        },
        ip: None,
        user_agent: None,
        claims,
        metadata: Map::<String, Value>::new(),
        created_at: now,
        last_active_at: now,
        idle_expires_at: now.plus(Duration::from_secs(7 * 24 * 3600)),
        expires_at: now.plus(Duration::from_secs(30 * 24 * 3600)),
        access_expires_at: now.plus(Duration::from_secs(15 * 60)),
        revoked_at: None,
        revoke_reason: None,
        unreadable: Vec::new(),
    }
}

fn setup(algorithm: SigningAlgorithm) -> Setup {
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    // A server loads every stored key, so the keyring also holds one of every other algorithm.
    let keys: Vec<StoredKey> = SigningAlgorithm::ALL
        .into_iter()
        .map(|algorithm| StoredKey::generate(algorithm, now))
        .collect();
    let keyring = Keyring::from_stored(&keys, algorithm).expect("a keyring of fresh keys");
    let issuer = AccessTokenIssuer {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        client_id: "notes-web".into(),
    };
    let session = session(now);
    let token = issuer
        .issue(
            &keyring,
            &session,
            now,
            now.plus(Duration::from_secs(15 * 60)),
        )
        .token;
    let validator = AccessTokenValidator::new(ValidationRules {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway_seconds: 5,
    });
    let revoked = RevokedSessions::new();
    for _ in 0..OTHER_REVOKED_SESSIONS {
        revoked.insert(SessionId::generate(), now.plus(Duration::from_secs(900)));
    }
    let validated = validator
        .validate(&token, &keyring, &revoked, now)
        .expect("the benchmark token validates");
    assert_eq!(validated.session_id, session.id);
    Setup {
        keys,
        keyring,
        validator,
        revoked,
        token,
        now,
        issuer,
        session,
    }
}

/// The signing input and the decoded signature of a compact token.
fn split(token: &str) -> (&str, Vec<u8>) {
    let (signing_input, signature) = token.rsplit_once('.').expect("a compact token");
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("a base64url signature");
    (signing_input, signature)
}

fn validate(criterion: &mut Criterion, name: &str, setup: &Setup) {
    let algorithm = name.split('/').next().expect("an algorithm prefix");
    criterion.bench_function(&format!("{algorithm}/sign"), |bencher| {
        let expires_at = setup.now.plus(Duration::from_secs(15 * 60));
        bencher.iter(|| {
            setup.issuer.issue(
                &setup.keyring,
                black_box(&setup.session),
                setup.now,
                expires_at,
            )
        });
    });
    criterion.bench_function(name, |bencher| {
        bencher.iter(|| {
            setup.validator.validate(
                black_box(&setup.token),
                &setup.keyring,
                &setup.revoked,
                setup.now,
            )
        });
    });
}

/// The signing key's public JWK, as the server publishes it.
fn public_jwk(setup: &Setup) -> Value {
    setup
        .keyring
        .find(setup.keyring.signing_kid())
        .and_then(|key| key.public_jwk())
        .expect("an asymmetric signing key has a public JWK")
}

fn member(jwk: &Value, name: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(jwk[name].as_str().expect("a string member"))
        .expect("base64url")
}

/// Benchmarks the bare check of `signature` over the token's signing input with `public`.
fn bare_verify(criterion: &mut Criterion, name: &str, setup: &Setup, public: &ParsedPublicKey) {
    let (signing_input, signature) = split(&setup.token);
    public
        .verify_sig(signing_input.as_bytes(), &signature)
        .expect("the bare signature verifies");
    criterion.bench_function(name, |bencher| {
        bencher
            .iter(|| public.verify_sig(black_box(signing_input.as_bytes()), black_box(&signature)));
    });
}

fn eddsa(criterion: &mut Criterion) {
    let setup = setup(SigningAlgorithm::EdDsa);
    eprintln!("EdDSA token: {} bytes", setup.token.len());
    validate(criterion, "eddsa/validate", &setup);
    let public = ParsedPublicKey::new(&ED25519, member(&public_jwk(&setup), "x"))
        .expect("an Ed25519 public key");
    bare_verify(criterion, "eddsa/bare_verify", &setup, &public);
}

fn es256(criterion: &mut Criterion) {
    let setup = setup(SigningAlgorithm::Es256);
    eprintln!("ES256 token: {} bytes", setup.token.len());
    validate(criterion, "es256/validate", &setup);
    let jwk = public_jwk(&setup);
    let mut point = vec![4u8];
    point.extend(member(&jwk, "x"));
    point.extend(member(&jwk, "y"));
    let public = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).expect("a P-256 public key");
    bare_verify(criterion, "es256/bare_verify", &setup, &public);
}

fn rs256(criterion: &mut Criterion) {
    let setup = setup(SigningAlgorithm::Rs256);
    eprintln!("RS256 token: {} bytes", setup.token.len());
    validate(criterion, "rs256/validate", &setup);
    let jwk = public_jwk(&setup);
    let public = aws_lc_rs::signature::RsaPublicKeyComponents {
        n: member(&jwk, "n"),
        e: member(&jwk, "e"),
    }
    .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
    .expect("an RSA public key");
    bare_verify(criterion, "rs256/bare_verify", &setup, &public);
}

fn hs256(criterion: &mut Criterion) {
    let setup = setup(SigningAlgorithm::Hs256);
    eprintln!("HS256 token: {} bytes", setup.token.len());
    validate(criterion, "hs256/validate", &setup);

    let (signing_input, signature) = split(&setup.token);
    let secret = &setup
        .keys
        .iter()
        .find(|key| key.kid == setup.keyring.signing_kid())
        .expect("the signing key is among the stored keys")
        .secret;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    aws_lc_rs::hmac::verify(&key, signing_input.as_bytes(), &signature)
        .expect("the bare HMAC verifies");
    criterion.bench_function("hs256/bare_hmac", |bencher| {
        bencher.iter(|| {
            aws_lc_rs::hmac::verify(
                &key,
                black_box(signing_input.as_bytes()),
                black_box(&signature),
            )
        });
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = eddsa, es256, rs256, hs256
}
criterion_main!(benches);
