//! `sessiond-seed`: fills a sessiond database with sessions, fast, for benchmarks.
//!
//! Creating a million sessions over HTTP takes longer than the benchmark that needs them, so
//! this binary skips HTTP but nothing else: it resolves its settings exactly as `sessiond`
//! does (`SESSIOND_*` variables, `--config`, the same flags), opens the store and unlocks the
//! master key with the server library's own `AppState::build`, and calls
//! `SessionService::create_session` from `--concurrency` tasks at once, so that a store that
//! batches writes gets concurrent ones to batch. Every row is therefore what
//! `POST /v1/sessions` would have written: encrypted columns sealed under the database's data
//! key, the device registry row, the `session.created` and `device.new` events and audit
//! rows. At the end it seals the audit chain, as a running server's sealer would, so that a
//! server started on the database does not spend its first minutes sealing.
//!
//! Session `i` belongs to user `PREFIX{i % users}`, so with `--users U` every user has at
//! most `ceil(N / U)` sessions; that must not exceed the per-user limit
//! (`SESSIOND_MAX_SESSIONS_PER_USER`, 5 by default), or creations would evict earlier ones.
//! Sessions carry a device name and `--ip` (127.0.0.1 by default, so that refreshes sent from
//! loopback are not reported as anomalies) and no user agent (a recorded browser would make
//! every refresh from `wrk`, which sends none, an anomaly).
//!
//! Unless `SESSIOND_SQLITE_SYNCHRONOUS` (or `--sqlite-synchronous`) says otherwise, a SQLite
//! database is seeded with `synchronous=normal`: commits are not synced one by one, which a
//! seed does not need (a crash means seeding again), and the file is the same.
//!
//! ```text
//! SESSIOND_DATABASE_URL=sqlite:///tmp/s.db sessiond-seed --sessions 1000000 --users 250000 \
//!     --tokens-out /tmp/tokens.txt --tokens 250000
//! ```
//!
//! Progress goes to stderr; one JSON line to stdout at the end: sessions, users, seconds
//! (creation only), rate, seal_seconds, db_bytes (SQLite file plus its WAL; null for
//! PostgreSQL), bytes_per_session and tokens written.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use serde_json::json;
use sessiond_core::Error;
use sessiond_core::service::NewSessionRequest;
use sessiond_core::store::StoreError;
use sessiond_server::cli::{init_logging, resolve_config};
use sessiond_server::config::RawConfig;
use sessiond_server::database::OpenMode;
use sessiond_server::{AppState, SystemClock};
use tokio::task::JoinSet;

/// Audit events sealed per transaction at the end: large, since no request waits for the
/// writer here (a server seals 200 at a time so that refreshes do not wait).
const SEAL_BATCH: u32 = 5_000;

/// How many times a creation refused as unavailable (the writer was busy too long) is tried
/// again before the seed stops.
const RETRIES: u32 = 5;

/// Put N sessions into a sessiond database through the session service, as the API would.
#[derive(Debug, Parser)]
#[command(name = "sessiond-seed", version, about, long_about = None)]
struct Args {
    /// A TOML file of settings, as for `sessiond --config`
    #[arg(long)]
    config: Option<PathBuf>,

    /// Every setting of `sessiond` (database URL, master key, policy, signing algorithm...)
    #[command(flatten)]
    settings: RawConfig,

    /// How many sessions to create
    #[arg(long)]
    sessions: u64,

    /// How many distinct users own them, round-robin (default: one user per session)
    #[arg(long)]
    users: Option<u64>,

    /// User ids are this prefix followed by a number
    #[arg(long, default_value = "seed-user-")]
    user_prefix: String,

    /// The end-user address recorded with each session
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,

    /// Write refresh tokens of distinct sessions to this file, one a line; the sessions are
    /// spread evenly over the creation order (every `sessions / tokens`-th one)
    #[arg(long)]
    tokens_out: Option<PathBuf>,

    /// How many refresh tokens to write (default: one per session)
    #[arg(long)]
    tokens: Option<u64>,

    /// Creations in flight at once
    #[arg(long, default_value_t = 64)]
    concurrency: u64,

