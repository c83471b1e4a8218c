//! `notes-cli`: lists the signed-in user's notes from the notes API.
//!
//! ```sh
//! export NOTES_TOKEN_KEY=$(notes-cli new-key)       # keep it in a keyring in real life
//! notes-cli sign-in pair.json                       # the token pair the app backend made
//! notes-cli list
//! notes-cli watch --every 30                        # until the session ends
//! notes-cli sign-out
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use notes::cli::{CliSettings, NotesCli, format_key, parse_key};
use sessiond_client::FileKey;
use sessiond_client::sessiond_wire::TokenPairResponse;

/// The notes command line.
#[derive(Debug, Parser)]
struct Args {
    /// sessiond's base URL.
    #[arg(long, env = "NOTES_SESSIOND", default_value = "http://127.0.0.1:8080")]
    sessiond: String,
    /// The notes API's base URL.
    #[arg(long, env = "NOTES_API", default_value = "http://127.0.0.1:3000")]
    api: String,
    /// The encrypted token file.
    #[arg(long, env = "NOTES_TOKEN_FILE", default_value = "notes-tokens")]
    token_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints a new token-file key (64 hex digits) for NOTES_TOKEN_KEY.
    NewKey,
    /// Takes over a token pair (the JSON answer of POST /v1/sessions) from FILE, or stdin.
    SignIn {
        /// The file; `-` or nothing for stdin.
        file: Option<PathBuf>,
    },
    /// Lists the notes.
    List,
    /// Lists the notes every few seconds until the session ends.
    Watch {
        /// Seconds between two listings.
        #[arg(long, default_value_t = 30)]
        every: u64,
    },
    /// Ends the session.
    SignOut,
}

fn key_from_environment() -> anyhow::Result<FileKey> {
    let text = std::env::var("NOTES_TOKEN_KEY")
        .context("NOTES_TOKEN_KEY is not set (make one with `notes-cli new-key`)")?;
    parse_key(&text).context("NOTES_TOKEN_KEY must be 64 hex digits")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Command::NewKey = args.command {
        println!("{}", format_key(&FileKey::generate()?));
        return Ok(());
    }
    let cli = NotesCli::open(CliSettings {
        sessiond_url: args.sessiond,
        api_url: args.api,
        token_file: args.token_file,
        key: key_from_environment()?,
        follow_events: matches!(args.command, Command::Watch { .. }),
        clock: None,
    })
    .await?;
    match args.command {
        Command::NewKey => {}
        Command::SignIn { file } => {
            let text = match file.filter(|file| file.as_os_str() != "-") {
                Some(file) => std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
                None => std::io::read_to_string(std::io::stdin())?,
            };
            let pair: TokenPairResponse =
                serde_json::from_str(&text).context("not a sessiond token pair")?;
            cli.sign_in(&pair).await?;
            println!("signed in as {}", pair.session.user_id);
        }
        Command::List => print_notes(&cli).await?,
        Command::Watch { every } => {
            let mut state = cli.client.state();
            loop {
                print_notes(&cli).await?;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(every)) => {}
                    _ = state.wait_for(|state| !state.is_signed_in()) => {}
                }
                if let Some(reason) = cli.client.current_state().sign_out_reason() {
                    println!("signed out: {reason}");
                    std::process::exit(2);
                }
            }
        }
        Command::SignOut => {
            cli.sign_out().await?;
            println!("signed out");
        }
    }
    Ok(())
}

async fn print_notes(cli: &NotesCli) -> anyhow::Result<()> {
    let list = cli.list().await?;
    for note in list.notes {
        println!("{}\t{}", note.id, note.text);
    }
    Ok(())
}
