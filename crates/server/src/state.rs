//! The state every request handler shares, and how it is built from a configuration.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sessiond_core::primitives::sha256;
use sessiond_core::service::ServiceSettings;
use sessiond_core::signing_keys::KeyLoading;
use sessiond_core::store::Store;
use sessiond_core::token::{AccessTokenIssuer, SigningAlgorithm};
use sessiond_core::{Clock, SessionService, Timestamp};
use sessiond_store_postgres::{PostgresSettings, PostgresStore};
use sessiond_store_sqlite::{SqliteSettings, SqliteStore};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::connections::ConnectionSettings;
use crate::events::EventHub;
use crate::history::StatsHistory;
use crate::instrumented_store::InstrumentedStore;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimits;
use crate::refresh_failures::RefreshFailures;

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_unix_millis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The permission an admin route needs to read: every scope has it.
pub const ADMIN_READ: &str = "admin:read";
/// The permission an admin route needs to revoke sessions (and forget devices).
pub const ADMIN_REVOKE: &str = "admin:revoke";
/// The permission an admin route needs to create sessions or change what a session is
/// allowed (trust a device).
pub const ADMIN_WRITE: &str = "admin:write";

/// What an admin key may do (`SESSIOND_ADMIN_KEYS` entries `KEY:read`, `KEY:revoke`,
/// `KEY:full`, or `KEY` for full). Each scope stands for permissions, checked with the same
/// wildcard rule as access tokens' (`sessiond_core::permission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminScope {
    /// Reads: listings, `/v1/events`, `/v1/audit`, `/v1/stats`, introspection.
    Read,
    /// Reads and revocations.
    Revoke,
    /// Everything, session creation included.
    #[default]
    Full,
}

impl AdminScope {
    /// Every scope, in the order of their codes.
    const ALL: [Self; 3] = [Self::Read, Self::Revoke, Self::Full];

    /// The configuration name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Revoke => "revoke",
            Self::Full => "full",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == name)
    }

    /// The permissions the scope stands for.
    pub const fn permissions(self) -> &'static [&'static str] {
        match self {
            Self::Read => &[ADMIN_READ],
            Self::Revoke => &[ADMIN_READ, ADMIN_REVOKE],
            Self::Full => &["admin:*"],
        }
    }

    /// Whether the scope grants `required` (an `admin:…` permission).
    pub fn grants(self, required: &str) -> bool {
        sessiond_core::permission::any_grants(self.permissions().iter().copied(), required)
    }

    fn code(self) -> u8 {
        self as u8
    }
}

/// One configured admin key and its scope.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey {
    /// The secret.
    pub key: String,
    /// What it may do.
    pub scope: AdminScope,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminKey(<redacted>:{})", self.scope.as_str())
    }
}

/// The configured admin keys, kept as SHA-256 digests so that every comparison takes the same
/// time whatever the presented key's length, and compared against all keys every time.
pub struct AdminKeys {
    keys: Vec<([u8; 32], AdminScope)>,
}

impl std::fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminKeys(<{} redacted>)", self.keys.len())
    }
}

/// An admin key a request presented: which one, and its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminIdentity {
    /// Which key.
    pub id: AdminKeyId,
    /// What it may do.
    pub scope: AdminScope,
}

impl AdminKeys {
    /// Digests of `keys`, each with its scope.
    pub fn new(keys: &[AdminKey]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|entry| (sha256(entry.key.as_bytes()), entry.scope))
                .collect(),
        }
    }

    /// Whether `presented` is one of the keys, in time independent of which (if any) matches.
    pub fn matches(&self, presented: &str) -> bool {
        self.identify(presented).is_some()
    }

    /// The identity and scope of the key `presented` is, if it is one, found in time
    /// independent of which (if any) matches.
    pub fn identify(&self, presented: &str) -> Option<AdminIdentity> {
        use subtle::ConditionallySelectable as _;
        let digest: [u8; 32] = sha256(presented.as_bytes());
        let mut found = subtle::Choice::from(0);
        let mut scope_code = 0u8;
        for (key, scope) in &self.keys {
            let equal = key.ct_eq(&digest);
            found |= equal;
            scope_code.conditional_assign(&scope.code(), equal);
        }
        if !bool::from(found) {
            return None;
        }
        let mut prefix = [0; 16];
        prefix.copy_from_slice(&digest[..16]);
        Some(AdminIdentity {
            id: AdminKeyId(prefix),
            scope: AdminScope::ALL
                .get(usize::from(scope_code))
                .copied()
                .unwrap_or(AdminScope::Read),
        })
    }
}

/// A resource server allowed to introspect tokens (`SESSIOND_INTROSPECTION_CLIENTS`): an
/// OAuth client id and secret that authenticate at `POST /oauth/introspect` and nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct IntrospectionClient {
    /// The client id, not secret.
    pub client_id: String,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for IntrospectionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IntrospectionClient({}:<redacted>)", self.client_id)
    }
}

