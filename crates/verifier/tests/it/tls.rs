//! An `https://` JWKS URL is fetched over TLS by the verifier's default HTTP client (rustls,
//! with the aws-lc-rs provider): a local listener sees a ClientHello, not a plain HTTP request.

use sessiond_testkit::{ISSUER, TlsHelloProbe, is_tls_client_hello};
use sessiond_verifier::Verifier;

#[tokio::test]
async fn an_https_jwks_url_is_fetched_over_a_tls_handshake() {
    let probe = TlsHelloProbe::spawn().await;
    let verifier = Verifier::builder(format!("{}/.well-known/jwks.json", probe.base))
        .issuer(ISSUER)
        .build()
        .expect("a verifier with the default HTTP client");

    // The probe closes the connection after the ClientHello, so the fetch itself fails.
    let fetched = verifier.refresh().await;
    assert!(fetched.is_err(), "no server answered: {fetched:?}");
    let first_bytes = probe.first_bytes().await;
    assert!(
        is_tls_client_hello(&first_bytes),
        "the verifier sent {first_bytes:02x?}, not a TLS ClientHello"
    );
}
