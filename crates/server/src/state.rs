//! [`AppState`], what every request handler shares, and how it is built from a configuration
//! (the store is opened by `database.rs`, admin credentials are `admin_auth.rs`'s).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sessiond_core::dbsc::{CHALLENGE_KEY_LABEL, ChallengeKey};
use sessiond_core::service::ServiceSettings;
use sessiond_core::signing_keys::KeyLoading;
use sessiond_core::store::{Store, StoreError, StoreStats};
use sessiond_core::token::AccessTokenIssuer;
use sessiond_core::{Clock, SessionService};

use crate::admin_auth::{AdminKeys, IntrospectionClients};
use crate::config::Config;
use crate::connections::ConnectionSettings;
use crate::database::{OpenMode, check_signing_algorithm, open_store};
use crate::dpop::Dpop;
use crate::events::EventHub;
use crate::history::StatsHistory;
use crate::instrumented_store::InstrumentedStore;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimits;
use crate::refresh_failures::RefreshFailures;
use crate::store_counts::StoreCounts;

/// How often an instance on a shared database looks for events other instances wrote.
const SHARED_STORE_EVENT_POLL: Duration = Duration::from_millis(100);
/// How often an instance on its own SQLite file looks for events other processes wrote.
const LOCAL_STORE_EVENT_POLL: Duration = Duration::from_secs(1);

/// What handlers share: one reference-counted [`SharedState`], so that handing it to a handler
/// or a middleware layer (axum clones it several times per request) is one counter increment.
#[derive(Debug, Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The contents of an [`AppState`].
#[derive(Debug)]
pub struct SharedState {
    /// The session operations.
    pub service: Arc<SessionService>,
    /// Admin credentials.
    pub admin_keys: Arc<AdminKeys>,
    /// Resource servers' credentials, for introspection only.
    pub introspection_clients: Arc<IntrospectionClients>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// What this process counts, for `/metrics` and `/v1/stats`.
    pub metrics: Arc<Metrics>,
    /// The open event streams of this process.
    pub events: Arc<EventHub>,
    /// How often an idle event stream gets a heartbeat.
    pub event_heartbeat: Duration,
    /// How long events are kept for streams that resume.
    pub event_retention: Duration,
    /// How often events written by other processes are looked for.
    pub event_poll: Duration,
    /// Whether the refresh token also travels in an HttpOnly cookie (`SESSIOND_COOKIE_MODE`).
    pub cookie_mode: bool,
    /// Device Bound Session Credentials, when they are on (`SESSIOND_DBSC`).
    pub dbsc: Option<Arc<Dbsc>>,
    /// Origins answered with CORS headers (`SESSIOND_CORS_ORIGINS`), lower-case.
    pub cors_origins: Arc<[String]>,
    /// Rate limits, and where the client address comes from.
    pub limits: Arc<RateLimits>,
    /// The last hour of counters, a minute at a time, for `GET /v1/stats/history`.
    pub history: Arc<StatsHistory>,
    /// Failed refreshes waiting to be written to the audit trail.
    pub refresh_failures: Arc<RefreshFailures>,
    /// The `frame-ancestors` sources of the web UI's pages (`SESSIOND_UI_FRAME_ANCESTORS`).
    pub ui_frame_ancestors: Arc<str>,
    /// Connection timeouts and the connection cap; the body timeout is applied by the router.
    pub connections: ConnectionSettings,
    /// How DPoP proofs are checked, and the replay cache of those sent with access tokens.
    pub dpop: Arc<Dpop>,
    /// The counts over the active sessions, one at a time ([`SharedState::store_stats`]).
    pub(crate) store_counts: StoreCounts,
}

impl SharedState {
    /// Counts over the sessions active now, read from storage after this call (shared with
    /// the other callers of the moment: see [`crate::store_counts`]).
    ///
    /// # Errors
    /// When the store cannot count.
    pub(crate) async fn store_stats(&self) -> Result<StoreStats, StoreError> {
        self.store_counts
            .count(|| self.service.store().stats(self.service.now()))
            .await
    }
}

