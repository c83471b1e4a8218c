//! Rate limits: which requests are limited, by what key, and at what rate; the client
//! address they key on; and the bound on the audit rows their refusals write.
//!
//! The limits, each a [`Quota`] per key:
//!
//! | [`Limit`] | key | counts |
//! |---|---|---|
//! | `refresh_per_session` | session | rotations that happened (grace-window replays and lost races do not count) |
//! | `per_ip` | client address (IPv6 by /64) | refreshes, and session creations by the end user's `device.ip` |
//! | `create_per_user` | user id (digest) | session creations |
//! | `admin_per_key` | admin key (digest) | every admin-authenticated request |
//! | `failed_auth_per_ip` | client address (IPv6 by /64) | forged or unknown credentials; once spent, further ones are refused, but a valid credential never is |
//!
//! The HTTP edge asks [`RateLimits`] before doing the work and turns a refusal into a `429`.

mod client_ip;
mod limiter;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sessiond_core::Timestamp;
use sessiond_core::primitives::sha256;

pub use client_ip::{Cidr, ClientIpSource, ForwardedHeader};
pub use limiter::{Decision, LimitKey, Limiter, MemoryLimiter, Quota, WAYS};

/// A rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Rotating refreshes per session.
    RefreshPerSession = 0,
    /// Refreshes and session creations per client address.
    PerIp = 1,
    /// Session creations per user.
    CreatePerUser = 2,
    /// Admin requests per admin key.
    AdminPerKey = 3,
    /// Failed authentications per client address.
    FailedAuthPerIp = 4,
}

impl Limit {
    /// Every limit, in the order of their indices.
    pub const ALL: [Limit; 5] = [
        Limit::RefreshPerSession,
        Limit::PerIp,
        Limit::CreatePerUser,
        Limit::AdminPerKey,
        Limit::FailedAuthPerIp,
    ];

    /// The name in metrics, audit details and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RefreshPerSession => "refresh_per_session",
            Self::PerIp => "per_ip",
            Self::CreatePerUser => "create_per_user",
            Self::AdminPerKey => "admin_per_key",
            Self::FailedAuthPerIp => "failed_auth_per_ip",
        }
    }

    /// The `SESSIOND_*` variable that sets it.
    pub const fn variable(self) -> &'static str {
        match self {
            Self::RefreshPerSession => "SESSIOND_RATE_LIMIT_REFRESH_PER_SESSION",
            Self::PerIp => "SESSIOND_RATE_LIMIT_PER_IP",
            Self::CreatePerUser => "SESSIOND_RATE_LIMIT_CREATE_PER_USER",
            Self::AdminPerKey => "SESSIOND_RATE_LIMIT_ADMIN_PER_KEY",
            Self::FailedAuthPerIp => "SESSIOND_RATE_LIMIT_FAILED_AUTH_PER_IP",
        }
    }

    /// Its default quota.
    pub const fn default_quota(self) -> Quota {
        const fn per(count: u32, seconds: u64) -> Quota {
            Quota {
                count,
                period: Duration::from_secs(seconds),
            }
        }
        match self {
            Self::RefreshPerSession => per(20, 300),
            Self::PerIp => per(600, 60),
            Self::CreatePerUser => per(10, 60),
            Self::AdminPerKey => per(30_000, 60),
            Self::FailedAuthPerIp => per(30, 60),
        }
    }

    /// What a refusal says, after "too many".
    const fn refusal(self) -> &'static str {
        match self {
            Self::RefreshPerSession => "refreshes of this session",
            Self::PerIp => "requests from this address",
            Self::CreatePerUser => "sessions created for this user",
            Self::AdminPerKey => "requests with this admin key",
            Self::FailedAuthPerIp => "failed authentications from this address",
        }
    }
}

/// The rate-limit settings, as configured.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// `false` turns every limit off (`SESSIOND_RATE_LIMITS=off`).
    pub enabled: bool,
    /// Each limit's quota, `None` where it is off; indexed by [`Limit`].
    pub quotas: [Option<Quota>; 5],
    /// Keys held per limit.
    pub capacity: usize,
    /// Audit rows written for refusals, at most, per second and process.
    pub audit_per_second: u32,
    /// Where the client address comes from.
    pub client_ip: ClientIpSource,
}

