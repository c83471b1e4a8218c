//! sessiond and the notes API on port-0 listeners, and a client clock that reads sessiond's
//! manual clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notes::api::{self, SessiondSettings};
use serde_json::{Value, json};
use sessiond_client::reqwest;
use sessiond_client::sessiond_wire::TokenPairResponse;
use sessiond_core::{Clock as _, ManualClock};
use sessiond_testkit::{ADMIN_KEY, AUDIENCE, HttpServer, ISSUER};
use sessiond_verifier::Verifier;

/// sessiond's manual clock, read by the CLI's session client too.
#[derive(Debug)]
pub struct SharedClock(pub Arc<ManualClock>);

impl sessiond_client::Clock for SharedClock {
    fn now(&self) -> SystemTime {
        let millis = u64::try_from(self.0.now().unix_millis()).unwrap();
        UNIX_EPOCH + Duration::from_millis(millis)
    }
}

/// A running sessiond (the test kit's).
pub use sessiond_testkit::{Sessiond, eventually};

/// Sessions as the application's backend creates them.
pub trait Backend {
    /// What the application's backend does once it has authenticated `user`.
    async fn backend_session(&self, user: &str, permissions: &[&str]) -> TokenPairResponse;
}

impl Backend for Sessiond {
    async fn backend_session(&self, user: &str, permissions: &[&str]) -> TokenPairResponse {
        self.create_session_with(json!({
            "user_id": user,
            "device": {"name": "notes-cli"},
            "claims": {"permissions": permissions},
        }))
        .await
    }
}

/// The notes API, verifying with sessiond's clock and following its revocation feed.
pub struct NotesApi {
    pub base: String,
    pub verifier: Verifier,
    _server: HttpServer,
}

impl NotesApi {
    pub async fn spawn(sessiond: &Sessiond) -> Self {
        let settings = SessiondSettings {
            base_url: sessiond.base.clone(),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            admin_key: Some(ADMIN_KEY.into()),
        };
        // As the binary builds it, plus the test's clock.
        let verifier = api::verifier_builder(&settings)
            .clock(sessiond.clock.clone())
            .build()
            .unwrap();
        verifier.refresh().await.unwrap();
        let server = HttpServer::spawn(api::router(verifier.clone())).await;
        Self {
            base: server.base.clone(),
            verifier,
            _server: server,
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
