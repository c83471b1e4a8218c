//! [`SessionClient`]: holds the token pair, refreshes it ahead of expiry in a background task,
//! lets concurrent callers share one refresh, retries refreshes that may succeed later, and
//! signs out (clearing storage) when the server says the refresh token is dead.
//!
//! How the pieces fit: the pair lives in `Shared` (`inner.rs`) behind a short `std::sync::Mutex` (never
//! held across an `.await`), with a generation number that changes whenever the pair is
//! replaced or cleared. A refresh runs in its own spawned task, so a caller that gives up
//! waiting (a dropped future, a timeout) cannot cancel it half-way: a refresh the server has
//! performed is always persisted, otherwise the spent refresh token would be presented again
//! later and taken as theft. Callers join the refresh in flight through a `watch` channel that
//! carries its result. Writes to the store and to `Shared` are serialised by an async mutex,
//! so storage and memory change in the same order.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use sessiond_wire::TokenPairResponse;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{CUSTOM_CLOCK_POLL, SystemClock};
use crate::dpop::Nonces;
use crate::events;
use crate::inner::{Current, Inner, MAX_SLEEP, SaveFailure, Shared, blocking, run_background};
use crate::{
    Clock, DpopKey, Error, EventStreamPolicy, MemoryStore, RefreshPolicy, RetryPolicy,
    SecretString, SessionState, SignOutReason, StoredTokens, TokenStore,
};

/// Builds a [`SessionClient`]; from [`SessionClient::builder`].
#[derive(Debug)]
pub struct SessionClientBuilder {
    base_url: String,
    store: Option<Arc<dyn TokenStore>>,
    http: Option<reqwest::Client>,
    refresh_policy: RefreshPolicy,
    retry_policy: RetryPolicy,
    clock: Option<Arc<dyn Clock>>,
    events: Option<EventStreamPolicy>,
    dpop: Option<DpopKey>,
}

impl SessionClientBuilder {
    /// Binds the session to `key` (DPoP, RFC 9449; see the crate documentation): every refresh
    /// carries a proof signed by it, and tokens bound to it go as `Authorization: DPoP` with a
    /// proof. Off by default.
    pub fn dpop(mut self, key: DpopKey) -> Self {
        self.dpop = Some(key);
        self
    }

    /// Where the pair is kept; a [`MemoryStore`] by default.
    pub fn store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The HTTP client for the refresh requests and for [`SessionClient::send`]; by default
    /// one with rustls (certificates checked against the operating system's trust store), a
    /// 10 s connect timeout and a `sessiond-client` user agent.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// When to refresh; [`RefreshPolicy::default`] otherwise.
    pub fn refresh_policy(mut self, policy: RefreshPolicy) -> Self {
        self.refresh_policy = policy;
        self
    }

    /// How to retry a refresh; [`RetryPolicy::default`] otherwise.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// The clock that token expiry and refresh points are read from; the system's wall clock
    /// by default. For tests that move time by hand: with a clock other than the system's,
    /// the background task looks at it every [`CUSTOM_CLOCK_POLL`] (the clock may jump
    /// without any timer noticing).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Follows the session's event stream (`GET /v1/events`) from a background task, as
    /// `policy` says (see [`SessionClient::events_connected`] and the crate documentation):
    /// a revocation elsewhere signs the client out at once, and a refresh by another process
    /// sharing the token store is adopted from the store. Off by default.
    pub fn subscribe_events(mut self, policy: EventStreamPolicy) -> Self {
        self.events = Some(policy);
        self
    }