/// The configured introspection clients, ids and secrets kept as SHA-256 digests and compared
/// against every client every time, so that neither which id exists nor how much of a secret
/// is right shows in the time an answer takes.
pub struct IntrospectionClients {
    clients: Vec<([u8; 32], [u8; 32])>,
}

impl std::fmt::Debug for IntrospectionClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IntrospectionClients(<{} redacted>)", self.clients.len())
    }
}

impl IntrospectionClients {
    /// Digests of `clients`' ids and secrets.
    pub fn new(clients: &[IntrospectionClient]) -> Self {
        Self {
            clients: clients
                .iter()
                .map(|client| {
                    (
                        sha256(client.client_id.as_bytes()),
                        sha256(client.secret.as_bytes()),
                    )
                })
                .collect(),
        }
    }

    /// Whether `client_id` and `secret` are those of one configured client, found in time
    /// independent of which (if any) matches.
    pub fn authenticate(&self, client_id: &str, secret: &str) -> bool {
        let id: [u8; 32] = sha256(client_id.as_bytes());
        let presented: [u8; 32] = sha256(secret.as_bytes());
        let mut found = subtle::Choice::from(0);
        for (known_id, known_secret) in &self.clients {
            found |= known_id.ct_eq(&id) & known_secret.ct_eq(&presented);
        }
        bool::from(found)
    }
}

/// Which admin key a request used: the first half of the key's SHA-256, which rate limits key
/// on and logs may show (as [`AdminKeyId::short`]); never the key itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminKeyId(pub [u8; 16]);

impl AdminKeyId {
    /// `sha256:` and the digest's first 8 hex digits: enough to tell configured keys apart.
    pub fn short(&self) -> String {
        use std::fmt::Write as _;
        let mut text = String::from("sha256:");
        for byte in &self.0[..4] {
            let _ = write!(text, "{byte:02x}");
        }
        text
    }
}

/// How often an instance on a shared database looks for events other instances wrote.
const SHARED_STORE_EVENT_POLL: Duration = Duration::from_millis(100);
/// How often an instance on its own SQLite file looks for events other processes wrote.
const LOCAL_STORE_EVENT_POLL: Duration = Duration::from_secs(1);

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
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
}

/// Whether opening the database may create it, and what starting may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file when it does not exist, initialise encryption and generate the first
    /// signing key on a new database, and refuse a `SESSIOND_SIGNING_ALG` no stored key signs
    /// with: `serve`.
    CreateIfMissing,
    /// Fail when it does not exist, so that a mistyped path is an error rather than a new,
    /// empty database, and generate no signing key: the commands that change something
    /// (`sessions revoke`, `keys rotate`, `audit seal`...).
    MustExist,
    /// As [`OpenMode::MustExist`], and write nothing at all (encryption is not initialised
    /// either): the commands that only read (`keys list`, `sessions list`, `audit verify`...).
    ReadOnly,
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
        if mode == OpenMode::ReadOnly {
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
                read_only: mode == OpenMode::ReadOnly,
            },
        )
        .await
        .context("cannot start the session service")?;
        let history = Arc::new(StatsHistory::new(&metrics, service.now()));
        Ok(Self {
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
            cors_origins: config.cors_origins.clone().into(),
            limits: Arc::new(RateLimits::new(config.rate_limits.clone())),
            history,
            refresh_failures: Arc::new(RefreshFailures::new(config.audit_failure_period)),
            ui_frame_ancestors: config.ui_frame_ancestors.as_str().into(),
            connections: config.connections,
        })
    }
}

/// Refuses to serve with `algorithm` when the database has signing keys but none of
/// `algorithm` that signs now: changing the algorithm is an explicit rotation
/// (`sessiond keys rotate --alg X`), published before it signs, never a side effect of a
/// setting. A new database (no key at all) gets its first key when the service starts.
///
/// # Errors
/// One line naming what to do; a storage failure.
async fn check_signing_algorithm(
    store: &dyn Store,
    algorithm: SigningAlgorithm,
    clock: &dyn Clock,
) -> anyhow::Result<()> {
    let keys = store
        .signing_keys()
        .await
        .context("cannot read the signing keys")?;
    // Read after the keys, so that a first key another instance made a moment ago signs by now.
    let now = clock.now();
    let name = algorithm.jose_name();
    if keys.is_empty()
        || keys
            .iter()
            .any(|key| key.algorithm == algorithm && key.signs_at(now))
    {
        return Ok(());
    }
    if let Some(waiting) = keys
        .iter()
        .find(|key| key.algorithm == algorithm && key.is_active() && key.signs_from > now)
    {
        anyhow::bail!(
            "the {name} signing key {} is published but signs only from {}: start instances with \
             SESSIOND_SIGNING_ALG={name} after then",
            waiting.kid,
            crate::http::convert::rfc3339(waiting.signs_from)
        );
    }
    let mut signing: Vec<&str> = keys
        .iter()
        .filter(|key| key.signs_at(now))
        .map(|key| key.algorithm.jose_name())
        .collect();
    signing.sort_unstable();
    signing.dedup();
    anyhow::bail!(
        "SESSIOND_SIGNING_ALG is {name} but no {name} key signs in this database (it signs with \
         {}): run `sessiond keys rotate --alg {name}` to publish one, which signs after the \
         publication delay, or keep SESSIOND_SIGNING_ALG={}",
        signing.join(", "),
        signing
            .first()
            .copied()
            .unwrap_or("the algorithm its keys have")
    )
}

