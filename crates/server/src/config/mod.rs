//! Configuration: defaults, then a TOML file, then `SESSIOND_*` environment variables, then
//! command-line flags, each overriding the one before; then validated as a whole so that an
//! inconsistent or weak setting stops start-up with a one-line reason.
//!
//! `raw.rs` is the layer of sources ([`RawConfig`], every setting as text); [`Config::from_raw`]
//! checks it concern by concern, in a fixed order, so the first bad setting is always the one
//! reported: `listeners.rs` (addresses, body limit, timeouts, streams), `admin.rs` (admin keys,
//! introspection clients), `storage.rs` (database URL, SQLite), `tokens.rs` (issuer, lifetimes,
//! roles), `keys.rs` (signing keys, master key), `browser.rs` (cookies, CORS, UI framing),
//! `dbsc.rs` (Device Bound Session Credentials), `limits.rs` (rate limits), `audit.rs` (audit
//! sampling, anomalies) and `dpop.rs` (DPoP proofs). `values.rs` parses durations and counts for
//! all of them, and `url.rs` reads database URLs.

mod admin;
mod audit;
mod browser;
mod dbsc;
mod dpop;
mod keys;
mod limits;
mod listeners;
mod raw;
mod storage;
#[cfg(test)]
mod tests;
mod tokens;
mod url;
mod values;

use std::net::SocketAddr;
use std::time::Duration;

use sessiond_core::Policy;
use sessiond_core::anomaly::AnomalySettings;
use sessiond_core::audit::RefreshAudit;
use sessiond_core::crypt::MasterKey;
use sessiond_core::permission::RolePermissions;
use sessiond_core::token::SigningAlgorithm;
use sessiond_store_sqlite::Synchronous;

pub use admin::{MIN_ADMIN_KEY_LEN, MIN_CLIENT_SECRET_LEN};
pub use dbsc::{DEFAULT_COOKIE_TTL as DEFAULT_DBSC_COOKIE_TTL, DbscSettings};
pub use dpop::DpopSettings;
pub use keys::{MIN_KEY_ROTATION, MasterKeySource, development_key_file};
pub use raw::{DatabaseUrl, RawConfig, RolesSetting, SecretSetting};
pub use url::{is_postgres_url, redact_password};

use crate::admin_auth::{AdminKey, IntrospectionClient};
use crate::connections::ConnectionSettings;
use crate::events::hub::StreamLimits;
use crate::ratelimit::RateLimitSettings;
#[cfg(test)]
use values::compact_duration;

/// Development (loud warnings, local defaults) or production (refuses insecure defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Local development.
    Development,
    /// A deployment.
    Production,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A complete, validated configuration.
