//! Configuration: defaults, then a TOML file, then `SESSIOND_*` environment variables, then
//! command-line flags, each overriding the one before; then validated as a whole so that an
//! inconsistent or weak setting stops start-up with a one-line reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use sessiond_core::Policy;
use sessiond_core::anomaly::{AnomalyPolicy, AnomalySettings, Signal};
use sessiond_core::audit::RefreshAudit;
use sessiond_core::crypt::MasterKey;
use sessiond_core::permission::RolePermissions;
use sessiond_core::signing_keys::{DEFAULT_PUBLICATION_DELAY, MIN_PUBLICATION_DELAY};
use sessiond_core::token::SigningAlgorithm;
use sessiond_store_sqlite::Synchronous;

/// The shortest automatic key rotation period accepted.
pub const MIN_KEY_ROTATION: Duration = Duration::from_secs(60);
use crate::admin_auth::{AdminKey, AdminScope, IntrospectionClient};
use crate::connections::ConnectionSettings;
use crate::events::hub::StreamLimits;
use crate::ratelimit::{Cidr, ClientIpSource, ForwardedHeader, Limit, Quota, RateLimitSettings};

/// The shortest admin key accepted.
pub const MIN_ADMIN_KEY_LEN: usize = 32;
/// The shortest introspection client secret accepted.
pub const MIN_CLIENT_SECRET_LEN: usize = 32;

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

/// `SESSIOND_ROLES`, the permissions each role stands for: `editor=notes:read|notes:write;
/// viewer=notes:read` in the environment or on the command line, or a `[roles]` table
/// (`editor = ["notes:read", "notes:write"]`) in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolesSetting {
    /// The one-line form, checked by [`Config::from_raw`].
    Text(String),
    /// The config file's table.
    Table(BTreeMap<String, Vec<String>>),
}

impl<'de> Deserialize<'de> for RolesSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Table(BTreeMap<String, Vec<String>>),
        }
        match Form::deserialize(deserializer) {
            Ok(Form::Text(text)) => Ok(Self::Text(text)),
            Ok(Form::Table(table)) => Ok(Self::Table(table)),
            Err(_) => Err(serde::de::Error::custom(
                "roles must be a table of ROLE = [\"PERMISSION\", ...] or a string like \"editor=notes:read|notes:write\"",
            )),
        }
    }
}

fn roles_text(text: &str) -> Result<RolesSetting, String> {
    Ok(RolesSetting::Text(text.to_owned()))
}

/// Every setting as text, as it comes from a file, the environment or a flag; `None` where the
/// source does not say.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address and port of the API.
    #[arg(long, global = true, env = "SESSIOND_LISTEN")]
    pub listen: Option<String>,
    /// `sqlite://PATH`.
    #[arg(long, global = true, env = "SESSIOND_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Comma-separated admin keys, each at least 32 characters, optionally followed by
    /// `:read`, `:revoke` or `:full` (the default).
    #[arg(
        long,
        global = true,
        env = "SESSIOND_ADMIN_KEYS",
        hide_env_values = true
    )]
    pub admin_keys: Option<String>,
    /// Comma-separated `CLIENT_ID:SECRET` pairs of resource servers that may introspect
    /// tokens (and do nothing else), each secret at least 32 characters.
    #[arg(
        long,
        global = true,
        env = "SESSIOND_INTROSPECTION_CLIENTS",
        hide_env_values = true
    )]
    pub introspection_clients: Option<SecretSetting>,
    /// `iss` of access tokens.
    #[arg(long, global = true, env = "SESSIOND_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` of access tokens.
    #[arg(long, global = true, env = "SESSIOND_AUDIENCE")]
    pub audience: Option<String>,
    /// `client_id` of access tokens (RFC 9068).
    #[arg(long, global = true, env = "SESSIOND_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Access token lifetime, e.g. `15m`.
    #[arg(long, global = true, env = "SESSIOND_ACCESS_TTL")]
    pub access_ttl: Option<String>,
    /// Idle timeout, e.g. `7d`.
    #[arg(long, global = true, env = "SESSIOND_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Absolute session lifetime, e.g. `30d`.
    #[arg(long, global = true, env = "SESSIOND_ABSOLUTE_TIMEOUT")]
    pub absolute_timeout: Option<String>,
    /// Reuse grace window, e.g. `10s`; `0` turns it off.
    #[arg(long, global = true, env = "SESSIOND_REUSE_GRACE")]
    pub reuse_grace: Option<String>,
    /// How long a spent refresh token still gets its successor pair while that successor has
    /// never been used, e.g. `1h`; `0` leaves only the grace window.
    #[arg(long, global = true, env = "SESSIOND_UNUSED_SUCCESSOR_REPLAY")]
    pub unused_successor_replay: Option<String>,
    /// Clock skew tolerated when validating tokens, e.g. `5s`.
    #[arg(long, global = true, env = "SESSIOND_LEEWAY")]
    pub leeway: Option<String>,
    /// How long expired and revoked sessions are kept, e.g. `7d`.
    #[arg(long, global = true, env = "SESSIOND_RETENTION")]
    pub retention: Option<String>,
    /// Most active sessions per user.
    #[arg(long, global = true, env = "SESSIOND_MAX_SESSIONS_PER_USER")]
    pub max_sessions_per_user: Option<String>,
    /// `development` or `production`.
    #[arg(long = "env", global = true, env = "SESSIOND_ENV")]
    pub env: Option<String>,
    /// `EdDSA` (default), `ES256`, `RS256`, or `HS256` for a single trusted verifier.
    #[arg(long, global = true, env = "SESSIOND_SIGNING_ALG")]
    pub signing_alg: Option<String>,
    /// Rotate the signing key automatically once it is this old, e.g. `30d`; unset or `0`:
    /// only `sessiond keys rotate` rotates.
    #[arg(long, global = true, env = "SESSIOND_KEY_ROTATION")]
    pub key_rotation: Option<String>,
    /// How long a rotation's new key is published in the JWK Set before it signs (default
    /// `10m`, at least `2s`); the JWK Set may be cached for half of it, at most 5 minutes.
    #[arg(long, global = true, env = "SESSIOND_KEY_PUBLICATION_DELAY")]
    pub key_publication_delay: Option<String>,
    /// Largest request body, in bytes.
    #[arg(long, global = true, env = "SESSIOND_BODY_LIMIT")]
    pub body_limit: Option<String>,
    /// SQLite commit durability: `full` (default) or `normal`.
    #[arg(long, global = true, env = "SESSIOND_SQLITE_SYNCHRONOUS")]
    pub sqlite_synchronous: Option<String>,
    /// The size the SQLite file may not grow beyond, e.g. `10GiB` (bytes, or with `KiB`,
    /// `MiB` or `GiB`); unset: only the disk limits it.
    #[arg(long, global = true, env = "SESSIOND_SQLITE_MAX_SIZE")]
    pub sqlite_max_size: Option<String>,
    /// `text` (default) or `json`.
    #[arg(long, global = true, env = "SESSIOND_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// address:port of a separate listener for `/metrics`; unset, `/metrics` is on the API's.
    #[arg(long, global = true, env = "SESSIOND_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// How long events are kept for streams that resume, e.g. `24h`.
    #[arg(long, global = true, env = "SESSIOND_EVENT_RETENTION")]
    pub event_retention: Option<String>,
    /// How often an idle event stream gets a heartbeat, e.g. `15s`.
    #[arg(long, global = true, env = "SESSIOND_EVENT_HEARTBEAT")]
    pub event_heartbeat: Option<String>,
    /// `on` puts the refresh token in an HttpOnly cookie for browsers; `off` (default).
    #[arg(long, global = true, env = "SESSIOND_COOKIE_MODE")]
    pub cookie_mode: Option<String>,
    /// Comma-separated origins (`https://app.example.com`) answered with CORS headers.
    #[arg(long, global = true, env = "SESSIOND_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// The CSP `frame-ancestors` of the web UI's pages: `'none'` (default), `'self'`, or
    /// space-separated origins that may embed them.
    #[arg(long, global = true, env = "SESSIOND_UI_FRAME_ANCESTORS")]
    pub ui_frame_ancestors: Option<String>,
    /// `on` (default) or `off`: every rate limit at once.
    #[arg(long, global = true, env = "SESSIOND_RATE_LIMITS")]
    pub rate_limits: Option<String>,
    /// Rotating refreshes per session, e.g. `20/5m`, or `off`.
    #[arg(long, global = true, env = "SESSIOND_RATE_LIMIT_REFRESH_PER_SESSION")]
    pub rate_limit_refresh_per_session: Option<String>,
    /// Refreshes and session creations per client address, e.g. `600/1m`, or `off`.
    #[arg(long, global = true, env = "SESSIOND_RATE_LIMIT_PER_IP")]
    pub rate_limit_per_ip: Option<String>,
    /// Session creations per user, e.g. `10/1m`, or `off`.
    #[arg(long, global = true, env = "SESSIOND_RATE_LIMIT_CREATE_PER_USER")]
    pub rate_limit_create_per_user: Option<String>,
    /// Admin requests per admin key, e.g. `30000/1m`, or `off`.
    #[arg(long, global = true, env = "SESSIOND_RATE_LIMIT_ADMIN_PER_KEY")]
    pub rate_limit_admin_per_key: Option<String>,
    /// Failed authentications per client address, e.g. `30/1m`, or `off`.
    #[arg(long, global = true, env = "SESSIOND_RATE_LIMIT_FAILED_AUTH_PER_IP")]
    pub rate_limit_failed_auth_per_ip: Option<String>,
    /// Keys each limit remembers at most (memory bound).
    #[arg(long, global = true, env = "SESSIOND_RATE_LIMIT_CAPACITY")]
    pub rate_limit_capacity: Option<String>,
    /// Comma-separated addresses or CIDR blocks of proxies whose forwarding header is believed.
    #[arg(long, global = true, env = "SESSIOND_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// The header trusted proxies write: `x-forwarded-for` (default) or `forwarded`.
    #[arg(long, global = true, env = "SESSIOND_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
    /// Base64 of 32 random bytes: the master key that wraps the data keys of encryption at
    /// rest. Prefer `SESSIOND_MASTER_KEY_FILE`.
    #[arg(
        long,
        global = true,
        env = "SESSIOND_MASTER_KEY",
        hide_env_values = true
    )]
    pub master_key: Option<SecretSetting>,
    /// A file holding the master key (base64 of 32 bytes).
    #[arg(long, global = true, env = "SESSIOND_MASTER_KEY_FILE")]
    pub master_key_file: Option<String>,
    /// The master key before a rotation, accepted while the database is still wrapped under it.
    #[arg(
        long,
        global = true,
        env = "SESSIOND_MASTER_KEY_PREVIOUS",
        hide_env_values = true
    )]
    pub master_key_previous: Option<SecretSetting>,
    /// Permissions per role, added to access tokens: `editor=notes:read|notes:write;viewer=notes:read`.
    #[arg(long, global = true, env = "SESSIOND_ROLES", value_parser = roles_text)]
    pub roles: Option<RolesSetting>,
    /// What a refresh unlike its session's creation does: `allow`, `notify` (default) or `revoke`.
    #[arg(long, global = true, env = "SESSIOND_ANOMALY_POLICY")]
    pub anomaly_policy: Option<String>,
    /// What is compared: comma-separated `network`, `browser`, `os` (default: all three).
    #[arg(long, global = true, env = "SESSIOND_ANOMALY_CHECKS")]
    pub anomaly_checks: Option<String>,
    /// Which refreshes are audited: `all` (default), `off`, or `sample:N` (one in N).
    #[arg(long, global = true, env = "SESSIOND_AUDIT_REFRESHES")]
    pub audit_refreshes: Option<String>,
    /// How long a client may take to send a request's headers, e.g. `10s`.
    #[arg(long, global = true, env = "SESSIOND_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// How long a client may take to send a request's body once its headers are in, e.g. `20s`.
    #[arg(long, global = true, env = "SESSIOND_BODY_TIMEOUT")]
    pub body_timeout: Option<String>,
    /// How long a connection may wait idle for its next request, e.g. `75s`.
    #[arg(long, global = true, env = "SESSIOND_KEEP_ALIVE_TIMEOUT")]
    pub keep_alive_timeout: Option<String>,
    /// Most connections open at once.
    #[arg(long, global = true, env = "SESSIOND_MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Most event streams (SSE and WebSocket) open at once.
    #[arg(long, global = true, env = "SESSIOND_MAX_STREAMS")]
    pub max_streams: Option<String>,
    /// Most event streams one user's access tokens hold open at once.
    #[arg(long, global = true, env = "SESSIOND_MAX_STREAMS_PER_USER")]
    pub max_streams_per_user: Option<String>,
    /// How often failed refreshes are written to the audit trail, aggregated per address and
    /// reason, e.g. `60s` (1 s to 1 h).
    #[arg(long, global = true, env = "SESSIOND_AUDIT_FAILURE_PERIOD")]
    pub audit_failure_period: Option<String>,
}

