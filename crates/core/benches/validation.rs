//! How much access-token validation costs beyond the signature check it cannot avoid.
//!
//! For each algorithm (EdDSA, ES256, RS256, HS256), one benchmark runs `AccessTokenValidator::validate` on a realistic token
//! (claims `roles: ["user"]`, `permissions: ["notes:read"]`) and another runs only the bare
//! signature check of the same backend (AWS-LC) over the same signing input and signature
//! bytes, decoded beforehand, with the public key parsed beforehand as the keyring parses it. The
//! difference is what splitting, base64, JSON, the claim checks and the revocation lookup add.
//! A third, `{alg}/sign`, issues one token with the same session: the signing cost every
//! session creation and every refresh pays. Last, `summary` prints one table: per algorithm the
//! bare check and the full validation timed in alternating batches, their ratio, and the
//! signing cost.
//! The `jsonwebtoken` crate is not a dependency, so there is no comparison with it here.
//!
//! Run with `cargo bench -p sessiond-core --bench validation`.

mod fixtures;

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use sessiond_core::revocation::RevokedSessions;
use sessiond_core::token::{
    AccessTokenIssuer, AccessTokenValidator, Keyring, SigningAlgorithm, StoredKey, ValidationRules,
};
use sessiond_core::{Session, SessionId, Timestamp};

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
    let session = fixtures::session(now);
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

/// The same backend's check of a signature alone: the public key parsed (or the HMAC key
/// made) beforehand, as the keyring does.
enum Bare {
    Public(ParsedPublicKey),
    Hmac(Box<aws_lc_rs::hmac::Key>),
}

impl Bare {
    fn of(setup: &Setup, algorithm: SigningAlgorithm) -> Self {
        match algorithm {
            SigningAlgorithm::EdDsa => Self::Public(
                ParsedPublicKey::new(&ED25519, member(&public_jwk(setup), "x"))
                    .expect("an Ed25519 public key"),
            ),
            SigningAlgorithm::Es256 => {
                let jwk = public_jwk(setup);
                let mut point = vec![4u8];
                point.extend(member(&jwk, "x"));
                point.extend(member(&jwk, "y"));
                Self::Public(
                    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                        .expect("a P-256 public key"),
                )
            }
            SigningAlgorithm::Rs256 => {
                let jwk = public_jwk(setup);
                Self::Public(
                    aws_lc_rs::signature::RsaPublicKeyComponents {
                        n: member(&jwk, "n"),
                        e: member(&jwk, "e"),
                    }
                    .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
                    .expect("an RSA public key"),
                )
            }
            SigningAlgorithm::Hs256 => {
                let secret = &setup
                    .keys
                    .iter()
                    .find(|key| key.kid == setup.keyring.signing_kid())
                    .expect("the signing key is among the stored keys")
                    .secret;
                Self::Hmac(Box::new(aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA256,
                    secret,
                )))
            }
        }
    }

    fn verifies(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Public(key) => key.verify_sig(signing_input, signature).is_ok(),
            Self::Hmac(key) => aws_lc_rs::hmac::verify(key, signing_input, signature).is_ok(),
        }
    }
}

/// Benchmarks the bare check of the token's signature over its signing input.
fn bare_verify(criterion: &mut Criterion, name: &str, setup: &Setup, bare: &Bare) {
    let (signing_input, signature) = split(&setup.token);
    assert!(
        bare.verifies(signing_input.as_bytes(), &signature),
        "the bare signature verifies"
    );
    criterion.bench_function(name, |bencher| {
        bencher.iter(|| bare.verifies(black_box(signing_input.as_bytes()), black_box(&signature)));
    });
}

fn bench_algorithm(criterion: &mut Criterion, algorithm: SigningAlgorithm) {
    let setup = setup(algorithm);
    let prefix = algorithm.jose_name().to_lowercase();
    eprintln!(
        "{} token: {} bytes",
        algorithm.jose_name(),
        setup.token.len()
    );
    validate(criterion, &format!("{prefix}/validate"), &setup);
    let bare_name = match algorithm {
        SigningAlgorithm::Hs256 => "hs256/bare_hmac".to_owned(),
        _ => format!("{prefix}/bare_verify"),
    };
    bare_verify(criterion, &bare_name, &setup, &Bare::of(&setup, algorithm));
}

