//! What tokens carry and how long they live: issuer, audience and client id, the lifetimes
//! and limits of the session policy, and the permissions each role stands for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use sessiond_core::Policy;
use sessiond_core::permission::RolePermissions;

use super::values::*;
use super::*;

/// The lifetimes and limits, checked with messages that name the `SESSIOND_*` variables and
/// their values as given; [`Policy::validate`] is still run afterwards as a final guard.
pub(super) fn policy(raw: &RawConfig) -> Result<Policy, String> {
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

/// `SESSIOND_ROLES`, from its one-line form or the config file's table.
pub(super) fn roles(value: Option<&RolesSetting>) -> Result<RolePermissions, String> {
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

/// What access tokens name: `iss`, `aud` and `client_id`.
pub(super) struct TokenIdentity {
    pub(super) issuer: String,
    pub(super) audience: String,
    pub(super) client_id: String,
}

/// `SESSIOND_ISSUER` (required in production; in development `http://` and `listen`, with a
/// warning), `SESSIOND_AUDIENCE` and `SESSIOND_CLIENT_ID`.
pub(super) fn identity(
    raw: &RawConfig,
    environment: Environment,
    listen: SocketAddr,
    warnings: &mut Vec<String>,
) -> Result<TokenIdentity, String> {
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
    Ok(TokenIdentity {
        issuer,
        audience,
        client_id,
    })
}
