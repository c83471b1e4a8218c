//! The state a [`SessionClient`](crate::SessionClient) and its background tasks share: the
//! token pair and its generation, the refresh in flight, and the operations on them (refresh,
//! sign-in, sign-out, persisting to the store).
//!
//! `client.rs` builds it and answers the public API from it; `events.rs` follows the event
//! stream with it. How the pieces fit is described in `client.rs`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode, Url};
use sessiond_wire::{ErrorBody, RefreshRequest, TokenPairResponse};
use tokio::sync::watch;

use crate::dpop::{self, DPOP, Nonces};
use crate::policy::random_fraction;
use crate::{
    Clock, DpopKey, Error, RefreshPolicy, RetryPolicy, SecretString, SessionState, SignOutReason,
    StoreError, StoredTokens, TokenStore,
};

/// The longest single sleep of the background task. Tokio's timers run on a monotonic clock
/// that may stand still while a laptop sleeps, so the task wakes at least this often to look
/// at the wall clock again.
pub(crate) const MAX_SLEEP: Duration = Duration::from_secs(30);

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) base_url: Url,
    pub(crate) refresh_url: Url,
    pub(crate) logout_url: Url,
    pub(crate) events_url: Url,
    pub(crate) store: Arc<dyn TokenStore>,
    /// The key sessions are bound to, when the client has one.
    pub(crate) dpop: Option<DpopKey>,
    /// The latest `DPoP-Nonce` of each server.
    pub(crate) nonces: Nonces,
    pub(crate) refresh_policy: RefreshPolicy,
    pub(crate) retry_policy: RetryPolicy,
    pub(crate) clock: Arc<dyn Clock>,
    /// The background task's longest sleep: [`MAX_SLEEP`], or [`CUSTOM_CLOCK_POLL`](crate::CUSTOM_CLOCK_POLL) with a
    /// clock other than the system's.
    pub(crate) max_sleep: Duration,
    pub(crate) shared: Mutex<Shared>,
    /// Held while the store and `shared.current` are changed together.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    pub(crate) state: watch::Sender<SessionState>,
    /// Whether the event stream is open.
    pub(crate) events_connected: watch::Sender<bool>,
}

pub(crate) struct Shared {
    pub(crate) current: Option<Current>,
    /// Why `current` is `None` (meaningless while it is `Some`).
    pub(crate) signed_out: SignOutReason,
    /// Changes whenever `current` is replaced or cleared.
    pub(crate) generation: u64,
    pub(crate) in_flight: Option<InFlight>,
    pub(crate) next_refresh_id: u64,
}

pub(crate) struct Current {
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
    pub(crate) fn new(tokens: StoredTokens, policy: &RefreshPolicy) -> Self {
        Self {
            refresh_at: policy.refresh_at(&tokens, random_fraction()),
            tokens: Arc::new(tokens),
        }
    }
}

/// The outcome of a refresh, shared by everyone waiting for it: `None` until it is known.
pub(crate) type RefreshOutcome = Option<Result<(), Error>>;

pub(crate) struct InFlight {
    id: u64,
    /// The generation of the pair being refreshed.
    generation: u64,
    pub(crate) result: watch::Receiver<RefreshOutcome>,
}

/// Clears `in_flight` when the refresh task ends, however it ends (a panic included), so that
/// a dead refresh is never joined.
pub(crate) struct InFlightGuard {
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
pub(crate) enum SaveFailure {
    /// Keep the old pair and report the error (a sign-in: the caller can act on it).
    Refuse,
    /// Use the new pair anyway (a refresh: the old refresh token is already spent).
    UseAnyway,
}

/// One refresh request's outcome.
pub(crate) enum Attempt {
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
    pub(crate) fn shared(&self) -> MutexGuard<'_, Shared> {
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

    /// One refresh request (sent once more at once when the server asks for a DPoP nonce).
    async fn refresh_attempt(&self, refresh_token: &SecretString) -> Attempt {
        let mut nonce_sent = false;
        loop {
            let response = match self.send_refresh(refresh_token).await {
                Ok(response) => response,
                Err(attempt) => return attempt,
            };
            if self.dpop.is_some()
                && !nonce_sent
                && response.status() == StatusCode::BAD_REQUEST
                && response.headers().contains_key("dpop-nonce")
            {
                let (status, headers) = (response.status(), response.headers().clone());
                let bytes = response.bytes().await.unwrap_or_default();
                let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
                if body
                    .as_ref()
                    .is_some_and(|body| body.error == "use_dpop_nonce")
                {
                    nonce_sent = true;
                    tracing::debug!("the server asked for a DPoP nonce; sending the refresh again");
                    continue;
                }
                return refused(status, &headers, body);
            }
            return Self::read_refresh(response).await;
        }
    }

