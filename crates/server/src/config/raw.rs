//! The file, environment and flag layer: [`RawConfig`], every setting as text as a source gives
//! it, read from a TOML file or by clap from `SESSIOND_*` variables and flags, and overlaid in
//! that order (file < environment < flags). [`SecretSetting`] keeps secrets out of `Debug`, and
//! [`DatabaseUrl`] a database password.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::url::redact_password;

/// `SESSIOND_ROLES`, the permissions each role stands for: `editor=notes:read|notes:write;
/// viewer=notes:read` in the environment or on the command line, or a `[roles]` table
/// (`editor = ["notes:read", "notes:write"]`) in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolesSetting {
    /// The one-line form, checked by [`Config::from_raw`](super::Config::from_raw).
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
    /// `sqlite://PATH` or `postgres://…`; its value stays out of `--help`, since a PostgreSQL
    /// URL may carry a password.
    #[arg(
        long,
        global = true,
        env = "SESSIOND_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<DatabaseUrl>,
    /// Comma-separated admin keys, each at least 32 characters, optionally followed by
    /// `:read`, `:revoke` or `:full` (the default).
    #[arg(
        long,
        global = true,
        env = "SESSIOND_ADMIN_KEYS",
        hide_env_values = true
    )]
    pub admin_keys: Option<SecretSetting>,
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
    /// `on` binds cookie-mode sessions to a browser key (Device Bound Session Credentials);
    /// `off` (default). Needs cookie mode.
    #[arg(long, global = true, env = "SESSIOND_DBSC")]
    pub dbsc: Option<String>,
    /// How long a bound cookie counts before the browser's key must renew it, e.g. `5m`.
    #[arg(long, global = true, env = "SESSIOND_DBSC_COOKIE_TTL")]
    pub dbsc_cookie_ttl: Option<String>,
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
    /// `off` (default) or `required`: DPoP proofs must carry a nonce sessiond handed out.
    #[arg(long, global = true, env = "SESSIOND_DPOP_NONCE")]
    pub dpop_nonce: Option<String>,
    /// How old a DPoP proof's `iat` may be, e.g. `60s` (default; 5 s to 10 min).
    #[arg(long, global = true, env = "SESSIOND_DPOP_PROOF_MAX_AGE")]
    pub dpop_proof_max_age: Option<String>,
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
            dbsc,
            dbsc_cookie_ttl,
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
            audit_failure_period,
            dpop_nonce,
            dpop_proof_max_age
        );
        self
    }
}

/// A setting that is a secret (admin keys, introspection clients, master keys): kept as written, but its `Debug` output, and so
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

/// `SESSIOND_DATABASE_URL` as written. Its `Debug` output, and so that of [`RawConfig`], hides
/// a password (see [`redact_password`]): a PostgreSQL URL may carry one.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL as written, password included.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&redact_password(&self.0), f)
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl From<&str> for DatabaseUrl {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl From<String> for DatabaseUrl {
    fn from(text: String) -> Self {
        Self(text)
    }
}