macro_rules! overlay {
    ($base:expr, $top:expr, $($field:ident),+) => {
        $( if $top.$field.is_some() { $base.$field = $top.$field.clone(); } )+
    };
}

impl RawConfig {
    /// Reads a TOML file whose keys are the lower-case names of the settings.
    ///
    /// # Errors
    /// A one-line reason when the file cannot be read or parsed.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read config file {}: {error}", path.display()))?;
        toml::from_str(&text).map_err(|error| {
            format!(
                "config file {}: {}",
                path.display(),
                error.message().replace('\n', " ")
            )
        })
    }

    /// `self` with every setting `top` gives replaced.
    #[must_use]
    pub fn overlaid_with(mut self, top: &RawConfig) -> Self {
        overlay!(
            self,
            top,
            listen,
            database_url,
            admin_keys,
            introspection_clients,
            issuer,
            audience,
            client_id,
            access_ttl,
            idle_timeout,
            absolute_timeout,
            reuse_grace,
            unused_successor_replay,
            leeway,
            retention,
            max_sessions_per_user,
            env,
            signing_alg,
            key_rotation,
            key_publication_delay,
            body_limit,
            sqlite_synchronous,
            sqlite_max_size,
            log_format,
            metrics_listen,
            event_retention,
            event_heartbeat,
            cookie_mode,
            cors_origins,
            ui_frame_ancestors,
            rate_limits,
            rate_limit_refresh_per_session,
            rate_limit_per_ip,
            rate_limit_create_per_user,
            rate_limit_admin_per_key,
            rate_limit_failed_auth_per_ip,
            rate_limit_capacity,
            trusted_proxies,
            client_ip_header,
            master_key,
            master_key_file,
            master_key_previous,
            roles,
            anomaly_policy,
            anomaly_checks,
            audit_refreshes,
            header_timeout,
            body_timeout,
            keep_alive_timeout,
            max_connections,
            max_streams,
            max_streams_per_user,
            audit_failure_period
        );
        self
    }
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
    /// Warnings to print loudly at start (development defaults in use).
    pub warnings: Vec<String>,
}

/// A setting that is a secret (a master key): kept as written, but its `Debug` output, and so
/// that of [`RawConfig`] and of the command line, is redacted.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretSetting(String);

impl SecretSetting {
    /// The value as written.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for SecretSetting {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl From<&str> for SecretSetting {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl From<String> for SecretSetting {
    fn from(text: String) -> Self {
        Self(text)
    }
}

/// Where the master key comes from. `Debug` never shows a key.
#[derive(Clone)]
pub enum MasterKeySource {
    /// `SESSIOND_MASTER_KEY`.
    Given(MasterKey),
    /// `SESSIOND_MASTER_KEY_FILE`: read at start; a missing file is an error.
    File(PathBuf),
    /// Development without a key: this file, generated (mode 0600) when missing.
    Development(PathBuf),
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Given(_) => f.write_str("Given(<redacted>)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Development(path) => f.debug_tuple("Development").field(path).finish(),
        }
    }
}

/// The development key file: next to the SQLite database (`sessiond.db.master-key`), or
/// `sessiond.master-key` in the working directory for PostgreSQL or an in-memory database.
pub fn development_key_file(database_url: &str) -> PathBuf {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .filter(|path| !path.is_empty() && !path.starts_with(':'));
    match path {
        Some(path) => PathBuf::from(format!("{path}.master-key")),
        None => PathBuf::from("sessiond.master-key"),
    }
}

fn master_key(
    raw: &RawConfig,
    environment: Environment,
    database_url: &str,
    warnings: &mut Vec<String>,
) -> Result<(MasterKeySource, Option<MasterKey>), String> {
    let previous = raw
        .master_key_previous
        .as_ref()
        .map(SecretSetting::expose)
        .filter(|text| !text.trim().is_empty())
        .map(|text| {
            MasterKey::from_base64(text)
                .map_err(|_| "SESSIOND_MASTER_KEY_PREVIOUS must be base64 of 32 bytes".to_owned())
        })
        .transpose()?;
    let given = raw
        .master_key
        .as_ref()
        .map(SecretSetting::expose)
        .filter(|text| !text.trim().is_empty());
    let file = raw
        .master_key_file
        .as_deref()
        .map(str::trim)
        .filter(|path| !path.is_empty());
    let source = match (given, file) {
        (Some(_), Some(_)) => {
            return Err("set SESSIOND_MASTER_KEY or SESSIOND_MASTER_KEY_FILE, not both".into());
        }
        (Some(text), None) => MasterKeySource::Given(MasterKey::from_base64(text).map_err(
            // The value is a secret: never repeated.
            |_| {
                "SESSIOND_MASTER_KEY must be base64 of 32 bytes (e.g. openssl rand -base64 32)"
                    .to_owned()
            },
        )?),
        (None, Some(path)) => MasterKeySource::File(PathBuf::from(path)),
        (None, None) if environment == Environment::Production => {
            return Err(
                "production requires SESSIOND_MASTER_KEY or SESSIOND_MASTER_KEY_FILE".into(),
            );
        }
        (None, None) => {
            let path = development_key_file(database_url);
            warnings.push(format!(
                "no SESSIOND_MASTER_KEY: encrypting at rest under the key in {} (generated if \
                 missing); whoever reads that file and the database reads the encrypted columns",
                path.display()
            ));
            MasterKeySource::Development(path)
        }
    };
    Ok((source, previous))
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

/// `SESSIOND_AUDIT_FAILURE_PERIOD`: a duration from 1 s to 1 h.
fn audit_failure_period(value: Option<&str>) -> Result<Duration, String> {
    const NAME: &str = "SESSIOND_AUDIT_FAILURE_PERIOD";
    let period = duration(value, NAME, crate::refresh_failures::DEFAULT_PERIOD)?;
    if period < Duration::from_secs(1) || period > Duration::from_secs(3600) {
        return Err(format!(
            "{NAME} must be from 1s to 1h (got {:?})",
            value.unwrap_or_default()
        ));
    }
    Ok(period)
}

/// `SESSIOND_AUDIT_REFRESHES`: `all`, `off` or `sample:N` with N from 1 to 1,000,000.
fn audit_refreshes(value: Option<&str>) -> Result<RefreshAudit, String> {
    let text = match value.map(str::trim) {
        None | Some("all") => return Ok(RefreshAudit::All),
        Some("off") => return Ok(RefreshAudit::Off),
        Some(text) => text,
    };
    text.strip_prefix("sample:")
        .and_then(|every| every.parse::<u32>().ok())
        .filter(|every| (1..=1_000_000).contains(every))
        .map(RefreshAudit::Sample)
        .ok_or_else(|| {
            format!(
                "SESSIOND_AUDIT_REFRESHES must be all, off or sample:N with N from 1 to 1000000 \
                 (got {text:?})"
            )
        })
}

/// How long events are kept by default: a day of reconnects.
const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often an idle stream gets a heartbeat by default: under the usual 30–60 s idle timeout
/// of proxies and load balancers.
const DEFAULT_EVENT_HEARTBEAT: Duration = Duration::from_secs(15);

fn duration(value: Option<&str>, name: &str, default: Duration) -> Result<Duration, String> {
    let Some(text) = value.map(str::trim) else {
        return Ok(default);
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|_| format!("{name} must be a duration like 10s, 15m, 7d (got {text:?})"))
}

/// A setting's value with its variable's name and its value as the user wrote it (or the
/// default, marked so), for messages that point at what to change.
struct Setting<T> {
    value: T,
    name: &'static str,
    shown: String,
}

impl<T> std::fmt::Display for Setting<T> {
    /// `SESSIOND_IDLE_TIMEOUT (40d)`, or `SESSIOND_ABSOLUTE_TIMEOUT (30d (default))`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.shown)
    }
}