    /// Sends the refresh request, with a DPoP proof when the client has a key.
    async fn send_refresh(&self, refresh_token: &SecretString) -> Result<Response, Attempt> {
        let mut request = self
            .http
            .post(self.refresh_url.clone())
            .timeout(self.retry_policy.request_timeout)
            .json(&RefreshRequest {
                refresh_token: refresh_token.expose().to_owned(),
            });
        if let Some(key) = &self.dpop {
            let nonce = self.nonces.get(&self.refresh_url);
            let proof = key
                .proof(&Method::POST, &self.refresh_url, None, nonce.as_deref())
                .map_err(Attempt::Failed)?;
            request = request.header(DPOP, proof);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_builder() || error.is_redirect() => {
                return Err(Attempt::Failed(error.into()));
            }
            // Connection refused or reset, a timeout: try again. If the request did reach
            // the server, presenting the same token again within the reuse grace window
            // returns the same successor.
            Err(error) => {
                return Err(Attempt::Retryable {
                    error: error.into(),
                    retry_after: None,
                });
            }
        };
        self.nonces.note(&self.refresh_url, response.headers());
        Ok(response)
    }

    /// What the answer to a refresh means.
    async fn read_refresh(response: Response) -> Attempt {
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
        let headers = response.headers().clone();
        let body: Option<ErrorBody> = response
            .bytes()
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        refused(status, &headers, body)
    }

    /// Persists `tokens`, then makes them current and publishes `SignedIn`, unless the pair
    /// has changed since generation `expected` (then nothing happens and this returns
    /// `Ok(false)`).
    pub(crate) async fn adopt(
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
    pub(crate) async fn sign_out_locally(
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

    /// Sends `request` with `access_token` (`Bearer`, or `DPoP` and a proof for a token bound
    /// to the client's key), once more with the server's nonce if it asks for one.
    ///
    /// # Errors
    /// [`Error::Http`] when the request fails, [`Error::Dpop`] when no proof can be signed.
    pub(crate) async fn send_authorized(
        &self,
        client: &reqwest::Client,
        mut request: reqwest::Request,
        access_token: &SecretString,
    ) -> Result<Response, Error> {
        let again = match &self.dpop {
            Some(_) if dpop::is_bound(access_token) => request.try_clone(),
            _ => None,
        };
        self.authorize(&mut request, access_token)?;
        let url = request.url().clone();
        let response = client.execute(request).await?;
        self.nonces.note(&url, response.headers());
        match again {
            Some(mut again) if dpop::resource_asks_for_nonce(&response) => {
                drop(response);
                tracing::debug!("the server asked for a DPoP nonce; sending the request again");
                self.authorize(&mut again, access_token)?;
                let response = client.execute(again).await?;
                self.nonces.note(&url, response.headers());
                Ok(response)
            }
            _ => Ok(response),
        }
    }

    /// Puts `access_token` (and a proof, for a bound token) on `request`.
    pub(crate) fn authorize(
        &self,
        request: &mut reqwest::Request,
        access_token: &SecretString,
    ) -> Result<(), Error> {
        let (method, url) = (request.method().clone(), request.url().clone());
        dpop::authorize(
            request.headers_mut(),
            self.dpop.as_ref(),
            &self.nonces,
            &method,
            &url,
            access_token,
        )
    }

    pub(crate) async fn logout_on_server(&self, access_token: &SecretString) -> Result<(), Error> {
        let request = self
            .http
            .post(self.logout_url.clone())
            .timeout(self.retry_policy.request_timeout)
            .build()?;
        let response = self
            .send_authorized(&self.http, request, access_token)
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

/// What a refresh answered with an error status means.
fn refused(status: StatusCode, headers: &HeaderMap, body: Option<ErrorBody>) -> Attempt {
    let retry_after_header = retry_after(headers);
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
pub(crate) async fn blocking<T: Send + 'static>(
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
pub(crate) async fn run_background(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
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