/// Opens the store named by `config.database_url` with `config`'s durability, creating the
/// file or not as `mode` says, and brings its schema up to date.
///
/// # Errors
/// When the database cannot be opened or migrated (or, with [`OpenMode::MustExist`], does not
/// exist): `cannot open database URL: reason`.
pub async fn open_sqlite(config: &Config, mode: OpenMode) -> anyhow::Result<SqliteStore> {
    let settings = SqliteSettings {
        synchronous: config.sqlite_synchronous,
        max_size: config.sqlite_max_size,
        create_if_missing: mode == OpenMode::CreateIfMissing,
        ..SqliteSettings::default()
    };
    SqliteStore::open(&config.database_url, &settings)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot open database {}: {}",
                config.database_url,
                error_chain(&error)
            )
        })
}

/// `error` and its sources on one line, leaving out a source that only repeats the message
/// before it (SQLite errors repeat their `(code: N) reason` as their own source).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut previous = line.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !previous.contains(&message) {
            line.push_str(": ");
            line.push_str(&message);
        }
        previous = message;
        source = cause.source();
    }
    line.replace('\n', " ")
}

/// Opens the PostgreSQL database at `config.database_url` and brings its schema up to date.
///
/// # Errors
/// When the database cannot be reached or migrated: `cannot open database URL: reason`.
pub async fn open_postgres(config: &Config) -> anyhow::Result<PostgresStore> {
    let failed = |error: sessiond_core::store::StoreError| {
        anyhow::anyhow!(
            "cannot open database {}: {}",
            redact_password(&config.database_url),
            error_chain(&error)
        )
    };
    let store = PostgresStore::open(&config.database_url, &PostgresSettings::default())
        .await
        .map_err(failed)?;
    store.migrate().await.map_err(failed)?;
    Ok(store)
}

/// `url` with any password replaced, for messages and logs.
pub fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Whether `url` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The store named by `config.database_url` (SQLite or PostgreSQL), as the service runs on it.
///
/// # Errors
/// As [`open_sqlite`] and [`open_postgres`].
pub async fn open_store(config: &Config, mode: OpenMode) -> anyhow::Result<Arc<dyn Store>> {
    if is_postgres_url(&config.database_url) {
        Ok(Arc::new(open_postgres(config).await?))
    } else {
        Ok(Arc::new(open_sqlite(config, mode).await?))
    }
}

#[cfg(test)]
mod admin_key_tests {
    use super::*;

    fn key(text: &str, scope: AdminScope) -> AdminKey {
        AdminKey {
            key: text.repeat(32),
            scope,
        }
    }

    #[test]
    fn each_key_is_identified_with_its_own_scope() {
        let keys = AdminKeys::new(&[
            key("r", AdminScope::Read),
            key("v", AdminScope::Revoke),
            key("f", AdminScope::Full),
        ]);
        let scope = |text: &str| keys.identify(&text.repeat(32)).map(|found| found.scope);
        assert_eq!(scope("r"), Some(AdminScope::Read));
        assert_eq!(scope("v"), Some(AdminScope::Revoke));
        assert_eq!(scope("f"), Some(AdminScope::Full));
        assert_eq!(scope("x"), None);
    }

    #[test]
    fn scopes_grant_the_admin_permissions_they_stand_for() {
        use AdminScope::{Full, Read, Revoke};
        for (scope, read, revoke, write) in [
            (Read, true, false, false),
            (Revoke, true, true, false),
            (Full, true, true, true),
        ] {
            assert_eq!(scope.grants(ADMIN_READ), read, "{scope:?}");
            assert_eq!(scope.grants(ADMIN_REVOKE), revoke, "{scope:?}");
            assert_eq!(scope.grants(ADMIN_WRITE), write, "{scope:?}");
            assert!(!scope.grants("notes:read"), "{scope:?}");
        }
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_password("postgres://app:s3cret@db:5432/sessiond"),
            "postgres://app:***@db:5432/sessiond"
        );
        assert_eq!(
            redact_password("postgres://app@db/x"),
            "postgres://app@db/x"
        );
        assert_eq!(
            redact_password("sqlite://sessiond.db"),
            "sqlite://sessiond.db"
        );
    }
}