    /// Loads the stored pair (if any) and starts the background refresh task. Call it inside
    /// a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a base URL that is not `http(s)://…`; [`Error::Store`] when
    /// the store cannot be read (a damaged or foreign file: the application decides whether to
    /// [`clear`](TokenStore::clear) it); [`Error::Http`] when the default HTTP client cannot be
    /// built; [`Error::NoRuntime`] outside a Tokio runtime.
    pub async fn build(self) -> Result<SessionClient, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let base_url = parse_base_url(&self.base_url)?;
        let join = |path: &str| {
            base_url.join(path).map_err(|source| Error::InvalidUrl {
                url: self.base_url.clone(),
                source: Arc::new(source),
            })
        };
        let refresh_url = join("v1/sessions/refresh")?;
        let logout_url = join("v1/logout")?;
        let events_url = join("v1/events")?;
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .user_agent(concat!("sessiond-client/", env!("CARGO_PKG_VERSION")))
                .build()?,
        };
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn TokenStore>);
        let loaded = blocking(&store, |store| store.load()).await?;

        let refresh_policy = self.refresh_policy;
        let (state, current) = match loaded {
            Some(tokens) => (
                SessionState::of(&tokens),
                Some(Current::new(tokens, &refresh_policy)),
            ),
            None => (
                SessionState::SignedOut {
                    reason: SignOutReason::NoTokens,
                },
                None,
            ),
        };
        let inner = Arc::new(Inner {
            http,
            base_url,
            refresh_url,
            logout_url,
            events_url,
            store,
            dpop: self.dpop,
            nonces: Nonces::default(),
            refresh_policy,
            retry_policy: self.retry_policy,
            max_sleep: if self.clock.is_some() {
                CUSTOM_CLOCK_POLL
            } else {
                MAX_SLEEP
            },
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            shared: Mutex::new(Shared {
                current,
                signed_out: SignOutReason::NoTokens,
                generation: 0,
                in_flight: None,
                next_refresh_id: 0,
            }),
            write_lock: tokio::sync::Mutex::new(()),
            state: watch::Sender::new(state),
            events_connected: watch::Sender::new(false),
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        if refresh_policy.proactive {
            tasks.push(runtime.spawn(run_background(Arc::clone(&inner), stopped.clone())));
        }
        if let Some(policy) = self.events {
            tasks.push(runtime.spawn(events::run(Arc::clone(&inner), policy, stopped)));
        }
        Ok(SessionClient {
            inner,
            background: Arc::new(Background {
                stop,
                tasks: Mutex::new(tasks),
            }),
        })
    }
}

