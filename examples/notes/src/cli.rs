//! The notes CLI's logic: a [`SessionClient`] on an encrypted token file, following the
//! session's event stream, and the calls to the notes API.

use std::path::PathBuf;
use std::sync::Arc;

use sessiond_client::reqwest::Method;
use sessiond_client::sessiond_wire::TokenPairResponse;
use sessiond_client::{
    Clock, EncryptedFileStore, EventStreamPolicy, FileKey, SessionClient, SessionState,
};

use crate::NoteList;

/// Where the CLI finds sessiond, the API and its tokens.
#[derive(Debug)]
pub struct CliSettings {
    /// sessiond's base URL (for refreshes and the event stream).
    pub sessiond_url: String,
    /// The notes API's base URL.
    pub api_url: String,
    /// The token file.
    pub token_file: PathBuf,
    /// The token file's key (kept elsewhere: an OS keyring, an environment variable).
    pub key: FileKey,
    /// Follow the event stream, so that a revocation elsewhere signs the CLI out at once.
    pub follow_events: bool,
    /// The clock, for tests that move time by hand; the system's when `None`.
    pub clock: Option<Arc<dyn Clock>>,
}

/// Why a CLI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The session client failed; [`sessiond_client::Error::SignedOut`] means "sign in again".
    #[error(transparent)]
    Session(#[from] sessiond_client::Error),
    /// The API answered something else than 200.
    #[error("the notes API answered {0}")]
    Status(u16),
    /// The API's answer could not be read.
    #[error("cannot read the notes API's answer")]
    Body(#[source] sessiond_client::reqwest::Error),
}

/// The notes CLI.
#[derive(Debug, Clone)]
pub struct NotesCli {
    /// The session client; watch its [`state`](SessionClient::state) to notice a sign-out.
    pub client: SessionClient,
    api_url: String,
}

impl NotesCli {
    /// Opens the token file (loading the pair of the last run, if any).
    ///
    /// # Errors
    /// When the token file cannot be read, or the URL is bad.
    pub async fn open(settings: CliSettings) -> Result<Self, CliError> {
        let store = Arc::new(EncryptedFileStore::new(&settings.token_file, &settings.key));
        let mut builder = SessionClient::builder(&settings.sessiond_url).store(store);
        if settings.follow_events {
            builder = builder.subscribe_events(EventStreamPolicy::default());
        }
        if let Some(clock) = settings.clock {
            builder = builder.clock(clock);
        }
        Ok(Self {
            client: builder.build().await?,
            api_url: settings.api_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Takes over the token pair the application's backend created for the user.
    ///
    /// # Errors
    /// When the pair cannot be saved.
    pub async fn sign_in(&self, pair: &TokenPairResponse) -> Result<(), CliError> {
        Ok(self.client.sign_in(pair).await?)
    }

    /// The user's notes, from `GET /notes`.
    ///
    /// # Errors
    /// [`CliError::Session`] when signed out (or sessiond unreachable while the token needs a
    /// refresh), [`CliError::Status`] when the API refuses.
    pub async fn list(&self) -> Result<NoteList, CliError> {
        let request = self
            .client
            .request(Method::GET, format!("{}/notes", self.api_url));
        let response = self.client.send(request).await?;
        if !response.status().is_success() {
            return Err(CliError::Status(response.status().as_u16()));
        }
        response.json().await.map_err(CliError::Body)
    }

    /// Whether the CLI holds a session.
    pub fn signed_in(&self) -> bool {
        matches!(self.client.current_state(), SessionState::SignedIn { .. })
    }

    /// Ends the session on sessiond and forgets the tokens.
    ///
    /// # Errors
    /// When sessiond could not be told or the file not removed.
    pub async fn sign_out(&self) -> Result<(), CliError> {
        Ok(self.client.sign_out().await?)
    }
}

/// A key from 64 hex digits (as `notes-cli new-key` prints).
pub fn parse_key(hex: &str) -> Option<FileKey> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(FileKey::from_bytes(bytes))
}

/// `key` as 64 hex digits.
pub fn format_key(key: &FileKey) -> String {
    key.as_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_hex() {
        let key = FileKey::generate().expect("a key");
        let text = format_key(&key);
        let parsed = parse_key(&text).expect("parses");
        assert_eq!(parsed.as_bytes(), key.as_bytes());
        assert!(parse_key("00").is_none());
        assert!(parse_key(&"zz".repeat(32)).is_none());
    }
}
