//! [`SessionClient`]: holds the token pair, refreshes it ahead of expiry in a background task,
//! lets concurrent callers share one refresh, retries refreshes that may succeed later, and
//! signs out (clearing storage) when the server says the refresh token is dead.
//!
//! How the pieces fit: the pair lives in `Shared` behind a short `std::sync::Mutex` (never
//! held across an `.await`), with a generation number that changes whenever the pair is
//! replaced or cleared. A refresh runs in its own spawned task, so a caller that gives up
//! waiting (a dropped future, a timeout) cannot cancel it half-way: a refresh the server has
//! performed is always persisted, otherwise the spent refresh token would be presented again
//! later and taken as theft. Callers join the refresh in flight through a `watch` channel that
//! carries its result. Writes to the store and to `Shared` are serialised by an async mutex,
//! so storage and memory change in the same order.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use sessiond_wire::{ErrorBody, RefreshRequest, TokenPairResponse};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{CUSTOM_CLOCK_POLL, SystemClock};
use crate::events;
use crate::policy::random_fraction;
use crate::{
    Clock, Error, EventStreamPolicy, MemoryStore, RefreshPolicy, RetryPolicy, SecretString,
    SessionState, SignOutReason, StoreError, StoredTokens, TokenStore,
};

/// The longest single sleep of the background task. Tokio's timers run on a monotonic clock
/// that may stand still while a laptop sleeps, so the task wakes at least this often to look
/// at the wall clock again.
const MAX_SLEEP: Duration = Duration::from_secs(30);

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
}

impl SessionClientBuilder {
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

    /// An access token to send as `Authorization: Bearer`.
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
    /// (from [`access_token`](Self::access_token)). If the answer is `401`, the client
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
        let retry = request.try_clone();
        let (generation, token) = self.inner.access_token().await?;
        let response = request.bearer_auth(token.expose()).send().await?;
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
        Ok(retry.bearer_auth(token.expose()).send().await?)
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

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    base_url: Url,
    refresh_url: Url,
    logout_url: Url,
    pub(crate) events_url: Url,
    store: Arc<dyn TokenStore>,
    refresh_policy: RefreshPolicy,
    retry_policy: RetryPolicy,
    pub(crate) clock: Arc<dyn Clock>,
    /// The background task's longest sleep: [`MAX_SLEEP`], or [`CUSTOM_CLOCK_POLL`] with a
    /// clock other than the system's.
    max_sleep: Duration,
    shared: Mutex<Shared>,
    /// Held while the store and `shared.current` are changed together.
    write_lock: tokio::sync::Mutex<()>,
    pub(crate) state: watch::Sender<SessionState>,
    /// Whether the event stream is open.
    pub(crate) events_connected: watch::Sender<bool>,
}

struct Shared {
    current: Option<Current>,
    /// Why `current` is `None` (meaningless while it is `Some`).
    signed_out: SignOutReason,
    /// Changes whenever `current` is replaced or cleared.
    generation: u64,
    in_flight: Option<InFlight>,
    next_refresh_id: u64,
}

struct Current {
    tokens: Arc<StoredTokens>,
    /// When the background task refreshes, jitter included (drawn once per pair).
    refresh_at: SystemTime,
}

impl Shared {
    fn signed_out_error(&self) -> Error {
        Error::SignedOut {
            reason: self.signed_out.clone(),
        }
    }
}

impl Current {
    fn new(tokens: StoredTokens, policy: &RefreshPolicy) -> Self {
        Self {
            refresh_at: policy.refresh_at(&tokens, random_fraction()),
            tokens: Arc::new(tokens),
        }
    }
}

/// The outcome of a refresh, shared by everyone waiting for it: `None` until it is known.
type RefreshOutcome = Option<Result<(), Error>>;

struct InFlight {
    id: u64,
    /// The generation of the pair being refreshed.
    generation: u64,
    result: watch::Receiver<RefreshOutcome>,
}

