//! An example of sessiond in use: a notes API (a resource server) that verifies sessiond's
//! access tokens with `sessiond-verifier`, and a command-line client that stays signed in with
//! `sessiond-client`.
//!
//! - [`api`]: the resource server. `GET /notes` needs the permission `notes:read`
//!   ([`RequirePermissionLayer`](sessiond_verifier::RequirePermissionLayer)); `GET /me` needs
//!   any valid token ([`Authenticated`](sessiond_verifier::Authenticated)); `GET /status`
//!   shows the verifier's key cache and revocation feed. The `notes-api` binary serves it.
//! - [`cli`]: the CLI's logic. The application's backend, having authenticated the user,
//!   creates a session (`POST /v1/sessions` with its admin key) and hands the token pair to
//!   the CLI, which keeps it in an encrypted token file, refreshes it ahead of expiry, follows
//!   the session's event stream, and calls the API with it. The `notes-cli` binary drives it.
//!
//! `tests/it` runs both against an in-process sessiond for an hour of simulated time.

pub mod api;
pub mod cli;

/// The code of `docs/using-the-client.md`, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/using-the-client.md")]
pub struct UsingTheClientGuide;

/// The code of `docs/protecting-an-api.md`, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/protecting-an-api.md")]
pub struct ProtectingAnApiGuide;

use serde::{Deserialize, Serialize};

/// One note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Its number.
    pub id: u32,
    /// Its text.
    pub text: String,
}

/// The answer of `GET /notes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteList {
    /// The user the notes belong to (the token's `sub`).
    pub owner: String,
    /// The notes.
    pub notes: Vec<Note>,
}
