//! A sessiond client for Rust applications and CLIs that must stay signed in.
//!
//! [`SessionClient`] keeps a session's token pair and refreshes it ahead of expiry, so the
//! application always has a valid access token to send:
//!
//! - **Ahead of expiry.** A background task refreshes when less than 5 minutes or a fifth of
//!   the token's lifetime remains, whichever is *less* (a 15-minute token is refreshed 3 minutes
//!   before expiry, a 1-hour token 5 minutes before), minus a random jitter of up to a tenth of
//!   that window ([`RefreshPolicy`]). [`SessionClient::access_token`] returns the cached token
//!   at once whenever it is still valid; it reaches the network only when the token has
//!   already expired (the background task was stopped, or the machine was asleep).
//! - **Single-flight.** Any number of tasks that need a refresh at the same time cause one
//!   refresh request; the others wait for its result. The refresh runs in its own task, so a
//!   caller that stops waiting cannot leave a rotated-but-unsaved pair behind.
//! - **Retries.** Network errors and `503` (also `429`, `502`, `504`) are retried with
//!   exponential backoff and full jitter, honouring `Retry-After`, for a bounded number of
//!   attempts and time ([`RetryPolicy`]); then the call fails with [`Error::Unavailable`] and
//!   the tokens are kept for a later try.
//! - **Signed out.** When the server refuses the refresh token (`invalid_refresh_token`:
//!   `revoked`, `expired`, `reuse_detected`, `unknown`), the client clears its storage and then
//!   publishes [`SessionState::SignedOut`] on the `watch` channel of [`SessionClient::state`].
//! - **Persistence.** The pair is kept through a [`TokenStore`]: [`MemoryStore`], or
//!   [`EncryptedFileStore`] (AES-256-GCM, mode 0600, atomic replace, survives a crash
//!   mid-write). A refreshed pair is persisted before anyone is given its access token.
//! - **Requests.** [`SessionClient::send`] attaches `Authorization: Bearer` and, on a `401`,
//!   refreshes once and retries once.
//! - **DPoP.** With [`SessionClientBuilder::dpop`] the session is bound to a [`DpopKey`]
//!   (RFC 9449): see [Binding the session to a key](#binding-the-session-to-a-key-dpop).
//!
//! Tokens never appear in `Debug` output or logs: they are [`SecretString`]s.
//!
//! HTTPS uses rustls with the aws-lc-rs provider (the backend sessiond itself signs with), so
//! no system OpenSSL is needed. The default HTTP client checks server certificates against the
//! operating system's trust store (through `rustls-platform-verifier`), as a browser would: a
//! sessiond behind a private CA works once that CA is installed on the machine, or with a
//! client of your own passed to [`SessionClientBuilder::http_client`].
//!
//! # Using the client
//!
//! The application's backend creates the session (`POST /v1/sessions` with an admin key) and
//! hands the token pair to the app, which gives it to the client:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use sessiond_client::{EncryptedFileStore, FileKey, SessionClient, SessionState};
//! use sessiond_client::reqwest::Method;
//!
//! # async fn fetch_pair_from_backend() -> sessiond_client::sessiond_wire::TokenPairResponse { unimplemented!() }
//! # async fn key_from_keyring() -> [u8; 32] { [0; 32] }
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // The key comes from wherever the application keeps secrets (see `FileKey`).
//! let key = FileKey::from_bytes(key_from_keyring().await);
//! let store = Arc::new(EncryptedFileStore::new("/home/me/.config/app/tokens", &key));
//! let client = SessionClient::builder("https://auth.example.com")
//!     .store(store)
//!     .build()
//!     .await?; // loads the pair stored by the last run, if any
//!
//! if !client.current_state().is_signed_in() {
//!     client.sign_in(&fetch_pair_from_backend().await).await?;
//! }
//!
//! // Send the user back to the login screen when the session ends.
//! let mut state = client.state();
//! tokio::spawn(async move {
//!     while state.changed().await.is_ok() {
//!         if let SessionState::SignedOut { reason } = &*state.borrow() {
//!             eprintln!("signed out: {reason}");
//!         }
//!     }
//! });
//!
//! // A request to a resource server, with the bearer token and one retry after a 401.
//! let response = client
//!     .send(client.request(Method::GET, "https://api.example.com/notes"))
//!     .await?;
//! println!("{}", response.status());
//!
//! // Or the token itself, for a client of your own.
//! let token = client.access_token().await?;
//! # let _ = token.expose();
//! # Ok(())
//! # }
//! ```
//!
//! # Following the event stream
//!
//! Without the event stream, the client learns that its session was revoked only at its next
//! refresh (minutes later). With
//! [`SessionClientBuilder::subscribe_events`] a background task follows the session's
//! `GET /v1/events` (Server-Sent Events) with the current access token:
//!
//! - a revocation or expiry of the client's own session (`session.revoked`,
//!   `session.expired`, or the server closing the stream with `session_ended`) signs it out at
//!   once: storage is cleared, then [`SessionState::SignedOut`] is published, as after a
//!   refused refresh (reason [`SignOutReason::Revoked`], [`SignOutReason::ReuseDetected`],
//!   [`SignOutReason::Anomaly`], [`SignOutReason::Expired`], or [`SignOutReason::LoggedOut`] when another process sharing
//!   the session logged out);
//! - a refresh of the session by *another process sharing the token store* (two CLI
//!   invocations on one token file) is picked up by reading the store, with no refresh request
//!   of its own. A pair from the store is adopted only if it is of the same session and was
//!   received later than the one held, so a reload never goes back in time. Independently of
//!   the stream, every refresh first looks in the store for such a pair, so that a process
//!   never presents a refresh token another one has already spent;
//! - the stream reconnects with backoff and jitter ([`EventStreamPolicy`]), resuming after the
//!   last event it saw (`Last-Event-ID`), with the newest access token; a token the server
//!   refuses (`401`, expired by its clock) is refreshed once first.
//!
//! [`SessionClient::events_connected`] says whether the stream is open.
//!
//! # Binding the session to a key (DPoP)
//!
//! With [`SessionClientBuilder::dpop`] the client holds a [`DpopKey`] (ES256) and proves
//! possession of it (RFC 9449):
//!
//! - every refresh carries a `DPoP` proof; an unbound session becomes bound to the key at its
//!   first such refresh, and a bound one can be refreshed with that key only;
//! - an access token bound to the key (its `cnf.jkt` claim; its pair's `token_type` is `DPoP`)
//!   goes as `Authorization: DPoP <token>` with a proof that hashes it, on
//!   [`SessionClient::send`], the event stream and the logout;
//! - a server that asks for a nonce (`use_dpop_nonce` with a `DPoP-Nonce` header: `400` from
//!   sessiond, `401` from a resource server) gets the request once more with it, and the latest
//!   `DPoP-Nonce` of each server is sent with the next proofs.
//!
//! To bind the session from its first token, send [`DpopKey::thumbprint`] to the
//! application's backend at login; the backend passes it as `dpop_jkt` to
//! `POST /v1/sessions`. A bound session can be refreshed only with its key: an application
//! that keeps its tokens across runs keeps the key too ([`DpopKey::to_pkcs8_der`]), where it
//! keeps its other secrets.
//!
//! ```no_run
//! # async fn login_with_backend(_dpop_jkt: &str) -> sessiond_client::sessiond_wire::TokenPairResponse { unimplemented!() }
//! # async fn example() -> Result<(), sessiond_client::Error> {
//! use sessiond_client::{DpopKey, SessionClient};
//!
//! let key = DpopKey::generate()?;
//! let pair = login_with_backend(key.thumbprint()).await;
//! let client = SessionClient::builder("https://auth.example.com").dpop(key).build().await?;
//! client.sign_in(&pair).await?;
//! # Ok(())
//! # }
//! ```
//!
//! ```no_run
//! # async fn example() -> Result<(), sessiond_client::Error> {
//! use sessiond_client::{EventStreamPolicy, SessionClient};
//!
//! let client = SessionClient::builder("https://auth.example.com")
//!     .subscribe_events(EventStreamPolicy::default())
//!     .build()
//!     .await?;
//! # let _ = client;
//! # Ok(())
//! # }
//! ```

mod client;
mod clock;
mod dpop;
mod error;
mod events;
mod file_store;
mod inner;
mod policy;
mod secret;
mod store;
mod tokens;

pub use client::{SessionClient, SessionClientBuilder};
pub use clock::{CUSTOM_CLOCK_POLL, Clock, SystemClock};
pub use dpop::DpopKey;
pub use error::Error;
pub use file_store::{EncryptedFileStore, FileKey};
pub use policy::{EventStreamPolicy, RefreshPolicy, RetryPolicy};
pub use secret::SecretString;
pub use store::{MemoryStore, StoreError, TokenStore};
pub use tokens::{SessionState, SignOutReason, StoredTokens};

/// The `reqwest` this crate uses, for building requests for [`SessionClient::send`].
pub use reqwest;
/// The wire types, for [`SessionClient::sign_in`]'s token pair.
pub use sessiond_wire;
