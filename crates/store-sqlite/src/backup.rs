//! [`backup`]: a consistent copy of a SQLite database while servers keep using it.
//!
//! The copy is SQLite's `VACUUM INTO`, run in one read transaction on a connection of its own:
//! it sees the database as of one commit, holds no lock a writer waits for (WAL mode), and
//! writes a compact file that holds everything itself (no `-wal` beside it). The file is
//! written under a temporary name in the destination's directory, synced, and only then put
//! in place, so the destination is either absent, the old file, or the whole copy.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sessiond_core::store::StoreError;

use crate::error::store_error;
use crate::store::database_path;
use crate::syncer::directory_of;

/// Why a backup was not made. Nothing is left at the destination (or the file that was there
/// is untouched), and no temporary file remains.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists and replacing it was not asked for.
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    /// The database could not be read.
    #[error("cannot read the database")]
    Store(#[from] StoreError),
    /// The copy could not be written where asked.
    #[error("cannot write {}", .path.display())]
    Write {
        /// The file that could not be written.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
}

/// Copies the database at `database_url` (`sqlite://PATH`) to `destination` as of one commit,
/// while other processes keep reading and writing it; replaces an existing `destination` only
/// when `replace` is set. Returns the size of the copy in bytes.
///
/// # Errors
/// [`BackupError`]: the destination exists, the database cannot be read (a missing file
/// included: a backup never creates one), or the copy cannot be written and synced.
pub fn backup(database_url: &str, destination: &Path, replace: bool) -> Result<u64, BackupError> {
    let source = database_path(database_url)?;
    if !replace && destination.exists() {
        return Err(BackupError::Exists(destination.to_owned()));
    }
    let directory = directory_of(destination);
    let name = destination
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sessiond-backup".to_owned());
    let temporary = directory.join(format!(".{name}.partial-{}", std::process::id()));
    let result = copy(&source, &temporary, destination, directory, replace);
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

fn copy(
    source: &Path,
    temporary: &Path,
    destination: &Path,
    directory: &Path,
    replace: bool,
) -> Result<u64, BackupError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Write { path, source }
    };
    // Read-write without create: a read-only connection cannot open a WAL database whose
    // shared-memory file is missing, and a mistyped path must not become an empty database.
    // `VACUUM INTO` only reads the source (`query_only` cannot say so: it would refuse the
    // writes to the copy too).
    let connection = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(store_error)?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(store_error)?;
    let target = temporary.to_str().ok_or_else(|| BackupError::Write {
        path: temporary.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path is not valid UTF-8",
        ),
    })?;
    connection
        .execute("VACUUM INTO ?1", [target])
        .map_err(store_error)?;
    drop(connection);
    let file = File::open(temporary).map_err(write_error(temporary))?;
    file.sync_all().map_err(write_error(temporary))?;
    let size = file.metadata().map_err(write_error(temporary))?.len();
    drop(file);
    if replace {
        std::fs::rename(temporary, destination).map_err(write_error(destination))?;
    } else {
        // A link fails if the destination appeared meanwhile: nothing is ever overwritten.
        std::fs::hard_link(temporary, destination).map_err(|error| {
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                BackupError::Exists(destination.to_owned())
            } else {
                write_error(destination)(error)
            }
        })?;
        std::fs::remove_file(temporary).map_err(write_error(temporary))?;
    }
    File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(write_error(directory))?;
    Ok(size)
}
