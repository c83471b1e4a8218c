//! Device Bound Session Credentials: `SESSIOND_DBSC` and `SESSIOND_DBSC_COOKIE_TTL`.

use std::time::Duration;

use super::values::duration;
use super::*;

/// The bound cookie's lifetime when `SESSIOND_DBSC_COOKIE_TTL` is not set: how often, at
/// most, a copied set of cookies keeps working without the browser's key.
pub const DEFAULT_COOKIE_TTL: Duration = Duration::from_secs(5 * 60);
/// The shortest bound cookie lifetime accepted: each renewal costs the browser a signature.
const MIN_COOKIE_TTL: Duration = Duration::from_secs(10);
/// The longest bound cookie lifetime accepted: beyond it the binding protects little.
const MAX_COOKIE_TTL: Duration = Duration::from_secs(60 * 60);

/// What Device Bound Session Credentials are configured with, when they are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbscSettings {
    /// How long a bound cookie counts before the browser's key must renew it.
    pub cookie_ttl: Duration,
}

/// `SESSIOND_DBSC` (`on` or `off`, the default; `on` needs cookie mode) and
/// `SESSIOND_DBSC_COOKIE_TTL` (10s to 1h, default 5m).
pub(super) fn settings(raw: &RawConfig, cookie_mode: bool) -> Result<Option<DbscSettings>, String> {
    const TTL: &str = "SESSIOND_DBSC_COOKIE_TTL";
    let on = match raw.dbsc.as_deref().map(str::trim) {
        None | Some("off") => false,
        Some("on") => true,
        Some(other) => return Err(format!("SESSIOND_DBSC must be on or off (got {other:?})")),
    };
    let cookie_ttl = duration(raw.dbsc_cookie_ttl.as_deref(), TTL, DEFAULT_COOKIE_TTL)?;
    if !(MIN_COOKIE_TTL..=MAX_COOKIE_TTL).contains(&cookie_ttl) {
        return Err(format!(
            "{TTL} must be from 10s to 1h (got {:?})",
            raw.dbsc_cookie_ttl.as_deref().unwrap_or_default()
        ));
    }
    if on && !cookie_mode {
        return Err(
            "SESSIOND_DBSC=on binds the refresh cookie of cookie mode: it needs \
             SESSIOND_COOKIE_MODE=on"
                .into(),
        );
    }
    Ok(on.then_some(DbscSettings { cookie_ttl }))
}
