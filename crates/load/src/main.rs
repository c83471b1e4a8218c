//! `sessiond-load`: a load generator for a running sessiond, over HTTP on loopback.
//!
//! It first creates sessions through the admin API (`POST /v1/sessions`, one distinct user per
//! session so the per-user limit never evicts one), then runs `--connections` workers for
//! `--warmup` plus `--duration`, each on its own persistent HTTP/1.1 connection, in one of two
//! modes:
//!
//! - `refresh`: every worker owns a disjoint share of the sessions and rotates them in turn
//!   (`POST /v1/sessions/refresh`), always sending the newest refresh token exactly once;
//! - `validate`: every worker reads `GET /v1/sessions/current` with the sessions' access
//!   tokens, round-robin.
//!
//! ```text
//! sessiond-load --url http://127.0.0.1:8080 --admin-key "$KEY" --mode refresh \
//!     --connections 32 --duration 10s --warmup 2s
//! ```
//!
//! Only requests started after the warmup count. `requests` counts every measured request,
//! `errors` those without the expected status (200) or without an answer at all, `rps` is
//! `requests` over the measured wall time, and the latency percentiles are over successful
//! requests only. The human summary goes to stderr and exactly one JSON line to stdout, so
//! `sessiond-load ... > result.json` keeps the machine-readable part. The tool's own CPU time
//! is reported too: a generator that uses its cores fully is measuring itself.
//!
//! It stops by itself: no request starts after the end of the schedule and every request has
//! a timeout. It refuses non-loopback targets unless `--allow-remote` is given. For
//! meaningful numbers start the server with `SESSIOND_RATE_LIMITS=off`.

mod client;
mod cpu;
mod histogram;
mod target;
mod workload;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Parser, ValueEnum};
use hyper::header::HeaderValue;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::cpu::CpuClock;
use crate::workload::{Endpoints, Schedule, WorkerStats};

/// Drive a running sessiond with refresh or validate traffic and report throughput, latency
/// percentiles and this tool's own CPU use.
#[derive(Debug, Parser)]
#[command(name = "sessiond-load", version, about, long_about = None)]
struct Args {
    /// Base URL of the sessiond API; must be loopback unless --allow-remote
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,

    /// An admin key the server accepts (one of its SESSIOND_ADMIN_KEYS), used only to create
    /// the sessions
    #[arg(long, env = "SESSIOND_LOAD_ADMIN_KEY", hide_env_values = true)]
    admin_key: String,

    /// What to measure
    #[arg(long, value_enum)]
    mode: Mode,

    /// Concurrent workers, each with one persistent HTTP/1.1 connection
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,

    /// Measured time, like 10s, 500ms, 2m
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,

    /// Sessions to create before the run [default: 4 per connection]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    sessions: Option<u32>,

    /// Load before measuring starts, excluded from the statistics
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,

    /// Tokio worker threads of this tool
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,

    /// Per-request (and per-connect) timeout; a request that takes longer counts as an error
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,

    /// Exit with status 1 when any measured request failed (or none was measured)
    #[arg(long)]
    fail_on_error: bool,

    /// Allow a --url that is not on this machine
    #[arg(long)]
    allow_remote: bool,
}

/// The traffic to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Rotate refresh tokens: POST /v1/sessions/refresh
    Refresh,
    /// Check access tokens: GET /v1/sessions/current
    Validate,
}

/// Parses `500ms`, `10s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s, 500ms or 2m"))?;
    let seconds_per_unit = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(number * seconds_per_unit)
        .map_err(|error| format!("{text:?} is out of range: {error}"))
}

/// The one JSON line; field order is the contract's, extra fields follow.
#[derive(Debug, Serialize)]
struct Report {
    mode: Mode,
    connections: u32,
    duration_s: f64,
    requests: u64,
    errors: u64,
    rps: f64,
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    p999_ms: Option<f64>,
    mean_ms: Option<f64>,
    sessions: usize,
    threads: u32,
    cpu_s: Option<f64>,
    cpu_us_per_request: Option<f64>,
    reconnects: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sessiond-load: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    ensure!(!args.duration.is_zero(), "--duration must be more than 0");
    ensure!(!args.timeout.is_zero(), "--timeout must be more than 0");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads as usize)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(drive(args))
}

