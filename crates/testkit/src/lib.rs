//! What the test suites of sessiond's crates share, so that each suite starts sessiond, and
//! waits for it, the same way: [`Sessiond`], the real server on a port-0 listener with a
//! [`ManualClock`] and a temporary SQLite database; [`RunningServer`], the lower-level start
//! and stop of one server on a given configuration; [`HttpServer`], any axum router (a proxy,
//! a resource server) served until dropped, and [`forward`] for proxies; [`PgSchema`], a
//! PostgreSQL schema of its own per test; [`TlsHelloProbe`], a listener that sees whether a
//! client opens a TLS handshake; [`DpopKey`], a client's DPoP key and the proofs it signs,
//! bent at will by [`ProofBuilder`]; and [`eventually`].
//!
//! It is a dev-dependency only (`publish = false`). It depends on the server library, never on
//! `sessiond-client` or `sessiond-verifier`: their own tests use it, and a second copy of the
//! crate under test would not share its types.

mod dpop;
mod http;
mod postgres;
mod server;
mod tls;

use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use dpop::{DpopKey, ProofBuilder, access_token_hash};
pub use http::{HttpServer, forward};
pub use postgres::{PgSchema, postgres_url};
pub use server::{RunningServer, Sessiond};
pub use sessiond_core::{ManualClock, Timestamp};
pub use tls::{TlsHelloProbe, is_tls_client_hello};

/// The admin key of every test server (a full-scope key, as long as production requires).
pub const ADMIN_KEY: &str = "test-admin-key-0123456789-abcdefghijklmnop";
/// The issuer of every test server's access tokens.
pub const ISSUER: &str = "http://sessiond.test";
/// The audience of every test server's access tokens (sessiond's default).
pub const AUDIENCE: &str = "sessiond";
/// Where sessiond publishes its JWK Set.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Sends the server's logs to the test's output when `TEST_LOG` is set; once per process.
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("debug,sqlx=warn,hyper=info,hyper_util=info")
                .with_test_writer()
                .try_init();
        }
    });
}

/// The wall clock now, as the domain counts time: where a test's manual clock starts.
///
/// # Panics
///
/// If the system clock is before 1970.
pub fn wall_clock_now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    Timestamp::from_unix_millis(i64::try_from(millis).expect("millis fit"))
}

/// Waits for `condition` to hold, asking every 20 ms for up to 5 s.
///
/// For what another task does in its own time (a feed applying a revocation, a stream
/// delivering an event): the test fails, naming `what`, if it has not happened by then.
///
/// # Panics
///
/// If `condition` still does not hold after 5 s.
pub async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..250 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
