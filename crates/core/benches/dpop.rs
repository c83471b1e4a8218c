//! What binding a session to a DPoP key (RFC 9449) costs, with no I/O.
//!
//! For a client key of each of the two usual algorithms (ES256, as browsers and most libraries
//! make them; EdDSA), and access tokens signed with sessiond's default EdDSA key:
//! - `dpop/{alg}/refresh_proof`: [`sessiond_core::dpop::verify_proof`] on a refresh's proof
//!   (what a bound refresh adds before its rotation);
//! - `dpop/{alg}/bound_validation`: validating a bound access token and then its proof with
//!   `ath`, what a bound request to a resource costs, next to `dpop/unbound_validation`, the
//!   same token's validation alone.
//!
//! The replay cache (a store write on the server, a map in the verifier) is not included.
//!
//! Run with `cargo bench -p sessiond-core --bench dpop`.

mod fixtures;

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use sessiond_core::dpop::{DpopRules, ProofCheck, access_token_hash, verify_proof};
use sessiond_core::revocation::RevokedSessions;
use sessiond_core::token::{
    AccessTokenIssuer, AccessTokenValidator, Keyring, SigningAlgorithm, StoredKey, ValidationRules,
};
use sessiond_core::{Session, Timestamp};

const ISSUER: &str = "https://sessiond.example";
const REFRESH_URL: &str = "https://sessiond.example/v1/sessions/refresh";
const CURRENT_URL: &str = "https://sessiond.example/v1/sessions/current";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A client's key, made with the same backend browsers' keys are checked with.
enum ClientKey {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl ClientKey {
    fn generate(alg: &str) -> Self {
        match alg {
            "ES256" => Self::Es256(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("a P-256 key"),
            ),
            _ => Self::EdDsa(Ed25519KeyPair::generate().expect("an Ed25519 key")),
        }
    }

    fn header(&self) -> Value {
        match self {
            Self::Es256(pair) => {
                let point = pair.public_key().as_ref();
                json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256",
                       "x": b64(&point[1..33]), "y": b64(&point[33..65])}})
            }
            Self::EdDsa(pair) => json!({"typ": "dpop+jwt", "alg": "EdDSA",
                "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}}),
        }
    }

    fn proof(&self, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(self.header().to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match self {
            Self::Es256(pair) => pair
                .sign(&SystemRandom::new(), input.as_bytes())
                .expect("signing")
                .as_ref()
                .to_vec(),
            Self::EdDsa(pair) => pair.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&signature))
    }
}

fn benchmarks(criterion: &mut Criterion) {
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    let stored = [StoredKey::generate(SigningAlgorithm::EdDsa, now)];
    let keyring = Keyring::from_stored(&stored, SigningAlgorithm::EdDsa).expect("a keyring");
    let issuer = AccessTokenIssuer {
        issuer: ISSUER.into(),
        audience: "notes-api".into(),
        client_id: "notes-web".into(),
    };
    let validator = AccessTokenValidator::new(ValidationRules {
        issuer: ISSUER.into(),
        audience: "notes-api".into(),
        leeway_seconds: 5,
    });
    let revoked = RevokedSessions::new();
    let expires_at = now.plus(Duration::from_secs(900));
    let rules = DpopRules::default();

    let unbound = issuer
        .issue(&keyring, &fixtures::session(now), now, expires_at)
        .token;
    criterion.bench_function("dpop/unbound_validation", |bencher| {
        bencher.iter(|| validator.validate(black_box(&unbound), &keyring, &revoked, now));
    });

    for alg in ["ES256", "EdDSA"] {
        let key = ClientKey::generate(alg);
        let refresh = key.proof(&json!({"jti": "3f1c9a0e-refresh", "htm": "POST",
                                        "htu": REFRESH_URL, "iat": now.unix_seconds()}));
        let check = ProofCheck {
            method: "POST",
            url: REFRESH_URL,
            access_token: None,
            nonce: None,
        };
        let jkt = verify_proof(&refresh, &check, &rules, now)
            .expect("the benchmark proof verifies")
            .jkt;
        criterion.bench_function(&format!("dpop/{alg}/refresh_proof"), |bencher| {
            bencher.iter(|| verify_proof(black_box(&refresh), &check, &rules, now));
        });

        let token = issuer
            .issue(
                &keyring,
                &Session {
                    dpop_jkt: Some(jkt.clone()),
                    ..fixtures::session(now)
                },
                now,
                expires_at,
            )
            .token;
        let proof = key.proof(&json!({"jti": "3f1c9a0e-current", "htm": "GET",
            "htu": CURRENT_URL, "iat": now.unix_seconds(), "ath": access_token_hash(&token)}));
        criterion.bench_function(&format!("dpop/{alg}/bound_validation"), |bencher| {
            bencher.iter(|| {
                let validated = validator
                    .validate(black_box(&token), &keyring, &revoked, now)
                    .expect("the bound token validates");
                let check = ProofCheck {
                    method: "GET",
                    url: CURRENT_URL,
                    access_token: Some(&token),
                    nonce: None,
                };
                let proof = verify_proof(black_box(&proof), &check, &rules, now)
                    .expect("its proof verifies");
                assert_eq!(validated.confirmation.as_deref(), Some(proof.jkt.as_str()));
            });
        });
    }
}

criterion_group!(benches, benchmarks);
criterion_main!(benches);
