//! The default HTTP client speaks TLS to an `https://` server (rustls, with the aws-lc-rs
//! provider): a local listener sees a ClientHello, not a plain HTTP request.

use sessiond_client::SessionClient;
use sessiond_client::reqwest::Method;
use sessiond_testkit::{TlsHelloProbe, is_tls_client_hello};

#[tokio::test]
async fn the_default_http_client_opens_a_tls_handshake_on_an_https_url() {
    let probe = TlsHelloProbe::spawn().await;
    let client = SessionClient::builder(format!("{}/", probe.base))
        .build()
        .await
        .expect("a client with the default HTTP client");

    let request = client.request(Method::GET, format!("{}/v1/sessions/current", probe.base));
    let answer = request.send().await;

    // The probe closes the connection after the ClientHello, so the request itself fails.
    assert!(answer.is_err(), "no server answered: {answer:?}");
    let first_bytes = probe.first_bytes().await;
    assert!(
        is_tls_client_hello(&first_bytes),
        "the client sent {first_bytes:02x?}, not a TLS ClientHello"
    );
    client.shutdown().await;
}
