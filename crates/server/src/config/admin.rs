//! Admin keys (`SESSIOND_ADMIN_KEYS`) and introspection clients
//! (`SESSIOND_INTROSPECTION_CLIENTS`): who may call the admin routes and introspection.

use super::values::entries;
use super::*;
use crate::admin_auth::{AdminKey, AdminScope, IntrospectionClient};

/// The shortest admin key accepted.
pub const MIN_ADMIN_KEY_LEN: usize = 32;
/// The shortest introspection client secret accepted.
pub const MIN_CLIENT_SECRET_LEN: usize = 32;

/// The entries of `SESSIOND_ADMIN_KEYS`: `KEY` (scope `full`) or `KEY:SCOPE`, the key at
/// least [`MIN_ADMIN_KEY_LEN`] characters. An entry with a `:` must end in a known scope, so a
/// mistyped one stops start-up instead of becoming a full key. Messages name an entry by its
/// position only: the key, and anything after its last `:`, may be secret.
fn admin_keys(value: Option<&str>) -> Result<Vec<AdminKey>, String> {
    let mut keys = Vec::new();
    for (index, entry) in entries(value).enumerate() {
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
    for (index, entry) in entries(value).enumerate() {
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

/// Who may call the admin routes and introspection.
pub(super) struct AdminCredentials {
    pub(super) admin_keys: Vec<AdminKey>,
    pub(super) introspection_clients: Vec<IntrospectionClient>,
}

/// `SESSIOND_ADMIN_KEYS` (required in production, a warning in development when none) and
/// `SESSIOND_INTROSPECTION_CLIENTS`.
pub(super) fn credentials(
    raw: &RawConfig,
    environment: Environment,
    warnings: &mut Vec<String>,
) -> Result<AdminCredentials, String> {
    let admin_keys = admin_keys(raw.admin_keys.as_ref().map(SecretSetting::expose))?;
    if admin_keys.is_empty() {
        if environment == Environment::Production {
            return Err("production requires SESSIOND_ADMIN_KEYS".into());
        }
        warnings
            .push("no admin keys (SESSIOND_ADMIN_KEYS): admin routes refuse every request".into());
    }
    let introspection_clients = introspection_clients(
        raw.introspection_clients
            .as_ref()
            .map(SecretSetting::expose),
    )?;
    Ok(AdminCredentials {
        admin_keys,
        introspection_clients,
    })
}