async fn drive(args: Args) -> anyhow::Result<ExitCode> {
    let base = target::parse_base_url(&args.url)?;
    let address = target::resolve_reachable(&base, args.allow_remote, args.timeout).await?;
    let endpoints = Arc::new(Endpoints::new(&base, address, args.timeout)?);
    let admin = workload::bearer(&args.admin_key).context("--admin-key")?;
    let cpu_clock = CpuClock::detect();
    let connections = args.connections as usize;
    let session_count = args
        .sessions
        .map_or(connections.saturating_mul(4), |count| count as usize);

    eprintln!(
        "sessiond-load: {} mode against {} ({address}), {connections} connections, {} threads",
        mode_name(args.mode),
        args.url,
        args.threads
    );
    if args.mode == Mode::Refresh && session_count < connections {
        eprintln!(
            "  note: {session_count} sessions for {connections} connections: {} workers stay idle",
            connections - session_count
        );
    }
    let setup_started = Instant::now();
    let credentials =
        workload::create_sessions(Arc::clone(&endpoints), admin, session_count, connections)
            .await
            .context("setup failed")?;
    eprintln!(
        "  created {} sessions in {:.2} s; warmup {}, measuring {}",
        credentials.len(),
        setup_started.elapsed().as_secs_f64(),
        format_duration(args.warmup),
        format_duration(args.duration)
    );

    let load_started = Instant::now();
    let measure_from = load_started + args.warmup;
    let schedule = Schedule {
        measure_from,
        end: measure_from + args.duration,
    };
    let mut workers = JoinSet::new();
    match args.mode {
        Mode::Refresh => {
            let mut shares: Vec<Vec<String>> = vec![Vec::new(); connections];
            for (index, session) in credentials.into_iter().enumerate() {
                if let Some(share) = shares.get_mut(index % connections) {
                    share.push(session.refresh_token);
                }
            }
            for share in shares {
                workers.spawn(workload::refresh_worker(
                    Arc::clone(&endpoints),
                    schedule,
                    share,
                ));
            }
        }
        Mode::Validate => {
            let bearers: Arc<[HeaderValue]> = credentials
                .into_iter()
                .map(|session| session.bearer)
                .collect();
            for worker in 0..connections {
                workers.spawn(workload::validate_worker(
                    Arc::clone(&endpoints),
                    schedule,
                    Arc::clone(&bearers),
                    worker,
                ));
            }
        }
    }

    // CPU is sampled at the window's edges so setup and warmup do not count against it.
    // The two marker lines tell a script watching stderr where the measured window lies, so
    // that it can read the servers' CPU over the same window (bench/pg-instances.sh).
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_at_start = cpu_clock.process_cpu_seconds();
    eprintln!("  window starts");
    let mut total = WorkerStats::default();
    while let Some(joined) = workers.join_next().await {
        total.merge(joined.context("a worker panicked")?);
    }
    let measured = measure_from.elapsed();
    eprintln!("  window ends");
    let cpu_seconds = cpu_at_start
        .zip(cpu_clock.process_cpu_seconds())
        .map(|(start, end)| (end - start).max(0.0));

    let report = build_report(&args, session_count, &total, measured, cpu_seconds);
    print_summary(&report, &total, args.warmup);
    println!(
        "{}",
        serde_json::to_string(&report).context("encoding the JSON report")?
    );

    let failed = report.errors > 0 || report.requests == 0;
    Ok(if args.fail_on_error && failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn build_report(
    args: &Args,
    sessions: usize,
    total: &WorkerStats,
    measured: Duration,
    cpu_seconds: Option<f64>,
) -> Report {
    let seconds = measured.as_secs_f64();
    let latencies = &total.latencies;
    let millis = |nanos: u64| round(nanos as f64 / 1e6, 3);
    Report {
        mode: args.mode,
        connections: args.connections,
        duration_s: round(seconds, 3),
        requests: total.requests,
        errors: total.errors,
        rps: if seconds > 0.0 {
            round(total.requests as f64 / seconds, 1)
        } else {
            0.0
        },
        p50_ms: latencies.quantile_nanos(0.50).map(millis),
        p90_ms: latencies.quantile_nanos(0.90).map(millis),
        p99_ms: latencies.quantile_nanos(0.99).map(millis),
        max_ms: latencies.max_nanos().map(millis),
        p999_ms: latencies.quantile_nanos(0.999).map(millis),
        mean_ms: latencies.mean_nanos().map(|nanos| round(nanos / 1e6, 3)),
        sessions,
        threads: args.threads,
        cpu_s: cpu_seconds.map(|cpu| round(cpu, 2)),
        cpu_us_per_request: cpu_seconds
            .filter(|_| total.requests > 0)
            .map(|cpu| round(cpu * 1e6 / total.requests as f64, 1)),
        reconnects: total.reconnects,
    }
}

fn print_summary(report: &Report, total: &WorkerStats, warmup: Duration) {
    let show = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    eprintln!(
        "  measured   {:.3} s after {} warmup ({} warmup requests, {} failed)",
        report.duration_s,
        format_duration(warmup),
        total.warmup_requests,
        total.warmup_errors
    );
    eprintln!(
        "  requests   {} ({:.1}/s), ok {}, errors {}",
        report.requests,
        report.rps,
        total.latencies.count(),
        report.errors
    );
    if !total.failures.is_empty() {
        let kinds: Vec<String> = total
            .failures
            .iter()
            .map(|(failure, count)| format!("{failure}: {count}"))
            .collect();
        eprintln!("  errors by  {}", kinds.join(", "));
    }
    if let Some(error) = &total.last_connect_error {
        eprintln!("  last connect error: {error}");
    }
    eprintln!(
        "  latency ms p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
        show(report.p50_ms),
        show(report.p90_ms),
        show(report.p99_ms),
        show(report.p999_ms),
        show(report.max_ms),
        show(report.mean_ms)
    );
    match report.cpu_s {
        Some(cpu) => eprintln!(
            "  own cpu    {cpu:.2} s ({:.2} cores of {} threads{})",
            if report.duration_s > 0.0 {
                cpu / report.duration_s
            } else {
                0.0
            },
            report.threads,
            report
                .cpu_us_per_request
                .map_or_else(String::new, |us| format!(", {us:.1} us per request"))
        ),
        None => eprintln!("  own cpu    unknown (no /proc/self/stat)"),
    }
    eprintln!(
        "  reconnects {}, sessions dropped {}{}",
        report.reconnects,
        total.sessions_dropped,
        if total.ran_out_of_sessions {
            ", some workers ran out of sessions and stopped early"
        } else {
            ""
        }
    );
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Refresh => "refresh",
        Mode::Validate => "validate",
    }
}

fn format_duration(duration: Duration) -> String {
    // Three decimals, then drop the zeros they add: 2s, 1.5s, 0.25s.
    let fixed = format!("{:.3}", duration.as_secs_f64());
    format!("{}s", fixed.trim_end_matches('0').trim_end_matches('.'))
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_common_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_are_rejected() {
        for text in ["", "s", "10x", "-1s", "ten seconds", "1e400s"] {
            assert!(parse_duration(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn the_command_line_of_the_brief_parses() {
        let args = Args::try_parse_from([
            "sessiond-load",
            "--url",
            "http://127.0.0.1:8080",
            "--admin-key",
            "k",
            "--mode",
            "refresh",
            "--connections",
            "32",
            "--duration",
            "10s",
            "--sessions",
            "64",
            "--warmup",
            "2s",
        ])
        .expect("valid arguments");
        assert_eq!(args.mode, Mode::Refresh);
        assert_eq!(args.connections, 32);
        assert_eq!(args.sessions, Some(64));
        assert_eq!(args.threads, 2);
        assert!(
            Args::try_parse_from(["sessiond-load", "--admin-key", "k", "--mode", "x"]).is_err()
        );
    }

    #[test]
    fn the_json_line_keeps_the_contract_field_order() {
        let report = Report {
            mode: Mode::Validate,
            connections: 2,
            duration_s: 1.0,
            requests: 10,
            errors: 0,
            rps: 10.0,
            p50_ms: Some(0.5),
            p90_ms: Some(0.9),
            p99_ms: Some(1.0),
            max_ms: Some(1.2),
            p999_ms: Some(1.2),
            mean_ms: Some(0.6),
            sessions: 8,
            threads: 2,
            cpu_s: None,
            cpu_us_per_request: None,
            reconnects: 0,
        };
        let line = serde_json::to_string(&report).expect("serialisable");
        assert!(
            line.starts_with(
                r#"{"mode":"validate","connections":2,"duration_s":1.0,"requests":10,"errors":0,"rps":10.0,"p50_ms":0.5,"p90_ms":0.9,"p99_ms":1.0,"max_ms":1.2,"#
            ),
            "{line}"
        );
    }

    #[test]
    fn durations_print_without_trailing_zeros() {
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