/// The default capacity: keys held per limit.
pub const DEFAULT_CAPACITY: usize = 65_536;

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            quotas: Limit::ALL.map(|limit| Some(limit.default_quota())),
            capacity: DEFAULT_CAPACITY,
            audit_per_second: 10,
            client_ip: ClientIpSource::default(),
        }
    }
}

/// A refused request: which limit, and the limiter's answer.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    /// The limit that refused.
    pub limit: Limit,
    /// Its quota.
    pub quota: Quota,
    /// Its answer.
    pub decision: Decision,
    /// Whether this refusal should be written to the audit trail: the key's first in the
    /// limit's period, while the process-wide audit budget lasts.
    pub audit: bool,
}

impl Refusal {
    /// The message of the `429` body.
    pub fn message(&self) -> String {
        format!(
            "too many {}; retry in {} s",
            self.limit.refusal(),
            self.retry_after_seconds()
        )
    }

    /// Whole seconds until a retry can pass (at least 1).
    pub fn retry_after_seconds(&self) -> u64 {
        ceil_seconds(self.decision.retry_after).max(1)
    }
}

/// `duration` rounded up to whole seconds.
pub fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The process's rate limits over a [`Limiter`].
#[derive(Debug)]
pub struct RateLimits {
    settings: RateLimitSettings,
    limiter: Box<dyn Limiter>,
    /// GCRA state of the audit budget (nanoseconds since the epoch).
    audit_tat_ns: AtomicU64,
}

impl RateLimits {
    /// The limits of `settings` over an in-memory limiter.
    pub fn new(settings: RateLimitSettings) -> Self {
        // With limits off nothing is ever stored: keep the table minimal.
        let capacity = if settings.enabled {
            settings.capacity
        } else {
            WAYS
        };
        Self::with_limiter(settings, Box::new(MemoryLimiter::new(capacity)))
    }