/// Clears `in_flight` when the refresh task ends, however it ends (a panic included), so that
/// a dead refresh is never joined.
struct InFlightGuard {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut shared = self.inner.shared();
        if shared
            .in_flight
            .as_ref()
            .is_some_and(|in_flight| in_flight.id == self.id)
        {
            shared.in_flight = None;
        }
    }
}

/// What to do when a new pair cannot be persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaveFailure {
    /// Keep the old pair and report the error (a sign-in: the caller can act on it).
    Refuse,
    /// Use the new pair anyway (a refresh: the old refresh token is already spent).
    UseAnyway,
}

/// One refresh request's outcome.
enum Attempt {
    Refreshed(Box<TokenPairResponse>),
    /// `invalid_refresh_token`: the refresh token will never work again.
    Rejected(SignOutReason),
    /// May work if tried again.
    Retryable {
        error: Error,
        retry_after: Option<Duration>,
    },
    /// Will not work if tried again, but the tokens may still be good.
    Failed(Error),
}

impl Inner {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        // Every critical section assigns whole values, so a panic cannot leave `Shared`
        // half-updated.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current access token and its generation, refreshing first if it has expired.
    pub(crate) async fn access_token(self: &Arc<Self>) -> Result<(u64, SecretString), Error> {
        let stale_generation = {
            let shared = self.shared();
            let Some(current) = &shared.current else {
                return Err(shared.signed_out_error());
            };
            if self
                .refresh_policy
                .is_usable(&current.tokens, self.clock.now())
            {
                return Ok((shared.generation, current.tokens.access_token.clone()));
            }
            shared.generation
        };
        self.refresh_from(Some(stale_generation)).await
    }