/// `value` as written, or `default` shown as `DEFAULT (default)`.
fn shown(value: Option<&str>, default: impl FnOnce() -> String) -> String {
    match value.map(str::trim) {
        Some(text) => text.to_owned(),
        None => format!("{} (default)", default()),
    }
}

fn duration_setting(
    value: Option<&str>,
    name: &'static str,
    default: Duration,
) -> Result<Setting<Duration>, String> {
    Ok(Setting {
        value: duration(value, name, default)?,
        name,
        shown: shown(value, || compact_duration(default)),
    })
}

/// `default`-style short form of a duration: `30d`, `15m`, `10s`, or humantime's where no
/// single unit fits.
fn compact_duration(value: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    if value.is_zero() {
        return "0".to_owned();
    }
    if value.subsec_nanos() == 0 {
        let seconds = value.as_secs();
        for (unit, suffix) in UNITS {
            if seconds.is_multiple_of(unit) {
                return format!("{}{suffix}", seconds / unit);
            }
        }
    }
    humantime::format_duration(value).to_string()
}

/// The lifetimes and limits, checked with messages that name the `SESSIOND_*` variables and
/// their values as given; [`Policy::validate`] is still run afterwards as a final guard.
fn policy(raw: &RawConfig) -> Result<Policy, String> {
    const MAX_LEEWAY: Duration = Duration::from_secs(300);
    const MAX_REUSE_GRACE: Duration = Duration::from_secs(300);
    let defaults = Policy::default();
    let access_ttl = duration_setting(
        raw.access_ttl.as_deref(),
        "SESSIOND_ACCESS_TTL",
        defaults.access_ttl,
    )?;
    let idle_timeout = duration_setting(
        raw.idle_timeout.as_deref(),
        "SESSIOND_IDLE_TIMEOUT",
        defaults.idle_timeout,
    )?;
    let absolute_timeout = duration_setting(
        raw.absolute_timeout.as_deref(),
        "SESSIOND_ABSOLUTE_TIMEOUT",
        defaults.absolute_timeout,
    )?;
    let reuse_grace = duration_setting(
        raw.reuse_grace.as_deref(),
        "SESSIOND_REUSE_GRACE",
        defaults.reuse_grace,
    )?;
    let unused_successor_replay = duration_setting(
        raw.unused_successor_replay.as_deref(),
        "SESSIOND_UNUSED_SUCCESSOR_REPLAY",
        defaults.unused_successor_replay,
    )?;
    let leeway = duration_setting(raw.leeway.as_deref(), "SESSIOND_LEEWAY", defaults.leeway)?;
    let retention = duration_setting(
        raw.retention.as_deref(),
        "SESSIOND_RETENTION",
        defaults.retention,
    )?;
    let max_sessions_per_user = Setting {
        value: match raw.max_sessions_per_user.as_deref().map(str::trim) {
            None => defaults.max_sessions_per_user,
            Some(text) => text.parse::<u32>().map_err(|_| {
                format!("SESSIOND_MAX_SESSIONS_PER_USER must be a positive integer (got {text:?})")
            })?,
        },
        name: "SESSIOND_MAX_SESSIONS_PER_USER",
        shown: shown(raw.max_sessions_per_user.as_deref(), || {
            defaults.max_sessions_per_user.to_string()
        }),
    };

    // The conditions of `Policy::validate`, in its order.
    for setting in [&access_ttl, &idle_timeout, &absolute_timeout] {
        if setting.value.is_zero() {
            return Err(format!("{setting} must be greater than zero"));
        }
    }
    if max_sessions_per_user.value == 0 {
        return Err(format!("{max_sessions_per_user} must be at least 1"));
    }
    if idle_timeout.value > absolute_timeout.value {
        return Err(format!("{idle_timeout} must not exceed {absolute_timeout}"));
    }
    if leeway.value > MAX_LEEWAY {
        return Err(format!(
            "{leeway} must be at most {}: a longer leeway lets expired tokens pass",
            compact_duration(MAX_LEEWAY)
        ));
    }
    if retention.value < access_ttl.value {
        return Err(format!(
            "{retention} must be at least {access_ttl}: revoked sessions must be kept until \
             their access tokens expire"
        ));
    }
    if reuse_grace.value > MAX_REUSE_GRACE {
        return Err(format!(
            "{reuse_grace} must be at most {}: a longer window helps a thief",
            compact_duration(MAX_REUSE_GRACE)
        ));
    }

    let policy = Policy {
        access_ttl: access_ttl.value,
        idle_timeout: idle_timeout.value,
        absolute_timeout: absolute_timeout.value,
        reuse_grace: reuse_grace.value,
        unused_successor_replay: unused_successor_replay.value,
        max_sessions_per_user: max_sessions_per_user.value,
        leeway: leeway.value,
        retention: retention.value,
    };
    // A final guard should `Policy::validate` learn a condition not checked above.
    policy
        .validate()
        .map_err(|error| format!("invalid lifetimes: {error}"))?;
    Ok(policy)
}

/// `COUNT/PERIOD` (`600/1m`) or `off`.
fn quota(value: Option<&str>, limit: Limit) -> Result<Option<Quota>, String> {
    let Some(text) = value.map(str::trim) else {
        return Ok(Some(limit.default_quota()));
    };
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let name = limit.variable();
    let invalid = || format!("{name} must be COUNT/PERIOD like 600/1m, or off (got {text:?})");
    let (count, period) = text.split_once('/').ok_or_else(invalid)?;
    let count = count.trim().parse::<u32>().map_err(|_| invalid())?;
    let period = humantime::parse_duration(period.trim()).map_err(|_| invalid())?;
    if count == 0 {
        return Err(format!(
            "{name} ({text}) must allow at least 1 request; write off to turn it off"
        ));
    }
    if period.is_zero() || period > Duration::from_secs(86_400) {
        return Err(format!(
            "{name} ({text}) must have a period between 1s and 1d"
        ));
    }
    Ok(Some(Quota { count, period }))
}

