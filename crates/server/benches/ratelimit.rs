//! What the rate limits cost on the refresh path.
//!
//! A refresh asks the limiter four times: whether the client address has spent its
//! failed-authentication allowance (a peek), then counts the request against the address;
//! when the token would rotate, whether the session has spent its allowance (a peek), and,
//! once the rotation has won, counts it against the session. `refresh_checks` does exactly that, for
//! one address and sessions drawn from a working set of 10,000, with quotas never reached
//! (the common case). `refusal` is the same once the address's allowance is spent: the peek,
//! then the refusal at the address (the answer's metrics and audit row are not included).
//! `distinct_keys` counts a never-seen key every time on a full table (a flood of addresses),
//! the path that evicts. All run on one thread; the table's sets are locked one at a time.
//!
//! Run with `cargo bench -p sessiond-server --bench ratelimit`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sessiond_core::Timestamp;
use sessiond_server::ratelimit::{
    Limit, Quota, RateLimitSettings, RateLimits, ip_key, session_key,
};

fn limits(quota: Quota) -> RateLimits {
    RateLimits::new(RateLimitSettings {
        quotas: Limit::ALL.map(|_| Some(quota)),
        ..RateLimitSettings::default()
    })
}

fn refresh_checks(limits: &RateLimits, ip: IpAddr, session: uuid::Uuid, now: Timestamp) -> bool {
    let address = ip_key(ip);
    limits
        .check_spent(Limit::FailedAuthPerIp, &address, now)
        .and_then(|()| limits.acquire(Limit::PerIp, &address, now))
        .and_then(|()| limits.check_spent(Limit::RefreshPerSession, &session_key(session), now))
        .and_then(|()| limits.acquire(Limit::RefreshPerSession, &session_key(session), now))
        .is_ok()
}

fn bench(c: &mut Criterion) {
    let now = Timestamp::from_unix_millis(1_800_000_000_000);
    let sessions: Vec<uuid::Uuid> = (0..10_000).map(|_| uuid::Uuid::new_v4()).collect();
    let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    let mut group = c.benchmark_group("rate_limits");
    group.measurement_time(Duration::from_secs(5));

    let unreached = limits(Quota {
        count: u32::MAX,
        period: Duration::from_secs(1),
    });
    let mut next = 0;
    group.bench_function("refresh_checks", |b| {
        b.iter(|| {
            next = (next + 1) % sessions.len();
            black_box(refresh_checks(
                &unreached,
                ip,
                sessions[next],
                black_box(now),
            ))
        });
    });

    let spent = limits(Quota {
        count: 1,
        period: Duration::from_secs(3_600),
    });
    let session = sessions[0];
    let _ = refresh_checks(&spent, ip, session, now);
    group.bench_function("refusal", |b| {
        b.iter(|| black_box(refresh_checks(&spent, ip, session, black_box(now))));
    });

    let flooded = limits(Quota {
        count: 600,
        period: Duration::from_secs(60),
    });
    let mut address: u32 = 0;
    group.bench_function("distinct_keys", |b| {
        b.iter(|| {
            address = address.wrapping_add(1);
            let key = ip_key(IpAddr::V4(Ipv4Addr::from(address)));
            black_box(flooded.acquire(Limit::PerIp, &key, black_box(now)).is_ok())
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