#[derive(Clone)]
pub struct Config {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// The database.
    pub database_url: String,
    /// Keys that authenticate the application backend and operators, with their scopes.
    pub admin_keys: Vec<AdminKey>,
    /// Resource servers that may introspect tokens with an id and secret.
    pub introspection_clients: Vec<IntrospectionClient>,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// `client_id`.
    pub client_id: String,
    /// Lifetimes and limits.
    pub policy: Policy,
    /// Development or production.
    pub environment: Environment,
    /// The algorithm of new access tokens.
    pub signing_algorithm: SigningAlgorithm,
    /// The age at which the signing key is rotated automatically, if at all.
    pub key_rotation: Option<Duration>,
    /// How long a rotation's key is published before it signs.
    pub key_publication_delay: Duration,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// SQLite commit durability.
    pub sqlite_synchronous: Synchronous,
    /// The size the SQLite file may not grow beyond, in bytes.
    pub sqlite_max_size: Option<u64>,
    /// Log format.
    pub log_format: LogFormat,
    /// Where `/metrics` is served instead of the API's listener, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// How long events are kept for streams that resume.
    pub event_retention: Duration,
    /// How often an idle event stream gets a heartbeat.
    pub event_heartbeat: Duration,
    /// Whether refreshes also hand the refresh token out as an HttpOnly cookie and take it
    /// back from there.
    pub cookie_mode: bool,
    /// Device Bound Session Credentials, when they are on (`SESSIOND_DBSC`).
    pub dbsc: Option<DbscSettings>,
    /// Origins whose browser requests get CORS headers (with credentials), lower-case.
    pub cors_origins: Vec<String>,
    /// The `frame-ancestors` source list of the web UI's `Content-Security-Policy`.
    pub ui_frame_ancestors: String,
    /// Rate limits and where the client address comes from.
    pub rate_limits: RateLimitSettings,
    /// Where the master key of encryption at rest comes from.
    pub master_key: MasterKeySource,
    /// The master key before a rotation (`SESSIOND_MASTER_KEY_PREVIOUS`), if given.
    pub master_key_previous: Option<MasterKey>,
    /// The permissions each role stands for.
    pub roles: RolePermissions,
    /// Anomaly detection on refresh.
    pub anomaly: AnomalySettings,
    /// Which refreshes are audited.
    pub audit_refreshes: RefreshAudit,
    /// Connection timeouts and the connection cap.
    pub connections: ConnectionSettings,
    /// Caps on open event streams.
    pub stream_limits: StreamLimits,
    /// How often failed refreshes are written to the audit trail.
    pub audit_failure_period: Duration,
    /// How DPoP proofs are checked.
    pub dpop: DpopSettings,
    /// Warnings to print loudly at start (development defaults in use).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Admin keys are secrets: only their number is shown.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url)
            .field(
                "admin_keys",
                &format_args!("<{} redacted>", self.admin_keys.len()),
            )
            .field("introspection_clients", &self.introspection_clients)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("policy", &self.policy)
            .field("environment", &self.environment)
            .field("rate_limits", &self.rate_limits)
            .field("roles", &self.roles)
            .field("anomaly", &self.anomaly)
            .field("connections", &self.connections)
            .field("stream_limits", &self.stream_limits)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Validates `raw` into a configuration, one concern after another; the first bad setting
    /// stops it.
    ///
    /// # Errors
    /// A one-line reason naming the offending setting.
    pub fn from_raw(raw: &RawConfig) -> Result<Self, String> {
        let mut warnings = Vec::new();
        let environment = environment(raw)?;
        let listen = listeners::listen(raw)?;
        let admin = admin::credentials(raw, environment, &mut warnings)?;
        let database_url = storage::database_url(raw, &mut warnings)?;
        let identity = tokens::identity(raw, environment, listen, &mut warnings)?;
        let (master_key, master_key_previous) =
            keys::master_key(raw, environment, &database_url, &mut warnings)?;
        let policy = tokens::policy(raw)?;
        let signing = keys::signing(raw)?;
        let body_limit = listeners::body_limit(raw)?;
        let sqlite = storage::sqlite(raw)?;
        let log_format = log_format(raw)?;
        let metrics_listen = listeners::metrics_listen(raw, listen)?;
        let events = listeners::events(raw, &policy)?;
        let browser = browser::settings(raw)?;
        let dbsc = dbsc::settings(raw, browser.cookie_mode)?;
        let rate_limits = limits::rate_limits(raw, &mut warnings)?;
        Ok(Self {
            listen,
            database_url,
            admin_keys: admin.admin_keys,
            introspection_clients: admin.introspection_clients,
            issuer: identity.issuer,
            audience: identity.audience,
            client_id: identity.client_id,
            policy,
            environment,
            signing_algorithm: signing.algorithm,
            key_rotation: signing.rotation,
            key_publication_delay: signing.publication_delay,
            body_limit,
            sqlite_synchronous: sqlite.synchronous,
            sqlite_max_size: sqlite.max_size,
            log_format,
            metrics_listen,
            event_retention: events.retention,
            event_heartbeat: events.heartbeat,
            cookie_mode: browser.cookie_mode,
            dbsc,
            cors_origins: browser.cors_origins,
            ui_frame_ancestors: browser.ui_frame_ancestors,
            rate_limits,
            master_key,
            master_key_previous,
            roles: tokens::roles(raw.roles.as_ref())?,
            anomaly: audit::anomaly(raw)?,
            audit_refreshes: audit::audit_refreshes(raw.audit_refreshes.as_deref())?,
            connections: listeners::connection_settings(raw)?,
            stream_limits: listeners::stream_limits(raw)?,
            audit_failure_period: audit::audit_failure_period(raw.audit_failure_period.as_deref())?,
            dpop: dpop::settings(raw)?,
            warnings,
        })
    }
}

/// `SESSIOND_ENV`: `development` (the default) or `production`.
fn environment(raw: &RawConfig) -> Result<Environment, String> {
    match raw.env.as_deref().map(str::trim) {
        None | Some("development") => Ok(Environment::Development),
        Some("production") => Ok(Environment::Production),
        Some(other) => Err(format!(
            "SESSIOND_ENV must be development or production (got {other:?})"
        )),
    }
}

/// `SESSIOND_LOG_FORMAT`: `text` (the default) or `json`.
fn log_format(raw: &RawConfig) -> Result<LogFormat, String> {
    match raw.log_format.as_deref().map(str::trim) {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(format!(
            "SESSIOND_LOG_FORMAT must be text or json (got {other:?})"
        )),
    }
}
