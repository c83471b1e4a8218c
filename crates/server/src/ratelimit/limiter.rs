//! The [`Limiter`] trait and [`MemoryLimiter`], its in-process implementation: GCRA (the
//! generic cell rate algorithm) over a fixed-capacity, set-associative table.
//!
//! GCRA keeps one number per key, the theoretical arrival time (TAT) of the next request. A
//! quota of `count` per `period` spaces requests `period / count` apart and tolerates a burst
//! of `count` at once; a request conforms when the TAT is no further ahead of now than the
//! burst allows. Its state is a single instant, so the table holds no counters and no
//! timestamps lists, and a key whose TAT has passed is indistinguishable from a key never
//! seen: such an entry can be dropped without changing any decision.
//!
//! The table never grows. Keys are spread over sets of [`WAYS`] slots by a hash keyed at
//! random at start (so an attacker cannot aim a flood at one set), each set behind its own
//! mutex (so contention is confined to keys sharing a set). A key not in its set takes an
//! empty slot, else a fully replenished one, else the stalest (the one closest to being
//! replenished, whose loss forgives the fewest requests). Checking a key allocates nothing.

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sessiond_core::Timestamp;

use super::Limit;

/// Slots per set: a lookup compares at most this many keys.
pub const WAYS: usize = 8;

/// A rate: at most `count` requests per `period`, `count` of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed per period (and in one burst).
    pub count: u32,
    /// The period.
    pub period: Duration,
}

impl Quota {
    /// The spacing between requests at the sustained rate, in nanoseconds (at least 1).
    fn emission_interval_ns(self) -> u64 {
        (duration_ns(self.period) / u64::from(self.count.max(1))).max(1)
    }

    /// How far ahead of now the TAT may be for a request to conform.
    fn burst_tolerance_ns(self) -> u64 {
        duration_ns(self.period).saturating_sub(self.emission_interval_ns())
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.period)
        )
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn timestamp_ns(now: Timestamp) -> u64 {
    // Timestamps before the epoch do not occur; clamping keeps the arithmetic unsigned.
    u64::try_from(now.unix_millis())
        .unwrap_or(0)
        .saturating_mul(1_000_000)
        .max(1)
}

/// What a limited thing is keyed by: 16 bytes (an IPv6 address or prefix, a UUID, or a
/// digest). Never a secret: admin keys are keyed by a digest of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitKey(pub [u8; 16]);

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request conforms (and, for [`Limiter::acquire`], was counted).
    pub allowed: bool,
    /// The quota's count.
    pub limit: u32,
    /// Requests that would still conform now.
    pub remaining: u32,
    /// Until the key's allowance is whole again.
    pub reset: Duration,
    /// Until one more request would conform (zero when allowed).
    pub retry_after: Duration,
    /// For a refusal: whether it is the key's first in this period, the one worth an audit
    /// row; later ones in the same period are only counted.
    pub first_refusal: bool,
}

/// Decides whether requests conform to quotas, per limit and key.
///
/// The in-memory implementation is [`MemoryLimiter`]: each instance counts alone. A limiter
/// shared by several instances (a GCRA script over Redis or a PostgreSQL table, keyed by the
/// limit's name and the key's hex) implements the same two operations; the trait is
/// synchronous because every check sits on a request's path, and such an implementation would
/// answer from a local copy it reconciles in the background rather than wait for the network.
pub trait Limiter: Send + Sync + std::fmt::Debug {
    /// Counts one request of `key` under `limit` at `now` if it conforms to `quota`; a refused
    /// request is not counted.
    fn acquire(&self, limit: Limit, key: &LimitKey, quota: Quota, now: Timestamp) -> Decision;

    /// Whether one more request of `key` would conform, without counting it.
    fn peek(&self, limit: Limit, key: &LimitKey, quota: Quota, now: Timestamp) -> Decision;
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: LimitKey,
    /// The theoretical arrival time in nanoseconds since the epoch; 0 marks an empty slot.
    tat_ns: u64,
    /// When this key's last audited refusal happened; 0 if never.
    audited_ns: u64,
}

const EMPTY: Slot = Slot {
    key: LimitKey([0; 16]),
    tat_ns: 0,
    audited_ns: 0,
};

/// One limit's table.
#[derive(Debug)]
struct Table {
    sets: Box<[Mutex<[Slot; WAYS]>]>,
    mask: u64,
    hasher: RandomState,
    occupied: AtomicUsize,
}

impl Table {
    fn new(capacity: usize) -> Self {
        let sets = (capacity / WAYS).max(1).next_power_of_two();
        Self {
            sets: (0..sets).map(|_| Mutex::new([EMPTY; WAYS])).collect(),
            mask: sets as u64 - 1,
            hasher: RandomState::new(),
            occupied: AtomicUsize::new(0),
        }
    }

    fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    fn check(&self, key: &LimitKey, quota: Quota, now: Timestamp, count_it: bool) -> Decision {
        let now_ns = timestamp_ns(now);
        let interval = quota.emission_interval_ns();
        let tolerance = quota.burst_tolerance_ns();
        #[allow(clippy::cast_possible_truncation)]
        let set = &self.sets[(self.hasher.hash_one(key) & self.mask) as usize];
        // A poisoned set only means a panic elsewhere mid-update of plain numbers; they are
        // still usable.
        let mut slots = set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = match slots
            .iter()
            .position(|slot| slot.tat_ns != 0 && slot.key == *key)
        {
            Some(index) => index,
            // A key never seen (or forgotten) has its whole allowance; a peek leaves no trace.
            None if !count_it => {
                return Decision {
                    allowed: true,
                    limit: quota.count,
                    remaining: quota.count,
                    reset: Duration::ZERO,
                    retry_after: Duration::ZERO,
                    first_refusal: false,
                };
            }
            None => {
                let index = victim(&slots, now_ns);
                if slots[index].tat_ns == 0 {
                    self.occupied.fetch_add(1, Ordering::Relaxed);
                }
                slots[index] = Slot {
                    key: *key,
                    tat_ns: now_ns,
                    audited_ns: 0,
                };
                index
            }
        };
        let slot = &mut slots[index];
        let tat = slot.tat_ns.max(now_ns);
        let ahead = tat - now_ns;
        if ahead > tolerance {
            // Peeks refuse too (the failed-authentication limit answers 429 on a peek), so
            // they mark the audited refusal as well; they never move the TAT.
            let first_refusal = slot.audited_ns == 0
                || now_ns.saturating_sub(slot.audited_ns) >= duration_ns(quota.period);
            if first_refusal {
                slot.audited_ns = now_ns;
            }
            return Decision {
                allowed: false,
                limit: quota.count,
                remaining: 0,
                reset: Duration::from_nanos(ahead),
                retry_after: Duration::from_nanos(ahead - tolerance),
                first_refusal,
            };
        }
        let after = tat + interval;
        if count_it {
            slot.tat_ns = after;
        }
        let used_ahead = after - now_ns;
        let remaining = (tolerance.saturating_sub(used_ahead - interval)) / interval;
        let remaining = if count_it { remaining } else { remaining + 1 };
        Decision {
            allowed: true,
            limit: quota.count,
            remaining: u32::try_from(remaining)
                .unwrap_or(u32::MAX)
                .min(quota.count),
            reset: Duration::from_nanos(if count_it { used_ahead } else { ahead }),
            retry_after: Duration::ZERO,
            first_refusal: false,
        }
    }
}

/// The slot a new key takes: an empty one, else one whose allowance is whole again (dropping
/// it changes no decision), else the one closest to that.
fn victim(slots: &[Slot; WAYS], now_ns: u64) -> usize {
    if let Some(index) = slots
        .iter()
        .position(|slot| slot.tat_ns == 0 || slot.tat_ns <= now_ns)
    {
        return index;
    }
    slots
        .iter()
        .enumerate()
        .min_by_key(|(_, slot)| slot.tat_ns)
        .map_or(0, |(index, _)| index)
}

/// The in-process [`Limiter`]: one fixed-capacity table per [`Limit`].
#[derive(Debug)]
pub struct MemoryLimiter {
    tables: Box<[Table]>,
}

impl MemoryLimiter {
    /// A limiter holding at most `capacity` keys per limit (rounded up to a power of two
    /// times [`WAYS`]), all allocated now.
    pub fn new(capacity: usize) -> Self {
        Self {
            tables: Limit::ALL.iter().map(|_| Table::new(capacity)).collect(),
        }
    }

    /// Keys held for `limit` now.
    pub fn len(&self, limit: Limit) -> usize {
        self.tables[limit as usize].occupied.load(Ordering::Relaxed)
    }

    /// Whether no key is held for `limit`.
    pub fn is_empty(&self, limit: Limit) -> bool {
        self.len(limit) == 0
    }

    /// The most keys held per limit.
    pub fn capacity(&self) -> usize {
        self.tables.first().map_or(0, Table::capacity)
    }
}

impl Limiter for MemoryLimiter {
    fn acquire(&self, limit: Limit, key: &LimitKey, quota: Quota, now: Timestamp) -> Decision {
        self.tables[limit as usize].check(key, quota, now, true)
    }

