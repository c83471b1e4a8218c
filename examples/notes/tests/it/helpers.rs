//! sessiond and the notes API on port-0 listeners, and a client clock that reads sessiond's
//! manual clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notes::api::{self, SessiondSettings};
use serde_json::{Value, json};
use sessiond_client::reqwest;
use sessiond_client::sessiond_wire::TokenPairResponse;
use sessiond_core::{Clock as _, ManualClock, Timestamp};
use sessiond_server::AppState;
use sessiond_server::config::{Config, RawConfig};
use sessiond_verifier::Verifier;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN_KEY: &str = "notes-example-admin-key-0123456789-abcdefghij";
pub const ISSUER: &str = "http://sessiond.test";

/// sessiond's manual clock, read by the CLI's session client too.
#[derive(Debug)]
pub struct SharedClock(pub Arc<ManualClock>);

impl sessiond_client::Clock for SharedClock {
    fn now(&self) -> SystemTime {
        let millis = u64::try_from(self.0.now().unix_millis()).unwrap();
        UNIX_EPOCH + Duration::from_millis(millis)
    }
}

/// A running sessiond.
pub struct Sessiond {
    pub base: String,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    _dir: TempDir,
    _shutdown: oneshot::Sender<()>,
}

impl Sessiond {
    pub async fn spawn() -> Self {
        let dir = TempDir::new().unwrap();
        let raw = RawConfig {
            listen: Some("127.0.0.1:0".into()),
            database_url: Some(format!(
                "sqlite://{}",
                dir.path().join("sessiond.db").display()
            )),
            admin_keys: Some(ADMIN_KEY.into()),
            issuer: Some(ISSUER.into()),
            sqlite_synchronous: Some("normal".into()),
            ..RawConfig::default()
        };
        let config = Config::from_raw(&raw).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(
            i64::try_from(now.as_millis()).unwrap(),
        )));
        let state = AppState::build(
            &config,
            clock.clone(),
            sessiond_server::state::OpenMode::CreateIfMissing,
        )
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            sessiond_server::run(listener, state, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            base: format!("http://{address}"),
            clock,
            http: reqwest::Client::new(),
            _dir: dir,
            _shutdown: shutdown,
        }
    }

    /// What the application's backend does once it has authenticated `user`.
    pub async fn create_session(&self, user: &str, permissions: &[&str]) -> TokenPairResponse {
        let response = self
            .http
            .post(format!("{}/v1/sessions", self.base))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({
                "user_id": user,
                "device": {"name": "notes-cli"},
                "claims": {"permissions": permissions},
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// Refresh requests sessiond has answered (from `/metrics`).
    pub async fn refreshes(&self) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| line.starts_with("sessiond_refreshes_total{"))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }
}

/// The notes API, verifying with sessiond's clock and following its revocation feed.
pub struct NotesApi {
    pub base: String,
    pub verifier: Verifier,
    _shutdown: oneshot::Sender<()>,
}

impl NotesApi {
    pub async fn spawn(sessiond: &Sessiond) -> Self {
        let settings = SessiondSettings {
            base_url: sessiond.base.clone(),
            issuer: ISSUER.into(),
            audience: "sessiond".into(),
            admin_key: Some(ADMIN_KEY.into()),
        };
        // As the binary builds it, plus the test's clock.
        let verifier = api::verifier_builder(&settings)
            .clock(sessiond.clock.clone())
            .build()
            .unwrap();
        verifier.refresh().await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = api::router(verifier.clone());
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            base: format!("http://{address}"),
            verifier,
            _shutdown: shutdown,
        }
    }

    /// `GET /status`.
    pub async fn status(&self) -> Value {
        reqwest::get(format!("{}/status", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Waits up to 5 s for `condition`.
pub async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..250 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
