//! [`Error`]: what can go wrong in a [`SessionClient`](crate::SessionClient) call, with the
//! variants a caller acts on.

use std::sync::Arc;
use std::time::Duration;

use crate::{SignOutReason, StoreError};

/// A failed client operation.
///
/// `Clone`, because one refresh answers every task that was waiting for it; sources are
/// shared behind `Arc` for that reason.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client holds no tokens: the user must sign in again. The client has already cleared
    /// its storage and published [`SessionState::SignedOut`](crate::SessionState::SignedOut).
    #[error("signed out ({reason})")]
    SignedOut {
        /// Why.
        reason: SignOutReason,
    },
    /// A refresh failed for a reason that may pass (the server unreachable, `503`) and kept
    /// failing for the whole [`RetryPolicy`](crate::RetryPolicy). The tokens are kept; a later
    /// call tries again.
    #[error("session server unavailable after {attempts} attempts")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's failure.
        #[source]
        last: Box<Error>,
    },
    /// An HTTP request could not be sent or its answer not read.
    #[error("http request failed")]
    Http(#[source] Arc<reqwest::Error>),
    /// The server answered a status the client cannot act on (in a refresh: anything but 200,
    /// `invalid_refresh_token` and the retryable statuses).
    #[error("unexpected answer from the session server: {status}{}", code_suffix(.code.as_deref()))]
    Status {
        /// The HTTP status.
        status: u16,
        /// The `error` code of the body, when it had one.
        code: Option<String>,
        /// The `Retry-After` the server asked for, if any.
        retry_after: Option<Duration>,
    },
    /// The token storage failed.
    #[error("token storage failed")]
    Store(#[source] Arc<StoreError>),
    /// The server's base URL cannot be used.
    #[error("invalid server url {url:?}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// [`SessionClientBuilder::build`](crate::SessionClientBuilder::build) was called outside a
    /// Tokio runtime; the client needs one for its background refresh.
    #[error("no tokio runtime: build the client inside one")]
    NoRuntime,
    /// The task running a refresh stopped before it finished (the runtime is shutting down).
    #[error("the refresh was interrupted")]
    RefreshInterrupted,
    /// A DPoP key could not be made, read or used.
    #[error("dpop: {0}")]
    Dpop(&'static str),
}

fn code_suffix(code: Option<&str>) -> String {
    code.map(|code| format!(" ({code})")).unwrap_or_default()
}

impl From<reqwest::Error> for Error {
    fn from(error: reqwest::Error) -> Self {
        Self::Http(Arc::new(error))
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        Self::Store(Arc::new(error))
    }
}