fn parse_base_url(text: &str) -> Result<Url, Error> {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Unusable(&'static str);

    let invalid = |source: Arc<dyn std::error::Error + Send + Sync>| Error::InvalidUrl {
        url: text.to_owned(),
        source,
    };
    let mut url = Url::parse(text).map_err(|error| invalid(Arc::new(error)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(Arc::new(Unusable(
            "the scheme must be http or https",
        ))));
    }
    if url.cannot_be_a_base() {
        return Err(invalid(Arc::new(Unusable("not a base URL"))));
    }
    // `join` replaces the last path segment unless the path ends with a slash, and a base
    // URL names a directory ("https://example.com/auth" serves "/auth/v1/...").
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// A sessiond client for an application or CLI that must stay signed in.
///
/// Clones share everything (tokens, the refresh in flight, the background task), so hand a
/// clone to each task. The background task stops when the last clone is dropped, or at
/// [`shutdown`](Self::shutdown). See the crate documentation for an example.
#[derive(Clone)]
pub struct SessionClient {
    inner: Arc<Inner>,
    background: Arc<Background>,
}

impl std::fmt::Debug for SessionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `SessionState` holds no secret.
        f.debug_struct("SessionClient")
            .field("base_url", &self.inner.base_url.as_str())
            .field("state", &*self.inner.state.borrow())
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl SessionClient {
    /// A builder for a client of the sessiond server at `base_url` (e.g.
    /// `https://auth.example.com`; a path is kept: `https://example.com/auth`).
    pub fn builder(base_url: impl Into<String>) -> SessionClientBuilder {
        SessionClientBuilder {
            base_url: base_url.into(),
            store: None,
            http: None,
            refresh_policy: RefreshPolicy::default(),
            retry_policy: RetryPolicy::default(),
            clock: None,
            events: None,
            dpop: None,
        }
    }

    /// Takes over `pair`, the answer of `POST /v1/sessions` that the application's backend
    /// passed on, as received just now: it is persisted, then published as
    /// [`SessionState::SignedIn`]. Replaces any pair the client held.
    ///
    /// # Errors
    /// [`Error::Store`] when the pair cannot be persisted; the client then keeps what it had.
    pub async fn sign_in(&self, pair: &TokenPairResponse) -> Result<(), Error> {
        self.set_tokens(StoredTokens::from_response(pair, self.inner.clock.now()))
            .await
    }

    /// Takes over `tokens` (e.g. restored from another place), like [`sign_in`](Self::sign_in).
    ///
    /// # Errors
    /// [`Error::Store`] when the pair cannot be persisted; the client then keeps what it had.
    pub async fn set_tokens(&self, tokens: StoredTokens) -> Result<(), Error> {
        self.inner
            .adopt(tokens, None, SaveFailure::Refuse)
            .await
            .map(|_| ())
    }

    /// An access token to send as `Authorization: Bearer` (or, bound to the client's DPoP key,
    /// as `Authorization: DPoP` with a proof from [`DpopKey::proof`]).
    ///
    /// While the cached token is valid this returns it at once, without touching the network,
    /// even when the refresh point has passed (the background task refreshes then). Once it
    /// has expired (the margin of [`RefreshPolicy::expiry_margin`] included), this joins the
    /// refresh in flight or starts one: any number of concurrent callers cause one refresh
    /// request.
    ///
    /// # Errors
    /// [`Error::SignedOut`] when the client holds no tokens, or the refresh found the session
    /// dead (storage is cleared then); [`Error::Unavailable`] when the server could not be
    /// reached within the [`RetryPolicy`] (the tokens are kept); another variant for an
    /// unexpected answer.
    pub async fn access_token(&self) -> Result<SecretString, Error> {
        self.inner.access_token().await.map(|(_, token)| token)
    }

    /// Refreshes now, whatever the cached token's expiry, and returns the new access token.
    /// A refresh already in flight is joined rather than duplicated.
    ///
    /// # Errors
    /// As for [`access_token`](Self::access_token).
    pub async fn refresh(&self) -> Result<SecretString, Error> {
        self.inner.refresh_from(None).await.map(|(_, token)| token)
    }

    /// A receiver of the session's state: [`SessionState::SignedIn`] after every sign-in and
    /// refresh, [`SessionState::SignedOut`] when the session ends. Watch it to send the user
    /// to the login screen.
    pub fn state(&self) -> watch::Receiver<SessionState> {
        self.inner.state.subscribe()
    }

    /// The session's state now.
    pub fn current_state(&self) -> SessionState {
        self.inner.state.borrow().clone()
    }

    /// The RFC 7638 thumbprint of the client's DPoP key ([`SessionClientBuilder::dpop`]), for
    /// the application's backend to create the session with (`dpop_jkt`); `None` without one.
    pub fn dpop_thumbprint(&self) -> Option<&str> {
        self.inner.dpop.as_ref().map(DpopKey::thumbprint)
    }

    /// The HTTP client the session client uses, for requests that need no token.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// A request to `url` on the client's HTTP client, for [`send`](Self::send). No token is
    /// attached yet.
    pub fn request(&self, method: Method, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.inner.http.request(method, url)
    }

    /// Sends `request` with `Authorization: Bearer <access token>`
    /// (from [`access_token`](Self::access_token)), or, for a token bound to the client's DPoP
    /// key, `Authorization: DPoP <access token>` and a proof (sent once more at once with the
    /// server's nonce if it answers `401` asking for one). If the answer is `401`, the client
    /// refreshes once (joining any refresh in flight; none when another task already replaced
    /// the token that was refused) and sends the request once more with the new token; that
    /// second answer is returned whatever it is.
    ///
    /// The retry needs a copy of the request ([`RequestBuilder::try_clone`]): a request with a
    /// streaming body cannot be copied, so its `401` is returned as it is. Do not set an
    /// `Authorization` header yourself. A `401` means the request was not processed, so the
    /// retry is safe even for a non-idempotent method.
    ///
    /// # Errors
    /// As for [`access_token`](Self::access_token), and [`Error::Http`] when the request fails.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, Error> {
        let (client, request) = request.build_split();
        let request = request?;
        let retry = request.try_clone();
        let (generation, token) = self.inner.access_token().await?;
        let response = self.inner.send_authorized(&client, request, &token).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(retry) = retry else {
            tracing::debug!("401 on a request whose body cannot be sent again; not retried");
            return Ok(response);
        };
        drop(response);
        tracing::debug!("401: refreshing once and retrying");
        let (_, token) = self.inner.refresh_from(Some(generation)).await?;
        self.inner.send_authorized(&client, retry, &token).await
    }

    /// Signs out: ends the session on the server (`POST /v1/logout`, refreshing first if the
    /// access token has expired), then clears the tokens and storage and publishes
    /// `SignedOut { reason: LoggedOut }`. The local part happens even when the server part
    /// fails.
    ///
    /// # Errors
    /// When the server could not be told (the session then lives on there until it expires
    /// or is revoked), or storage could not be cleared.
    pub async fn sign_out(&self) -> Result<(), Error> {
        let on_server = match self.inner.access_token().await {
            Ok((_, token)) => self.inner.logout_on_server(&token).await,
            Err(Error::SignedOut { .. }) => Ok(()),
            Err(error) => Err(error),
        };
        let locally = self
            .inner
            .sign_out_locally(SignOutReason::LoggedOut, None)
            .await;
        on_server?;
        locally.map(|_| ()).map_err(Error::from)
    }

    /// Whether the event stream is open right now (always `false` without
    /// [`SessionClientBuilder::subscribe_events`]). Watch it, e.g. to show that revocations
    /// elsewhere are noticed at once, or only at the next refresh while it is `false`.
    pub fn events_connected(&self) -> watch::Receiver<bool> {
        self.inner.events_connected.subscribe()
    }

    /// Stops the background tasks (the refresh task and the event stream, for every clone of
    /// this client) and waits for them and for a refresh in flight to finish. Calls made
    /// afterwards still work; they just refresh on demand only.
    pub async fn shutdown(&self) {
        let _ = self.background.stop.send(true);
        let tasks = std::mem::take(
            &mut *self
                .background
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            let _ = task.await;
        }
        let in_flight = self
            .inner
            .shared()
            .in_flight
            .as_ref()
            .map(|in_flight| in_flight.result.clone());
        if let Some(mut result) = in_flight {
            let _ = result.wait_for(Option::is_some).await;
        }
    }
}

/// The background tasks' handles; they stop when this is dropped (with the last client clone).
struct Background {
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        // Dropping `stop` also ends the task: `changed()` fails once the sender is gone. Telling
        // it explicitly is clearer.
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_is_a_directory_whatever_its_trailing_slash() {
        for base in ["https://example.com", "https://example.com/"] {
            let url = parse_base_url(base).expect("valid");
            assert_eq!(
                url.join("v1/sessions/refresh").expect("joins").as_str(),
                "https://example.com/v1/sessions/refresh"
            );
        }
        for base in [
            "https://example.com/auth",
            "https://example.com/auth/?x=1#f",
        ] {
            let url = parse_base_url(base).expect("valid");
            assert_eq!(
                url.join("v1/logout").expect("joins").as_str(),
                "https://example.com/auth/v1/logout"
            );
        }
        assert!(parse_base_url("mailto:someone@example.com").is_err());
        assert!(parse_base_url("/relative").is_err());
    }
}
