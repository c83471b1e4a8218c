//! What encryption at rest adds to the refresh path.
//!
//! A refresh reads one session row (opening its metadata, user agent, IP and device name) and a
//! rotation seals one successor pair again under the data key; a grace-window replay opens it.
//! These benchmarks time those steps on values of realistic size, next to the inner sealing of
//! the successor pair that existed before, so the added cost can be read off directly.
//!
//! Run with `cargo bench -p sessiond-core --bench crypt`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sessiond_core::Timestamp;
use sessiond_core::crypt::Cipher;
use sessiond_core::crypt::columns::{SEALED_SUCCESSOR, SESSION_METADATA, SESSION_USER_AGENT};
use sessiond_core::crypt::{CipherSlot, DataKey};
use sessiond_core::refresh::{IssuedPair, RefreshToken};

const ROW: &[u8] = b"0b6f2f5e-8f5c-4d7e-9a3b-1f2e3d4c5b6a";
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const METADATA: &str = r#"{"plan":"pro","org":"acme","locale":"en-GB","login_method":"passkey"}"#;

fn slot() -> CipherSlot {
    let slot = CipherSlot::default();
    let cipher = Cipher::new(&[DataKey::generate(1)]).expect("one key");
    slot.install(std::sync::Arc::new(cipher));
    slot
}

fn pair() -> IssuedPair {
    use base64::Engine as _;
    let segment = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    IssuedPair {
        // An EdDSA access token of the usual claims is about 450 bytes: a header, the claims
        // and a signature of 64 bytes, each in base64url, as the sealing packs it.
        access_token: format!(
            "{}.{}.{}",
            segment(br#"{"alg":"EdDSA","kid":"k-2026-12-05","typ":"at+jwt"}"#),
            segment(&[b'c'; 220]),
            segment(&[7; 64])
        ),
        access_expires_at_ms: 1,
        refresh_token: RefreshToken::generate(Timestamp::from_unix_millis(1_700_000_000_000))
            .expose()
            .to_owned(),
        refresh_expires_at_ms: 2,
    }
}

fn benches(c: &mut Criterion) {
    let slot = slot();
    let sealed_agent = slot.seal_text(SESSION_USER_AGENT, ROW, USER_AGENT);
    let sealed_metadata = slot.seal_text(SESSION_METADATA, ROW, METADATA);
    c.bench_function("seal a user agent", |b| {
        b.iter(|| slot.seal_text(SESSION_USER_AGENT, black_box(ROW), black_box(USER_AGENT)))
    });
    c.bench_function("open a user agent", |b| {
        b.iter(|| {
            slot.open_text(SESSION_USER_AGENT, ROW, black_box(sealed_agent.clone()))
                .expect("opens")
        })
    });
    c.bench_function("open a session row's four columns", |b| {
        b.iter(|| {
            for _ in 0..3 {
                slot.open_text(SESSION_USER_AGENT, ROW, black_box(sealed_agent.clone()))
                    .expect("opens");
            }
            slot.open_text(SESSION_METADATA, ROW, black_box(sealed_metadata.clone()))
                .expect("opens")
        })
    });

    let token = RefreshToken::generate(Timestamp::from_unix_millis(1_700_000_000_000));
    let pair = pair();
    let inner = token.seal_successor(&pair);
    let outer = slot
        .seal_bytes(SEALED_SUCCESSOR, &token.hash().0, &inner)
        .to_vec();
    c.bench_function("seal a successor pair (inner layer, before)", |b| {
        b.iter(|| token.seal_successor(black_box(&pair)))
    });
    c.bench_function("seal a successor pair again under the data key", |b| {
        b.iter(|| slot.seal_bytes(SEALED_SUCCESSOR, &token.hash().0, black_box(&inner)))
    });
    c.bench_function("open the outer layer of a successor pair", |b| {
        b.iter(|| {
            slot.open_bytes(SEALED_SUCCESSOR, &token.hash().0, black_box(outer.clone()))
                .expect("opens")
        })
    });
}

criterion_group!(crypt, benches);
criterion_main!(crypt);
