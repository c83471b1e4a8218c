//! How much access-token validation costs beyond the signature check it cannot avoid.
//!
//! For each algorithm (EdDSA, ES256, RS256, HS256), one benchmark runs `AccessTokenValidator::validate` on a realistic token
//! (claims `roles: ["user"]`, `permissions: ["notes:read"]`) and another runs only the bare
//! signature check over the same signing input and signature bytes, decoded beforehand. The
//! difference is what splitting, base64, JSON, the claim checks and the revocation lookup add.
//! The `jsonwebtoken` crate is not a dependency, so there is no comparison with it here.
//!
//! Run with `cargo bench -p sessiond-core --bench validation`.

use std::hint::black_box;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::Verifier as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sessiond_core::revocation::RevokedSessions;
use sessiond_core::token::{
    AccessTokenIssuer, AccessTokenValidator, Keyring, SigningAlgorithm, StoredKey, ValidationRules,
};
use sessiond_core::{Device, DeviceId, DeviceType, Session, SessionId, Timestamp, UserId};
use sha2::Sha256;

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

fn signing_secret(setup: &Setup) -> &[u8] {
    &setup
        .keys
        .iter()
        .find(|key| key.kid == setup.keyring.signing_kid())
        .expect("the signing key is among the stored keys")
        .secret
}

fn eddsa(criterion: &mut Criterion) {
    let setup = setup(SigningAlgorithm::EdDsa);
    eprintln!("EdDSA token: {} bytes", setup.token.len());
    validate(criterion, "eddsa/validate", &setup);

    let (signing_input, signature) = split(&setup.token);
    let signature_bytes: [u8; 64] = signature.try_into().expect("a 64-byte signature");
    let signature = ed25519_dalek::Signature::from_bytes(&signature_bytes);
    let seed: [u8; 32] = signing_secret(&setup).try_into().expect("a 32-byte seed");
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    public
        .verify(signing_input.as_bytes(), &signature)
        .expect("the bare signature verifies");
    criterion.bench_function("eddsa/bare_verify", |bencher| {
        bencher.iter(|| public.verify(black_box(signing_input.as_bytes()), black_box(&signature)));
    });
}

fn es256(criterion: &mut Criterion) {
    let setup = setup(SigningAlgorithm::Es256);
    eprintln!("ES256 token: {} bytes", setup.token.len());
    validate(criterion, "es256/validate", &setup);

    let (signing_input, signature) = split(&setup.token);
    let signature = p256::ecdsa::Signature::from_slice(&signature).expect("r || s");
    let public = *p256::ecdsa::SigningKey::from_slice(signing_secret(&setup))
        .expect("a P-256 scalar")
        .verifying_key();
    public
        .verify(signing_input.as_bytes(), &signature)
        .expect("the bare signature verifies");
    criterion.bench_function("es256/bare_verify", |bencher| {
        bencher.iter(|| public.verify(black_box(signing_input.as_bytes()), black_box(&signature)));
    });
}

fn rs256(criterion: &mut Criterion) {
    let setup = setup(SigningAlgorithm::Rs256);
    eprintln!("RS256 token: {} bytes", setup.token.len());
    validate(criterion, "rs256/validate", &setup);

    let (signing_input, signature) = split(&setup.token);
    let pair =
        ring::signature::RsaKeyPair::from_pkcs8(signing_secret(&setup)).expect("an RSA PKCS#8 key");
    let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
    let verify = |input: &[u8], signature: &[u8]| {
        public.verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            input,
            signature,
        )
    };
    verify(signing_input.as_bytes(), &signature).expect("the bare signature verifies");
    criterion.bench_function("rs256/bare_verify", |bencher| {
        bencher.iter(|| verify(black_box(signing_input.as_bytes()), black_box(&signature)));
    });
}

fn hs256(criterion: &mut Criterion) {
    let setup = setup(SigningAlgorithm::Hs256);
    eprintln!("HS256 token: {} bytes", setup.token.len());
    validate(criterion, "hs256/validate", &setup);

    let (signing_input, signature) = split(&setup.token);
    let keyed =
        Hmac::<Sha256>::new_from_slice(signing_secret(&setup)).expect("HMAC takes any key length");
    let verify = |input: &[u8], tag: &[u8]| {
        let mut mac = keyed.clone();
        mac.update(input);
        mac.verify_slice(tag)
    };
    verify(signing_input.as_bytes(), &signature).expect("the bare HMAC verifies");
    criterion.bench_function("hs256/bare_hmac", |bencher| {
        bencher.iter(|| verify(black_box(signing_input.as_bytes()), black_box(&signature)));
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