impl AppState {
    /// Opens the store named by `config` (creating it or not, as `mode` says), brings its
    /// schema up to date, and starts the service.
    ///
    /// # Errors
    /// When the store cannot be opened or the service cannot start.
    pub async fn build(
        config: &Config,
        clock: Arc<dyn Clock>,
        mode: OpenMode,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let events = Arc::new(EventHub::new(config.stream_limits));
        let inner = open_store(config, mode).await?;
        // Before anything else reads or writes: a wrong master key stops here, with nothing
        // written.
        if matches!(mode, OpenMode::ReadOnly | OpenMode::AsIs) {
            crate::master_key::unlock_existing(config, inner.as_ref(), clock.now()).await?;
        } else {
            crate::master_key::unlock(config, inner.as_ref(), clock.now()).await?;
        }
        if mode == OpenMode::CreateIfMissing {
            check_signing_algorithm(inner.as_ref(), config.signing_algorithm, clock.as_ref())
                .await?;
        }
        // Other instances write events to a shared database without waking this one, so it
        // looks often; one SQLite file is written by this process (woken directly) and, rarely,
        // by the `sessiond sessions` commands.
        let event_poll = if inner.revocation_feed().is_some() {
            SHARED_STORE_EVENT_POLL
        } else {
            LOCAL_STORE_EVENT_POLL
        };
        let store: Arc<dyn Store> = Arc::new(InstrumentedStore::new(
            inner,
            metrics.clone(),
            events.clone(),
        ));
        let service = SessionService::start(
            store,
            clock,
            ServiceSettings {
                policy: config.policy.clone(),
                tokens: AccessTokenIssuer {
                    issuer: config.issuer.clone(),
                    audience: config.audience.clone(),
                    client_id: config.client_id.clone(),
                },
                signing_algorithm: config.signing_algorithm,
                key_rotation: config.key_rotation,
                publication_delay: config.key_publication_delay,
                key_loading: if mode == OpenMode::CreateIfMissing {
                    KeyLoading::GenerateFirst
                } else {
                    KeyLoading::ReadOnly
                },
                roles: config.roles.clone(),
                anomaly: config.anomaly.clone(),
                audit_refreshes: config.audit_refreshes,
                read_only: matches!(mode, OpenMode::ReadOnly | OpenMode::AsIs),
            },
        )
        .await
        .context("cannot start the session service")?;
        let history = Arc::new(StatsHistory::new(&metrics, service.now()));
        // The keys of DPoP nonces and DBSC challenges come from the master key, each under its
        // own label. Only a server hands out nonces: a command that only reads needs no key for
        // them.
        let serves = !matches!(mode, OpenMode::ReadOnly | OpenMode::AsIs);
        let master_key = if (config.dpop.nonce_required && serves) || config.dbsc.is_some() {
            Some(crate::master_key::master_key(config)?)
        } else {
            None
        };
        let nonce_master_key = master_key.as_ref().filter(|_| serves);
        let dpop = Dpop::new(&config.dpop, &config.issuer, nonce_master_key)
            .map_err(anyhow::Error::msg)?;
        let dbsc = match (config.dbsc, master_key.as_ref()) {
            (Some(settings), Some(key)) => Some(Arc::new(Dbsc {
                cookie_ttl: settings.cookie_ttl,
                challenges: ChallengeKey::new(&key.derive(CHALLENGE_KEY_LABEL)),
            })),
            _ => None,
        };
        Ok(Self(Arc::new(SharedState {
            service: Arc::new(service),
            admin_keys: Arc::new(AdminKeys::new(&config.admin_keys)),
            introspection_clients: Arc::new(IntrospectionClients::new(
                &config.introspection_clients,
            )),
            body_limit: config.body_limit,
            metrics,
            events,
            event_heartbeat: config.event_heartbeat,
            event_retention: config.event_retention,
            event_poll,
            cookie_mode: config.cookie_mode,
            dbsc,
            cors_origins: config.cors_origins.clone().into(),
            limits: Arc::new(RateLimits::new(config.rate_limits.clone())),
            history,
            refresh_failures: Arc::new(RefreshFailures::new(config.audit_failure_period)),
            ui_frame_ancestors: config.ui_frame_ancestors.as_str().into(),
            connections: config.connections,
            dpop: Arc::new(dpop),
            store_counts: StoreCounts::default(),
        })))
    }
}

/// Device Bound Session Credentials as the handlers need them (see `http::dbsc`).
#[derive(Debug)]
pub struct Dbsc {
    /// How long a bound cookie counts.
    pub cookie_ttl: Duration,
    /// The key of registration and refresh challenges, the same on every instance.
    pub challenges: ChallengeKey,
}