fn rate_limits(raw: &RawConfig) -> Result<RateLimitSettings, String> {
    let enabled = match raw.rate_limits.as_deref().map(str::trim) {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => {
            return Err(format!(
                "SESSIOND_RATE_LIMITS must be on or off (got {other:?})"
            ));
        }
    };
    let given = [
        raw.rate_limit_refresh_per_session.as_deref(),
        raw.rate_limit_per_ip.as_deref(),
        raw.rate_limit_create_per_user.as_deref(),
        raw.rate_limit_admin_per_key.as_deref(),
        raw.rate_limit_failed_auth_per_ip.as_deref(),
    ];
    let mut quotas = [None; 5];
    for (limit, value) in Limit::ALL.into_iter().zip(given) {
        quotas[limit as usize] = quota(value, limit)?;
    }
    let capacity = match raw.rate_limit_capacity.as_deref().map(str::trim) {
        None => crate::ratelimit::DEFAULT_CAPACITY,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|capacity| (1_024..=16_777_216).contains(capacity))
            .ok_or_else(|| {
                format!(
                    "SESSIOND_RATE_LIMIT_CAPACITY must be a number of keys between 1024 and 16777216 (got {text:?})"
                )
            })?,
    };
    let trusted_proxies = raw
        .trusted_proxies
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|block| !block.is_empty())
        .map(|block| {
            Cidr::parse(block).map_err(|reason| format!("SESSIOND_TRUSTED_PROXIES: {reason}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let header = match raw.client_ip_header.as_deref().map(str::trim) {
        None => ForwardedHeader::XForwardedFor,
        Some(name) if name.eq_ignore_ascii_case("x-forwarded-for") => {
            ForwardedHeader::XForwardedFor
        }
        Some(name) if name.eq_ignore_ascii_case("forwarded") => ForwardedHeader::Forwarded,
        Some(other) => {
            return Err(format!(
                "SESSIOND_CLIENT_IP_HEADER must be x-forwarded-for or forwarded (got {other:?})"
            ));
        }
    };
    Ok(RateLimitSettings {
        enabled,
        quotas,
        capacity,
        client_ip: ClientIpSource {
            trusted_proxies,
            header,
        },
        ..RateLimitSettings::default()
    })
}

impl Config {
    /// Validates `raw` into a configuration.
    ///
    /// # Errors
    /// A one-line reason naming the offending setting.
    pub fn from_raw(raw: &RawConfig) -> Result<Self, String> {
        let mut warnings = Vec::new();
        let environment = match raw.env.as_deref().map(str::trim) {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(format!(
                    "SESSIOND_ENV must be development or production (got {other:?})"
                ));
            }
        };
        let listen_text = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| format!("SESSIOND_LISTEN must be address:port (got {listen_text:?})"))?;

        let admin_keys = admin_keys(raw.admin_keys.as_deref())?;
        if admin_keys.is_empty() {
            if environment == Environment::Production {
                return Err("production requires SESSIOND_ADMIN_KEYS".into());
            }
            warnings.push(
                "no admin keys (SESSIOND_ADMIN_KEYS): admin routes refuse every request".into(),
            );
        }

        let introspection_clients = introspection_clients(
            raw.introspection_clients
                .as_ref()
                .map(SecretSetting::expose),
        )?;

        let database_url = match &raw.database_url {
            Some(url) => url.clone(),
            None => {
                warnings.push(
                    "no SESSIOND_DATABASE_URL: using sqlite://sessiond.db in the working directory"
                        .into(),
                );
                "sqlite://sessiond.db".to_owned()
            }
        };
        let postgres = is_postgres_url(&database_url);
        if !database_url.starts_with("sqlite:") && !postgres {
            return Err(format!(
                "SESSIOND_DATABASE_URL must be sqlite://PATH or postgres://... (got a {} URL)",
                database_url.split(':').next().unwrap_or("malformed")
            ));
        }

        let issuer = match &raw.issuer {
            Some(issuer) => issuer.trim().to_owned(),
            None if environment == Environment::Production => {
                return Err("production requires SESSIOND_ISSUER".into());
            }
            None => {
                let issuer = format!("http://{listen}");
                warnings.push(format!(
                    "no SESSIOND_ISSUER: the issuer defaults to {issuer} (http://<SESSIOND_LISTEN>) \
                     and access tokens are bound to it, so changing SESSIOND_LISTEN invalidates \
                     the access tokens already issued; set SESSIOND_ISSUER to keep them valid"
                ));
                issuer
            }
        };
        if issuer.is_empty() {
            return Err("SESSIOND_ISSUER must not be empty".into());
        }
        let audience = raw.audience.clone().unwrap_or_else(|| "sessiond".into());
        if audience.trim().is_empty() {
            return Err("SESSIOND_AUDIENCE must not be empty".into());
        }
        let client_id = raw.client_id.clone().unwrap_or_else(|| audience.clone());

        let (master_key, master_key_previous) =
            master_key(raw, environment, &database_url, &mut warnings)?;

        let policy = policy(raw)?;

        let signing_algorithm = match raw.signing_alg.as_deref().map(str::trim) {
            None => SigningAlgorithm::EdDsa,
            Some(name) => SigningAlgorithm::from_jose_name(name).ok_or_else(|| {
                format!("SESSIOND_SIGNING_ALG must be EdDSA, ES256, RS256 or HS256 (got {name:?})")
            })?,
        };
        let key_rotation = match duration(
            raw.key_rotation.as_deref(),
            "SESSIOND_KEY_ROTATION",
            Duration::ZERO,
        )? {
            Duration::ZERO => None,
            period if period < MIN_KEY_ROTATION => {
                return Err(format!(
                    "SESSIOND_KEY_ROTATION must be 0 (off) or at least 1m (got {})",
                    compact_duration(period)
                ));
            }
            period => Some(period),
        };
        let key_publication_delay = match duration(
            raw.key_publication_delay.as_deref(),
            "SESSIOND_KEY_PUBLICATION_DELAY",
            DEFAULT_PUBLICATION_DELAY,
        )? {
            delay if delay < MIN_PUBLICATION_DELAY => {
                return Err(format!(
                    "SESSIOND_KEY_PUBLICATION_DELAY must be at least 2s (got {}); an emergency \
                     rotation that signs at once is `sessiond keys rotate --now`",
                    compact_duration(delay)
                ));
            }
            delay => delay,
        };
        if let Some(period) = key_rotation.filter(|period| *period < key_publication_delay) {
            return Err(format!(
                "SESSIOND_KEY_ROTATION ({}) must be at least SESSIOND_KEY_PUBLICATION_DELAY ({}): \
                 each key is published for the delay before it signs",
                compact_duration(period),
                compact_duration(key_publication_delay)
            ));
        }
        let body_limit = match raw.body_limit.as_deref().map(str::trim) {
            None => 64 * 1024,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|limit| (1024..=16 * 1024 * 1024).contains(limit))
                .ok_or_else(|| {
                    format!(
                        "SESSIOND_BODY_LIMIT must be bytes between 1024 and 16777216 (got {text:?})"
                    )
                })?,
        };
        let sqlite_synchronous = match raw.sqlite_synchronous.as_deref().map(str::trim) {
            None | Some("full") => Synchronous::Full,
            Some("normal") => Synchronous::Normal,
            Some(other) => {
                return Err(format!(
                    "SESSIOND_SQLITE_SYNCHRONOUS must be full or normal (got {other:?})"
                ));
            }
        };
        let sqlite_max_size = sqlite_max_size(raw.sqlite_max_size.as_deref())?;
        let log_format = match raw.log_format.as_deref().map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(format!(
                    "SESSIOND_LOG_FORMAT must be text or json (got {other:?})"
                ));
            }
        };
        let metrics_listen = raw
            .metrics_listen
            .as_deref()
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(|text| {
                text.parse::<SocketAddr>().map_err(|_| {
                    format!("SESSIOND_METRICS_LISTEN must be address:port (got {text:?})")
                })
            })
            .transpose()?;
        if metrics_listen.is_some_and(|metrics| metrics == listen && listen.port() != 0) {
            return Err(format!(
                "SESSIOND_METRICS_LISTEN must differ from SESSIOND_LISTEN ({listen}); leave it unset to serve /metrics on the API's listener"
            ));
        }
        let event_retention = duration(
            raw.event_retention.as_deref(),
            "SESSIOND_EVENT_RETENTION",
            DEFAULT_EVENT_RETENTION,
        )?;
        if event_retention < policy.access_ttl {
            return Err(format!(
                "SESSIOND_EVENT_RETENTION ({}) must be at least SESSIOND_ACCESS_TTL ({}): \
                 verifiers that resume a stream must see every revocation of a live token",
                compact_duration(event_retention),
                compact_duration(policy.access_ttl)
            ));
        }
        let event_heartbeat = duration(
            raw.event_heartbeat.as_deref(),
            "SESSIOND_EVENT_HEARTBEAT",
            DEFAULT_EVENT_HEARTBEAT,
        )?;
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&event_heartbeat) {
            return Err(format!(
                "SESSIOND_EVENT_HEARTBEAT must be between 100ms and 5m (got {})",
                compact_duration(event_heartbeat)
            ));
        }
        let cookie_mode = match raw.cookie_mode.as_deref().map(str::trim) {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => {
                return Err(format!(
                    "SESSIOND_COOKIE_MODE must be on or off (got {other:?})"
                ));
            }
        };
        let cors_origins = cors_origins(raw.cors_origins.as_deref())?;
        let ui_frame_ancestors = ui_frame_ancestors(raw.ui_frame_ancestors.as_deref())?;
        let rate_limits = rate_limits(raw)?;
        if !rate_limits.enabled {
            warnings.push("SESSIOND_RATE_LIMITS=off: no request is ever rate limited".into());
        }
        let roles = roles(raw.roles.as_ref())?;
        let anomaly = anomaly(raw)?;
        let audit_refreshes = audit_refreshes(raw.audit_refreshes.as_deref())?;
        let connections = connection_settings(raw)?;
        let stream_limits = stream_limits(raw)?;
        let audit_failure_period = audit_failure_period(raw.audit_failure_period.as_deref())?;
        Ok(Self {
            listen,
            database_url,
            admin_keys,
            introspection_clients,
            issuer,
            audience,
            client_id,
            policy,
            environment,
            signing_algorithm,
            key_rotation,
            key_publication_delay,
            body_limit,
            sqlite_synchronous,
            sqlite_max_size,
            log_format,
            metrics_listen,
            event_retention,
            event_heartbeat,
            cookie_mode,
            cors_origins,
            ui_frame_ancestors,
            rate_limits,
            master_key,
            master_key_previous,
            roles,
            anomaly,
            audit_refreshes,
            connections,
            stream_limits,
            audit_failure_period,
            warnings,
        })
    }
}