    fn peek(&self, limit: Limit, key: &LimitKey, quota: Quota, now: Timestamp) -> Decision {
        self.tables[limit as usize].check(key, quota, now, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_800_000_000_000;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_unix_millis(START + millis)
    }

    fn key(n: u32) -> LimitKey {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        LimitKey(bytes)
    }

    const TWENTY_PER_FIVE_MINUTES: Quota = Quota {
        count: 20,
        period: Duration::from_secs(300),
    };

    #[test]
    fn a_burst_of_the_quota_passes_then_the_next_waits_one_interval() {
        let limiter = MemoryLimiter::new(64);
        let quota = TWENTY_PER_FIVE_MINUTES;
        for expected_remaining in (0..20).rev() {
            let decision = limiter.acquire(Limit::RefreshPerSession, &key(1), quota, at(0));
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
        }
        let refused = limiter.acquire(Limit::RefreshPerSession, &key(1), quota, at(0));
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Duration::from_secs(15));
        assert_eq!(refused.reset, Duration::from_secs(300));
        assert!(refused.first_refusal);
        let again = limiter.acquire(Limit::RefreshPerSession, &key(1), quota, at(1_000));
        assert!(!again.allowed);
        assert!(!again.first_refusal, "one audit row per key and period");
        assert_eq!(again.retry_after, Duration::from_secs(14));
        // Another key and another limit are untouched.
        assert!(
            limiter
                .acquire(Limit::RefreshPerSession, &key(2), quota, at(0))
                .allowed
        );
        assert!(limiter.acquire(Limit::PerIp, &key(1), quota, at(0)).allowed);
        // One interval later, one more passes.
        assert!(
            limiter
                .acquire(Limit::RefreshPerSession, &key(1), quota, at(15_000))
                .allowed
        );
        assert!(
            !limiter
                .acquire(Limit::RefreshPerSession, &key(1), quota, at(15_000))
                .allowed
        );
        // After a whole period the allowance is whole again.
        assert!(
            limiter
                .acquire(Limit::RefreshPerSession, &key(1), quota, at(315_000))
                .allowed
        );
    }

    #[test]
    fn peeking_counts_nothing() {
        let limiter = MemoryLimiter::new(64);
        let quota = Quota {
            count: 3,
            period: Duration::from_secs(60),
        };
        for _ in 0..10 {
            let decision = limiter.peek(Limit::FailedAuthPerIp, &key(7), quota, at(0));
            assert!(decision.allowed);
            assert_eq!(decision.remaining, 3);
        }
        for _ in 0..3 {
            limiter.acquire(Limit::FailedAuthPerIp, &key(7), quota, at(0));
        }
        let decision = limiter.peek(Limit::FailedAuthPerIp, &key(7), quota, at(0));
        assert!(!decision.allowed);
        assert!(decision.first_refusal);
        let decision = limiter.peek(Limit::FailedAuthPerIp, &key(7), quota, at(0));
        assert!(!decision.allowed);
        assert!(!decision.first_refusal, "one audit row per key and period");
    }

    #[test]
    fn a_flood_of_distinct_keys_never_holds_more_than_the_capacity() {
        let limiter = MemoryLimiter::new(4_096);
        let capacity = limiter.capacity();
        assert_eq!(capacity, 4_096);
        let quota = Quota {
            count: 600,
            period: Duration::from_secs(60),
        };
        // A victim that used part of its allowance just before the flood.
        for _ in 0..599 {
            limiter.acquire(Limit::PerIp, &key(u32::MAX), quota, at(0));
        }
        for n in 0..100_000 {
            let decision = limiter.acquire(Limit::PerIp, &key(n), quota, at(1));
            assert!(decision.allowed, "a new key always has its whole allowance");
            assert!(limiter.len(Limit::PerIp) <= capacity);
        }
        assert_eq!(limiter.len(Limit::PerIp), capacity);
        assert!(limiter.is_empty(Limit::RefreshPerSession));
        // The flood of one-request keys did not wash the busy key out: it has one request
        // left, not a fresh allowance.
        assert!(
            limiter
                .acquire(Limit::PerIp, &key(u32::MAX), quota, at(1))
                .allowed
        );
        assert!(
            !limiter
                .acquire(Limit::PerIp, &key(u32::MAX), quota, at(1))
                .allowed
        );
    }

    #[test]
    fn replenished_entries_are_evicted_before_busy_ones() {
        // One set: every key competes for the same eight slots.
        let limiter = MemoryLimiter::new(WAYS);
        let quota = Quota {
            count: 2,
            period: Duration::from_secs(60),
        };
        // Seven keys used once long ago: replenished by now.
        for n in 1..8 {
            limiter.acquire(Limit::PerIp, &key(n), quota, at(-40_000));
        }
        // A busy key, at its limit.
        limiter.acquire(Limit::PerIp, &key(0), quota, at(0));
        limiter.acquire(Limit::PerIp, &key(0), quota, at(0));
        // Seven new keys take the replenished slots, not the busy key's.
        for n in 100..107 {
            limiter.acquire(Limit::PerIp, &key(n), quota, at(0));
        }
        assert!(
            !limiter.acquire(Limit::PerIp, &key(0), quota, at(0)).allowed,
            "the busy key is still remembered"
        );
    }
}