    /// The limits of `settings` over `limiter`.
    pub fn with_limiter(settings: RateLimitSettings, limiter: Box<dyn Limiter>) -> Self {
        Self {
            settings,
            limiter,
            audit_tat_ns: AtomicU64::new(0),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// Where the client address comes from.
    pub fn client_ip_source(&self) -> &ClientIpSource {
        &self.settings.client_ip
    }

    fn quota(&self, limit: Limit) -> Option<Quota> {
        if !self.settings.enabled {
            return None;
        }
        self.settings.quotas[limit as usize]
    }

    /// Counts one request of `key` under `limit`, or refuses it.
    ///
    /// # Errors
    /// The [`Refusal`] when the key has used its allowance.
    pub fn acquire(&self, limit: Limit, key: &LimitKey, now: Timestamp) -> Result<(), Refusal> {
        let Some(quota) = self.quota(limit) else {
            return Ok(());
        };
        let decision = self.limiter.acquire(limit, key, quota, now);
        if decision.allowed {
            return Ok(());
        }
        Err(Refusal {
            limit,
            quota,
            decision,
            audit: decision.first_refusal && self.take_audit_budget(now),
        })
    }

    /// Refuses when `key` has no allowance left under `limit`, counting nothing: for the
    /// failed-authentication limit, asked once a credential has failed, and for a session,
    /// asked before a rotation that is counted only once it has happened.
    ///
    /// # Errors
    /// The [`Refusal`] when the key has used its allowance.
    pub fn check_spent(&self, limit: Limit, key: &LimitKey, now: Timestamp) -> Result<(), Refusal> {
        let Some(quota) = self.quota(limit) else {
            return Ok(());
        };
        let decision = self.limiter.peek(limit, key, quota, now);
        if decision.allowed {
            return Ok(());
        }
        Err(Refusal {
            limit,
            quota,
            decision,
            audit: decision.first_refusal && self.take_audit_budget(now),
        })
    }

    /// Counts one failed authentication from the address `key`: a forged or unknown
    /// credential. Once the allowance is spent, [`RateLimits::check_spent`] refuses.
    pub fn record_failure(&self, key: &LimitKey, now: Timestamp) {
        if let Some(quota) = self.quota(Limit::FailedAuthPerIp) {
            self.limiter
                .acquire(Limit::FailedAuthPerIp, key, quota, now);
        }
    }

    /// Whether an audit row may be written now: at most `audit_per_second` per second, in
    /// bursts of as many.
    fn take_audit_budget(&self, now: Timestamp) -> bool {
        let per_second = u64::from(self.settings.audit_per_second.max(1));
        let interval = 1_000_000_000 / per_second;
        let tolerance = 1_000_000_000 - interval;
        let now_ns = u64::try_from(now.unix_millis())
            .unwrap_or(0)
            .saturating_mul(1_000_000);
        let mut current = self.audit_tat_ns.load(Ordering::Relaxed);
        loop {
            let tat = current.max(now_ns);
            if tat - now_ns > tolerance {
                return false;
            }
            match self.audit_tat_ns.compare_exchange_weak(
                current,
                tat + interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

/// The key of a client address: IPv4 addresses as themselves, IPv6 addresses by their /64,
/// the block one subscriber usually holds whole.
pub fn ip_key(address: IpAddr) -> LimitKey {
    match address.to_canonical() {
        IpAddr::V4(v4) => LimitKey(v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            LimitKey(octets)
        }
    }
}

/// The key of a session.
pub fn session_key(session_id: uuid::Uuid) -> LimitKey {
    LimitKey(session_id.into_bytes())
}

/// The key of a user id: the first half of its SHA-256, so any length fits.
pub fn user_key(user_id: &str) -> LimitKey {
    let digest = sha256(user_id.as_bytes());
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    LimitKey(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + millis)
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_ipv4_stay_apart() {
        assert_eq!(
            ip_key("2001:db8:1:2::1".parse().unwrap()),
            ip_key("2001:db8:1:2:ffff::9".parse().unwrap())
        );
        assert_ne!(
            ip_key("2001:db8:1:2::1".parse().unwrap()),
            ip_key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_ne!(
            ip_key("192.0.2.1".parse().unwrap()),
            ip_key("192.0.2.2".parse().unwrap())
        );
        assert_eq!(
            ip_key("192.0.2.1".parse().unwrap()),
            ip_key("::ffff:192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn turned_off_nothing_is_refused() {
        let limits = RateLimits::new(RateLimitSettings {
            enabled: false,
            ..RateLimitSettings::default()
        });
        let key = ip_key("192.0.2.1".parse().unwrap());
        for _ in 0..1_000 {
            assert!(limits.acquire(Limit::FailedAuthPerIp, &key, at(0)).is_ok());
            limits.record_failure(&key, at(0));
        }
        assert!(
            limits
                .check_spent(Limit::FailedAuthPerIp, &key, at(0))
                .is_ok()
        );
    }

    #[test]
    fn failures_spend_the_allowance_and_the_first_refusal_is_audited() {
        let mut settings = RateLimitSettings::default();
        settings.quotas[Limit::FailedAuthPerIp as usize] = Some(Quota {
            count: 3,
            period: Duration::from_secs(60),
        });
        let limits = RateLimits::new(settings);
        let key = ip_key("192.0.2.1".parse().unwrap());
        for _ in 0..3 {
            assert!(
                limits
                    .check_spent(Limit::FailedAuthPerIp, &key, at(0))
                    .is_ok()
            );
            limits.record_failure(&key, at(0));
        }
        let refused = limits
            .check_spent(Limit::FailedAuthPerIp, &key, at(0))
            .unwrap_err();
        assert_eq!(refused.retry_after_seconds(), 20);
        assert!(refused.audit);
        let again = limits
            .check_spent(Limit::FailedAuthPerIp, &key, at(0))
            .unwrap_err();
        assert!(!again.audit);
    }

    #[test]
    fn audit_rows_are_bounded_per_second() {
        let limits = RateLimits::new(RateLimitSettings {
            audit_per_second: 5,
            ..RateLimitSettings::default()
        });
        let granted = (0..1_000)
            .filter(|_| limits.take_audit_budget(at(0)))
            .count();
        assert_eq!(granted, 5);
        assert!(limits.take_audit_budget(at(200)));
        assert!(!limits.take_audit_budget(at(200)));
    }
}
