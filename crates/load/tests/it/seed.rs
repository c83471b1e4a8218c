//! `sessiond-seed` writes sessions a server then serves as its own.

use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use sessiond_server::config::{Config, RawConfig};
use sessiond_server::database::OpenMode;
use sessiond_server::{AppState, SystemClock};

#[tokio::test]
async fn seeded_sessions_refresh_through_the_api_and_none_is_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/seeded.db", dir.path().display());
    let tokens_file = dir.path().join("tokens.txt");
    let output = Command::new(env!("CARGO_BIN_EXE_sessiond-seed"))
        .env_clear()
        .env("SESSIOND_DATABASE_URL", &database_url)
        .env("RUST_LOG", "warn")
        .args([
            "--sessions",
            "20",
            "--users",
            "4",
            "--tokens",
            "5",
            "--tokens-out",
        ])
        .arg(&tokens_file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["sessions"], 20);
    // SQLite chains audit rows as it writes them (session.created and device.new for each
    // session), so nothing is left for the seal at the end.
    assert_eq!(
        summary["audit_sealed"], 0,
        "every audit row is already chained"
    );
    let tokens = std::fs::read_to_string(&tokens_file).unwrap();
    let tokens: Vec<&str> = tokens.lines().collect();
    assert_eq!(tokens.len(), 5);

    // The server opens the file with the development master key the seeder left next to it.
    let config = Config::from_raw(&RawConfig {
        database_url: Some(database_url.clone().into()),
        issuer: Some("http://sessiond.test".into()),
        ..RawConfig::default()
    })
    .unwrap();
    let state = AppState::build(&config, Arc::new(SystemClock), OpenMode::MustExist)
        .await
        .unwrap();
    for user in 0..4 {
        let sessions = state
            .service
            .list_sessions(&format!("seed-user-{user}"))
            .await
            .unwrap();
        assert_eq!(sessions.len(), 5, "user {user}");
        assert!(
            sessions
                .iter()
                .all(|session| session.ip.as_deref() == Some("127.0.0.1"))
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sessiond_server::run(listener, state, async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let answer = client
        .post(format!("http://{address}/v1/sessions/refresh"))
        .json(&serde_json::json!({ "refresh_token": tokens[2] }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let pair: Value = answer.json().await.unwrap();
    let successor = pair["refresh_token"].as_str().unwrap();
    assert!(successor.starts_with("sdr_") && successor != tokens[2]);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