/// The smallest `SESSIOND_SQLITE_MAX_SIZE` accepted: room for the schema and some sessions.
const MIN_SQLITE_MAX_SIZE: u64 = 1024 * 1024;

/// `SESSIOND_SQLITE_MAX_SIZE`: bytes, or a number followed by `KiB`, `MiB` or `GiB`.
fn sqlite_max_size(value: Option<&str>) -> Result<Option<u64>, String> {
    let Some(text) = value.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(split) => text.split_at(split),
        None => (text, ""),
    };
    let multiplier: u64 = match unit.trim() {
        "" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .filter(|bytes| *bytes >= MIN_SQLITE_MAX_SIZE)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "SESSIOND_SQLITE_MAX_SIZE must be a size of at least 1MiB, in bytes or with KiB, MiB or GiB (got {text:?})"
            )
        })
}

/// The shortest and longest connection timeouts accepted.
const CONNECTION_TIMEOUTS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// A connection timeout: a duration within [`CONNECTION_TIMEOUTS`].
fn connection_timeout(
    value: Option<&str>,
    name: &str,
    default: Duration,
) -> Result<Duration, String> {
    let timeout = duration(value, name, default)?;
    if !CONNECTION_TIMEOUTS.contains(&timeout) {
        return Err(format!(
            "{name} must be between 100ms and 1h (got {})",
            compact_duration(timeout)
        ));
    }
    Ok(timeout)
}

/// A count setting: a whole number from 1 to `max`.
fn count(value: Option<&str>, name: &str, default: usize, max: usize) -> Result<usize, String> {
    let Some(text) = value.map(str::trim) else {
        return Ok(default);
    };
    text.parse::<usize>()
        .ok()
        .filter(|count| (1..=max).contains(count))
        .ok_or_else(|| format!("{name} must be a whole number from 1 to {max} (got {text:?})"))
}

/// The most connections or streams a setting may allow.
const MAX_COUNT: usize = 1_000_000;

fn connection_settings(raw: &RawConfig) -> Result<ConnectionSettings, String> {
    let defaults = ConnectionSettings::default();
    Ok(ConnectionSettings {
        header_timeout: connection_timeout(
            raw.header_timeout.as_deref(),
            "SESSIOND_HEADER_TIMEOUT",
            defaults.header_timeout,
        )?,
        body_timeout: connection_timeout(
            raw.body_timeout.as_deref(),
            "SESSIOND_BODY_TIMEOUT",
            defaults.body_timeout,
        )?,
        keep_alive_timeout: connection_timeout(
            raw.keep_alive_timeout.as_deref(),
            "SESSIOND_KEEP_ALIVE_TIMEOUT",
            defaults.keep_alive_timeout,
        )?,
        max_connections: count(
            raw.max_connections.as_deref(),
            "SESSIOND_MAX_CONNECTIONS",
            defaults.max_connections,
            MAX_COUNT,
        )?,
    })
}

fn stream_limits(raw: &RawConfig) -> Result<StreamLimits, String> {
    let defaults = StreamLimits::default();
    Ok(StreamLimits {
        total: count(
            raw.max_streams.as_deref(),
            "SESSIOND_MAX_STREAMS",
            defaults.total,
            MAX_COUNT,
        )?,
        per_user: count(
            raw.max_streams_per_user.as_deref(),
            "SESSIOND_MAX_STREAMS_PER_USER",
            defaults.per_user,
            MAX_COUNT,
        )?,
    })
}

/// The entries of `SESSIOND_ADMIN_KEYS`: `KEY` (scope `full`) or `KEY:SCOPE`, the key at
/// least [`MIN_ADMIN_KEY_LEN`] characters. An entry with a `:` must end in a known scope, so a
/// mistyped one stops start-up instead of becoming a full key. Messages name an entry by its
/// position only: the key, and anything after its last `:`, may be secret.
fn admin_keys(value: Option<&str>) -> Result<Vec<AdminKey>, String> {
    let mut keys = Vec::new();
    for (index, entry) in value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
    {
        let number = index + 1;
        let (key, scope) = match entry.rsplit_once(':') {
            Some((key, scope)) => (
                key,
                AdminScope::from_name(scope).ok_or_else(|| {
                    format!(
                        "SESSIOND_ADMIN_KEYS: key #{number} ends in an unknown scope after its \
                         last `:` (use read, revoke or full)"
                    )
                })?,
            ),
            None => (entry, AdminScope::Full),
        };
        if key.len() < MIN_ADMIN_KEY_LEN {
            return Err(format!(
                "SESSIOND_ADMIN_KEYS: key #{number} is shorter than {MIN_ADMIN_KEY_LEN} characters"
            ));
        }
        keys.push(AdminKey {
            key: key.to_owned(),
            scope,
        });
    }
    Ok(keys)
}

/// The entries of `SESSIOND_INTROSPECTION_CLIENTS`: `CLIENT_ID:SECRET`, split at the first
/// `:`. A client id is printable, without spaces or `:`; a secret is at least
/// [`MIN_CLIENT_SECRET_LEN`] characters; no id twice. Messages name an entry by its position,
/// and by its id once that is known to be one: never a secret.
fn introspection_clients(value: Option<&str>) -> Result<Vec<IntrospectionClient>, String> {
    const NAME: &str = "SESSIOND_INTROSPECTION_CLIENTS";
    let mut clients: Vec<IntrospectionClient> = Vec::new();
    for (index, entry) in value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
    {
        let number = index + 1;
        let Some((client_id, secret)) = entry.split_once(':') else {
            return Err(format!("{NAME}: entry #{number} must be CLIENT_ID:SECRET"));
        };
        if client_id.is_empty()
            || client_id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "{NAME}: entry #{number} must start with a client id without spaces, then :SECRET"
            ));
        }
        if secret.chars().count() < MIN_CLIENT_SECRET_LEN {
            return Err(format!(
                "{NAME}: the secret of {client_id:?} is shorter than {MIN_CLIENT_SECRET_LEN} characters"
            ));
        }
        if clients.iter().any(|client| client.client_id == client_id) {
            return Err(format!("{NAME}: client id {client_id:?} is given twice"));
        }
        clients.push(IntrospectionClient {
            client_id: client_id.to_owned(),
            secret: secret.to_owned(),
        });
    }
    Ok(clients)
}

/// `SESSIOND_ROLES`, from its one-line form or the config file's table.
fn roles(value: Option<&RolesSetting>) -> Result<RolePermissions, String> {
    let table = match value {
        None => return Ok(RolePermissions::default()),
        Some(RolesSetting::Table(table)) => table.clone(),
        Some(RolesSetting::Text(text)) => {
            let mut table = BTreeMap::new();
            for entry in text
                .split(';')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
            {
                let Some((role, permissions)) = entry.split_once('=') else {
                    return Err(format!(
                        "SESSIOND_ROLES: {entry:?} must be ROLE=PERMISSION|PERMISSION, entries \
                         separated by ;"
                    ));
                };
                let permissions: Vec<String> = permissions
                    .split('|')
                    .map(str::trim)
                    .filter(|permission| !permission.is_empty())
                    .map(str::to_owned)
                    .collect();
                if table.insert(role.trim().to_owned(), permissions).is_some() {
                    return Err(format!(
                        "SESSIOND_ROLES: role {:?} is given twice",
                        role.trim()
                    ));
                }
            }
            table
        }
    };
    RolePermissions::new(table).map_err(|error| format!("SESSIOND_ROLES: {error}"))
}

/// `SESSIOND_ANOMALY_POLICY` and `SESSIOND_ANOMALY_CHECKS`.
fn anomaly(raw: &RawConfig) -> Result<AnomalySettings, String> {
    let policy = match raw.anomaly_policy.as_deref().map(str::trim) {
        None => AnomalyPolicy::default(),
        Some(name) => AnomalyPolicy::from_name(name).ok_or_else(|| {
            format!("SESSIOND_ANOMALY_POLICY must be allow, notify or revoke (got {name:?})")
        })?,
    };
    let checks = match raw.anomaly_checks.as_deref() {
        None => Signal::ALL.to_vec(),
        Some(text) => {
            let mut checks = Vec::new();
            for name in text
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
            {
                let signal = Signal::from_name(name).ok_or_else(|| {
                    format!(
                        "SESSIOND_ANOMALY_CHECKS must list network, browser or os, separated \
                         by commas (got {name:?})"
                    )
                })?;
                if !checks.contains(&signal) {
                    checks.push(signal);
                }
            }
            checks.sort();
            checks
        }
    };
    Ok(AnomalySettings { policy, checks })
}

/// The origins of `SESSIOND_CORS_ORIGINS`: each `http(s)://host[:port]` exactly as a browser
/// sends it in `Origin` (no path, no trailing slash). A wildcard is refused: CORS answers
/// carry credentials, and browsers refuse `*` with credentials anyway.
fn cors_origins(value: Option<&str>) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for origin in value.unwrap_or_default().split(',').map(str::trim) {
        if origin.is_empty() {
            continue;
        }
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let well_formed = host.is_some_and(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        });
        if !well_formed {
            return Err(format!(
                "SESSIOND_CORS_ORIGINS must list origins like https://app.example.com, \
                 without path or wildcard (got {origin:?})"
            ));
        }
        origins.push(origin.to_ascii_lowercase());
    }
    Ok(origins)
}

