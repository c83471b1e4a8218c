//! Rate limits (`SESSIOND_RATE_LIMIT_*`) and where the client address comes from.

use std::time::Duration;

use super::values::entries;
use super::*;
use crate::ratelimit::{Cidr, ClientIpSource, ForwardedHeader, Limit, Quota, RateLimitSettings};

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

fn settings(raw: &RawConfig) -> Result<RateLimitSettings, String> {
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
    let trusted_proxies = entries(raw.trusted_proxies.as_deref())
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

/// The rate limits `raw` sets (a warning when they are off).
pub(super) fn rate_limits(
    raw: &RawConfig,
    warnings: &mut Vec<String>,
) -> Result<RateLimitSettings, String> {
    let rate_limits = settings(raw)?;
    if !rate_limits.enabled {
        warnings.push("SESSIOND_RATE_LIMITS=off: no request is ever rate limited".into());
    }
    Ok(rate_limits)
}
