//! `notes-api`: serves the notes API, verifying sessiond's access tokens locally.
//!
//! ```sh
//! SESSIOND_ADMIN_KEY=... notes-api --sessiond http://127.0.0.1:8080 --listen 127.0.0.1:3000
//! ```

use anyhow::Context as _;
use clap::Parser;
use notes::api::{self, SessiondSettings};

/// A notes API protected by sessiond's access tokens.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, env = "NOTES_LISTEN", default_value = "127.0.0.1:3000")]
    listen: String,
    /// sessiond's base URL.
    #[arg(long, env = "NOTES_SESSIOND", default_value = "http://127.0.0.1:8080")]
    sessiond: String,
    /// sessiond's issuer (`SESSIOND_ISSUER`); its base URL by default.
    #[arg(long, env = "NOTES_ISSUER")]
    issuer: Option<String>,
    /// sessiond's audience (`SESSIOND_AUDIENCE`).
    #[arg(long, env = "NOTES_AUDIENCE", default_value = "sessiond")]
    audience: String,
    /// An admin key of sessiond, to follow its revocation feed (optional).
    #[arg(long, env = "SESSIOND_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = SessiondSettings {
        issuer: args
            .issuer
            .unwrap_or_else(|| args.sessiond.trim_end_matches('/').to_owned()),
        base_url: args.sessiond,
        audience: args.audience,
        admin_key: args.admin_key,
    };
    let verifier = api::verifier(&settings).context("cannot build the verifier")?;
    // Fetch the keys now, so that a wrong URL shows at start rather than on a request.
    if let Err(error) = verifier.refresh().await {
        eprintln!("warning: cannot fetch sessiond's keys yet: {error}");
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("notes-api listening on http://{}", listener.local_addr()?);
    axum::serve(listener, api::router(verifier))
        .await
        .context("serving failed")
}
