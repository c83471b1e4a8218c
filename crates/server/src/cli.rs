//! The `sessiond` command line: `serve`, `migrate`, `sessions list`, `sessions revoke`,
//! `keys list|rotate|retire|rotate-master`, `audit verify|export|seal|prune`, and `backup`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand};
use sessiond_core::SessionId;
use sessiond_core::audit::{AuditQuery, hex};
use sessiond_core::crypt;
use sessiond_core::service::Actor;
use sessiond_core::signing_keys::{Activation, KeyInfo, Rotation};
use sessiond_core::store::{RetireOutcome, Store};
use sessiond_core::token::SigningAlgorithm;
use sessiond_wire::SessionList;

use crate::clock::SystemClock;
use crate::config::{Config, LogFormat, RawConfig, is_postgres_url, redact_password};
use crate::database::{OpenMode, open_postgres, open_sqlite};
use crate::http::audit::{audit_event_view, parse_since};
use crate::http::convert::{rfc3339, session_view};
use crate::master_key::{generate_key_file, master_key, read_key_file, unlock_existing};
use crate::state::AppState;

/// sessiond: sessions and tokens beside your application's login.
#[derive(Debug, Parser)]
#[command(name = "sessiond", version, about)]
pub struct Cli {
    /// A TOML file of settings (lower-case names, e.g. `access_ttl = "15m"`); environment
    /// variables and flags override it.
    #[arg(long, global = true, env = "SESSIOND_CONFIG")]
    pub config: Option<PathBuf>,
    /// Settings.
    #[command(flatten)]
    pub settings: RawConfig,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API.
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Inspect or revoke sessions directly in the database.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// List, rotate or retire the signing keys; running servers follow within about a second.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Verify, export or prune the audit trail in the database.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Copy the SQLite database to PATH as of one commit, while servers keep running on it
    /// (PostgreSQL: use pg_dump). Restore by stopping the server and putting the copy in the
    /// database's place; keep the master key with it.
    Backup {
        /// The file to write; it must not exist unless `--force` is given.
        path: PathBuf,
        /// Replace PATH if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// `sessiond keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the signing keys and their state: `next` (published, not signing yet), `signing`,
    /// `active` (signing for instances of another algorithm) or `verifying`.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Generate a new key and publish it in the JWK Set at once; it signs only after the
    /// publication delay (`SESSIOND_KEY_PUBLICATION_DELAY`), so that verifiers that cached the
    /// JWK Set know it first. Until then the key it replaces signs; afterwards that key
    /// verifies its tokens until they have expired, and is then retired automatically.
    Rotate {
        /// The new key's algorithm (default: `SESSIOND_SIGNING_ALG`). A different one is how the
        /// algorithm changes: instances configured for it sign with the new key once it signs.
        #[arg(long)]
        alg: Option<String>,
        /// Emergency rotation, for a compromised key: the new key signs at once. Verifiers that
        /// cached the JWK Set refuse its tokens until they refetch it.
        #[arg(long)]
        now: bool,
    },
    /// Retire a key that no longer signs, now: tokens it signed are refused from now on.
    Retire {
        /// The key's `kid` (a thumbprint may begin with `-`; it is taken as the `kid` all
        /// the same).
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Print the shared secret of an HS256 key (base64url, unpadded), for the one trusted
    /// verifier HS256 is meant for. The private part of an asymmetric key is never printed:
    /// verifiers use the published JWK Set.
    Secret {
        /// The key's `kid`.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Re-wrap the data keys of encryption at rest under a new master key, in one transaction.
    /// Running servers keep working (they hold the data keys); restart them with the new key.
    /// With `--new-key-file`, the configured key is the old one and the file holds the new one
    /// (generated, mode 0600, when it does not exist). Without it, `SESSIOND_MASTER_KEY_PREVIOUS`
    /// is the old key and the configured key the new one.
    RotateMaster {
        /// The file of the new master key.
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
}

/// `sessiond audit ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit chain from its checkpoint (or its first event) to its head; exit
    /// non-zero naming the first bad seq if any event was edited, deleted, inserted or moved.
    Verify,
    /// Print sealed audit events, one JSON object a line, in seq order.
    Export {
        /// Only events after this seq, or at or after this RFC 3339 instant.
        #[arg(long)]
        since: Option<String>,
        /// The output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
    /// Seal the audit events written since the last seal (a running server does this every
    /// second), so that `verify` and `export` include them.
    Seal,
    /// Verify the chain, then delete the events older than `--older-than` and leave a signed
    /// checkpoint where the chain now starts.
    Prune {
        /// How old an event must be to go, e.g. `90d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
    },
}

/// Formats of `sessiond audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object a line.
    Jsonl,
}

/// `sessiond sessions ...`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List a user's active sessions.
    List {
        /// The user id.
        #[arg(long)]
        user: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one session; running servers refuse its tokens within about a second.
    Revoke {
        /// The session id.
        id: String,
    },
}

impl Cli {
    /// The configuration these arguments and the environment describe.
    ///
    /// # Errors
    /// A one-line reason when a setting is missing, malformed or inconsistent.
    pub fn resolve_config(&self) -> anyhow::Result<Config> {
        resolve_config(self.config.as_deref(), &self.settings)
    }

    /// The log format the settings ask for, read before (and whether or not) the whole
    /// configuration is valid, so that every line the command writes, a refusal of a bad
    /// configuration included, follows it: a flag or the environment, else the config file,
    /// else text.
    pub fn log_format(&self) -> LogFormat {
        let from_file = || {
            self.config
                .as_deref()
                .and_then(|path| RawConfig::from_file(path).ok())
                .and_then(|file| file.log_format)
        };
        match self
            .settings
            .log_format
            .clone()
            .or_else(from_file)
            .as_deref()
            .map(str::trim)
        {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// The configuration of the settings file `config_file` (if any) overlaid with `settings`
/// (flags and environment), as `sessiond` resolves it: other binaries that open the same
/// database (`sessiond-seed`) take their settings the same way.
///
/// # Errors
/// A one-line reason when the file cannot be read, or a setting is missing, malformed or
/// inconsistent.
pub fn resolve_config(
    config_file: Option<&std::path::Path>,
    settings: &RawConfig,
) -> anyhow::Result<Config> {
    let file = match config_file {
        Some(path) => RawConfig::from_file(path).map_err(|reason| anyhow!(reason))?,
        None => RawConfig::default(),
    };
    Config::from_raw(&file.overlaid_with(settings))
        .map_err(|reason| anyhow!("bad configuration: {reason}"))
}

/// Runs the command.
///
/// # Errors
/// Whatever stops it, with context, for a one-line message.
pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.command, Command::Serve) {
        init_serve_logging(cli.log_format());
    } else {
        init_logging(cli.log_format());
    }
    let config = cli.resolve_config()?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            // The same durability as `serve`; opening brings the schema up to date, and its
            // error already names the database. A database whose encryption is initialised must
            // open with the configured master key, as every other command requires.
            let now = sessiond_core::Clock::now(&SystemClock);
            if is_postgres_url(&config.database_url) {
                let store = open_postgres(&config, OpenMode::MustExist).await?;
                let checked = unlock_existing(&config, &store, now).await;
                store.close().await;
                checked?;
            } else {
                let store = open_sqlite(&config, OpenMode::CreateIfMissing).await?;
                let checked = unlock_existing(&config, &store, now).await;
                store.close().await;
                checked?;
            }
            println!(
                "database {} is up to date",
                redact_password(&config.database_url)
            );
            Ok(())
        }
        Command::Sessions(command) => sessions(config, command).await,
        Command::Backup { path, force } => backup(&config, &path, force).await,
        Command::Keys(command) => keys(config, command).await,
        Command::Audit(command) => {
            // These inspect an existing database: a mistyped path must not become a new one.
            let mode = match command {
                AuditCommand::Verify | AuditCommand::Export { .. } => OpenMode::ReadOnly,
                AuditCommand::Seal | AuditCommand::Prune { .. } => OpenMode::MustExist,
            };
            let state = AppState::build(&config, Arc::new(SystemClock), mode).await?;
            let mut stdout = std::io::stdout().lock();
            audit(&state, command, &mut stdout).await
        }
    }
}

/// Runs `sessiond audit COMMAND` on `state`'s store, writing its report to `out`.
///
/// # Errors
/// Storage failures, a bad `--since`, and for `verify` and `prune` a broken chain, named by
/// its first bad seq.
pub async fn audit(
    state: &AppState,
    command: AuditCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let service = &state.service;
    match command {
        AuditCommand::Verify => {
            let summary = service.verify_audit().await??;
            match summary.checkpoint {
                Some(seq) => writeln!(
                    out,
                    "audit chain intact: {} events from the checkpoint at seq {seq} to seq {}",
                    summary.events, summary.head_seq
                )?,
                None => writeln!(
                    out,
                    "audit chain intact: {} events from seq 1 to seq {}",
                    summary.events, summary.head_seq
                )?,
            }
            writeln!(out, "head hash: {}", hex(&summary.head_hash))?;
            Ok(())
        }
        AuditCommand::Export { since, format } => {
            let ExportFormat::Jsonl = format;
            const PAGE: u32 = 1_000;
            let mut query = export_query(since.as_deref())?;
            loop {
                let events = service.audit_events(&query, PAGE).await?;
                for event in &events {
                    serde_json::to_writer(
                        &mut *out,
                        &audit_event_view(event, service.audit_ip(event)),
                    )?;
                    writeln!(out)?;
                }
                match events.last() {
                    Some(last) if events.len() == PAGE as usize => query.after_seq = last.seq,
                    _ => break,
                }
            }
            out.flush()?;
            Ok(())
        }
        AuditCommand::Seal => {
            let mut total = 0;
            loop {
                let sealed = service.seal_audit(crate::tasks::AUDIT_SEAL_BATCH).await?;
                total += sealed;
                if sealed < u64::from(crate::tasks::AUDIT_SEAL_BATCH) {
                    break;
                }
            }
            writeln!(out, "sealed {total} audit events")?;
            Ok(())
        }
        AuditCommand::Prune { older_than } => {
            let deleted = service.prune_audit(older_than).await??;
            writeln!(out, "pruned {deleted} audit events")?;
            Ok(())
        }
    }
}

fn export_query(since: Option<&str>) -> anyhow::Result<AuditQuery> {
    let mut query = AuditQuery::default();
    if let Some(since) = since.filter(|since| !since.is_empty()) {
        parse_since(since, &mut query)
            .ok_or_else(|| anyhow!("--since {since:?} is neither a seq nor an RFC 3339 instant"))?;
    }
    Ok(query)
}

/// Sends log lines to stderr in `format`, filtered by `RUST_LOG` (default `info,sqlx=warn`),
/// as `sessiond` does, coloured only when stderr is a terminal; a second call is ignored.
pub fn init_logging(format: LogFormat) {
    install_logging(format, std::io::stderr);
}

/// [`init_logging`] for `sessiond serve`, whose lines below `WARN` (the access log's among
/// them) reach stderr in batches (`log_sink`); [`flush_logs`] writes out what is waiting.
fn init_serve_logging(format: LogFormat) {
    install_logging(format, crate::log_sink::BufferedLines::stderr());
}

/// Writes out the log lines `sessiond serve` still holds; for a process about to exit.
pub fn flush_logs() {
    crate::log_sink::flush();
}

fn install_logging<W>(format: LogFormat, writer: W)
where
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let ansi = format == LogFormat::Text && std::io::stderr().is_terminal();
    // Without colours, the text line is `log_format::PlainLine`, which writes what the stock
    // format writes with its defaults: an option of the line set on this builder (thread names,
    // say) would change the coloured line and not that one, so it goes into `PlainLine` too.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    // A second initialisation (tests running several commands) is harmless; ignore it.
    let _ = match format {
        LogFormat::Text if ansi => builder.try_init(),
        // The same lines for less work (`log_format`).
        LogFormat::Text => builder
            .fmt_fields(crate::log_format::PlainFields)
            .event_format(crate::log_format::PlainLine::default())
            .try_init(),
        // Every line carries the spans it was written in, the request span (and its
        // `request_id`) included, however deeply nested the event is.
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

async fn serve(config: Config) -> anyhow::Result<()> {
    catch_file_size_signal();
    for warning in &config.warnings {
        match config.log_format {
            // Loud, and whatever RUST_LOG says.
            LogFormat::Text => {
                flush_logs();
                eprintln!("WARNING: sessiond is running with development defaults: {warning}");
            }
            LogFormat::Json => {
                tracing::warn!(warning = %warning, "sessiond is running with development defaults");
            }
        }
    }
    let state = AppState::build(&config, Arc::new(SystemClock), OpenMode::CreateIfMissing).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // Bound before the listening line, so that once it is printed both listeners accept.
    let metrics_listener = match config.metrics_listen {
        Some(metrics_address) => {
            let metrics_listener = tokio::net::TcpListener::bind(metrics_address)
                .await
                .with_context(|| format!("cannot listen on {metrics_address} for metrics"))?;
            tracing::info!(address = %metrics_address, "serving /metrics on its own listener");
            Some(metrics_listener)
        }
        None => None,
    };
    let address = listener
        .local_addr()
        .context("cannot read the listening address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "sessiond listening on http://{address}")?;
        stdout.flush()?;
    }
    crate::run_with_metrics_listener(listener, metrics_listener, state, shutdown_signal())
        .await
        .context("server failed")
}

/// Catches `SIGXFSZ`, whose default action ends the process when a write would take a file
/// past the process's file-size limit (`ulimit -f`, `prlimit --fsize`): the write fails with
/// `EFBIG` instead, which the store answers as an I/O error (503, `io_error`) until the limit
/// is raised, like any other disk that cannot write. Tokio's handler stays installed for the
/// life of the process.
fn catch_file_size_signal() {
    #[cfg(unix)]
    if let Err(error) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
    {
        tracing::warn!(%error, "cannot catch SIGXFSZ: a file-size limit would end the process");
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// `sessiond backup PATH`: a consistent copy of the SQLite database, made on a blocking thread.
async fn backup(config: &Config, path: &std::path::Path, force: bool) -> anyhow::Result<()> {
    if is_postgres_url(&config.database_url) {
        return Err(anyhow!(
            "sessiond backup copies SQLite databases; back up PostgreSQL with pg_dump (see docs/operations.md)"
        ));
    }
    // As every other command: a wrong master key is refused before anything is copied, so a
    // backup is never made by someone who could not open it (or restore it) later.
    let store = open_sqlite(config, OpenMode::AsIs).await?;
    let checked = unlock_existing(config, &store, sessiond_core::Clock::now(&SystemClock)).await;
    store.close().await;
    checked?;
    let url = config.database_url.clone();
    let destination = path.to_owned();
    let size = tokio::task::spawn_blocking(move || {
        sessiond_store_sqlite::backup(&url, &destination, force)
    })
    .await
    .context("the backup stopped")?
    .map_err(|error| match error {
        sessiond_store_sqlite::BackupError::Exists(path) => anyhow!(
            "{} already exists; pass --force to replace it",
            path.display()
        ),
        other => {
            anyhow::Error::new(other).context(format!("cannot back up {}", config.database_url))
        }
    })?;
    println!(
        "backed up {} to {} ({size} bytes)",
        config.database_url,
        path.display()
    );
    Ok(())
}

/// How `sessions list` shows a field whose encrypted value does not open.
const UNREADABLE: &str = "<unreadable>";

async fn sessions(config: Config, command: SessionsCommand) -> anyhow::Result<()> {
    // These inspect an existing database: a mistyped path must not become a new, empty one.
    let mode = match command {
        SessionsCommand::List { .. } => OpenMode::ReadOnly,
        SessionsCommand::Revoke { .. } => OpenMode::MustExist,
    };
    let state = AppState::build(&config, Arc::new(SystemClock), mode).await?;
    let service = &state.service;
    match command {
        SessionsCommand::List { user, json } => {
            let sessions = service.list_sessions(&user).await?;
            let mut stdout = std::io::stdout().lock();
            if json {
                let list = SessionList {
                    sessions: sessions
                        .iter()
                        .map(|session| session_view(session, None))
                        .collect(),
                };
                serde_json::to_writer_pretty(&mut stdout, &list)?;
                writeln!(stdout)?;
            } else {
                writeln!(
                    stdout,
                    "{:<36}  {:<24}  {:<8}  {:<24}  IP",
                    "ID", "DEVICE", "TYPE", "LAST ACTIVE"
                )?;
                for session in &sessions {
                    let view = session_view(session, None);
                    // A field that does not open is shown as such, not as missing.
                    let unreadable = |field: &str| view.unreadable.iter().any(|name| name == field);
                    let device = if unreadable("device.name") {
                        UNREADABLE
                    } else {
                        view.device.name.as_deref().unwrap_or(&view.device.id)
                    };
                    let ip = if unreadable("ip") {
                        UNREADABLE
                    } else {
                        view.ip.as_deref().unwrap_or("-")
                    };
                    writeln!(
                        stdout,
                        "{:<36}  {:<24.24}  {:<8}  {:<24}  {}",
                        view.id, device, view.device.device_type, view.last_active_at, ip
                    )?;
                }
            }
            Ok(())
        }
        SessionsCommand::Revoke { id } => {
            let id =
                SessionId::parse(&id, "id").map_err(|_| anyhow!("{id:?} is not a session id"))?;
            match service.revoke_session(Actor::Admin, id).await {
                Ok(()) => {
                    println!("revoked session {id}");
                    Ok(())
                }
                Err(sessiond_core::Error::NotFound) => Err(anyhow!("no session {id}")),
                Err(error) => Err(error.into()),
            }
        }
    }
}

async fn keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    // Like `sessions`: act on an existing database, never on a new, empty one; and `list` and
    // `secret` write nothing, whatever `SESSIOND_SIGNING_ALG` says.
    let mode = match command {
        KeysCommand::List { .. } | KeysCommand::Secret { .. } => OpenMode::ReadOnly,
        _ => OpenMode::MustExist,
    };
    let state = AppState::build(&config, Arc::new(SystemClock), mode).await?;
    let service = &state.service;
    let keys = service.signing_keys();
    let now = service.now();
    let mut stdout = std::io::stdout().lock();
    match command {
        KeysCommand::List { json } => {
            let listed = keys.keys();
            if json {
                serde_json::to_writer_pretty(&mut stdout, &key_list_json(&listed, now))?;
                writeln!(stdout)?;
            } else {
                writeln!(
                    stdout,
                    "{:<43}  {:<5}  {:<9}  {:<24}  {:<24}  RETIRE(D) AT",
                    "KID", "ALG", "STATE", "CREATED", "SIGNS FROM"
                )?;
                for key in &listed {
                    writeln!(
                        stdout,
                        "{:<43}  {:<5}  {:<9}  {:<24}  {:<24}  {}",
                        key.kid,
                        key.algorithm.jose_name(),
                        key.state(now).as_str(),
                        rfc3339(key.created_at),
                        rfc3339(key.signs_from),
                        key.retired_at
                            .or(key.retire_at)
                            .map_or_else(|| "-".to_owned(), rfc3339)
                    )?;
                }
            }
            Ok(())
        }
        KeysCommand::Rotate { alg, now: at_once } => {
            let algorithm = match alg.as_deref() {
                None => keys.algorithm(),
                Some(name) => SigningAlgorithm::from_jose_name(name).ok_or_else(|| {
                    anyhow!("--alg must be EdDSA, ES256, RS256 or HS256 (got {name:?})")
                })?,
            };
            let activation = if at_once {
                Activation::Now
            } else {
                Activation::AfterPublication
            };
            let before = keys
                .keys()
                .into_iter()
                .rev()
                .find(|key| key.deactivated_at.is_none() && key.retired_at.is_none());
            let rotated = match keys.rotate(algorithm, activation, now).await? {
                Rotation::Rotated(key) => key,
                Rotation::AlreadyScheduled(waiting) => {
                    return Err(anyhow!(
                        "nothing rotated: {} ({}) is already published and signs from {}; \
                         `sessiond keys rotate --now` makes a new key that signs at once",
                        waiting.kid,
                        waiting.algorithm.jose_name(),
                        rfc3339(waiting.signs_from)
                    ));
                }
            };
            if at_once {
                writeln!(
                    stdout,
                    "rotated now: {} ({}) signs new tokens from now on; verifiers that cached the \
                     JWK Set refuse them until they refetch it (up to {} s)",
                    rotated.kid,
                    rotated.algorithm.jose_name(),
                    keys.jwks_max_age().as_secs()
                )?;
            } else {
                writeln!(
                    stdout,
                    "rotated: {} ({}) is published now and signs new tokens from {}",
                    rotated.kid,
                    rotated.algorithm.jose_name(),
                    rfc3339(rotated.signs_from)
                )?;
            }
            if let Some(before) = before
                && let Some(replaced) = keys.keys().into_iter().find(|key| key.kid == before.kid)
                && let Some(retire_at) = replaced.retire_at
            {
                writeln!(
                    stdout,
                    "{} signs until {}, verifies the tokens it signed until {}, then is retired",
                    replaced.kid,
                    rfc3339(replaced.deactivated_at.unwrap_or(now)),
                    rfc3339(retire_at)
                )?;
            }
            Ok(())
        }
        KeysCommand::Secret { kid } => {
            let stored = service.store().signing_keys().await?;
            let key = stored
                .iter()
                .find(|key| key.kid == kid)
                .ok_or_else(|| anyhow!("no signing key {kid}"))?;
            if key.algorithm != SigningAlgorithm::Hs256 {
                return Err(anyhow!(
                    "{kid} is an {} key: its private part never leaves sessiond; verify with \
                     /.well-known/jwks.json",
                    key.algorithm.jose_name()
                ));
            }
            let secret = zeroize::Zeroizing::new(base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                &key.secret[..],
            ));
            writeln!(stdout, "{}", secret.as_str())?;
            Ok(())
        }
        KeysCommand::RotateMaster { new_key_file } => {
            drop(stdout);
            rotate_master(&config, service.store().as_ref(), new_key_file.as_deref()).await
        }
        KeysCommand::Retire { kid } => {
            let known = keys.keys().into_iter().find(|key| key.kid == kid);
            match keys.retire(&kid, now).await? {
                RetireOutcome::Retired => {
                    writeln!(stdout, "retired {kid}")?;
                    if let Some(at) = known.and_then(|key| key.retire_at).filter(|at| *at > now) {
                        writeln!(
                            stdout,
                            "tokens it signed that were still valid (until {}) are refused now",
                            rfc3339(at)
                        )?;
                    }
                    Ok(())
                }
                RetireOutcome::NotFound => Err(anyhow!("no signing key {kid}")),
                RetireOutcome::AlreadyRetired => Err(anyhow!("{kid} is already retired")),
                RetireOutcome::Active => Err(match known {
                    Some(key) if key.signs_from > now && key.deactivated_at.is_none() => anyhow!(
                        "{kid} is the next signing key (it signs from {}); it is never retired",
                        rfc3339(key.signs_from)
                    ),
                    Some(KeyInfo {
                        deactivated_at: Some(until),
                        ..
                    }) => anyhow!("{kid} signs until {}; retire it after then", rfc3339(until)),
                    _ => anyhow!("{kid} is the active signing key; rotate first, then retire it"),
                }),
            }
        }
    }
}

/// `{"keys": [{kid, alg, state, created_at, signs_from, deactivated_at, retire_at,
/// retired_at}]}`: what `sessiond keys list --json` prints and `GET /v1/keys` answers, at `now`.
pub(crate) fn key_list_json(
    listed: &[KeyInfo],
    now: sessiond_core::Timestamp,
) -> serde_json::Value {
    let list: Vec<serde_json::Value> = listed
        .iter()
        .map(|key| {
            serde_json::json!({
                "kid": key.kid,
                "alg": key.algorithm.jose_name(),
                "state": key.state(now).as_str(),
                "created_at": rfc3339(key.created_at),
                "signs_from": rfc3339(key.signs_from),
                "deactivated_at": key.deactivated_at.map(rfc3339),
                "retire_at": key.retire_at.map(rfc3339),
                "retired_at": key.retired_at.map(rfc3339),
            })
        })
        .collect();
    serde_json::json!({ "keys": list })
}

/// `sessiond keys rotate-master`: re-wraps the data keys from the old master key to the new.
async fn rotate_master(
    config: &Config,
    store: &dyn Store,
    new_key_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (old, new, generated) = match new_key_file {
        Some(path) if path.exists() => (master_key(config)?, read_key_file(path)?, false),
        Some(path) => (master_key(config)?, generate_key_file(path)?, true),
        None => match &config.master_key_previous {
            Some(previous) => (previous.clone(), master_key(config)?, false),
            None => {
                return Err(anyhow!(
                    "give the new key with --new-key-file FILE, or set SESSIOND_MASTER_KEY to \
                     the new key and SESSIOND_MASTER_KEY_PREVIOUS to the old one"
                ));
            }
        },
    };
    let rewrapped = crypt::rotate_master_key(store, &old, &new)
        .await
        .map_err(|error| anyhow!("cannot rotate the master key: {error}"))?;
    let mut stdout = std::io::stdout().lock();
    if let Some(path) = new_key_file.filter(|_| generated) {
        writeln!(stdout, "generated a new master key in {}", path.display())?;
    }
    if rewrapped == 0 {
        writeln!(stdout, "the database is already under the new master key")?;
    } else {
        writeln!(
            stdout,
            "re-wrapped {rewrapped} data key(s) under the new master key; running servers keep \
             working, restart them with the new key (the old one no longer opens the database)"
        )?;
    }
    Ok(())
}
