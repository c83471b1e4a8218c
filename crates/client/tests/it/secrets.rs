//! No token or key in `Debug` output.

use std::sync::Arc;

use sessiond_client::{EncryptedFileStore, FileKey, MemoryStore, SessionClient, StoredTokens};
use tempfile::TempDir;

use crate::helpers::{TestServer, on_demand_only};

#[tokio::test]
async fn debug_output_shows_no_token_and_no_key() {
    let server = TestServer::spawn().await;
    let pair = server.create_session("rita").await;
    let tokens = StoredTokens::from_response(&pair, std::time::SystemTime::now());
    let key = FileKey::from_bytes([0xAB; 32]);
    let dir = TempDir::new().expect("temp dir");
    let file_store = EncryptedFileStore::new(dir.path().join("tokens"), &key);
    let memory_store = Arc::new(MemoryStore::with_tokens(tokens.clone()));
    let client = SessionClient::builder(&server.base)
        .store(memory_store.clone())
        .refresh_policy(on_demand_only())
        .build()
        .await
        .expect("client builds");

    let shown = format!(
        "{tokens:?} {client:?} {memory_store:?} {file_store:?} {key:?} {:?} {:?}",
        client.current_state(),
        client.access_token().await.expect("a token"),
    );

    assert!(!shown.contains(&pair.access_token), "{shown}");
    assert!(!shown.contains(&pair.refresh_token), "{shown}");
    assert!(!shown.to_lowercase().contains("abab"), "{shown}");
    assert!(!shown.contains("171, 171"), "{shown}");
    assert!(
        shown.contains(&pair.session.id),
        "ids are not secret: {shown}"
    );
}