    /// Refreshes the pair of generation `seen` (`None`: whatever the current pair is), joining
    /// a refresh in flight, and returns the new access token. If the pair of `seen` has been
    /// replaced meanwhile, the replacement is returned without a refresh.
    pub(crate) async fn refresh_from(
        self: &Arc<Self>,
        seen: Option<u64>,
    ) -> Result<(u64, SecretString), Error> {
        let mut result = {
            let mut shared = self.shared();
            if let Some(seen) = seen
                && seen != shared.generation
            {
                return match &shared.current {
                    Some(current) => Ok((shared.generation, current.tokens.access_token.clone())),
                    None => Err(shared.signed_out_error()),
                };
            }
            // A refresh in flight for an older pair (replaced by a sign-in since) would not
            // refresh this one.
            match &shared.in_flight {
                Some(in_flight) if in_flight.generation == shared.generation => {
                    in_flight.result.clone()
                }
                _ => self.start_refresh(&mut shared)?,
            }
        };
        let outcome = result
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::RefreshInterrupted)?
            .clone();
        match outcome {
            Some(Ok(())) => {
                let shared = self.shared();
                match &shared.current {
                    Some(current) => Ok((shared.generation, current.tokens.access_token.clone())),
                    None => Err(shared.signed_out_error()),
                }
            }
            Some(Err(error)) => Err(error),
            None => Err(Error::RefreshInterrupted),
        }
    }

    /// Spawns the refresh of the current pair and records it as in flight.
    fn start_refresh(
        self: &Arc<Self>,
        shared: &mut Shared,
    ) -> Result<watch::Receiver<RefreshOutcome>, Error> {
        let Some(current) = &shared.current else {
            return Err(shared.signed_out_error());
        };
        let tokens = Arc::clone(&current.tokens);
        let generation = shared.generation;
        let id = shared.next_refresh_id;
        shared.next_refresh_id += 1;
        let (sender, receiver) = watch::channel(None);
        shared.in_flight = Some(InFlight {
            id,
            generation,
            result: receiver.clone(),
        });
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let guard = InFlightGuard {
                inner: Arc::clone(&inner),
                id,
            };
            let outcome = inner.run_refresh(&tokens, generation).await;
            // The slot is cleared before the result is published, so a caller woken by it
            // who asks for another refresh starts a new one instead of joining this one.
            drop(guard);
            sender.send_replace(Some(outcome));
        });
        Ok(receiver)
    }

    /// Refreshes `tokens` (of `generation`), retrying as the [`RetryPolicy`] says.
    #[tracing::instrument(name = "refresh", skip_all, fields(session_id = %tokens.session_id))]
    async fn run_refresh(&self, tokens: &StoredTokens, generation: u64) -> Result<(), Error> {
        // Another process sharing the store may have refreshed this session already. Its pair
        // is the one to use: presenting the refresh token it spent would be answered with the
        // same pair within the reuse grace window, and taken as theft after it.
        let reloaded;
        let (tokens, generation) = match self.adopt_newer_stored().await {
            Ok(Some((newer, newer_generation))) => {
                if self.refresh_policy.is_usable(&newer, self.clock.now()) {
                    return Ok(());
                }
                reloaded = newer;
                (&*reloaded, newer_generation)
            }
            Ok(None) => (tokens, generation),
            Err(error) => {
                tracing::warn!(error = %error, "cannot read the token store before refreshing");
                (tokens, generation)
            }
        };
        let started = tokio::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // Taken before the request leaves, so the expiry computed from `expires_in` errs
            // on the early side by the request's duration.
            let sent_at = self.clock.now();
            match self.refresh_attempt(&tokens.refresh_token).await {
                Attempt::Refreshed(pair) => {
                    let tokens = StoredTokens::from_response(&pair, sent_at);
                    tracing::debug!(attempt, "refreshed");
                    return self
                        .adopt(tokens, Some(generation), SaveFailure::UseAnyway)
                        .await
                        .map(|_| ());
                }
                Attempt::Rejected(reason) => {
                    tracing::info!(%reason, "refresh token refused; signing out");
                    return match self
                        .sign_out_locally(reason.clone(), Some(generation))
                        .await
                    {
                        Ok(true) | Err(_) => Err(Error::SignedOut { reason }),
                        // Another sign-in replaced the pair meanwhile: it is not affected.
                        Ok(false) => Ok(()),
                    };
                }
                Attempt::Failed(error) => {
                    tracing::warn!(attempt, error = %error, "refresh failed");
                    return Err(error);
                }
                Attempt::Retryable { error, retry_after } => {
                    let wait = self.retry_policy.backoff(attempt, retry_after);
                    if attempt >= self.retry_policy.max_attempts
                        || started.elapsed() + wait > self.retry_policy.max_elapsed
                    {
                        tracing::warn!(attempt, error = %error, "refresh failed; giving up");
                        return Err(Error::Unavailable {
                            attempts: attempt,
                            last: Box::new(error),
                        });
                    }
                    tracing::debug!(attempt, ?wait, error = %error, "refresh failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn refresh_attempt(&self, refresh_token: &SecretString) -> Attempt {
        let request = self
            .http
            .post(self.refresh_url.clone())
            .timeout(self.retry_policy.request_timeout)
            .json(&RefreshRequest {
                refresh_token: refresh_token.expose().to_owned(),
            });
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_builder() || error.is_redirect() => {
                return Attempt::Failed(error.into());
            }
            // Connection refused or reset, a timeout: try again. If the request did reach
            // the server, presenting the same token again within the reuse grace window
            // returns the same successor.
            Err(error) => {
                return Attempt::Retryable {
                    error: error.into(),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        if status == StatusCode::OK {
            return match response.json::<TokenPairResponse>().await {
                Ok(pair) => Attempt::Refreshed(Box::new(pair)),
                // A body cut off on the way: the server has rotated, and the retry within the
                // grace window gets the same pair.
                Err(error) => Attempt::Retryable {
                    error: error.into(),
                    retry_after: None,
                },
            };
        }
        let retry_after_header = retry_after(response.headers());
        let body: Option<ErrorBody> = response
            .bytes()
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let code = body.as_ref().map(|body| body.error.clone());
        if status == StatusCode::UNAUTHORIZED && code.as_deref() == Some("invalid_refresh_token") {
            let reason = body.as_ref().and_then(|body| body.reason.as_deref());
            return Attempt::Rejected(SignOutReason::from_server(reason));
        }
        let retry_after = retry_after_header.or_else(|| {
            body.as_ref()
                .and_then(|body| body.retry_after)
                .map(Duration::from_secs)
        });
        let error = Error::Status {
            status: status.as_u16(),
            code,
            retry_after,
        };
        match status {
            StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT => Attempt::Retryable { error, retry_after },
            _ => Attempt::Failed(error),
        }
    }

    /// Persists `tokens`, then makes them current and publishes `SignedIn`, unless the pair
    /// has changed since generation `expected` (then nothing happens and this returns
    /// `Ok(false)`).
    async fn adopt(
        &self,
        tokens: StoredTokens,
        expected: Option<u64>,
        on_save_failure: SaveFailure,
    ) -> Result<bool, Error> {
        let _writing = self.write_lock.lock().await;
        if let Some(expected) = expected
            && self.shared().generation != expected
        {
            tracing::debug!("the pair changed during the refresh; its result is dropped");
            return Ok(false);
        }
        let copy = tokens.clone();
        if let Err(error) = blocking(&self.store, move |store| store.save(&copy)).await {
            match on_save_failure {
                SaveFailure::Refuse => return Err(error.into()),
                SaveFailure::UseAnyway => tracing::error!(
                    error = %error,
                    "cannot persist the refreshed pair; using it from memory only"
                ),
            }
        }
        self.install(tokens);
        Ok(true)
    }

    /// Makes `tokens` current and publishes `SignedIn`; returns the new generation. The caller
    /// holds `write_lock` and has persisted `tokens` (or read them from the store).
    fn install(&self, tokens: StoredTokens) -> u64 {
        let state = SessionState::of(&tokens);
        let generation = {
            let mut shared = self.shared();
            shared.generation += 1;
            shared.current = Some(Current::new(tokens, &self.refresh_policy));
            shared.generation
        };
        self.state.send_replace(state);
        generation
    }

    /// Adopts the pair in the store if another process sharing it has refreshed the current
    /// session since this one's pair was received: same session, another refresh token, and
    /// received later. An older pair, or one of another session, never replaces the current
    /// one. Nothing is written to the store. Returns the adopted pair and its generation.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub(crate) async fn adopt_newer_stored(
        &self,
    ) -> Result<Option<(Arc<StoredTokens>, u64)>, StoreError> {
        let _writing = self.write_lock.lock().await;
        let Some(stored) = blocking(&self.store, |store| store.load()).await? else {
            return Ok(None);
        };
        let newer = match &self.shared().current {
            Some(current) => {
                stored.session_id == current.tokens.session_id
                    && stored.refresh_token != current.tokens.refresh_token
                    && stored.received_at > current.tokens.received_at
            }
            None => false,
        };
        if !newer {
            return Ok(None);
        }
        tracing::debug!(session_id = %stored.session_id, "adopting the pair another process refreshed");
        let tokens = Arc::new(stored.clone());
        let generation = self.install(stored);
        Ok(Some((tokens, generation)))
    }

    /// The current pair's generation and session, if signed in.
    pub(crate) fn current_session(&self) -> Option<(u64, String)> {
        let shared = self.shared();
        shared
            .current
            .as_ref()
            .map(|current| (shared.generation, current.tokens.session_id.clone()))
    }

    /// The current pair's generation.
    pub(crate) fn generation(&self) -> u64 {
        self.shared().generation
    }

    /// Whether a refresh of the current pair is in flight.
    pub(crate) fn refreshing(&self) -> bool {
        let shared = self.shared();
        shared
            .in_flight
            .as_ref()
            .is_some_and(|in_flight| in_flight.generation == shared.generation)
    }

    /// Signs out as [`sign_out_locally`](Self::sign_out_locally) does, if the current pair
    /// belongs to `session_id` (the server said that session ended); returns whether it did.
    pub(crate) async fn sign_out_session(&self, session_id: &str, reason: SignOutReason) -> bool {
        let generation = {
            let shared = self.shared();
            match &shared.current {
                Some(current) if current.tokens.session_id == session_id => shared.generation,
                _ => return false,
            }
        };
        // The session is over, so every pair of it is dead, including one that a refresh
        // installed meanwhile: try again with the newest generation until the pair is gone or
        // belongs to another session (a sign-in replaced it).
        let mut expected = generation;
        loop {
            match self.sign_out_locally(reason.clone(), Some(expected)).await {
                Ok(true) | Err(_) => return true,
                Ok(false) => {}
            }
            let shared = self.shared();
            match &shared.current {
                Some(current) if current.tokens.session_id == session_id => {
                    expected = shared.generation;
                }
                _ => return false,
            }
        }
    }

    /// Clears storage, then the pair, then publishes `SignedOut { reason }`, unless the pair
    /// has changed since generation `expected` (then nothing happens and this returns
    /// `Ok(false)`). The pair is forgotten even when storage cannot be cleared; that error is
    /// returned afterwards.
    async fn sign_out_locally(
        &self,
        reason: SignOutReason,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let _writing = self.write_lock.lock().await;
        if let Some(expected) = expected
            && self.shared().generation != expected
        {
            return Ok(false);
        }
        let cleared = blocking(&self.store, TokenStore::clear).await;
        if let Err(error) = &cleared {
            tracing::error!(error = %error, "cannot clear the token store");
        }
        {
            let mut shared = self.shared();
            shared.generation += 1;
            shared.current = None;
            shared.signed_out = reason.clone();
        }
        self.state.send_replace(SessionState::SignedOut { reason });
        cleared.map(|()| true)
    }

    async fn logout_on_server(&self, access_token: &SecretString) -> Result<(), Error> {
        let response = self
            .http
            .post(self.logout_url.clone())
            .timeout(self.retry_policy.request_timeout)
            .bearer_auth(access_token.expose())
            .send()
            .await?;
        match response.status() {
            // 401: the session is already over on the server.
            status if status.is_success() || status == StatusCode::UNAUTHORIZED => Ok(()),
            status => Err(Error::Status {
                status: status.as_u16(),
                code: None,
                retry_after: retry_after(response.headers()),
            }),
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by sessiond and is ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Runs a store operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn TokenStore>,
    operation: impl FnOnce(&dyn TokenStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || operation(store.as_ref()))
        .await
        .unwrap_or_else(|join_error| Err(StoreError::Other(Box::new(join_error))))
}

/// The background task: sleeps until the current pair's refresh point, refreshes, and starts
/// over; wakes early when the pair changes (a refresh on demand, a sign-in or sign-out).
async fn run_background(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut state = inner.state.subscribe();
    let mut failures = 0u32;
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        // Marked seen before the pair is read, so a change after the read wakes the select.
        state.borrow_and_update();
        let (generation, refresh_at) = {
            let shared = inner.shared();
            (
                shared.generation,
                shared.current.as_ref().map(|current| current.refresh_at),
            )
        };
        let wait = match refresh_at {
            Some(_) if failures > 0 => Some(inner.refresh_policy.failure_backoff(failures)),
            Some(refresh_at) => Some(
                refresh_at
                    .duration_since(inner.clock.now())
                    .unwrap_or(Duration::ZERO),
            ),
            None => None,
        };
        let sleep = wait.unwrap_or(Duration::ZERO).min(inner.max_sleep);
        tokio::select! {
            _ = stop.changed() => return,
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                failures = 0;
                continue;
            }
            () = tokio::time::sleep(sleep), if wait.is_some() => {}
        }
        let due = match refresh_at {
            Some(refresh_at) => failures > 0 || inner.clock.now() >= refresh_at,
            None => false,
        };
        if !due {
            continue;
        }
        match inner.refresh_from(Some(generation)).await {
            Ok(_) | Err(Error::SignedOut { .. }) => failures = 0,
            Err(error) => {
                failures += 1;
                tracing::warn!(error = %error, failures, "background refresh failed; will retry");
            }
        }
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