    /// Skip sealing the audit chain at the end
    #[arg(long)]
    no_seal: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // A seed needs no per-commit sync: see the module documentation.
    if args.settings.sqlite_synchronous.is_none() {
        args.settings.sqlite_synchronous = Some("normal".to_owned());
    }
    let config = resolve_config(args.config.as_deref(), &args.settings)?;
    init_logging(config.log_format);
    let users = args.users.unwrap_or(args.sessions);
    ensure!(users > 0, "--users must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let per_user = sessions_per_user(args.sessions, users);
    let limit = u64::from(config.policy.max_sessions_per_user);
    if per_user > limit {
        bail!(
            "{} sessions over {users} users is up to {per_user} per user, above the per-user \
             limit of {limit}: creations would evict sessions; pass --users {} or more",
            args.sessions,
            args.sessions.div_ceil(limit)
        );
    }
    let token_count = match (&args.tokens_out, args.tokens) {
        (None, Some(_)) => bail!("--tokens needs --tokens-out"),
        (None, None) => 0,
        (Some(_), tokens) => tokens.unwrap_or(args.sessions),
    };
    ensure!(
        token_count <= args.sessions,
        "--tokens {token_count} is more than --sessions {}: each token is a distinct session",
        args.sessions
    );
    let tokens_out = match &args.tokens_out {
        Some(path) => Some(BufWriter::new(File::create(path).with_context(|| {
            format!("cannot create the tokens file {}", path.display())
        })?)),
        None => None,
    };

    let state = AppState::build(&config, Arc::new(SystemClock), OpenMode::CreateIfMissing)
        .await
        .context("cannot open the database as the server would")?;
    let plan = Arc::new(Plan {
        sessions: args.sessions,
        users,
        user_prefix: args.user_prefix,
        ip: args.ip,
        token_count,
        next: AtomicU64::new(0),
        created: AtomicU64::new(0),
        tokens_out: Mutex::new(tokens_out),
    });

    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency.min(args.sessions.max(1)) {
        workers.spawn(create_sessions(state.clone(), plan.clone()));
    }
    let progress = tokio::spawn(report_progress(plan.clone(), started));
    while let Some(outcome) = workers.join_next().await {
        if let Err(error) = outcome.context("a creating task panicked")? {
            workers.abort_all();
            progress.abort();
            return Err(error);
        }
    }
    progress.abort();
    let seconds = started.elapsed().as_secs_f64();
    let writer = plan
        .tokens_out
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .take();
    if let Some(mut writer) = writer {
        writer.flush().context("cannot write the tokens file")?;
    }

    let seal_started = Instant::now();
    let mut sealed = 0;
    if !args.no_seal {
        loop {
            let batch = state
                .service
                .seal_audit(SEAL_BATCH)
                .await
                .context("cannot seal the audit chain")?;
            sealed += batch;
            if batch < u64::from(SEAL_BATCH) {
                break;
            }
        }
    }
    let seal_seconds = seal_started.elapsed().as_secs_f64();
    // Folds the WAL into the database file, so the file alone (copied, or opened by a server)
    // holds every seeded session.
    state.service.store().close().await;
    drop(state);

    let db_bytes = sqlite_path(&config.database_url).map(|path| database_bytes(&path));
    #[allow(clippy::cast_precision_loss)]
    let sessions = args.sessions as f64;
    let rate = if seconds > 0.0 {
        sessions / seconds
    } else {
        0.0
    };
    #[allow(clippy::cast_precision_loss)]
    let bytes_per_session = db_bytes
        .filter(|_| args.sessions > 0)
        .map(|bytes| (bytes as f64 / sessions).round());
    eprintln!(
        "seeded {} sessions in {seconds:.1} s ({rate:.0}/s); sealed {sealed} audit events in \
         {seal_seconds:.1} s",
        args.sessions
    );
    println!(
        "{}",
        json!({
            "sessions": args.sessions,
            "users": users,
            "seconds": round2(seconds),
            "rate": rate.round(),
            "audit_sealed": sealed,
            "seal_seconds": round2(seal_seconds),
            "db_bytes": db_bytes,
            "bytes_per_session": bytes_per_session,
            "tokens": token_count,
        })
    );
    Ok(())
}

/// What the creating tasks share.
struct Plan {
    sessions: u64,
    users: u64,
    user_prefix: String,
    ip: String,
    /// How many sessions write their refresh token out.
    token_count: u64,
    /// The next session number to create.
    next: AtomicU64,
    /// Sessions created so far.
    created: AtomicU64,
    tokens_out: Mutex<Option<BufWriter<File>>>,
}

/// Creates sessions until the plan's numbers run out.
async fn create_sessions(state: AppState, plan: Arc<Plan>) -> anyhow::Result<()> {
    loop {
        let number = plan.next.fetch_add(1, Ordering::Relaxed);
        if number >= plan.sessions {
            return Ok(());
        }
        let mut attempts = 0;
        let issued = loop {
            let created = state
                .service
                .create_session(NewSessionRequest {
                    user_id: format!("{}{}", plan.user_prefix, number % plan.users),
                    tenant_id: None,
                    device_id: None,
                    device_name: Some(format!("seed device {number}")),
                    user_agent: None,
                    ip: Some(plan.ip.clone()),
                    claims: serde_json::Map::new(),
                    metadata: serde_json::Map::new(),
                    dpop_jkt: None,
                })
                .await;
            match created {
                // A busy machine can keep a creation waiting for the writer past the pool's
                // timeout; that wrote nothing, so it is tried again, a few times.
                Err(Error::Store(StoreError::Unavailable(_))) if attempts < RETRIES => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other.with_context(|| format!("cannot create session {number}"))?,
            }
        };
        if writes_token(number, plan.sessions, plan.token_count) {
            let mut out = plan
                .tokens_out
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if let Some(out) = out.as_mut() {
                writeln!(out, "{}", issued.pair.refresh_token)
                    .context("cannot write the tokens file")?;
            }
        }
        plan.created.fetch_add(1, Ordering::Relaxed);
    }
}

/// Prints the count and the recent rate to stderr every two seconds.
async fn report_progress(plan: Arc<Plan>, started: Instant) {
    let mut ticks = tokio::time::interval(Duration::from_secs(2));
    ticks.tick().await;
    let mut last = (0, Instant::now());
    loop {
        ticks.tick().await;
        let created = plan.created.load(Ordering::Relaxed);
        let now = Instant::now();
        #[allow(clippy::cast_precision_loss)]
        let recent = (created - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
        eprintln!(
            "{created}/{} sessions, {recent:.0}/s, {:.0} s",
            plan.sessions,
            started.elapsed().as_secs_f64()
        );
        last = (created, now);
    }
}

/// Whether session `number` of `sessions` is one of the `tokens` whose refresh token is
/// written out: every `sessions / tokens`-th, so that a benchmark's sessions are spread over
/// the whole database rather than all among the first created.
fn writes_token(number: u64, sessions: u64, tokens: u64) -> bool {
    if tokens == 0 {
        return false;
    }
    let stride = (sessions / tokens).max(1);
    number.is_multiple_of(stride) && number / stride < tokens
}

/// The most sessions any user gets when `sessions` are dealt round-robin to `users`.
fn sessions_per_user(sessions: u64, users: u64) -> u64 {
    sessions.div_ceil(users)
}

/// The file of a `sqlite:` URL, or `None` for PostgreSQL and in-memory databases.
fn sqlite_path(database_url: &str) -> Option<PathBuf> {
    database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .filter(|path| !path.is_empty() && !path.starts_with(':'))
        .map(PathBuf::from)
}

/// The size of the database file and its write-ahead log.
fn database_bytes(path: &Path) -> u64 {
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |meta| meta.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path) + size(Path::new(&wal))
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_dealt_so_no_user_passes_the_ceiling() {
        assert_eq!(sessions_per_user(10, 10), 1);
        assert_eq!(sessions_per_user(10, 3), 4);
        assert_eq!(sessions_per_user(1_000_000, 200_000), 5);
        assert_eq!(sessions_per_user(1_000_001, 200_000), 6);
    }

    #[test]
    fn tokens_are_written_for_exactly_the_asked_number_of_spread_sessions() {
        for (sessions, tokens) in [(10, 10), (10, 3), (1_000, 7), (1_000, 0), (999, 1_000)] {
            let chosen: Vec<u64> = (0..sessions)
                .filter(|&number| writes_token(number, sessions, tokens))
                .collect();
            assert_eq!(
                chosen.len() as u64,
                tokens.min(sessions),
                "{sessions} {tokens}"
            );
        }
        assert!(writes_token(500, 1_000, 2));
        assert!(!writes_token(1, 1_000, 2));
    }

    #[test]
    fn sqlite_urls_name_their_file_and_others_none() {
        assert_eq!(
            sqlite_path("sqlite:///tmp/s.db?mode=rwc"),
            Some(PathBuf::from("/tmp/s.db"))
        );
        assert_eq!(sqlite_path("sqlite:s.db"), Some(PathBuf::from("s.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://localhost/x"), None);
    }
}