fn eddsa(criterion: &mut Criterion) {
    bench_algorithm(criterion, SigningAlgorithm::EdDsa);
}

fn es256(criterion: &mut Criterion) {
    bench_algorithm(criterion, SigningAlgorithm::Es256);
}

fn rs256(criterion: &mut Criterion) {
    bench_algorithm(criterion, SigningAlgorithm::Rs256);
}

fn hs256(criterion: &mut Criterion) {
    bench_algorithm(criterion, SigningAlgorithm::Hs256);
}

/// Nanoseconds per call of `f`, over a batch of `calls`.
fn per_call(calls: u32, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..calls {
        f();
    }
    started.elapsed().as_secs_f64() * 1e9 / f64::from(calls)
}

/// How many calls of `f` take about `target`.
fn batch_for(target: Duration, mut f: impl FnMut()) -> u32 {
    let one = per_call(16, &mut f).max(1.0);
    let calls = target.as_secs_f64() * 1e9 / one;
    // Truncation is the intent: a batch size, at least one call.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let calls = calls.clamp(1.0, 1e6) as u32;
    calls
}

/// The smallest and the median of `samples`, sorted in place.
fn best_and_median(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[0], samples[samples.len() / 2])
}

/// The table the targets are judged on: per algorithm, the bare signature check and the full
/// validation measured in alternating batches (a load that comes and goes on a shared machine
/// then weighs on both alike, unlike groups measured seconds apart), their ratio, and the
/// signing cost. Times are the best batch's per-call time (the least disturbed), the ratio
/// also from the medians.
fn summary(_: &mut Criterion) {
    const ROUNDS: usize = 300;
    let batch = Duration::from_millis(2);
    let mut table = String::from(
        "\nalgorithm  bare verify  full validation  ratio (best)  ratio (median)  sign\n",
    );
    for algorithm in SigningAlgorithm::ALL {
        let setup = setup(algorithm);
        let bare = Bare::of(&setup, algorithm);
        let (signing_input, signature) = split(&setup.token);
        let mut check = || {
            black_box(bare.verifies(black_box(signing_input.as_bytes()), black_box(&signature)));
        };
        let mut full = || {
            let validated = setup.validator.validate(
                black_box(&setup.token),
                &setup.keyring,
                &setup.revoked,
                setup.now,
            );
            black_box(validated.is_ok());
        };
        let expires_at = setup.now.plus(Duration::from_secs(15 * 60));
        let mut sign = || {
            black_box(setup.issuer.issue(
                &setup.keyring,
                black_box(&setup.session),
                setup.now,
                expires_at,
            ));
        };
        let bare_calls = batch_for(batch, &mut check);
        let full_calls = batch_for(batch, &mut full);
        let sign_calls = batch_for(batch, &mut sign);
        let (mut bare_ns, mut full_ns, mut sign_ns) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            bare_ns.push(per_call(bare_calls, &mut check));
            full_ns.push(per_call(full_calls, &mut full));
            if round % 4 == 0 {
                sign_ns.push(per_call(sign_calls, &mut sign));
            }
        }
        let (bare_best, bare_median) = best_and_median(&mut bare_ns);
        let (full_best, full_median) = best_and_median(&mut full_ns);
        let (sign_best, _) = best_and_median(&mut sign_ns);
        table.push_str(&format!(
            "{:<9}  {:>8.2} µs  {:>12.2} µs  {:>11.3}×  {:>13.3}×  {:>8.2} µs\n",
            algorithm.jose_name(),
            bare_best / 1e3,
            full_best / 1e3,
            full_best / bare_best,
            full_median / bare_median,
            sign_best / 1e3,
        ));
    }
    println!("{table}");
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = eddsa, es256, rs256, hs256, summary
}
criterion_main!(benches);