/// The `frame-ancestors` sources of `SESSIOND_UI_FRAME_ANCESTORS`: `'none'` when unset, else
/// `'none'`, `'self'` or origins, separated by spaces. Anything that could end the directive
/// and start another (`;`, `,`, quotes other than the two keywords) is refused.
fn ui_frame_ancestors(value: Option<&str>) -> Result<String, String> {
    let value = value.map(str::trim).filter(|value| !value.is_empty());
    let Some(value) = value else {
        return Ok("'none'".to_owned());
    };
    let sources: Vec<&str> = value.split_ascii_whitespace().collect();
    let well_formed = sources.iter().all(|source| {
        matches!(*source, "'none'" | "'self'")
            || (source.starts_with("https://") || source.starts_with("http://"))
                && source
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:/[]*".contains(&b))
    });
    if !well_formed || (sources.len() > 1 && sources.contains(&"'none'")) {
        return Err(format!(
            "SESSIOND_UI_FRAME_ANCESTORS must be 'none', 'self' or origins like \
             https://app.example.com separated by spaces (got {value:?})"
        ));
    }
    Ok(sources.join(" "))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        "k".repeat(MIN_ADMIN_KEY_LEN)
    }

    #[test]
    fn no_configuration_gives_development_defaults_with_warnings() {
        let config = Config::from_raw(&RawConfig::default()).unwrap();
        assert_eq!(config.environment, Environment::Development);
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.issuer, "http://127.0.0.1:8080");
        assert_eq!(config.policy, Policy::default());
        assert_eq!(config.metrics_listen, None);
        assert!(!config.cookie_mode, "cookie mode is off by default");
        assert!(
            config.cors_origins.is_empty(),
            "no origin gets CORS headers by default"
        );
        assert!(!config.warnings.is_empty());
    }

    #[test]
    fn every_signing_algorithm_is_accepted_by_its_jose_name_and_no_other() {
        for algorithm in SigningAlgorithm::ALL {
            let raw = RawConfig {
                signing_alg: Some(algorithm.jose_name().into()),
                ..RawConfig::default()
            };
            assert_eq!(Config::from_raw(&raw).unwrap().signing_algorithm, algorithm);
        }
        for name in ["none", "eddsa", "es256", "RS384", "PS256", ""] {
            let raw = RawConfig {
                signing_alg: Some(name.into()),
                ..RawConfig::default()
            };
            let error = Config::from_raw(&raw).unwrap_err();
            assert!(
                error.contains("SESSIOND_SIGNING_ALG must be EdDSA, ES256, RS256 or HS256"),
                "{error}"
            );
        }
    }

    #[test]
    fn sqlite_max_size_takes_bytes_or_binary_units_of_a_mebibyte_or_more() {
        let parsed = |text: &str| {
            Config::from_raw(&RawConfig {
                sqlite_max_size: Some(text.into()),
                ..RawConfig::default()
            })
            .map(|config| config.sqlite_max_size)
        };
        assert_eq!(
            Config::from_raw(&RawConfig::default())
                .unwrap()
                .sqlite_max_size,
            None
        );
        assert_eq!(parsed("1048576"), Ok(Some(1_048_576)));
        assert_eq!(parsed("2MiB"), Ok(Some(2 * 1024 * 1024)));
        assert_eq!(parsed(" 10 GiB "), Ok(Some(10 * 1024 * 1024 * 1024)));
        assert_eq!(parsed("4096KiB"), Ok(Some(4 * 1024 * 1024)));
        for bad in ["1KiB", "1MB", "lots", "-5MiB", "99999999999999GiB"] {
            let error = parsed(bad).unwrap_err();
            assert!(
                error.starts_with("SESSIOND_SQLITE_MAX_SIZE must be"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn key_rotation_is_off_by_default_and_takes_a_duration_of_a_minute_or_more() {
        assert_eq!(
            Config::from_raw(&RawConfig::default())
                .unwrap()
                .key_rotation,
            None
        );
        let with = |text: &str| {
            Config::from_raw(&RawConfig {
                key_rotation: Some(text.into()),
                ..RawConfig::default()
            })
        };
        assert_eq!(with("0").unwrap().key_rotation, None);
        assert_eq!(
            with("30d").unwrap().key_rotation,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert!(with("30s").unwrap_err().contains("SESSIOND_KEY_ROTATION"));
        assert!(
            with("monthly")
                .unwrap_err()
                .contains("SESSIOND_KEY_ROTATION")
        );
    }

    #[test]
    fn failed_refreshes_are_audited_each_minute_unless_a_period_from_1s_to_1h_is_set() {
        let with = |text: Option<&str>| {
            Config::from_raw(&RawConfig {
                audit_failure_period: text.map(Into::into),
                ..RawConfig::default()
            })
            .map(|config| config.audit_failure_period)
        };
        assert_eq!(with(None), Ok(Duration::from_secs(60)));
        assert_eq!(with(Some("5s")), Ok(Duration::from_secs(5)));
        assert_eq!(with(Some("1h")), Ok(Duration::from_secs(3600)));
        for bad in ["0", "500ms", "2h", "often"] {
            let error = with(Some(bad)).unwrap_err();
            assert!(
                error.starts_with("SESSIOND_AUDIT_FAILURE_PERIOD must be") && !error.contains('\n'),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn the_publication_delay_defaults_to_ten_minutes_and_bounds_the_rotation_period() {
        let with = |delay: Option<&str>, rotation: Option<&str>| {
            Config::from_raw(&RawConfig {
                key_publication_delay: delay.map(Into::into),
                key_rotation: rotation.map(Into::into),
                ..RawConfig::default()
            })
        };
        assert_eq!(
            with(None, None).unwrap().key_publication_delay,
            Duration::from_secs(600)
        );
        assert_eq!(
            with(Some("2s"), None).unwrap().key_publication_delay,
            Duration::from_secs(2)
        );
        for refused in ["0", "1s", "soon"] {
            let error = with(Some(refused), None).unwrap_err();
            assert!(
                error.contains("SESSIOND_KEY_PUBLICATION_DELAY") && !error.contains('\n'),
                "{refused}: {error}"
            );
        }
        let error = with(None, Some("5m")).unwrap_err();
        assert!(
            error.contains("SESSIOND_KEY_ROTATION (5m)")
                && error.contains("SESSIOND_KEY_PUBLICATION_DELAY (10m)"),
            "{error}"
        );
        assert_eq!(
            with(Some("1m"), Some("5m")).unwrap().key_rotation,
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn weak_or_inconsistent_settings_are_refused_with_a_reason() {
        let cases = [
            (
                RawConfig {
                    admin_keys: Some("short".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_ADMIN_KEYS: key #1 is shorter than 32 characters",
            ),
            (
                RawConfig {
                    idle_timeout: Some("31d".into()),
                    absolute_timeout: Some("30d".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_IDLE_TIMEOUT (31d) must not exceed SESSIOND_ABSOLUTE_TIMEOUT (30d)",
            ),
            (
                RawConfig {
                    access_ttl: Some("fifteen".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_ACCESS_TTL",
            ),
            (
                RawConfig {
                    env: Some("production".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_ADMIN_KEYS",
            ),
            (
                RawConfig {
                    env: Some("production".into()),
                    admin_keys: Some(key()),
                    ..RawConfig::default()
                },
                "SESSIOND_ISSUER",
            ),
            (
                RawConfig {
                    database_url: Some("mysql://x".into()),
                    ..RawConfig::default()
                },
                "sqlite",
            ),
            (
                RawConfig {
                    max_sessions_per_user: Some("0".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_MAX_SESSIONS_PER_USER (0) must be at least 1",
            ),
            (
                RawConfig {
                    cookie_mode: Some("yes".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_COOKIE_MODE must be on or off (got \"yes\")",
            ),
            (
                RawConfig {
                    cors_origins: Some("https://app.example.com, *".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_CORS_ORIGINS must list origins like https://app.example.com",
            ),
            (
                RawConfig {
                    cors_origins: Some("https://app.example.com/".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_CORS_ORIGINS",
            ),
            (
                RawConfig {
                    metrics_listen: Some("localhost".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_METRICS_LISTEN must be address:port (got \"localhost\")",
            ),
            (
                RawConfig {
                    metrics_listen: Some("127.0.0.1:8080".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_METRICS_LISTEN must differ from SESSIOND_LISTEN",
            ),
        ];
        for (raw, expected) in cases {
            let error = Config::from_raw(&raw).unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
            assert!(!error.contains('\n'), "one line: {error:?}");
        }
    }

    #[test]
    fn lifetime_errors_name_the_variables_and_echo_the_values_as_given() {
        let cases: [(&[(&str, &str)], &str); 11] = [
            (
                &[("idle", "40d"), ("absolute", "30d")],
                "SESSIOND_IDLE_TIMEOUT (40d) must not exceed SESSIOND_ABSOLUTE_TIMEOUT (30d)",
            ),
            (
                &[("idle", " 40d ")],
                "SESSIOND_IDLE_TIMEOUT (40d) must not exceed \
                 SESSIOND_ABSOLUTE_TIMEOUT (30d (default))",
            ),
            (
                &[("absolute", "1h")],
                "SESSIOND_IDLE_TIMEOUT (7d (default)) must not exceed \
                 SESSIOND_ABSOLUTE_TIMEOUT (1h)",
            ),
            (
                &[("idle", "1week"), ("absolute", "72h")],
                "SESSIOND_IDLE_TIMEOUT (1week) must not exceed SESSIOND_ABSOLUTE_TIMEOUT (72h)",
            ),
            (
                &[("access_ttl", "0")],
                "SESSIOND_ACCESS_TTL (0) must be greater than zero",
            ),
            (
                &[("idle", "0s")],
                "SESSIOND_IDLE_TIMEOUT (0s) must be greater than zero",
            ),
            (
                &[("absolute", "0m")],
                "SESSIOND_ABSOLUTE_TIMEOUT (0m) must be greater than zero",
            ),
            (
                &[("leeway", "10m")],
                "SESSIOND_LEEWAY (10m) must be at most 5m",
            ),
            (
                &[("retention", "1m")],
                "SESSIOND_RETENTION (1m) must be at least SESSIOND_ACCESS_TTL (15m (default))",
            ),
            (
                &[("retention", "1h"), ("access_ttl", "2h")],
                "SESSIOND_RETENTION (1h) must be at least SESSIOND_ACCESS_TTL (2h)",
            ),
            (
                &[("reuse_grace", "6m")],
                "SESSIOND_REUSE_GRACE (6m) must be at most 5m",
            ),
        ];
        for (settings, expected) in cases {
            let mut raw = RawConfig::default();
            for &(setting, value) in settings {
                let field = match setting {
                    "access_ttl" => &mut raw.access_ttl,
                    "idle" => &mut raw.idle_timeout,
                    "absolute" => &mut raw.absolute_timeout,
                    "leeway" => &mut raw.leeway,
                    "retention" => &mut raw.retention,
                    "reuse_grace" => &mut raw.reuse_grace,
                    other => unreachable!("no setting {other}"),
                };
                *field = Some(value.into());
            }
            let error = Config::from_raw(&raw).unwrap_err();
            assert!(
                error.starts_with(expected),
                "{settings:?}: {error:?} should start with {expected:?}"
            );
            assert!(!error.contains('\n'), "one line: {error:?}");
            assert!(
                !error.contains("invalid lifetimes"),
                "checked before Policy::validate: {error:?}"
            );
        }
    }

    #[test]
    fn defaults_are_shown_in_the_short_form_they_are_written_in() {
        assert_eq!(compact_duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(compact_duration(Duration::from_secs(36 * 3_600)), "36h");
        assert_eq!(compact_duration(Duration::from_secs(15 * 60)), "15m");
        assert_eq!(compact_duration(Duration::from_secs(90)), "90s");
        assert_eq!(compact_duration(Duration::ZERO), "0");
        assert_eq!(compact_duration(Duration::from_millis(1500)), "1s 500ms");
    }

    #[test]
    fn development_without_an_issuer_warns_that_tokens_are_bound_to_the_listen_address() {
        let config = Config::from_raw(&RawConfig {
            listen: Some("127.0.0.1:9000".into()),
            ..RawConfig::default()
        })
        .unwrap();
        assert_eq!(config.issuer, "http://127.0.0.1:9000");
        let warning = config
            .warnings
            .iter()
            .find(|warning| warning.contains("SESSIOND_ISSUER"))
            .unwrap_or_else(|| panic!("an issuer warning among {:?}", config.warnings));
        for mention in [
            "http://127.0.0.1:9000",
            "SESSIOND_LISTEN",
            "invalidates",
            "set SESSIOND_ISSUER",
        ] {
            assert!(
                warning.contains(mention),
                "{warning:?} mentions {mention:?}"
            );
        }
        assert!(!warning.contains('\n'), "one line: {warning:?}");

        let config = Config::from_raw(&RawConfig {
            issuer: Some("https://sessions.example.com".into()),
            ..RawConfig::default()
        })
        .unwrap();
        assert!(
            !config
                .warnings
                .iter()
                .any(|warning| warning.contains("SESSIOND_ISSUER")),
            "no issuer warning once it is set: {:?}",
            config.warnings
        );
    }

    #[test]
    fn a_zero_grace_window_is_allowed_and_durations_parse() {
        let raw = RawConfig {
            reuse_grace: Some("0".into()),
            access_ttl: Some("2h".into()),
            idle_timeout: Some("1h".into()),
            ..RawConfig::default()
        };
        let config = Config::from_raw(&raw).unwrap();
        assert_eq!(config.policy.reuse_grace, Duration::ZERO);
        assert_eq!(config.policy.access_ttl, Duration::from_secs(7200));
    }

    #[test]
    fn unused_successors_are_replayed_for_an_hour_unless_configured_otherwise() {
        let config = Config::from_raw(&RawConfig::default()).unwrap();
        assert_eq!(
            config.policy.unused_successor_replay,
            Duration::from_secs(3600)
        );
        let config = Config::from_raw(&RawConfig {
            unused_successor_replay: Some("6h".into()),
            ..RawConfig::default()
        })
        .unwrap();
        assert_eq!(
            config.policy.unused_successor_replay,
            Duration::from_secs(6 * 3600)
        );
        let error = Config::from_raw(&RawConfig {
            unused_successor_replay: Some("soon".into()),
            ..RawConfig::default()
        })
        .unwrap_err();
        assert!(
            error.starts_with("SESSIOND_UNUSED_SUCCESSOR_REPLAY"),
            "{error:?}"
        );
        assert!(!error.contains('\n'), "one line: {error:?}");
    }

    #[test]
    fn later_sources_override_earlier_ones() {
        let file = RawConfig {
            listen: Some("127.0.0.1:1".into()),
            audience: Some("a".into()),
            ..RawConfig::default()
        };
        let env = RawConfig {
            listen: Some("127.0.0.1:2".into()),
            ..RawConfig::default()
        };
        let merged = file.overlaid_with(&env);
        assert_eq!(merged.listen.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(merged.audience.as_deref(), Some("a"));
    }

    #[test]
    fn rate_limits_default_on_and_each_can_be_set_or_turned_off() {
        let config = Config::from_raw(&RawConfig::default()).unwrap();
        let limits = &config.rate_limits;
        assert!(limits.enabled);
        assert_eq!(
            limits.quotas[Limit::RefreshPerSession as usize],
            Some(Quota {
                count: 20,
                period: Duration::from_secs(300)
            })
        );
        assert_eq!(
            limits.quotas[Limit::FailedAuthPerIp as usize],
            Some(Quota {
                count: 30,
                period: Duration::from_secs(60)
            })
        );
        assert!(limits.client_ip.trusted_proxies.is_empty());

        let config = Config::from_raw(&RawConfig {
            rate_limit_per_ip: Some("1200/2m".into()),
            rate_limit_create_per_user: Some("off".into()),
            trusted_proxies: Some("10.0.0.0/8, 2001:db8::1".into()),
            client_ip_header: Some("Forwarded".into()),
            ..RawConfig::default()
        })
        .unwrap();
        let limits = &config.rate_limits;
        assert_eq!(
            limits.quotas[Limit::PerIp as usize],
            Some(Quota {
                count: 1200,
                period: Duration::from_secs(120)
            })
        );
        assert_eq!(limits.quotas[Limit::CreatePerUser as usize], None);
        assert_eq!(limits.client_ip.trusted_proxies.len(), 2);
        assert_eq!(limits.client_ip.header, ForwardedHeader::Forwarded);

        let config = Config::from_raw(&RawConfig {
            rate_limits: Some("off".into()),
            ..RawConfig::default()
        })
        .unwrap();
        assert!(!config.rate_limits.enabled);
        assert!(
            config
                .warnings
                .iter()
                .any(|warning| warning.contains("SESSIOND_RATE_LIMITS=off"))
        );
    }

    #[test]
    fn bad_rate_limit_settings_are_refused_naming_the_variable() {
        let cases: [(RawConfig, &str); 8] = [
            (
                RawConfig {
                    rate_limits: Some("sometimes".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_RATE_LIMITS must be on or off (got \"sometimes\")",
            ),
            (
                RawConfig {
                    rate_limit_per_ip: Some("lots".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_RATE_LIMIT_PER_IP must be COUNT/PERIOD like 600/1m, or off (got \"lots\")",
            ),
            (
                RawConfig {
                    rate_limit_refresh_per_session: Some("0/5m".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_RATE_LIMIT_REFRESH_PER_SESSION (0/5m) must allow at least 1 request",
            ),
            (
                RawConfig {
                    rate_limit_failed_auth_per_ip: Some("30/0s".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_RATE_LIMIT_FAILED_AUTH_PER_IP (30/0s) must have a period between 1s and 1d",
            ),
            (
                RawConfig {
                    rate_limit_admin_per_key: Some("100/fortnight".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_RATE_LIMIT_ADMIN_PER_KEY must be COUNT/PERIOD",
            ),
            (
                RawConfig {
                    rate_limit_capacity: Some("10".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_RATE_LIMIT_CAPACITY must be a number of keys between 1024 and 16777216",
            ),
            (
                RawConfig {
                    trusted_proxies: Some("10.0.0.0/8,10.0.0.0/99".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_TRUSTED_PROXIES: \"10.0.0.0/99\" has a prefix length over 32",
            ),
            (
                RawConfig {
                    client_ip_header: Some("x-real-ip".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_CLIENT_IP_HEADER must be x-forwarded-for or forwarded",
            ),
        ];
        for (raw, expected) in cases {
            let error = Config::from_raw(&raw).unwrap_err();
            assert!(
                error.starts_with(expected),
                "{error:?} should start with {expected:?}"
            );
            assert!(!error.contains('\n'), "one line: {error:?}");
        }
    }

    #[test]
    fn admin_keys_take_an_optional_scope_and_a_bad_one_stops_start_up() {
        let with = |text: String| {
            Config::from_raw(&RawConfig {
                admin_keys: Some(text),
                ..RawConfig::default()
            })
        };
        let config = with(format!("{k},{k}x:read, {k}y:revoke,{k}z:full", k = key())).unwrap();
        let scopes: Vec<AdminScope> = config.admin_keys.iter().map(|key| key.scope).collect();
        assert_eq!(
            scopes,
            [
                AdminScope::Full,
                AdminScope::Read,
                AdminScope::Revoke,
                AdminScope::Full
            ]
        );
        assert_eq!(config.admin_keys[1].key, format!("{}x", key()));
        let error = with(format!("{}:reed", key())).unwrap_err();
        assert!(error.contains("key #1 ends in an unknown scope"), "{error}");
        assert!(!error.contains("reed"), "{error}");
        let error = with(format!("{},short:read", key())).unwrap_err();
        assert!(error.contains("key #2 is shorter than 32"), "{error}");
    }

    #[test]
    fn roles_are_read_from_the_one_line_form_or_the_file_table() {
        let from_env = Config::from_raw(&RawConfig {
            roles: Some(RolesSetting::Text(
                "editor=notes:read|notes:write; viewer=notes:read".into(),
            )),
            ..RawConfig::default()
        })
        .unwrap();
        assert_eq!(
            from_env.roles.permissions_of("editor"),
            ["notes:read", "notes:write"]
        );
        assert_eq!(from_env.roles.permissions_of("viewer"), ["notes:read"]);

        let file: RawConfig =
            toml::from_str("[roles]\neditor = [\"notes:read\", \"notes:write\"]\n").unwrap();
        let from_file = Config::from_raw(&file).unwrap();
        assert_eq!(
            from_file.roles.permissions_of("editor"),
            ["notes:read", "notes:write"]
        );
        assert!(from_file.roles.permissions_of("viewer").is_empty());

        for (bad, expected) in [
            (
                "editor",
                "SESSIOND_ROLES: \"editor\" must be ROLE=PERMISSION",
            ),
            ("a=x;a=y", "SESSIOND_ROLES: role \"a\" is given twice"),
            ("a b=x", "SESSIOND_ROLES: \"a b\" is not a valid"),
        ] {
            let error = Config::from_raw(&RawConfig {
                roles: Some(RolesSetting::Text(bad.into())),
                ..RawConfig::default()
            })
            .unwrap_err();
            assert!(error.starts_with(expected), "{error}");
        }
        let error = toml::from_str::<RawConfig>("roles = 3\n").unwrap_err();
        assert!(error.message().contains("roles must be a table"), "{error}");
    }

    #[test]
    fn anomaly_policy_defaults_to_notify_on_every_signal() {
        let config = Config::from_raw(&RawConfig::default()).unwrap();
        assert_eq!(config.anomaly, AnomalySettings::default());
        assert_eq!(config.anomaly.policy, AnomalyPolicy::Notify);
        let config = Config::from_raw(&RawConfig {
            anomaly_policy: Some("revoke".into()),
            anomaly_checks: Some("os, network".into()),
            ..RawConfig::default()
        })
        .unwrap();
        assert_eq!(config.anomaly.policy, AnomalyPolicy::Revoke);
        assert_eq!(config.anomaly.checks, [Signal::Network, Signal::Os]);
        let error = Config::from_raw(&RawConfig {
            anomaly_policy: Some("block".into()),
            ..RawConfig::default()
        })
        .unwrap_err();
        assert!(
            error.starts_with("SESSIOND_ANOMALY_POLICY must be"),
            "{error}"
        );
        let error = Config::from_raw(&RawConfig {
            anomaly_checks: Some("network,ip".into()),
            ..RawConfig::default()
        })
        .unwrap_err();
        assert!(
            error.starts_with("SESSIOND_ANOMALY_CHECKS must list"),
            "{error}"
        );
    }

    #[test]
    fn connection_and_stream_limits_have_defaults_and_refuse_bad_values_naming_the_variable() {
        let config = Config::from_raw(&RawConfig::default()).unwrap();
        assert_eq!(config.connections, ConnectionSettings::default());
        assert_eq!(config.connections.header_timeout, Duration::from_secs(10));
        assert_eq!(config.connections.body_timeout, Duration::from_secs(20));
        assert_eq!(
            config.connections.keep_alive_timeout,
            Duration::from_secs(75)
        );
        assert_eq!(config.connections.max_connections, 4096);
        assert_eq!(
            config.stream_limits,
            StreamLimits {
                total: 2048,
                per_user: 16
            }
        );

        let config = Config::from_raw(&RawConfig {
            header_timeout: Some("2s".into()),
            body_timeout: Some("500ms".into()),
            keep_alive_timeout: Some("2m".into()),
            max_connections: Some("100".into()),
            max_streams: Some("50".into()),
            max_streams_per_user: Some("3".into()),
            ..RawConfig::default()
        })
        .unwrap();
        assert_eq!(
            config.connections,
            ConnectionSettings {
                header_timeout: Duration::from_secs(2),
                body_timeout: Duration::from_millis(500),
                keep_alive_timeout: Duration::from_secs(120),
                max_connections: 100,
            }
        );
        assert_eq!(
            config.stream_limits,
            StreamLimits {
                total: 50,
                per_user: 3
            }
        );

        let cases: [(RawConfig, &str); 6] = [
            (
                RawConfig {
                    header_timeout: Some("0".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_HEADER_TIMEOUT must be between 100ms and 1h (got 0)",
            ),
            (
                RawConfig {
                    body_timeout: Some("soon".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_BODY_TIMEOUT must be a duration",
            ),
            (
                RawConfig {
                    keep_alive_timeout: Some("2h".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_KEEP_ALIVE_TIMEOUT must be between 100ms and 1h (got 2h)",
            ),
            (
                RawConfig {
                    max_connections: Some("0".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_MAX_CONNECTIONS must be a whole number from 1 to 1000000 (got \"0\")",
            ),
            (
                RawConfig {
                    max_streams: Some("lots".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_MAX_STREAMS must be a whole number",
            ),
            (
                RawConfig {
                    max_streams_per_user: Some("-1".into()),
                    ..RawConfig::default()
                },
                "SESSIOND_MAX_STREAMS_PER_USER must be a whole number",
            ),
        ];
        for (raw, expected) in cases {
            let error = Config::from_raw(&raw).unwrap_err();
            assert!(
                error.starts_with(expected),
                "{error:?} should start with {expected:?}"
            );
            assert!(!error.contains('\n'), "one line: {error:?}");
        }
    }

    #[test]
    fn introspection_clients_are_id_and_secret_pairs_and_a_bad_one_stops_start_up() {
        let with = |text: String| {
            Config::from_raw(&RawConfig {
                introspection_clients: Some(text.into()),
                ..RawConfig::default()
            })
        };
        // The secret is everything after the first `:`, so it may hold `:` itself.
        let config = with(format!("notes-api:{k}, billing:{k}:x", k = key())).unwrap();
        assert_eq!(
            config.introspection_clients,
            [
                IntrospectionClient {
                    client_id: "notes-api".into(),
                    secret: key(),
                },
                IntrospectionClient {
                    client_id: "billing".into(),
                    secret: format!("{}:x", key()),
                },
            ]
        );
        assert!(
            with(String::new())
                .unwrap()
                .introspection_clients
                .is_empty()
        );
        for (text, expected) in [
            (
                key(),
                "SESSIOND_INTROSPECTION_CLIENTS: entry #1 must be CLIENT_ID:SECRET",
            ),
            (
                format!(":{}", key()),
                "SESSIOND_INTROSPECTION_CLIENTS: entry #1 must start with a client id",
            ),
            (
                format!("a b:{}", key()),
                "SESSIOND_INTROSPECTION_CLIENTS: entry #1 must start with a client id",
            ),
            (
                format!("api:{},api2:tiny", key()),
                "SESSIOND_INTROSPECTION_CLIENTS: the secret of \"api2\" is shorter than 32",
            ),
            (
                format!("api:{k},api:{k}", k = key()),
                "SESSIOND_INTROSPECTION_CLIENTS: client id \"api\" is given twice",
            ),
        ] {
            let error = with(text).unwrap_err();
            assert!(
                error.starts_with(expected),
                "{error:?} should start with {expected:?}"
            );
            assert!(!error.contains(&key()), "no secret in {error:?}");
            assert!(!error.contains("tiny"), "no secret in {error:?}");
        }
    }

    #[test]
    fn debug_output_hides_introspection_secrets() {
        let raw = RawConfig {
            introspection_clients: Some(format!("notes-api:{}", key()).into()),
            ..RawConfig::default()
        };
        assert!(!format!("{raw:?}").contains(&key()));
        let config = Config::from_raw(&raw).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains(&key()), "{shown}");
        assert!(shown.contains("notes-api"), "{shown}");
    }

    #[test]
    fn debug_output_hides_admin_keys() {
        let config = Config::from_raw(&RawConfig {
            admin_keys: Some(key()),
            ..RawConfig::default()
        })
        .unwrap();
        assert!(!format!("{config:?}").contains(&key()));
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
