//! A listener that tells whether a client opened a TLS handshake on it, without the internet or
//! a certificate: it reads the first bytes of the first connection and closes it.

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The bytes a TLS 1.2 or 1.3 ClientHello starts with, up to its `legacy_version`: a handshake
/// record (type 22, record version 3.x, two length bytes), a handshake message of type 1
/// (ClientHello, three length bytes), then version 3.3.
const CLIENT_HELLO_PREFIX_LEN: usize = 11;

/// A port-0 listener on `127.0.0.1` whose first connection is read for a TLS ClientHello.
#[derive(Debug)]
pub struct TlsHelloProbe {
    /// `https://127.0.0.1:PORT`.
    pub base: String,
    first_bytes: oneshot::Receiver<Vec<u8>>,
}

impl TlsHelloProbe {
    /// Binds the listener and waits, in a task, for one connection.
    ///
    /// # Panics
    ///
    /// If no port can be bound.
    pub async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let address = listener.local_addr().expect("local address");
        let (sender, first_bytes) = oneshot::channel();
        tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut bytes = vec![0; CLIENT_HELLO_PREFIX_LEN];
            let mut filled = 0;
            while filled < bytes.len() {
                match stream.read(&mut bytes[filled..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => filled += read,
                }
            }
            bytes.truncate(filled);
            // Dropping the stream closes the connection: the client's request then fails.
            let _ = sender.send(bytes);
        });
        Self {
            base: format!("https://{address}"),
            first_bytes,
        }
    }

    /// The first bytes the first client sent (up to 11), once it has sent them or closed.
    ///
    /// # Panics
    ///
    /// If no client connected.
    pub async fn first_bytes(self) -> Vec<u8> {
        self.first_bytes
            .await
            .expect("a client connected to the probe")
    }
}

/// Whether `bytes` start a TLS ClientHello (TLS 1.2 or 1.3: both send `legacy_version` 3.3).
pub fn is_tls_client_hello(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [0x16, 0x03, 0x01..=0x03, _, _, 0x01, _, _, _, 0x03, 0x03, ..]
    )
}

#[cfg(test)]
mod tests {
    use super::is_tls_client_hello;

    #[test]
    fn a_plain_http_request_is_not_a_client_hello() {
        assert!(!is_tls_client_hello(b"GET /v1/jwks HTTP/1.1\r\n"));
        assert!(!is_tls_client_hello(&[0x16, 0x03, 0x01]));
        assert!(is_tls_client_hello(&[
            0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03
        ]));
    }
}
