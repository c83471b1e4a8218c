//! What a resource server pays per token, against what sessiond pays for the same token.
//!
//! All the benchmarks judge one realistic EdDSA token (claims `roles: ["user"]`,
//! `permissions: ["notes:read"]`) with 1,000 other sessions in the revoked set:
//! - `core/validate_keyring`: `AccessTokenValidator::validate` with the server's `Keyring`;
//! - `core/validate_jwks`: the same with `VerificationKeys` parsed from the server's JWK Set;
//! - `core/decode_claims`: decoding the payload into a JSON map alone, which the verifier does
//!   after validation to hand back every claim;
//! - `verifier/verify_cached`: `Verifier::verify_cached`, that is, the same validation plus
//!   the snapshot of the cached key set and the decoding of the claims into `Claims`;
//! - `verifier/verify`: the async `Verifier::verify` with a warm cache (no fetch), driven by
//!   `block_on` on a current-thread runtime, whose own overhead is included.
//!
//! Run with `cargo bench -p sessiond-verifier --bench verify`.

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use sessiond_core::revocation::RevokedSessions;
use sessiond_core::token::{
    AccessTokenIssuer, AccessTokenValidator, Keyring, SigningAlgorithm, StoredKey, ValidationRules,
    VerificationKeys, decode_claims, jwks_json,
};
use sessiond_core::{Device, DeviceId, DeviceType, Session, SessionId, Timestamp, UserId};
use sessiond_verifier::Verifier;

const ISSUER: &str = "https://sessiond.example";
const AUDIENCE: &str = "notes-api";
const OTHER_REVOKED_SESSIONS: usize = 1_000;

fn wall_clock_now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    // Whole seconds, as tokens carry them.
    Timestamp::from_unix_millis(i64::try_from(millis / 1000 * 1000).expect("millis fit"))
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
        access_expires_at: now.plus(Duration::from_secs(3600)),
        revoked_at: None,
        revoke_reason: None,
        dpop_jkt: None,
        unreadable: Vec::new(),
    }
}

fn verify(criterion: &mut Criterion) {
    let now = wall_clock_now();
    // As on a server: every stored key loads, an HMAC one included.
    let keys = vec![
        StoredKey::generate(SigningAlgorithm::EdDsa, now),
        StoredKey::generate(SigningAlgorithm::Hs256, now),
    ];
    let keyring = Keyring::from_stored(&keys, SigningAlgorithm::EdDsa).expect("a keyring");
    let issuer = AccessTokenIssuer {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        client_id: "notes-web".into(),
    };
    // An hour of validity, so the token outlives the whole run.
    let token = issuer
        .issue(
            &keyring,
            &session(now),
            now,
            now.plus(Duration::from_secs(3600)),
        )
        .token;
    eprintln!("EdDSA token: {} bytes", token.len());

    let validator = AccessTokenValidator::new(ValidationRules {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway_seconds: 5,
    });
    let revoked = RevokedSessions::new();
    let jwks = jwks_json(&keyring);
    let verification_keys = VerificationKeys::from_public_jwks(&jwks).expect("the server's JWKS");
    let verifier = Verifier::builder("http://127.0.0.1:9/.well-known/jwks.json")
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .initial_keys(VerificationKeys::from_public_jwks(&jwks).expect("the server's JWKS"))
        .build()
        .expect("a verifier");
    for _ in 0..OTHER_REVOKED_SESSIONS {
        let session = SessionId::generate();
        let until = now.plus(Duration::from_secs(3600));
        revoked.insert(session, until);
        verifier.revoke_session(session, until);
    }
    validator
        .validate(&token, &keyring, &revoked, now)
        .expect("validates with the keyring");
    validator
        .validate(&token, &verification_keys, &revoked, now)
        .expect("validates with the JWKS");
    verifier
        .verify_cached(&token)
        .expect("the verifier accepts it");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime
        .block_on(verifier.verify(&token))
        .expect("the async path accepts it without a fetch");

    criterion.bench_function("core/validate_keyring", |bencher| {
        bencher.iter(|| validator.validate(black_box(&token), &keyring, &revoked, now));
    });
    criterion.bench_function("core/validate_jwks", |bencher| {
        bencher.iter(|| validator.validate(black_box(&token), &verification_keys, &revoked, now));
    });
    criterion.bench_function("core/decode_claims", |bencher| {
        bencher.iter(|| decode_claims(black_box(&token)));
    });
    criterion.bench_function("verifier/verify_cached", |bencher| {
        bencher.iter(|| verifier.verify_cached(black_box(&token)));
    });
    criterion.bench_function("verifier/verify", |bencher| {
        bencher.iter(|| runtime.block_on(verifier.verify(black_box(&token))));
    });
    assert_eq!(verifier.stats().fetches, 0, "the benchmark never fetched");
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = verify
}
criterion_main!(benches);
